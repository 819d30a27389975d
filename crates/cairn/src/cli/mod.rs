//! The `cairn` client verbs: LINSTOR's command tree over the REST API.

pub mod advise;
pub mod backup;
pub mod controller;
pub mod encryption;
pub mod file;
pub mod kvs;
pub mod node;
pub mod node_connection;
pub mod output;
pub mod physical_storage;
pub mod progress;
pub mod props;
pub mod remote;
pub mod resource;
pub mod resource_connection;
pub mod resource_definition;
pub mod resource_group;
pub mod schedule;
pub mod size;
pub mod snapshot;
pub mod storage_pool;
pub mod table;

use std::io::IsTerminal;

use cairn_api::{ApiCallRc, rc};
use cairn_client::{Client, seg};
use clap::Args;
use serde::Serialize;
use serde::de::DeserializeOwned;

use output::{EXIT_API_ERROR, EXIT_CLIENT, EXIT_CONNECTION, EXIT_OK};
use progress::Progress;
use table::{Style, Table};

/// What the controller answered to a mutation, not yet printed.
type Answer = Result<cairn_client::RawResponse, cairn_client::ClientError>;

/// Options every client verb takes.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Controllers to try, comma-separated (`host`, `host:port`, `linstor://host`, `http://host:port`).
    #[arg(long, global = true, env = "LS_CONTROLLERS", default_value = "localhost")]
    pub controllers: String,
    /// Print the raw JSON replies instead of tables and messages.
    #[arg(short = 'm', long = "machine-readable", global = true)]
    pub machine: bool,
    /// No colours.
    #[arg(long, global = true)]
    pub no_color: bool,
    /// ASCII table borders instead of UTF-8.
    #[arg(long, global = true)]
    pub no_utf8: bool,
    /// Sort tables by this column (e.g. `--sort-by FreeCapacity`).
    #[arg(long = "sort-by", global = true)]
    pub sort_by: Option<String>,
    /// HTTPS: the CA (PEM) the controller's certificate is checked against (default: the WebPKI roots).
    #[arg(long, global = true, value_name = "FILE")]
    pub cafile: Option<std::path::PathBuf>,
    /// HTTPS: a client certificate (PEM), for controllers that require one.
    #[arg(long, global = true, value_name = "FILE", requires = "keyfile")]
    pub certfile: Option<std::path::PathBuf>,
    /// HTTPS: the private key (PEM) of --certfile.
    #[arg(long, global = true, value_name = "FILE", requires = "certfile")]
    pub keyfile: Option<std::path::PathBuf>,
    /// Sign in as this user (HTTP Basic). The password comes from --password, CAIRN_PASSWORD or
    /// LS_PASSWORD, or is asked for.
    #[arg(short = 'u', long, global = true, env = "LS_USERNAME", value_name = "USER")]
    pub user: Option<String>,
    /// The password of --user (visible to other local users in the process list: prefer
    /// CAIRN_PASSWORD or the prompt).
    #[arg(short = 'P', long, global = true, value_name = "PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Send this API token (`Authorization: Bearer`, see `cairn controller auth-token`).
    #[arg(long, global = true, env = "CAIRN_TOKEN", value_name = "TOKEN", hide_env_values = true, conflicts_with = "user")]
    pub token: Option<String>,
    /// Send --user's password or --token over plain HTTP too (by default only over HTTPS).
    #[arg(long, global = true)]
    pub allow_insecure_auth: bool,
}

/// The credentials to send, as the command line and environment give
/// them; the password is asked for only when a user is named and no
/// password is given.
enum Credentials {
    None,
    Basic(String, String),
    Token(String),
}

impl Global {
    fn credentials(&self) -> Result<Credentials, String> {
        if let Some(t) = &self.token {
            return Ok(Credentials::Token(t.clone()));
        }
        let Some(user) = &self.user else { return Ok(Credentials::None) };
        let from_env = ["CAIRN_PASSWORD", "LS_PASSWORD"].iter().find_map(|k| std::env::var(k).ok());
        let password = match self.password.clone().or(from_env) {
            Some(p) => p,
            None => rpassword::prompt_password(format!("Password for {user}: ")).map_err(|e| format!("cannot read the password: {e}"))?,
        };
        Ok(Credentials::Basic(user.clone(), password))
    }

    /// The TLS files named by `--cafile`, `--certfile` and `--keyfile`.
    fn tls_files(&self) -> Result<cairn_client::TlsFiles, String> {
        let read = |p: &Option<std::path::PathBuf>| match p {
            Some(p) => std::fs::read(p).map(Some).map_err(|e| format!("cannot read {}: {e}", p.display())),
            None => Ok(None),
        };
        Ok(cairn_client::TlsFiles { ca: read(&self.cafile)?, cert: read(&self.certfile)?, key: read(&self.keyfile)? })
    }
}

