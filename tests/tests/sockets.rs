//! Sockets between processes of the computation (issue 5; docs/sockets.md): `progs/sockets.c`
//! — a parent and a child over TCP (IPv4 and IPv6), a named UNIX stream connection, stream,
//! seqpacket and datagram socketpairs and a connected UDP socket, with bursts in flight —
//! through the tree cycle of `ckpt_tests::tree` (checkpoints, SIGKILL, restart, checkpoint of
//! the restarted tree, SIGKILL, restart, output compared with a native run, which includes
//! the program's own check that every socket kept its local and peer address). Also: a
//! listening port taken at restart time is a clear error naming it, and the same images
//! restart once it is free. And `progs/pending.c`: connections not accepted yet, with bytes
//! already sent on them, through restarts and resumes (the hidden accept queue).

use std::path::PathBuf;
use std::time::Duration;

use ckpt_tests::tree::{TreeSpec, tree_scenario};
use ckpt_tests::{Prog, Session, count_lines, describe_status};

fn sockets_prog(rounds: usize) -> Prog {
    Prog {
        name: "sockets".into(),
        program: PathBuf::from(env!("CKPT_PROG_SOCKETS")),
        args: vec![rounds.to_string()],
        lines: rounds + 2,
    }
}

/// The tree cycle for a program of two processes that live from start to end.
fn two_process_cycle(prog: Prog) {
    tree_scenario(
        prog,
        TreeSpec {
            procs: 2..=2,
            stable: true,
            ..TreeSpec::default()
        },
    );
}

/// `progs/backpressure.c` with `args`, `lines` lines of output.
fn backpressure(args: &[&str], lines: usize) -> Prog {
    Prog {
        name: "backpressure".into(),
        program: PathBuf::from(env!("CKPT_PROG_BACKPRESSURE")),
        args: args.iter().map(|a| a.to_string()).collect(),
        lines,
    }
}

#[test]
fn sockets_between_processes() {
    two_process_cycle(sockets_prog(80));
}

/// A fast writer and a slow reader: at every checkpoint the reader's window is full and the
/// writer's send queue holds megabytes the reader has not received (nothing can read them
/// back out of the writer). The reader takes them out at checkpoint time and they are put
/// back on resume or restart (`plugins/src/tcp_backlog.rs`); the reader checks every counter.
/// Through the tree cycle (checkpoints resumed from, SIGKILL, restart, restart again).
#[test]
fn a_slow_readers_backlog_survives() {
    two_process_cycle(backpressure(&["48"], 49));
}

/// The same with the connection stuck both ways (each process writes as fast as it can and
/// reads slowly): both ends take their bytes out at checkpoint time and swap them back.
#[test]
fn a_backlog_both_ways_survives() {
    two_process_cycle(backpressure(&["32", "both"], 34));
}

