//! S3 for remotes and backups: one bucket reached with SigV4-signed
//! requests, path-style or virtual-host-style, through `object_store`'s S3
//! store (no signing of our own).
//!
//! The controller uses it to check a remote when it is created or
//! modified (as LINSTOR lists the bucket then); the backup data path
//! (satellites uploading and downloading volume data, as in LINSTOR) will
//! use the same [`Bucket`], which is why this crate sits below both and
//! depends on neither.
//!
//! Errors say what went wrong in terms a user can act on: the keys were
//! refused, the bucket does not exist, the endpoint cannot be reached.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, MultipartId, ObjectStore, PutPayload, RetryConfig};

/// How to reach one bucket. The keys are plain here: callers open them
/// from their sealed form only to build a [`Bucket`].
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// `host[:port]` or a URL; `https://` when no scheme is given.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// `endpoint/bucket/key` instead of `bucket.endpoint/key`.
    pub path_style: bool,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

/// Why an S3 operation failed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("the endpoint '{endpoint}' is not usable: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("the S3 server at {endpoint} refused the access key or secret key: {detail}")]
    Credentials { endpoint: String, detail: String },
    #[error("the bucket '{bucket}' does not exist at {endpoint}")]
    NoBucket { endpoint: String, bucket: String },
    #[error("the object '{key}' does not exist in bucket '{bucket}'")]
    NoObject { bucket: String, key: String },
    #[error("the S3 server at {endpoint} cannot be reached or failed: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("the object key '{key}' is not valid: {reason}")]
    Key { key: String, reason: String },
    #[error("the upload was given up (its stop flag was raised)")]
    Stopped,
}

/// The URL requests go to: the endpoint (with a scheme), and for
/// virtual-host style the bucket as the first label of its host.
pub fn bucket_endpoint(endpoint: &str, bucket: &str, path_style: bool) -> Result<String, S3Error> {
    let bad = |reason: &str| S3Error::Endpoint { endpoint: endpoint.to_string(), reason: reason.to_string() };
    let trimmed = endpoint.trim().trim_end_matches('/');
    let (scheme, rest) = match trimmed.split_once("://") {
        Some((s, r)) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => (s.to_ascii_lowercase(), r),
        Some((s, _)) => return Err(bad(&format!("the scheme '{s}' is neither http nor https"))),
        None => ("https".to_string(), trimmed),
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("give host[:port], optionally with http:// or https://, and nothing after it"));
    }
    if path_style { Ok(format!("{scheme}://{rest}")) } else { Ok(format!("{scheme}://{bucket}.{rest}")) }
}

/// One bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    store: AmazonS3,
    endpoint: String,
    bucket: String,
}

/// What a listing shows of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

