"""External files (`/v1/files`, `linstor file …`): kept by the controller,
written by the satellites of the nodes holding a resource of a definition
that deploys them, only into directories the satellite allows.

The satellites share this host, so each writes below its own root
(`--ext-files-root`, a test seam): the file `/…/etc/app.conf` of node n1 is
`<root>/n1-files/…/etc/app.conf` here."""

import base64
import os
import stat
import subprocess

import linstor
import pytest

from conftest import BIN, err, ok, run_cluster, wait_for

FAIL_INVLD_EXT_FILE_NAME = 235
FAIL_INVLD_EXT_FILE = 236
FAIL_NOT_FOUND_RSC_DFN = 301
FAIL_NOT_FOUND_EXT_FILE = 320
WARN_NOT_FOUND = 3000
MASK_ERROR = -(1 << 62)
MASK_WARN = -(1 << 63)


@pytest.fixture
def files_cluster():
    # A fixed logical directory per test run; every satellite allows it.
    base = f"/cairn-files-test-{os.getpid()}/etc"

    def args(name, root):
        # Comma-separated, as LINSTOR's --allow-ext-files.
        return ["--allow-ext-files", f"{base},/cairn-other-dir/", "--ext-files-root", os.path.join(root, f"{name}-files")]

    for c in run_cluster("cairn-files-", {"n1": "FILE_THIN", "n2": "FILE_THIN", "n3": "FILE_THIN"},
                         default_stack="STORAGE", sat_args=args):
        c.base = base
        yield c


def on_node(c, node, path):
    return os.path.join(c.root, f"{node}-files", path.lstrip("/"))


def make_dirs(c, path):
    for n in c.sats:
        os.makedirs(os.path.dirname(on_node(c, n, path)), exist_ok=True)


def test_deploy_writes_the_file_on_every_node_of_the_resource_and_undeploy_removes_it(files_cluster):
    c, lin = files_cluster, files_cluster.lin
    path = c.base + "/app.conf"
    make_dirs(c, path)
    content = b"key = value\n\x00binary\xff\n"
    # As LINSTOR: the set answers with the satellites' answers only, none.
    assert lin.file_modify(path, content) == []
    # The list names it without content; show carries the content.
    listed = lin.file_list()[0].files
    assert [(f.path, f.content) for f in listed] == [(path, None)]
    shown = lin.file_show(path).files
    assert base64.b64decode(shown.content) == content
    status, _, body = c.ctrl.request("GET", "/v1/files?content=true")
    assert status == 200 and body == [{"path": path, "content": base64.b64encode(content).decode(), "alt_suffixes": []}]

    ok(lin.resource_dfn_create("web"))
    ok(lin.volume_dfn_create("web", 4096))
    for n in ("n1", "n2"):
        ok(lin.resource_create([linstor.ResourceData(n, "web", storage_pool="DfltStorPool")]))
    replies = lin.file_deploy(path, "web")
    assert all(r.is_success() for r in replies), [str(r) for r in replies]
    assert sorted(r.message for r in replies) == [f"Deployed {path} on resource 'web' on 'n{i}'" for i in (1, 2)]
    for n in ("n1", "n2"):
        f = on_node(c, n, path)
        with open(f, "rb") as fh:
            assert fh.read() == content
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
        assert os.listdir(os.path.dirname(f)) == ["app.conf"], "no temporary file stays"
    assert not os.path.exists(on_node(c, "n3", path))
    rd = [d for d in lin.resource_dfn_list_raise().resource_definitions if d.name == "web"][0]
    assert rd.properties.get("files" + path) == "True"

    # The status of the file on a node, and the check of a node's allowance.
    status, _, body = c.ctrl.request("GET", f"/v1/files/{path.replace('/', '%2F')}/status/n1")
    assert status == 200 and body == {"actual_path": on_node(c, "n1", path), "content_match": True}, body
    status, _, body = c.ctrl.request("GET", f"/v1/files/{path.replace('/', '%2F')}/status/n3")
    assert status == 200 and body == {"actual_path": "", "content_match": False}, body
    status, _, body = c.ctrl.request("GET", f"/v1/files/{path.replace('/', '%2F')}/check/n1")
    assert (status, body) == (200, {"allowed": True})
    status, _, body = c.ctrl.request("GET", f"/v1/files/{'/etc/passwd'.replace('/', '%2F')}/check/n1")
    assert (status, body) == (200, {"allowed": False})
    status, _, body = c.ctrl.request("GET", "/v1/files/%2Fcairn-other-dir%2Fy.conf/check/n2")
    assert (status, body) == (200, {"allowed": True})

    # New content reaches the nodes; a node gaining the resource gets it.
    assert lin.file_modify(path, b"v2\n") == []
    wait_for("new content on n1", lambda: open(on_node(c, "n1", path), "rb").read() == b"v2\n")
    ok(lin.resource_create([linstor.ResourceData("n3", "web", storage_pool="DfltStorPool")]))
    with open(on_node(c, "n3", path), "rb") as fh:
        assert fh.read() == b"v2\n"
    # A resource going takes the file with it on its node.
    ok(lin.resource_delete("n3", "web"))
    assert not os.path.exists(on_node(c, "n3", path))

    replies = lin.file_undeploy(path, "web")
    assert all(r.is_success() for r in replies), [str(r) for r in replies]
    for n in ("n1", "n2"):
        assert not os.path.exists(on_node(c, n, path))
    # Deleting the file undeploys it too.
    ok(lin.file_deploy(path, "web"))
    assert os.path.exists(on_node(c, "n1", path))
    replies = lin.file_delete(path)
    assert [r.message for r in replies if r.is_success()][-1] == f"External file: {path} deleted."
    assert not os.path.exists(on_node(c, "n1", path))
    assert lin.file_list()[0].files == []


