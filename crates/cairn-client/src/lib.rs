//! A typed client for the LINSTOR REST API v1, used by the CLI, the tests
//! and the benchmarks. Blocking on purpose: callers that need concurrency
//! use threads, and nobody pays for an async runtime they do not need.

use std::time::Duration;

use cairn_api::ApiCallRc;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Errors of a REST call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {url}: {source}")]
    Transport { url: String, source: Box<ureq::Error> },
    #[error("{method} {path} answered {status}: {}", summary(.replies))]
    Api { method: &'static str, path: String, status: u16, replies: Vec<ApiCallRc> },
    #[error("{method} {path} answered {status} with a body that is not the expected JSON: {reason}")]
    Decode { method: &'static str, path: String, status: u16, reason: String },
}

fn summary(replies: &[ApiCallRc]) -> String {
    replies.iter().map(|r| r.message.as_str()).collect::<Vec<_>>().join("; ")
}

impl ClientError {
    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Decode { status, .. } => Some(*status),
            ClientError::Transport { .. } => None,
        }
    }
}

/// A raw answer: status and body bytes.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub content_type: Option<String>,
    /// The `Location` header (a redirect).
    pub location: Option<String>,
    /// The file name of a `Content-Disposition: attachment; filename=…`.
    pub filename: Option<String>,
    pub body: Vec<u8>,
}

/// TLS settings of a client, PEM bytes: the CA the controller's
/// certificate must be signed by (default: the WebPKI roots), and a client
/// certificate with its key for controllers that require one.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    pub cert: Option<Vec<u8>>,
    pub key: Option<Vec<u8>>,
}

/// Why TLS settings could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct TlsError {
    what: &'static str,
    source: ureq::Error,
}

