//! Every external command Cairn runs goes through here: an argv builder
//! (never a shell string), a timeout that kills the child, and a typed error
//! that carries the program, its arguments, the exit code and stderr.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Default time a command may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes for a child's stdin; never shown in debug output.
#[derive(Clone, PartialEq, Eq)]
struct Stdin(Vec<u8>);

impl fmt::Debug for Stdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// A command to run: program, arguments, timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    program: String,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    /// Written to the child's stdin (secrets go here, never into argv).
    stdin: Option<Stdin>,
    timeout: Duration,
    /// A probe: failing is an answer, not a fault, so it is logged at
    /// debug level instead of as a warning.
    quiet: bool,
    /// A pipeline: this command's stdout feeds the next one's stdin (as
    /// `a | b` with `pipefail`: either failing fails the whole).
    pipe_into: Option<Box<Cmd>>,
}

impl Cmd {
    pub fn new(program: &str) -> Cmd {
        Cmd {
            program: program.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
            quiet: false,
            pipe_into: None,
        }
    }

    /// `self | next`, without a shell: both run, this one's stdout is the
    /// next one's stdin; the pipeline fails when either fails, within this
    /// command's timeout. The output is the last command's.
    pub fn pipe(mut self, next: Cmd) -> Cmd {
        match self.pipe_into.take() {
            Some(inner) => self.pipe_into = Some(Box::new(inner.pipe(next))),
            None => self.pipe_into = Some(Box::new(next)),
        }
        self
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Cmd {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Cmd {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the child (not part of the argv).
    pub fn env(mut self, key: &str, value: &str) -> Cmd {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Feeds `data` to the child's stdin.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(Stdin(data.into()));
        self
    }

    pub fn get_stdin(&self) -> Option<&[u8]> {
        self.stdin.as_ref().map(|s| s.0.as_slice())
    }

    pub fn get_env(&self) -> &[(String, String)] {
        &self.env
    }

    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = t;
        self
    }

    /// Marks a probe (`tool --version`, `dmsetup version`): its failure is
    /// expected on hosts without the tool and logged at debug level only.
    pub fn quiet(mut self) -> Cmd {
        self.quiet = true;
        self
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// The argv as strings, for logs, errors and test assertions; the
    /// stages of a pipeline are joined by `|`.
    pub fn argv(&self) -> Vec<String> {
        let mut v: Vec<String> =
            std::iter::once(self.program.clone()).chain(self.args.iter().map(|a| a.to_string_lossy().into_owned())).collect();
        if let Some(next) = &self.pipe_into {
            v.push("|".into());
            v.extend(next.argv());
        }
        v
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.argv().join(" "))
    }
}

/// What a successful command printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start {program}: {reason}")]
    Spawn { program: String, argv: Vec<String>, reason: String, not_found: bool },
    #[error("{program} did not finish within {secs} s and was killed ({})", argv.join(" "))]
    Timeout { program: String, argv: Vec<String>, secs: u64 },
    #[error("{program} failed with exit code {code}: {stderr}")]
    NonZero { program: String, argv: Vec<String>, code: i32, stderr: String },
}

impl ExecError {
    pub fn program(&self) -> &str {
        match self {
            ExecError::Spawn { program, .. } | ExecError::Timeout { program, .. } | ExecError::NonZero { program, .. } => program,
        }
    }

    /// The full command line, for error details.
    pub fn command_line(&self) -> String {
        match self {
            ExecError::Spawn { argv, .. } | ExecError::Timeout { argv, .. } | ExecError::NonZero { argv, .. } => argv.join(" "),
        }
    }

    /// The tool's exit code, if it ran to the end.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            ExecError::NonZero { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// What a user needs to see of the failure: the command line, the exit
    /// code and stderr, one per line (`command: …`, `exit code: …`,
    /// `stderr: …`), as error details carry it.
    pub fn details(&self) -> String {
        let mut d = format!("command: {}", self.command_line());
        if let Some(code) = self.exit_code() {
            d.push_str(&format!("\nexit code: {code}"));
        }
        if let Some(stderr) = self.stderr() {
            d.push_str(&format!("\nstderr: {stderr}"));
        }
        d
    }

