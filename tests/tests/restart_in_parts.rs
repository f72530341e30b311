//! A restart in parts (issue 5; docs/sockets.md "Restart in parts"): one `ckpt-restart
//! --part` per host, each with its host's images, joining one coordinator; the TCP
//! connections between processes of different parts are rebuilt through the coordinator's
//! name service. Here both "hosts" are this machine.
//!
//! `progs/netpair.c` runs as two separately launched programs of one computation (`netsrv`,
//! `netcli`: copies of the binary, so their images are told apart by name) exchanging
//! checksummed bursts over IPv4 and IPv6 with bytes in flight both ways, plus a connection
//! the server accepts only at the end, which waits in its listener's queue with the client's
//! request and end of file (hidden accept queue and half-close, across parts). Cycle: checkpoint,
//! checkpoint, SIGKILL, restart in two parts (server part first), checkpoint of the restarted
//! computation, SIGKILL, restart in two parts again (client part first, so it waits for the
//! server part through the name service), run to the end; both outputs are compared with a
//! run without ckpt, and include the programs' own check that every socket kept its local
//! and peer address. Also: a part whose partner never comes fails within its timeout,
//! naming the missing process, and the images stay good.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ckpt_tests::{Proc, Prog, Session, assert_same_output, count_lines, describe_status};

const ROUNDS: usize = 90;
const LINES: Duration = Duration::from_secs(60);

fn copy_exe(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(env!("CKPT_PROG_NETPAIR"), &to).expect("copy netpair");
    to
}

fn prog(dir: &Path, role: &str) -> Prog {
    let name = if role == "server" { "netsrv" } else { "netcli" };
    Prog {
        name: name.into(),
        program: dir.join(name),
        args: vec![role.into(), dir.display().to_string(), ROUNDS.to_string()],
        lines: ROUNDS + 2,
    }
}

/// The image of program `name` among `imgs`.
fn image_of(imgs: &[PathBuf], name: &str) -> PathBuf {
    let prefix = format!("ckpt_{name}_");
    imgs.iter()
        .find(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(&prefix))
        })
        .unwrap_or_else(|| panic!("no image of {name} among {imgs:?}"))
        .clone()
}

fn part(s: &Session, img: &Path, label: &str) -> Proc {
    let mut cmd = s.restart_command(&[img.to_path_buf()]);
    cmd.arg("--part");
    s.spawn_to(cmd, label, &s.path(&format!("{label}.stdout")))
}

/// The two programs under ckpt in `<scratch>/run`: (server, client, server's output,
/// client's output), once the server printed `lines` lines.
fn launch_pair(s: &Session, lines: usize) -> (Proc, Proc, PathBuf, PathBuf) {
    let run = s.dir().join("run");
    std::fs::create_dir_all(&run).unwrap();
    copy_exe(&run, "netsrv");
    copy_exe(&run, "netcli");
    let (srv_out, cli_out) = (s.path("srv.out"), s.path("cli.out"));
    let mut srv = s.launch(&prog(&run, "server"), &srv_out);
    let cli = s.launch(&prog(&run, "client"), &cli_out);
    s.wait_lines(&srv_out, lines, LINES, &mut srv);
    (srv, cli, srv_out, cli_out)
}

fn wait_ok(p: &mut Proc, what: &str) {
    let st = p.wait_exit(Duration::from_secs(120));
    assert!(
        st.success(),
        "{what}: {}\n{}",
        describe_status(&st),
        p.stderr_tail()
    );
}

#[test]
fn restart_in_parts_rebuilds_connections_through_the_name_service() {
    let s = Session::new("restart_in_parts");

    // The run without ckpt.
    let native = s.dir().join("native");
    std::fs::create_dir_all(&native).unwrap();
    copy_exe(&native, "netsrv");
    copy_exe(&native, "netcli");
    let (ns_out, nc_out) = (s.path("native-srv.out"), s.path("native-cli.out"));
    let mut ns = s.run_native(&prog(&native, "server"), &ns_out);
    let mut nc = s.run_native(&prog(&native, "client"), &nc_out);
    wait_ok(&mut ns, "native server");
    wait_ok(&mut nc, "native client");

    // The run under ckpt.
    let (mut srv, mut cli, srv_out, cli_out) = launch_pair(&s, 10);
    s.checkpoint();
    let seen = count_lines(&srv_out);
    s.wait_lines(&srv_out, seen + 5, LINES, &mut srv);
    let imgs = s.checkpoint();
    assert_eq!(imgs.len(), 2, "{imgs:?}");
    s.kill_computation(&mut srv);
    let _ = cli.wait_exit(Duration::from_secs(20));

    // Restart in two parts, the server's first.
    let mut a = part(&s, &image_of(&imgs, "netsrv"), "part-srv");
    let mut b = part(&s, &image_of(&imgs, "netcli"), "part-cli");
    let seen = count_lines(&srv_out);
    s.wait_lines(&srv_out, seen + 10, LINES, &mut a);
    s.wait_lines(&cli_out, count_lines(&cli_out) + 5, LINES, &mut b);

    // A checkpoint of the restarted computation; restart it in parts again, the client's
    // part first: it waits in the name service for the server's.
    let imgs = s.checkpoint();
    assert_eq!(imgs.len(), 2, "{imgs:?}");
    s.kill_computation(&mut a);
    let _ = b.wait_exit(Duration::from_secs(20));
    let mut b = part(&s, &image_of(&imgs, "netcli"), "part-cli2");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        b.try_wait().is_none(),
        "the client's part did not wait for the server's: {}",
        b.stderr_tail()
    );
    let mut a = part(&s, &image_of(&imgs, "netsrv"), "part-srv2");
    wait_ok(&mut a, "server part");
    wait_ok(&mut b, "client part");
    assert_same_output(&ns_out, &srv_out);
    assert_same_output(&nc_out, &cli_out);
}

#[test]
fn a_part_without_its_partner_names_the_missing_process() {
    let s = Session::new("restart_part_missing");
    let (mut srv, mut cli, srv_out, cli_out) = launch_pair(&s, 5);
    let imgs = s.checkpoint();
    s.kill_computation(&mut srv);
    let _ = cli.wait_exit(Duration::from_secs(20));

    // Only the server's part: it gives up, naming the client.
    let mut cmd = s.restart_command(&[image_of(&imgs, "netsrv")]);
    cmd.arg("--part").env("CKPT_PART_TIMEOUT", "3");
    let mut a = s.spawn_to(cmd, "lonely-part", &s.path("lonely.stdout"));
    let st = a.wait_exit(Duration::from_secs(30));
    let err = a.stderr_tail();
    assert!(!st.success(), "a lonely part succeeded\n{err}");
    assert!(
        err.contains("netcli") && err.contains("did not arrive within 3 s"),
        "the error does not name the missing process:\n{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "more than one line:\n{err}");

    // The same images, with both parts, still work.
    let mut a = part(&s, &image_of(&imgs, "netsrv"), "part-srv");
    let mut b = part(&s, &image_of(&imgs, "netcli"), "part-cli");
    wait_ok(&mut a, "server part");
    wait_ok(&mut b, "client part");
    assert_eq!(count_lines(&srv_out), ROUNDS + 2);
    assert_eq!(count_lines(&cli_out), ROUNDS + 2);
}
