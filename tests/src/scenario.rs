//! The checkpoint → resume → checkpoint → kill → restart → checkpoint → kill → restart cycle,
//! shared by every end-to-end test of a single process.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Prog, Session, assert_same_output, check_images, count_lines, describe_status};

/// Deadline for a wait for a few more output lines.
const LINES: Duration = Duration::from_secs(60);
/// Deadline for a program to run to its end.
const FINISH: Duration = Duration::from_secs(180);

fn assert_running(p: &mut crate::Proc, out: &Path, when: &str) {
    if let Some(st) = p.try_wait() {
        panic!(
            "{} already exited ({}) {when} with {} lines out: checkpoints too slow for its pace?",
            p.label(),
            describe_status(&st),
            count_lines(out)
        );
    }
}

fn assert_empty(path: &Path, what: &str) {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    assert_eq!(
        len,
        0,
        "{what} ({}) should be empty (stdout was a regular file at checkpoint time), has:\n{}",
        path.display(),
        crate::util::tail(path, 10)
    );
}

/// Checkpoints, logging how long it took, and checks the images' mode (cheap; the
/// `gzip -t` check is done later, while no program runs, to keep the pace budget).
fn checkpoint(s: &Session, out: &Path, what: &str) -> Vec<PathBuf> {
    let before = count_lines(out);
    let t = Instant::now();
    let imgs = s.checkpoint();
    let after = count_lines(out);
    s.log(format!(
        "{what}: {imgs:?} in {:?}, lines {before} -> {after}",
        t.elapsed()
    ));
    for img in &imgs {
        let mode = std::fs::metadata(img).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "image {} has mode {mode:o}", img.display());
    }
    imgs
}

/// The standard cycle every single-process test runs: launch; checkpoint (resume) at 1/5 of
/// the run; checkpoint, SIGKILL; restart; checkpoint the restarted process, SIGKILL; restart
/// again; let it finish; require the exact bytes of a native run, images 0600 and `gzip -t`.
pub fn scenario(prog: Prog) {
    scenario_ending(prog, None)
}

/// [`scenario`] for a program that ends by dying of `signal` (natively and after restart:
/// `ckpt-restart` dies of the same signal), or exits 0 when `signal` is `None`.
pub fn scenario_ending(prog: Prog, signal: Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    let ends_well = |st: &std::process::ExitStatus| match signal {
        None => st.success(),
        Some(sig) => st.signal() == Some(sig),
    };
    let s = Session::new(&prog.name);
    let n = prog.lines;
    let step = (n / 10).max(2);

    let native_out = s.path("native.out");
    let mut native = s.run_native(&prog, &native_out);

    // Launch, first checkpoint at >= 1/5 of the run; the program keeps running.
    let out = s.path("ckpt.out");
    let mut app = s.launch(&prog, &out);
    s.wait_lines(&out, n / 5, LINES, &mut app);
    let pid = s.wait_for_pids(1, LINES)[0];
    s.log(format!(
        "launched as pid {pid}, {} lines out",
        count_lines(&out)
    ));
    checkpoint(&s, &out, "checkpoint 1");
    let c1 = count_lines(&out);
    s.wait_lines(&out, c1 + step, LINES, &mut app);

    // Second checkpoint, a few more lines (which the restarted program must rewrite
    // identically at the same offsets), then SIGKILL.
    let imgs = checkpoint(&s, &out, "checkpoint 2");
    let c2 = count_lines(&out);
    s.wait_lines(&out, c2 + (step / 3).max(1), LINES, &mut app);
    assert_running(&mut app, &out, "before the first SIGKILL");
    s.kill9(pid);
    app.wait_exit(LINES);
    let killed_at = count_lines(&out);
    s.log(format!("killed pid {pid} at {killed_at} lines"));
    check_images(&imgs);

    // Restart; it must continue past the point where it was killed.
    let r1_out = s.path("restart1.stdout");
    let mut r1 = s.restart(&imgs, &r1_out);
    let pid = s.wait_for_pids(1, LINES)[0];
    s.log(format!(
        "restarted as pid {pid}, {} lines out",
        count_lines(&out)
    ));
    s.wait_lines(&out, killed_at + step, LINES, &mut r1);

    // Checkpoint the restarted process, SIGKILL it, restart again and let it finish.
    let imgs = checkpoint(&s, &out, "checkpoint 3");
    assert_running(&mut r1, &out, "before the second SIGKILL");
    s.kill9(pid);
    let st = r1.wait_exit(LINES);
    s.log(format!(
        "killed pid {pid} at {} lines; first ckpt-restart: {}",
        count_lines(&out),
        describe_status(&st)
    ));
    assert_empty(&r1_out, "stdout of the first ckpt-restart");
    check_images(&imgs);

    let r2_out = s.path("restart2.stdout");
    let mut r2 = s.restart(&imgs, &r2_out);
    let st = r2.wait_exit(FINISH);
    s.log(format!("second ckpt-restart: {}", describe_status(&st)));
    assert!(
        ends_well(&st),
        "restarted {} ended with {}; ckpt-restart stderr:\n{}\noutput tail:\n{}\n{}",
        prog.name,
        describe_status(&st),
        r2.stderr_tail(),
        crate::util::tail(&out, 5),
        s.diagnostics()
    );
    assert_empty(&r2_out, "stdout of the second ckpt-restart");

    let st = native.wait_exit(FINISH);
    assert!(
        ends_well(&st),
        "native run ended with {}",
        describe_status(&st)
    );
    assert_eq!(count_lines(&native_out), n, "native run line count");
    assert_same_output(&native_out, &out);
}
