//! Terminals (docs/terminals.md): a program run in a terminal comes back in the terminal
//! `ckpt-restart` runs in with its attributes, window size and foreground group, and still
//! gets ^C; a pty pair the program made is recreated with the bytes queued in both directions
//! and stays the controlling terminal of the child's session. Sources: `tests/progs/term_raw.c`,
//! `tests/progs/pty_pair.c`, `tests/progs/tty_eof.c`.

use std::time::Duration;

use ckpt_format::image::{ObjKind, read_header};
use ckpt_tests::pty::Term;
use ckpt_tests::tree::images_in;
use ckpt_tests::tree::{TreeSpec, checkpoint_loop_scenario, tree_scenario};
use ckpt_tests::{Prog, Session, describe_status};

const WAIT: Duration = Duration::from_secs(60);

/// The part of each "step N ..." line after the step number, in order.
fn steps(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("step "))
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.to_string()))
        .collect()
}

const RAW: &str = "icanon=0 echo=0 isig=1 winsize=33x77 fg=1";

/// Launch `prog` in terminal 1 (it puts it in raw no-echo mode and sets 33x77), checkpoint,
/// keep running, kill; restart in a *new* terminal 2 (24x80, cooked): the program must see its
/// raw mode, its window size and the foreground again, get a SIGWINCH (to redraw); then the
/// same once more from terminal 2 to a terminal 3, where a ^C must reach it.
fn raw_terminal_cycle(name: &str, prog: Prog) {
    let s = Session::new(name);
    let mut t1 = Term::new(24, 80);
    let mut app = t1.spawn(s.launch_command(&prog), "launch");
    t1.wait_for("10 steps in terminal 1", WAIT, |t| steps(t).len() >= 10);
    let imgs = s.checkpoint();
    let n = steps(&t1.text()).len();
    t1.wait_for("5 more steps after the checkpoint", WAIT, |t| {
        steps(t).len() >= n + 5
    });
    let before = steps(&t1.text());
    assert!(
        before.iter().all(|l| l == RAW),
        "terminal 1 showed unexpected steps: {before:?}\n{}",
        t1.text()
    );
    s.kill_computation(&mut app);

    let mut t2 = Term::new(24, 80);
    let mut r = t2.spawn(s.restart_command(&imgs), "restart");
    let text = t2.wait_for("10 steps in terminal 2", WAIT, |t| steps(t).len() >= 10);
    let after = steps(&text);
    assert!(
        after.iter().all(|l| l == RAW),
        "after restart in terminal 2 the program saw {:?}, expected every step to be {RAW:?}\n{text}",
        after.iter().find(|l| *l != RAW)
    );
    assert!(
        text.contains("got SIGWINCH"),
        "no SIGWINCH reached the program after the restart (it redraws on it):\n{text}"
    );
    // A second cycle from the restarted program: checkpoint in terminal 2, kill, restart in
    // terminal 3 (the baseline is now terminal 2's own settings, which the program changed).
    let imgs = s.checkpoint();
    s.kill_computation(&mut r);
    let mut t3 = Term::new(24, 80);
    let mut r = t3.spawn(s.restart_command(&imgs), "restart2");
    let text = t3.wait_for("10 steps in terminal 3", WAIT, |t| steps(t).len() >= 10);
    let after = steps(&text);
    assert!(
        after.iter().all(|l| l == RAW),
        "after the second restart (terminal 3) the program saw {:?}, expected {RAW:?}\n{text}",
        after.iter().find(|l| *l != RAW)
    );
    interrupt_and_finish(&t3, &mut r);
}

/// ^C on `term`: the restarted program prints its SIGINT line and exits, and so does
/// `ckpt-restart` (`r`), successfully.
fn interrupt_and_finish(term: &Term, r: &mut ckpt_tests::Proc) {
    term.write(b"\x03");
    term.wait_for("the program's SIGINT line", WAIT, |t| {
        t.contains("got SIGINT at step")
    });
    let st = r
        .try_wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("ckpt-restart did not exit after ^C: {e}\n{}", term.text()));
    assert!(
        st.success(),
        "ckpt-restart: {}\n{}",
        describe_status(&st),
        term.text()
    );
}