    /// The tool's stderr, if it ran.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            ExecError::NonZero { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// A boxed future, so the runner trait can be used as `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs commands. The host implementation runs them for real; tests use
/// [`FakeRunner`] to check command building and output parsing.
pub trait CommandRunner: Send + Sync {
    fn run<'a>(&'a self, cmd: &'a Cmd) -> BoxFuture<'a, Result<Output, ExecError>>;
    /// Starts a command whose stdin (`Feed::In`) or stdout (`Feed::Out`)
    /// the caller streams, for data too large to hold (`zfs send`,
    /// `zfs receive`); the command's timeout covers its whole run. A
    /// runner without processes refuses.
    fn stream<'a>(&'a self, cmd: &'a Cmd, _feed: Feed) -> BoxFuture<'a, Result<Streaming, ExecError>> {
        let e = ExecError::Spawn {
            program: cmd.program.clone(),
            argv: cmd.argv(),
            reason: "this runner cannot stream a command's input or output".into(),
            not_found: false,
        };
        Box::pin(async move { Err(e) })
    }
}

/// Which end of a [`Streaming`] command the caller holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// The caller writes the command's stdin (stdout is collected).
    In,
    /// The caller reads the command's stdout (stdin is empty).
    Out,
}

/// A running command with one end streamed by the caller; dropping it
/// before [`Streaming::finish`] kills the command.
pub struct Streaming {
    /// The command's stdin (`Feed::In`); drop it to end the input.
    pub stdin: Option<tokio::process::ChildStdin>,
    /// The command's stdout (`Feed::Out`).
    pub stdout: Option<tokio::process::ChildStdout>,
    waiter: Option<tokio::task::JoinHandle<Result<Output, ExecError>>>,
    /// Called once the command is over (finished, or killed by a drop).
    ended: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Streaming {
    /// Runs `f` once the command is over: after [`Streaming::finish`]
    /// waited for it, or when a drop kills it.
    pub fn on_end(mut self, f: impl FnOnce() + Send + Sync + 'static) -> Streaming {
        self.ended = Some(Box::new(f));
        self
    }

    /// Waits for the command to end (closing its stdin first): its stderr
    /// (and, for `Feed::In`, its stdout), or the failure.
    pub async fn finish(mut self) -> Result<Output, ExecError> {
        drop(self.stdin.take());
        drop(self.stdout.take());
        match self.waiter.take() {
            Some(w) => match w.await {
                Ok(r) => r,
                Err(e) => Err(ExecError::Spawn { program: String::new(), argv: Vec::new(), reason: e.to_string(), not_found: false }),
            },
            None => Err(ExecError::Spawn { program: String::new(), argv: Vec::new(), reason: "finished twice".into(), not_found: false }),
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        // The waiter owns the child (kill_on_drop): aborting it kills it.
        if let Some(w) = self.waiter.take() {
            w.abort();
        }
        if let Some(f) = self.ended.take() {
            f();
        }
    }
}

/// Runs commands on this host with `tokio::process`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostRunner;

/// A pipeline `first | second` on this host: no shell; both are killed
/// at the first command's timeout; the first failing stage is the error.
async fn run_pipeline(first: &Cmd, second: &Cmd) -> Result<Output, ExecError> {
    let argv = first.argv();
    if second.pipe_into.is_some() {
        return Err(ExecError::Spawn {
            program: first.program.clone(),
            argv,
            reason: "pipelines of more than two commands are not supported".into(),
            not_found: false,
        });
    }
    let head = Cmd { pipe_into: None, ..first.clone() };
    tracing::debug!(cmd = %first, "run");
    let mut child_a = spawn(&head, std::process::Stdio::null(), &argv)?;
    let pipe: std::process::Stdio = match child_a.stdout.take().map(TryInto::try_into) {
        Some(Ok(p)) => p,
        _ => return Err(ExecError::Spawn { program: head.program.clone(), argv, reason: "no stdout to pipe".into(), not_found: false }),
    };
    let child_b = spawn(second, pipe, &argv)?;
    let both = async { tokio::join!(child_a.wait_with_output(), child_b.wait_with_output()) };
    let (out_a, out_b) = match tokio::time::timeout(first.timeout, both).await {
        Ok(pair) => pair,
        Err(_) => {
            tracing::warn!(cmd = %first, secs = first.timeout.as_secs(), "pipeline timed out and was killed");
            return Err(ExecError::Timeout { program: head.program.clone(), argv, secs: first.timeout.as_secs() });
        }
    };
    let mut last = Output::default();
    for (c, out) in [(&head, out_a), (second, out_b)] {
        let out =
            out.map_err(|e| ExecError::Spawn { program: c.program.clone(), argv: argv.clone(), reason: e.to_string(), not_found: false })?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if !out.status.success() {
            let code = out.status.code().unwrap_or(-1);
            tracing::warn!(cmd = %first, program = %c.program, code, stderr = %stderr, "pipeline failed");
            return Err(ExecError::NonZero { program: c.program.clone(), argv, code, stderr });
        }
        last = Output { stdout: String::from_utf8_lossy(&out.stdout).into_owned(), stderr };
    }
    Ok(last)
}

/// Starts one command (or one stage of a pipeline) with `stdin`: stdout
/// and stderr piped, `LC_ALL=C`, killed when its handle is dropped;
/// `argv` is what an error names.
fn spawn(cmd: &Cmd, stdin: std::process::Stdio, argv: &[String]) -> Result<tokio::process::Child, ExecError> {
    let mut c = tokio::process::Command::new(&cmd.program);
    c.args(&cmd.args)
        .stdin(stdin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .env("LC_ALL", "C")
        // Tools never need the cluster secret.
        .env_remove("CAIRN_CLUSTER_SECRET")
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true);
    c.spawn().map_err(|e| ExecError::Spawn {
        program: cmd.program.clone(),
        argv: argv.to_vec(),
        not_found: e.kind() == std::io::ErrorKind::NotFound,
        reason: e.to_string(),
    })
}

/// Waits for a started command for at most `timeout` (then it is
/// killed: dropping the child ends it): its output, or the typed error,
/// logged as `what` (a failure of a `quiet` one at debug level only).
async fn wait(
    child: tokio::process::Child,
    program: String,
    argv: Vec<String>,
    timeout: Duration,
    shown: &str,
    what: &str,
    quiet: bool,
) -> Result<Output, ExecError> {
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(ExecError::Spawn { program, argv, reason: e.to_string(), not_found: false }),
        Err(_) => {
            tracing::warn!(cmd = %shown, secs = timeout.as_secs(), "{what} timed out and was killed");
            return Err(ExecError::Timeout { program, argv, secs: timeout.as_secs() });
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.status.success() {
        return Ok(Output { stdout, stderr });
    }
    let code = out.status.code().unwrap_or(-1);
    if quiet {
        tracing::debug!(cmd = %shown, code, stderr = %stderr, "probe failed");
    } else {
        tracing::warn!(cmd = %shown, code, stderr = %stderr, "{what} failed");
    }
    Err(ExecError::NonZero { program, argv, code, stderr })
}

impl CommandRunner for HostRunner {
    fn stream<'a>(&'a self, cmd: &'a Cmd, feed: Feed) -> BoxFuture<'a, Result<Streaming, ExecError>> {
        Box::pin(async move {
            let argv = cmd.argv();
            tracing::debug!(cmd = %cmd, ?feed, "stream");
            let stdin = if feed == Feed::In { std::process::Stdio::piped() } else { std::process::Stdio::null() };
            let mut child = spawn(cmd, stdin, &argv)?;
            let stdin = child.stdin.take();
            let stdout = if feed == Feed::Out { child.stdout.take() } else { None };
            let (program, timeout, shown) = (cmd.program.clone(), cmd.timeout, cmd.to_string());
            let waiter = tokio::spawn(async move { wait(child, program, argv, timeout, &shown, "streamed command", false).await });
            Ok(Streaming { stdin, stdout, waiter: Some(waiter), ended: None })
        })
    }

    fn run<'a>(&'a self, cmd: &'a Cmd) -> BoxFuture<'a, Result<Output, ExecError>> {
        Box::pin(async move {
            if let Some(next) = &cmd.pipe_into {
                return run_pipeline(cmd, next).await;
            }
            let argv = cmd.argv();
            tracing::debug!(cmd = %cmd, "run");
            let stdin = if cmd.stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() };
            let mut child = spawn(cmd, stdin, &argv)?;
            if let (Some(Stdin(data)), Some(mut pipe)) = (cmd.stdin.clone(), child.stdin.take()) {
                // Written in a task: a child that never reads cannot block us
                // past the timeout.
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let _ = pipe.write_all(&data).await;
                    let _ = pipe.shutdown().await;
                });
            }
            wait(child, cmd.program.clone(), argv, cmd.timeout, &cmd.to_string(), "command", cmd.quiet).await
        })
    }
}

/// A scripted runner for unit tests: answers each call with the next
/// scripted result and records every argv.
/// An expected argv and the answer to give.
type Scripted = (Vec<String>, Result<Output, ExecError>);

/// A standing answer for every call whose argv starts with a prefix.
enum Rule {
    Answer(Result<Output, ExecError>),
    /// The command never ends: the call fails with a timeout after the
    /// command's own timeout.
    Hang,
}

#[derive(Default)]
pub struct FakeRunner {
    script: Mutex<VecDeque<Scripted>>,
    /// Checked before the script, in the order added, any number of
    /// times: for code that runs commands concurrently, in no fixed order.
    rules: Mutex<Vec<(Vec<String>, Rule)>>,
    calls: Mutex<Vec<Vec<String>>>,
}

impl FakeRunner {
    pub fn new() -> FakeRunner {
        FakeRunner::default()
    }

