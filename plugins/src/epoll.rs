//! epoll: an epoll fd comes back on its fd number with its close-on-exec flag and its whole
//! interest list: every (target fd, events, data) registration, with the `EPOLLET`,
//! `EPOLLONESHOT`, `EPOLLEXCLUSIVE` and `EPOLLWAKEUP` bits.
//!
//! The interest list is read from `/proc/self/fdinfo/EPFD` (`tfd: N events: X data: Y ...`
//! lines), not from an `epoll_ctl` wrapper, so registrations made through raw syscalls, by a
//! library or before `exec` are saved too. Each registration is checked with
//! `kcmp(KCMP_EPOLL_TFD)`: the kernel keys a registration by (file, fd number), and the
//! number may since have been closed or reused for another file while the file stays
//! registered (it is kept alive by a dup). Such a registration is re-created under its old
//! number through a temporary dup of a live fd of the same file; if no fd of this process
//! refers to that file any more, the registration is dropped with a warning.
//!
//! At restart this plugin runs after every other fd plugin (it is last in `lib.rs`), once
//! every target fd is back: first every epoll fd is created (`epoll_create1`) and moved to its
//! number, then the registrations are added (so an epoll registered in another epoll works).
//! A target that cannot be added (its kind was not restored and is `/dev/null` now, ...) is
//! skipped with a warning; the epoll fd itself always comes back.
//!
//! Not saved: readiness and the ready list. Adding a registration makes the kernel evaluate
//! the target's readiness again, so a level-triggered waiter sees what is pending, and an
//! edge-triggered one gets a fresh edge if data is pending (checked by tests/progs/event_fds.c).
//! A disarmed `EPOLLONESHOT` registration comes back armed for `EPOLLERR|EPOLLHUP` only (the
//! kernel adds those two to every registration). An epoll fd shared between processes (fork)
//! becomes one epoll per process.
//!
//! Runs with user threads frozen: syscalls, /proc reads and Rust allocation only; no glibc
//! malloc, no stdio, no locks.

use crate::api::{CkptContext, Plugin, RestartContext};
use crate::fdinfo;
use ckpt_format::image::{FdInfo, FdKind};

/// What `/proc/self/fd/N` shows for an epoll fd.
pub const EPOLL_LINK: &str = "anon_inode:[eventpoll]";

pub fn is_epoll(f: &FdInfo) -> bool {
    f.kind == FdKind::Other && f.path == EPOLL_LINK
}

/// One registration of the interest list.
struct Item {
    /// The fd number the registration is keyed by.
    tfd: i32,
    events: u32,
    data: u64,
    /// When `tfd` no longer refers to the registered file: a live fd of the same file.
    via: Option<i32>,
}

struct Saved {
    fd: i32,
    cloexec: bool,
    items: Vec<Item>,
}

#[derive(Default)]
pub struct EpollFds {
    saved: Vec<Saved>,
}

/// `struct kcmp_epoll_slot` of `<linux/kcmp.h>`.
#[repr(C)]
struct KcmpEpollSlot {
    efd: u32,
    tfd: u32,
    toff: u32,
}

const KCMP_EPOLL_TFD: i32 = 7;

/// Whether our fd `fd` is the file registered in epoll `efd` as the `toff`-th item of number
/// `tfd`. `None` if the kernel cannot tell (no kcmp).
fn same_as_target(fd: i32, efd: i32, tfd: i32, toff: u32) -> Option<bool> {
    let slot = KcmpEpollSlot {
        efd: efd as u32,
        tfd: tfd as u32,
        toff,
    };
    let me = crate::api::real_pid();
    // SAFETY: kcmp reads the slot from our stack and touches no other memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            me,
            me,
            KCMP_EPOLL_TFD,
            fd,
            &slot as *const KcmpEpollSlot,
        )
    };
    match r {
        0 => Some(true),
        r if r > 0 => Some(false),
        // ENOENT/EBADF: `fd` is not open; anything else: kcmp cannot answer.
        _ => match fdinfo::errno().raw_os_error() {
            Some(libc::EBADF) => Some(false),
            _ => None,
        },
    }
}

/// Fallback without kcmp: `fd` is open and is the same inode as the registration.
fn same_inode(fd: i32, ino: u64, sdev: u64) -> bool {
    // SAFETY: fstat into a zeroed buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    let ok = unsafe { libc::fstat(fd, &mut st) } == 0;
    ok && st.st_ino == ino && st.st_dev == fdinfo::kdev_to_user(sdev)
}

/// Parses one `tfd:` line: (tfd, events, data, ino, sdev).
fn parse_tfd(line: &str) -> Option<(i32, u32, u64, u64, u64)> {
    let p = fdinfo::pairs(line);
    let get = |k: &str| p.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    Some((
        get("tfd")?.parse().ok()?,
        fdinfo::hex(get("events")?)? as u32,
        fdinfo::hex(get("data")?)?,
        get("ino").and_then(fdinfo::hex).unwrap_or(0),
        get("sdev").and_then(fdinfo::hex).unwrap_or(0),
    ))
}

