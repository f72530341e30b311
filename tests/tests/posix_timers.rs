//! POSIX timers (`timer_create`, SIGEV_SIGNAL / SIGEV_THREAD / SIGEV_THREAD_ID / SIGEV_NONE,
//! monotonic, wall-clock absolute and CPU-time clocks) across checkpoint and restart, with
//! `progs/ptimer.c` (one "ok"/"FAIL" line per step, counts checked at the end).
//!
//! The plugin can be switched off with `CKPT_PTIMERS=off` in the program's environment: the
//! last two tests show that the same program then fails — the checkpoint times out on glibc's
//! SIGEV_THREAD helper thread, and without SIGEV_THREAD the timers are dead after a restart —
//! so the positive tests can fail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ckpt_tests::{
    Proc, Prog, Session, assert_same_output, bin, count_lines, describe_status, scenario::scenario,
    util::tail,
};

const STEPS: usize = 250;
const LINES: Duration = Duration::from_secs(60);
const FINISH: Duration = Duration::from_secs(120);

fn ptimer(name: &str, args: &[&str]) -> Prog {
    Prog {
        name: name.into(),
        program: env!("CKPT_PROG_PTIMER").into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        // one line per step and the final "end ..." line
        lines: STEPS + 1,
    }
}

fn assert_all_ok(path: &Path, what: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("FAIL"))
        .take(5)
        .collect();
    assert!(bad.is_empty(), "{what}: FAIL lines:\n{}", bad.join("\n"));
    let last = text.lines().last().unwrap_or("");
    assert_eq!(
        last,
        "end counts=ok once=ok delete=ok",
        "{what}: last line of {}",
        path.display()
    );
}

