//! How the controller proves to a satellite that it knows the cluster
//! secret without sending it, and how every later request is bound to
//! that proof.
//!
//! 1. `GET` [`PATH_CHALLENGE`] (unauthenticated): the satellite answers a
//!    fresh random nonce ([`Challenge`]), kept a short while, usable once.
//! 2. `POST` [`PATH_SESSION`] a [`SessionOpen`]: the controller's own
//!    nonce and `HMAC-SHA256(secret, "proof", satellite nonce, controller
//!    nonce, protocol version, epoch)`. The satellite checks it, derives
//!    the session key `HMAC-SHA256(secret, "session-key", satellite nonce,
//!    controller nonce)` and answers a session id ([`SessionOpened`]),
//!    itself MACed under that key (sequence 0), so the controller knows
//!    it talks to a holder of the secret too.
//! 3. Every later request carries [`SESSION_HEADER`], [`SEQ_HEADER`] (a
//!    number the controller never uses twice in a session, from 1 up)
//!    and [`MAC_HEADER`]: the MAC under the session key of the session
//!    id, the sequence number, method, path, protocol version, epoch and
//!    the SHA-256 of the body. The satellite refuses a sequence number it
//!    has seen ([`Window`]), so a captured request cannot be sent again,
//!    and a changed one does not verify. Answers carry a MAC over the same
//!    session and sequence number, the status and the body's SHA-256.
//!
//! Every MAC input is a label and length-prefixed fields, so no two
//! different field lists give the same bytes. Tags travel as unpadded
//! URL-safe base64; comparisons are `ring::hmac::verify`, constant-time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use parking_lot::Mutex;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// `GET`: a [`Challenge`]; the only path a satellite serves unauthenticated.
pub const PATH_CHALLENGE: &str = "/internal/v1/auth/challenge";
/// `POST` a [`SessionOpen`], answered by a [`SessionOpened`].
pub const PATH_SESSION: &str = "/internal/v1/auth/session";
/// The session id of a request.
pub const SESSION_HEADER: &str = "x-cairn-session";
/// The request's sequence number in its session.
pub const SEQ_HEADER: &str = "x-cairn-seq";
/// The MAC of a request or of an answer.
pub const MAC_HEADER: &str = "x-cairn-mac";

/// Bytes of a nonce.
const NONCE_LEN: usize = 32;
/// Challenges handed out and not used yet that a satellite keeps (the
/// endpoint is unauthenticated: enough that a flood of requests cannot push
/// the controller's challenge out between its two round trips).
const MAX_PENDING: usize = 1024;
/// How long a challenge may be used.
const CHALLENGE_TTL: Duration = Duration::from_secs(60);
/// Sessions a satellite keeps: a new one pushes out the oldest.
const MAX_SESSIONS: usize = 4;
/// A session not used for this long is forgotten.
const SESSION_IDLE: Duration = Duration::from_secs(3600);

/// The satellite's answer to [`PATH_CHALLENGE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub nonce: String,
}

/// The controller's proof that it knows the cluster secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOpen {
    pub satellite_nonce: String,
    pub controller_nonce: String,
    pub proof: String,
}

/// The satellite's answer to a valid [`SessionOpen`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOpened {
    pub session: String,
}

/// Why a request was not let through (all answered 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not authenticated: no session (open one at {PATH_SESSION})")]
    NoSession,
    #[error("unknown or expired session")]
    UnknownSession,
    #[error("unknown, used or expired challenge")]
    UnknownChallenge,
    #[error("wrong cluster secret: the proof does not match")]
    WrongProof,
    #[error("the request's MAC does not match")]
    BadMac,
    #[error("sequence number {0} already used or too old: a replayed request")]
    Replayed(u64),
    #[error("no random numbers available")]
    NoRandom,
}

/// A fresh random nonce, base64.
pub fn nonce() -> Result<String, Refusal> {
    let mut bytes = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut bytes).map_err(|_| Refusal::NoRandom)?;
    Ok(B64.encode(bytes))
}