impl Bucket {
    /// A client for the bucket. Nothing is sent yet; [`Bucket::check`]
    /// finds out whether endpoint, keys and bucket work together.
    pub fn open(cfg: &S3Config) -> Result<Bucket, S3Error> {
        let url = bucket_endpoint(&cfg.endpoint, &cfg.bucket, cfg.path_style)?;
        let options = ClientOptions::new()
            .with_allow_http(url.starts_with("http://"))
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(60));
        // A few quick retries of what S3 says is worth retrying; a dead
        // endpoint is reported within seconds, not minutes.
        let retry = RetryConfig {
            backoff: BackoffConfig { init_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(2), base: 2.0 },
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
        };
        let store = AmazonS3Builder::new()
            .with_endpoint(url.clone())
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_access_key_id(&cfg.access_key)
            .with_secret_access_key(&cfg.secret_key)
            .with_virtual_hosted_style_request(!cfg.path_style)
            .with_client_options(options)
            .with_retry(retry)
            // Every part and object carries its SHA-256 (the digest the
            // signature needs anyway, so no second pass), which the server
            // checks on arrival, and the multipart object gets a checksum
            // of its parts' checksums instead of one over the whole object.
            .with_checksum_algorithm(Checksum::SHA256)
            .build()
            .map_err(|e| S3Error::Endpoint { endpoint: cfg.endpoint.clone(), reason: e.to_string() })?;
        Ok(Bucket { store, endpoint: url, bucket: cfg.bucket.clone() })
    }

    /// Sorts an error by what S3 said (its error code, else the HTTP
    /// status): object_store reports a failed listing as a generic error
    /// with the server's answer in its text.
    fn error(&self, e: object_store::Error, key: Option<&str>) -> S3Error {
        let endpoint = self.endpoint.clone();
        let text = e.to_string();
        let has = |needle: &str| text.contains(needle);
        if has("<Code>NoSuchBucket</Code>") {
            return S3Error::NoBucket { endpoint, bucket: self.bucket.clone() };
        }
        let refused = ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden", "401 Unauthorized"];
        if matches!(e, object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. })
            || refused.iter().any(|c| has(c))
        {
            return S3Error::Credentials { endpoint, detail: s3_code(&text) };
        }
        match (e, key) {
            (object_store::Error::NotFound { .. }, Some(k)) => S3Error::NoObject { bucket: self.bucket.clone(), key: k.to_string() },
            (object_store::Error::NotFound { .. }, None) => S3Error::NoBucket { endpoint, bucket: self.bucket.clone() },
            _ => S3Error::Unreachable { endpoint, detail: text },
        }
    }

    fn path(key: &str) -> Result<Path, S3Error> {
        Path::parse(key).map_err(|e| S3Error::Key { key: key.to_string(), reason: e.to_string() })
    }

    /// Lists the first page of the bucket: the endpoint answers, the keys
    /// are accepted and the bucket exists (LINSTOR's check on creating or
    /// modifying an S3 remote).
    pub async fn check(&self) -> Result<(), S3Error> {
        let mut page = self.store.list(None);
        match page.next().await {
            Some(Err(e)) => Err(self.error(e, None)),
            Some(Ok(_)) | None => Ok(()),
        }
    }

    /// Every object whose key starts with `prefix` (a whole path segment
    /// prefix, as S3 keys separated by '/').
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, S3Error> {
        let prefix = if prefix.is_empty() { None } else { Some(Self::path(prefix)?) };
        let mut stream = self.store.list(prefix.as_ref());
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            let meta = item.map_err(|e| self.error(e, None))?;
            out.push(ObjectInfo { key: meta.location.to_string(), size: meta.size });
        }
        Ok(out)
    }

    /// Writes one object in one request.
    pub async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), S3Error> {
        self.store.put(&Self::path(key)?, PutPayload::from(data)).await.map(|_| ()).map_err(|e| self.error(e, None))
    }

    /// Reads one object whole (metadata-sized objects; volume data is read
    /// in ranges by the data path).
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, S3Error> {
        let got = self.store.get(&Self::path(key)?).await.map_err(|e| self.error(e, Some(key)))?;
        let bytes = got.bytes().await.map_err(|e| self.error(e, Some(key)))?;
        Ok(bytes.to_vec())
    }

    /// Reads one object as it arrives, piece by piece (volume data: never
    /// held whole in memory).
    pub async fn get_stream(&self, key: &str) -> Result<impl futures_util::Stream<Item = Result<Vec<u8>, S3Error>> + '_, S3Error> {
        let got = self.store.get(&Self::path(key)?).await.map_err(|e| self.error(e, Some(key)))?;
        let key = key.to_string();
        Ok(got.into_stream().map(move |piece| piece.map(|b| b.to_vec()).map_err(|e| self.error(e, Some(&key)))))
    }

    /// Removes one object; removing one that is not there is not an error
    /// (S3's rule).
    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        self.store.delete(&Self::path(key)?).await.map_err(|e| self.error(e, Some(key)))
    }

    /// Starts a multipart upload: parts are sent as they come, the object
    /// appears only when [`Upload::finish`] completes it.
    pub async fn upload(&self, key: &str) -> Result<Upload<'_>, S3Error> {
        let path = Self::path(key)?;
        let id = self.store.create_multipart(&path).await.map_err(|e| self.error(e, None))?;
        Ok(Upload { bucket: self, path, id, parts: Vec::new(), in_flight: tokio::task::JoinSet::new(), stop: None })
    }
}

