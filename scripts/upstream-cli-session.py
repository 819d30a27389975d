#!/usr/bin/env python3
"""A realistic admin session with LINBIT's own `linstor` CLI against Cairn.

Starts a `cairn controller` and three `cairn satellite --drbd-config-only`
processes (FILE_THIN pools on an XFS file system made for the run, so
snapshots are reflinks) on 127.0.31.1-3, then runs the upstream CLI command
by command and prints one line per command: ok, or the error it printed.

    sudo .venv/bin/python scripts/upstream-cli-session.py --client-src DIR [--markdown OUT.md]

DIR is a checkout of https://github.com/LINBIT/linstor-client (the session
was written against v1.27.0); the CLI runs from it with the python-linstor
of the interpreter running this script. Needs root (loop devices, mount),
drbd-utils and mkfs.xfs. CAIRN_BIN picks the binary (default
target/debug/cairn). Exit code: 0 when the run finished, whatever the
counts (they are the measurement).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))

from conftest import Controller, SatelliteProc, loops_under, mounted_fs, wait_for  # noqa: E402
from test_spec import BINARY, EVENT_STREAMS, TOKEN_AUTH_ON, embedded_routes  # noqa: E402

NODES = {"n1": "127.0.31.1", "n2": "127.0.31.2", "n3": "127.0.31.3"}
EXT_DIR = "/etc/cairn-session-files"


def session(root, ports):
    """The commands, in order: (argv after `linstor`, stdin or None)."""
    c = []
    add = lambda line, stdin=None: c.append((line.split(), stdin))
    add("controller version")
    add("controller list-properties")
    add("controller set-property Aux/site lab")
    add("controller drbd-options --max-buffers 8000")
    add("controller set-log-level INFO")
    for n, ip in NODES.items():
        add(f"node create {n} {ip} --port {ports[n]}")
    add("node list")
    add("node list --show-aux-props")
    add("node info")
    add("node describe n1")
    add("node interface create n1 repl 127.0.31.11")
    add("node interface list n1")
    add("node interface modify n1 repl --ip 127.0.31.12")
    add("node interface delete n1 repl")
    add("node set-property n1 Aux/rack r1")
    add("node list-properties n1")
    add("node list --props Aux/rack=r1")
    add("node modify n2 --node-type satellite")
    add("node reconnect n2")
    for n in NODES:
        add(f"storage-pool create filethin {n} DfltStorPool {root}/{n}/pool")
    add("storage-pool list")
    add("storage-pool list -n n1")
    add("storage-pool set-property n1 DfltStorPool MaxOversubscriptionRatio 10")
    add("storage-pool list-properties n1 DfltStorPool")
    add("storage-pool create diskless n3 dlpool")
    add("storage-pool delete n3 dlpool")
    add("physical-storage list")
    add("resource-group create web --place-count 2 --storage-pool DfltStorPool")
    add("resource-group list")
    add("resource-group modify web --description webservers")
    add("resource-group set-property web Aux/app web")
    add("resource-group list-properties web")
    add("resource-group drbd-options web --verify-alg crc32c")
    add("volume-group create web")
    add("volume-group list web")
    add("volume-group set-property web 0 Aux/vg x")
    add("volume-group list-properties web 0")
    add("resource-group query-size-info web")
    add("resource-group query-max-volume-size web")
    add("controller query-max-volume-size 2")
    add("resource-group spawn-resources web vol1 20M")
    add("resource-group spawn-resources web vol2 20M")
    add("resource-definition list")
    add("resource list")
    add("resource list-volumes")
    add("volume list -n n1")
    add("resource-group modify web --place-count 3")
    add("resource-group adjust web")
    add("resource list -r vol1")
    add("resource-group adjust")
    add("resource-definition create manual")
    add("volume-definition create manual 10M")
    add("resource-definition list -r manual")
    add("volume-definition list -r manual")
    add("resource-definition set-property manual Aux/owner ops")
    add("resource-definition list-properties manual")
    add("resource-definition drbd-options manual --protocol C")
    add("volume-definition set-property manual 0 Aux/vd y")
    add("volume-definition list-properties manual 0")
    add("volume-definition drbd-options manual 0 --resync-after vol1/0")
    add("resource create n1 n2 manual --storage-pool DfltStorPool")
    add("resource create n3 manual --drbd-diskless")
    add("resource list -r manual")
    add("resource list-properties n1 manual")
    add("resource set-property n1 manual Aux/r z")
    add("volume set-property n1 manual 0 Aux/v w")
    add("volume list-properties n1 manual 0")
    add("resource drbd-peer-options n1 n2 manual --protocol C")
    add("resource-connection list manual")
    add("resource-connection set-property n1 n2 manual Aux/rc 1")
    add("resource-connection list-properties n1 n2 manual")
    add("resource-connection drbd-peer-options n1 n2 manual --c-max-rate 102400")
    add("resource-connection path create n1 n2 manual p1 default default")
    add("resource-connection path list n1 n2 manual")
    add("resource-connection path delete n1 n2 manual p1")
    add("node-connection list")
    add("node-connection set-property n1 n2 Aux/nc 1")
    add("node-connection list-properties n1 n2")
    add("node-connection drbd-peer-options n1 n2 --ping-timeout 10")
    add("node-connection path create n1 n2 p1 default default")
    add("node-connection path list n1 n2")
    add("node-connection path delete n1 n2 p1")
    add("volume-definition set-size manual 0 20M")
    add("volume list -r manual")
    add("resource toggle-disk n3 manual --storage-pool DfltStorPool")
    add("resource list -r manual")
    add("resource toggle-disk n3 manual --diskless")
    add("resource deactivate n2 manual")
    add("resource activate n2 manual")
    add("resource involved n1")
    add("resource delete n3 manual")
    add("resource make-available n3 manual")
    add("resource-definition auto-place vol2 --place-count 3")
    add("resource-definition wait-sync vol1 --wait-timeout 20")
    add("snapshot create vol1 snap1")
    add("snapshot list")
    add("snapshot list-properties vol1 snap1")
    add("snapshot set-property vol1 snap1 Aux/s 1")
    add("resource-definition create vol1r")
    add("snapshot volume-definition restore --from-resource vol1 --from-snapshot snap1 --to-resource vol1r")
    add("snapshot resource restore --from-resource vol1 --from-snapshot snap1 --to-resource vol1r")
    add("resource list -r vol1r")
    add("snapshot rollback vol1 snap1")
    add("snapshot create-multiple snapm -r vol1 vol2")
    add("snapshot delete vol1 snap1")
    add("resource-definition clone vol2 vol2c")
    add("resource list -r vol2c")
    add("key-value-store modify app k1 v1")
    add("key-value-store list")
    add("key-value-store show app")
    add("key-value-store modify app k1")
    add(f"file modify {EXT_DIR}/app.conf", stdin="setting=1\n")
    add("file list")
    add(f"file show {EXT_DIR}/app.conf")
    add(f"file deploy {EXT_DIR}/app.conf vol1")
    add(f"file undeploy {EXT_DIR}/app.conf vol1")
    add(f"file delete {EXT_DIR}/app.conf")
    add("node evacuate n3")
    add("resource list")
    add("node restore n3")
    add("node list")
    add("advise resource")
    add("advise maintenance n1")
    add("node-connection list")
    add("error-reports list")
    add("remote list")
    add("schedule list")
    add("error-reports show 00000000-00000-000000")
    add("space-reporting query")
    add("sos-report create")
    add("resource-definition create vol3")
    add("volume-definition create vol3 8M")
    # The transaction is a state of the interactive shell: the creates in
    # it are sent as one request at commit.
    add("interactive", stdin="resource create-transactional begin\n"
        "resource create n1 vol3 --storage-pool DfltStorPool\n"
        "resource create n2 vol3 --storage-pool DfltStorPool\n"
        "resource create-transactional commit\nexit\n")
    add("resource list -r vol3")
    add("encryption create-passphrase --passphrase cairn-session-pass")
    add("encryption enter-passphrase --passphrase cairn-session-pass")
    add("controller backupdb session-backup")
    add("controller list-properties")
    add("controller set-property Aux/site")
    add("storage-pool list --show-props StorDriver/StorPoolName")
    add("resource-definition modify vol2 --resource-group web")
    add("snapshot delete vol1 snapm")
    add("snapshot delete vol2 snapm")
    add("resource-definition delete vol2c")
    add("resource-definition delete vol1r")
    add("resource delete n1 n2 manual")
    add("resource-definition delete manual")
    add("resource-definition delete vol1")
    add("resource-definition delete vol2")
    add("resource-definition delete vol3")
    add("resource-definition delete nosuchrd")
    add("volume-group delete web 0")
    add("resource-group delete web")
    add("storage-pool delete n3 DfltStorPool")
    add("node delete n3")
    add("node lost n2")
    add("node list")
    return c


def route_counts(ctrl):
    """Walks every (method, path) of LINSTOR's API on a fresh controller:
    served (anything but 501), not served yet, refused on purpose (features
    Cairn does not have). Served but not walked: the event streams (they
    never end), the SOS download (a tar.gz, not JSON) and turning token
    authentication on (it would lock the session out); test_spec,
    test_error_reports and test_auth cover them."""
    skip = EVENT_STREAMS | BINARY | TOKEN_AUTH_ON
    served, not_yet, refused = sorted(skip), [], []
    for m, p in sorted(embedded_routes() - skip):
        body = b"{}" if m in ("POST", "PUT", "PATCH", "OPTIONS") else None
        status, _, reply = ctrl.request(m, re.sub(r"\{[^}]+\}", "x1", p), raw_body=body)
        if status != 501:
            served.append((m, p))
        elif "not supported by Cairn" in reply[0]["message"]:
            refused.append((m, p))
        else:
            not_yet.append((m, p))
    return served, not_yet, refused


def first_error(out):
    """The line of the CLI's output that says what went wrong."""
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    for key in ("Traceback", "ERROR", "Error", "error:"):
        for i, line in enumerate(lines):
            if line.startswith(key) or key in line[:12]:
                if key == "Traceback":
                    return "client crash: " + lines[-1]
                # The entry's text follows ERROR (after "Description:").
                rest = [x for x in lines[i + 1:i + 3] if x != "Description:"]
                return (line + " " + (rest[0] if rest else "")).strip()
    return lines[-1] if lines else "(no output)"


