//! Bad input must fail cleanly: a non-zero exit code (not a signal), a short, clear
//! message on stderr, no crash, no leftover process, and the rest of the system still
//! working. Covers corrupt, foreign and missing images given to ckpt-restart, garbage
//! on the coordinator's TCP port, ckpt-command with no coordinator, and a checkpoint
//! directory that cannot be written.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ckpt_tests::{
    Output, Prog, Session, assert_same_output, bin, check_images, count_lines, describe_status,
    run, tagged_pids,
};

const LINES: Duration = Duration::from_secs(60);

/// Asserts a clean failure: exit code 1..=127 (not a signal, nor a shell-style 128+N),
/// 1 to 3 non-empty stderr lines, one containing `must_mention` (any of them if several
/// alternatives are given), and no panic or crash text.
fn assert_clean_failure(out: &Output, must_mention: &[&str]) {
    let code = out.status.code();
    assert!(
        matches!(code, Some(1..=127)),
        "want a plain non-zero exit code, got {}:\n{out}",
        describe_status(&out.status)
    );
    let lines = out.stderr_lines();
    assert!(
        (1..=3).contains(&lines.len()),
        "want one clear line on stderr, got {}:\n{out}",
        lines.len()
    );
    let lower = out.stderr.to_lowercase();
    for bad in ["panicked", "rust_backtrace", "segmentation", "core dumped"] {
        assert!(
            !lower.contains(bad),
            "stderr looks like a crash ({bad}):\n{out}"
        );
    }
    assert!(
        must_mention.iter().any(|m| out.stderr.contains(m)),
        "stderr should mention one of {must_mention:?}:\n{out}"
    );
}

/// After a failed restart, no process of the session but the coordinator may remain.
fn assert_no_leftovers(s: &Session) {
    let coord: Vec<i32> = s.coordinator_pid().into_iter().collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<i32> = tagged_pids(s.tag())
            .into_iter()
            .filter(|p| !coord.contains(p))
            .collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "processes left behind after a failed restart: {left:?}\n{}",
                s.diagnostics()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Launches the C counter, checkpoints it once, kills it; returns its first image.
fn one_image(s: &Session) -> PathBuf {
    let prog = Prog::counter_c();
    let out = s.path("app.out");
    let mut app = s.launch(&prog, &out);
    s.wait_lines(&out, prog.lines / 10, LINES, &mut app);
    let imgs = s.checkpoint();
    check_images(&imgs);
    app.kill9();
    imgs[0].clone()
}

/// Runs ckpt-restart on `image` and asserts it fails cleanly, naming the image.
fn restart_must_fail(s: &Session, image: &Path) {
    let out = run(
        s.restart_command(&[image.to_path_buf()]),
        Duration::from_secs(60),
    );
    let name = image.file_name().unwrap().to_string_lossy().into_owned();
    assert_clean_failure(&out, &[&name]);
    assert_no_leftovers(s);
}

#[test]
fn restart_truncated_image() {
    let s = Session::new("truncated_image");
    let img = one_image(&s);
    let bad = s.path("truncated.img");
    std::fs::copy(&img, &bad).unwrap();
    let len = std::fs::metadata(&bad).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&bad)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    restart_must_fail(&s, &bad);
}

#[test]
fn restart_flipped_byte_image() {
    let s = Session::new("flipped_image");
    let img = one_image(&s);
    let mut bytes = std::fs::read(&img).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let bad = s.path("flipped.img");
    std::fs::write(&bad, &bytes).unwrap();
    restart_must_fail(&s, &bad);
}

#[test]
fn restart_not_an_image() {
    let s = Session::new("not_an_image");
    let bad = s.path("x.img");
    std::fs::copy("/bin/true", &bad).unwrap();
    restart_must_fail(&s, &bad);
}

#[test]
fn restart_missing_image() {
    let s = Session::new("missing_image");
    let bad = s.path("no-such-file.img");
    restart_must_fail(&s, &bad);
}

/// Sends `bytes` (then half-closes if `shutdown`) and requires the coordinator to close
/// the connection within 10 s, possibly after an error frame.
fn garbage(port: u16, what: &str, bytes: &[u8], shutdown: bool) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The coordinator may close as soon as it has seen enough: ignore write errors.
    let _ = c.write_all(bytes);
    if shutdown {
        let _ = c.shutdown(Shutdown::Write);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                return;
            }
            Err(e) => panic!(
                "coordinator kept the connection open after {what} ({e}); received {} bytes: {:?}",
                got.len(),
                String::from_utf8_lossy(&got[..got.len().min(200)])
            ),
        }
    }
}

#[test]
fn coordinator_survives_garbage() {
    let s = Session::new("garbage");
    let p = s.port();
    garbage(
        p,
        "an HTTP request",
        b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
        false,
    );
    let mut frame = 16u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0xc1; 16]); // 0xc1 is never valid msgpack
    garbage(p, "an undecodable frame", &frame, false);
    garbage(
        p,
        "a 4 GiB length prefix",
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        false,
    );
    let mut short = 100u32.to_be_bytes().to_vec();
    short.extend_from_slice(b"abc");
    garbage(p, "a truncated frame", &short, true);
    garbage(p, "a lone byte", &[0x00], true);

    let out = s.ckpt_command(&["--status"], Duration::from_secs(30));
    assert!(
        out.success(),
        "coordinator no longer answers --status after garbage:\n{out}\n{}",
        s.diagnostics()
    );
}

#[test]
fn command_without_coordinator() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cmd = Command::new(bin("ckpt-command"));
    cmd.args(["--coord-host", "127.0.0.1", "--coord-port"])
        .arg(port.to_string())
        .arg("--checkpoint")
        .env_remove("CKPT_COORD_HOST")
        .env_remove("CKPT_COORD_PORT");
    let out = run(cmd, Duration::from_secs(30));
    let port_s = port.to_string();
    assert_clean_failure(
        &out,
        &[&port_s, "connect", "Connect", "refused", "coordinator"],
    );
}