/// S3's error code from an error text (`<Code>…</Code>`), else the text.
fn s3_code(text: &str) -> String {
    let code = text.split_once("<Code>").and_then(|(_, rest)| rest.split_once("</Code>")).map(|(c, _)| c);
    let message = text.split_once("<Message>").and_then(|(_, rest)| rest.split_once("</Message>")).map(|(m, _)| m);
    match (code, message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => text.to_string(),
    }
}

/// How many parts of one upload travel at once. One at a time left the
/// link idle while the next part was read and compressed, and an S3 server
/// answers each part after storing it: the plain client the backups are
/// measured against (boto3) sends 10 at once. Four 8 MiB parts bound the
/// memory an upload holds to about 40 MiB.
const PARTS_IN_FLIGHT: usize = 4;

/// How long one part keeps being tried while the endpoint cannot be
/// reached or fails (beyond the client's own quick retries): an upload
/// survives an outage this long and goes on where it stopped, sending
/// again only the parts that were not stored.
pub const PART_OUTAGE_LIMIT: Duration = Duration::from_secs(300);

/// A multipart upload in progress, with its parts numbered by Cairn
/// (object_store's `MultipartStore`), so a part that failed is sent again
/// under its own number and the parts already stored stay. Up to
/// [`PARTS_IN_FLIGHT`] parts travel at once, each on its own task, which
/// retries it (backing off up to 10 s) while the error says the endpoint
/// is unreachable or failing, for up to [`PART_OUTAGE_LIMIT`]; refused keys,
/// a missing bucket or upload end it at once. With a stop flag
/// ([`Upload::stop_when`]) a part in flight, a retry's pause included,
/// ends within [`STOP_POLL`] of the flag going up.
pub struct Upload<'a> {
    bucket: &'a Bucket,
    path: Path,
    id: MultipartId,
    parts: Vec<Option<PartId>>,
    in_flight: tokio::task::JoinSet<(usize, Result<PartId, S3Error>)>,
    stop: Option<Arc<AtomicBool>>,
}

/// How often a part in flight looks at its upload's stop flag.
pub const STOP_POLL: Duration = Duration::from_millis(200);

/// Completes once `flag` is up; never without one.
async fn raised(flag: Option<Arc<AtomicBool>>) {
    let Some(flag) = flag else { return std::future::pending().await };
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(STOP_POLL).await;
    }
}

