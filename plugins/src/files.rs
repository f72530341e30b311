//! File descriptors: regular files, directories and character devices are saved (path, flags,
//! offset) and reopened at restart on the same fd numbers.
//!
//! Policy (see docs/files.md):
//! - Regular files are reopened by path with their `F_GETFL` flags minus `O_CREAT|O_TRUNC|O_EXCL`
//!   and put back at their offset. Contents are not saved: the restarted process rewrites from
//!   its checkpoint offset (a file that grew after the checkpoint keeps its tail until the
//!   program overwrites it). A missing file is an error naming it.
//! - fds 0, 1, 2 and fds found open when the computation started ("pre-existing": inherited from
//!   outside, e.g. a pipe on fd 251 from a test harness) that are not regular files are
//!   re-inherited: at restart they are whatever `ckpt-restart` itself has on that number
//!   (its terminal, its pipes), or `/dev/null` if it has nothing there.
//! - Pipes created by the program belong to the pipes plugin. Other objects (sockets, event fds)
//!   belong to plugins that do not exist yet: the checkpoint warns and they become `/dev/null`
//!   after restart.
//!
//! Runs on the checkpoint thread with user threads frozen: raw /proc reads, no glibc malloc.

use crate::api::{CkptContext, Plugin, RestartContext};
use ckpt_format::image::{FdInfo, FdKind};
use std::ffi::CString;

#[derive(Default)]
pub struct Files {
    /// fds open when the computation started.
    preexisting: Vec<i32>,
}

fn list_fds() -> Vec<i32> {
    let mut v = Vec::new();
    let _ = crate::rawdir::list_numeric_dir(c"/proc/self/fd", &mut v);
    v.sort_unstable();
    v
}

fn kind_of(mode: u32) -> FdKind {
    match mode & libc::S_IFMT {
        libc::S_IFREG => FdKind::Regular,
        libc::S_IFDIR => FdKind::Directory,
        libc::S_IFCHR => FdKind::CharDevice,
        libc::S_IFIFO => FdKind::Pipe,
        libc::S_IFSOCK => FdKind::Socket,
        _ => FdKind::Other,
    }
}

/// Saves one fd; `None` if it vanished meanwhile.
fn inspect(fd: i32, preexisting: bool) -> Option<FdInfo> {
    // SAFETY: fstat into a zeroed stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kind = kind_of(st.st_mode);
    let (path, deleted) = match link.strip_suffix(" (deleted)") {
        Some(p) if kind == FdKind::Regular && st.st_nlink == 0 => (p.to_string(), true),
        _ => (link, false),
    };
    // SAFETY: plain fcntl queries on an fd we just fstat'ed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    let fdflags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    let offset = if matches!(kind, FdKind::Regular | FdKind::Directory) {
        // SAFETY: lseek(SEEK_CUR) does not move the offset.
        unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) }
    } else {
        0
    };
    Some(FdInfo {
        fd,
        kind,
        path,
        deleted,
        flags,
        cloexec: fdflags >= 0 && fdflags & libc::FD_CLOEXEC != 0,
        offset,
        size: st.st_size as u64,
        preexisting,
        dev: st.st_dev,
        ino: st.st_ino,
        ..Default::default()
    })
}

/// Whether `ckpt-restart` hands this fd through as it is instead of reopening it.
pub fn reinherited(f: &FdInfo) -> bool {
    (f.fd <= 2 || f.preexisting) && !matches!(f.kind, FdKind::Regular | FdKind::Directory)
}

fn cstr(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("path {s:?} contains a NUL byte"))
}

fn open_dev_null(flags: i32) -> i32 {
    let acc = flags & libc::O_ACCMODE;
    // SAFETY: NUL-terminated literal path.
    unsafe { libc::open(c"/dev/null".as_ptr(), acc | libc::O_CLOEXEC) }
}

/// Puts `newfd` on number `fd` (closing `newfd`), with the saved close-on-exec flag.
fn install(newfd: i32, f: &FdInfo) -> Result<(), String> {
    if newfd < 0 {
        return Err(format!(
            "fd {}: cannot open {}: {}",
            f.fd,
            f.path,
            std::io::Error::last_os_error()
        ));
    }
    if newfd != f.fd {
        let fl = if f.cloexec { libc::O_CLOEXEC } else { 0 };
        // SAFETY: both fds are valid numbers; dup3 replaces whatever is on f.fd.
        if unsafe { libc::dup3(newfd, f.fd, fl) } < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: closing the temporary fd we opened.
            unsafe { libc::close(newfd) };
            return Err(format!("fd {}: dup3: {e}", f.fd));
        }
        // SAFETY: closing the temporary fd we opened.
        unsafe { libc::close(newfd) };
    } else if !f.cloexec {
        // SAFETY: clearing FD_CLOEXEC on our own fd.
        unsafe { libc::fcntl(f.fd, libc::F_SETFD, 0) };
    }
    Ok(())
}

