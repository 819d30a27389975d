#!/usr/bin/env python3
"""Which verbs of the upstream `linstor` CLI the `cairn` CLI has.

For every object kind of the upstream client, its verbs (the first level
below the kind: `linstor node --help`) are looked up in `cairn KIND VERB
--help` (names and aliases both count). Prints one line per kind and the
total.

    .venv/bin/python scripts/cli-tree-coverage.py --client-src DIR

DIR is a checkout of https://github.com/LINBIT/linstor-client; it runs with
the python-linstor of this interpreter. CAIRN_BIN picks the binary
(default target/debug/cairn). Nested verbs (`node interface create`) are
not counted separately.
"""

import argparse
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SKIP = {"help", "list-commands", "interactive"}


def upstream_verbs(src, args):
    out = subprocess.run([sys.executable, "linstor_client_main.py", *args, "--help"],
                         capture_output=True, text=True, cwd=src).stdout
    # The last brace list is the subcommands' (the top level's usage also
    # lists the choices of options such as --output-version).
    found = re.findall(r"\{([^}]*)\}", out, re.S)
    return [v.strip() for v in found[-1].split(",")] if found else []


def cairn_has(binary, args):
    return subprocess.run([binary, *args, "--help"], capture_output=True, text=True).returncode == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--client-src", required=True)
    a = ap.parse_args()
    binary = os.environ.get("CAIRN_BIN", os.path.join(HERE, "..", "target", "debug", "cairn"))
    total = have = 0
    for kind in upstream_verbs(a.client_src, []):
        if kind in SKIP:
            continue
        verbs = [v for v in upstream_verbs(a.client_src, [kind]) if v not in SKIP]
        missing = [v for v in verbs if not cairn_has(binary, [kind, v])]
        total += len(verbs)
        have += len(verbs) - len(missing)
        print(f"{kind}: {len(verbs) - len(missing)}/{len(verbs)}" + (f"; missing: {', '.join(missing)}" if missing else ""))
    print(f"total: {have}/{total}")


if __name__ == "__main__":
    main()
