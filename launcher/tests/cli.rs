//! Integration tests of `ckpt-command` and `ckpt-launch` against the real `ckpt-coordinator`
//! with fake workers (threads speaking the worker side of the protocol).
//!
//! `ckpt-coordinator` belongs to another package: it is taken from the same target directory
//! (`cargo test -p ckpt-coordinator -p ckpt-launcher` builds both), and the tests refuse to
//! run with a copy older than the coordinator's sources.

#[path = "../../coordinator/tests/support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use ckpt_format::wire::Msg;
use support::*;

fn command_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ckpt-command"))
}

fn launch_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ckpt-launch"))
}

fn newest_mtime(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        let t = if m.is_dir() {
            newest_mtime(&e.path())
        } else if e.file_name() == "tests.rs" {
            // Unit tests are not in the binary: editing them does not rebuild it.
            continue;
        } else {
            m.modified().unwrap()
        };
        newest = newest.max(t);
    }
    newest
}

/// `ckpt-coordinator` next to `ckpt-command` in the target directory.
fn coord_bin() -> PathBuf {
    let bin = command_bin().with_file_name("ckpt-coordinator");
    let Ok(meta) = std::fs::metadata(&bin) else {
        panic!(
            "{} not found: run `cargo test -p ckpt-coordinator -p ckpt-launcher` \
             (or `cargo build -p ckpt-coordinator`) first",
            bin.display()
        );
    };
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../coordinator/src");
    assert!(
        meta.modified().unwrap() >= newest_mtime(&src),
        "{} is older than {}: run `cargo build -p ckpt-coordinator`",
        bin.display(),
        src.display()
    );
    bin
}

fn ckpt_command(port: u16, args: &[&str]) -> Output {
    Command::new(command_bin())
        .args(["--coord-port", &port.to_string()])
        .args(args)
        .env_remove("CKPT_COORD_HOST")
        .env_remove("CKPT_COORD_PORT")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn checkpoint_reports_images_and_writes_the_restart_script() {
    let coord_b = coord_bin();
    let ckdir = TempDir::new("ckdir");
    let ckdir_s = ckdir.path().to_str().unwrap().to_string();
    let coord = Coord::start(&coord_b, &["--ckpt-dir", &ckdir_s]);
    let img1 = format!("{ckdir_s}/ckpt_a_1.img");
    let img2 = format!("{ckdir_s}/ckpt_b's_2.img");
    let (v1, t1) = spawn_worker(
        coord.port,
        4001,
        "a",
        Behaviour::Image {
            path: img1.clone(),
            warnings: vec!["fd 7: socket to a peer outside the computation".into()],
        },
    );
    let (v2, t2) = spawn_worker(
        coord.port,
        4002,
        "b",
        Behaviour::Image {
            path: img2.clone(),
            warnings: vec![],
        },
    );
    assert_eq!((v1, v2), (1, 2));
    let out = ckpt_command(coord.port, &["--checkpoint"]);
    let seen1 = t1.join().unwrap();
    t2.join().unwrap();
    assert!(out.status.success(), "{out:?}\nlog:\n{}", coord.log_text());
    // Every image on its own line, sorted.
    assert_eq!(text(&out.stdout), format!("{img1}\n{img2}\n"));
    let script = format!("{ckdir_s}/ckpt_restart_script.sh");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("restart script: {script}\n")),
        "{err}"
    );
    assert!(
        err.contains("warning: vpid 1: fd 7: socket to a peer outside the computation"),
        "{err}"
    );
    // The worker got the coordinator's --ckpt-dir and a commit.
    assert!(seen1.contains(&Msg::DoCheckpoint {
        generation: 1,
        ckpt_dir: Some(ckdir_s.clone())
    }));
    assert!(seen1.contains(&Msg::Commit {
        generation: 1,
        commit: true,
        reason: None
    }));
    // The script: 0700, parses, restarts both images with ckpt-restart next to the
    // coordinator.
    let meta = std::fs::metadata(&script).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let body = std::fs::read_to_string(&script).unwrap();
    assert!(body.starts_with("#!/bin/sh\n"), "{body}");
    assert!(body.contains("# generation: 1\n"), "{body}");
    let restart = coord_b.with_file_name("ckpt-restart");
    assert!(
        body.contains(&format!("exec '{}' --coord-host", restart.display())),
        "{body}"
    );
    assert!(body.contains(&format!("'{img1}'")), "{body}");
    assert!(
        body.contains(&format!("'{ckdir_s}/ckpt_b'\\''s_2.img'")),
        "{body}"
    );
    assert!(
        Command::new("sh")
            .arg("-n")
            .arg(&script)
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn script_goes_next_to_the_first_image_without_ckpt_dir() {
    let coord = Coord::start(&coord_bin(), &[]);
    let imgdir = TempDir::new("imgdir");
    let img = imgdir
        .path()
        .join("ckpt_x_1.img")
        .to_str()
        .unwrap()
        .to_string();
    let (_, t) = spawn_worker(
        coord.port,
        1,
        "x",
        Behaviour::Image {
            path: img.clone(),
            warnings: vec![],
        },
    );
    let out = ckpt_command(coord.port, &["-c"]);
    let seen = t.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(seen.contains(&Msg::DoCheckpoint {
        generation: 1,
        ckpt_dir: None
    }));
    assert!(imgdir.path().join("ckpt_restart_script.sh").is_file());
}

#[test]
fn image_error_fails_the_checkpoint_with_the_reason() {
    let coord = Coord::start(&coord_bin(), &[]);
    let (_, good) = spawn_worker(
        coord.port,
        10,
        "good",
        Behaviour::Image {
            path: "/tmp/never-renamed.img".into(),
            warnings: vec![],
        },
    );
    let (_, bad) = spawn_worker(coord.port, 11, "bad", Behaviour::Fail("disk full".into()));
    let out = ckpt_command(coord.port, &["--checkpoint"]);
    let seen_good = good.join().unwrap();
    bad.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        "ckpt-command: checkpoint failed: vpid 2 (pid 11, bad): disk full\n"
    );
    // The healthy worker was told to discard its image.
    assert!(seen_good.contains(&Msg::Commit {
        generation: 1,
        commit: false,
        reason: Some("vpid 2 (pid 11, bad): disk full".into())
    }));
}

