SUMMARY = "Software security update agent for Linux cellular devices (GSMA FS.25)"
SUMMARY:${PN}-repo = "Publish signed ssu-agent updates as a TUF repository"
DESCRIPTION = "ssu-agent checks signed (TUF) update metadata from the manufacturer's \
               update server, installs security bundles through RAUC into the inactive A/B \
               slot, confirms the new slot after reboot (or rolls back), and reports the \
               security patch level on the system bus as org.ssu.Agent1."
# The project's public address is set at release; nothing to ping from a CI without network.
# nooelint: oelint.vars.homepageping
HOMEPAGE = "https://example.invalid/ssu-agent"
BUGTRACKER = "https://example.invalid/ssu-agent/issues"
SECTION = "admin"
LICENSE = "MIT | Apache-2.0"
# The licence is declared in Cargo.toml (line 7: license = "MIT OR Apache-2.0").
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=7;endline=7;md5=86b31c7756a1a7962f28b62856ed4f05"

SRC_URI = "git://example.invalid/ssu-agent.git;protocol=https;branch=main"
# The release's commit; bump together with PV and ssu-agent-crates.inc (scripts/crates-inc).
SRCREV = "305aa83bb049b17e2a14517679866c3abcfe2537"

# Generated from Cargo.lock by scripts/crates-inc (same output as `bitbake -c update_crates`).
require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates systemd

CVE_PRODUCT = "ssu-agent"

# The device's trust anchor and update server, provided by the integrator (see README.md):
# SSU_MANUFACTURER_ROOT names a root.json in SRC_URI (file://, from the integrator's
# bbappend); SSU_MANUFACTURER_URL is the update server's published directory.
SSU_MANUFACTURER_ROOT ??= ""
SSU_MANUFACTURER_URL ??= ""
# Shown to users and matched against the signed metadata; per machine by default.
SSU_DEVICE_MODEL ??= "${MACHINE}"
SSU_HARDWARE_ID ??= "${MACHINE}"
SSU_IMAGE_VERSION ??= "${DISTRO_VERSION}"

# The generated drop-in carries machine-specific values.
PACKAGE_ARCH = "${MACHINE_ARCH}"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/ssu-agent.service ${D}${systemd_system_unitdir}/

    install -d ${D}${datadir}/dbus-1/system.d ${D}${datadir}/dbus-1/interfaces
    install -m 0644 ${S}/dbus/org.ssu.Agent1.conf ${D}${datadir}/dbus-1/system.d/
    install -m 0644 ${S}/dbus/org.ssu.Agent1.xml ${D}${datadir}/dbus-1/interfaces/
    install -d ${D}${datadir}/polkit-1/actions
    install -m 0644 ${S}/dbus/org.ssu.agent.policy ${D}${datadir}/polkit-1/actions/

    install -d ${D}${sysconfdir}/ssu-agent/agent.d
    install -m 0644 ${S}/packaging/agent.toml ${D}${sysconfdir}/ssu-agent/agent.toml

    # What this image knows about itself; agent.toml stays the untouched default.
    {
        echo "# Written by the ssu-agent recipe (meta-ssu) for ${MACHINE}."
        echo "[device]"
        echo "model = \"${SSU_DEVICE_MODEL}\""
        echo "hardware_id = \"${SSU_HARDWARE_ID}\""
        echo "version = \"${SSU_IMAGE_VERSION}\""
    } > ${D}${sysconfdir}/ssu-agent/agent.d/00-image.toml

    # A root without a server (or the reverse) is a half-configured device: stop the build.
    if [ -n "${SSU_MANUFACTURER_ROOT}" ] && [ -z "${SSU_MANUFACTURER_URL}" ] ||
       [ -z "${SSU_MANUFACTURER_ROOT}" ] && [ -n "${SSU_MANUFACTURER_URL}" ]; then
        bbfatal "set both SSU_MANUFACTURER_ROOT and SSU_MANUFACTURER_URL, or neither"
    fi
    if [ -n "${SSU_MANUFACTURER_ROOT}" ]; then
        install -d ${D}${datadir}/ssu-agent
        install -m 0644 ${UNPACKDIR}/${SSU_MANUFACTURER_ROOT} \
            ${D}${datadir}/ssu-agent/manufacturer-root.json
        {
            echo "[manufacturer]"
            echo "url = \"${SSU_MANUFACTURER_URL}\""
            echo "root = \"${datadir}/ssu-agent/manufacturer-root.json\""
        } >> ${D}${sysconfdir}/ssu-agent/agent.d/00-image.toml
    else
        bbwarn "SSU_MANUFACTURER_ROOT is not set: ssu-agent cannot verify updates and will report 'unverified'"
    fi
}

# ssu-repo is the publisher's tool (build hosts, update servers), not needed on a device.
PACKAGES =+ "${PN}-repo"

SYSTEMD_SERVICE:${PN} = "ssu-agent.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

FILES:${PN}-repo += "${bindir}/ssu-repo"
FILES:${PN} += "${datadir}/dbus-1/system.d/org.ssu.Agent1.conf \
                ${datadir}/dbus-1/interfaces/org.ssu.Agent1.xml \
                ${datadir}/polkit-1/actions/org.ssu.agent.policy \
               "
CONFFILES:${PN} = "${sysconfdir}/ssu-agent/agent.toml \
                   ${sysconfdir}/ssu-agent/agent.d/00-image.toml \
                  "
# rauc-service ships rauc.service and RAUC's D-Bus activation file: the unit's Wants= and the
# agent's activation need them. polkit and ModemManager stay the image's choice (the agent
# starts them by D-Bus activation when the image has them).
# ca-certificates: the HTTP client loads the system trust roots at start.
RDEPENDS:${PN} = "ca-certificates dbus rauc rauc-service"
RDEPENDS:${PN}-repo = "rauc"
