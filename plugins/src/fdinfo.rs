//! Helpers shared by the event-fd plugins (eventfd, signalfd, epoll, inotify): reading
//! `/proc/self/fdinfo/N`, parsing its `name: value` fields, and putting a freshly created fd on
//! its saved number.
//!
//! Runs on the checkpoint thread with user threads frozen: raw syscalls and Rust allocation
//! only (the preload's allocator is private); never glibc malloc, stdio or locks.

use std::ffi::CString;

/// The text of `/proc/self/fdinfo/<fd>` (empty if it cannot be read). Read with raw
/// open/read/close so nothing but the Rust allocator is involved.
pub fn read(fd: i32) -> String {
    let Ok(path) = CString::new(format!("/proc/self/fdinfo/{fd}")) else {
        return String::new();
    };
    // SAFETY: NUL-terminated path; we own the returned fd.
    let f = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if f < 0 {
        return String::new();
    }
    let mut out = Vec::with_capacity(4096);
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reading into a stack buffer of the given length.
        let n = unsafe { libc::read(f, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(f) };
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of the first `name` field (`name` includes the colon), trimmed.
pub fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

/// `key:value` pairs of one fdinfo line (`tfd:` lines have a space after the colon, so a
/// bare `key:` token takes the next token as its value).
pub fn pairs(line: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut it = line.split_whitespace().peekable();
    while let Some(tok) = it.next() {
        if let Some((k, v)) = tok.split_once(':') {
            if v.is_empty() {
                if let Some(next) = it.next() {
                    out.push((k, next));
                }
            } else {
                out.push((k, v));
            }
        }
    }
    out
}

/// Parses a hexadecimal field value (no `0x`).
pub fn hex(v: &str) -> Option<u64> {
    u64::from_str_radix(v.trim(), 16).ok()
}

/// Kernel-internal `dev_t` (major << 20 | minor), as fdinfo prints `sdev:`, to the user-space
/// `st_dev` encoding `fstat` returns.
pub fn kdev_to_user(kdev: u64) -> u64 {
    libc::makedev((kdev >> 20) as u32, (kdev & 0xf_ffff) as u32)
}

pub fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Moves the new fd `nfd` to number `fd` (closing `nfd`) and sets the saved close-on-exec
/// flag. `nfd` must have been created close-on-exec. The target number must be free or
/// belong to nothing the restarted program needs (the files plugin left it alone).
pub fn put_on(nfd: i32, fd: i32, cloexec: bool) -> Result<(), String> {
    if nfd != fd {
        let fl = if cloexec { libc::O_CLOEXEC } else { 0 };
        // SAFETY: both numbers are valid fds; dup3 replaces whatever is on `fd`.
        if unsafe { libc::dup3(nfd, fd, fl) } < 0 {
            let e = errno();
            // SAFETY: closing the temporary fd we created.
            unsafe { libc::close(nfd) };
            return Err(format!("fd {fd}: dup3: {e}"));
        }
        // SAFETY: closing the temporary fd we created.
        unsafe { libc::close(nfd) };
    } else if !cloexec {
        // SAFETY: clearing FD_CLOEXEC on our own fd.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
    Ok(())
}

/// Whether fd number `fd` is open in this process.
pub fn is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only probes the number.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Puts `/dev/null` on `fd` (the policy for an fd that cannot be recreated; the same as the
/// files plugin's for kinds it does not know).
pub fn dev_null_on(fd: i32, cloexec: bool) -> Result<(), String> {
    // SAFETY: NUL-terminated literal path.
    let nfd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if nfd < 0 {
        return Err(format!("fd {fd}: cannot open /dev/null: {}", errno()));
    }
    put_on(nfd, fd, cloexec)
}