/// A fast writer in the computation and a slow reader outside it (the test): the writer's
/// bytes are stuck at every checkpoint, but nobody in the computation can take them, so the
/// connection must be left exactly as it was — no frame of the backlog exchange may ever
/// reach an outside peer. Two checkpoints the writer resumes from; the reader checks every
/// counter of the whole stream.
#[test]
fn a_slow_outside_reader_is_left_alone() {
    use std::io::Read;
    const MIB: usize = 32;
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("test reader");
    let port = server.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = progress.clone();
    std::thread::spawn(move || {
        let verdict = (|| -> Result<usize, String> {
            let (mut c, _) = server.accept().map_err(|e| e.to_string())?;
            c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let (mut want, mut got, mut part) = (0u32, 0usize, Vec::new());
            let mut buf = vec![0u8; 65536];
            while got < MIB << 20 {
                std::thread::sleep(Duration::from_millis(5));
                let n = c
                    .read(&mut buf)
                    .map_err(|e| format!("read after {got} bytes: {e}"))?;
                if n == 0 {
                    return Err(format!("end of file after {got} bytes"));
                }
                part.extend_from_slice(&buf[..n]);
                got += n;
                seen.store(got, std::sync::atomic::Ordering::Relaxed);
                let whole = part.len() / 4 * 4;
                for w in part[..whole].chunks(4) {
                    let v = u32::from_ne_bytes(w.try_into().unwrap());
                    if v != want {
                        return Err(format!("counter {v} where {want} was due"));
                    }
                    want += 1;
                }
                part.drain(..whole);
            }
            Ok(got)
        })();
        let _ = tx.send(verdict);
    });
    let prog = backpressure(&[&MIB.to_string(), &port.to_string()], 1);
    let s = Session::new("outside_reader");
    let out = s.path("ckpt.out");
    let mut app = s.launch(&prog, &out);
    // A checkpoint once the reader has 2 MiB, another at 8 MiB (the writer is far ahead).
    for mib in [2, 8] {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while progress.load(std::sync::atomic::Ordering::Relaxed) < mib << 20 {
            assert!(
                std::time::Instant::now() < deadline,
                "the reader got {} bytes in 30 s\n{}",
                progress.load(std::sync::atomic::Ordering::Relaxed),
                app.stderr_tail()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        s.checkpoint();
    }
    let st = app.wait_exit(Duration::from_secs(60));
    assert!(
        st.success(),
        "{}\n{}",
        describe_status(&st),
        app.stderr_tail()
    );
    let verdict = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the reader thread did not finish");
    assert_eq!(verdict, Ok(MIB << 20), "the outside reader's stream");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "writer done\n");
}

#[test]
fn taken_port_is_named_and_the_images_stay_good() {
    let prog = sockets_prog(60);
    let s = Session::new("sockets_port_taken");
    let out = s.path("ckpt.out");
    let mut app = s.launch(&prog, &out);
    s.wait_lines(&out, 10, Duration::from_secs(30), &mut app);
    let imgs = s.checkpoint();
    s.kill_computation(&mut app);
    let at = count_lines(&out);
    let port: u16 = std::fs::read_to_string(s.dir().join("srv.port"))
        .expect("srv.port")
        .trim()
        .parse()
        .expect("port number");

    // Someone else listens on the port now.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("cannot take port {port} for the test: {e}"));
    let mut r = s.restart(&imgs, &s.path("restart1.stdout"));
    let st = r.wait_exit(Duration::from_secs(30));
    let err = r.stderr_tail();
    assert!(
        !st.success(),
        "ckpt-restart succeeded although port {port} was taken ({})\n{err}",
        describe_status(&st)
    );
    let want = format!("127.0.0.1:{port}");
    assert!(
        err.contains(&want) && err.contains("cannot listen"),
        "ckpt-restart's error does not name {want}:\n{err}"
    );
    assert_eq!(
        count_lines(&out),
        at,
        "the failed restart ran the program (it printed lines)"
    );

    // Port free again: the same images restart and the program finishes its run.
    drop(squatter);
    let mut r = s.restart(&imgs, &s.path("restart2.stdout"));
    let st = r.wait_exit(Duration::from_secs(60));
    assert!(
        st.success(),
        "restart after freeing the port: {}\n{}\n{}",
        describe_status(&st),
        r.stderr_tail(),
        s.diagnostics()
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(count_lines(&out), prog.lines, "output:\n{text}");
    assert!(
        text.lines().all(|l| !l.contains("CHANGED")),
        "a socket's address changed:\n{text}"
    );
    assert!(text.ends_with("child exit 7\ndone\n"), "output:\n{text}");
}

/// A connection to a server outside the computation comes back closed: the lines the program
/// had not read yet at checkpoint time, then end of file; a send fails with EPIPE. Its own
/// listener serves a new outside client after the restart.
#[test]
fn outside_peer_comes_back_closed_and_the_listener_serves() {
    use std::io::{BufRead, BufReader, Write};
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("test server");
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        // One connection: four lines at once, then held open (the test process ends it).
        if let Ok((mut c, _)) = server.accept() {
            let _ = c.write_all(b"hello 0\nhello 1\nhello 2\nhello 3\n");
            std::thread::sleep(Duration::from_secs(120));
        }
    });
    let prog = Prog {
        name: "outside_peer".into(),
        program: PathBuf::from(env!("CKPT_PROG_OUTSIDE_PEER")),
        args: vec![port.to_string()],
        lines: 8,
    };
    let s = Session::new("outside_peer");
    let out = s.path("ckpt.out");
    let mut app = s.launch(&prog, &out);
    // "connected" and the first line read: three lines still wait in the socket.
    s.wait_lines(&out, 2, Duration::from_secs(30), &mut app);
    let imgs = s.checkpoint();
    s.kill_computation(&mut app);
    let mut r = s.restart(&imgs, &s.path("restart.stdout"));
    s.wait_lines(&out, 7, Duration::from_secs(30), &mut r);
    let lport: u16 = std::fs::read_to_string(s.dir().join("listen.port"))
        .expect("listen.port")
        .trim()
        .parse()
        .expect("port number");
    let mut c = std::net::TcpStream::connect(("127.0.0.1", lport))
        .unwrap_or_else(|e| panic!("the restarted program's listener 127.0.0.1:{lport}: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(b"ping\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&c).read_line(&mut answer).unwrap();
    assert_eq!(answer, "echo ping\n");
    let st = r.wait_exit(Duration::from_secs(30));
    let err = r.stderr_tail();
    assert!(st.success(), "{}\n{err}", describe_status(&st));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        text,
        "connected\ngot hello 0\ngot hello 1\ngot hello 2\ngot hello 3\neof\nsend: Broken pipe\nserved ping\n"
    );
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("outside the computation"),
        "ckpt-restart did not say which connection came back closed:\n{err}"
    );
}

