//! Terminals: the terminal the computation runs in, and pseudo-terminal pairs the program made.
//!
//! Owns (see docs/terminals.md):
//! - **Outside terminals** (fds re-inherited from `ckpt-restart`, see the files plugin, and
//!   `/dev/tty`, reopened by path): at
//!   checkpoint each records its attributes, window size, whether it is the process's
//!   controlling terminal and whether the process's group is in the foreground
//!   ([`TermFd`], kept in this plugin's memory, which the restart brings back, and in the
//!   header for inspection). At restart the attributes are applied to the new terminal only
//!   where the program had changed them from what the terminal had at launch, or at its exec
//!   (the *baseline*, keyed by the terminal's device number; none known: applied) (a full-screen
//!   program gets its raw mode back; a program that never touched the terminal leaves the
//!   user's settings alone), the same for the window size; and a process whose group was
//!   in the foreground makes its group the foreground of the new terminal (`TIOCSPGRP` with
//!   `SIGTTOU` blocked, so nobody stops) and gets a `SIGWINCH`, so a full-screen program
//!   redraws the new, blank terminal. Input typed and not read yet is saved by one
//!   foreground process (read through a new description, put straight back with `TIOCSTI`)
//!   and put into the new terminal at restart the same way, EOFs (^D) included.
//! - **Ptys made by the program** (`/dev/ptmx`, `posix_openpt`, `openpty`): every fd on the
//!   master or a slave becomes a reference to one shared object ([`ObjKind::Pty`]) keyed by
//!   the pty number; `ckpt-restart` makes a new pair, refills it and installs it (launcher
//!   `ptys.rs`). A holder of the master drains both directions through a second slave fd
//!   (`TIOCGPTPEER`): what the master can read (consumed with the description briefly
//!   non-blocking) and what the slave can read (line by line in canonical mode, so queued EOFs
//!   are told from NUL bytes: [`read_input`](ckpt_format::tty::read_input)), then writes both
//!   back at once under [`quiet_termios`](ckpt_format::tty::quiet_termios) (echo, editing and mapping off, canonical mode kept,
//!   so line boundaries survive) and waits until the kernel shows them queued again, so a
//!   checkpoint without restart leaves the same bytes. A slave nobody in the computation had
//!   the master of is reopened by path by `ckpt-restart`. Also here: `forkpty`, rebuilt on our
//!   `fork` (glibc's forks behind the fork wrapper's back).
//!
//! Must never: block (every fd it reads is non-blocking, every wait is bounded), touch glibc's
//! malloc, stdio or locks (user threads are frozen), or change what a running program can see
//! once the checkpoint is over (flags and attributes it changes are put back).

use crate::api::{CkptContext, Plugin, RestartContext};
use ckpt_format::image::{FdKind, ObjKind, ObjRef, PtyObj, SharedObject, TermAttrs, TermFd};
use ckpt_format::tty::{can_inject, inject, read_input, refill, set_termios, to_termios};

/// What a pty's drain saw (and put back).
struct Drained {
    /// Input for the slave side, and where EOFs were queued in it (see
    /// [`read_input`](ckpt_format::tty::read_input)).
    to_slave: Vec<u8>,
    eofs: Vec<u32>,
    /// Output for the master.
    to_master: Vec<u8>,
    /// The slave's attributes and window size.
    attrs: TermAttrs,
}

#[derive(Default)]
pub struct Terminals {
    /// (device number, attributes) of each terminal found open at startup (or at the last
    /// restart): the baseline the restart compares with.
    launch: Vec<(u64, TermAttrs)>,
    /// What the last checkpoint saw (restored with the process's memory at restart).
    saved: Vec<TermFd>,
}

/// `/dev/tty` (the process's controlling terminal, reopened by path at restart).
const DEV_TTY: (u32, u32) = (5, 0);
const PTMX_MAJOR: u32 = 5;
const PTMX_MINOR: u32 = 2;