/// The terminal on fds 0-2 (re-inherited from `ckpt-restart`).
#[test]
fn raw_terminal_comes_back_in_a_new_terminal() {
    raw_terminal_cycle(
        "term_raw",
        Prog {
            name: "term_raw".into(),
            program: env!("CKPT_PROG_TERM_RAW").into(),
            args: vec!["600".into()],
            lines: 601,
        },
    );
}

/// The terminal used only through `/dev/tty` (fds 0-2 elsewhere, as for `less`): bash execs
/// the program with stdin, stdout and stderr on /dev/null.
#[test]
fn raw_dev_tty_comes_back_in_a_new_terminal() {
    let exe = env!("CKPT_PROG_TERM_RAW");
    raw_terminal_cycle(
        "term_raw_tty",
        Prog {
            name: "term_raw_tty".into(),
            program: ckpt_tests::util::find_in_path("bash"),
            args: vec![
                "-c".into(),
                format!("exec {exe} 600 tty </dev/null >/dev/null 2>/dev/null"),
            ],
            lines: 601,
        },
    );
}

/// A program that never changes its terminal, restarted in a terminal whose user has other
/// settings (no echo, 50x132): it must see the new terminal's settings, not the old ones.
#[test]
fn untouched_terminal_keeps_the_new_terminals_settings() {
    let s = Session::new("term_keep");
    let prog = Prog {
        name: "term_keep".into(),
        program: env!("CKPT_PROG_TERM_RAW").into(),
        args: vec!["600".into(), "keep".into()],
        lines: 601,
    };
    let mut t1 = Term::new(24, 80);
    let mut app = t1.spawn(s.launch_command(&prog), "launch");
    t1.wait_for("10 steps in terminal 1", WAIT, |t| steps(t).len() >= 10);
    let imgs = s.checkpoint();
    let before = steps(&t1.text());
    let want1 = "icanon=1 echo=1 isig=1 winsize=24x80 fg=1";
    assert!(before.iter().all(|l| l == want1), "terminal 1: {before:?}");
    s.kill_computation(&mut app);

    let mut t2 = Term::new(50, 132);
    t2.clear_lflag(libc::ECHO);
    let mut r = t2.spawn(s.restart_command(&imgs), "restart");
    let text = t2.wait_for("10 steps in terminal 2", WAIT, |t| steps(t).len() >= 10);
    let want2 = "icanon=1 echo=0 isig=1 winsize=50x132 fg=1";
    let after = steps(&text);
    assert!(
        after.iter().all(|l| l == want2),
        "after restart the program saw {:?}, expected the new terminal's {want2:?}\n{text}",
        after.iter().find(|l| *l != want2)
    );
    interrupt_and_finish(&t2, &mut r);
}

/// A job-control program (parent in the launched group, its child a foreground job in its own
/// group): after a restart in a new terminal the child's group is the terminal's foreground
/// again and a ^C reaches the child, not the parent.
#[test]
fn foreground_job_gets_the_new_terminal() {
    let s = Session::new("fg_job");
    let prog = Prog {
        name: "fg_job".into(),
        program: env!("CKPT_PROG_FG_JOB").into(),
        args: vec!["600".into()],
        lines: 601,
    };
    let jobs = |t: &str| -> Vec<String> {
        t.lines()
            .filter_map(|l| l.strip_prefix("job step "))
            .filter_map(|l| l.split_once(' ').map(|(_, r)| r.to_string()))
            .collect()
    };
    let want = "fg=1 ttou=1";
    let mut t1 = Term::new(24, 80);
    let mut app = t1.spawn(s.launch_command(&prog), "launch-fg_job");
    t1.wait_for("10 job steps in terminal 1", WAIT, |t| jobs(t).len() >= 10);
    let imgs = s.checkpoint();
    let n = jobs(&t1.text()).len();
    t1.wait_for("5 more job steps", WAIT, |t| jobs(t).len() >= n + 5);
    let before = jobs(&t1.text());
    assert!(before.iter().all(|l| l == want), "terminal 1: {before:?}");
    s.kill_computation(&mut app);

    let mut t2 = Term::new(24, 80);
    let mut r = t2.spawn(s.restart_command(&imgs), "restart-fg_job");
    let text = t2.wait_for("10 job steps in terminal 2", WAIT, |t| jobs(t).len() >= 10);
    let after = jobs(&text);
    assert!(
        after.iter().all(|l| l == want),
        "after restart the job saw {:?}, expected {want:?}\n{text}",
        after.iter().find(|l| *l != want)
    );
    t2.write(b"\x03");
    let text = t2.wait_for("the parent's last line", WAIT, |t| {
        t.contains("parent: took")
    });
    assert!(
        text.contains("job got SIGINT") && text.contains("parent: job exit 3 parent-fg-before=1"),
        "terminal 2:\n{text}"
    );
    let st = r
        .try_wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("ckpt-restart did not exit: {e}\n{}", t2.text()));
    assert!(
        st.success(),
        "ckpt-restart: {}\n{}",
        describe_status(&st),
        t2.text()
    );
}

