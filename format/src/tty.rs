//! Terminal helpers shared by the two sides of a pty's checkpoint: the terminals plugin
//! (which drains a pty and puts the bytes straight back) and `ckpt-restart` (which fills a new
//! pair). They live here because ckpt-restart cannot link the plugins crate, whose exported
//! wrappers would interpose on ckpt-restart itself.
//!
//! Plain syscalls and Rust allocation only (callable with the program's threads frozen); every
//! wait is bounded (2 s).

use crate::image::TermAttrs;

/// The `termios` of `a`.
pub fn to_termios(a: &TermAttrs) -> libc::termios {
    // SAFETY: termios is plain data; zero is a valid start.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    t.c_iflag = a.iflag;
    t.c_oflag = a.oflag;
    t.c_cflag = a.cflag;
    t.c_lflag = a.lflag;
    t.c_line = a.line;
    let n = a.cc.len().min(t.c_cc.len());
    t.c_cc[..n].copy_from_slice(&a.cc[..n]);
    t
}

pub fn set_termios(fd: i32, t: &libc::termios) -> bool {
    // SAFETY: TCSETS with a valid termios.
    unsafe { libc::ioctl(fd, libc::TCSETS, t) == 0 }
}

/// The attributes under which saved bytes are put back into a pty: `attrs` with echo, signal
/// characters, input mapping, line editing characters and output processing off, so the line
/// discipline queues the bytes as they are; canonical mode stays as it was, so queued input
/// keeps its line boundaries (and a partial line stays partial).
pub fn quiet_termios(attrs: &libc::termios) -> libc::termios {
    let mut q = *attrs;
    q.c_lflag &= !(libc::ECHO
        | libc::ECHOE
        | libc::ECHOK
        | libc::ECHONL
        | libc::ECHOCTL
        | libc::ECHOKE
        | libc::ISIG
        | libc::IEXTEN);
    q.c_iflag &= !(libc::ICRNL
        | libc::INLCR
        | libc::IGNCR
        | libc::ISTRIP
        | libc::IUCLC
        | libc::IXON
        | libc::IXOFF);
    q.c_oflag &= !libc::OPOST;
    for c in [
        libc::VERASE,
        libc::VKILL,
        libc::VEOF,
        libc::VWERASE,
        libc::VREPRINT,
        libc::VLNEXT,
        libc::VINTR,
        libc::VQUIT,
        libc::VSUSP,
    ] {
        q.c_cc[c] = 0; // _POSIX_VDISABLE
    }
    q
}

fn now_ms() -> i64 {
    // SAFETY: clock_gettime into a zeroed timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

pub fn inq(fd: i32) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD into a valid int.
    unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    n.max(0) as usize
}

/// Waits (at most 2 s) until `fd` has at least `n` bytes to read; false on timeout.
pub fn wait_inq(fd: i32, n: usize) -> bool {
    let deadline = now_ms() + 2000;
    while inq(fd) < n {
        if now_ms() > deadline {
            return false;
        }
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 200_000,
        };
        // SAFETY: nanosleep with a valid timespec.
        unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    }
    true
}

/// Writes all of `data` to non-blocking `fd`, waiting (bounded) when it is full.
pub fn write_all(fd: i32, mut data: &[u8]) -> Result<(), String> {
    let deadline = now_ms() + 2000;
    while !data.is_empty() {
        // SAFETY: writing from a valid slice.
        let r = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if r > 0 {
            data = &data[r as usize..];
            continue;
        }
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
            return Err(e.to_string());
        }
        if now_ms() > deadline {
            return Err(format!("{} bytes did not fit in 2 s", data.len()));
        }
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 500_000,
        };
        // SAFETY: nanosleep with a valid timespec.
        unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    }
    Ok(())
}

/// How many of `input`'s bytes a reader under `t` can see once they are queued: all in
/// non-canonical mode, up to the last line end in canonical mode.
pub fn visible_input(t: &libc::termios, input: &[u8]) -> usize {
    if t.c_lflag & libc::ICANON == 0 {
        return input.len();
    }
    let ends = [b'\n', t.c_cc[libc::VEOL], t.c_cc[libc::VEOL2]];
    input
        .iter()
        .rposition(|c| *c != 0 && ends.contains(c))
        .map_or(0, |i| i + 1)
}

/// Makes the kernel run the pending input processing of `slave` now (n_tty's poll flushes
/// the port's buffer work when nothing is readable yet).
pub fn flush_input(slave: i32) {
    let mut p = libc::pollfd {
        fd: slave,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) };
}

/// Puts bytes back into a pty: `to_slave` as input the slave side will read (written on the
/// master), `to_master` as output the master will read (written on the slave), both under
/// [`quiet_termios`]; then `attrs` on the slave. `master` and `slave` must be non-blocking.
/// Waits (bounded) until the kernel shows the bytes queued. Anything queued already stays
/// in front.
pub fn refill(
    master: i32,
    slave: i32,
    attrs: &libc::termios,
    to_slave: &[u8],
    to_master: &[u8],
) -> Result<(), String> {
    let quiet = quiet_termios(attrs);
    if !set_termios(slave, &quiet) {
        return Err(format!(
            "cannot set the pty's attributes: {}",
            std::io::Error::last_os_error()
        ));
    }
    let base_s = inq(slave);
    let base_m = inq(master);
    let r = write_all(master, to_slave)
        .map_err(|e| format!("pty input: {e}"))
        .and_then(|_| write_all(slave, to_master).map_err(|e| format!("pty output: {e}")))
        .and_then(|_| {
            flush_input(slave);
            (wait_inq(slave, base_s + visible_input(&quiet, to_slave))
                && wait_inq(master, base_m + to_master.len()))
            .then_some(())
            .ok_or_else(|| "the pty did not queue the saved bytes within 2 s".to_string())
        });
    set_termios(slave, attrs);
    r
}