fn restore_one(f: &FdInfo, warnings: &mut Vec<String>) -> Result<(), String> {
    match f.kind {
        FdKind::Regular | FdKind::Directory if !f.deleted => {
            let p = cstr(&f.path)?;
            let mut flags = f.flags & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL);
            if f.kind == FdKind::Directory {
                flags |= libc::O_DIRECTORY;
            }
            // SAFETY: NUL-terminated path; no mode needed without O_CREAT.
            let nfd = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) };
            if nfd < 0 {
                return Err(format!(
                    "fd {}: cannot reopen {}: {}",
                    f.fd,
                    f.path,
                    std::io::Error::last_os_error()
                ));
            }
            // SAFETY: positioning the fd we just opened.
            if unsafe { libc::lseek(nfd, f.offset, libc::SEEK_SET) } < 0
                && f.kind == FdKind::Regular
            {
                warnings.push(format!(
                    "fd {}: cannot seek {} to {}",
                    f.fd, f.path, f.offset
                ));
            }
            install(nfd, f)
        }
        _ if reinherited(f) => {
            // SAFETY: F_GETFD only probes whether the number is open.
            if unsafe { libc::fcntl(f.fd, libc::F_GETFD) } >= 0 {
                if f.cloexec {
                    // SAFETY: setting FD_CLOEXEC on an open fd.
                    unsafe { libc::fcntl(f.fd, libc::F_SETFD, libc::FD_CLOEXEC) };
                }
                Ok(())
            } else {
                install(open_dev_null(f.flags), f)
            }
        }
        FdKind::CharDevice if f.path.starts_with("/dev/") => {
            let p = cstr(&f.path)?;
            // SAFETY: NUL-terminated path.
            let nfd =
                unsafe { libc::open(p.as_ptr(), (f.flags & !libc::O_CREAT) | libc::O_CLOEXEC) };
            if nfd < 0 {
                warnings.push(format!(
                    "fd {}: cannot reopen {}; it is /dev/null now",
                    f.fd, f.path
                ));
                install(open_dev_null(f.flags), f)
            } else {
                install(nfd, f)
            }
        }
        _ => install(open_dev_null(f.flags), f),
    }
}

impl Plugin for Files {
    fn name(&self) -> &'static str {
        "files"
    }

    fn init(&mut self) {
        self.preexisting = list_fds().into_iter().filter(|&fd| fd > 2).collect();
    }

    fn checkpoint(&mut self, ctx: &mut CkptContext) -> Result<(), String> {
        let mut out = Vec::new();
        for fd in list_fds() {
            if ctx.core_fds.contains(&fd) {
                continue;
            }
            let Some(info) = inspect(fd, self.preexisting.contains(&fd)) else {
                continue;
            };
            match info.kind {
                FdKind::Regular if info.deleted => ctx.warnings.push(format!(
                    "fd {fd}: {} was deleted; its contents are not saved yet: it will be /dev/null after restart",
                    info.path
                )),
                FdKind::Regular | FdKind::Directory | FdKind::CharDevice => {}
                _ if reinherited(&info) => {}
                // The pipes and timerfd plugins save and recreate these.
                FdKind::Pipe => {}
                _ if crate::timerfd::is_timerfd(&info) => {}
                _ => ctx.warnings.push(format!(
                    "fd {fd} ({}) is not checkpointed yet: it will be /dev/null after restart",
                    info.path
                )),
            }
            out.push(info);
        }
        ctx.header.fds = out;
        Ok(())
    }

    fn restart(&mut self, ctx: &mut RestartContext) -> Result<(), String> {
        // Close whatever ckpt-restart left open that the image does not have (keeping the
        // numbers that are handed through and the core's own fds).
        for fd in list_fds() {
            let keep = ctx.core_fds.contains(&fd)
                || ctx.fds.iter().any(|f| f.fd == fd && reinherited(f))
                || fd <= 2;
            if !keep {
                // SAFETY: closing an fd that the restored program does not know about.
                unsafe { libc::close(fd) };
            }
        }
        for f in ctx.fds {
            if (f.kind == FdKind::Pipe && !reinherited(f)) || crate::timerfd::is_timerfd(f) {
                continue; // recreated by the pipes and timerfd plugins, which run next
            }
            if f.deleted {
                install(open_dev_null(f.flags), f)?;
                continue;
            }
            restore_one(f, ctx.warnings)?;
        }
        // fds 0-2 that were closed at checkpoint time are closed again.
        for fd in 0..=2 {
            if !ctx.fds.iter().any(|f| f.fd == fd) && !ctx.core_fds.contains(&fd) {
                // SAFETY: the program had no fd there.
                unsafe { libc::close(fd) };
            }
        }
        // The new preexisting set is what the image had.
        self.preexisting = ctx
            .fds
            .iter()
            .filter(|f| f.preexisting)
            .map(|f| f.fd)
            .collect();
        Ok(())
    }
}