/// A parent and its child talking through a pty pair the parent made (the child's session has
/// the slave as controlling terminal), with lines queued both ways at every checkpoint, through
/// the tree cycle: same output as a native run.
#[test]
fn pty_pair_made_by_the_program() {
    tree_scenario(
        Prog {
            name: "pty_pair".into(),
            program: env!("CKPT_PROG_PTY_PAIR").into(),
            args: vec!["400".into()],
            lines: 402,
        },
        TreeSpec {
            procs: 2..=2,
            stable: true,
            after_restart: Some(Box::new(|s, _, _| {
                // The images just restarted: the pty is one object, the master's holder saved
                // what was queued, and the slave was the child's controlling terminal.
                let mut seen = Vec::new();
                for img in images_in(s.ckpt_dir()) {
                    let f = std::fs::File::open(&img).expect("open image");
                    let mut r = flate2::read::MultiGzDecoder::new(f);
                    let h = read_header(&mut r).expect("image header");
                    for o in &h.objects {
                        if let ObjKind::Pty(p) = &o.kind {
                            seen.push((
                                h.vpid,
                                o.has_data,
                                p.to_slave.len(),
                                o.data.len(),
                                p.ctty_sid,
                            ));
                        }
                    }
                }
                s.log(format!(
                    "pty objects (vpid, has_data, to_slave, to_master, ctty_sid): {seen:?}"
                ));
                assert_eq!(seen.len(), 2, "both images refer to the pty: {seen:?}");
                assert!(
                    seen.iter().any(|x| x.1),
                    "no image saved the pty's bytes: {seen:?}"
                );
                assert!(
                    seen.iter().all(|x| x.4 > 0),
                    "the pty was nobody's ctty: {seen:?}"
                );
            })),
            ..TreeSpec::default()
        },
    );
}

/// Python's `pty.spawn` (glibc `forkpty`) running bash on a pty: bash reads its terminal
/// (`read -t` as a pause) and prints; python copies the pty's output to its stdout. Through the
/// tree cycle: same bytes as a native run (`\r\n` from the pty's output processing included).
#[test]
fn python_pty_spawn_runs_bash() {
    tree_scenario(
        Prog {
            name: "pty_spawn".into(),
            program: ckpt_tests::util::find_in_path("python3"),
            args: vec![
                "-c".into(),
                "import pty; pty.spawn(['bash', '-c', \
                 'for i in {1..300}; do echo line $i; read -t 0.03; done; echo bye'])"
                    .into(),
            ],
            lines: 301,
        },
        TreeSpec {
            procs: 2..=2,
            // The exec'd bash keeps its parent in --list across restarts.
            stable: true,
            ..TreeSpec::default()
        },
    );
}

/// The same with the master held by both processes (the child keeps its inherited copy): only
/// one of them may drain the pty at a checkpoint, or the bytes come back out of order.
#[test]
fn pty_pair_master_held_twice_checkpoint_loop() {
    checkpoint_loop_scenario(
        Prog {
            name: "pty_pair_shared".into(),
            program: env!("CKPT_PROG_PTY_PAIR").into(),
            args: vec!["600".into(), "shared".into()],
            lines: 602,
        },
        TreeSpec {
            procs: 2..=2,
            ..TreeSpec::default()
        },
        20,
        Duration::from_secs(10),
    );
}

/// 20 checkpoints back to back while the parent and child talk through their pty (each drains
/// and refills it with the program running on), then kill and restart: still the native output.
#[test]
fn pty_pair_checkpoint_loop() {
    checkpoint_loop_scenario(
        Prog {
            name: "pty_pair_loop".into(),
            program: env!("CKPT_PROG_PTY_PAIR").into(),
            args: vec!["600".into()],
            lines: 602,
        },
        TreeSpec {
            procs: 2..=2,
            ..TreeSpec::default()
        },
        20,
        Duration::from_secs(10),
    );
}

