//! File descriptors: regular files, directories and character devices are saved (path, flags,
//! offset) and reopened at restart on the same fd numbers.
//!
//! Policy (see docs/files.md):
//! - Regular files are reopened by path with their `F_GETFL` flags minus `O_CREAT|O_TRUNC|O_EXCL`
//!   and put back at their offset. Contents are not saved: the restarted process rewrites from
//!   its checkpoint offset (a file that grew after the checkpoint keeps its tail until the
//!   program overwrites it). A missing file is an error naming it.
//! - Objects from outside the computation: the root process records `(fd, dev, ino)` of every fd
//!   open when it started (its terminal, a harness pipe on fd 251, ...); children inherit the
//!   set (in memory across fork, in `CKPT_OUTSIDE` across exec). Any fd of any process of the
//!   tree whose object is in that set and is not a regular file or directory is re-inherited at
//!   restart: it becomes whatever `ckpt-restart` has on the number the object had in the root
//!   at launch (`FdInfo::reinherit_from`), or `/dev/null`.
//! - Open file descriptions shared by several fds (dup) or processes (fork) are found with
//!   `kcmp(KCMP_FILE)` against every process of the computation; the lowest (vpid, fd) names
//!   the description and `ckpt-restart` opens it once and installs it on every sharer, so the
//!   offset and `O_APPEND` stay shared. Deleted-but-open files are saved with their contents
//!   (up to 64 MiB) and recreated the same way (then unlinked again).
//! - Pipes created by the program belong to the pipes plugin; timerfd, eventfd, signalfd,
//!   inotify and epoll fds to the event-fd plugins ([`crate::is_event_fd`]). Other objects
//!   (sockets, ...) belong to plugins that do not exist yet: the checkpoint warns and they
//!   become `/dev/null` after restart.
//!
//! Runs on the checkpoint thread with user threads frozen: raw /proc reads, no glibc malloc.

use crate::api::{CkptContext, Plugin, RestartContext};
use ckpt_format::image::{FdInfo, FdKind, ObjKind, ObjRef, SharedObject, reopen_flags};
use std::ffi::CString;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(Default)]
pub struct Files {}

/// Objects open when the computation started: (fd in the root, dev, ino). Static memory so a
/// forked child inherits it; filled once by the constructor.
const MAX_OUTSIDE: usize = 64;
static OUTSIDE: [[AtomicU64; 3]; MAX_OUTSIDE] =
    [const { [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)] }; MAX_OUTSIDE];
static NOUTSIDE: AtomicUsize = AtomicUsize::new(0);

fn outside_add(fd: i32, dev: u64, ino: u64) {
    let n = NOUTSIDE.load(Ordering::Relaxed);
    if n < MAX_OUTSIDE && outside_lookup(dev, ino).is_none() {
        OUTSIDE[n][0].store(fd as u64, Ordering::Relaxed);
        OUTSIDE[n][1].store(dev, Ordering::Relaxed);
        OUTSIDE[n][2].store(ino, Ordering::Relaxed);
        NOUTSIDE.store(n + 1, Ordering::Release);
    }
}

/// The root's fd number for an outside object.
fn outside_lookup(dev: u64, ino: u64) -> Option<i32> {
    (0..NOUTSIDE.load(Ordering::Acquire)).find_map(|i| {
        (OUTSIDE[i][1].load(Ordering::Relaxed) == dev
            && OUTSIDE[i][2].load(Ordering::Relaxed) == ino)
            .then(|| OUTSIDE[i][0].load(Ordering::Relaxed) as i32)
    })
}

/// Whether the object `(dev, ino)` came from outside the computation (re-inherited at restart).
pub(crate) fn is_outside(dev: u64, ino: u64) -> bool {
    outside_lookup(dev, ino).is_some()
}

