//! Pseudo-terminal pairs the program made, recreated by `ckpt-restart` (see docs/terminals.md).
//!
//! Owns: opening a new pair (`/dev/ptmx`, unlock, `TIOCGPTPEER` for the slave), putting back
//! the bytes that were queued in each direction (input for the slave side with echo, editing
//! and mapping off, so nothing is echoed or cooked twice, and the saved EOFs made again; output
//! for the master with output processing off), then the saved attributes and window size; and,
//! for the tree
//! builder, which restored process must make the slave its controlling terminal and which
//! group is its foreground ([`ctty_of`]).
//!
//! Must never: block (both ends are non-blocking while refilled, waits are bounded) or leave
//! an fd below the plan's `high_fd`. The new pair has a new number: `ptsname()` in the
//! restored program names the new slave (not virtualized).

use anyhow::{Result, anyhow, bail};
use ckpt_format::image::{ObjKind, PtyObj, SharedObject};
use ckpt_format::tty::{refill, to_termios};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// `/dev/pts/N` opened again with the slave ends' flags (no controlling-terminal change), or
/// `/dev/null` with a warning when it is gone.
fn reopen_slave(
    p: &PtyObj,
    o: &SharedObject,
    high: i32,
    who: &str,
    warnings: &mut Vec<String>,
) -> Result<OwnedFd> {
    let path = format!("/dev/pts/{}", p.index);
    let fl = o.flags.get(1).copied().unwrap_or(0);
    let acc = if fl != 0 {
        fl & libc::O_ACCMODE
    } else {
        libc::O_RDWR
    };
    let c = std::ffi::CString::new(path.clone())?;
    // SAFETY: open with a NUL-terminated path.
    let mut fd = unsafe { libc::open(c.as_ptr(), acc | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        warnings.push(format!(
            "{who}: terminal {path} (not made by the program) cannot be reopened ({}); it is /dev/null now",
            last_err()
        ));
        // SAFETY: open with a NUL-terminated literal path.
        fd = unsafe { libc::open(c"/dev/null".as_ptr(), acc | libc::O_CLOEXEC) };
        if fd < 0 {
            bail!("{who}: /dev/null: {}", last_err());
        }
    }
    // SAFETY: fd is fresh and ours.
    let low = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: F_DUPFD_CLOEXEC on our fd.
    let n = unsafe { libc::fcntl(low.as_raw_fd(), libc::F_DUPFD_CLOEXEC, high) };
    if n < 0 {
        bail!("{who}: {path}: {}", last_err());
    }
    // SAFETY: fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// A new pair for `o`: (master, slave), both at or above `high`, close-on-exec, with the
/// saved bytes queued again and the saved attributes and window size.
pub fn make(
    o: &SharedObject,
    p: &PtyObj,
    high: i32,
    who: &str,
    warnings: &mut Vec<String>,
) -> Result<(Option<OwnedFd>, OwnedFd)> {
    if !o.has_data {
        // No process of the computation held the master: a terminal from outside that the
        // program opened by path. Reopen it by path (or /dev/null), as any character device.
        return Ok((None, reopen_slave(p, o, high, who, warnings)?));
    }
    // SAFETY: open with a NUL-terminated path.
    let m = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if m < 0 {
        bail!(
            "{who}: pty {}: cannot open /dev/ptmx: {}",
            p.index,
            last_err()
        );
    }
    // SAFETY: m is a fresh fd we own.
    let m = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK with a valid int unlocks the slave; TIOCGPTPEER opens it.
    let s = unsafe {
        libc::ioctl(m.as_raw_fd(), libc::TIOCSPTLCK, &unlock);
        libc::ioctl(
            m.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if s < 0 {
        bail!(
            "{who}: pty {}: cannot open the new slave: {}",
            p.index,
            last_err()
        );
    }
    // SAFETY: s is a fresh fd we own.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    let (mfd, sfd) = (m.as_raw_fd(), s.as_raw_fd());
    let attrs = to_termios(&p.attrs);
    refill(mfd, sfd, &attrs, &p.to_slave, &p.eofs, &o.data)
        .map_err(|e| anyhow!("{who}: pty {}: refilling: {e}", p.index))?;
    let w = p.attrs.winsize;
    let ws = libc::winsize {
        ws_row: w[0],
        ws_col: w[1],
        ws_xpixel: w[2],
        ws_ypixel: w[3],
    };
    // SAFETY: TCSETS/TIOCSWINSZ with valid structs; F_SETFL with the program's flags (the
    // description is shared by every holder of that end, as it was); TIOCPKT/TIOCSPTLCK with
    // valid ints.
    unsafe {
        if libc::ioctl(sfd, libc::TCSETS, &attrs) != 0 {
            bail!(
                "{who}: pty {}: cannot set its attributes: {}",
                p.index,
                last_err()
            );
        }
        libc::ioctl(sfd, libc::TIOCSWINSZ, &ws);
        for (fd, fl) in [(mfd, o.flags.first()), (sfd, o.flags.get(1))] {
            let fl = fl.copied().unwrap_or(0);
            libc::fcntl(fd, libc::F_SETFL, if fl != 0 { fl } else { libc::O_RDWR });
        }
        if p.packet {
            let on: libc::c_int = 1;
            libc::ioctl(mfd, libc::TIOCPKT, &on);
        }
        if p.locked {
            // Nobody had the slave open: lock it again, as the program left it.
            let lock: libc::c_int = 1;
            libc::ioctl(mfd, libc::TIOCSPTLCK, &lock);
        }
    }
    let up = |f: OwnedFd| -> Result<OwnedFd> {
        // SAFETY: F_DUPFD_CLOEXEC on our fd.
        let n = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_DUPFD_CLOEXEC, high) };
        if n < 0 {
            bail!("{who}: pty {}: {}", p.index, last_err());
        }
        // SAFETY: fresh fd we own.
        Ok(unsafe { OwnedFd::from_raw_fd(n) })
    };
    Ok((Some(up(m)?), up(s)?))
}

/// For a process with pid `pid` that calls `setsid()` at restart: the key of the pty that
/// was its session's controlling terminal, and the foreground group it had.
pub fn ctty_of(objects: &[SharedObject], pid: i32) -> Option<(u64, i32)> {
    objects.iter().find_map(|o| match &o.kind {
        // Only pairs the computation made (a slave reopened by path stays as it is).
        ObjKind::Pty(p) if p.ctty_sid == pid && pid > 0 && o.has_data => Some((o.key, p.fg_pgrp)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt_format::image::TermAttrs;

    fn attrs_of(fd: i32) -> TermAttrs {
        // SAFETY: zeroed termios/winsize are valid out-buffers.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: TCGETS into a valid termios.
        assert_eq!(unsafe { libc::ioctl(fd, libc::TCGETS, &mut t) }, 0);
        TermAttrs {
            iflag: t.c_iflag,
            oflag: t.c_oflag,
            cflag: t.c_cflag,
            lflag: t.c_lflag,
            line: t.c_line,
            cc: t.c_cc.to_vec(),
            winsize: [0; 4],
        }
    }

    fn read_once(fd: i32) -> Vec<u8> {
        let mut buf = [0u8; 256];
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        buf[..n.max(0) as usize].to_vec()
    }

    /// A fresh pty's attributes (canonical, echo on).
    fn fresh_attrs() -> TermAttrs {
        // SAFETY: opening a scratch pair to read default attributes from.
        let (m0, s0) = unsafe {
            let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            libc::unlockpt(m);
            let s = libc::ioctl(m, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY);
            (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s))
        };
        let attrs = attrs_of(s0.as_raw_fd());
        drop((m0, s0));
        attrs
    }

    /// A saved pty pair: its input (`to_slave`, with EOFs at `eofs`) and output (`output`).
    fn saved_pair(
        attrs: &TermAttrs,
        to_slave: &[u8],
        eofs: Vec<u32>,
        output: &[u8],
    ) -> (PtyObj, SharedObject) {
        let p = PtyObj {
            index: 99,
            attrs: attrs.clone(),
            to_slave: to_slave.to_vec(),
            eofs,
            ctty_sid: 0,
            fg_pgrp: 0,
            locked: false,
            packet: false,
        };
        let o = SharedObject {
            key: 1,
            kind: ObjKind::Pty(p.clone()),
            flags: vec![libc::O_RDWR, libc::O_RDWR | libc::O_NONBLOCK],
            offset: 0,
            has_data: true,
            data: output.to_vec(),
        };
        (p, o)
    }

    /// A new pair gets the saved bytes both ways (input line by line, the partial line still
    /// partial, nothing echoed), its attributes and window size.
    #[test]
    fn make_refills_a_new_pair() {
        // Saved attributes: a fresh pty's, 33x77.
        let mut attrs = fresh_attrs();
        attrs.winsize = [33, 77, 0, 0];
        let (p, o) = saved_pair(&attrs, b"one\ntwo\npart", Vec::new(), b"shown\r\n");
        let mut warnings = Vec::new();
        let (m, s) = make(&o, &p, 10, "test", &mut warnings).unwrap();
        let (m, s) = (m.unwrap(), s);
        assert!(m.as_raw_fd() >= 10 && s.as_raw_fd() >= 10);
        let got = attrs_of(s.as_raw_fd());
        assert_eq!(
            (got.lflag, got.iflag, got.oflag),
            (attrs.lflag, attrs.iflag, attrs.oflag)
        );
        // SAFETY: zeroed winsize, TIOCGWINSZ into it.
        let mut w: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCGWINSZ, &mut w) };
        assert_eq!((w.ws_row, w.ws_col), (33, 77));
        // Status flags as saved: the master blocking, the slave non-blocking.
        // SAFETY: F_GETFL on our fds.
        let (fm, fs) = unsafe {
            (
                libc::fcntl(m.as_raw_fd(), libc::F_GETFL),
                libc::fcntl(s.as_raw_fd(), libc::F_GETFL),
            )
        };
        assert_eq!(
            (fm & libc::O_NONBLOCK, fs & libc::O_NONBLOCK),
            (0, libc::O_NONBLOCK)
        );
        assert_eq!(read_once(s.as_raw_fd()), b"one\n");
        assert_eq!(read_once(s.as_raw_fd()), b"two\n");
        assert_eq!(
            read_once(s.as_raw_fd()),
            b"",
            "the partial line stays partial"
        );
        // The master reads exactly the saved output: no echo of the requeued input.
        assert_eq!(read_once(m.as_raw_fd()), b"shown\r\n");
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    /// Saved EOFs come back as EOFs in the new pair (the data has a ^D byte of its own, so
    /// another character plays VEOF during the refill); the attributes keep the saved VEOF.
    #[test]
    fn make_puts_eofs_back() {
        let attrs = fresh_attrs();
        let (p, o) = saved_pair(&attrs, b"abcx\x04y\nend\npar", vec![0, 3, 3, 7], b"");
        let mut warnings = Vec::new();
        let (_m, s) = make(&o, &p, 10, "test", &mut warnings).unwrap();
        assert_eq!(attrs_of(s.as_raw_fd()).cc, attrs.cc);
        let reads: Vec<Vec<u8>> = (0..6).map(|_| read_once(s.as_raw_fd())).collect();
        let want: [&[u8]; 6] = [b"", b"abc", b"", b"x\x04y\n", b"", b"end\n"];
        assert_eq!(reads, want);
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}