/// Attributes and window size of terminal `fd`; `None` if it is not a terminal.
pub fn get_attrs(fd: i32) -> Option<TermAttrs> {
    // SAFETY: zeroed termios/winsize are valid out-buffers for TCGETS/TIOCGWINSZ.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd, libc::TCGETS, &mut t) } != 0 {
        return None;
    }
    // SAFETY: as above.
    let mut w: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut w) };
    Some(TermAttrs {
        iflag: t.c_iflag,
        oflag: t.c_oflag,
        cflag: t.c_cflag,
        lflag: t.c_lflag,
        line: t.c_line,
        cc: t.c_cc.to_vec(),
        winsize: [w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel],
    })
}

fn set_winsize(fd: i32, w: [u16; 4]) -> bool {
    let ws = libc::winsize {
        ws_row: w[0],
        ws_col: w[1],
        ws_xpixel: w[2],
        ws_ypixel: w[3],
    };
    // SAFETY: TIOCSWINSZ with a valid winsize.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) == 0 }
}

fn same_termios(a: &TermAttrs, b: &TermAttrs) -> bool {
    (a.iflag, a.oflag, a.cflag, a.lflag, a.line, &a.cc)
        == (b.iflag, b.oflag, b.cflag, b.lflag, b.line, &b.cc)
}

fn fstat(fd: i32) -> Option<libc::stat> {
    // SAFETY: fstat into a zeroed buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st)
}

fn major_minor(rdev: u64) -> (u32, u32) {
    (libc::major(rdev), libc::minor(rdev))
}

/// From `/proc/<pid>/stat`: the process's group, its controlling terminal's device number
/// (`tty_nr`, 0: none) and that terminal's foreground group (`tpgid`).
fn proc_tty(pid: &str) -> (i64, u64, i64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // state ppid pgrp session tty_nr tpgid
    let f: Vec<i64> = after
        .split_whitespace()
        .skip(1)
        .take(5)
        .map(|v| v.parse::<i64>().unwrap_or(0))
        .collect();
    let field = |i: usize| f.get(i).copied().unwrap_or(0);
    let nr = field(3) as u64;
    // tty_nr packs major in bits 8-15 and minor in bits 0-7 and 20-31.
    let rdev = libc::makedev(
        ((nr >> 8) & 0xfff) as u32,
        ((nr & 0xff) | ((nr >> 12) & 0xfff00)) as u32,
    );
    (field(1), rdev, field(4))
}

/// The device number of the terminal behind `st`: its own, or for `/dev/tty` the
/// controlling terminal's (`tty_nr` of /proc/self/stat).
fn tty_rdev(st: &libc::stat) -> u64 {
    if major_minor(st.st_rdev) != DEV_TTY {
        return st.st_rdev;
    }
    proc_tty("self").1
}

/// Whether a process of the computation with a lower vpid saves the input of terminal `rdev`
/// (it qualifies as we do: `rdev` is its controlling terminal, its group is the foreground, it
/// has the terminal open): every process runs its hooks at once, and only one may drain it.
fn input_saved_by_lower_peer(ctx: &CkptContext, rdev: u64) -> bool {
    ctx.peers.iter().filter(|p| p.vpid < ctx.vpid).any(|p| {
        let (pgrp, ctty, tpgid) = proc_tty(&p.pid.to_string());
        if ctty != rdev || pgrp != tpgid {
            return false;
        }
        let mut fds = Vec::new();
        let Ok(dir) = std::ffi::CString::new(format!("/proc/{}/fd", p.pid)) else {
            return false;
        };
        let _ = crate::rawdir::list_numeric_dir(&dir, &mut fds);
        fds.iter().any(|n| {
            std::fs::metadata(format!("/proc/{}/fd/{n}", p.pid)).is_ok_and(|m| {
                use std::os::unix::fs::MetadataExt;
                m.rdev() == rdev || major_minor(m.rdev()) == DEV_TTY
            })
        })
    })
}

