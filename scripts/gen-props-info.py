#!/usr/bin/env python3
"""Writes crates/cairn-domain/src/props_info.json: LINSTOR's property
whitelist per object kind, in the shape of its `PropsInfo`
(`GET …/properties/info`).

The source is python-linstor's `linstor/properties.py`, generated (as the
controller's own rules) from linstor-common's properties.json. Each entry
becomes what LINSTOR's CtrlPropsInfoApiCallHandler answers: `prop_type`
lower-case, `value` the validation pattern as the server's Property classes
print it (none for long and string), `dflt`, `unit`, `info`. Symbol lists
are regex properties on the server, so they are listed as such.

Usage: scripts/gen-props-info.py [PYTHON_LINSTOR_DIR]   (default: .venv)"""

import glob
import json
import os
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.path.join(REPO, "crates", "cairn-domain", "src", "props_info.json")

# python-linstor's object names -> LINSTOR's LinStorObject.
KINDS = {
    "controller": "CTRL",
    "node": "NODE",
    "node-conn": "NODE_CONN",
    "resource": "RSC",
    "resource-definition": "RSC_DFN",
    "rsc-conn": "RSC_CONN",
    "storagepool": "STOR_POOL",
    "storagepool-definition": "STOR_POOL_DFN",
    "volume": "VLM",
    "volume-definition": "VLM_DFN",
    "drbd-proxy": "DRBD_PROXY",
    "drbd-proxy-lzma": "DRBD_PROXY_LZMA",
    "drbd-proxy-zlib": "DRBD_PROXY_ZLIB",
    "drbd-proxy-zstd": "DRBD_PROXY_ZSTD",
}


def info_of(p):
    t = p["type"]
    out = {"prop_type": t}
    if t == "symbol":
        out = {"prop_type": "regex", "value": "(?:" + "|".join(str(v) for v in p["values"]) + ")"}
    elif t == "regex":
        out["value"] = p["value"]
    elif t == "range":
        out["value"] = f"({int(p['min'])} - {int(p['max'])})"
    elif t == "range-float":
        out = {"prop_type": "range_float", "value": f"({float(p['min_float'])} - {float(p['max_float'])})"}
    elif t == "numeric-or-symbol":
        values = "(?:" + "|".join(str(v) for v in p["values"]) + ")"
        out = {"prop_type": "numeric_or_symbol", "value": f"({int(p['min'])} - {int(p['max'])}) or {values}"}
    elif t == "boolean":
        out["value"] = "(?i)(?:yes|no)"
    elif t == "boolean_true_false":
        out["value"] = "(?i)(?:true|false|yes|no)"
    elif t not in ("long", "string"):
        raise SystemExit(f"unknown property type {t!r} of {p['key']}")
    if p.get("info"):
        out["info"] = p["info"]
    if "default" in p:
        d = p["default"]
        out["dflt"] = ("yes" if d else "no") if isinstance(d, bool) and t == "boolean" else str(d).lower() if isinstance(d, bool) else str(d)
    if p.get("unit"):
        out["unit"] = p["unit"]
    return out


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, ".venv")
    sites = glob.glob(os.path.join(base, "lib", "python3*", "site-packages")) or [base]
    sys.path.insert(0, sites[0])
    from linstor.properties import properties  # noqa: E402

    unknown = set(properties) - set(KINDS)
    if unknown:
        raise SystemExit(f"object kinds without a LINSTOR name: {sorted(unknown)}")
    out = {KINDS[k]: {p["key"]: info_of(p) for p in props} for k, props in sorted(properties.items())}
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{OUT}: {sum(len(v) for v in out.values())} properties in {len(out)} kinds")


if __name__ == "__main__":
    main()