/// The outside set as `fd:dev:ino,...` for `CKPT_OUTSIDE` (exec).
pub fn outside_env() -> String {
    (0..NOUTSIDE.load(Ordering::Acquire))
        .map(|i| {
            format!(
                "{}:{}:{}",
                OUTSIDE[i][0].load(Ordering::Relaxed),
                OUTSIDE[i][1].load(Ordering::Relaxed),
                OUTSIDE[i][2].load(Ordering::Relaxed)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// FNV-1a over `parts`: the key of a shared object, the same in every image that has it.
pub fn obj_key(tag: &str, parts: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    tag.bytes().for_each(&mut eat);
    for p in parts {
        p.to_le_bytes().into_iter().for_each(&mut eat);
    }
    h
}

fn kcmp_file(pid1: i32, pid2: i32, fd1: i32, fd2: i32) -> Option<bool> {
    const KCMP_FILE: i32 = 0;
    // SAFETY: kcmp compares kernel objects; no memory is touched.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_FILE, fd1, fd2) };
    (r >= 0).then_some(r == 0)
}

/// (fd, dev, ino) of every fd of process `pid` (another process of the computation, frozen).
pub(crate) fn peer_fds(pid: i32) -> Vec<(i32, u64, u64)> {
    let mut fds = Vec::new();
    let path = CString::new(format!("/proc/{pid}/fd")).unwrap_or_default();
    let _ = crate::rawdir::list_numeric_dir(&path, &mut fds);
    fds.into_iter()
        .filter_map(|fd| {
            let p = CString::new(format!("/proc/{pid}/fd/{fd}")).ok()?;
            // SAFETY: stat into a zeroed buffer (follows the magic link to the object).
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: valid path and out-pointer.
            (unsafe { libc::stat(p.as_ptr(), &mut st) } == 0).then_some((fd, st.st_dev, st.st_ino))
        })
        .collect()
}

/// (vpid, pid, its (fd, dev, ino) list) of another process of the computation.
type PeerFds = (u64, i32, Vec<(i32, u64, u64)>);

/// Largest deleted file whose contents are saved in the image.
const MAX_DELETED: u64 = 64 << 20;

fn read_deleted(fd: i32, size: u64, path: &str) -> Result<Vec<u8>, String> {
    if size > MAX_DELETED {
        return Err(format!(
            "fd {fd}: deleted file {path} is {size} bytes; at most {MAX_DELETED} bytes of a deleted file are saved"
        ));
    }
    let p = CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default();
    // SAFETY: reopening our own fd read-only through /proc (works for O_WRONLY fds too).
    let rfd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if rfd < 0 {
        return Err(format!(
            "fd {fd}: cannot read deleted file {path}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut data = vec![0u8; size as usize];
    let mut got = 0usize;
    while got < data.len() {
        // SAFETY: reading into the unfilled tail of `data`.
        let r = unsafe {
            libc::pread(
                rfd,
                data[got..].as_mut_ptr().cast(),
                data.len() - got,
                got as i64,
            )
        };
        if r <= 0 {
            break;
        }
        got += r as usize;
    }
    data.truncate(got);
    // SAFETY: closing our fd.
    unsafe { libc::close(rfd) };
    Ok(data)
}

pub(crate) fn list_fds() -> Vec<i32> {
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
fn inspect(fd: i32) -> Option<FdInfo> {
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
        preexisting: false,
        dev: st.st_dev,
        ino: st.st_ino,
        reinherit_from: if matches!(kind, FdKind::Regular | FdKind::Directory) {
            None
        } else {
            outside_lookup(st.st_dev, st.st_ino)
        },
        ..Default::default()
    })
}

/// Whether `ckpt-restart` hands this fd through as it is instead of reopening it.
pub fn reinherited(f: &FdInfo) -> bool {
    if f.dev == 0 && f.ino == 0 && f.reinherit_from.is_none() {
        // Images without object identities: the old rule.
        return (f.fd <= 2 || f.preexisting)
            && !matches!(f.kind, FdKind::Regular | FdKind::Directory);
    }
    f.reinherit_from.is_some()
}

/// Whether `ckpt-restart` installed this fd before the restorer ran (shared object or
/// re-inherited from outside): the restart only fixes its close-on-exec flag.
pub fn installed_by_restart(f: &FdInfo) -> bool {
    f.object.is_some() || f.reinherit_from.is_some()
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
            let flags = reopen_flags(f.flags, f.kind == FdKind::Directory);
            // SAFETY: NUL-terminated path; no mode needed without O_CREAT.
            let nfd = unsafe { libc::open(p.as_ptr(), flags) };
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
        // An exec'd process of the tree gets the set from its predecessor; the root records
        // what it found open.
        if let Ok(v) = std::env::var("CKPT_OUTSIDE") {
            for e in v.split(',') {
                let mut it = e.split(':').map(|x| x.parse::<u64>().unwrap_or(0));
                if let (Some(fd), Some(dev), Some(ino)) = (it.next(), it.next(), it.next()) {
                    outside_add(fd as i32, dev, ino);
                }
            }
            return;
        }
        for fd in list_fds() {
            // SAFETY: fstat into a zeroed buffer.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: valid out-pointer.
            if unsafe { libc::fstat(fd, &mut st) } == 0 {
                outside_add(fd, st.st_dev, st.st_ino);
            }
        }
    }

    fn checkpoint(&mut self, ctx: &mut CkptContext) -> Result<(), String> {
        let mut out = Vec::new();
        for fd in list_fds() {
            if ctx.core_fds.contains(&fd) {
                continue;
            }
            let Some(info) = inspect(fd) else {
                continue;
            };
            match info.kind {
                FdKind::Regular | FdKind::Directory | FdKind::CharDevice => {}
                _ if reinherited(&info) => {}
                // The pipes, sockets and event-fd plugins save and recreate these.
                FdKind::Pipe | FdKind::Socket => {}
                _ if crate::is_event_fd(&info) => {}
                _ => ctx.warnings.push(format!(
                    "fd {fd} ({}) is not checkpointed yet: it will be /dev/null after restart",
                    info.path
                )),
            }
            out.push(info);
        }
        self.share_descriptions(ctx, &mut out)?;
        ctx.header.fds = out;
        Ok(())
    }

    fn restart(&mut self, ctx: &mut RestartContext) -> Result<(), String> {
        // Close whatever ckpt-restart left open that the image does not have (keeping the
        // numbers it installed and the core's own fds).
        for fd in list_fds() {
            let keep = ctx.core_fds.contains(&fd)
                || ctx
                    .fds
                    .iter()
                    .any(|f| f.fd == fd && (reinherited(f) || installed_by_restart(f)))
                || crate::shm::is_backing_fd(fd)
                || fd <= 2;
            if !keep {
                // SAFETY: closing an fd that the restored program does not know about.
                unsafe { libc::close(fd) };
            }
        }
        for f in ctx.fds {
            if f.object.is_some() {
                // Installed by ckpt-restart (shared description, pipe, deleted file).
                // SAFETY: setting the saved close-on-exec flag on an open fd.
                unsafe {
                    libc::fcntl(
                        f.fd,
                        libc::F_SETFD,
                        if f.cloexec { libc::FD_CLOEXEC } else { 0 },
                    )
                };
                continue;
            }
            if (f.kind == FdKind::Pipe && !reinherited(f)) || crate::is_event_fd(f) {
                continue; // recreated by the pipes and event-fd plugins, which run next
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
        // The outside objects are now ckpt-restart's: record their new identities.
        for f in ctx.fds {
            if let Some(n) = f.reinherit_from {
                // SAFETY: fstat into a zeroed buffer.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: valid out-pointer.
                if unsafe { libc::fstat(f.fd, &mut st) } == 0 {
                    let i = (0..NOUTSIDE.load(Ordering::Acquire))
                        .find(|&i| OUTSIDE[i][0].load(Ordering::Relaxed) == n as u64);
                    match i {
                        Some(i) => {
                            OUTSIDE[i][1].store(st.st_dev, Ordering::Relaxed);
                            OUTSIDE[i][2].store(st.st_ino, Ordering::Relaxed);
                        }
                        None => outside_add(n, st.st_dev, st.st_ino),
                    }
                }
            }
        }
        Ok(())
    }
}

impl Files {
    /// Finds open file descriptions shared between fds of this process (dup) or with other
    /// processes of the computation (fork), and deleted files; turns them into shared objects
    /// that ckpt-restart recreates once.
    fn share_descriptions(
        &mut self,
        ctx: &mut CkptContext,
        fds: &mut [FdInfo],
    ) -> Result<(), String> {
        // SAFETY: getpid has no failure mode (raw: the wrapper would give the vpid).
        let me = unsafe { libc::syscall(libc::SYS_getpid) } as i32;
        let mut others: Vec<PeerFds> = Vec::new();
        let candidates = |f: &FdInfo| {
            matches!(f.kind, FdKind::Regular | FdKind::Directory) && f.reinherit_from.is_none()
        };
        if fds.iter().any(candidates) {
            for p in ctx.peers.iter().filter(|p| p.vpid != ctx.vpid) {
                others.push((p.vpid, p.pid, peer_fds(p.pid)));
            }
        }
        let snapshot: Vec<(i32, u64, u64)> = fds.iter().map(|f| (f.fd, f.dev, f.ino)).collect();
        for f in fds.iter_mut().filter(|f| candidates(f)) {
            // Leader of the description: the lowest (vpid, fd) sharing it.
            let mut leader = (ctx.vpid, f.fd);
            let mut shared = false;
            for &(fd2, dev, ino) in &snapshot {
                if fd2 != f.fd
                    && dev == f.dev
                    && ino == f.ino
                    && kcmp_file(me, me, f.fd, fd2) == Some(true)
                {
                    shared = true;
                    leader = leader.min((ctx.vpid, fd2));
                }
            }
            for (vpid, pid, list) in &others {
                for &(fd2, dev, ino) in list {
                    if dev == f.dev && ino == f.ino && kcmp_file(me, *pid, f.fd, fd2) == Some(true)
                    {
                        shared = true;
                        leader = leader.min((*vpid, fd2));
                    }
                }
            }
            if !shared && !f.deleted {
                continue;
            }
            let key = obj_key("desc", &[leader.0, leader.1 as u64]);
            f.object = Some(ObjRef { key, end: 0 });
            if ctx.header.objects.iter().any(|o| o.key == key) {
                continue;
            }
            let i_lead = leader == (ctx.vpid, f.fd) || leader.0 == ctx.vpid;
            let data = if f.deleted && i_lead {
                read_deleted(f.fd, f.size, &f.path)?
            } else {
                Vec::new()
            };
            // SAFETY: fstat into a zeroed buffer.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: valid out-pointer on our fd.
            unsafe { libc::fstat(f.fd, &mut st) };
            ctx.header.objects.push(SharedObject {
                key,
                kind: ObjKind::File {
                    path: f.path.clone(),
                    directory: f.kind == FdKind::Directory,
                    deleted: f.deleted,
                    size: f.size,
                    mode: st.st_mode & 0o7777,
                },
                flags: vec![f.flags],
                offset: f.offset,
                has_data: f.deleted && i_lead,
                data,
            });
        }
        Ok(())
    }
}