/// A new non-blocking, readable (`TIOCSTI` wants that) description of terminal `fd`, opened
/// through `/proc/self/fd`; the caller closes it.
fn reopen(fd: i32) -> Result<i32, String> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).map_err(|e| e.to_string())?;
    // SAFETY: open with a NUL-terminated path.
    let own = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if own < 0 {
        return Err(format!(
            "cannot open terminal fd {fd} again: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(own)
}

/// Saves and puts straight back the input queued on terminal `fd` (the one the computation
/// runs in, our controlling terminal, our group in its foreground): read through a new
/// non-blocking description of it (line by line in canonical mode, so EOFs are kept: see
/// [`read_input`]) and queued again with `TIOCSTI`, echo off. Returns the input and its EOFs.
fn save_outside_input(fd: i32, attrs: &TermAttrs) -> Result<(Vec<u8>, Vec<u32>), String> {
    let own = reopen(fd)?;
    let orig = to_termios(attrs);
    let old = block_tty_signals();
    let (input, eofs) = read_input(own, &orig);
    let r = if input.is_empty() && eofs.is_empty() {
        set_termios(own, &orig);
        Ok(())
    } else {
        inject(own, &orig, &orig, &input, &eofs)
    };
    restore_mask(&old);
    // SAFETY: closing our own fd.
    unsafe { libc::close(own) };
    r.map(|_| (input, eofs))
        .map_err(|e| format!("fd {fd}: the input typed on the terminal could not be put back: {e}"))
}

/// The pty number of a slave device (`/dev/pts/N`), if `rdev` is one (majors 136-143).
fn slave_index(rdev: u64) -> Option<u32> {
    let (ma, mi) = major_minor(rdev);
    (136..=143).contains(&ma).then(|| (ma - 136) * 256 + mi)
}

/// Blocks `SIGTTOU` and `SIGTTIN` on this thread; returns the old mask.
pub fn block_tty_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on local values, then pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTTOU);
        libc::sigaddset(&mut set, libc::SIGTTIN);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    }
}

pub fn restore_mask(old: &libc::sigset_t) {
    // SAFETY: putting back the mask block_tty_signals returned.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
}

/// Reads everything `fd` (non-blocking) has to give.
fn read_all(fd: i32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reading into a local buffer.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..r as usize]);
    }
    out
}

/// Whether a process of the computation with a lower vpid holds the same open master
/// description as our `fd` (`kcmp(KCMP_FILE)` against its `/dev/ptmx` fds).
fn held_by_lower_peer(ctx: &CkptContext, fd: i32) -> bool {
    let me = crate::api::real_pid();
    for p in ctx.peers.iter().filter(|p| p.vpid < ctx.vpid) {
        let mut fds = Vec::new();
        let Ok(dir) = std::ffi::CString::new(format!("/proc/{}/fd", p.pid)) else {
            continue;
        };
        let _ = crate::rawdir::list_numeric_dir(&dir, &mut fds);
        for n in fds {
            let link = std::fs::read_link(format!("/proc/{}/fd/{n}", p.pid)).unwrap_or_default();
            if !link.to_string_lossy().ends_with("ptmx") {
                continue;
            }
            const KCMP_FILE: i32 = 0;
            // SAFETY: kcmp compares kernel objects; no memory is touched.
            if unsafe { libc::syscall(libc::SYS_kcmp, me, p.pid, KCMP_FILE, fd, n) } == 0 {
                return true;
            }
        }
    }
    false
}

impl Terminals {
    fn baseline(&self, rdev: u64) -> Option<TermAttrs> {
        self.launch
            .iter()
            .find(|(d, _)| *d == rdev)
            .map(|(_, a)| a.clone())
    }

    fn remember(&mut self, rdev: u64, a: TermAttrs) {
        if rdev != 0 && self.baseline(rdev).is_none() {
            self.launch.push((rdev, a));
        }
    }

