"""A real S3 server for the tests: moto's server mode (PyPI `moto[server]`,
installed by scripts/test.sh), on an address and port the caller picks,
with signatures checked.

Run as `python tests/s3server.py HOST PORT`. It starts moto, makes an IAM
user allowed everything on S3 and an access key for it, makes the bucket
`cairn-test`, then turns moto's authentication on (from then on every
request needs a valid SigV4 signature by a known key, so a wrong secret
key is refused with 403 as by AWS). When ready it prints one JSON line:
{"endpoint", "region", "bucket", "access_key", "secret_key"}; it serves
until it is killed or its standard input closes.

The Rust tests of crates/cairn-s3 and the python fixture `s3_server`
(tests/python/conftest.py) both start it.
"""

import json
import logging
import sys
import threading

import boto3
import requests
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
BUCKET = "cairn-test"


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    endpoint = f"http://{host}:{port}"
    # Before authentication is on, moto takes any key: set up the user.
    boot = dict(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="boot", aws_secret_access_key="boot")
    iam = boto3.client("iam", **boot)
    iam.create_user(UserName="cairn")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="cairn", PolicyName="s3-all", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="cairn")["AccessKey"]
    boto3.client("s3", **boot).create_bucket(Bucket=BUCKET)
    # From now on every request is authenticated and authorised.
    r = requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10)
    r.raise_for_status()
    print(
        json.dumps(
            {
                "endpoint": endpoint,
                "region": REGION,
                "bucket": BUCKET,
                "access_key": key["AccessKeyId"],
                "secret_key": key["SecretAccessKey"],
            }
        ),
        flush=True,
    )
    done = threading.Event()

    def watch_stdin():
        sys.stdin.read()
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    done.wait()
    server.stop()


if __name__ == "__main__":
    main()