#[test]
fn worker_exiting_mid_checkpoint_is_dropped_silently() {
    let coord = Coord::start(&coord_bin(), &[]);
    let dir = TempDir::new("disc");
    let img = dir
        .path()
        .join("ckpt_stay_1.img")
        .to_str()
        .unwrap()
        .to_string();
    let (_, stay) = spawn_worker(
        coord.port,
        20,
        "stay",
        Behaviour::Image {
            path: img.clone(),
            warnings: vec![],
        },
    );
    let (_, leave) = spawn_worker(coord.port, 21, "leave", Behaviour::DisconnectOnCheckpoint);
    let out = ckpt_command(coord.port, &["--checkpoint"]);
    stay.join().unwrap();
    leave.join().unwrap();
    assert!(out.status.success(), "{out:?}\n{}", coord.log_text());
    assert_eq!(text(&out.stdout), format!("{img}\n"));
    // A process that exits before it is frozen simply has no image: not a warning.
    let err = text(&out.stderr);
    assert!(!err.contains("vpid 2"), "{err}");
}

#[test]
fn silent_worker_times_out_and_is_named() {
    let coord = Coord::start(&coord_bin(), &["--timeout", "2"]);
    let (_, ok) = spawn_worker(
        coord.port,
        30,
        "fine",
        Behaviour::Image {
            path: "/tmp/x.img".into(),
            warnings: vec![],
        },
    );
    let (_, silent) = spawn_worker(coord.port, 31, "mute", Behaviour::Silent);
    let t0 = std::time::Instant::now();
    let out = ckpt_command(coord.port, &["--checkpoint"]);
    let seen_ok = ok.join().unwrap();
    let seen_silent = silent.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        "ckpt-command: checkpoint failed: timed out after 2 s waiting for vpid 2 (pid 31, mute) \
         at barrier 'suspend'\n"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    // Both got the abort (the healthy one while it waited at the barrier).
    for seen in [&seen_ok, &seen_silent] {
        assert!(
            seen.iter()
                .any(|m| matches!(m, Msg::Commit { commit: false, .. })),
            "{seen:?}"
        );
    }
    // The coordinator is not stuck in the checkpoint (the fake workers have left by now).
    let st = ckpt_command(coord.port, &["--status"]);
    assert!(!text(&st.stdout).contains("checkpointing"), "{st:?}");
}