/// An interactive bash launched in a terminal, restarted in a new one, goes on running
/// builtins and external commands (job control: bash gives the terminal to each command's
/// group and takes it back for its own, which must exist again after the restart: the
/// launched process leads its group again, launcher/src/tree.rs).
#[test]
fn interactive_bash_after_restart() {
    let s = Session::new("bash_i");
    let prog = Prog {
        name: "bash_i".into(),
        program: ckpt_tests::util::find_in_path("bash"),
        args: vec!["--norc".into(), "--noprofile".into(), "-i".into()],
        lines: 0,
    };
    let mut t1 = Term::new(24, 80);
    let mut app = t1.spawn(s.launch_command(&prog), "launch");
    t1.wait_for("the first prompt", WAIT, |t| {
        t.contains("# ") || t.contains("$ ")
    });
    t1.write(b"echo one-$((6*7)); /bin/echo two-$((6*7))\n");
    t1.wait_for("both answers", WAIT, |t| {
        t.contains("one-42") && t.contains("two-42")
    });
    let imgs = s.checkpoint();
    s.kill_computation(&mut app);

    let mut t2 = Term::new(24, 80);
    let mut r = t2.spawn(s.restart_command(&imgs), "restart");
    t2.write(b"echo three-$((6*7))\n");
    t2.wait_for("a builtin's answer", WAIT, |t| t.contains("three-42"));
    t2.write(b"/bin/echo four-$((6*7))\n");
    t2.wait_for("an external command's answer", WAIT, |t| {
        t.contains("four-42")
    });
    t2.write(b"echo five-$((6*7))\n");
    t2.wait_for("bash still reading", WAIT, |t| t.contains("five-42"));
    t2.write(b"exit\n");
    let st = r
        .try_wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("ckpt-restart did not exit: {e}\n{}", t2.text()));
    assert!(
        st.success(),
        "ckpt-restart: {}\n{}",
        describe_status(&st),
        t2.text()
    );
}

/// `script(1)` (util-linux: a pty, signalfd, poll) running bash, which prints paced lines
/// through the pty; script copies them to its stdout. Through the tree cycle, same bytes as a
/// native run.
#[test]
fn script_runs_bash_on_its_pty() {
    tree_scenario(
        Prog {
            name: "script".into(),
            program: ckpt_tests::util::find_in_path("script"),
            args: vec![
                "-q".into(),
                "-e".into(),
                "-c".into(),
                "for i in $(seq 300); do echo line $i; sleep 0.02; done; echo bye".into(),
                "/dev/null".into(),
            ],
            lines: 301,
        },
        TreeSpec {
            procs: 2..=3,
            ..TreeSpec::default()
        },
    );
}

/// ^Z on a restarted job stops `ckpt-restart` too, so the user's interactive shell sees its job
/// stop; `fg` continues it with the terminal. The restart runs from a `bash -i` in terminal 2.
#[test]
fn ctrl_z_and_fg_through_the_users_shell() {
    let s = Session::new("job_control");
    let prog = Prog {
        name: "ticker".into(),
        program: ckpt_tests::util::find_in_path("bash"),
        args: vec![
            "-c".into(),
            "for i in $(seq 100000); do echo tick-$i; sleep 0.05; done".into(),
        ],
        lines: 0,
    };
    let ticks = |t: &str| {
        t.lines()
            .filter_map(|l| l.trim().strip_prefix("tick-")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    };
    let mut t1 = Term::new(24, 80);
    let mut app = t1.spawn(s.launch_command(&prog), "launch");
    t1.wait_for("5 ticks in terminal 1", WAIT, |t| ticks(t) >= 5);
    let imgs = s.checkpoint();
    s.kill_computation(&mut app);

    let mut t2 = Term::new(24, 80);
    let mut shell_cmd = std::process::Command::new(ckpt_tests::util::find_in_path("bash"));
    shell_cmd.args(["--norc", "--noprofile", "-i"]);
    shell_cmd.env("PS1", "user-shell$ ");
    let mut shell = t2.spawn(shell_cmd, "shell");
    t2.wait_for("the shell's prompt", WAIT, |t| t.contains("user-shell$ "));
    let restart = s.restart_command(&imgs);
    let mut line = restart.get_program().to_string_lossy().into_owned();
    for a in restart.get_args() {
        line.push(' ');
        line.push_str(&a.to_string_lossy());
    }
    line.push('\n');
    t2.write(line.as_bytes());
    let before = ticks(&t1.text());
    t2.wait_for("ticks after the restart", WAIT, |t| ticks(t) > before + 3);
    t2.write(b"\x1a");
    t2.wait_for("the shell saying the job stopped", WAIT, |t| {
        t.contains("Stopped")
    });
    // Both ckpt-restart and the restored program are stopped now.
    let stopped_at = ticks(&t2.text());
    let pids: Vec<i32> = s.list().iter().map(|e| e.pid).filter(|&p| p > 0).collect();
    assert!(!pids.is_empty(), "--list shows no restored process");
    for p in &pids {
        let st = ckpt_tests::procs::proc_stat(*p).map(|x| x.state);
        assert_eq!(
            st,
            Some('T'),
            "restored pid {p} is not stopped:\n{}",
            t2.text()
        );
    }
    t2.write(b"fg\n");
    t2.wait_for("ticks again after fg", WAIT, |t| ticks(t) > stopped_at + 3);
    t2.write(b"\x03");
    t2.wait_for("the prompt after ^C", WAIT, |t| {
        t.trim_end().ends_with("user-shell$")
    });
    t2.write(b"exit\n");
    let st = shell
        .try_wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("the shell did not exit: {e}\n{}", t2.text()));
    assert!(
        st.success() || st.code().is_some(),
        "{}",
        describe_status(&st)
    );
}

