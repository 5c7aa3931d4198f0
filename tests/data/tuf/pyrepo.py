#!/usr/bin/env python3
"""A TUF repository built by the reference implementation (python-tuf), not by ssu-repo.

tests/tuf_attacks.rs uses it to serve the agent repositories an attacker holding some keys
could sign: delegations that overreach, fast-forwarded versions, hostile target names,
declared lengths far beyond reason. The repository's whole state (keys, targets,
delegations, versions) lives in DIR/state.json and DIR/keys/; every `publish` re-signs
every role from that state into DIR/public/{metadata,targets}.

    pyrepo.py init DIR
    pyrepo.py target DIR ROLE NAME [--file PATH] [--custom JSON]   # NAME may be "JSON"
    pyrepo.py delegate DIR ROLE --paths P [P ...] [--terminating]
    pyrepo.py rotate DIR ROLE           # new key for a top-level role, in a new root
    pyrepo.py publish DIR [--timestamp-version N] [--snapshot-version N]
                          [--snapshot-length N] [--spec-version S]
                          [--layout spec|tough|both]
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    MetaFile,
    Metadata,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

TOP = ("root", "timestamp", "snapshot", "targets")


def expiry(days=365):
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=days)


def new_key(d, name):
    signer = CryptoSigner.generate_ed25519()
    pem = signer._private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with open(os.path.join(d, "keys", name + ".pem"), "wb") as f:
        f.write(pem)
    return name


def signer(d, name):
    with open(os.path.join(d, "keys", name + ".pem"), "rb") as f:
        private = serialization.load_pem_private_key(f.read(), None)
    public = SSlibKey.from_crypto(private.public_key())
    return CryptoSigner(private, public)


def load(d):
    with open(os.path.join(d, "state.json")) as f:
        return json.load(f)


def save(d, st):
    with open(os.path.join(d, "state.json"), "w") as f:
        json.dump(st, f, indent=1)


def write(md, path):
    with open(path, "wb") as f:
        f.write(md.to_bytes(JSONSerializer(compact=False)))


def sign_root(d, st):
    """Writes N.root.json, signed by the root keys of this and the previous version."""
    root = Root(
        version=st["root_version"],
        expires=expiry(),
        consistent_snapshot=True,
    )
    for role in TOP:
        for name in st["keys"][role]:
            root.add_key(signer(d, name).public_key, role)
    md = Metadata(root)
    for name in sorted(set(st["keys"]["root"]) | set(st.get("old_root_keys", []))):
        md.sign(signer(d, name), append=True)
    write(md, os.path.join(d, "public/metadata", f"{st['root_version']}.root.json"))


def cmd_init(a):
    d = a.dir
    for sub in ("keys", "public/metadata", "public/targets"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    st = {
        "root_version": 1,
        "keys": {role: [new_key(d, role + "-1")] for role in TOP},
        "key_serial": 1,
        "versions": {"timestamp": 0, "snapshot": 0},
        "roles": {"targets": {"version": 0, "targets": {}}},
        "delegations": [],
    }
    sign_root(d, st)
    save(d, st)
    publish(d, st, argparse.Namespace(timestamp_version=None, snapshot_version=None,
                                      snapshot_length=None, spec_version=None, layout="both"))


def cmd_target(a):
    st = load(a.dir)
    if a.file:
        with open(a.file, "rb") as f:
            data = f.read()
        src = os.path.abspath(a.file)
    else:
        data, src = b"", None
    entry = {
        "length": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "file": src,
        "custom": json.loads(a.custom) if a.custom else None,
    }
    # A name starting with '"' is a JSON string, so tests can sign names with NUL or ESC.
    name = json.loads(a.name) if a.name.startswith('"') else a.name
    st["roles"][a.role]["targets"][name] = entry
    save(a.dir, st)


def cmd_delegate(a):
    st = load(a.dir)
    key = new_key(a.dir, a.role)
    st["delegations"].append(
        {"name": a.role, "paths": a.paths, "terminating": a.terminating, "key": key}
    )
    st["roles"][a.role] = {"version": 0, "targets": {}}
    save(a.dir, st)


def cmd_rotate(a):
    st = load(a.dir)
    st["key_serial"] += 1
    old = st["keys"][a.role]
    st["keys"][a.role] = [new_key(a.dir, f"{a.role}-{st['key_serial']}")]
    st["old_root_keys"] = old if a.role == "root" else []
    st["root_version"] += 1
    sign_root(a.dir, st)
    st["old_root_keys"] = []
    save(a.dir, st)


def place(d, name, entry, layout):
    """Puts a target file where the TUF spec says (<dir>/<sha256>.<base>) and/or where
    tough's layout has it (<sha256>.<dir>/<base>)."""
    if not entry["file"]:
        return
    sha = entry["sha256"]
    head, _, base = name.rpartition("/")
    spots = []
    if layout in ("spec", "both"):
        spots.append(os.path.join(head, f"{sha}.{base}") if head else f"{sha}.{base}")
    if layout in ("tough", "both"):
        spots.append(f"{sha}.{name}")
    for spot in spots:
        path = os.path.join(d, "public/targets", spot)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copyfile(entry["file"], path)


