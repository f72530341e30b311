//! File helpers for the end-to-end tests: counting and waiting for output lines, tails
//! for failure messages, byte-for-byte output comparison and checkpoint-image checks
//! (mode 0600, valid gzip).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::procs::{POLL, run};

/// Number of complete lines (`\n` bytes) in `path`; 0 if it does not exist yet.
pub fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// The last `n` lines of `path` (lossy UTF-8), or a note saying it cannot be read.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(b) => {
            let s = String::from_utf8_lossy(&b);
            let lines: Vec<&str> = s.lines().collect();
            let start = lines.len().saturating_sub(n);
            let mut t = lines[start..].join("\n");
            t.push('\n');
            t
        }
        Err(e) => format!("<cannot read {}: {e}>\n", path.display()),
    }
}

/// Polls until `path` has at least `n` lines; returns the count. Panics after `timeout`
/// with the count and the file's tail. See [`crate::Session::wait_lines`] for a variant
/// that also fails fast when the writer dies.
pub fn wait_for_lines(path: &Path, n: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let c = count_lines(path);
        if c >= n {
            return c;
        }
        if Instant::now() > deadline {
            panic!(
                "{} has {c} lines after {timeout:?}, wanted {n}; tail:\n{}",
                path.display(),
                tail(path, 10)
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Panics unless `actual` is byte-for-byte equal to `expected`, showing the first
/// differing line (1-based) of each.
pub fn assert_same_output(expected: &Path, actual: &Path) {
    let e = std::fs::read(expected).unwrap_or_else(|err| panic!("{}: {err}", expected.display()));
    let a = std::fs::read(actual).unwrap_or_else(|err| panic!("{}: {err}", actual.display()));
    if e == a {
        return;
    }
    let el: Vec<&[u8]> = e.split(|&c| c == b'\n').collect();
    let al: Vec<&[u8]> = a.split(|&c| c == b'\n').collect();
    let i = el
        .iter()
        .zip(al.iter())
        .position(|(x, y)| x != y)
        .unwrap_or(el.len().min(al.len()));
    let show = |v: &Vec<&[u8]>| {
        v.get(i)
            .map(|l| format!("{:?}", String::from_utf8_lossy(l)))
            .unwrap_or_else(|| "<end of file>".into())
    };
    panic!(
        "output differs from the native run at line {}:\n  native ({}, {} bytes): {}\n  ckpt   ({}, {} bytes): {}",
        i + 1,
        expected.display(),
        e.len(),
        show(&el),
        actual.display(),
        a.len(),
        show(&al)
    );
}

/// Checks a checkpoint image: a regular file with mode 0600 that `gzip -t` accepts.
pub fn check_image(path: &Path) {
    let md = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("image {} not readable: {e}", path.display()));
    assert!(
        md.is_file(),
        "image {} is not a regular file",
        path.display()
    );
    let mode = md.permissions().mode() & 0o7777;
    assert_eq!(
        mode,
        0o600,
        "image {} has mode {mode:o}, want 600",
        path.display()
    );
    let mut cmd = Command::new("gzip");
    cmd.arg("-t").arg(path);
    let out = run(cmd, Duration::from_secs(120));
    assert!(
        out.success(),
        "image {} is not a valid gzip stream:\n{out}",
        path.display()
    );
}

/// [`check_image`] on each.
pub fn check_images(paths: &[std::path::PathBuf]) {
    assert!(!paths.is_empty(), "no images");
    for p in paths {
        check_image(p);
    }
}

/// Finds `name` in `$PATH` (absolute path), panicking if absent.
pub fn find_in_path(name: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let cand = dir.join(name);
        if let Ok(md) = std::fs::metadata(&cand)
            && md.is_file()
            && md.permissions().mode() & 0o111 != 0
        {
            return cand;
        }
    }
    panic!("`{name}` not found in PATH ({path:?})");
}
