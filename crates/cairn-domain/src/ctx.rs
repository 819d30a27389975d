//! What an operation needs from the outside world: the time and fresh
//! UUIDs. The controller passes real ones; tests pass deterministic ones.

/// Inputs from the outside world for one operation.
pub struct Ctx {
    pub now_ms: i64,
    uuid_fn: Box<dyn FnMut() -> String + Send>,
}

impl Ctx {
    pub fn new(now_ms: i64, uuid_fn: impl FnMut() -> String + Send + 'static) -> Ctx {
        Ctx { now_ms, uuid_fn: Box::new(uuid_fn) }
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
}