    /// Expects `argv` next and answers with `stdout`.
    pub fn expect(&self, argv: &[&str], stdout: &str) -> &Self {
        self.push(argv, Ok(Output { stdout: stdout.to_string(), stderr: String::new() }))
    }

    /// Expects `argv` next and fails it with an exit code and stderr.
    pub fn expect_failure(&self, argv: &[&str], code: i32, stderr: &str) -> &Self {
        let e = ExecError::NonZero {
            program: argv[0].to_string(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            code,
            stderr: stderr.to_string(),
        };
        self.push(argv, Err(e))
    }

    /// Answers every call whose argv starts with `prefix` with `stdout`.
    pub fn answer(&self, prefix: &[&str], stdout: &str) -> &Self {
        self.rule(prefix, Rule::Answer(Ok(Output { stdout: stdout.to_string(), stderr: String::new() })))
    }

    /// Makes every call whose argv starts with `prefix` hang until its
    /// timeout, then fail as a timed-out command does.
    pub fn hang(&self, prefix: &[&str]) -> &Self {
        self.rule(prefix, Rule::Hang)
    }

    fn rule(&self, prefix: &[&str], r: Rule) -> &Self {
        self.rules.lock().push((prefix.iter().map(|s| s.to_string()).collect(), r));
        self
    }

    fn push(&self, argv: &[&str], r: Result<Output, ExecError>) -> &Self {
        self.script.lock().push_back((argv.iter().map(|s| s.to_string()).collect(), r));
        self
    }

    /// Every argv run so far.
    pub fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().clone()
    }