impl Upload<'_> {
    /// Parts in flight give up, with [`S3Error::Stopped`], once `flag` is
    /// raised (an abort), instead of being tried through an outage.
    pub fn stop_when(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Hands one part over (S3: at least 5 MiB, except the last). It
    /// returns once the part is on its way and fewer than
    /// [`PARTS_IN_FLIGHT`] are; a part that failed for good is reported
    /// here or by [`Upload::finish`].
    pub async fn part(&mut self, data: Vec<u8>) -> Result<(), S3Error> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.one_done().await?;
        }
        let idx = self.parts.len();
        self.parts.push(None);
        let (bucket, path, id) = (self.bucket.clone(), self.path.clone(), self.id.clone());
        let data = PutPayload::from(data);
        let stop = self.stop.clone();
        self.in_flight.spawn(async move {
            let started = tokio::time::Instant::now();
            let mut pause = Duration::from_millis(500);
            let tries = async {
                loop {
                    match bucket.store.put_part(&path, &id, idx, data.clone()).await {
                        Ok(part) => return Ok(part),
                        Err(e) => match bucket.error(e, None) {
                            S3Error::Unreachable { detail, .. } if started.elapsed() < PART_OUTAGE_LIMIT => {
                                tracing::warn!("part {} of {path} not stored ({detail}); trying again in {pause:?}", idx + 1);
                                tokio::time::sleep(pause).await;
                                pause = (pause * 2).min(Duration::from_secs(10));
                            }
                            other => return Err(other),
                        },
                    }
                }
            };
            tokio::select! {
                r = tries => (idx, r),
                _ = raised(stop) => (idx, Err(S3Error::Stopped)),
            }
        });
        Ok(())
    }

    /// Waits for one part in flight to be stored.
    async fn one_done(&mut self) -> Result<(), S3Error> {
        match self.in_flight.join_next().await {
            Some(Ok((idx, Ok(part)))) => {
                self.parts[idx] = Some(part);
                Ok(())
            }
            None => Ok(()),
            Some(Ok((_, Err(e)))) => Err(e),
            Some(Err(e)) => {
                Err(S3Error::Unreachable { endpoint: self.bucket.endpoint.clone(), detail: format!("a part upload ended: {e}") })
            }
        }
    }

    /// Completes the upload once every part is stored: the object exists
    /// from now on. When a part or the completion fails, the upload is
    /// aborted on the server (its stored parts would stay, and be billed).
    pub async fn finish(mut self) -> Result<(), S3Error> {
        let mut done = Ok(());
        while done.is_ok() && !self.in_flight.is_empty() {
            done = self.one_done().await;
        }
        if done.is_ok() {
            let parts: Vec<PartId> = std::mem::take(&mut self.parts).into_iter().flatten().collect();
            done =
                self.bucket.store.complete_multipart(&self.path, &self.id, parts).await.map(|_| ()).map_err(|e| self.bucket.error(e, None));
        }
        if let Err(e) = done {
            if let Err(a) = self.abort().await {
                tracing::warn!("could not abort the failed upload: {a}");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Gives the upload up: parts still in flight are cancelled, the ones
    /// stored are discarded by the server.
    ///
    /// When the stop flag is up (an abort, maybe in an outage), the
    /// server is told in the background, tried again through an outage as
    /// parts are: the caller does not wait for an endpoint that is down.
    pub async fn abort(mut self) -> Result<(), S3Error> {
        self.in_flight.shutdown().await;
        if !self.stop.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)) {
            return self.bucket.store.abort_multipart(&self.path, &self.id).await.map_err(|e| self.bucket.error(e, None));
        }
        let (bucket, path, id) = (self.bucket.clone(), self.path.clone(), self.id.clone());
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            loop {
                match bucket.store.abort_multipart(&path, &id).await.map_err(|e| bucket.error(e, None)) {
                    Ok(()) => return,
                    Err(S3Error::Unreachable { .. }) if started.elapsed() < PART_OUTAGE_LIMIT => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    Err(e) => {
                        tracing::warn!("could not abort the stopped upload of {path}: {e}");
                        return;
                    }
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme_and_the_bucket_where_the_style_wants_it() {
        assert_eq!(bucket_endpoint("s3.example.com", "bk", true).unwrap(), "https://s3.example.com");
        assert_eq!(bucket_endpoint("s3.example.com", "bk", false).unwrap(), "https://bk.s3.example.com");
        assert_eq!(bucket_endpoint("HTTP://127.0.0.5:9000/", "bk", true).unwrap(), "http://127.0.0.5:9000");
        assert_eq!(bucket_endpoint("http://minio:9000", "bk", false).unwrap(), "http://bk.minio:9000");
        assert!(matches!(bucket_endpoint("ftp://x", "bk", true), Err(S3Error::Endpoint { .. })));
        assert!(bucket_endpoint("http://x/path", "bk", true).is_err());
        assert!(bucket_endpoint("", "bk", true).is_err());
    }

    #[test]
    fn the_keys_never_show_in_debug_output() {
        let cfg = S3Config {
            endpoint: "e".into(),
            bucket: "b".into(),
            region: "r".into(),
            access_key: "AKIDSECRET".into(),
            secret_key: "VERYSECRET".into(),
            path_style: true,
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    fn s3_error_codes_are_picked_out_of_the_error_text() {
        let text = "Client error with status 403 Forbidden: <?xml?><Error><Code>SignatureDoesNotMatch</Code></Error>";
        assert_eq!(s3_code(text), "SignatureDoesNotMatch");
        let text = "403: <Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        assert_eq!(s3_code(text), "AccessDenied: Access Denied");
        assert_eq!(s3_code("connection refused"), "connection refused");
    }
}
