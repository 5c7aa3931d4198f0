# nooelint: oelint.var.mandatoryvar.HOMEPAGE,oelint.var.suggestedvar.BUGTRACKER,oelint.var.suggestedvar.CVE_PRODUCT
SUMMARY = "What an image tells ssu-agent about itself: model, version, update server"
DESCRIPTION = "The drop-in /etc/ssu-agent/agent.d/00-image.toml with the device's model, \
               hardware id and firmware version, the manufacturer's TUF root and update \
               server, and the integrator's further drop-ins. Machine-specific, so kept out \
               of the ssu-agent recipe (which then builds once per architecture)."
# Part of ssu-agent, which has no public address yet (see ssu-agent_0.1.0.bb).
SECTION = "admin"
LICENSE = "MIT"
# The recipe's own files are generated configuration; oe-core's MIT text, as meta-rauc's
# rauc-conf does.
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COREBASE}/meta/COPYING.MIT;md5=3da9cfbcb788c80a0384361b4de20420"

# Nothing by default: the integrator's bbappend adds the TUF root and drop-ins (README.md).
SRC_URI = ""
S = "${UNPACKDIR}"

# Set by the integrator (README.md), in local.conf, the distro or a bbappend of this recipe:
# SSU_MANUFACTURER_ROOT names a root.json that a bbappend adds to SRC_URI (file://);
# SSU_MANUFACTURER_URL is the update server's published directory. Both or neither.
# nooelint: oelint.vars.mispell.unknown
SSU_MANUFACTURER_ROOT ??= ""
# nooelint: oelint.vars.mispell.unknown
SSU_MANUFACTURER_URL ??= ""
# Shown to users and matched against the signed metadata.
# nooelint: oelint.vars.mispell.unknown
SSU_DEVICE_MODEL ??= "${MACHINE}"
# nooelint: oelint.vars.mispell.unknown
SSU_HARDWARE_ID ??= "${MACHINE}"
# The firmware's own version (what security updates name as their base_version), not the
# Yocto release: no default, the build stops until it is set.
# nooelint: oelint.vars.mispell.unknown
SSU_IMAGE_VERSION ??= ""
# More drop-ins (operator profiles, health checks, reboot command ...): file names in
# SRC_URI, installed in this order into /etc/ssu-agent/agent.d/.
# nooelint: oelint.vars.mispell.unknown
SSU_AGENT_DROPINS ??= ""

# do_install reads them from its environment, so an integrator's value stays text in the
# shell whatever it contains (and the tests run this do_install with each combination).
export SSU_MANUFACTURER_ROOT
export SSU_MANUFACTURER_URL
export SSU_DEVICE_MODEL
export SSU_HARDWARE_ID
export SSU_IMAGE_VERSION
export SSU_AGENT_DROPINS

PACKAGE_ARCH = "${MACHINE_ARCH}"
INHIBIT_DEFAULT_DEPS = "1"
do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    # A TOML basic string: backslashes and quotes escaped.
    toml_string() {
        printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
    }

    if [ -z "$SSU_IMAGE_VERSION" ]; then
        bbfatal "SSU_IMAGE_VERSION is not set: set it to this firmware's version (what its security updates name as base_version; see meta-ssu's README.md)"
    fi
    # A root without a server (or a server without a root) is a half-configured device.
    if [ -n "$SSU_MANUFACTURER_ROOT" ] && [ -z "$SSU_MANUFACTURER_URL" ]; then
        bbfatal "SSU_MANUFACTURER_ROOT is set but SSU_MANUFACTURER_URL is not: set both (the update server's TUF root and its address) or neither"
    fi
    if [ -z "$SSU_MANUFACTURER_ROOT" ] && [ -n "$SSU_MANUFACTURER_URL" ]; then
        bbfatal "SSU_MANUFACTURER_URL is set but SSU_MANUFACTURER_ROOT is not: set both (the update server's TUF root and its address) or neither"
    fi

    install -d ${D}${sysconfdir}/ssu-agent/agent.d
    conf=${D}${sysconfdir}/ssu-agent/agent.d/00-image.toml
    {
        echo "# Written by ssu-agent-conf (meta-ssu) for ${MACHINE}."
        echo "[device]"
        echo "model = $(toml_string "$SSU_DEVICE_MODEL")"
        echo "hardware_id = $(toml_string "$SSU_HARDWARE_ID")"
        echo "version = $(toml_string "$SSU_IMAGE_VERSION")"
    } > "$conf"

    if [ -n "$SSU_MANUFACTURER_ROOT" ]; then
        if [ ! -f "${UNPACKDIR}/$SSU_MANUFACTURER_ROOT" ]; then
            bbfatal "SSU_MANUFACTURER_ROOT: $SSU_MANUFACTURER_ROOT is not in SRC_URI (add file://$SSU_MANUFACTURER_ROOT in a bbappend)"
        fi
        install -d ${D}${datadir}/ssu-agent
        install -m 0644 "${UNPACKDIR}/$SSU_MANUFACTURER_ROOT" \
            ${D}${datadir}/ssu-agent/manufacturer-root.json
        {
            echo "[manufacturer]"
            echo "url = $(toml_string "$SSU_MANUFACTURER_URL")"
            echo "root = $(toml_string "${datadir}/ssu-agent/manufacturer-root.json")"
        } >> "$conf"
    else
        bbwarn "SSU_MANUFACTURER_ROOT is not set: ssu-agent cannot verify updates and will report 'unverified'"
    fi

    for dropin in $SSU_AGENT_DROPINS; do
        if [ ! -f "${UNPACKDIR}/$dropin" ]; then
            bbfatal "SSU_AGENT_DROPINS: $dropin is not in SRC_URI"
        fi
        install -m 0644 "${UNPACKDIR}/$dropin" ${D}${sysconfdir}/ssu-agent/agent.d/
    done
}

FILES:${PN} += "${datadir}/ssu-agent"
CONFFILES:${PN} = "${sysconfdir}/ssu-agent/agent.d/00-image.toml"
RPROVIDES:${PN} = "virtual-ssu-agent-conf"