/// A label and length-prefixed fields: the bytes every MAC is taken of.
fn framed(label: &str, fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(label.len() + 1 + fields.iter().map(|f| f.len() + 8).sum::<usize>());
    out.extend_from_slice(label.as_bytes());
    out.push(0);
    for f in fields {
        out.extend_from_slice(&(f.len() as u64).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn verify(key: &hmac::Key, data: &[u8], tag: &str) -> bool {
    B64.decode(tag.trim()).is_ok_and(|t| hmac::verify(key, data, &t).is_ok())
}

/// What the proof of a session covers besides the nonces: the protocol
/// version and epoch headers sent with it (so neither can be changed on
/// the way).
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    pub version: Option<&'a str>,
    pub epoch: Option<&'a str>,
}

fn opt(v: Option<&str>) -> &[u8] {
    v.unwrap_or("").as_bytes()
}

/// The controller's proof for a session.
pub fn proof(secret: &[u8], satellite_nonce: &str, controller_nonce: &str, cx: Context<'_>) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let data = framed("cairn proof", &[satellite_nonce.as_bytes(), controller_nonce.as_bytes(), opt(cx.version), opt(cx.epoch)]);
    B64.encode(hmac::sign(&key, &data))
}

fn proof_ok(secret: &[u8], open: &SessionOpen, cx: Context<'_>) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let data = framed("cairn proof", &[open.satellite_nonce.as_bytes(), open.controller_nonce.as_bytes(), opt(cx.version), opt(cx.epoch)]);
    verify(&key, &data, &open.proof)
}

/// The key of one session: both sides derive it from the secret and the
/// two nonces; it never travels.
#[derive(Clone)]
pub struct SessionKey(hmac::Key);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(<secret>)")
    }
}

/// A request as its MAC covers it.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub session: &'a str,
    pub seq: u64,
    pub method: &'a str,
    /// Path and query.
    pub path: &'a str,
    pub cx: Context<'a>,
}

fn body_hash(body: &[u8]) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, body)
}

impl SessionKey {
    pub fn derive(secret: &[u8], satellite_nonce: &str, controller_nonce: &str) -> SessionKey {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let tag = hmac::sign(&key, &framed("cairn session-key", &[satellite_nonce.as_bytes(), controller_nonce.as_bytes()]));
        SessionKey(hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref()))
    }

    fn request_data(h: &RequestHead<'_>, body: &[u8]) -> Vec<u8> {
        let seq = h.seq.to_be_bytes();
        let hash = body_hash(body);
        framed(
            "cairn request",
            &[h.session.as_bytes(), &seq, h.method.as_bytes(), h.path.as_bytes(), opt(h.cx.version), opt(h.cx.epoch), hash.as_ref()],
        )
    }

    fn response_data(session: &str, seq: u64, status: u16, body: &[u8]) -> Vec<u8> {
        framed("cairn response", &[session.as_bytes(), &seq.to_be_bytes(), &status.to_be_bytes(), body_hash(body).as_ref()])
    }

    /// The MAC of a request.
    pub fn sign_request(&self, h: &RequestHead<'_>, body: &[u8]) -> String {
        B64.encode(hmac::sign(&self.0, &Self::request_data(h, body)))
    }

    pub fn verify_request(&self, h: &RequestHead<'_>, body: &[u8], mac: &str) -> bool {
        verify(&self.0, &Self::request_data(h, body), mac)
    }

    /// The MAC of the answer to request `seq` of `session` (0: the answer
    /// to the session's opening).
    pub fn sign_response(&self, session: &str, seq: u64, status: u16, body: &[u8]) -> String {
        B64.encode(hmac::sign(&self.0, &Self::response_data(session, seq, status, body)))
    }

    pub fn verify_response(&self, session: &str, seq: u64, status: u16, body: &[u8], mac: &str) -> bool {
        verify(&self.0, &Self::response_data(session, seq, status, body), mac)
    }
}

/// The sequence numbers of a session seen so far: the highest, and which
/// of the [`Window::WIDTH`] below it. Requests may arrive somewhat out of
/// order (the controller sends on several connections at once); a number
/// seen before, or older than the window, is refused.
#[derive(Debug, Clone, Default)]
pub struct Window {
    top: u64,
    /// Bit `i`: `top - i` was seen.
    seen: u128,
}

impl Window {
    pub const WIDTH: u64 = 128;

    /// Whether `seq` would be admitted (nothing is recorded).
    pub fn fresh(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.top {
            return true;
        }
        let back = self.top - seq;
        back < Self::WIDTH && self.seen & (1u128 << back) == 0
    }

    /// Records `seq`; false (and nothing recorded) when it is not fresh.
    pub fn admit(&mut self, seq: u64) -> bool {
        if !self.fresh(seq) {
            return false;
        }
        if seq > self.top {
            let shift = seq - self.top;
            self.seen = if shift >= Self::WIDTH { 0 } else { self.seen << shift };
            self.top = seq;
            self.seen |= 1;
        } else {
            self.seen |= 1u128 << (self.top - seq);
        }
        true
    }
}

struct Session {
    id: String,
    key: SessionKey,
    window: Window,
    used: Instant,
}

#[derive(Default)]
struct Table {
    pending: VecDeque<(String, Instant)>,
    sessions: VecDeque<Session>,
}