#[test]
fn checkpoint_into_unwritable_dir() {
    let s = Session::new("unwritable_dir");
    let prog = Prog::counter_c();
    let n = prog.lines;
    let native_out = s.path("native.out");
    let mut native = s.run_native(&prog, &native_out);
    let out = s.path("app.out");
    let mut app = s.launch(&prog, &out);
    s.wait_lines(&out, n / 5, LINES, &mut app);
    s.wait_for_pids(1, LINES);

    // Replace the checkpoint dir with a regular file: nobody, not even root, can create
    // anything under it, and mkdir -p cannot fix it.
    let dir = s.ckpt_dir().to_path_buf();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory\n").unwrap();
    let out_fail = match s.try_checkpoint() {
        Ok(imgs) => panic!(
            "checkpoint into {} (a regular file) reported success: {imgs:?}",
            dir.display()
        ),
        Err(o) => o,
    };
    let dir_s = dir.to_string_lossy().into_owned();
    assert_clean_failure(&out_fail, &[&dir_s]);

    // The program keeps running and stays in the computation.
    let c = count_lines(&out);
    s.wait_lines(&out, c + n / 10, LINES, &mut app);
    assert!(
        app.try_wait().is_none(),
        "program died after the failed checkpoint"
    );
    s.wait_for_pids(1, LINES);

    // A later checkpoint into a good dir works.
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let imgs = s.checkpoint();
    check_images(&imgs);

    // And the program still finishes with the right output.
    let st = app.wait_exit(Duration::from_secs(120));
    assert!(
        st.success(),
        "program ended with {}; stderr:\n{}",
        describe_status(&st),
        app.stderr_tail()
    );
    assert!(native.wait_exit(Duration::from_secs(120)).success());
    assert_same_output(&native_out, &out);
}

/// Rewrites the msgpack header of `img` with `edit` into a new, otherwise identical image.
fn with_header(
    s: &Session,
    img: &Path,
    name: &str,
    edit: impl FnOnce(&mut ckpt_format::image::ImageHeader),
) -> PathBuf {
    use ckpt_format::image::{self, MemberWriter};
    let mut stream = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(img).unwrap())
        .read_to_end(&mut stream)
        .unwrap();
    let mut rest = &stream[..];
    let mut h = image::read_header(&mut rest).unwrap();
    edit(&mut h);
    let out = s.path(name);
    let mut w = MemberWriter::new(std::fs::File::create(&out).unwrap(), 1);
    w.write_all(&image::encode_header(&h)).unwrap();
    w.write_all(rest).unwrap();
    w.finish().unwrap();
    out
}

#[test]
fn restart_refuses_foreign_kernel_glibc_and_arch() {
    let s = Session::new("foreign_image");
    let img = one_image(&s);
    type Edit = fn(&mut ckpt_format::image::ImageHeader);
    let cases: [(&str, &str, Edit); 3] = [
        ("kernel.img", "kernel", |h| {
            h.kernel_release = "2.6.32-ancient".into()
        }),
        ("glibc.img", "glibc", |h| h.glibc_version = "2.17".into()),
        ("arch.img", "aarch64", |h| h.arch = "aarch64".into()),
    ];
    for (name, word, edit) in cases {
        let bad = with_header(&s, &img, name, edit);
        let out = run(
            s.restart_command(std::slice::from_ref(&bad)),
            Duration::from_secs(60),
        );
        assert_clean_failure(&out, &[name]);
        assert!(
            out.stderr.contains(word),
            "the message should name the field ({word}):\n{out}"
        );
        assert_no_leftovers(&s);
    }
}

#[test]
fn restart_names_a_missing_file() {
    let s = Session::new("missing_file");
    let img = one_image(&s);
    // The program's stdout was app.out: the image needs it back at its offset.
    std::fs::remove_file(s.path("app.out")).unwrap();
    let out = run(s.restart_command(&[img]), Duration::from_secs(60));
    assert_clean_failure(&out, &["app.out"]);
    assert_no_leftovers(&s);
}

#[test]
fn thread_blocking_the_checkpoint_signal_fails_fast_and_harms_nothing() {
    let s = Session::new("blocker");
    let prog = Prog {
        name: "blocker".into(),
        program: env!("CKPT_PROG_BLOCKER").into(),
        args: vec![],
        lines: 251,
    };
    let native_out = s.path("native.out");
    let mut native = s.run_native(&prog, &native_out);
    let out = s.path("app.out");
    let mut cmd = s.command(bin("ckpt-launch"));
    cmd.args(["--coord-host", "127.0.0.1", "--coord-port"])
        .arg(s.port().to_string())
        .arg("--ckpt-dir")
        .arg(s.ckpt_dir())
        .arg(&prog.program)
        .env("CKPT_SUSPEND_TIMEOUT_MS", "1000");
    let mut app = s.spawn_to(cmd, "launch-blocker", &out);
    s.wait_lines(&out, 20, LINES, &mut app);
    let t = Instant::now();
    let failed = s
        .try_checkpoint()
        .expect_err("a checkpoint must not succeed with a thread blocking its signal");
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    assert_clean_failure(&failed, &["blocks the checkpoint signal"]);
    let now = count_lines(&out);
    s.wait_lines(&out, now + 10, LINES, &mut app);
    let st = app.wait_exit(LINES);
    assert!(
        st.success(),
        "program after the failed checkpoint: {}",
        describe_status(&st)
    );
    native.wait_exit(LINES);
    assert_same_output(&native_out, &out);
}
