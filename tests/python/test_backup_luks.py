"""Restoring a backup of encrypted (LUKS) volumes, with python-linstor
against a real controller, FILE_THIN satellites on loop devices and moto.

These hosts have no device-mapper driver, so no satellite here can make a
LUKS volume, nor back one up. The backup is therefore a real backup of a
plain volume whose metadata is then given what a LUKS backup carries: the
layer stack LUKS,STORAGE, the volume's LUKS passphrase sealed with the
source cluster's master key (`luksSecret`) and that master key sealed with
the source's master passphrase (`luksInfo`, LINSTOR's names). The sealing
below follows docs/BACKUP-FORMAT.md's description of it (PBKDF2-HMAC-SHA256,
AES-128-GCM, hex), so the test also checks that description.
What is checked: without the source's passphrase, or with a wrong one, a
clear error and nothing written; with it, the keys open and the restore
goes on to its placement checks (which refuse these LUKS-less nodes, still
before anything is written). The re-sealing itself is unit-tested in
crates/cairn-controller/src/backup_keys.rs."""

import hashlib
import json
import os
import subprocess

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from conftest import BIN, err, ok, write_dev
from test_backups import MIB, bcluster, finished, make_volume, s3_client  # noqa: F401 (fixture)

FAIL_NOT_FOUND_CRYPT_KEY, FAIL_UNKNOWN_ERROR = 312, 998


def seal(key, plain):
    nonce = os.urandom(12)
    return (nonce + AESGCM(key).encrypt(nonce, plain, None)).hex()


def open_sealed(key, sealed):
    raw = bytes.fromhex(sealed)
    return AESGCM(key).decrypt(raw[:12], raw[12:], None)


def source_cluster(passphrase):
    """A master key and its luksInfo as another cluster stores them."""
    master, salt = os.urandom(16), os.urandom(16)
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=16, salt=salt, iterations=100_000)
    info = {"masterPassword": seal(kdf.derive(passphrase.encode()), master),
            "masterCryptHash": hashlib.sha512(master).hexdigest(), "masterCryptSalt": salt.hex()}
    return master, info


def names(lin):
    return {r.name for r in lin.resource_dfn_list_raise().resource_definitions}


def test_an_encrypted_backup_of_another_cluster_restores_only_with_its_passphrase(bcluster):
    c = bcluster
    dev = make_volume(c, "enc", 8 * 1024)
    data = os.urandom(3 * MIB)
    write_dev(dev, data)
    ok(c.lin.backup_create("bk", "enc", incremental=False))
    [bk] = finished(c.lin, "enc", 1)

    # The metadata of a LUKS backup made by another cluster.
    master, info = source_cluster("source-pw")
    vol_pass = os.urandom(32).hex().encode()
    s3 = s3_client(c.s3)
    meta_key = bk._rest_data["s3"]["meta_name"]
    meta = json.loads(s3.get_object(Bucket=c.s3.bucket, Key=meta_key)["Body"].read())
    meta["cairn"]["layerStack"] = ["LUKS", "STORAGE"]
    meta["cairn"]["volumes"]["0"]["luksSecret"] = seal(master, vol_pass)
    meta["luksInfo"] = info
    s3.put_object(Bucket=c.s3.bucket, Key=meta_key, Body=json.dumps(meta).encode())
    assert open_sealed(master, meta["cairn"]["volumes"]["0"]["luksSecret"]) == vol_pass

    def nothing_written():
        assert "dst" not in {n.lower() for n in names(c.lin)}
        assert [f for f in os.listdir(os.path.join(c.xfs, "n3")) if "dst" in f] == []

    # Without the source's passphrase: LINSTOR's error, nothing written.
    replies = c.lin.backup_restore("bk", "n3", "dst", bak_id=bk.id)
    err(replies, FAIL_NOT_FOUND_CRYPT_KEY)
    assert "luks configured, but no passphrase was given" in replies[0].message, str(replies[0])
    nothing_written()
    # With this cluster's own passphrase (the wrong one): refused too.
    replies = c.lin.backup_restore("bk", "n3", "dst", bak_id=bk.id, passphrase="master-pw")
    err(replies, FAIL_UNKNOWN_ERROR)
    assert "does not open the source cluster's master key" in (replies[0].cause or ""), str(replies[0])
    nothing_written()

    # The command line passes the passphrase as LINSTOR's client does.
    env = dict(os.environ, LS_CONTROLLERS=c.ctrl.url)
    p = subprocess.run([BIN, "--no-color", "backup", "restore", "bk", "n3", "dst", "--id", bk.id, "--passphrase", "nope"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode != 0 and "Decrypting the master password failed" in p.stdout + p.stderr, (p.stdout, p.stderr)
    nothing_written()

    # With it the keys open and are sealed again; what refuses the restore
    # now is the next check, that n3 cannot run the LUKS layer (no
    # device-mapper here; tests/vm restores onto a node that can), still
    # before anything is written.
    replies = c.lin.backup_restore("bk", "n3", "dst", bak_id=bk.id, passphrase="source-pw")
    assert replies and replies[0].is_error(), [str(r) for r in replies]
    assert "does not support the following layers: [LUKS]" in replies[0].message, str(replies[0])
    nothing_written()