/// How a reconnect test makes the new connection to the outside server at restart.
enum Reconnect {
    /// `CKPT_RECONNECT=HOST:PORT` in ckpt-restart's environment: a plain new connection.
    Env,
    /// A plugin library (`--with-plugin progs/reconnect_plugin.c`) that sends "resume" first.
    Plugin,
}

/// The shared run of the reconnect tests: an outside server (first connection: two lines,
/// held open; second, after the restart: "again", or with `handshake` only after reading
/// "resume"), `progs/outside_peer.c` under ckpt connected to it, checkpoint after its first
/// line, kill, restart. The program's output must show the new connection ("got again") and
/// its listener must serve an outside client. Returns (ckpt-restart's stderr, the program's).
fn reconnect_run(name: &str, how: Reconnect) -> (String, String) {
    use std::io::{BufRead, BufReader, Write};
    let handshake = matches!(how, Reconnect::Plugin);
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("test server");
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut c, _)) = server.accept() {
            let _ = c.write_all(b"hello 0\nhello 1\n");
            if let Ok((d, _)) = server.accept() {
                let mut answer: &[u8] = b"again\n";
                if handshake {
                    let mut hs = String::new();
                    let _ = BufReader::new(&d).read_line(&mut hs);
                    if hs != "resume\n" {
                        answer = b"no handshake\n";
                    }
                }
                let _ = (&d).write_all(answer);
            }
            drop(c);
        }
    });
    let s = Session::new(name);
    let out = s.path("ckpt.out");
    let mut cmd = s.command(ckpt_tests::bin("ckpt-launch"));
    cmd.args(["--coord-host", "127.0.0.1", "--coord-port"])
        .arg(s.port().to_string())
        .arg("--ckpt-dir")
        .arg(s.ckpt_dir());
    if handshake {
        cmd.arg("--with-plugin")
            .arg(env!("CKPT_PROG_RECONNECT_PLUGIN"));
    }
    cmd.arg(env!("CKPT_PROG_OUTSIDE_PEER"))
        .arg(port.to_string());
    let mut app = s.spawn_to(cmd, "launch", &out);
    s.wait_lines(&out, 2, Duration::from_secs(30), &mut app);
    let imgs = s.checkpoint();
    s.kill_computation(&mut app);
    let mut cmd = s.restart_command(&imgs);
    if !handshake {
        cmd.env("CKPT_RECONNECT", format!("127.0.0.1:{port}"));
    }
    let mut r = s.spawn_to(cmd, "restart", &s.path("restart.stdout"));
    s.wait_lines(&out, 5, Duration::from_secs(30), &mut r);
    let lport: u16 = std::fs::read_to_string(s.dir().join("listen.port"))
        .expect("listen.port")
        .trim()
        .parse()
        .expect("port number");
    let mut c = std::net::TcpStream::connect(("127.0.0.1", lport)).expect("listener");
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(b"pong\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&c).read_line(&mut answer).unwrap();
    let st = r.wait_exit(Duration::from_secs(30));
    let err = r.stderr_tail();
    assert!(st.success(), "{}\n{err}", describe_status(&st));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        text, "connected\ngot hello 0\ngot again\neof\nsend: ok\nserved pong\n",
        "stderr:\n{err}"
    );
    // The restored program's stderr is the launch's.
    let prog_err = std::fs::read_to_string(app.stderr_path().expect("launch stderr")).unwrap();
    (err, prog_err)
}

/// The plugin hook for outside peers: a library loaded with `ckpt-launch --with-plugin`
/// (`progs/reconnect_plugin.c`) exports `ckpt_plugin_reconnect`; at restart it makes the closed
/// connection to the outside server anew and re-runs a handshake ("resume") before the program
/// runs again. The server answers on the new connection only if the handshake came first.
#[test]
fn plugin_hook_reconnects_an_outside_peer() {
    let (_, prog_err) = reconnect_run("reconnect_plugin", Reconnect::Plugin);
    assert!(
        prog_err.contains("reconnect_plugin: fd")
            && prog_err.contains("a plugin made the connection to 127.0.0.1"),
        "the plugin's line and ckpt's warning are missing:\n{prog_err}"
    );
}

