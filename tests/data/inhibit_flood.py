#!/usr/bin/env python3
"""A flood of Inhibit calls: N concurrent calls to org.ssu.Agent1 on the system bus
(DBUS_SYSTEM_BUS_ADDRESS), each from a connection of its own, each with a reason of SIZE
bytes, each waiting up to TIMEOUT seconds for its answer.

    inhibit_flood.py N SIZE TIMEOUT

Prints one line per call: `ok` or the D-Bus error name. Used by tests/faults.rs and
scripts/bench, run as an unprivileged user."""
import multiprocessing
import sys

import dbus


def one(size_timeout):
    size, timeout = size_timeout
    bus = dbus.SystemBus(private=True)
    agent = bus.get_object("org.ssu.Agent1", "/org/ssu/Agent1", introspect=False)
    try:
        agent.Inhibit("x" * size, dbus_interface="org.ssu.Agent1", timeout=timeout)
        return "ok"
    except dbus.exceptions.DBusException as e:
        return e.get_dbus_name() or str(e)
    finally:
        bus.close()


def main():
    n, size, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    with multiprocessing.Pool(n) as pool:
        for answer in pool.map(one, [(size, timeout)] * n):
            print(answer, flush=True)


if __name__ == "__main__":
    main()