    /// Drains a pty whose master is `fd` (see the module doc) and puts the bytes back.
    fn drain_master(fd: i32) -> Result<Drained, String> {
        // SAFETY: TIOCGPTPEER opens a new slave fd for this master (Linux >= 4.13).
        let peer = unsafe {
            libc::ioctl(
                fd,
                libc::TIOCGPTPEER,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if peer < 0 {
            return Err(format!(
                "fd {fd}: cannot open the slave of a pty master (TIOCGPTPEER): {}",
                std::io::Error::last_os_error()
            ));
        }
        let attrs = get_attrs(peer).unwrap_or_default();
        let orig = to_termios(&attrs);
        // SAFETY: F_GETFL on the program's master.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: making the (frozen) program's description non-blocking for the drain; put
        // back below.
        unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) };
        let old = block_tty_signals();
        // Packet mode puts a status byte before every read's data: off while draining.
        let mut pkt: libc::c_int = 0;
        // SAFETY: TIOCGPKT into a valid int; TIOCPKT with a valid int.
        let packet = unsafe { libc::ioctl(fd, libc::TIOCGPKT, &mut pkt) } == 0 && pkt != 0;
        let off: libc::c_int = 0;
        if packet {
            // SAFETY: TIOCPKT with a valid int (put back below).
            unsafe { libc::ioctl(fd, libc::TIOCPKT, &off) };
        }
        let to_master = read_all(fd);
        let (to_slave, eofs) = read_input(peer, &orig);
        let r = refill(fd, peer, &orig, &to_slave, &eofs, &to_master);
        if packet {
            let on: libc::c_int = 1;
            // SAFETY: TIOCPKT with a valid int: packet mode back on.
            unsafe { libc::ioctl(fd, libc::TIOCPKT, &on) };
        }
        restore_mask(&old);
        // SAFETY: putting back the program's flags; closing our peer fd.
        unsafe {
            libc::fcntl(fd, libc::F_SETFL, fl);
            libc::close(peer);
        }
        r.map(|_| Drained {
            to_slave,
            eofs,
            to_master,
            attrs,
        })
    }

    fn pty_object(
        &mut self,
        ctx: &mut CkptContext,
        i: usize,
        index: u32,
        master: bool,
    ) -> Result<(), String> {
        let fd = ctx.header.fds[i].fd;
        let key = crate::files::obj_key("pty", &[index as u64]);
        ctx.header.fds[i].object = Some(ObjRef {
            key,
            end: u8::from(!master),
        });
        let have = ctx.header.objects.iter().position(|o| o.key == key);
        let end = usize::from(!master);
        // Several processes may hold the master (inherited across fork): only the one with
        // the lowest vpid drains it (the others run their hooks at the same time).
        let drain = master && !held_by_lower_peer(ctx, fd);
        let fl = ctx.header.fds[i].flags;
        if let Some(k) = have {
            let o = &mut ctx.header.objects[k];
            if o.flags.len() == 2 && o.flags[end] == 0 {
                o.flags[end] = fl;
            }
            if o.has_data || !drain {
                return Ok(());
            }
        }
        let mut flags = have
            .map(|k| ctx.header.objects[k].flags.clone())
            .filter(|f| f.len() == 2)
            .unwrap_or_else(|| vec![0, 0]);
        flags[end] = fl;
        let mut p = PtyObj {
            index,
            attrs: get_attrs(fd).unwrap_or_default(),
            to_slave: Vec::new(),
            eofs: Vec::new(),
            ctty_sid: 0,
            fg_pgrp: 0,
            locked: false,
            packet: false,
        };
        let mut data = Vec::new();
        let mut lock: libc::c_int = 0;
        // SAFETY: TIOCGPTLCK into a valid int.
        p.locked =
            master && unsafe { libc::ioctl(fd, libc::TIOCGPTLCK, &mut lock) } == 0 && lock != 0;
        let mut pkt: libc::c_int = 0;
        // SAFETY: TIOCGPKT into a valid int.
        p.packet = master && unsafe { libc::ioctl(fd, libc::TIOCGPKT, &mut pkt) } == 0 && pkt != 0;
        if drain && !p.locked {
            match Self::drain_master(fd) {
                Ok(d) => {
                    p.to_slave = d.to_slave;
                    p.eofs = d.eofs;
                    data = d.to_master;
                    p.attrs = d.attrs;
                }
                Err(e) => ctx.warnings.push(format!(
                    "{e}; the bytes queued in pty {index} are not saved"
                )),
            }
        }
        let mut sid: libc::pid_t = 0;
        // SAFETY: TIOCGSID into a valid pid_t (fails unless the pty is somebody's ctty).
        if unsafe { libc::ioctl(fd, libc::TIOCGSID, &mut sid) } == 0 {
            p.ctty_sid = sid;
            let mut pg: libc::pid_t = 0;
            // SAFETY: TIOCGPGRP into a valid pid_t.
            if unsafe { libc::ioctl(fd, libc::TIOCGPGRP, &mut pg) } == 0 {
                p.fg_pgrp = pg;
            }
        }
        let obj = SharedObject {
            key,
            kind: ObjKind::Pty(p),
            flags,
            offset: 0,
            has_data: drain,
            data,
        };
        match have {
            Some(k) => ctx.header.objects[k] = obj,
            None => ctx.header.objects.push(obj),
        }
        Ok(())
    }
}