/// What `tty_eof` prints for each round: its reads of "abc^D^Dx^@y\npar" typed before the
/// trigger and "t\n", "end\n" after.
fn eof_reads(text: &str, round: u32) -> Vec<String> {
    let p = format!("rd {round} ");
    text.lines()
        // The echo of a partial line typed earlier may precede the first one.
        .filter_map(|l| l.find(&p).map(|i| l[i + p.len()..].to_string()))
        .collect()
}

const EOF_READS: [&str; 5] = [
    "n=3 [abc]",
    "n=0 []",
    "n=4 [x\\x00y\\n]",
    "n=5 [part\\n]",
    "n=4 [end\\n]",
];

/// One round of `tty_eof` in terminal `t` (the program waits at "ready <round>"): type the
/// input unless the program types on its own pty (`own`), and wait until the terminal took it
/// (its echo), before any checkpoint.
fn eof_type(t: &Term, round: u32, own: bool) {
    t.wait_for(&format!("ready {round}"), WAIT, |x| {
        x.contains(&format!("ready {round}"))
    });
    if !own {
        t.write(b"abc\x04\x04x\x00y\npar");
        t.wait_for("the echo of the typed input", WAIT, |x| {
            x.matches("x^@y\npar").count() >= round as usize
        });
    }
}

/// Lets round `round` read (its trigger file) and types the rest of the input once the queued
/// part has been read; returns that round's reads.
fn eof_read(s_dir: &std::path::Path, t: &Term, round: u32, own: bool) -> Vec<String> {
    std::fs::write(s_dir.join(format!("trigger{round}")), b"").expect("trigger file");
    if !own {
        t.wait_for("the queued input's reads", WAIT, |x| {
            eof_reads(x, round).len() >= 3
        });
        t.write(b"t\n");
        t.wait_for("the read of the completed line", WAIT, |x| {
            eof_reads(x, round).len() >= 4
        });
        t.write(b"end\n");
    }
    let text = t.wait_for(&format!("done {round}"), WAIT, |x| {
        x.contains(&format!("done {round}"))
    });
    eof_reads(&text, round)
}

