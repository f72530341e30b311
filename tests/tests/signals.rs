//! Signal state across checkpoint, resume and restart (`progs/sig.c`): an itimer-driven
//! `sigsuspend` loop with its handler on a sigaltstack, a signal blocked for the whole run,
//! process-directed signals pending (with their values and order) from before the first
//! checkpoint to after the last restart, CPU-time itimers that must stay armed, a thread in
//! `sigtimedwait` that must never return early, and a program that tries to block, ignore and
//! wait for the checkpoint signal and must still be checkpointable (and see what it set).

use ckpt_tests::{Prog, scenario::scenario};

/// `sig 50 1`: 50 steps of ~0.1 s; a "start" line, one line per step, a "ticks" line.
fn sig_prog(name: &str, hostile: bool) -> Prog {
    Prog {
        name: name.into(),
        program: env!("CKPT_PROG_SIG").into(),
        args: vec!["50".into(), if hostile { "1" } else { "0" }.into()],
        lines: 52,
    }
}

#[test]
fn c_signals_hostile() {
    scenario(sig_prog("sig_hostile", true));
}

#[test]
fn c_signals_plain() {
    scenario(sig_prog("sig_plain", false));
}