/// `CKPT_RECONNECT=HOST:PORT`: the connection to that outside peer is made anew at restart
/// (the unread bytes of the old one are dropped, with a warning): the program reads what the
/// server sends on the new connection.
#[test]
fn reconnect_hook_makes_a_new_connection() {
    let (err, _) = reconnect_run("reconnect", Reconnect::Env);
    assert!(err.contains("reconnected to 127.0.0.1"), "{err}");
}

/// A real server and its client: bash starting redis-server (epoll, a listener, background
/// threads) and a Python client talking to it over TCP, through the tree cycle.
#[test]
fn redis_server_and_a_client() {
    // Panics naming it if redis-server is missing (.ci/run installs it).
    ckpt_tests::util::find_in_path("redis-server");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("progs/redis_app.sh");
    tree_scenario(
        Prog {
            name: "redis_app".into(),
            program: ckpt_tests::util::find_in_path("bash"),
            args: vec![script.to_string_lossy().into_owned(), "250".into()],
            lines: 253,
        },
        TreeSpec {
            procs: 3..=4,
            ..TreeSpec::default()
        },
    );
}

/// A pre-forked server: two workers share one listening socket (one description across
/// fork) and serve the connections they accept with poll; a client process keeps four
/// connections busy. Through the tree cycle.
#[test]
fn preforked_workers_share_a_listener() {
    tree_scenario(
        Prog {
            name: "prefork".into(),
            program: PathBuf::from(env!("CKPT_PROG_PREFORK")),
            args: vec!["250".into()],
            lines: 252,
        },
        TreeSpec {
            procs: 4..=4,
            stable: true,
            ..TreeSpec::default()
        },
    );
}

// ---- connections not accepted yet (progs/pending.c) ----------------------------------------

/// `pending MODE`: 8 client processes connect to 4 listeners (TCP over IPv4 and IPv6, UNIX
/// stream, UNIX seqpacket) and send 21 messages each; the server accepts only once the file
/// `go` exists in its directory. 22 lines.
fn pending_prog(mode: &str) -> Prog {
    Prog {
        name: "pending".into(),
        program: PathBuf::from(env!("CKPT_PROG_PENDING")),
        args: vec![mode.into()],
        lines: 22,
    }
}

const PENDING_PROCS: usize = 9;

/// Runs `prog` without ckpt in `<scratch>/native-run` (another tag, so that killing the
/// computation never touches it), `go` created once it is ready; returns its output file.
fn pending_native(s: &Session, prog: &Prog) -> PathBuf {
    let dir = s.path("native-run");
    std::fs::create_dir_all(&dir).unwrap();
    let out = s.path("native.out");
    let mut cmd = s.command(&prog.program);
    cmd.args(&prog.args)
        .current_dir(&dir)
        .env(ckpt_tests::session::TAG_VAR, format!("{}-native", s.tag()));
    let mut p = s.spawn_to(cmd, "native-pending", &out);
    s.wait_lines(&out, 1, Duration::from_secs(60), &mut p);
    std::fs::write(dir.join("go"), b"").unwrap();
    let st = p.wait_exit(Duration::from_secs(60));
    assert!(st.success(), "native run: {}", describe_status(&st));
    assert_eq!(count_lines(&out), prog.lines, "native run output");
    out
}

/// Lets the server of the run under ckpt (`dir`) accept (`go`), waits for `root` to exit
/// successfully, and compares its output `out` with the native run's.
fn pending_finish(
    s: &Session,
    dir: &std::path::Path,
    root: &mut ckpt_tests::Proc,
    native: &std::path::Path,
    out: &std::path::Path,
) {
    std::fs::write(dir.join("go"), b"").unwrap();
    let st = root.wait_exit(Duration::from_secs(120));
    assert!(
        st.success(),
        "{}: {}\n{}\n{}",
        root.label(),
        describe_status(&st),
        root.stderr_tail(),
        s.diagnostics()
    );
    ckpt_tests::assert_same_output(native, out);
}

/// Launches `prog` under ckpt in `<scratch>/ckpt-run`; returns (root, run dir, output file)
/// once every client has sent its messages (the server printed "ready").
fn pending_launch(s: &Session, prog: &Prog) -> (ckpt_tests::Proc, PathBuf, PathBuf) {
    let dir = s.path("ckpt-run");
    std::fs::create_dir_all(&dir).unwrap();
    let out = s.path("ckpt.out");
    let mut cmd = s.launch_command(prog);
    cmd.current_dir(&dir);
    let mut app = s.spawn_to(cmd, "launch-pending", &out);
    s.wait_lines(&out, 1, Duration::from_secs(60), &mut app);
    s.wait_for_pids(PENDING_PROCS, Duration::from_secs(30));
    (app, dir, out)
}