impl Plugin for Terminals {
    fn name(&self) -> &'static str {
        "terminals"
    }

    fn init(&mut self) {
        let mut fds = Vec::new();
        let _ = crate::rawdir::list_numeric_dir(c"/proc/self/fd", &mut fds);
        for fd in fds {
            if let (Some(st), Some(a)) = (fstat(fd), get_attrs(fd)) {
                self.remember(tty_rdev(&st), a);
            }
        }
    }

    fn checkpoint(&mut self, ctx: &mut CkptContext) -> Result<(), String> {
        self.saved.clear();
        // SAFETY: raw getpgid(0): the kernel's group of this process.
        let pgrp = unsafe { libc::syscall(libc::SYS_getpgid, 0) } as libc::pid_t;
        let mut drained: Vec<u64> = Vec::new();
        for i in 0..ctx.header.fds.len() {
            let f = &ctx.header.fds[i];
            if f.kind != FdKind::CharDevice {
                continue;
            }
            let fd = f.fd;
            let Some(st) = fstat(fd) else { continue };
            if crate::files::reinherited(f) || major_minor(st.st_rdev) == DEV_TTY {
                let Some(attrs) = get_attrs(fd) else { continue };
                let mut sid: libc::pid_t = 0;
                // SAFETY: TIOCGSID into a valid pid_t; fails unless it is our ctty.
                let ctty = unsafe { libc::ioctl(fd, libc::TIOCGSID, &mut sid) } == 0;
                let mut fg: libc::pid_t = 0;
                // SAFETY: TIOCGPGRP into a valid pid_t.
                let foreground =
                    ctty && unsafe { libc::ioctl(fd, libc::TIOCGPGRP, &mut fg) } == 0 && fg == pgrp;
                let rdev = tty_rdev(&st);
                // The input typed and not read yet: saved by one foreground process.
                let (mut input, mut eofs) = (Vec::new(), Vec::new());
                if ctty
                    && foreground
                    && !drained.contains(&rdev)
                    && can_inject()
                    && !input_saved_by_lower_peer(ctx, rdev)
                {
                    drained.push(rdev);
                    match save_outside_input(fd, &attrs) {
                        Ok((i, e)) => (input, eofs) = (i, e),
                        Err(e) => ctx.warnings.push(e),
                    }
                }
                self.saved.push(TermFd {
                    fd,
                    attrs,
                    launch: self.baseline(rdev),
                    ctty,
                    foreground,
                    input,
                    eofs,
                });
                continue;
            }
            let (ma, mi) = major_minor(st.st_rdev);
            if (ma, mi) == (PTMX_MAJOR, PTMX_MINOR) {
                let mut n: libc::c_uint = 0;
                // SAFETY: TIOCGPTN into a valid uint.
                if unsafe { libc::ioctl(fd, libc::TIOCGPTN, &mut n) } != 0 {
                    continue;
                }
                self.pty_object(ctx, i, n, true)?;
            } else if let Some(n) = slave_index(st.st_rdev) {
                self.pty_object(ctx, i, n, false)?;
            }
        }
        ctx.header.terminals = self.saved.clone();
        Ok(())
    }

    fn restart(&mut self, ctx: &mut RestartContext) -> Result<(), String> {
        let old = block_tty_signals();
        // The new terminals' own settings are the baseline from now on.
        let saved = std::mem::take(&mut self.saved);
        self.launch.clear();
        // SAFETY: raw getpgid(0).
        let pgrp = unsafe { libc::syscall(libc::SYS_getpgid, 0) } as libc::pid_t;
        for t in &saved {
            if !ctx
                .fds
                .iter()
                .any(|f| f.fd == t.fd && (crate::files::reinherited(f) || f.path == "/dev/tty"))
            {
                continue;
            }
            let (Some(st), Some(cur)) = (fstat(t.fd), get_attrs(t.fd)) else {
                continue; // ckpt-restart's fd there is no terminal: nothing to apply
            };
            self.remember(tty_rdev(&st), cur.clone());
            // The program changed the attributes since launch (or we do not know).
            let changed = t.launch.as_ref().is_none_or(|l| !same_termios(l, &t.attrs));
            if changed && !same_termios(&cur, &t.attrs) && !set_termios(t.fd, &to_termios(&t.attrs))
            {
                ctx.warnings.push(format!(
                    "fd {}: cannot restore the terminal's attributes: {}",
                    t.fd,
                    std::io::Error::last_os_error()
                ));
            }
            if t.launch
                .as_ref()
                .is_none_or(|l| l.winsize != t.attrs.winsize)
                && cur.winsize != t.attrs.winsize
            {
                set_winsize(t.fd, t.attrs.winsize);
            }
            let mut sid: libc::pid_t = 0;
            // SAFETY: TIOCGSID into a valid pid_t.
            let ctty = unsafe { libc::ioctl(t.fd, libc::TIOCGSID, &mut sid) } == 0;
            let mut fg: libc::pid_t = 0;
            // SAFETY: TIOCGPGRP into a valid pid_t.
            let cur_fg = unsafe { libc::ioctl(t.fd, libc::TIOCGPGRP, &mut fg) } == 0;
            // SAFETY: TIOCSPGRP with SIGTTOU blocked (no stop even from the background).
            if t.foreground
                && ctty
                && cur_fg
                && fg != pgrp
                && unsafe { libc::ioctl(t.fd, libc::TIOCSPGRP, &pgrp) } != 0
            {
                ctx.warnings.push(format!(
                    "fd {}: cannot make group {pgrp} the terminal's foreground: {}",
                    t.fd,
                    std::io::Error::last_os_error()
                ));
            }
            if !t.input.is_empty() || !t.eofs.is_empty() {
                // Typed on the old terminal, not read yet: into the new one, as if typed there.
                let now = get_attrs(t.fd).unwrap_or(cur);
                let r = if !ctty {
                    Err("it is not the process's controlling terminal".to_string())
                } else if !can_inject() {
                    Err("TIOCSTI is off (sysctl dev.tty.legacy_tiocsti = 0)".to_string())
                } else {
                    reopen(t.fd).and_then(|own| {
                        let r = inject(
                            own,
                            &to_termios(&t.attrs),
                            &to_termios(&now),
                            &t.input,
                            &t.eofs,
                        );
                        // SAFETY: closing our own fd.
                        unsafe { libc::close(own) };
                        r
                    })
                };
                if let Err(e) = r {
                    ctx.warnings.push(format!(
                        "fd {}: {} bytes and {} EOFs typed on the old terminal and not read are lost: {e}",
                        t.fd,
                        t.input.len(),
                        t.eofs.len()
                    ));
                }
            }
        }
        restore_mask(&old);
        if saved.iter().any(|t| t.foreground) {
            // The new terminal shows nothing of the program yet: a window-size change is the
            // usual signal for a full-screen program to redraw (ignored by default).
            // SAFETY: a signal to ourselves, delivered once user threads run.
            unsafe { libc::kill(crate::api::real_pid(), libc::SIGWINCH) };
        }
        Ok(())
    }
}

