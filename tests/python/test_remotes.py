"""Remotes (`/v1/remotes`) with python-linstor and the `cairn` CLI against
a real controller and a real S3 server (moto, with signatures checked)."""

import os
import subprocess

import boto3
import linstor

from conftest import BIN, err, ok

FAIL_NOT_FOUND_CRYPT_KEY, FAIL_INVLD_CONF, FAIL_INVLD_BACKUP_CONFIG, FAIL_NOT_FOUND_REMOTE = 312, 230, 238, 321
FAIL_EXISTS_REMOTE, FAIL_UNKNOWN_ERROR, WARN_NOT_FOUND = 527, 998, 3000


def s3_create(lin, s3, name, **over):
    args = dict(remote_name=name, endpoint=s3.endpoint, region=s3.region, bucket=s3.bucket,
                access_key=s3.access_key, secret_key=s3.secret_key, use_path_style=True)
    args.update(over)
    return lin.remote_create_s3(**args)


def cause(replies):
    return " ".join(r.cause or "" for r in replies if r.is_error())


def db_bytes(controller):
    out = b""
    for f in os.listdir(controller.data_dir):
        if f.startswith("cairn.db"):
            with open(os.path.join(controller.data_dir, f), "rb") as fh:
                out += fh.read()
    return out


def test_s3_remotes_are_checked_stored_sealed_and_never_listed_with_keys(controller, lin, s3_server):
    s3 = s3_server
    # No master passphrase: LINSTOR's refusal, nothing stored.
    err(s3_create(lin, s3, "backups"), FAIL_NOT_FOUND_CRYPT_KEY)
    ok(lin.crypt_create_passphrase("master-pw"))
    # Missing parameters are named.
    replies = lin.remote_create_s3("r0", "", "", "", "", "")
    err(replies, FAIL_INVLD_BACKUP_CONFIG)
    assert "[endpoint, bucket, region, access_key, secret_key]" in replies[0].message
    # Wrong secret key: the server's signature check refuses it.
    replies = s3_create(lin, s3, "backups", secret_key="not-the-secret")
    err(replies, FAIL_UNKNOWN_ERROR)
    assert "refused the access key or secret key" in cause(replies) and "SignatureDoesNotMatch" in cause(replies), replies
    # A bucket that does not exist.
    replies = s3_create(lin, s3, "backups", bucket="no-such-bucket")
    err(replies, FAIL_UNKNOWN_ERROR)
    assert "bucket 'no-such-bucket' does not exist" in cause(replies), replies
    # Nothing listens there.
    replies = s3_create(lin, s3, "backups", endpoint="http://127.0.31.11:9")
    err(replies, FAIL_UNKNOWN_ERROR)
    assert "cannot be reached" in cause(replies), replies
    assert lin.remote_list()[0].s3_remotes == []

    ok(s3_create(lin, s3, "backups"))
    err(s3_create(lin, s3, "BACKUPS"), FAIL_EXISTS_REMOTE)
    [r] = lin.remote_list()[0].s3_remotes
    assert (r.remote_name, r.endpoint, r.bucket, r.region) == ("backups", s3.endpoint, s3.bucket, s3.region)
    assert (r.access_key, r.secret_key) == (None, None)
    for path in ("/v1/remotes", "/v1/remotes/s3"):
        status, _, body = controller.request("GET", path)
        assert status == 200 and s3.secret_key not in str(body) and s3.access_key not in str(body), body
    # The database holds the keys only sealed.
    data = db_bytes(controller)
    assert b'"bucket":"cairn-test"' in data and s3.secret_key.encode() not in data and s3.access_key.encode() not in data

    # Modify: checked as creation is; a refused change leaves the remote.
    boto3.client("s3", endpoint_url=s3.endpoint, region_name=s3.region, aws_access_key_id=s3.access_key,
                 aws_secret_access_key=s3.secret_key).create_bucket(Bucket="second")
    replies = lin.remote_modify_s3("backups", secret_key="wrong-again")
    err(replies, FAIL_UNKNOWN_ERROR)
    err(lin.remote_modify_s3("backups", bucket="missing-bucket"), FAIL_UNKNOWN_ERROR)
    ok(lin.remote_modify_s3("backups", bucket="second"))
    assert lin.remote_list()[0].s3_remotes[0].bucket == "second"
    err(lin.remote_modify_s3("nope", bucket="second"), FAIL_NOT_FOUND_REMOTE)

    # After a restart the remote is there; until the passphrase is
    # entered it cannot be checked, so it cannot be modified.
    controller.restart()
    lin2 = controller.client()
    assert [x.remote_name for x in lin2.remote_list()[0].s3_remotes] == ["backups"]
    err(lin2.remote_modify_s3("backups", bucket=s3.bucket), FAIL_NOT_FOUND_CRYPT_KEY)
    ok(lin2.crypt_enter_passphrase("master-pw"))
    ok(lin2.remote_modify_s3("backups", bucket=s3.bucket))

    # Delete; a second delete is a warning.
    replies = ok(lin2.remote_delete("backups"))
    assert any("deleted" in r.message for r in replies)
    assert lin2.remote_list()[0].s3_remotes == []
    replies = lin2.remote_delete("backups")
    assert replies[0].is_warning() and replies[0].ret_code & 0x7FFF == WARN_NOT_FOUND & 0x7FFF
    lin2.disconnect()


