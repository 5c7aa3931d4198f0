# nooelint: oelint.var.mandatoryvar.HOMEPAGE,oelint.var.suggestedvar.BUGTRACKER
SUMMARY = "Software security update agent for Linux cellular devices (GSMA FS.25)"
SUMMARY:${PN}-repo = "Publish signed ssu-agent updates as a TUF repository"
DESCRIPTION = "ssu-agent checks signed (TUF) update metadata from the manufacturer's \
               update server, installs security bundles through RAUC into the inactive A/B \
               slot, confirms the new slot after reboot (or rolls back), and reports the \
               security patch level on the system bus as org.ssu.Agent1."
# No HOMEPAGE/BUGTRACKER: the project has no public address yet, and a placeholder would send
# people nowhere. Its documentation is the source itself (README.md, docs/), installed to
# ${docdir}/ssu-agent with ${PN}-doc.
SECTION = "admin"
# The project is MIT OR Apache-2.0 (Cargo.toml); the crates linked into the binaries add
# theirs. LICENSE is generated from Cargo.lock by scripts/crate-licenses (tests check it).
require ${BPN}-licenses.inc
LIC_FILES_CHKSUM = "file://LICENSE-MIT;md5=af496e7a525678fcf1997d02b27f4bbe \
                    file://LICENSE-APACHE;md5=3b83ef96387f14655fc854ddc3c6bd57"

# rusqlite (without its "bundled" feature) links the system SQLite, found with pkg-config;
# every other C part (aws-lc) is built from the crates' own sources.
DEPENDS += "sqlite3"

# The source is the checkout this layer lives in (yocto-layer/meta-ssu inside the ssu-agent
# repository), so a clone of the project builds itself with no override, uncommitted edits
# included: the file:// entries are checksummed and refetched when they change. A product
# pins a release instead (README.md, "Pinning a release"), e.g. in local.conf:
#   SSU_SRC_URI:pn-ssu-agent = "git://git.example.com/ssu-agent.git;protocol=https;branch=main;tag=v${PV}"
#   SRCREV:pn-ssu-agent = "<the tag's commit>"
# with this layer from the same tag, so that ssu-agent-crates.inc matches its Cargo.lock
# (do_unpack stops the build when they disagree).
SSU_LAYER_CHECKOUT := "${@os.path.normpath(os.path.join(d.getVar('THISDIR'), '..', '..', '..', '..'))}"
SSU_SRCDIR ??= "${SSU_LAYER_CHECKOUT}"
# nooelint: oelint.vars.mispell.unknown
SSU_LOCAL_FILES = "Cargo.toml Cargo.lock LICENSE-MIT LICENSE-APACHE README.md \
                   src benches dbus systemd packaging/agent.toml docs"
SSU_LOCAL_SRC_URI = "${@' '.join('file://%s;subdir=${BP}' % f for f in d.getVar('SSU_LOCAL_FILES').split())}"
SSU_SRC_URI ??= "${SSU_LOCAL_SRC_URI}"
# The checkout is where the default file:// entries are found. Set SSU_SRCDIR in a
# configuration file (local.conf, distro) to build another checkout.
# nooelint: oelint.vars.fileextrapaths,oelint.vars.outofcontext
FILESEXTRAPATHS:prepend := "${SSU_SRCDIR}:"
SRC_URI = "${SSU_SRC_URI}"
S = "${UNPACKDIR}/${BP}"

# Generated from Cargo.lock by scripts/crates-inc (same output as `bitbake -c update_crates`).
require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates pkgconfig systemd features_check

# The unit file, polkit and the RAUC D-Bus service are systemd-only.
REQUIRED_DISTRO_FEATURES = "systemd"

CVE_PRODUCT = "ssu-agent"

# The default source is the checkout around this layer. A layer copied out of it must say
# where the source is (SSU_SRC_URI or SSU_SRCDIR): without this, the missing files would
# stop the parse of every recipe, not only this one.
# nooelint: oelint.task.noanonpython
python () {
    if d.getVar('SSU_SRC_URI') == d.getVar('SSU_LOCAL_SRC_URI'):
        srcdir = d.getVar('SSU_SRCDIR')
        if not os.path.isfile(os.path.join(srcdir, 'Cargo.toml')):
            raise bb.parse.SkipRecipe("no ssu-agent source at %s (the checkout around meta-ssu): set SSU_SRC_URI or SSU_SRCDIR, see meta-ssu's README.md" % srcdir)
}