/// A connected client and how to print.
pub struct Ctx {
    pub client: Client,
    pub machine: bool,
    pub style: Style,
    pub sort_by: Option<String>,
}

/// `host[:port]`, `linstor://host`, `linstor+ssl://host`, `http(s)://…` to
/// a base URL.
pub fn controller_url(spec: &str) -> String {
    let spec = spec.trim().trim_end_matches('/');
    let (scheme, rest, port) = if let Some(r) = spec.strip_prefix("linstor+ssl://") {
        ("https", r, 3371)
    } else if let Some(r) = spec.strip_prefix("linstor://") {
        ("http", r, 3370)
    } else if let Some(r) = spec.strip_prefix("https://") {
        ("https", r, 3371)
    } else if let Some(r) = spec.strip_prefix("http://") {
        ("http", r, 3370)
    } else {
        ("http", spec, 3370)
    };
    if rest.starts_with('[') {
        // [v6] or [v6]:port
        return if rest.contains("]:") { format!("{scheme}://{rest}") } else { format!("{scheme}://{rest}:{port}") };
    }
    match rest.matches(':').count() {
        0 => format!("{scheme}://{rest}:{port}"),
        1 => format!("{scheme}://{rest}"),
        _ => format!("{scheme}://[{rest}]:{port}"),
    }
}

impl Ctx {
    /// Connects to the first controller that answers its version request.
    pub fn connect(g: &Global) -> Result<Ctx, i32> {
        let color = !g.no_color && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let style = Style { utf8: !g.no_utf8, color };
        let mut last = String::new();
        let problem = |message: String| output::problem(g.machine, &ApiCallRc::error(0, rc::FAIL_INVLD_REQUEST, message), EXIT_CLIENT);
        let tls = g.tls_files().map_err(problem)?;
        let credentials = g.credentials().map_err(problem)?;
        for spec in g.controllers.split(',').filter(|s| !s.trim().is_empty()) {
            let connect = |url: &str| Client::with_tls(url, &tls).map_err(|e| problem(e.to_string()));
            let mut client = connect(&controller_url(spec))?;
            // A plain port that redirects to HTTPS (as python-linstor does).
            if let Some(https) = client.https_redirect() {
                client = connect(&https)?;
            }
            // Credentials go only over HTTPS unless allowed otherwise, as
            // python-linstor's `allow_insecure`: a password is refused, a
            // token left out with a warning.
            let secure = client.base().starts_with("https://") || g.allow_insecure_auth;
            client = match &credentials {
                Credentials::None => client,
                Credentials::Basic(..) if !secure => {
                    return Err(problem(
                        "Password authentication with HTTP not allowed, until explicitly enabled (--allow-insecure-auth).".into(),
                    ));
                }
                Credentials::Basic(user, password) => client.with_basic(user, password),
                Credentials::Token(_) if !secure => {
                    eprintln!(
                        "Warning: not sending the token over plain HTTP to {}; --allow-insecure-auth sends it anyway.",
                        client.base()
                    );
                    client
                }
                Credentials::Token(token) => client.with_token(token),
            };
            match client.version() {
                Ok(_) => return Ok(Ctx { client, machine: g.machine, style, sort_by: g.sort_by.clone() }),
                // The controller answered but wants credentials: say so, not "unreachable".
                Err(e) if e.status() == Some(401) => return Err(output::error(&e, g.machine, style.color)),
                Err(e) => last = e.to_string(),
            }
        }
        let rc = ApiCallRc::error(0, rc::FAIL_UNKNOWN_ERROR, format!("could not reach a controller at {}", g.controllers))
            .with_cause(last)
            .with_correction("Start the controller, or name it with --controllers or LS_CONTROLLERS.");
        Err(output::problem(g.machine, &rc, EXIT_CONNECTION))
    }

