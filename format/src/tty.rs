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

/// How many of `input`'s bytes a reader under `t` can see once they are queued (with EOF marks
/// at `eofs`, see [`read_input`]): all in non-canonical mode, up to the last line end or EOF
/// mark in canonical mode.
pub fn visible_input(t: &libc::termios, input: &[u8], eofs: &[u32]) -> usize {
    if t.c_lflag & libc::ICANON == 0 {
        return input.len();
    }
    let line_end = input
        .iter()
        .rposition(|c| is_line_end(t, *c))
        .map_or(0, |i| i + 1);
    let last_eof = eofs
        .iter()
        .max()
        .map_or(0, |e| (*e as usize).min(input.len()));
    line_end.max(last_eof)
}

/// Whether byte `c` ends a line in canonical mode under `t` (`\n`, `VEOL`, `VEOL2` with
/// `IEXTEN`; a disabled character, 0, never does).
fn is_line_end(t: &libc::termios, c: u8) -> bool {
    c != 0
        && (c == b'\n'
            || c == t.c_cc[libc::VEOL]
            || (c == t.c_cc[libc::VEOL2] && t.c_lflag & libc::IEXTEN != 0))
}

/// Reads (consumes) everything queued for reading on terminal `fd` (non-blocking, its
/// attributes `t`), keeping the EOFs of a canonical queue: returns the bytes and the positions
/// in them of the EOF marks (an EOF typed after "abc" is at 3; the mark is not a byte).
///
/// n_tty stores a canonical-mode EOF as a line end whose character is 0 (the "disabled"
/// character) and reads give the line without it; in non-canonical mode the same slot reads as
/// a NUL byte, and switching `ICANON` off forgets which slots were line ends. So a canonical
/// queue is read one line per `read` first, under `t` as it is: a read that returns 0 bytes, or
/// a line not ending with a line-end character, was ended by an EOF (a read of 0 is also a
/// hung-up terminal: not tried when `poll` reports `POLLHUP`). What is left (a partial line,
/// or a non-canonical queue) is read with `ICANON` off, `VMIN = VTIME = 0`. Leaves the
/// terminal in that non-canonical mode (the caller puts attributes back).
pub fn read_input(fd: i32, t: &libc::termios) -> (Vec<u8>, Vec<u32>) {
    let mut out = Vec::new();
    let mut eofs = Vec::new();
    let mut buf = [0u8; 4096];
    let canonical = t.c_lflag & libc::ICANON != 0 && t.c_lflag & libc::EXTPROC == 0;
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd, no wait.
    let hung = unsafe { libc::poll(&mut p, 1, 0) } < 0 || p.revents & libc::POLLHUP != 0;
    if canonical && !hung && set_termios(fd, t) {
        // At most one line (or EOF) per slot of n_tty's 4096-byte buffer.
        for _ in 0..=buf.len() {
            // SAFETY: reading into a local buffer.
            let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if r < 0 {
                break; // EAGAIN: no complete line left
            }
            let line = &buf[..r as usize];
            out.extend_from_slice(line);
            if line.len() < buf.len() && line.last().is_none_or(|c| !is_line_end(t, *c)) {
                eofs.push(out.len() as u32);
            }
        }
    }
    let mut raw = *t;
    raw.c_lflag &= !(libc::ICANON | libc::ECHO);
    raw.c_cc[libc::VMIN] = 0;
    raw.c_cc[libc::VTIME] = 0;
    set_termios(fd, &raw);
    loop {
        // SAFETY: reading into a local buffer.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..r as usize]);
    }
    (out, eofs)
}

