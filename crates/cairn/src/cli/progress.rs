//! Progress for long operations: on a terminal, a line that says what is
//! going on and, when it ends, how long it took. Silent otherwise, and
//! with `-m`. The line is finished before the replies are printed
//! ([`super::Ctx::send_all`]), so no reply lands in its middle.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use super::Ctx;

pub struct Progress {
    started: Instant,
    active: bool,
}

impl Progress {
    pub fn start(what: &str, ctx: &Ctx) -> Progress {
        let active = !ctx.machine && std::io::stderr().is_terminal();
        if active {
            let _ = write!(std::io::stderr(), "{what} ...");
            let _ = std::io::stderr().flush();
        }
        Progress { started: Instant::now(), active }
    }

    pub fn finish(self, ok: bool) {
        if self.active {
            let verdict = if ok { "done" } else { "failed" };
            let _ = writeln!(std::io::stderr(), " {verdict} in {:.1} s", self.started.elapsed().as_secs_f64());
        }
    }
}
