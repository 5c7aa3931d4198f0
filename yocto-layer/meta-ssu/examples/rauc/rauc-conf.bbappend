# EXAMPLE, not active (examples/ is outside BBFILES). Copy it into your BSP or distro layer
# as recipes-core/rauc/rauc-conf.bbappend with files/system.conf and your files/ca.cert.pem,
# and replace the machine override "acme-gw3000" with your MACHINE.
#
# RAUC needs the device's slot layout (system.conf) and the keyring that verifies bundle
# signatures. ssu-agent only asks RAUC to install; RAUC checks the bundle's signature against
# this keyring on its own, independent of the agent's TUF checks (two locks, two keys).
#
# meta-rauc's rauc-conf already lists file://system.conf and file://${RAUC_KEYRING_FILE} in
# SRC_URI and installs both to /usr/lib/rauc/ (${nonarch_libdir}/rauc); putting this layer's
# files/ first in the search path is all it takes for these copies to be the ones installed.
FILESEXTRAPATHS:prepend:acme-gw3000 := "${THISDIR}/files:"

# The keyring's file name in files/ (meta-rauc's default: ca.cert.pem).
RAUC_KEYRING_FILE:acme-gw3000 = "ca.cert.pem"
