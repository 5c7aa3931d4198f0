#!/usr/bin/env python3
"""Drive the python-dbusmock ModemManager mock of the sandbox.

Run with the sandbox venv's python (it needs dbus-python and dbusmock's
template running on the bus named by DBUS_SYSTEM_BUS_ADDRESS).

  setup                              AddSimpleModem + the properties the template lacks
  swap-sim MCCMNC ICCID IMSI [NAME]  replace modem+SIM by new objects (new paths), as
                                     ModemManager does when a SIM is swapped
  set-registration N                 Modem3gpp.RegistrationState = N (1 home, 5 roaming, ...)
                                     and the matching Modem.State
  network-time now|ISO8601           the network sends its time (NITZ): adds Modem.Time, whose
                                     GetNetworkTime answers the real time now (or ISO8601),
                                     and emits NetworkTimeChanged
  dump                               print the modem objects and their SIM (for debugging)

The modemmanager template (dbusmock 0.38) is minimal: AddSimpleModem creates
/org/freedesktop/ModemManager1/Modems/8 (Modem, Modem3gpp, CellBroadcast, Voice)
and /org/freedesktop/ModemManager1/SIM/2 (Sim: Active, Imsi, PreferredNetworks).
GetManagedObjects on /org/freedesktop/ModemManager1 lists only .../Modems/*.
"""

import sys

import dbus

BUS_NAME = "org.freedesktop.ModemManager1"
MANAGER = "/org/freedesktop/ModemManager1"
MOCK = "org.freedesktop.DBus.Mock"
OM = "org.freedesktop.DBus.ObjectManager"
PROPS = "org.freedesktop.DBus.Properties"
MODEM = "org.freedesktop.ModemManager1.Modem"
MODEM_3GPP = "org.freedesktop.ModemManager1.Modem.Modem3gpp"
SIM = "org.freedesktop.ModemManager1.Sim"
TIME = "org.freedesktop.ModemManager1.Modem.Time"

# What the sandbox's default SIM/network look like (tests rely on these values).
DEFAULT_MCCMNC = "26201"
DEFAULT_OPERATOR = "Sandbox Telecom"
DEFAULT_ICCID = "8949000000000001234"
DEFAULT_IMSI = "262010000001234"
REG_HOME = 1
# MMModemState for a MMModem3gppRegistrationState, as ModemManager reports them
# together: registered (home/roaming, incl. SMS-only and CSFB variants) → REGISTERED,
# searching → SEARCHING, anything else (idle, denied, unknown, emergency) → ENABLED.
STATE_ENABLED, STATE_SEARCHING, STATE_REGISTERED = 6, 7, 8
REGISTERED = {1, 5, 6, 7, 9, 10}
SEARCHING = 2


def modem_state(registration):
    if registration in REGISTERED:
        return STATE_REGISTERED
    return STATE_SEARCHING if registration == SEARCHING else STATE_ENABLED

bus = dbus.SystemBus()


def obj(path):
    # Introspect so dbus-python knows the signatures (EmitSignal takes "av").
    return bus.get_object(BUS_NAME, path)


def mock(path):
    return dbus.Interface(obj(path), MOCK)


def set_props(path, iface, values):
    """Add missing properties, then update all so one PropertiesChanged is emitted."""
    current = obj(path).GetAll(iface, dbus_interface=PROPS)
    m = mock(path)
    for name, value in values.items():
        if name not in current:
            m.AddProperty(iface, name, value)
    m.UpdateProperties(iface, dbus.Dictionary(values, signature="sv"))


def modems():
    """{path: {iface: props}} of the modems the manager currently lists."""
    return obj(MANAGER).GetManagedObjects(dbus_interface=OM)


def only_modem():
    found = modems()
    if len(found) != 1:
        sys.exit(f"sandbox-modem: expected exactly one modem, found {sorted(found)}")
    return next(iter(found.items()))


def sim_props(mccmnc, iccid, imsi, operator):
    return {
        "OperatorIdentifier": dbus.String(mccmnc),
        "OperatorName": dbus.String(operator),
        "SimIdentifier": dbus.String(iccid),
        "Imsi": dbus.String(imsi),
    }


def network_props(mccmnc, operator, registration):
    return {
        "RegistrationState": dbus.UInt32(registration),
        "OperatorCode": dbus.String(mccmnc),
        "OperatorName": dbus.String(operator),
    }


def setup():
    modem_path, sim_path = mock(MANAGER).AddSimpleModem()
    set_props(sim_path, SIM, sim_props(DEFAULT_MCCMNC, DEFAULT_ICCID, DEFAULT_IMSI, DEFAULT_OPERATOR))
    set_props(
        modem_path,
        MODEM,
        {
            "Model": dbus.String("SandboxModem LTE"),
            "Manufacturer": dbus.String("ssu"),
            "State": dbus.Int32(modem_state(REG_HOME)),
        },
    )
    set_props(modem_path, MODEM_3GPP, network_props(DEFAULT_MCCMNC, DEFAULT_OPERATOR, REG_HOME))
    print(f"{modem_path} {sim_path}")