#[test]
fn status_list_kill_quit_interval() {
    let mut coord = Coord::start(&coord_bin(), &[]);
    let out = ckpt_command(coord.port, &["--status"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        format!(
            "computation: none\ngeneration: 0\nstate: idle\nprocesses: 0\ncoordinator: 127.0.0.1:{}\n",
            coord.port
        )
    );
    let (mut w1, (comp, _, _)) = worker(coord.port, 101, "alpha");
    let (mut w2, _) = worker(coord.port, 102, "beta");
    let out = ckpt_command(coord.port, &["-s"]);
    let s = text(&out.stdout);
    assert!(s.starts_with(&format!("computation: {comp:016x}\n")), "{s}");
    assert!(s.contains("state: running\nprocesses: 2\n"), "{s}");
    let out = ckpt_command(coord.port, &["--list"]);
    assert_eq!(
        text(&out.stdout),
        "1\t101\ttesthost\talpha\trunning\t-\n2\t102\ttesthost\tbeta\trunning\t-\n"
    );
    let out = ckpt_command(coord.port, &["-i", "3600"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        coord
            .log_text()
            .contains("checkpoint interval set to 3600 s")
    );
    let out = ckpt_command(coord.port, &["--kill"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(w1.recv(), Msg::Kill);
    assert_eq!(w2.recv(), Msg::Kill);
    let out = ckpt_command(coord.port, &["-q"]);
    assert!(out.status.success(), "{out:?}");
    assert!(coord.wait_exit(WAIT).success());
    // Exactly one action is required.
    let out = ckpt_command(coord.port, &["-s", "-l"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn no_coordinator_exits_2() {
    let port = free_port();
    let out = ckpt_command(port, &["--status"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        format!("ckpt-command: no coordinator at 127.0.0.1:{port} (Connection refused)\n")
    );
    let out = ckpt_command(port, &["--checkpoint"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn command_timeout_is_reported() {
    let coord = Coord::start(&coord_bin(), &[]);
    // A worker that never answers and a coordinator timeout longer than ours.
    let (_, _silent) = spawn_worker(coord.port, 1, "mute", Behaviour::Silent);
    let out = ckpt_command(coord.port, &["--checkpoint", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        format!(
            "ckpt-command: checkpoint failed: no reply from the coordinator at 127.0.0.1:{} within 1 s\n",
            coord.port
        )
    );
}

// ---- ckpt-launch --------------------------------------------------------------------------

fn launch(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(launch_bin());
    c.args(args)
        .env_remove("CKPT_COORD_HOST")
        .env_remove("CKPT_COORD_PORT")
        .env_remove("CKPT_DIR")
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn env_line<'a>(stdout: &'a str, key: &str) -> Option<&'a str> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

#[test]
fn launch_starts_a_coordinator_on_demand() {
    coord_bin(); // ckpt-launch uses the one next to itself: make sure it is fresh
    let port = free_port();
    let dir = TempDir::new("launch");
    let ck = dir.path().join("images/sub");
    let out = launch(
        &[
            "--coord-port",
            &port.to_string(),
            "--ckpt-dir",
            ck.to_str().unwrap(),
            "/usr/bin/env",
        ],
        &[("CKPT_LAUNCH_NO_PRELOAD", "1")],
    );
    // Hold a connection at once so the --exit-on-last coordinator stays up while we look.
    let mut c = Conn::command(port);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert_eq!(env_line(&stdout, "CKPT_COORD_HOST"), Some("127.0.0.1"));
    assert_eq!(
        env_line(&stdout, "CKPT_COORD_PORT"),
        Some(port.to_string().as_str())
    );
    assert_eq!(env_line(&stdout, "CKPT_DIR"), ck.to_str());
    let bin_dir = launch_bin().parent().unwrap().canonicalize().unwrap();
    assert_eq!(env_line(&stdout, "CKPT_BIN_DIR"), bin_dir.to_str());
    assert_eq!(env_line(&stdout, "LD_PRELOAD"), None);
    assert_eq!(env_line(&stdout, "CKPT_GZIP"), None);
    assert_eq!(
        std::fs::metadata(&ck).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(matches!(c.request(&Msg::CmdStatus), Msg::Status { .. }));
    drop(c);
    // --exit-on-last: it goes away by itself.
    wait_for(
        "the on-demand coordinator to exit",
        Duration::from_secs(10),
        || (!listening(port)).then_some(()),
        || "still listening".into(),
    );
}

/// A private BIN_DIR holding a copy of ckpt-launch and a (dummy) libckpt.so.
fn private_bin_dir(with_lib: bool) -> (TempDir, PathBuf) {
    let d = TempDir::new("bindir");
    let exe = d.path().join("ckpt-launch");
    std::fs::copy(launch_bin(), &exe).unwrap();
    if with_lib {
        std::fs::write(d.path().join("libckpt.so"), b"").unwrap();
    }
    (d, exe)
}

#[test]
fn launch_environment_and_preload_chain() {
    let coord = Coord::start(&coord_bin(), &[]);
    let (d, exe) = private_bin_dir(true);
    let lib = d.path().join("libckpt.so");
    let out = Command::new(&exe)
        .args(["--coord-port", &coord.port.to_string()])
        .args([
            "--no-gzip",
            "--with-plugin",
            "plug.so",
            "--with-plugin",
            "/abs/p2.so",
        ])
        .args(["/usr/bin/env"])
        .current_dir(d.path())
        .env("LD_PRELOAD", "/other/pre.so")
        .env("CKPT_DIR", d.path().join("from-env"))
        .env_remove("CKPT_COORD_PORT")
        .env_remove("CKPT_LAUNCH_NO_PRELOAD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert_eq!(
        env_line(&stdout, "LD_PRELOAD"),
        Some(format!("{}:/other/pre.so", lib.display()).as_str())
    );
    assert_eq!(env_line(&stdout, "CKPT_GZIP"), Some("0"));
    assert_eq!(
        env_line(&stdout, "CKPT_PLUGINS"),
        Some(format!("{}:/abs/p2.so", d.path().join("plug.so").display()).as_str())
    );
    assert_eq!(
        env_line(&stdout, "CKPT_DIR"),
        d.path().join("from-env").to_str()
    );
    assert_eq!(env_line(&stdout, "CKPT_BIN_DIR"), d.path().to_str());
}

#[test]
fn launch_errors() {
    let coord = Coord::start(&coord_bin(), &[]);
    let port = coord.port.to_string();
    // No libckpt.so next to the launcher.
    let (d, exe) = private_bin_dir(false);
    let out = Command::new(&exe)
        .args(["--coord-port", &port, "/bin/true"])
        .env_remove("CKPT_LAUNCH_NO_PRELOAD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "ckpt-launch: {}/libckpt.so not found; build with cargo build --release\n",
            d.path().display()
        )
    );
    // A program that does not exist.
    let out = launch(
        &["--coord-port", &port, "no-such-program-ckpt"],
        &[("CKPT_LAUNCH_NO_PRELOAD", "1")],
    );
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        "ckpt-launch: cannot execute 'no-such-program-ckpt': No such file or directory\n"
    );
    // --new-coordinator while one runs.
    let out = launch(
        &["--coord-port", &port, "--new-coordinator", "/bin/true"],
        &[("CKPT_LAUNCH_NO_PRELOAD", "1")],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        format!("ckpt-launch: a coordinator already runs at 127.0.0.1:{port}\n")
    );
    // --interval with a running coordinator is forwarded; options after PROGRAM are its own.
    let out = launch(
        &[
            "--coord-port",
            &port,
            "--interval",
            "77",
            "/bin/echo",
            "--coord-port",
            "-x",
        ],
        &[("CKPT_LAUNCH_NO_PRELOAD", "1")],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "--coord-port -x\n");
    assert!(coord.log_text().contains("checkpoint interval set to 77 s"));
    // A remote host that does not answer is not started.
    let out = launch(
        &[
            "--coord-host",
            "192.0.2.1",
            "--coord-port",
            "9",
            "/bin/true",
        ],
        &[("CKPT_LAUNCH_NO_PRELOAD", "1")],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("192.0.2.1 is not this machine"),
        "{out:?}"
    );
}

#[test]
fn command_reads_the_environment_and_flags_win() {
    let coord = Coord::start(&coord_bin(), &[]);
    let run = |args: &[&str], port_env: &str| {
        Command::new(command_bin())
            .args(args)
            .env("CKPT_COORD_HOST", "127.0.0.1")
            .env("CKPT_COORD_PORT", port_env)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&["--status"], &coord.port.to_string());
    assert!(out.status.success(), "{out:?}");
    let bad = free_port().to_string();
    let out = run(&["--coord-port", &coord.port.to_string(), "--status"], &bad);
    assert!(out.status.success(), "{out:?}");
    let out = run(&["--status"], &bad);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
