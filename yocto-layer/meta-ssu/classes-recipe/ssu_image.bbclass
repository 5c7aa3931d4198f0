# ssu_image: for images that keep themselves patched with ssu-agent. An image recipe
# inherits it after core-image (`inherit core-image ssu_image`); see README.md.
#
# meta-rauc's `rauc` recommends `rauc-mark-good`, whose service marks every boot good before
# ssu-agent's health checks have run: a slot that boots but does not work would then never
# roll back. The class keeps that recommendation out, and refuses a root file system that has
# it anyway (installed explicitly, or pulled in by another package). The layer cannot set
# BAD_RECOMMENDATIONS for images that do not inherit this class without changing every
# image's signature (yocto-check-layer's test_signatures).

inherit features_check
REQUIRED_DISTRO_FEATURES += "systemd"

IMAGE_INSTALL:append = " ssu-agent"
BAD_RECOMMENDATIONS:append = " rauc-mark-good"
ROOTFS_POSTPROCESS_COMMAND:append = " ssu_image_refuse_mark_good"

ssu_image_refuse_mark_good[doc] = "Fails the image if rauc-mark-good is in its root file system"
ssu_image_refuse_mark_good() {
    for f in ${systemd_system_unitdir}/rauc-mark-good.service ${sysconfdir}/init.d/rauc-mark-good; do
        if [ -e "${IMAGE_ROOTFS}$f" ]; then
            bbfatal "ssu_image: $f is in the image: rauc-mark-good marks every boot good and defeats ssu-agent's health check and rollback; leave it out (meta-ssu README.md, rauc-mark-good)"
        fi
    done
}
