//! Blocking calls interrupted by checkpoints (`plugins/src/eintr.rs`): `progs/eintr.c` runs one
//! thread per kind of wait (poll, ppoll, select, pselect, epoll, semaphores, socket reads and
//! accepts with `SO_RCVTIMEO`, each through its plain and, where glibc has one, `__*_chk`
//! entry point) and prints a line per round saying whether each call returned what it should
//! (a 100 ms timeout that expired no earlier than asked, or the data another thread sent).
//! Every checkpoint interrupts every one of them; the output must be exactly that of a native
//! run: no `EINTR`, no `SHORT`. At the end the program's own SIGUSR1 must still interrupt
//! each wait with EINTR.

use std::time::Duration;

use ckpt_tests::{Prog, Session, assert_same_output, count_lines, describe_status, scenario};

const ROUNDS: usize = 40;
const LINES: Duration = Duration::from_secs(60);
const FINISH: Duration = Duration::from_secs(180);

fn prog(mode: &str, kinds: usize) -> Prog {
    Prog {
        name: format!("eintr_{mode}"),
        program: env!("CKPT_PROG_EINTR").into(),
        args: vec![mode.into(), ROUNDS.to_string()],
        // a line per round, a "final" line per kind, "done"
        lines: ROUNDS + kinds + 1,
    }
}

/// Waits that live in memory only (fd -1, no fds, semaphores) survive a restart: the whole
/// checkpoint → resume → checkpoint → kill → restart → checkpoint → kill → restart cycle.
#[test]
fn waits_across_checkpoint_and_restart() {
    scenario::scenario(prog("mem", 9));
}

/// Pipes, epoll and sockets are not restored by a restart yet: this mode is checkpointed four
/// times while it runs and resumed each time, then must finish with the native output.
#[test]
fn fd_waits_across_checkpoint_resume() {
    let p = prog("fds", 19);
    let s = Session::new(&p.name);
    let native_out = s.path("native.out");
    let mut native = s.run_native(&p, &native_out);
    let out = s.path("ckpt.out");
    let mut app = s.launch(&p, &out);
    let mut at = s.wait_lines(&out, 4, LINES, &mut app);
    s.wait_for_pids(1, LINES);
    for i in 1..=4 {
        let imgs = s.checkpoint();
        s.log(format!(
            "checkpoint {i} at {at} lines: {imgs:?}, now {} lines",
            count_lines(&out)
        ));
        at = s.wait_lines(&out, count_lines(&out) + 4, LINES, &mut app);
    }
    let st = app.wait_exit(FINISH);
    assert!(
        st.success(),
        "{} under ckpt ended with {}; stderr:\n{}",
        p.name,
        describe_status(&st),
        app.stderr_tail()
    );
    let st = native.wait_exit(FINISH);
    assert!(st.success(), "native run failed: {}", describe_status(&st));
    assert_eq!(count_lines(&native_out), p.lines, "native run line count");
    assert_same_output(&native_out, &out);
}