# The crates in SRC_URI (ssu-agent-crates.inc) must be the ones the source's Cargo.lock
# names: a pinned source with another layer's crate list would otherwise fail only hours
# later, in cargo --frozen, or build with other versions than the release was tested with.
# nooelint: oelint.task.docstrings
python ssu_check_crates () {
    import re
    lock = os.path.join(d.getVar('S'), 'Cargo.lock')
    try:
        with open(lock, encoding='utf-8') as f:
            text = f.read()
    except OSError as e:
        bb.fatal("ssu-agent: cannot read %s: %s" % (lock, e))
    want = set()
    for block in text.split('[[package]]')[1:]:
        fields = dict(re.findall(r'^(\w+) = "([^"]*)"$', block, re.M))
        if 'crates.io' in fields.get('source', ''):
            want.add((fields.get('name'), fields.get('version'), fields.get('checksum')))
    have = set()
    for url in (d.getVar('SRC_URI') or '').split():
        m = re.match(r'crate://crates\.io/([^/;]+)/([^/;]+);name=([^;]+)', url)
        if m:
            have.add((m.group(1), m.group(2), d.getVarFlag('SRC_URI', m.group(3) + '.sha256sum')))
    if want != have:
        def show(s):
            return ", ".join("%s %s" % (n, v) for n, v, _ in sorted(s)[:8]) + (" …" if len(s) > 8 else "")
        bb.fatal("ssu-agent: the crate list (ssu-agent-crates.inc) does not match %s: "
                 "only in Cargo.lock: %s; only in the crate list: %s. Take meta-ssu from the "
                 "same release as the source, or regenerate the list with scripts/crates-inc "
                 "from that source." % (lock, show(want - have) or "-", show(have - want) or "-"))
}
do_unpack[postfuncs] += "ssu_check_crates"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/ssu-agent.service ${D}${systemd_system_unitdir}/

    install -d ${D}${datadir}/dbus-1/system.d ${D}${datadir}/dbus-1/interfaces
    install -m 0644 ${S}/dbus/org.ssu.Agent1.conf ${D}${datadir}/dbus-1/system.d/
    install -m 0644 ${S}/dbus/org.ssu.Agent1.xml ${D}${datadir}/dbus-1/interfaces/
    install -d ${D}${datadir}/polkit-1/actions
    install -m 0644 ${S}/dbus/org.ssu.agent.policy ${D}${datadir}/polkit-1/actions/

    # The default configuration; what the image knows about itself (model, version, server)
    # comes from ssu-agent-conf as a drop-in, so this recipe stays per-architecture.
    install -d ${D}${sysconfdir}/ssu-agent/agent.d
    install -m 0644 ${S}/packaging/agent.toml ${D}${sysconfdir}/ssu-agent/agent.toml

    # The pages the unit's Documentation= names, generated from the binaries' --man (the
    # cross-built binaries cannot run here) and kept in docs/man by the project's tests.
    install -d ${D}${mandir}/man1 ${D}${mandir}/man8
    install -m 0644 ${S}/docs/man/ssu-agent.8 ${D}${mandir}/man8/
    install -m 0644 ${S}/docs/man/ssuctl.1 ${S}/docs/man/ssu-repo.1 ${D}${mandir}/man1/
    install -d ${D}${docdir}/${BPN}
    install -m 0644 ${S}/README.md ${S}/docs/*.md ${D}${docdir}/${BPN}/
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
CONFFILES:${PN} = "${sysconfdir}/ssu-agent/agent.toml"
# dbus: the agent's bus. rauc-service: RAUC's D-Bus service and its D-Bus activation file (the
# `rauc` package alone is the command line): the unit's Wants=rauc.service and the agent's
# activation need them. ca-certificates: the only trust store reqwest's platform verifier
# reads (the HTTP client loads it at start). virtual-ssu-agent-conf: the image's identity and
# update server (ssu-agent-conf).
RDEPENDS:${PN} = "ca-certificates dbus rauc-service virtual-ssu-agent-conf"
# polkit (meta-oe, not oe-core) and ModemManager stay the image's choice: the agent starts
# them by D-Bus activation when the image has them; without polkit the agent's
# [authorization] lists decide. No RRECOMMENDS: with oe-core alone nothing provides polkit
# and bitbake refuses the recipe (README.md, "What an image must provide").
RDEPENDS:${PN}-repo = "rauc"
# rauc-mark-good marks every boot good before the agent's health checks ran, which defeats
# the rollback: an image with ssu-agent must not contain it (README.md, "rauc-mark-good").
RCONFLICTS:${PN} = "rauc-mark-good"
