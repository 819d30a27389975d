//! What an operation needs from the outside world: the time and fresh
//! UUIDs. The controller passes real ones; tests pass deterministic ones.

/// Inputs from the outside world for one operation.
pub struct Ctx {
    pub now_ms: i64,
    uuid_fn: Box<dyn FnMut() -> String + Send>,
    /// Makes a new sealed LUKS volume secret; None while the controller
    /// has no master key (passphrase not set or not entered).
    luks_fn: Option<Box<dyn FnMut() -> Option<String> + Send>>,
}

impl Ctx {
    pub fn new(now_ms: i64, uuid_fn: impl FnMut() -> String + Send + 'static) -> Ctx {
        Ctx { now_ms, uuid_fn: Box::new(uuid_fn), luks_fn: None }
    }

    /// A deterministic context: time 1 000 000 ms, UUIDs counting up.
    pub fn deterministic() -> Ctx {
        let mut n = 0u64;
        Ctx::new(1_000_000, move || {
            n += 1;
            format!("00000000-0000-4000-8000-{n:012x}")
        })
    }

    pub fn uuid(&mut self) -> String {
        (self.uuid_fn)()
    }

    /// Gives the context a way to make sealed LUKS volume secrets.
    pub fn with_luks(mut self, f: impl FnMut() -> Option<String> + Send + 'static) -> Ctx {
        self.luks_fn = Some(Box::new(f));
        self
    }

    /// A new sealed LUKS volume secret, if the master key is available.
    pub fn luks_secret(&mut self) -> Option<String> {
        self.luks_fn.as_mut().and_then(|f| f())
    }
}
