//! The fallback restart path (no user namespaces: new pids and tids, glibc's cached tid set to
//! the new kernel tid) through the standard cycle, for a single-threaded and a multi-threaded
//! program. `CKPT_NO_NAMESPACES=1` makes ckpt-restart take it, as where user namespaces are off.

use ckpt_tests::Prog;
use ckpt_tests::scenario::scenario;

fn without_namespaces() {
    // SAFETY: set before any process is started; the harness reads no environment concurrently.
    unsafe { std::env::set_var("CKPT_NO_NAMESPACES", "1") };
}

#[test]
fn counter_with_new_ids() {
    without_namespaces();
    scenario(Prog::counter_c());
}

#[test]
fn threads_with_new_ids() {
    without_namespaces();
    scenario(Prog {
        name: "threads_new_ids".into(),
        program: env!("CKPT_PROG_THREADS").into(),
        args: vec![],
        lines: 301,
    });
}