def test_refusals_are_linstors(files_cluster):
    c, lin = files_cluster, files_cluster.lin
    # Outside the allowed directories: the satellite refuses to write.
    outside = c.base + "/sub/x.conf"
    make_dirs(c, outside)
    assert lin.file_modify(outside, b"x") == []
    ok(lin.resource_dfn_create("db"))
    ok(lin.volume_dfn_create("db", 4096))
    ok(lin.resource_create([linstor.ResourceData("n1", "db", storage_pool="DfltStorPool")]))
    replies = lin.file_deploy(outside, "db")
    errors = [r for r in replies if r.is_error()]
    assert errors and "does not have a whitelisted parent" in errors[0].message, [str(r) for r in replies]
    assert not [r for r in replies if r.is_success()], "no 'Deployed' entry for the node that failed"
    assert f"Allowed parent directories: [{c.base}, /cairn-other-dir/]" in errors[0].message
    assert not os.path.exists(on_node(c, "n1", outside))
    ok(lin.file_undeploy(outside, "db"))
    # Names: relative, '..', empty content, suffixes with '/'.
    err(lin.file_modify("etc/rel.conf", b"x"), FAIL_INVLD_EXT_FILE_NAME)
    err(lin.file_modify(c.base + "/../x.conf", b"x"), FAIL_INVLD_EXT_FILE_NAME)
    err(lin.file_modify(c.base + "/empty.conf", b""), FAIL_INVLD_EXT_FILE)
    status, _, body = c.ctrl.request("PUT", f"/v1/files/{(c.base + '/s.conf').replace('/', '%2F')}",
                                     {"content": "eA==", "alt_suffixes": ["/evil"]})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == FAIL_INVLD_EXT_FILE, body
    # Unknown file or definition.
    err(lin.file_deploy(c.base + "/nope.conf", "db"), FAIL_NOT_FOUND_EXT_FILE)
    err(lin.file_deploy(outside, "nope"), FAIL_NOT_FOUND_RSC_DFN)
    with pytest.raises(linstor.LinstorApiCallError):
        lin.file_show(c.base + "/nope.conf")
    status, _, body = c.ctrl.request("GET", f"/v1/files/{(c.base + '/nope.conf').replace('/', '%2F')}")
    assert status == 404 and body[0]["message"] == f"External file '{c.base}/nope.conf' not found."
    # Deleting what is not there is a warning.
    replies = lin.file_delete(c.base + "/nope.conf")
    assert replies[0].is_warning() and replies[0].ret_code & 0x7FFF == WARN_NOT_FOUND % 0x8000
    # The definition's files go with it when it is deleted.
    ok(lin.resource_dfn_delete("db"))
    # An unknown node is never allowed.
    status, _, body = c.ctrl.request("GET", f"/v1/files/{outside.replace('/', '%2F')}/check/n9")
    assert (status, body) == (200, {"allowed": False})
    # The status needs the satellite: 503 as LINSTOR's when it is gone.
    c.sats["n3"].stop()
    wait_for("n3 offline", lambda: [n.connection_status for n in lin.node_list_raise().nodes if n.name == "n3"] != ["ONLINE"])
    status, _, body = c.ctrl.request("GET", f"/v1/files/{outside.replace('/', '%2F')}/status/n3")
    assert (status, body) == (503, {"message": "Satellite not connected"})
    status, _, body = c.ctrl.request("GET", f"/v1/files/{outside.replace('/', '%2F')}/status/n9")
    assert status == 404 and body[0]["ret_code"] & 0x7FFF == 300, body


def cairn(c, *args, stdin=None):
    env = dict(os.environ, LS_CONTROLLERS=c.ctrl.url)
    p = subprocess.run([BIN, *args], input=stdin, capture_output=True, env=env, timeout=120)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_cli_file_verbs(files_cluster):
    c = files_cluster
    path = c.base + "/cli.conf"
    make_dirs(c, path)
    code, out, errout = cairn(c, "file", "modify", path, stdin=b"from the cli\n")
    assert code == 0, errout
    code, out, _ = cairn(c, "--no-utf8", "f", "l")
    assert code == 0 and path in out and "Path" in out
    code, out, _ = cairn(c, "file", "show", path)
    assert (code, out) == (0, "from the cli\n")
    ok(c.lin.resource_dfn_create("clirsc"))
    ok(c.lin.volume_dfn_create("clirsc", 4096))
    ok(c.lin.resource_create([linstor.ResourceData("n2", "clirsc", storage_pool="DfltStorPool")]))
    code, out, errout = cairn(c, "--no-color", "file", "deploy", path, "clirsc")
    assert code == 0 and f"Deployed {path} on resource 'clirsc' on 'n2'" in out, (out, errout)
    with open(on_node(c, "n2", path), "rb") as fh:
        assert fh.read() == b"from the cli\n"
    code, out, _ = cairn(c, "f", "und", path, "clirsc")
    assert code == 0 and not os.path.exists(on_node(c, "n2", path))
    code, out, errout = cairn(c, "file", "deploy", path, "nope")
    assert code == 10 and "Resource definition 'nope' not found." in out + errout
    code, out, _ = cairn(c, "file", "delete", path)
    assert code == 0 and "deleted" in out
    code, out, errout = cairn(c, "file", "show", path)
    assert code == 10 and f"External file '{path}' not found." in out + errout