/// A satellite's side: the secret, the challenges handed out and the
/// sessions open (both bounded, see the constants).
pub struct Authority {
    secret: Vec<u8>,
    table: Mutex<Table>,
}

impl Authority {
    pub fn new(secret: &str) -> Authority {
        Authority { secret: secret.as_bytes().to_vec(), table: Mutex::new(Table::default()) }
    }

    /// A new challenge, remembered until used or too old.
    pub fn challenge(&self) -> Result<Challenge, Refusal> {
        let nonce = nonce()?;
        let mut t = self.table.lock();
        let now = Instant::now();
        t.pending.retain(|(_, at)| now.duration_since(*at) < CHALLENGE_TTL);
        while t.pending.len() >= MAX_PENDING {
            t.pending.pop_front();
        }
        t.pending.push_back((nonce.clone(), now));
        Ok(Challenge { nonce })
    }

    /// Checks a session opening and opens the session: its id and key.
    /// The challenge is used up by a valid proof only.
    pub fn open(&self, open: &SessionOpen, cx: Context<'_>) -> Result<(String, SessionKey), Refusal> {
        let id = nonce()?;
        let mut t = self.table.lock();
        let now = Instant::now();
        let at = t.pending.iter().position(|(n, at)| n == &open.satellite_nonce && now.duration_since(*at) < CHALLENGE_TTL);
        let Some(at) = at else { return Err(Refusal::UnknownChallenge) };
        // Only a valid proof uses the challenge up: a forged opening seen
        // on the wire cannot burn the controller's challenge first.
        if !proof_ok(&self.secret, open, cx) {
            return Err(Refusal::WrongProof);
        }
        t.pending.remove(at);
        let key = SessionKey::derive(&self.secret, &open.satellite_nonce, &open.controller_nonce);
        t.sessions.retain(|s| now.duration_since(s.used) < SESSION_IDLE);
        while t.sessions.len() >= MAX_SESSIONS {
            t.sessions.pop_front();
        }
        t.sessions.push_back(Session { id: id.clone(), key: key.clone(), window: Window::default(), used: now });
        Ok((id, key))
    }

    /// The key of a session, when `seq` is fresh in it (checked again by
    /// [`Authority::admit`] once the MAC is verified).
    pub fn key(&self, session: &str, seq: u64) -> Result<SessionKey, Refusal> {
        let t = self.table.lock();
        let s = t.sessions.iter().find(|s| s.id == session).ok_or(Refusal::UnknownSession)?;
        if !s.window.fresh(seq) {
            return Err(Refusal::Replayed(seq));
        }
        Ok(s.key.clone())
    }

    /// Records `seq` of a request whose MAC was verified.
    pub fn admit(&self, session: &str, seq: u64) -> Result<(), Refusal> {
        let mut t = self.table.lock();
        let s = t.sessions.iter_mut().find(|s| s.id == session).ok_or(Refusal::UnknownSession)?;
        if !s.window.admit(seq) {
            return Err(Refusal::Replayed(seq));
        }
        s.used = Instant::now();
        Ok(())
    }
}

/// The controller's side of a session open with one satellite.
#[derive(Debug)]
pub struct ClientSession {
    pub id: String,
    pub key: SessionKey,
    next: std::sync::atomic::AtomicU64,
}

impl ClientSession {
    pub fn new(id: String, key: SessionKey) -> ClientSession {
        ClientSession { id, key, next: std::sync::atomic::AtomicU64::new(1) }
    }

