//! Sockets between processes of the computation (issue 5; docs/sockets.md): `progs/sockets.c`
//! — a parent and a child over TCP (IPv4 and IPv6), a named UNIX stream connection, stream,
//! seqpacket and datagram socketpairs and a connected UDP socket, with bursts in flight —
//! through the tree cycle of `ckpt_tests::tree` (checkpoints, SIGKILL, restart, checkpoint of
//! the restarted tree, SIGKILL, restart, output compared with a native run, which includes
//! the program's own check that every socket kept its local and peer address). Also: a
//! listening port taken at restart time is a clear error naming it, and the same images
//! restart once it is free.

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

#[test]
fn sockets_between_processes() {
    tree_scenario(
        sockets_prog(80),
        TreeSpec {
            procs: 2..=2,
            stable: true,
            ..TreeSpec::default()
        },
    );
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