/// `input` with an EOF character at each of `eofs`, and the attributes to queue it under:
/// [`quiet_termios`] of `attrs` with `VEOF` set to a byte that is no data byte (the saved
/// `VEOF` if it can be, ^D otherwise, else the first free one), so the line discipline makes
/// exactly those bytes EOF marks again. Without EOFs, or not in canonical mode (where there
/// are no EOF marks), the bytes as they are. `None` if every byte value is taken (the EOFs
/// cannot be told from the data).
pub fn with_eofs(
    attrs: &libc::termios,
    input: &[u8],
    eofs: &[u32],
) -> Option<(libc::termios, Vec<u8>)> {
    let mut quiet = quiet_termios(attrs);
    if eofs.is_empty() || attrs.c_lflag & libc::ICANON == 0 {
        return Some((quiet, input.to_vec()));
    }
    let mut used = [false; 256];
    for c in input {
        used[*c as usize] = true;
    }
    for c in [0, b'\n', attrs.c_cc[libc::VEOL], attrs.c_cc[libc::VEOL2]] {
        used[c as usize] = true;
    }
    let eof = [attrs.c_cc[libc::VEOF], 4]
        .into_iter()
        .chain(1..=255)
        .find(|c| !used[*c as usize])?;
    quiet.c_cc[libc::VEOF] = eof;
    let mut out = Vec::with_capacity(input.len() + eofs.len());
    let mut eofs = eofs.to_vec();
    eofs.sort_unstable();
    let mut e = eofs.iter().peekable();
    for (i, c) in input.iter().enumerate() {
        while e.next_if(|p| **p as usize <= i).is_some() {
            out.push(eof);
        }
        out.push(*c);
    }
    out.extend(e.map(|_| eof));
    Some((quiet, out))
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
/// master; with EOFs at `eofs`, see [`with_eofs`]), `to_master` as output the master will read
/// (written on the slave), both under [`quiet_termios`]; then `attrs` on the slave. `master`
/// and `slave` must be non-blocking. Waits (bounded) until the kernel shows the bytes queued.
/// Anything queued already stays in front.
pub fn refill(
    master: i32,
    slave: i32,
    attrs: &libc::termios,
    to_slave: &[u8],
    eofs: &[u32],
    to_master: &[u8],
) -> Result<(), String> {
    let (quiet, input) = with_eofs(attrs, to_slave, eofs).ok_or_else(|| {
        "the queued input uses every byte value: its EOFs cannot be put back".to_string()
    })?;
    if !set_termios(slave, &quiet) {
        return Err(format!(
            "cannot set the pty's attributes: {}",
            std::io::Error::last_os_error()
        ));
    }
    let base_s = inq(slave);
    let base_m = inq(master);
    let r = write_all(master, &input)
        .map_err(|e| format!("pty input: {e}"))
        .and_then(|_| write_all(slave, to_master).map_err(|e| format!("pty output: {e}")))
        .and_then(|_| {
            flush_input(slave);
            (wait_inq(slave, base_s + visible_input(&quiet, to_slave, eofs))
                && wait_inq(master, base_m + to_master.len()))
            .then_some(())
            .ok_or_else(|| "the pty did not queue the saved bytes within 2 s".to_string())
        });
    set_termios(slave, attrs);
    r
}

/// Puts input back into terminal `fd` that only its far side could write (the terminal the
/// computation runs in, whose master we do not have): one `TIOCSTI` per byte, which the line
/// discipline processes at once, under [`with_eofs`]'s attributes for `saved` (the attributes
/// the input was queued under: no echo, EOFs at `eofs`), then `now` (`fd` must be readable).
/// `TIOCSTI` needs `fd` to be the caller's controlling terminal and, since Linux 6.2,
/// `dev.tty.legacy_tiocsti = 1` ([`can_inject`]).
pub fn inject(
    fd: i32,
    saved: &libc::termios,
    now: &libc::termios,
    input: &[u8],
    eofs: &[u32],
) -> Result<(), String> {
    let (quiet, bytes) = with_eofs(saved, input, eofs).ok_or_else(|| {
        "the queued input uses every byte value: its EOFs cannot be put back".to_string()
    })?;
    if !set_termios(fd, &quiet) {
        return Err(format!(
            "cannot set the terminal's attributes: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut r = Ok(());
    for (i, c) in bytes.iter().enumerate() {
        // SAFETY: TIOCSTI reads one byte from a valid pointer.
        if unsafe { libc::ioctl(fd, libc::TIOCSTI, c as *const u8) } != 0 {
            r = Err(format!(
                "TIOCSTI: {} ({} of {} bytes put back)",
                std::io::Error::last_os_error(),
                i,
                bytes.len()
            ));
            break;
        }
    }
    set_termios(fd, now);
    r
}

/// Whether this kernel lets a process put input into its controlling terminal (`TIOCSTI`):
/// always before Linux 6.2, since then only with `dev.tty.legacy_tiocsti = 1` (or
/// `CAP_SYS_ADMIN`, not assumed). Reads the sysctl with plain syscalls.
pub fn can_inject() -> bool {
    // SAFETY: open with a NUL-terminated literal path.
    let fd = unsafe {
        libc::open(
            c"/proc/sys/dev/tty/legacy_tiocsti".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return true; // no such sysctl: a kernel where TIOCSTI is always there
    }
    let mut b = [0u8; 4];
    // SAFETY: reading into a local buffer, then closing our fd.
    let n = unsafe {
        let n = libc::read(fd, b.as_mut_ptr().cast(), b.len());
        libc::close(fd);
        n
    };
    n > 0 && b[0] == b'1'
}