/// A client bound to one controller, e.g. `http://127.0.0.1:3370`.
#[derive(Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// The `Authorization` header sent with every request, if any.
    authorization: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client::build(base, ureq::tls::TlsConfig::default())
    }

    /// A client whose HTTPS connections use `tls`.
    pub fn with_tls(base: &str, tls: &TlsFiles) -> Result<Client, TlsError> {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let mut config = TlsConfig::builder();
        if let Some(ca) = &tls.ca {
            let roots = ureq::tls::parse_pem(ca)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<Certificate<'static>>, _>>()
                .map_err(|source| TlsError { what: "the CA file", source })?;
            config = config.root_certs(RootCerts::new_with_certs(&roots));
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            let chain = Certificate::from_pem(cert).map_err(|source| TlsError { what: "the certificate file", source })?;
            let key = PrivateKey::from_pem(key).map_err(|source| TlsError { what: "the key file", source })?;
            config = config.client_cert(Some(ClientCert::new_with_certs(&[chain], key)));
        }
        Ok(Client::build(base, config.build()))
    }

    fn build(base: &str, tls: ureq::tls::TlsConfig) -> Client {
        // Redirects are not followed: a POST would come back as a GET.
        // The only redirect the controller sends (plain port to HTTPS) is
        // taken by the caller ([`Client::https_redirect`]).
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            // Each step bounded instead of the whole call: with a call-wide
            // timeout ureq resolves even `127.0.0.1` on a thread of its own,
            // started for every connection.
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_send_request(Some(Duration::from_secs(300)))
            .timeout_send_body(Some(Duration::from_secs(300)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .timeout_recv_body(Some(Duration::from_secs(300)))
            .tls_config(tls)
            .build();
        Client { base: base.trim_end_matches('/').to_string(), agent: ureq::Agent::new_with_config(config), authorization: None }
    }

    /// Signs every request in with HTTP Basic as `user`.
    pub fn with_basic(mut self, user: &str, password: &str) -> Client {
        use base64::Engine;
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.authorization = Some(format!("Basic {pair}"));
        self
    }

    /// Sends `token` with every request (`Authorization: Bearer`).
    pub fn with_token(mut self, token: &str) -> Client {
        self.authorization = Some(format!("Bearer {token}"));
        self
    }

    /// Whether requests carry credentials.
    pub fn has_credentials(&self) -> bool {
        self.authorization.is_some()
    }

    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(a) => request.header("Authorization", a),
            None => request,
        }
    }

    /// The base URL of the HTTPS listener the controller redirects its
    /// plain port to (python-linstor's `has_linstor_https`: `GET
    /// /v1/controller/version` answered 302), if it does.
    pub fn https_redirect(&self) -> Option<String> {
        let r = self.raw("GET", "/v1/controller/version", None).ok()?;
        let location = r.location.filter(|_| r.status == 302)?;
        let rest = location.strip_prefix("https://")?;
        let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
        Some(format!("https://{authority}"))
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request and returns whatever came back.
    pub fn raw(&self, method: &'static str, path: &str, body: Option<&[u8]>) -> Result<RawResponse, ClientError> {
        let url = format!("{}{path}", self.base);
        let transport = |e: ureq::Error| ClientError::Transport { url: url.clone(), source: Box::new(e) };
        let result = match (method, body) {
            ("GET", _) => self.authorized(self.agent.get(&url)).call(),
            ("DELETE", _) => self.authorized(self.agent.delete(&url)).call(),
            ("POST", b) => self.authorized(self.agent.post(&url)).header("Content-Type", "application/json").send(b.unwrap_or(b"")),
            ("PUT", b) => self.authorized(self.agent.put(&url)).header("Content-Type", "application/json").send(b.unwrap_or(b"")),
            ("PATCH", b) => self.authorized(self.agent.patch(&url)).header("Content-Type", "application/json").send(b.unwrap_or(b"")),
            // LINSTOR's query-max-volume-size is an OPTIONS with a body.
            ("OPTIONS", Some(b)) => {
                self.authorized(self.agent.options(&url)).force_send_body().header("Content-Type", "application/json").send(b)
            }
            (_, _) => self.authorized(self.agent.options(&url)).call(),
        };
        let mut resp = result.map_err(transport)?;
        let status = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (content_type, location) = (header("content-type"), header("location"));
        let filename = header("content-disposition").and_then(|d| {
            let name = d.split(';').find_map(|p| p.trim().strip_prefix("filename")?.trim_start().strip_prefix('='))?;
            Some(name.trim().trim_matches('"').to_string()).filter(|n| !n.is_empty())
        });
        let body = resp.body_mut().with_config().limit(1 << 30).read_to_vec().map_err(transport)?;
        Ok(RawResponse { status, content_type, location, filename, body })
    }

    fn call<T: DeserializeOwned>(&self, method: &'static str, path: &str, body: Option<Vec<u8>>) -> Result<T, ClientError> {
        let r = self.raw(method, path, body.as_deref())?;
        if r.status >= 400 {
            let replies = serde_json::from_slice(&r.body).map_err(|e| ClientError::Decode {
                method,
                path: path.to_string(),
                status: r.status,
                reason: e.to_string(),
            })?;
            return Err(ClientError::Api { method, path: path.to_string(), status: r.status, replies });
        }
        serde_json::from_slice(&r.body).map_err(|e| ClientError::Decode {
            method,
            path: path.to_string(),
            status: r.status,
            reason: e.to_string(),
        })
    }

    fn encode<B: Serialize>(body: &B) -> Vec<u8> {
        serde_json::to_vec(body).unwrap_or_else(|_| b"null".to_vec())
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call("GET", path, None)
    }

    pub fn post<B: Serialize>(&self, path: &str, body: &B) -> Result<Vec<ApiCallRc>, ClientError> {
        self.call("POST", path, Some(Self::encode(body)))
    }

    pub fn put<B: Serialize>(&self, path: &str, body: &B) -> Result<Vec<ApiCallRc>, ClientError> {
        self.call("PUT", path, Some(Self::encode(body)))
    }

    pub fn delete(&self, path: &str) -> Result<Vec<ApiCallRc>, ClientError> {
        self.call("DELETE", path, None)
    }

    pub fn version(&self) -> Result<cairn_api::controller::ControllerVersion, ClientError> {
        self.get("/v1/controller/version")
    }

    pub fn create_node(&self, node: &cairn_api::node::Node) -> Result<Vec<ApiCallRc>, ClientError> {
        self.post("/v1/nodes", node)
    }

    pub fn nodes(&self) -> Result<Vec<cairn_api::node::Node>, ClientError> {
        self.get("/v1/nodes")
    }

    pub fn create_rsc_dfn(&self, rd: &cairn_api::resource_definition::ResourceDefinitionCreate) -> Result<Vec<ApiCallRc>, ClientError> {
        self.post("/v1/resource-definitions", rd)
    }

    pub fn rsc_dfns(&self) -> Result<Vec<cairn_api::resource_definition::ResourceDefinition>, ClientError> {
        self.get("/v1/resource-definitions?with_volume_definitions=true")
    }

    pub fn create_vlm_dfn(
        &self,
        rd: &str,
        vd: &cairn_api::resource_definition::VolumeDefinitionCreate,
    ) -> Result<Vec<ApiCallRc>, ClientError> {
        self.post(&format!("/v1/resource-definitions/{}/volume-definitions", seg(rd)), vd)
    }

    pub fn create_resources(&self, rd: &str, rs: &[cairn_api::resource::ResourceCreate]) -> Result<Vec<ApiCallRc>, ClientError> {
        self.post(&format!("/v1/resource-definitions/{}/resources", seg(rd)), &rs)
    }

    pub fn view_resources(&self, query: &str) -> Result<Vec<cairn_api::resource::ResourceWithVolumes>, ClientError> {
        self.get(&format!("/v1/view/resources{query}"))
    }

    pub fn create_stor_pool(&self, node: &str, sp: &cairn_api::storage_pool::StoragePool) -> Result<Vec<ApiCallRc>, ClientError> {
        self.post(&format!("/v1/nodes/{}/storage-pools", seg(node)), sp)
    }
}

/// Everything but RFC 3986's unreserved characters is escaped.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encodes one path segment.
pub fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_segment_keeps_only_unreserved_characters() {
        assert_eq!(super::seg("it-rg_1.x~"), "it-rg_1.x~");
        assert_eq!(super::seg("a b/c?d%é"), "a%20b%2Fc%3Fd%25%C3%A9");
    }

    /// ureq looks a host up on a thread of its own, started for every
    /// call, whenever a timeout covers the look-up (a call-wide one does);
    /// with two clients listing, that thread was about half of an RD
    /// create's p99 (2.0-3.2 ms, 1.1-1.5 without it). Every step but
    /// the look-up is bounded.
    #[test]
    fn calls_are_bounded_step_by_step_and_the_look_up_runs_inline() {
        let t = super::Client::new("http://127.0.0.1:1").agent.config().timeouts();
        assert_eq!((t.global, t.per_call, t.resolve), (None, None, None));
        for step in [t.connect, t.send_request, t.send_body, t.recv_response, t.recv_body] {
            assert!(step.is_some_and(|d| d <= std::time::Duration::from_secs(300)), "{t:?}");
        }
    }
}