def test_linstor_remotes_and_ebs(controller, lin):
    ok(lin.crypt_create_passphrase("pw"))
    err(lin.remote_create_linstor("other", "127.0.0.2", cluster_id="not-a-uuid"), FAIL_INVLD_CONF)
    cid = "6b2b0f2e-3c1d-4e5f-8a9b-0c1d2e3f4a5b"
    ok(lin.remote_create_linstor("other", "127.0.0.2", passphrase="their-pw", cluster_id=cid))
    [r] = lin.remote_list()[0].linstor_remotes
    assert (r.remote_name, r.url) == ("other", "http://127.0.0.2:3370")
    status, _, body = controller.request("GET", "/v1/remotes/linstor")
    assert body == [{"remote_name": "other", "url": "http://127.0.0.2:3370", "cluster_id": cid}], body
    assert b"their-pw" not in db_bytes(controller)
    ok(lin.remote_modify_linstor("other", url="https://ctrl.example"))
    assert lin.remote_list()[0].linstor_remotes[0].url == "https://ctrl.example:3371"
    # The kinds do not mix.
    err(lin.remote_modify_s3("other", bucket="x"), FAIL_EXISTS_REMOTE)
    # EBS is deliberately not supported.
    status, _, body = controller.request("POST", "/v1/remotes/ebs", {"remote_name": "e", "availability_zone": "eu-central-1a",
                                                                      "access_key": "a", "secret_key": "s"})
    assert status == 501 and "EBS" in body[0]["message"] and "not supported" in body[0]["message"], body
    ok(lin.remote_delete("other"))
    assert controller.request("GET", "/v1/remotes")[2] == {}


def test_remote_verbs_of_the_cli(controller, s3_server):
    s3 = s3_server
    env = dict(os.environ, LS_CONTROLLERS=controller.url)

    def cairn(*args, stdin=None):
        p = subprocess.run([BIN, "--no-utf8", "--no-color", *args], capture_output=True, text=True, env=env, input=stdin,
                           timeout=120)
        return p.returncode, p.stdout, p.stderr

    assert cairn("encryption", "create-passphrase", "--passphrase", "pw")[0] == 0
    # The secret key from stdin, as linstor-client prompts for it.
    code, out, e = cairn("remote", "create", "s3", "--use-path-style", "bk", s3.endpoint, s3.bucket, s3.region, s3.access_key,
                         stdin=s3.secret_key + "\n")
    assert code == 0, (out, e)
    code, out, e = cairn("remote", "create", "linstor", "far", "10.1.2.3:3380")
    assert code == 0, (out, e)
    code, out, e = cairn("remote", "list")
    assert code == 0, e
    assert f"| bk   | S3      | {s3.region}.{s3.endpoint}/{s3.bucket} |" in out, out
    assert "| far  | Linstor | http://10.1.2.3:3380" in out, out
    code, out, e = cairn("remote", "modify", "s3", "bk", "--secret_key", "wrong")
    assert code != 0 and "secret key" in (out + e), (out, e)
    code, out, e = cairn("remote", "modify", "linstor", "far", "--url", "10.1.2.4")
    assert code == 0, (out, e)
    code, out, e = cairn("remote", "delete", "bk")
    assert code == 0, (out, e)
    code, out, e = cairn("remote", "d", "far")
    assert code == 0, (out, e)
    code, out, e = cairn("remote", "list")
    assert "bk" not in out and "far" not in out, out