def next_path(prefix, current):
    """ModemManager gives re-probed modems/SIMs new indexes; mimic that."""
    n = int(current.rsplit("/", 1)[1]) + 1
    while True:
        path = f"{prefix}/{n}"
        try:
            obj(path).GetAll(SIM if "/SIM/" in prefix else MODEM, dbus_interface=PROPS)
        except dbus.exceptions.DBusException:
            return path
        n += 1


def swap_sim(mccmnc, iccid, imsi, operator):
    old_modem, ifaces = only_modem()
    old_sim = str(ifaces[MODEM]["Sim"])
    old_sim_props = obj(old_sim).GetAll(SIM, dbus_interface=PROPS)
    manager = mock(MANAGER)

    # The SIM goes away: ModemManager drops the modem object and its SIM.
    manager.RemoveObject(old_modem)
    removed = dbus.Array(list(ifaces.keys()), signature="s")
    manager.EmitSignal(OM, "InterfacesRemoved", "oas", [dbus.ObjectPath(old_modem), removed])
    manager.RemoveObject(old_sim)

    # The modem is re-probed with the new SIM. Build both objects completely
    # before announcing them, so a client reacting to InterfacesAdded sees them whole.
    new_sim = next_path(f"{MANAGER}/SIM", old_sim)
    new_modem = next_path(f"{MANAGER}/Modems", old_modem)
    sim = dict(old_sim_props)
    sim.update(sim_props(mccmnc, iccid, imsi, operator))
    no_methods = dbus.Array([], signature="(ssss)")
    manager.AddObject(new_sim, SIM, dbus.Dictionary(sim, signature="sv"), no_methods)

    new_ifaces = {k: dict(v) for k, v in ifaces.items()}
    new_ifaces[MODEM]["Sim"] = dbus.ObjectPath(new_sim)
    new_ifaces[MODEM]["State"] = dbus.Int32(modem_state(REG_HOME))
    new_ifaces.setdefault(MODEM_3GPP, {}).update(network_props(mccmnc, operator, REG_HOME))
    manager.AddObject(new_modem, MODEM, dbus.Dictionary(new_ifaces[MODEM], signature="sv"), no_methods)
    modem = mock(new_modem)
    for iface, props in new_ifaces.items():
        if iface != MODEM:
            modem.AddProperties(iface, dbus.Dictionary(props, signature="sv"))
    payload = dbus.Dictionary(
        {k: dbus.Dictionary(v, signature="sv") for k, v in new_ifaces.items()}, signature="sa{sv}"
    )
    manager.EmitSignal(OM, "InterfacesAdded", "oa{sa{sv}}", [dbus.ObjectPath(new_modem), payload])
    print(f"{new_modem} {new_sim}")


def set_registration(state):
    modem_path, _ = only_modem()
    mock(modem_path).UpdateProperties(MODEM_3GPP, {"RegistrationState": dbus.UInt32(state)})
    mock(modem_path).UpdateProperties(MODEM, {"State": dbus.Int32(modem_state(state))})


def network_time(when):
    """Modem.Time as ModemManager exports it once the network has sent its time.

    The template has no Modem.Time: add it with dbusmock's own API. "now" answers this
    host's real clock at each call (the network's time does not stop), in ModemManager's
    ISO 8601 form with an offset.
    """
    modem_path, ifaces = only_modem()
    m = mock(modem_path)
    if when == "now":
        code = (
            "import datetime\n"
            "ret = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')"
        )
    else:
        code = f"ret = {when!r}"
    if TIME not in ifaces:
        m.AddProperties(TIME, dbus.Dictionary({"NetworkTimezone": dbus.Dictionary(
            {"offset": dbus.Int32(0)}, signature="sv")}, signature="sv"))
    m.AddMethod(TIME, "GetNetworkTime", "", "s", code)
    now = obj(modem_path).GetNetworkTime(dbus_interface=TIME)
    m.EmitSignal(TIME, "NetworkTimeChanged", "s", [dbus.String(now)])
    print(now)


def dump():
    for path, ifaces in sorted(modems().items()):
        print(path)
        for iface, props in sorted(ifaces.items()):
            print(f"  {iface}")
            for k, v in sorted(props.items()):
                print(f"    {k} = {v!r}")
        sim_path = ifaces.get(MODEM, {}).get("Sim")
        if sim_path:
            print(sim_path)
            for k, v in sorted(obj(sim_path).GetAll(SIM, dbus_interface=PROPS).items()):
                print(f"    {k} = {v!r}")


def main(argv):
    if not argv:
        sys.exit(__doc__)
    cmd, args = argv[0], argv[1:]
    if cmd == "setup" and not args:
        setup()
    elif cmd == "swap-sim" and len(args) in (3, 4):
        mccmnc, iccid, imsi = args[:3]
        operator = args[3] if len(args) == 4 else f"Operator {mccmnc}"
        swap_sim(mccmnc, iccid, imsi, operator)
    elif cmd == "set-registration" and len(args) == 1:
        set_registration(int(args[0]))
    elif cmd == "network-time" and len(args) == 1:
        network_time(args[0])
    elif cmd == "dump" and not args:
        dump()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