    /// GETs and decodes; on failure prints the error and gives the exit code.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, i32> {
        self.client.get(path).map_err(|e| self.error(&e))
    }

    /// Prints a client error (JSON with `-m`) and gives its exit code.
    pub fn error(&self, e: &cairn_client::ClientError) -> i32 {
        output::error(e, self.machine, self.style.color)
    }

    /// A problem found on this side: an error entry with this code (JSON
    /// with `-m`); exit 1.
    pub fn problem(&self, code: i64, message: impl Into<String>) -> i32 {
        output::problem(self.machine, &ApiCallRc::error(0, code, message), EXIT_CLIENT)
    }

    /// Prints the controller's replies (JSON with `-m`) and gives the exit code.
    pub fn replies(&self, rcs: &[ApiCallRc]) -> i32 {
        if self.machine { output::replies_json(rcs) } else { output::replies(rcs, self.style.color) }
    }

    /// A size as typed (`10G`, `512M`) in KiB; a bad one is a problem.
    pub fn size_kib(&self, s: &str) -> Result<i64, i32> {
        size::parse_kib(s).map_err(|e| self.problem(rc::FAIL_INVLD_VLM_SIZE, e))
    }

    /// Sends a mutation and prints its replies.
    pub fn send<B: Serialize>(&self, method: &'static str, path: &str, body: Option<&B>) -> i32 {
        self.print_answer(self.request(method, path, body))
    }

    /// Sends mutations one after the other under a progress line saying
    /// `what` (on a terminal); the line is finished before any reply is
    /// printed. The exit code is the worst of the replies'.
    pub fn send_all<B: Serialize>(&self, what: &str, requests: &[(&'static str, String, Option<&B>)]) -> i32 {
        let progress = Progress::start(what, self);
        let answers: Vec<Answer> = requests.iter().map(|(method, path, body)| self.request(method, path, *body)).collect();
        progress.finish(answers.iter().all(|a| a.as_ref().is_ok_and(|r| r.status < 400)));
        answers.into_iter().map(|a| self.print_answer(a)).max().unwrap_or(EXIT_OK)
    }

    /// [`Ctx::send`] under a progress line, as [`Ctx::send_all`].
    pub fn send_showing<B: Serialize>(&self, what: &str, method: &'static str, path: &str, body: Option<&B>) -> i32 {
        self.send_all(what, &[(method, path.to_string(), body)])
    }

    fn request<B: Serialize>(&self, method: &'static str, path: &str, body: Option<&B>) -> Answer {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        self.client.raw(method, path, bytes.as_deref())
    }

    fn print_answer(&self, answer: Answer) -> i32 {
        match answer {
            Err(e) => self.error(&e),
            Ok(r) => {
                if self.machine {
                    println!("{}", String::from_utf8_lossy(&r.body));
                    return EXIT_OK;
                }
                match serde_json::from_slice::<Vec<ApiCallRc>>(&r.body) {
                    Ok(rcs) => self.replies(&rcs),
                    Err(_) => {
                        eprintln!("Error: unexpected reply (HTTP {}): {}", r.status, String::from_utf8_lossy(&r.body));
                        if r.status >= 400 { EXIT_API_ERROR } else { EXIT_CLIENT }
                    }
                }
            }
        }
    }

    /// Prints a table, or the JSON it was built from with `-m`.
    pub fn show<T: Serialize>(&self, json: &T, mut table: Table) -> i32 {
        if let Some(col) = &self.sort_by
            && !table.sort_by_header(col)
        {
            return self.problem(rc::FAIL_INVLD_REQUEST, format!("there is no column '{col}' to sort by"));
        }
        if self.machine {
            println!("{}", serde_json::to_string_pretty(json).unwrap_or_default());
        } else {
            print!("{}", table.render(self.style));
        }
        EXIT_OK
    }
}

/// Query string from repeated keys.
pub fn query(pairs: &[(&str, &[String])]) -> String {
    let mut parts = Vec::new();
    for (k, vs) in pairs {
        for v in vs.iter() {
            parts.push(format!("{k}={}", seg(v)));
        }
    }
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

/// `KEY VALUE` as a set-property body; no value deletes the key.
pub fn prop_body(key: &str, value: Option<&str>) -> serde_json::Value {
    match value {
        Some(v) => serde_json::json!({ "override_props": { key: v } }),
        None => serde_json::json!({ "delete_props": [key] }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_urls_like_the_upstream_client() {
        assert_eq!(controller_url("localhost"), "http://localhost:3370");
        assert_eq!(controller_url("10.0.0.1:4000"), "http://10.0.0.1:4000");
        assert_eq!(controller_url("linstor://ctrl"), "http://ctrl:3370");
        assert_eq!(controller_url("linstor+ssl://ctrl"), "https://ctrl:3371");
        assert_eq!(controller_url("http://ctrl:1234/"), "http://ctrl:1234");
        assert_eq!(controller_url("::1"), "http://[::1]:3370");
        assert_eq!(controller_url("[::1]:4000"), "http://[::1]:4000");
        assert_eq!(controller_url("[::1]"), "http://[::1]:3370");
    }

    #[test]
    fn queries_repeat_keys() {
        assert_eq!(query(&[("nodes", &["a".into(), "b c".into()]), ("resources", &[])]), "?nodes=a&nodes=b%20c");
        assert_eq!(query(&[("nodes", &[])]), "");
    }
}
