//! Against a real S3 server: moto's server mode with authentication on
//! (tests/s3server.py, installed into the project's venv by
//! scripts/test.sh; `CAIRN_TEST_PYTHON` names another interpreter).
//! Signatures are checked by the server, so a wrong key really fails.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use cairn_s3::{Bucket, S3Config, S3Error};

struct Server {
    child: Child,
    cfg: S3Config,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Starts the server on 127.0.31.`host` and a free port.
fn start(host: u8) -> Server {
    let python = std::env::var_os("CAIRN_TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|| root().join(".venv/bin/python"));
    assert!(python.exists(), "{} not found: run scripts/test.sh once (it installs moto[server] into .venv)", python.display());
    let addr = format!("127.0.31.{host}");
    let port = std::net::TcpListener::bind((addr.as_str(), 0)).unwrap().local_addr().unwrap().port();
    let mut child = Command::new(python)
        .arg(root().join("tests/s3server.py"))
        .arg(&addr)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("s3server.py said {line:?}: {e}"));
    let s = |k: &str| v[k].as_str().unwrap().to_string();
    let cfg = S3Config {
        endpoint: s("endpoint"),
        bucket: s("bucket"),
        region: s("region"),
        access_key: s("access_key"),
        secret_key: s("secret_key"),
        path_style: true,
    };
    Server { child, cfg }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_multipart_and_the_errors_of_a_real_server() {
    let server = start(1);
    let b = Bucket::open(&server.cfg).unwrap();
    b.check().await.unwrap();

    // Whole objects.
    b.put("meta/one.json", b"{\"a\":1}".to_vec()).await.unwrap();
    assert_eq!(b.get("meta/one.json").await.unwrap(), b"{\"a\":1}");
    let listed = b.list("meta").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].key.as_str(), listed[0].size), ("meta/one.json", 7));
    assert!(matches!(b.get("meta/none").await, Err(S3Error::NoObject { .. })));

    // Multipart: two 5 MiB parts and a short last one make one object.
    let part = |fill: u8, n: usize| vec![fill; n];
    let mut up = b.upload("data/vol.bin").await.unwrap();
    up.part(part(1, 5 << 20)).await.unwrap();
    up.part(part(2, 5 << 20)).await.unwrap();
    up.part(part(3, 1000)).await.unwrap();
    assert!(b.list("data").await.unwrap().is_empty(), "nothing is visible before the upload completes");
    up.finish().await.unwrap();
    let got = b.get("data/vol.bin").await.unwrap();
    assert_eq!(got.len(), (10 << 20) + 1000);
    assert_eq!((got[0], got[5 << 20], got[got.len() - 1]), (1, 2, 3));
    // An aborted upload leaves no object.
    let mut up = b.upload("data/gone.bin").await.unwrap();
    up.part(part(4, 5 << 20)).await.unwrap();
    up.abort().await.unwrap();
    assert_eq!(b.list("data").await.unwrap().len(), 1);
    b.delete("data/vol.bin").await.unwrap();
    b.delete("data/vol.bin").await.unwrap();
    assert!(b.list("data").await.unwrap().is_empty());

    // A wrong secret key is refused by the server's signature check.
    let wrong = Bucket::open(&S3Config { secret_key: "not-the-key".into(), ..server.cfg.clone() }).unwrap();
    match wrong.check().await {
        Err(S3Error::Credentials { detail, .. }) => assert!(detail.contains("SignatureDoesNotMatch"), "{detail}"),
        other => panic!("expected refused credentials, got {other:?}"),
    }
    // An unknown access key too.
    let unknown = Bucket::open(&S3Config { access_key: "AKIAUNKNOWN000000000".into(), ..server.cfg.clone() }).unwrap();
    assert!(matches!(unknown.check().await, Err(S3Error::Credentials { .. })));
    // A bucket that does not exist.
    let missing = Bucket::open(&S3Config { bucket: "no-such-bucket".into(), ..server.cfg.clone() }).unwrap();
    assert!(matches!(missing.check().await, Err(S3Error::NoBucket { bucket, .. }) if bucket == "no-such-bucket"));

    // Nothing listening: reported as unreachable, within seconds.
    let port = std::net::TcpListener::bind("127.0.31.2:0").unwrap().local_addr().unwrap().port();
    let dead = Bucket::open(&S3Config { endpoint: format!("http://127.0.31.2:{port}"), ..server.cfg.clone() }).unwrap();
    let t = std::time::Instant::now();
    assert!(matches!(dead.check().await, Err(S3Error::Unreachable { .. })));
    assert!(t.elapsed() < std::time::Duration::from_secs(30), "took {:?}", t.elapsed());
}