/// `ckpt-launch` of `prog` with extra environment for the program.
fn launch_env(s: &Session, prog: &Prog, out: &Path, env: &[(&str, &str)]) -> Proc {
    let mut cmd = s.command(bin("ckpt-launch"));
    cmd.args(["--coord-host", "127.0.0.1", "--coord-port"])
        .arg(s.port().to_string())
        .arg("--ckpt-dir")
        .arg(s.ckpt_dir())
        .arg(&prog.program)
        .args(&prog.args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    s.spawn_to(cmd, &format!("launch-{}", prog.name), out)
}

/// Launch with `env`; checkpoint at ~1/5, SIGKILL; restart; checkpoint at ~1/2, SIGKILL;
/// restart and let it finish. Returns the session, the program's output file and its stderr
/// (the launcher's, which the restarted program inherits again).
fn kill_restart_twice(prog: &Prog, env: &[(&str, &str)]) -> (Session, PathBuf, PathBuf) {
    let s = Session::new(&prog.name);
    let out = s.path("ckpt.out");
    let mut app = launch_env(&s, prog, &out, env);
    let err = app.stderr_path().unwrap().to_path_buf();
    s.wait_lines(&out, STEPS / 5, LINES, &mut app);
    let pid = s.wait_for_pids(1, LINES)[0];
    let imgs = s.checkpoint();
    s.log(format!("checkpoint 1 at {} lines", count_lines(&out)));
    s.kill9(pid);
    app.wait_exit(LINES);

    let mut r1 = s.restart(&imgs, &s.path("restart1.stdout"));
    let pid = s.wait_for_pids(1, LINES)[0];
    s.wait_lines(&out, STEPS / 2, LINES, &mut r1);
    let imgs = s.checkpoint();
    s.log(format!("checkpoint 2 at {} lines", count_lines(&out)));
    s.kill9(pid);
    r1.wait_exit(LINES);

    let mut r2 = s.restart(&imgs, &s.path("restart2.stdout"));
    let st = r2.wait_exit(FINISH);
    assert!(
        st.success(),
        "second restart ended with {}; stderr:\n{}\noutput tail:\n{}",
        describe_status(&st),
        r2.stderr_tail(),
        tail(&out, 5)
    );
    s.log(format!(
        "program stderr:\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    ));
    (s, out, err)
}

/// The program itself, without ckpt: all "ok", same bytes twice.
#[test]
fn ptimer_native_is_all_ok() {
    let s = Session::new("ptimer_native");
    let prog = ptimer("ptimer_native", &[]);
    let (a, b) = (s.path("a.out"), s.path("b.out"));
    let mut pa = s.run_native(&prog, &a);
    let mut pb = s.run_native(&prog, &b);
    assert!(pa.wait_exit(FINISH).success());
    assert!(pb.wait_exit(FINISH).success());
    assert_eq!(count_lines(&a), prog.lines);
    assert_all_ok(&a, "native run");
    assert_same_output(&a, &b);
}

/// The standard cycle: checkpoint/resume, checkpoint/kill/restart twice; same bytes as native.
#[test]
fn ptimer_survives_checkpoint_and_restart() {
    scenario(ptimer("ptimer", &[]));
}

/// Restarts without `PR_TIMER_CREATE_RESTORE_IDS`: the timers get new kernel ids and the
/// wrappers translate the program's `timer_t` values (and later timers whose kernel id
/// collides with a held one get synthetic ids).
#[test]
fn ptimer_with_translated_ids() {
    let prog = ptimer("ptimer_map", &[]);
    let (_s, out, err) = kill_restart_twice(&prog, &[("CKPT_PTIMERS", "map")]);
    assert_eq!(count_lines(&out), prog.lines, "{}", tail(&out, 5));
    assert_all_ok(&out, "restarted with translated ids");
    // Both restarts really gave the timers other kernel ids: 6 timers are live at a checkpoint
    // (5 if it caught a step between deleting one timer and creating the next); recreated in
    // reverse order, at least 4 of them change ids.
    let log = std::fs::read_to_string(&err).unwrap_or_default();
    let renumbered: Vec<u32> = log
        .lines()
        .filter_map(|l| {
            l.split_once(" POSIX timer(s) got new kernel ids")?
                .0
                .rsplit(' ')
                .next()
        })
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        renumbered.len() == 2 && renumbered.iter().all(|&n| n >= 4),
        "expected two restarts with translated ids, program stderr:\n{log}"
    );
}

/// Without the plugin, glibc's SIGEV_THREAD helper thread blocks every signal: the
/// checkpoint cannot suspend it and fails after its 10 s timeout.
#[test]
fn without_plugin_sigev_thread_blocks_checkpoint() {
    let prog = ptimer("ptimer_off", &["2000"]);
    let s = Session::new(&prog.name);
    let out = s.path("ckpt.out");
    let mut app = launch_env(&s, &prog, &out, &[("CKPT_PTIMERS", "off")]);
    s.wait_lines(&out, 20, LINES, &mut app);
    s.wait_for_pids(1, LINES);
    let err = s
        .try_checkpoint()
        .expect_err("checkpoint succeeded with glibc's SIGEV_THREAD helper thread running");
    let text = format!("{err}");
    s.log(format!("checkpoint failed as expected: {text}"));
    assert!(text.contains("did not stop"), "unexpected failure:\n{text}");
}

/// Without the plugin (and without SIGEV_THREAD, so the checkpoint works) the kernel timers
/// are gone after a restart: ptimer.c must notice.
#[test]
fn without_plugin_timers_die_at_restart() {
    let prog = ptimer("ptimer_off_nothread", &["250", "nothread"]);
    let (_s, out, _) = kill_restart_twice(&prog, &[("CKPT_PTIMERS", "off")]);
    let text = std::fs::read_to_string(&out).unwrap();
    let first_fail = text.lines().position(|l| l.contains("FAIL"));
    assert!(
        first_fail.is_some(),
        "ptimer.c saw nothing wrong with its timers after restarts without the plugin:\n{}",
        tail(&out, 3)
    );
    assert!(
        first_fail.unwrap() >= STEPS / 5 - 1,
        "ptimer.c failed before the first checkpoint:\n{}",
        tail(&out, 3)
    );
}