def targets_md(d, st, role, spec):
    info = st["roles"][role]
    info["version"] += 1
    t = Targets(version=info["version"], expires=expiry())
    t.spec_version = spec  # set afterwards: python-tuf refuses to create other versions
    for name, e in info["targets"].items():
        unrecognized = {"custom": e["custom"]} if e["custom"] is not None else {}
        t.targets[name] = TargetFile(
            e["length"], {"sha256": e["sha256"]}, name, unrecognized_fields=unrecognized
        )
    if role == "targets" and st["delegations"]:
        keys, roles = {}, {}
        for dl in st["delegations"]:
            pub = signer(d, dl["key"]).public_key
            keys[pub.keyid] = pub
            roles[dl["name"]] = DelegatedRole(
                dl["name"], [pub.keyid], 1, dl["terminating"], paths=dl["paths"]
            )
        t.delegations = Delegations(keys, roles)
    md = Metadata(t)
    key = next((dl["key"] for dl in st["delegations"] if dl["name"] == role), None)
    md.sign(signer(d, key or st["keys"]["targets"][0]))
    data = md.to_bytes(JSONSerializer(compact=False))
    with open(os.path.join(d, "public/metadata", f"{info['version']}.{role}.json"), "wb") as f:
        f.write(data)
    return info["version"], data


def publish(d, st, a):
    spec = a.spec_version or "1.0.31"
    meta = {}
    for role in st["roles"]:
        version, data = targets_md(d, st, role, spec)
        meta[f"{role}.json"] = MetaFile(version=version, length=len(data))
        for name, e in st["roles"][role]["targets"].items():
            place(d, name, e, a.layout)
    v = st["versions"]
    v["snapshot"] = a.snapshot_version or v["snapshot"] + 1
    snap = Metadata(Snapshot(version=v["snapshot"], expires=expiry(), meta=meta))
    snap.signed.spec_version = spec
    snap.sign(signer(d, st["keys"]["snapshot"][0]))
    data = snap.to_bytes(JSONSerializer(compact=False))
    with open(os.path.join(d, "public/metadata", f"{v['snapshot']}.snapshot.json"), "wb") as f:
        f.write(data)
    length = a.snapshot_length or len(data)
    v["timestamp"] = a.timestamp_version or v["timestamp"] + 1
    ts = Metadata(Timestamp(version=v["timestamp"], expires=expiry(),
                            snapshot_meta=MetaFile(version=v["snapshot"], length=length)))
    ts.signed.spec_version = spec
    ts.sign(signer(d, st["keys"]["timestamp"][0]))
    write(ts, os.path.join(d, "public/metadata", "timestamp.json"))
    save(d, st)


def cmd_publish(a):
    publish(a.dir, load(a.dir), a)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("init")
    s.add_argument("dir")
    s = sub.add_parser("target")
    s.add_argument("dir")
    s.add_argument("role")
    s.add_argument("name")
    s.add_argument("--file")
    s.add_argument("--custom")
    s = sub.add_parser("delegate")
    s.add_argument("dir")
    s.add_argument("role")
    s.add_argument("--paths", nargs="+", required=True)
    s.add_argument("--terminating", action="store_true")
    s = sub.add_parser("rotate")
    s.add_argument("dir")
    s.add_argument("role", choices=TOP)
    s = sub.add_parser("publish")
    s.add_argument("dir")
    s.add_argument("--timestamp-version", type=int)
    s.add_argument("--snapshot-version", type=int)
    s.add_argument("--snapshot-length", type=int)
    s.add_argument("--spec-version")
    s.add_argument("--layout", choices=("spec", "tough", "both"), default="both")
    a = p.parse_args()
    {"init": cmd_init, "target": cmd_target, "delegate": cmd_delegate,
     "rotate": cmd_rotate, "publish": cmd_publish}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
