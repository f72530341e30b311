//! Integration tests of the real `ckpt-coordinator` binary over raw TCP: robustness against
//! garbage, the hello rules, restart adoption, kill/quit, `--daemon` and `--exit-on-last`.
//! (Checkpoint conversations driven by `ckpt-command` are in `launcher/tests/cli.rs`.)

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ckpt_format::wire::{self, Msg};
use support::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ckpt-coordinator"))
}

fn status(port: u16) -> Msg {
    Conn::command(port).request(&Msg::CmdStatus)
}

fn error_of(m: Msg) -> String {
    match m {
        Msg::Error { message } => message,
        other => panic!("expected Error, got {other:?}"),
    }
}

#[test]
fn garbage_gets_an_error_and_others_keep_being_served() {
    let coord = Coord::start(bin(), &[]);
    let (_w, (comp, vpid, _)) = worker(coord.port, 77, "survivor");
    assert_eq!(vpid, 1);

    // Text that is not a frame at all (its "length" is > 16 MiB).
    let mut g = Conn::open(coord.port);
    g.send_raw(b"GET / HTTP/1.0\r\n\r\n");
    assert!(error_of(g.recv()).contains("exceeds"), "{:?}", g.seen);
    g.expect_closed();

    // A frame whose body is not msgpack.
    let mut g = Conn::open(coord.port);
    g.send_raw(&[0, 0, 0, 4, 0xc1, 0xc1, 0xc1, 0xc1]);
    assert!(error_of(g.recv()).contains("undecodable"));
    g.expect_closed();

    // A frame of another protocol version.
    #[derive(serde::Serialize)]
    struct F {
        version: u16,
        msg: Msg,
    }
    let body = rmp_serde::to_vec_named(&F {
        version: 99,
        msg: Msg::HelloCommand,
    })
    .unwrap();
    let mut g = Conn::open(coord.port);
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend(body);
    g.send_raw(&bytes);
    assert!(error_of(g.recv()).contains("protocol version 99"));
    g.expect_closed();

    // Garbage from an established command connection is fatal for it only.
    let mut c = Conn::command(coord.port);
    c.send_raw(&[0, 0, 0, 1, 0xc1]);
    assert!(error_of(c.recv()).contains("undecodable"));
    c.expect_closed();

    // The coordinator still serves, and the worker is still there.
    match status(coord.port) {
        Msg::Status {
            comp_id, workers, ..
        } => {
            assert_eq!(comp_id, Some(comp));
            assert_eq!(workers.len(), 1);
            assert_eq!(workers[0].program, "survivor");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn first_frame_must_be_a_hello() {
    let coord = Coord::start(bin(), &[]);
    let mut c = Conn::open(coord.port);
    c.send(&Msg::CmdStatus);
    assert!(error_of(c.recv()).contains("HelloWorker or HelloCommand"));
    c.expect_closed();

    // Silence: Error after the 5 s hello timeout, then the connection is dropped.
    let mut c = Conn::open(coord.port);
    let t0 = std::time::Instant::now();
    match c.try_recv(Duration::from_secs(10)) {
        Ok(Msg::Error { message }) => assert!(message.contains("within 5 s"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() >= Duration::from_secs(4), "{:?}", t0.elapsed());
    c.expect_closed();
}

#[test]
fn unexpected_messages_are_answered_and_the_connection_stays() {
    let coord = Coord::start(bin(), &[]);
    let mut c = Conn::command(coord.port);
    assert!(
        error_of(c.request(&Msg::Barrier {
            name: "x".into(),
            data: None
        }))
        .contains("unexpected")
    );
    assert!(matches!(c.request(&Msg::CmdStatus), Msg::Status { .. }));
}

#[test]
fn restart_adoption_over_sockets() {
    let coord = Coord::start(bin(), &["--timeout", "20"]);
    let comp = 0x1234_5678_9abc;
    let mut cmd = Conn::command(coord.port);
    assert_eq!(
        cmd.request(&Msg::CmdRestart {
            comp_id: comp,
            num_peers: 2,
            generation: 5,
            part_of: None,
        }),
        Msg::Ok
    );
    let restarting = |vpid: u64, c: u64| Msg::HelloWorker {
        comp_id: Some(c),
        vpid: Some(vpid),
        restarting: true,
        num_peers: 2,
        generation: 5,
        pid: 500 + vpid as i32,
        host: "h".into(),
        program: format!("r{vpid}"),
        join: Default::default(),
        parent: None,
    };
    let mut a = Conn::open(coord.port);
    assert_eq!(
        a.request(&restarting(2, comp)),
        Msg::Welcome {
            comp_id: comp,
            vpid: 2,
            generation: 5
        }
    );
    // Another computation is turned away with a hint.
    let mut x = Conn::open(coord.port);
    let e = error_of(x.request(&restarting(1, comp + 1)));
    assert!(
        e.contains("start another coordinator with --coord-port"),
        "{e}"
    );
    x.expect_closed();
    // A second CmdRestart for a different computation is refused.
    let mut cmd2 = Conn::command(coord.port);
    let e = error_of(cmd2.request(&Msg::CmdRestart {
        comp_id: 99,
        num_peers: 1,
        generation: 0,
        part_of: None,
    }));
    assert!(e.contains("use another --coord-port"), "{e}");

    a.send(&Msg::Barrier {
        name: "restart".into(),
        data: None,
    });
    assert!(
        a.try_recv(Duration::from_millis(300)).is_err(),
        "released early: {:?}",
        a.seen
    );
    let mut b = Conn::open(coord.port);
    assert!(matches!(
        b.request(&restarting(1, comp)),
        Msg::Welcome { vpid: 1, .. }
    ));
    b.send(&Msg::Barrier {
        name: "restart".into(),
        data: None,
    });
    for c in [&mut a, &mut b] {
        assert_eq!(
            c.recv(),
            Msg::BarrierReleased {
                name: "restart".into(),
                data: Vec::new()
            }
        );
    }
    match status(coord.port) {
        Msg::Status {
            comp_id,
            generation,
            state,
            workers,
        } => {
            assert_eq!((comp_id, generation), (Some(comp), 5));
            assert_eq!(state, "restarting");
            assert_eq!(workers.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    a.send(&Msg::Resumed { generation: 5 });
    b.send(&Msg::Resumed { generation: 5 });
    wait_for(
        "state running",
        WAIT,
        || match status(coord.port) {
            Msg::Status { state, .. } if state == "running" => Some(()),
            _ => None,
        },
        || format!("{:?}", status(coord.port)),
    );
    // A new process after the restart gets a vpid above the restored ones.
    let (_n, (c, v, g)) = worker(coord.port, 9, "new");
    assert_eq!((c, v, g), (comp, 3, 5));
}

#[test]
fn kill_and_quit() {
    let mut coord = Coord::start(bin(), &[]);
    let (mut w1, _) = worker(coord.port, 1, "a");
    let (mut w2, _) = worker(coord.port, 2, "b");
    assert_eq!(Conn::command(coord.port).request(&Msg::CmdKill), Msg::Ok);
    assert_eq!(w1.recv(), Msg::Kill);
    assert_eq!(w2.recv(), Msg::Kill);
    // Kill does not stop the coordinator.
    assert!(matches!(status(coord.port), Msg::Status { .. }));
    assert_eq!(Conn::command(coord.port).request(&Msg::CmdQuit), Msg::Ok);
    assert_eq!(w1.recv(), Msg::Kill);
    let st = coord.wait_exit(WAIT);
    assert!(st.success(), "{st}");
    w1.expect_closed();
}

#[test]
fn daemon_reports_ready_and_exits_after_the_last_client() {
    let dir = TempDir::new("daemon");
    let port_file = dir.path().join("port");
    let log = dir.path().join("log");
    // output() reads stdout/stderr to EOF: it returns only if the daemon child does not
    // keep them open.
    let out = Command::new(bin())
        .args(["--daemon", "--exit-on-last", "--port", "0", "--port-file"])
        .arg(&port_file)
        .arg("--log")
        .arg(&log)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The parent exited only after the child listened: the port file is already there.
    let port: u16 = std::fs::read_to_string(&port_file)
        .expect("port file written before the parent exits")
        .trim()
        .parse()
        .unwrap();
    let mut c = Conn::command(port);
    assert!(matches!(c.request(&Msg::CmdStatus), Msg::Status { .. }));
    // While a client is connected it stays up (longer than the 2 s grace).
    std::thread::sleep(Duration::from_millis(2500));
    assert!(matches!(c.request(&Msg::CmdStatus), Msg::Status { .. }));
    drop(c);
    wait_for(
        "the daemon to exit after its last client",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|l| l.contains("(--exit-on-last)"))
        },
        || std::fs::read_to_string(&log).unwrap_or_default(),
    );
    wait_for(
        "the port to close",
        Duration::from_secs(10),
        || (!listening(port)).then_some(()),
        || "still listening".into(),
    );
}

#[test]
fn daemon_reports_bind_errors() {
    let coord = Coord::start(bin(), &[]);
    let out = Command::new(bin())
        .args(["--daemon", "--port"])
        .arg(coord.port.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "ckpt-coordinator: cannot listen on 127.0.0.1:{}: Address already in use\n",
            coord.port
        )
    );
}

#[test]
fn frames_over_the_limit_are_refused_without_reading_them() {
    let coord = Coord::start(bin(), &[]);
    let mut c = Conn::open(coord.port);
    c.send_raw(&((wire::MAX_FRAME as u32) + 1).to_be_bytes());
    assert!(error_of(c.recv()).contains("exceeds"));
    c.expect_closed();
}