    /// Whether every scripted call happened.
    pub fn is_done(&self) -> bool {
        self.script.lock().is_empty()
    }
}

impl CommandRunner for FakeRunner {
    fn run<'a>(&'a self, cmd: &'a Cmd) -> BoxFuture<'a, Result<Output, ExecError>> {
        Box::pin(async move {
            let argv = cmd.argv();
            self.calls.lock().push(argv.clone());
            let ruled = self.rules.lock().iter().find(|(prefix, _)| argv.starts_with(prefix)).map(|(_, r)| match r {
                Rule::Answer(a) => Some(a.clone()),
                Rule::Hang => None,
            });
            match ruled {
                Some(Some(answer)) => return answer,
                Some(None) => {
                    tokio::time::sleep(cmd.timeout).await;
                    return Err(ExecError::Timeout { program: cmd.program.clone(), argv, secs: cmd.timeout.as_secs() });
                }
                None => {}
            }
            let next = self.script.lock().pop_front();
            match next {
                Some((want, result)) if want == argv => result,
                Some((want, _)) => Err(ExecError::Spawn {
                    program: cmd.program.clone(),
                    argv: argv.clone(),
                    reason: format!("unexpected command; the test expected {}", want.join(" ")),
                    not_found: false,
                }),
                None => Err(ExecError::Spawn {
                    program: cmd.program.clone(),
                    argv,
                    reason: "no more commands were expected".into(),
                    not_found: false,
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn a_pipeline_feeds_one_command_into_the_next_and_fails_when_either_does() {
        let p = Cmd::new("printf").arg("abc").pipe(Cmd::new("tr").args(["a-z", "A-Z"]));
        assert_eq!(p.argv(), ["printf", "abc", "|", "tr", "a-z", "A-Z"]);
        assert_eq!(rt().block_on(HostRunner.run(&p)).unwrap().stdout, "ABC");
        let first_fails = Cmd::new("false").pipe(Cmd::new("cat"));
        match rt().block_on(HostRunner.run(&first_fails)) {
            Err(ExecError::NonZero { program, argv, .. }) => {
                assert_eq!((program.as_str(), argv), ("false", vec!["false".into(), "|".into(), "cat".into()]))
            }
            other => panic!("{other:?}"),
        }
        let second_fails = Cmd::new("printf").arg("x").pipe(Cmd::new("sh").args(["-c", "cat >/dev/null; exit 3"]));
        assert!(matches!(rt().block_on(HostRunner.run(&second_fails)), Err(ExecError::NonZero { code: 3, .. })));
        let slow = Cmd::new("sleep").arg("5").pipe(Cmd::new("cat")).timeout(Duration::from_millis(200));
        assert!(matches!(rt().block_on(HostRunner.run(&slow)), Err(ExecError::Timeout { .. })));
        let three = Cmd::new("true").pipe(Cmd::new("cat")).pipe(Cmd::new("cat"));
        assert!(rt().block_on(HostRunner.run(&three)).is_err(), "only two stages");
    }

    #[test]
    fn a_streamed_command_takes_or_gives_bytes_as_they_come_and_fails_like_any_other() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        rt().block_on(async {
            // Fed: 3 MiB of non-UTF-8 bytes in pieces, counted by the command.
            let mut s = HostRunner.stream(&Cmd::new("wc").arg("-c"), Feed::In).await.unwrap();
            let mut stdin = s.stdin.take().unwrap();
            for _ in 0..3 {
                stdin.write_all(&vec![0xffu8; 1 << 20]).await.unwrap();
            }
            drop(stdin);
            assert_eq!(s.finish().await.unwrap().stdout.trim(), (3 << 20).to_string());
            // Read: every byte, then the exit status.
            let mut s = HostRunner.stream(&Cmd::new("head").args(["-c", "300000", "/dev/zero"]), Feed::Out).await.unwrap();
            let mut got = Vec::new();
            s.stdout.take().unwrap().read_to_end(&mut got).await.unwrap();
            assert_eq!(got.len(), 300_000);
            assert!(s.finish().await.is_ok());
            let s = HostRunner.stream(&Cmd::new("sh").args(["-c", "cat >/dev/null; echo no >&2; exit 4"]), Feed::In).await.unwrap();
            assert!(matches!(s.finish().await, Err(ExecError::NonZero { code: 4, ref stderr, .. }) if stderr == "no"));
            let s = HostRunner.stream(&Cmd::new("sleep").arg("5").timeout(Duration::from_millis(200)), Feed::Out).await.unwrap();
            assert!(matches!(s.finish().await, Err(ExecError::Timeout { .. })));
            // The fake runner has no processes to stream.
            assert!(FakeRunner::new().stream(&Cmd::new("zfs"), Feed::Out).await.is_err());
        });
    }

    #[test]
    fn a_streamed_command_says_when_it_is_over_finished_or_dropped() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        rt().block_on(async {
            let over = std::sync::Arc::new(AtomicUsize::new(0));
            let seen = over.clone();
            let s = HostRunner.stream(&Cmd::new("true"), Feed::In).await.unwrap().on_end(move || {
                seen.fetch_add(1, Ordering::SeqCst);
            });
            assert_eq!(over.load(Ordering::SeqCst), 0, "not before it is over");
            assert!(s.finish().await.is_ok());
            assert_eq!(over.load(Ordering::SeqCst), 1);
            let seen = over.clone();
            let s = HostRunner.stream(&Cmd::new("sleep").arg("5"), Feed::Out).await.unwrap().on_end(move || {
                seen.fetch_add(1, Ordering::SeqCst);
            });
            drop(s);
            assert_eq!(over.load(Ordering::SeqCst), 2, "a dropped (killed) one too, once");
        });
    }

    #[test]
    fn arguments_are_passed_verbatim_never_through_a_shell() {
        let out = rt().block_on(HostRunner.run(&Cmd::new("printf").arg("%s|").arg("a b; rm -rf /").arg("$(x)"))).unwrap();
        assert_eq!(out.stdout, "a b; rm -rf /|$(x)|");
    }

    #[test]
    fn non_zero_exit_carries_program_code_and_stderr() {
        let e = rt().block_on(HostRunner.run(&Cmd::new("ls").arg("/definitely/not/here"))).unwrap_err();
        match &e {
            ExecError::NonZero { program, code, stderr, argv } => {
                assert_eq!(program, "ls");
                assert_ne!(*code, 0);
                assert!(stderr.contains("/definitely/not/here"), "{stderr}");
                assert_eq!(argv, &vec!["ls".to_string(), "/definitely/not/here".to_string()]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(e.stderr().map(|s| s.contains("not/here")), Some(true));
    }

    #[test]
    fn a_hung_command_is_killed_at_its_timeout() {
        let t = std::time::Instant::now();
        let e = rt().block_on(HostRunner.run(&Cmd::new("sleep").arg("30").timeout(Duration::from_millis(200)))).unwrap_err();
        assert!(matches!(e, ExecError::Timeout { .. }), "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn stdin_reaches_the_child_and_stays_out_of_the_argv() {
        let cmd = Cmd::new("cat").stdin("s3cret\n");
        assert_eq!(cmd.argv(), ["cat"]);
        assert!(!format!("{cmd:?}").contains("s3cret"));
        assert_eq!(rt().block_on(HostRunner.run(&cmd)).unwrap().stdout, "s3cret\n");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let e = rt().block_on(HostRunner.run(&Cmd::new("cairn-no-such-tool"))).unwrap_err();
        assert!(matches!(e, ExecError::Spawn { not_found: true, .. }), "{e:?}");
    }

    #[test]
    fn fake_runner_checks_argv_and_records_calls() {
        let f = FakeRunner::new();
        f.expect(&["losetup", "-J"], "{}").expect_failure(&["wipefs", "-a", "/dev/loop0"], 1, "busy");
        let rt = rt();
        assert_eq!(rt.block_on(f.run(&Cmd::new("losetup").arg("-J"))).unwrap().stdout, "{}");
        let e = rt.block_on(f.run(&Cmd::new("wipefs").args(["-a", "/dev/loop0"]))).unwrap_err();
        assert_eq!(e.stderr(), Some("busy"));
        assert!(f.is_done());
        assert!(rt.block_on(f.run(&Cmd::new("extra"))).is_err());
        assert_eq!(f.calls().len(), 3);
    }
}