def run(client_src, md_out):
    env = dict(os.environ, PYTHONPATH=client_src, LS_CONTROLLERS="", TERM="dumb")
    fs = mounted_fs(["mkfs.xfs", "-q", "-m", "reflink=1"])
    root = next(fs)
    os.makedirs(EXT_DIR, exist_ok=True)
    ctrl = Controller(os.path.join(root, "controller"))
    os.makedirs(ctrl.data_dir)
    ctrl.start()
    try:
        served, not_yet, refused = route_counts(ctrl)
    except BaseException:
        ctrl.stop()
        next(fs, None)
        raise
    total = len(served) + len(not_yet) + len(refused)
    print(f"routes: {len(served)} of {total} served, {len(not_yet)} not yet (501), {len(refused)} refused on purpose (501)")
    secret = os.path.join(ctrl.data_dir, "cluster-secret")
    sats = {n: SatelliteProc(n, ip, os.path.join(root, n), secret,
                             extra_args=["--drbd-config-only", "--allow-ext-files", EXT_DIR]).start()
            for n, ip in NODES.items()}
    results = []
    try:
        cmds = session(root, {n: s.port for n, s in sats.items()})
        for i, (argv, stdin) in enumerate(cmds, start=1):
            full = [sys.executable, os.path.join(client_src, "linstor_client_main.py"),
                    "--controllers", ctrl.url, "--no-color", "--no-utf8"] + argv
            t0 = time.time()
            try:
                p = subprocess.run(full, input=stdin or "", capture_output=True, text=True, env=env, timeout=180)
                out, rc = p.stdout + p.stderr, p.returncode
            except subprocess.TimeoutExpired:
                out, rc = "timed out after 180 s", -1
            good = rc == 0 and "Traceback" not in out and "ERROR:" not in out
            msg = "ok" if good else first_error(out)
            results.append((i, " ".join(argv), good, rc, msg, time.time() - t0))
            print(f"{i:3} {'ok ' if good else 'ERR'} rc={rc:<3} {' '.join(argv)}", flush=True)
            if not good:
                print("      " + out.strip().replace("\n", "\n      "), flush=True)
            if argv[:2] == ["node", "create"]:
                wait_for("node online", lambda: any(
                    n.get("connection_status") == "ONLINE" for n in ctrl.request("GET", "/v1/nodes?nodes=" + argv[2])[2]),
                    timeout=30)
    finally:
        ctrl.stop()
        for s in sats.values():
            s.stop()
        for d in loops_under(root):
            subprocess.run(["losetup", "--detach", d["name"]], check=False)
        next(fs, None)
        shutil.rmtree(EXT_DIR, ignore_errors=True)
    n_ok = sum(1 for r in results if r[2])
    print(f"\n{n_ok} of {len(results)} commands ok")
    if md_out:
        with open(md_out, "w") as f:
            f.write("| # | command | result |\n| --: | --- | --- |\n")
            for i, cmd, good, rc, msg, _ in results:
                cell = "ok" if good else f"rc {rc}: " + msg.replace("|", "\\|")[:300]
                f.write(f"| {i} | `linstor {cmd}` | {cell} |\n")
            f.write(f"\n{n_ok} of {len(results)} commands ok.\n")
            f.write(f"\nRoutes: {len(served)} of {total} served, {len(not_yet)} not yet, {len(refused)} refused on purpose.\n")
            for title, rows in (("Not served yet (501, not implemented by Cairn yet)", not_yet),
                                ("Refused on purpose (501, not supported by Cairn)", refused)):
                f.write(f"\n{title}:\n\n" + "".join(f"- `{m} {p}`\n" for m, p in rows))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--client-src", required=True, help="a checkout of LINBIT/linstor-client")
    ap.add_argument("--markdown", help="also write the result table here")
    a = ap.parse_args()
    if not os.path.isfile(os.path.join(a.client_src, "linstor_client_main.py")):
        sys.exit(f"{a.client_src} has no linstor_client_main.py: clone https://github.com/LINBIT/linstor-client there")
    if os.geteuid() != 0:
        sys.exit("needs root (loop devices, an XFS mount)")
    tempfile.tempdir = tempfile.gettempdir()
    run(os.path.abspath(a.client_src), a.markdown)


if __name__ == "__main__":
    main()
