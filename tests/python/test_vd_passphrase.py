"""`PUT /v1/resource-definitions/{rd}/volume-definitions/{nr}/encryption-passphrase`
(`linstor vd modify-passphrase`): LINSTOR's refusals and answers, through
python-linstor and the `cairn` CLI. Changing the key of real LUKS devices
needs device-mapper, which these hosts lack: tests/vm/test_vm_luks.py does
that in a VM."""

import os
import subprocess

import linstor

from conftest import BIN, ok

FAIL_NOT_FOUND_RSC_DFN, FAIL_NOT_FOUND_VLM_DFN, FAIL_NOT_FOUND_CRYPT_KEY = 301, 303, 312
FAIL_INVLD_CRYPT_PASSPHRASE, FAIL_INVLD_PROP, WARN_NOT_FOUND = 216, 213, 3000
PATH = "/v1/resource-definitions/{}/volume-definitions/{}/encryption-passphrase"


def code(entry):
    return entry["ret_code"] & 0x7FFF


def cairn(controller, *args, stdin=None):
    env = dict(os.environ, LS_CONTROLLERS=controller.url)
    p = subprocess.run([BIN, *args], capture_output=True, text=True, env=env, timeout=120, input=stdin)
    return p.returncode, p.stdout + p.stderr


def test_refusals_and_the_warning_without_a_luks_layer(controller, lin):
    ok(lin.node_create("pa", "SATELLITE", "127.0.1.1"))
    ok(lin.storage_pool_create("pa", "pool", "FILE_THIN", "/var/lib/p"))
    ok(lin.resource_dfn_create("plain"))
    ok(lin.volume_dfn_create("plain", 2048))

    # The definition is looked up first, then the master key.
    status, _, body = controller.request("PUT", PATH.format("nope", 0), {"new_passphrase": "x"})
    assert status == 404 and code(body[0]) == FAIL_NOT_FOUND_RSC_DFN and body[0]["ret_code"] < 0, body
    status, _, body = controller.request("PUT", PATH.format("plain", 3), {"new_passphrase": "x"})
    assert status == 404 and code(body[0]) == FAIL_NOT_FOUND_VLM_DFN, body
    status, _, body = controller.request("PUT", PATH.format("plain", 0), {"new_passphrase": "x"})
    assert status == 404 and code(body[0]) == FAIL_NOT_FOUND_CRYPT_KEY, body
    assert "master key" in body[0]["message"], body
    status, _, body = controller.request("PUT", PATH.format("plain", 0), {})
    assert status >= 400 and body[0]["ret_code"] < 0, body

    status, _, body = controller.request("POST", "/v1/encryption/passphrase", {"new_passphrase": "geheim"})
    assert status == 201, body
    status, _, body = controller.request("PUT", PATH.format("plain", 0), {"new_passphrase": ""})
    assert status >= 400 and code(body[0]) == FAIL_INVLD_CRYPT_PASSPHRASE, body

    # A resource without LUKS: LINSTOR's warning, then "modified".
    ok(lin.resource_create([linstor.ResourceData("pa", "plain", storage_pool="pool")]))
    replies = lin.volume_dfn_modify_passphrase("plain", 0, "user-pass")
    assert replies[0].is_warning() and code({"ret_code": replies[0].ret_code}) == WARN_NOT_FOUND, [str(r) for r in replies]
    assert "No resources have any luks layer" in replies[0].message
    assert replies[1].is_success() and "modified" in replies[1].message, [str(r) for r in replies]
    assert not any(r.is_error() for r in replies), [str(r) for r in replies]

    # Stored sealed as LINSTOR's Encryption/Passphrase, never in the clear,
    # and not writable through property edits.
    status, _, vd = controller.request("GET", "/v1/resource-definitions/plain/volume-definitions/0")
    sealed = vd["props"]["Encryption/Passphrase"]
    assert sealed and "user-pass" not in sealed, vd
    status, _, body = controller.request("PUT", "/v1/resource-definitions/plain/volume-definitions/0",
                                         {"override_props": {"Encryption/Passphrase": "clear"}})
    assert status >= 400 and code(body[0]) == FAIL_INVLD_PROP, body

    # The CLI verb as upstream's: argument or stdin.
    rc, out = cairn(controller, "vd", "modify-passphrase", "plain", "0", "from-argument")
    assert rc == 0 and "modified" in out, out
    rc, out = cairn(controller, "vd", "mp", "plain", "0", stdin="from-stdin\n")
    assert rc == 0 and "modified" in out, out
    status, _, vd = controller.request("GET", "/v1/resource-definitions/plain/volume-definitions/0")
    assert vd["props"]["Encryption/Passphrase"] != sealed, "each change seals anew"
    rc, out = cairn(controller, "vd", "mp", "nope", "0", "x")
    assert rc != 0 and "nope" in out, out


def test_a_passphrase_given_at_volume_definition_creation_is_kept_sealed(controller, lin):
    ok(lin.resource_dfn_create("given"))
    body = {"volume_definition": {"size_kib": 4096}, "passphrase": "chosen"}
    status, _, reply = controller.request("POST", "/v1/resource-definitions/given/volume-definitions", body)
    assert status == 404 and code(reply[0]) == FAIL_NOT_FOUND_CRYPT_KEY, reply
    status, _, reply = controller.request("POST", "/v1/resource-definitions/missing/volume-definitions", body)
    assert status == 404 and code(reply[0]) == FAIL_NOT_FOUND_RSC_DFN, reply
    status, _, reply = controller.request("POST", "/v1/encryption/passphrase", {"new_passphrase": "geheim"})
    assert status == 201, reply
    # python-linstor's own parameter (LINSTOR 1.22+).
    ok(lin.volume_dfn_create("given", 4096, passphrase="chosen"))
    status, _, vd = controller.request("GET", "/v1/resource-definitions/given/volume-definitions/0")
    assert vd["props"]["Encryption/Passphrase"] and "chosen" not in vd["props"]["Encryption/Passphrase"], vd
    body = {"volume_definition": {"size_kib": 4096, "props": {"Encryption/Passphrase": "clear"}}}
    status, _, reply = controller.request("POST", "/v1/resource-definitions/given/volume-definitions", body)
    assert status >= 400 and code(reply[0]) == FAIL_INVLD_PROP, reply