impl Plugin for EpollFds {
    fn name(&self) -> &'static str {
        "epoll"
    }

    fn checkpoint(&mut self, ctx: &mut CkptContext) -> Result<(), String> {
        self.saved.clear();
        let fds: Vec<i32> = ctx.header.fds.iter().map(|f| f.fd).collect();
        for f in ctx.header.fds.iter().filter(|f| is_epoll(f)) {
            let text = fdinfo::read(f.fd);
            let mut items = Vec::new();
            let mut seen: Vec<i32> = Vec::new();
            for line in text.lines().filter(|l| l.starts_with("tfd:")) {
                let Some((tfd, events, data, ino, sdev)) = parse_tfd(line) else {
                    ctx.warnings.push(format!(
                        "epoll fd {}: cannot parse {line:?}; that registration is lost",
                        f.fd
                    ));
                    continue;
                };
                let toff = seen.iter().filter(|&&t| t == tfd).count() as u32;
                seen.push(tfd);
                let live = match same_as_target(tfd, f.fd, tfd, toff) {
                    Some(b) => b,
                    None => same_inode(tfd, ino, sdev),
                };
                let via = if live {
                    None
                } else {
                    let alias = fds
                        .iter()
                        .copied()
                        .find(|&g| g != tfd && same_as_target(g, f.fd, tfd, toff) == Some(true));
                    if alias.is_none() {
                        ctx.warnings.push(format!(
                            "epoll fd {}: the file registered as fd {tfd} is no longer open in \
                             this process; that registration is dropped at restart",
                            f.fd
                        ));
                        continue;
                    }
                    alias
                };
                items.push(Item {
                    tfd,
                    events,
                    data,
                    via,
                });
            }
            self.saved.push(Saved {
                fd: f.fd,
                cloexec: f.cloexec,
                items,
            });
        }
        Ok(())
    }

    fn restart(&mut self, ctx: &mut RestartContext) -> Result<(), String> {
        for s in &self.saved {
            // SAFETY: creating a new epoll instance.
            let nfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if nfd < 0 {
                ctx.warnings.push(format!(
                    "epoll: fd {}: epoll_create1: {}; it is /dev/null now",
                    s.fd,
                    fdinfo::errno()
                ));
                fdinfo::dev_null_on(s.fd, s.cloexec)?;
                continue;
            }
            fdinfo::put_on(nfd, s.fd, s.cloexec)?;
        }
        for s in &self.saved {
            for it in &s.items {
                if let Err(e) = add(s.fd, it) {
                    ctx.warnings.push(format!(
                        "epoll fd {}: cannot register fd {} again ({e}); it is left out",
                        s.fd, it.tfd
                    ));
                }
            }
        }
        Ok(())
    }
}

fn ctl_add(epfd: i32, tfd: i32, it: &Item) -> Result<(), String> {
    let mut ev = libc::epoll_event {
        events: it.events,
        u64: it.data,
    };
    // SAFETY: registering fd `tfd` in our epoll with an event struct on our stack.
    if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, tfd, &mut ev) } != 0 {
        return Err(format!("epoll_ctl: {}", fdinfo::errno()));
    }
    Ok(())
}

/// Re-registers one item. A registration keyed by a number that no longer names its file
/// (`via`) is made with that file temporarily dup'ed onto the number, then the number gets
/// back what it had (or is closed again).
fn add(epfd: i32, it: &Item) -> Result<(), String> {
    let Some(via) = it.via else {
        if !fdinfo::is_open(it.tfd) {
            return Err("that fd was not restored".into());
        }
        return ctl_add(epfd, it.tfd, it);
    };
    let occupied = fdinfo::is_open(it.tfd);
    let (occ, occ_cloexec) = if occupied {
        // SAFETY: F_GETFD / F_DUPFD_CLOEXEC on an open fd.
        let cl = unsafe { libc::fcntl(it.tfd, libc::F_GETFD) } & libc::FD_CLOEXEC != 0;
        // SAFETY: as above; the copy gets a free number.
        let occ = unsafe { libc::fcntl(it.tfd, libc::F_DUPFD_CLOEXEC, 0) };
        if occ < 0 {
            return Err(format!("dup: {}", fdinfo::errno()));
        }
        (occ, cl)
    } else {
        (-1, false)
    };
    // SAFETY: putting the registered file on its old number (what was there is saved in occ).
    let r = unsafe { libc::dup3(via, it.tfd, libc::O_CLOEXEC) };
    let result = if r < 0 {
        Err(format!("dup3: {}", fdinfo::errno()))
    } else {
        // The epoll fd itself may be the number being borrowed.
        let ep = if it.tfd == epfd { occ } else { epfd };
        ctl_add(ep, it.tfd, it)
    };
    if occupied {
        let fl = if occ_cloexec { libc::O_CLOEXEC } else { 0 };
        // SAFETY: giving the number back to its owner and dropping our copy.
        unsafe {
            libc::dup3(occ, it.tfd, fl);
            libc::close(occ);
        }
    } else if r >= 0 {
        // SAFETY: the number was free before; the file stays open on `via`.
        unsafe { libc::close(it.tfd) };
    }
    result
}
