//! Half-closed connections (issue 5; docs/sockets.md): `progs/halfclose.c` — a child sends a
//! request on TCP, a UNIX stream pair and a UNIX seqpacket pair, shuts down its sending side
//! of all three and waits for the answers; the parent reads each to its end of file only once
//! the harness creates `./go`. The checkpoints are taken while the requests and the ends of
//! file wait unread: checkpoint, checkpoint (the resumed program must not notice), SIGKILL,
//! restart, checkpoint of the restarted tree, SIGKILL, restart, then `go`. The output (how many
//! lines and bytes came before end of file, and the answers) is compared with a run without
//! ckpt.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ckpt_tests::{Proc, Prog, Session, assert_same_output, describe_status};

const LINES: Duration = Duration::from_secs(60);

fn prog() -> Prog {
    Prog {
        name: "halfclose".into(),
        program: PathBuf::from(env!("CKPT_PROG_HALFCLOSE")),
        args: vec!["100".into()],
        lines: 8,
    }
}

/// Waits until `--list` shows `n` live processes, all running (the restart is over).
fn wait_running(s: &Session, n: usize) {
    let deadline = Instant::now() + LINES;
    loop {
        let l = s.list();
        let live: Vec<_> = l.iter().filter(|e| e.alive()).collect();
        if live.len() == n && live.iter().all(|e| e.state == "running") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "wanted {n} running processes, --list shows {l:?}\n{}",
            s.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn go_and_finish(s: &Session, dir: &Path, p: &mut Proc, out: &Path) {
    std::fs::write(dir.join("go"), "").unwrap();
    let st = p.wait_exit(Duration::from_secs(60));
    assert!(
        st.success(),
        "{}: {}\n{}\noutput:\n{}",
        p.label(),
        describe_status(&st),
        p.stderr_tail(),
        std::fs::read_to_string(out).unwrap_or_default()
    );
    let _ = s;
}

#[test]
fn half_closed_connections_keep_their_bytes_and_end_of_file() {
    let s = Session::new("half_close");
    let prog = prog();

    let native = s.dir().join("native");
    std::fs::create_dir_all(&native).unwrap();
    let native_out = s.path("native.out");
    let mut cmd = s.command(&prog.program);
    cmd.args(&prog.args).current_dir(&native);
    let mut n = s.spawn_to(cmd, "native", &native_out);
    s.wait_lines(&native_out, 2, LINES, &mut n);
    go_and_finish(&s, &native, &mut n, &native_out);

    let run = s.dir().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let out = s.path("ckpt.out");
    let mut cmd = s.launch_command(&prog);
    cmd.current_dir(&run);
    let mut app = s.spawn_to(cmd, "launch", &out);
    s.wait_lines(&out, 2, LINES, &mut app);
    wait_running(&s, 2);
    s.checkpoint();
    let imgs = s.checkpoint();
    assert_eq!(imgs.len(), 2, "{imgs:?}");
    s.kill_computation(&mut app);

    let mut r = s.restart(&imgs, &s.path("restart1.stdout"));
    wait_running(&s, 2);
    let imgs = s.checkpoint();
    s.kill_computation(&mut r);

    let mut r = s.restart(&imgs, &s.path("restart2.stdout"));
    wait_running(&s, 2);
    go_and_finish(&s, &run, &mut r, &out);
    assert_same_output(&native_out, &out);
}