    /// A sequence number not used before in this session.
    pub fn next_seq(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "the-cluster-secret";

    fn opened(a: &Authority, secret: &str) -> Result<(String, SessionKey, SessionKey), Refusal> {
        let ch = a.challenge()?;
        let cn = nonce()?;
        let cx = Context { version: Some("7"), epoch: None };
        let open = SessionOpen {
            proof: proof(secret.as_bytes(), &ch.nonce, &cn, cx),
            satellite_nonce: ch.nonce.clone(),
            controller_nonce: cn.clone(),
        };
        let (id, key) = a.open(&open, cx)?;
        Ok((id, key, SessionKey::derive(secret.as_bytes(), &ch.nonce, &cn)))
    }

    fn head<'a>(session: &'a str, seq: u64, path: &'a str) -> RequestHead<'a> {
        RequestHead { session, seq, method: "POST", path, cx: Context { version: Some("7"), epoch: Some("3") } }
    }

    #[test]
    fn both_sides_derive_the_same_key_and_a_wrong_secret_is_refused() {
        let a = Authority::new(SECRET);
        let (id, sat, ctrl) = opened(&a, SECRET).expect("opened");
        let mac = ctrl.sign_request(&head(&id, 1, "/x"), b"{}");
        assert!(sat.verify_request(&head(&id, 1, "/x"), b"{}", &mac));
        let answer = sat.sign_response(&id, 1, 200, b"ok");
        assert!(ctrl.verify_response(&id, 1, 200, b"ok", &answer));
        assert!(!ctrl.verify_response(&id, 2, 200, b"ok", &answer));
        assert_eq!(opened(&a, "another-secret").err(), Some(Refusal::WrongProof));
    }

    #[test]
    fn a_challenge_is_used_once_and_the_proof_covers_version_and_epoch() {
        let a = Authority::new(SECRET);
        let ch = a.challenge().expect("challenge");
        let cn = nonce().expect("nonce");
        let sent = Context { version: Some("7"), epoch: Some("5") };
        let open = SessionOpen { proof: proof(SECRET.as_bytes(), &ch.nonce, &cn, sent), satellite_nonce: ch.nonce, controller_nonce: cn };
        let changed = Context { version: Some("7"), epoch: Some("999") };
        assert_eq!(a.open(&open, changed).err(), Some(Refusal::WrongProof));
        // A wrong proof does not use the challenge up (a forged opening
        // cannot burn the controller's challenge); a valid one does.
        assert!(a.open(&open, sent).is_ok());
        assert_eq!(a.open(&open, sent).err(), Some(Refusal::UnknownChallenge));
    }

    #[test]
    fn any_change_of_a_request_breaks_its_mac() {
        let key = SessionKey::derive(SECRET.as_bytes(), "a", "b");
        let h = head("s", 9, "/internal/v1/apply");
        let mac = key.sign_request(&h, b"body");
        assert!(key.verify_request(&h, b"body", &mac));
        assert!(!key.verify_request(&h, b"bodY", &mac));
        assert!(!key.verify_request(&RequestHead { seq: 10, ..h }, b"body", &mac));
        assert!(!key.verify_request(&RequestHead { path: "/internal/v1/observe", ..h }, b"body", &mac));
        assert!(!key.verify_request(&RequestHead { method: "GET", ..h }, b"body", &mac));
        assert!(!key.verify_request(&RequestHead { session: "t", ..h }, b"body", &mac));
        assert!(!key.verify_request(&RequestHead { cx: Context { version: Some("7"), epoch: Some("4") }, ..h }, b"body", &mac));
        assert!(!key.verify_request(&h, b"body", "not base64 !"));
        let other = SessionKey::derive(SECRET.as_bytes(), "a", "c");
        assert!(!other.verify_request(&h, b"body", &mac));
    }

    #[test]
    fn the_window_refuses_repeats_and_numbers_too_old_but_takes_late_ones() {
        let mut w = Window::default();
        assert!(!w.admit(0));
        assert!(w.admit(1));
        assert!(!w.admit(1));
        assert!(w.admit(5));
        assert!(w.admit(3), "late but unseen");
        assert!(!w.admit(3));
        assert!(w.admit(2));
        assert!(w.admit(300));
        assert!(!w.admit(5), "older than the window");
        assert!(!w.admit(300 - Window::WIDTH));
        assert!(w.admit(300 - Window::WIDTH + 1));
        assert!(!w.admit(300 - Window::WIDTH + 1));
        assert!(w.admit(u64::MAX));
        assert!(!w.admit(u64::MAX));
    }

    #[test]
    fn a_replayed_sequence_number_is_refused_after_the_first_use() {
        let a = Authority::new(SECRET);
        let (id, _, _) = opened(&a, SECRET).expect("opened");
        assert!(a.key(&id, 1).is_ok());
        assert_eq!(a.admit(&id, 1), Ok(()));
        assert_eq!(a.key(&id, 1).err(), Some(Refusal::Replayed(1)));
        assert_eq!(a.admit(&id, 1), Err(Refusal::Replayed(1)));
        assert_eq!(a.key("nope", 2).err(), Some(Refusal::UnknownSession));
    }

    #[test]
    fn sessions_are_bounded_and_the_oldest_goes_first() {
        let a = Authority::new(SECRET);
        let ids: Vec<String> = (0..MAX_SESSIONS + 1).map(|_| opened(&a, SECRET).expect("opened").0).collect();
        assert_eq!(a.key(&ids[0], 1).err(), Some(Refusal::UnknownSession));
        for id in &ids[1..] {
            assert!(a.key(id, 1).is_ok());
        }
        for _ in 0..MAX_PENDING + 5 {
            a.challenge().expect("challenge");
        }
        assert_eq!(a.table.lock().pending.len(), MAX_PENDING);
    }

    #[test]
    fn fields_are_framed_so_that_moving_bytes_between_them_changes_the_input() {
        assert_ne!(framed("l", &[b"ab", b"c"]), framed("l", &[b"a", b"bc"]));
    }
}