/// Checkpoints the whole computation (one image per process) and checks that no checkpoint
/// warning says bytes are lost.
fn pending_checkpoint(s: &Session, what: &str) -> Vec<PathBuf> {
    let out = s.ckpt_command(&["--checkpoint"], Duration::from_secs(60));
    assert!(
        out.success(),
        "{what}: checkpoint failed:\n{out}\n{}",
        s.diagnostics()
    );
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        !all.contains("lost"),
        "{what}: the checkpoint warns about lost bytes:\n{out}"
    );
    let imgs: Vec<PathBuf> = out
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let p = PathBuf::from(l);
            if p.is_absolute() || s.dir().join(&p).exists() {
                s.dir().join(p)
            } else {
                s.ckpt_dir().join(p)
            }
        })
        .collect();
    assert_eq!(imgs.len(), PENDING_PROCS, "{what}: images {imgs:?}\n{out}");
    s.log(format!("{what}: {imgs:?}"));
    imgs
}

/// Connections waiting in the accept queues, with every byte their clients sent, survive
/// checkpoint → SIGKILL → restart → checkpoint → SIGKILL → restart (a restart of a restarted
/// computation, whose queues hold the placeholders of the first checkpoint); then the server
/// polls its listeners and accepts: the same output as a native run — every message, each
/// exactly once, in the order sent, accept order and the clients' addresses as before.
#[test]
fn pending_connections_keep_their_bytes_across_restarts() {
    pending_restarts("pending_restart", false);
}

/// The same with restarts that give the processes new pids (`CKPT_NO_NAMESPACES=1`).
#[test]
fn pending_connections_keep_their_bytes_across_restarts_with_new_pids() {
    pending_restarts("pending_restart_no_ns", true);
}

fn pending_restarts(name: &str, new_pids: bool) {
    let s = Session::new(name);
    let prog = pending_prog("poll");
    let native = pending_native(&s, &prog);
    let (mut app, dir, out) = pending_launch(&s, &prog);
    let restart = |imgs: &[PathBuf], stdout: &str| {
        let mut cmd = s.restart_command(imgs);
        if new_pids {
            cmd.env("CKPT_NO_NAMESPACES", "1");
        }
        s.spawn_to(cmd, "restart", &s.path(stdout))
    };

    let imgs = pending_checkpoint(&s, "checkpoint 1");
    s.kill_computation(&mut app);
    let mut r = restart(&imgs, "restart1.stdout");
    s.wait_for_pids(PENDING_PROCS, Duration::from_secs(60));

    let imgs = pending_checkpoint(&s, "checkpoint 2 (of the restarted tree)");
    s.kill_computation(&mut r);
    let mut r = restart(&imgs, "restart2.stdout");
    s.wait_for_pids(PENDING_PROCS, Duration::from_secs(60));

    pending_finish(&s, &dir, &mut r, &native, &out);
}

/// The same connections through checkpoints the program resumes from (no kill): the
/// placeholders are swapped for the hidden connections transparently — edge-triggered epoll
/// on non-blocking listeners registered before the connections came, `accept4` with
/// `SOCK_NONBLOCK | SOCK_CLOEXEC` (the flags must be the caller's) — including a second
/// checkpoint whose queues hold the first one's placeholders. Then a checkpoint, kill and
/// restart of that state.
#[test]
fn pending_connections_swap_in_on_resume() {
    let s = Session::new("pending_resume");
    let prog = pending_prog("epoll");
    let native = pending_native(&s, &prog);
    let (mut app, dir, out) = pending_launch(&s, &prog);

    pending_checkpoint(&s, "checkpoint 1");
    let imgs = pending_checkpoint(&s, "checkpoint 2 (placeholders in the queues)");
    s.kill_computation(&mut app);
    let mut r = s.restart(&imgs, &s.path("restart1.stdout"));
    s.wait_for_pids(PENDING_PROCS, Duration::from_secs(60));
    pending_checkpoint(&s, "checkpoint 3 (of the restarted tree, resumed)");

    pending_finish(&s, &dir, &mut r, &native, &out);
}

/// Resume only, never killed: the first run's own kernel objects all along.
#[test]
fn pending_connections_after_a_plain_resume() {
    let s = Session::new("pending_plain_resume");
    let prog = pending_prog("poll");
    let native = pending_native(&s, &prog);
    let (mut app, dir, out) = pending_launch(&s, &prog);
    pending_checkpoint(&s, "checkpoint 1");
    pending_checkpoint(&s, "checkpoint 2");
    pending_finish(&s, &dir, &mut app, &native, &out);
}