/// `forkpty(3)`: glibc's forks with an internal call that our `fork` wrapper never sees (the
/// child would run on as an unregistered copy of its parent). Same contract, built on
/// `openpty`, our `fork` and `login_tty`.
///
/// # Safety
/// As `forkpty(3)`: `amaster` must be valid; `name`, `termp`, `winp` null or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn forkpty(
    amaster: *mut libc::c_int,
    name: *mut libc::c_char,
    termp: *const libc::termios,
    winp: *const libc::winsize,
) -> libc::pid_t {
    let (mut m, mut s) = (-1, -1);
    // SAFETY: the caller's pointers, passed on as openpty(3) takes them.
    if unsafe { libc::openpty(&mut m, &mut s, name, termp, winp) } != 0 {
        return -1;
    }
    // SAFETY: our fork wrapper (the symbol resolves to libckpt.so's own `fork`).
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => {
            // SAFETY: closing the pair we opened.
            unsafe {
                libc::close(m);
                libc::close(s);
            }
            -1
        }
        0 => {
            // SAFETY: in the child: drop the master, make the slave our terminal and stdio.
            unsafe {
                libc::close(m);
                if libc::login_tty(s) != 0 {
                    libc::_exit(1);
                }
            }
            0
        }
        _ => {
            // SAFETY: the caller's out-pointer; closing our copy of the slave.
            unsafe {
                *amaster = m;
                libc::close(s);
            }
            pid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt_format::tty::{flush_input, wait_inq, write_all};

    fn pty() -> (i32, i32) {
        // SAFETY: opening a pty pair for the test; fds closed at the end of each test.
        unsafe {
            let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(m >= 0, "posix_openpt");
            libc::grantpt(m);
            libc::unlockpt(m);
            let s = libc::ioctl(
                m,
                libc::TIOCGPTPEER,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK,
            );
            assert!(s >= 0, "TIOCGPTPEER");
            (m, s)
        }
    }

    fn read_once(fd: i32) -> Vec<u8> {
        let mut buf = [0u8; 256];
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        buf[..n.max(0) as usize].to_vec()
    }

    /// A checkpoint without restart leaves the pty as it found it: same input lines (one per
    /// canonical read, the partial line still partial), same output, no echo, same flags.
    #[test]
    fn drain_leaves_the_pty_as_it_was() {
        let (m, s) = pty();
        // Canonical with echo on (the default); output processing on.
        write_all(m, b"one\ntwo\npart").unwrap();
        flush_input(s);
        write_all(s, b"out1\nout2").unwrap();
        let shown: &[u8] = b"one\r\ntwo\r\npartout1\r\nout2";
        assert!(wait_inq(m, shown.len()));
        let before = get_attrs(s).unwrap();
        // SAFETY: F_GETFL on our fd.
        let fl = unsafe { libc::fcntl(m, libc::F_GETFL) };
        let Drained {
            to_slave,
            eofs,
            to_master,
            attrs,
        } = Terminals::drain_master(m).unwrap();
        assert!(eofs.is_empty());
        assert_eq!(to_slave, b"one\ntwo\npart");
        // What the master had: the echo of the input, then the output (ONLCR applied once).
        assert_eq!(to_master, shown);
        assert_eq!(attrs, before);
        assert_eq!(get_attrs(s).unwrap(), before);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::fcntl(m, libc::F_GETFL) }, fl);
        // The slave reads the lines one at a time; the partial line is not readable.
        assert_eq!(read_once(s), b"one\n");
        assert_eq!(read_once(s), b"two\n");
        assert_eq!(read_once(s), b"");
        // The master reads the same bytes again, and nothing more (no second echo).
        // SAFETY: making our master non-blocking for the last reads.
        unsafe { libc::fcntl(m, libc::F_SETFL, fl | libc::O_NONBLOCK) };
        let mut again = Vec::new();
        loop {
            let b = read_once(m);
            if b.is_empty() {
                break;
            }
            again.extend(b);
        }
        assert_eq!(again, to_master);
        // SAFETY: closing our fds.
        unsafe {
            libc::close(s);
            libc::close(m);
        }
    }

    /// EOFs (^D) queued in canonical mode survive a drain as EOFs: "abc" then ^D reads "abc",
    /// a ^D alone reads 0 bytes, a real NUL byte stays a byte, the partial line stays partial.
    #[test]
    fn drain_keeps_queued_eofs() {
        let (m, s) = pty();
        // SAFETY: non-blocking reads on our slave.
        unsafe { libc::fcntl(s, libc::F_SETFL, libc::O_RDWR | libc::O_NONBLOCK) };
        write_all(m, b"abc\x04\x04x\0y\npar").unwrap();
        flush_input(s);
        assert!(wait_inq(s, 7));
        let before = get_attrs(s).unwrap();
        let d = Terminals::drain_master(m).unwrap();
        assert_eq!(d.to_slave, b"abcx\0y\npar");
        assert_eq!(d.eofs, [3, 3]);
        assert_eq!(get_attrs(s).unwrap(), before);
        for _ in 0..2 {
            assert_eq!(read_once(s), b"abc");
            assert_eq!(read_once(s), b"", "the lone EOF reads 0 bytes");
            assert_eq!(read_once(s), b"x\0y\n");
            // SAFETY: reading into a local buffer.
            let r = unsafe { libc::read(s, [0u8; 8].as_mut_ptr().cast(), 8) };
            assert_eq!(r, -1, "the partial line is not readable");
            // Once more after a second drain of the same bytes.
            write_all(m, b"t\nabc\x04\x04x\0y\npar").unwrap();
            flush_input(s);
            assert_eq!(read_once(s), b"part\n");
            let d = Terminals::drain_master(m).unwrap();
            assert_eq!(
                (d.to_slave.as_slice(), d.eofs.as_slice()),
                (&b"abcx\0y\npar"[..], &[3, 3][..])
            );
        }
        // SAFETY: closing our fds.
        unsafe {
            libc::close(s);
            libc::close(m);
        }
    }

    /// Packet mode survives a drain, and the saved bytes carry no status byte.
    #[test]
    fn drain_in_packet_mode() {
        let (m, s) = pty();
        let on: libc::c_int = 1;
        // SAFETY: TIOCPKT with a valid int on our master.
        assert_eq!(unsafe { libc::ioctl(m, libc::TIOCPKT, &on) }, 0);
        write_all(s, b"out").unwrap();
        assert!(wait_inq(m, 3));
        let to_master = Terminals::drain_master(m).unwrap().to_master;
        assert_eq!(to_master, b"out");
        let mut pkt: libc::c_int = 0;
        // SAFETY: TIOCGPKT into a valid int.
        assert_eq!(unsafe { libc::ioctl(m, libc::TIOCGPKT, &mut pkt) }, 0);
        assert_eq!(pkt, 1, "packet mode is on again");
        // In packet mode a read gives TIOCPKT_DATA (0) and then the data.
        assert_eq!(read_once(m), b"\0out");
        // SAFETY: closing our fds.
        unsafe {
            libc::close(s);
            libc::close(m);
        }
    }
}
