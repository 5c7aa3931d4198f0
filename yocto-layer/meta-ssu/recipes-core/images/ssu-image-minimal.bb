# nooelint: oelint.var.suggestedvar.BUGTRACKER,oelint.var.suggestedvar.CVE_PRODUCT
SUMMARY = "A small image that keeps itself patched with ssu-agent"
DESCRIPTION = "core-image-minimal's contents plus ssu-agent, without rauc-mark-good: \
               the example of an image with the update agent (ssu_image.bbclass)."
SECTION = "images"
LICENSE = "MIT"

IMAGE_INSTALL = "packagegroup-core-boot ${CORE_IMAGE_EXTRA_INSTALL}"
IMAGE_LINGUAS = " "

inherit core-image ssu_image