/// Input typed on a canonical terminal and not read yet at a checkpoint — a line ended by ^D
/// ("abc" then EOF), a ^D alone (read returns 0), a line with a real NUL byte (^@), a partial
/// line — reads the same after a checkpoint the program resumes from (round 1), and after
/// checkpoint, SIGKILL, restart in a new terminal, checkpoint, SIGKILL, restart in a third
/// terminal (round 2), as in a native run. `own`: the same on a pty the program made.
fn queued_eofs_cycle(name: &str, own: bool) {
    let s = Session::new(name);
    let exe = env!("CKPT_PROG_TTY_EOF");
    let trig = s.dir().join("trigger");
    let mut args = vec![trig.to_string_lossy().into_owned()];
    if own {
        args.push("own".into());
    }
    let want: Vec<String> = EOF_READS.iter().map(|x| x.to_string()).collect();

    // Native: what the kernel gives a program that is never checkpointed.
    let native_dir = s.dir().join("native");
    std::fs::create_dir_all(&native_dir).expect("native dir");
    let mut t0 = Term::new(24, 80);
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(native_dir.join("trigger")).args(&args[1..]);
    let mut native = t0.spawn(cmd, "native");
    for round in 1..=2 {
        eof_type(&t0, round, own);
        let got = eof_read(&native_dir, &t0, round, own);
        assert_eq!(got, want, "native run, round {round}:\n{}", t0.text());
    }
    let st = native
        .try_wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("native run did not exit: {e}\n{}", t0.text()));
    assert!(st.success(), "native: {}", describe_status(&st));

    let prog = Prog {
        name: name.into(),
        program: exe.into(),
        args,
        lines: 0,
    };
    let mut t1 = Term::new(24, 80);
    let mut app = t1.spawn(s.launch_command(&prog), "launch");
    // Round 1: two checkpoints the program resumes from with its input queued.
    eof_type(&t1, 1, own);
    s.checkpoint();
    s.checkpoint();
    let got = eof_read(s.dir(), &t1, 1, own);
    assert_eq!(
        got,
        want,
        "after checkpoints without restart, the program read:\n{}",
        t1.text()
    );
    // Round 2: checkpoint, kill, restart in terminal 2; again into terminal 3.
    eof_type(&t1, 2, own);
    let imgs = s.checkpoint();
    s.kill_computation(&mut app);
    let mut t2 = Term::new(24, 80);
    let mut r = t2.spawn(s.restart_command(&imgs), "restart");
    s.wait_for_pids(1, WAIT);
    let imgs = s.checkpoint();
    // The restarted program's image holds the input, EOFs apart (not as NUL bytes).
    let mut saved = Vec::new();
    for img in &imgs {
        let f = std::fs::File::open(img).expect("open image");
        let h = read_header(&mut flate2::read::MultiGzDecoder::new(f)).expect("image header");
        saved.extend(
            h.terminals
                .iter()
                .map(|t| (t.input.clone(), t.eofs.clone())),
        );
        saved.extend(h.objects.iter().filter_map(|o| match &o.kind {
            ObjKind::Pty(p) => Some((p.to_slave.clone(), p.eofs.clone())),
            _ => None,
        }));
    }
    s.log(format!("saved terminal input (bytes, eofs): {saved:?}"));
    assert!(
        saved.contains(&(b"abcx\0y\npar".to_vec(), vec![3, 3])),
        "no image saved the queued input with its two EOFs: {saved:?}"
    );
    s.kill_computation(&mut r);
    let mut t3 = Term::new(24, 80);
    let mut r = t3.spawn(s.restart_command(&imgs), "restart2");
    s.wait_for_pids(1, WAIT);
    let got = eof_read(s.dir(), &t3, 2, own);
    assert_eq!(
        got,
        want,
        "after two restarts in new terminals, the program read:\n{}",
        t3.text()
    );
    let text = t3.wait_for("bye", WAIT, |x| x.contains("bye"));
    let st = r
        .try_wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("ckpt-restart did not exit: {e}\n{text}"));
    assert!(
        st.success(),
        "ckpt-restart: {}\n{text}",
        describe_status(&st)
    );
}

/// Typed on the terminal the program runs in (the harness's pty): ckpt saves the unread input
/// and puts it into the terminal `ckpt-restart` runs in (`TIOCSTI`).
#[test]
fn queued_eofs_in_the_users_terminal() {
    // Linux >= 6.2 can forbid TIOCSTI (`dev.tty.legacy_tiocsti = 0`): then the input typed
    // ahead stays in the old terminal (documented), and there is nothing to compare.
    if std::fs::read_to_string("/proc/sys/dev/tty/legacy_tiocsti").is_ok_and(|v| v.trim() == "0") {
        eprintln!("skipped: TIOCSTI is disabled on this host (dev.tty.legacy_tiocsti = 0)");
        return;
    }
    queued_eofs_cycle("tty_eof", false);
}

/// Queued on a pty the program made (it writes on the master, reads the slave).
#[test]
fn queued_eofs_in_a_pty_the_program_made() {
    queued_eofs_cycle("tty_eof_own", true);
}
