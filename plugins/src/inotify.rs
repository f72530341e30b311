//! inotify: an inotify fd comes back on its fd number with its `O_NONBLOCK` and close-on-exec
//! flags and its watches, each with its event mask and **the same watch descriptor** (programs
//! keep wds in their own tables).
//!
//! ## What is saved
//!
//! The watch list is read from `/proc/self/fdinfo/N` (`inotify wd:W ino:I sdev:D mask:M ...`),
//! so watches added behind any wrapper are seen. fdinfo names the watched inode, not a path;
//! the path comes from, in order:
//! 1. the `inotify_add_watch` wrapper below, which records (absolute path, dev, ino, flags) in
//!    a fixed static table on every successful call; the path is used if it still names the
//!    same (dev, ino) at checkpoint time;
//! 2. `open_by_handle_at` on the file handle fdinfo prints, with a mount of that device from
//!    `/proc/self/mountinfo` (needs `CAP_DAC_READ_SEARCH` in the initial user namespace, so
//!    usually only for root, and not after a restart in a user namespace); a path found this
//!    way is put in the table for the next checkpoints;
//! 3. otherwise the watch is lost (warning at checkpoint); its wd number stays reserved.
//!
//! ## Restart
//!
//! `inotify_init1`, then the watches are added again in increasing wd order. The kernel
//! hands out wds of an instance in increasing order starting at 1 (`idr_alloc_cyclic`), so a
//! gap in the saved numbers is skipped by adding and removing a dummy watch (on a directory no
//! saved watch uses, with `IN_MASK_CREATE` so an existing watch is never touched). A watch
//! whose path is gone is replaced by a dummy too, so later wds keep their numbers.
//!
//! ## Lost (documented in docs/event-fds.md)
//!
//! Events queued but not yet read at checkpoint time (user space cannot put events into an
//! inotify queue, and reading them at checkpoint would take them from the running program),
//! and events for changes made while the program was down. The next wd after a restart is
//! the highest saved wd + 1 (the kernel's cursor past removed watches is not visible).
//!
//! The wrapper runs on user threads: no allocation, no lock (a compare-and-swap claims a
//! slot). The checkpoint and restart hooks run with user threads frozen: syscalls, /proc
//! reads and Rust allocation only; no glibc malloc, no stdio.

use crate::api::{CkptContext, Plugin, RestartContext, WrapperGuard, real_fns};
use crate::fdinfo;
use ckpt_format::image::{FdInfo, FdKind};
use std::cell::UnsafeCell;
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// What `/proc/self/fd/N` shows for an inotify fd.
pub const INOTIFY_LINK: &str = "anon_inode:inotify";

pub fn is_inotify(f: &FdInfo) -> bool {
    f.kind == FdKind::Other && f.path == INOTIFY_LINK
}

// ---- the wrapper's table --------------------------------------------------------------------

const SLOTS: usize = 256;
const PATH_LEN: usize = 1024;

const FREE: u32 = 0;
const BUSY: u32 = 1;
const VALID: u32 = 2;

/// One recorded `inotify_add_watch`: the absolute path and the (dev, ino) it named.
struct Slot {
    state: AtomicU32,
    dev: AtomicU64,
    ino: AtomicU64,
    /// The mask the program passed (for `IN_DONT_FOLLOW`, `IN_ONLYDIR`).
    flags: AtomicU32,
    len: AtomicUsize,
    path: UnsafeCell<[u8; PATH_LEN]>,
}

// SAFETY: `path` is written only by the thread that moved `state` FREE -> BUSY and read only
// after `state` is VALID (Release/Acquire), or with user threads frozen.
unsafe impl Sync for Slot {}

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        state: AtomicU32::new(FREE),
        dev: AtomicU64::new(0),
        ino: AtomicU64::new(0),
        flags: AtomicU32::new(0),
        len: AtomicUsize::new(0),
        path: UnsafeCell::new([0; PATH_LEN]),
    }
}; SLOTS];

fn slot_path(s: &Slot) -> &[u8] {
    let n = s.len.load(Ordering::Relaxed).min(PATH_LEN);
    // SAFETY: read only while the slot is VALID (see `Slot`).
    unsafe { &(&*s.path.get())[..n] }
}

type AddWatchFn = unsafe extern "C" fn(libc::c_int, *const libc::c_char, u32) -> libc::c_int;

real_fns! {
    real_add_watch, ADD_WATCH, c"inotify_add_watch", AddWatchFn;
}

/// Records (absolute path, dev, ino) of a watch just added. Never allocates.
fn record(path: &CStr, mask: u32) {
    let bytes = path.to_bytes();
    let mut buf = [0u8; PATH_LEN];
    let mut n = 0usize;
    if bytes.first() != Some(&b'/') {
        // SAFETY: getcwd writes at most PATH_LEN bytes into our stack buffer.
        let r = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), PATH_LEN) };
        if r <= 1 {
            return;
        }
        n = r as usize - 1; // without the NUL
        if n + 1 >= PATH_LEN {
            return;
        }
        buf[n] = b'/';
        n += 1;
    }
    if n + bytes.len() >= PATH_LEN {
        return; // too long to record: the checkpoint falls back to the file handle
    }
    buf[n..n + bytes.len()].copy_from_slice(bytes);
    n += bytes.len();
    buf[n] = 0;
    // SAFETY: zeroed stat buffer, NUL-terminated path on our stack.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = if mask & libc::IN_DONT_FOLLOW != 0 {
        // SAFETY: as above.
        unsafe { libc::lstat(buf.as_ptr().cast(), &mut st) }
    } else {
        // SAFETY: as above.
        unsafe { libc::stat(buf.as_ptr().cast(), &mut st) }
    };
    if r != 0 {
        return;
    }
    let _g = WrapperGuard::enter();
    for s in TABLE.iter() {
        if s.state.load(Ordering::Acquire) == VALID
            && s.dev.load(Ordering::Relaxed) == st.st_dev
            && s.ino.load(Ordering::Relaxed) == st.st_ino
            && slot_path(s) == &buf[..n]
        {
            s.flags.store(mask, Ordering::Relaxed);
            return;
        }
    }
    for s in TABLE.iter() {
        if s.state
            .compare_exchange(FREE, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            // SAFETY: we own the slot (FREE -> BUSY).
            unsafe { (&mut *s.path.get())[..n].copy_from_slice(&buf[..n]) };
            s.len.store(n, Ordering::Relaxed);
            s.dev.store(st.st_dev, Ordering::Relaxed);
            s.ino.store(st.st_ino, Ordering::Relaxed);
            s.flags.store(mask, Ordering::Relaxed);
            s.state.store(VALID, Ordering::Release);
            return;
        }
    }
    // Table full: the checkpoint falls back to the file handle.
}

/// Same contract as glibc's `inotify_add_watch`; also records the path for checkpoints.
///
/// # Safety
/// `path` must be a NUL-terminated string (as for glibc's function).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn inotify_add_watch(
    fd: libc::c_int,
    path: *const libc::c_char,
    mask: u32,
) -> libc::c_int {
    let Some(f) = real_add_watch() else {
        // SAFETY: glibc's thread-local errno.
        unsafe { *libc::__errno_location() = libc::ENOSYS };
        return -1;
    };
    // SAFETY: the caller's arguments, unchanged.
    let wd = unsafe { f(fd, path, mask) };
    if wd >= 0 && !path.is_null() {
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        // SAFETY: the kernel just accepted `path` as a NUL-terminated string.
        record(unsafe { CStr::from_ptr(path) }, mask);
        // SAFETY: glibc's thread-local errno, as the real call left it.
        unsafe { *libc::__errno_location() = e };
    }
    wd
}

// ---- the plugin ---------------------------------------------------------------------------

struct Watch {
    wd: i32,
    /// Event mask and `IN_ONESHOT`/`IN_EXCL_UNLINK` from fdinfo, plus `IN_DONT_FOLLOW`/
    /// `IN_ONLYDIR` from the wrapper.
    mask: u32,
    /// `None`: the path could not be found; the wd is kept by a dummy watch.
    path: Option<CString>,
    dev: u64,
    ino: u64,
}

struct Saved {
    fd: i32,
    nonblock: bool,
    cloexec: bool,
    watches: Vec<Watch>,
}

#[derive(Default)]
pub struct InotifyFds {
    saved: Vec<Saved>,
}

/// Parses `inotify wd:W ino:I sdev:D mask:M ... fhandle-bytes:B fhandle-type:T f_handle:H`.
struct Line {
    wd: i32,
    ino: u64,
    sdev: u64,
    mask: u32,
    handle: Option<(i32, Vec<u8>)>,
}

fn parse_line(line: &str) -> Option<Line> {
    let p = fdinfo::pairs(line.strip_prefix("inotify")?);
    let get = |k: &str| p.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    let handle = (|| {
        let n: usize = fdinfo::hex(get("fhandle-bytes")?)? as usize;
        let ty = fdinfo::hex(get("fhandle-type")?)? as i32;
        let h = get("f_handle")?;
        let bytes: Vec<u8> = (0..h.len() / 2)
            .filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
            .collect();
        (bytes.len() == n).then_some((ty, bytes))
    })();
    Some(Line {
        wd: get("wd")?.parse().ok()?,
        ino: fdinfo::hex(get("ino")?)?,
        sdev: fdinfo::hex(get("sdev")?)?,
        mask: fdinfo::hex(get("mask")?)? as u32,
        handle,
    })
}

fn stat_of(path: &CStr, follow: bool) -> Option<(u64, u64)> {
    // SAFETY: zeroed stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: NUL-terminated path, valid out-pointer.
    let r = unsafe {
        if follow {
            libc::stat(path.as_ptr(), &mut st)
        } else {
            libc::lstat(path.as_ptr(), &mut st)
        }
    };
    (r == 0).then_some((st.st_dev, st.st_ino))
}

/// A recorded path that still names (dev, ino), with the flags it was added with.
fn from_table(dev: u64, ino: u64) -> Option<(CString, u32)> {
    TABLE.iter().find_map(|s| {
        if s.state.load(Ordering::Acquire) != VALID
            || s.dev.load(Ordering::Relaxed) != dev
            || s.ino.load(Ordering::Relaxed) != ino
        {
            return None;
        }
        let flags = s.flags.load(Ordering::Relaxed);
        let path = CString::new(slot_path(s)).ok()?;
        (stat_of(&path, flags & libc::IN_DONT_FOLLOW == 0) == Some((dev, ino)))
            .then_some((path, flags))
    })
}

/// Unescapes the octal escapes (`\040`) of a mountinfo field.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let esc = (b[i] == b'\\' && i + 3 < b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 4]).ok())
            .flatten()
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        if let Some(v) = esc {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path of the inode behind a file handle, through `open_by_handle_at` on a mount of the
/// device `kdev` (kernel encoding). Needs `CAP_DAC_READ_SEARCH`.
fn from_handle(kdev: u64, ty: i32, handle: &[u8]) -> Option<CString> {
    let (major, minor) = (kdev >> 20, kdev & 0xf_ffff);
    let want = format!("{major}:{minor}");
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mnt = info.lines().find_map(|l| {
        let mut it = l.split(' ');
        let dev = it.nth(2)?;
        let mp = it.nth(1)?;
        (dev == want).then(|| unescape(mp))
    })?;
    let mp = CString::new(mnt).ok()?;
    // An O_PATH fd is refused as the mount fd (EBADF, measured on 6.18): open it for reading.
    // SAFETY: NUL-terminated path; we own the fd.
    let mfd = unsafe { libc::open(mp.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if mfd < 0 {
        return None;
    }
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }, 8-aligned.
    let mut buf = vec![0u64; 1 + handle.len().div_ceil(8)];
    // SAFETY: buf holds 8 header bytes plus at least handle.len() bytes.
    unsafe {
        let p = buf.as_mut_ptr().cast::<u8>();
        p.cast::<u32>().write(handle.len() as u32);
        p.add(4).cast::<i32>().write(ty);
        std::ptr::copy_nonoverlapping(handle.as_ptr(), p.add(8), handle.len());
    }
    // SAFETY: open_by_handle_at reads the handle from buf; we own the returned fd.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mfd,
            buf.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    } as i32;
    // SAFETY: closing the mount fd we opened.
    unsafe { libc::close(mfd) };
    if fd < 0 {
        return None;
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}"));
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    let link = link.ok()?.to_string_lossy().into_owned();
    if link.ends_with(" (deleted)") || !link.starts_with('/') {
        return None;
    }
    CString::new(link).ok()
}

impl Plugin for InotifyFds {
    fn name(&self) -> &'static str {
        "inotify"
    }

    fn init(&mut self) {
        resolve_all();
    }

    fn checkpoint(&mut self, ctx: &mut CkptContext) -> Result<(), String> {
        self.saved.clear();
        let mut live: Vec<(u64, u64)> = Vec::new();
        for f in ctx.header.fds.iter().filter(|f| is_inotify(f)) {
            let text = fdinfo::read(f.fd);
            let mut watches = Vec::new();
            for line in text.lines().filter(|l| l.starts_with("inotify ")) {
                let Some(l) = parse_line(line) else {
                    ctx.warnings.push(format!(
                        "inotify fd {}: cannot parse {line:?}; that watch is lost",
                        f.fd
                    ));
                    continue;
                };
                let dev = fdinfo::kdev_to_user(l.sdev);
                live.push((dev, l.ino));
                let mut mask = l.mask;
                let path = match from_table(dev, l.ino) {
                    Some((p, flags)) => {
                        mask |= flags & (libc::IN_DONT_FOLLOW | libc::IN_ONLYDIR);
                        Some(p)
                    }
                    None => {
                        let p = l.handle.as_ref().and_then(|(ty, h)| {
                            from_handle(l.sdev, *ty, h)
                                .filter(|p| stat_of(p, true) == Some((dev, l.ino)))
                        });
                        // Remembered for later checkpoints, which may run where
                        // open_by_handle_at is refused (a restart in a user namespace).
                        if let Some(p) = &p {
                            record(p, 0);
                        }
                        p
                    }
                };
                if path.is_none() {
                    ctx.warnings.push(format!(
                        "inotify fd {}: no path for watch {} (inode {} on device {:x}); it is \
                         lost at restart",
                        f.fd, l.wd, l.ino, l.sdev
                    ));
                }
                watches.push(Watch {
                    wd: l.wd,
                    mask,
                    path,
                    dev,
                    ino: l.ino,
                });
            }
            watches.sort_by_key(|w| w.wd);
            self.saved.push(Saved {
                fd: f.fd,
                nonblock: f.flags & libc::O_NONBLOCK != 0,
                cloexec: f.cloexec,
                watches,
            });
        }
        // Forget recorded paths no watch uses any more.
        for s in TABLE.iter() {
            if s.state.load(Ordering::Acquire) == VALID
                && !live.contains(&(s.dev.load(Ordering::Relaxed), s.ino.load(Ordering::Relaxed)))
            {
                s.state.store(FREE, Ordering::Release);
            }
        }
        Ok(())
    }

    fn restart(&mut self, ctx: &mut RestartContext) -> Result<(), String> {
        for s in &self.saved {
            if let Err(e) = restore(s, ctx.warnings) {
                ctx.warnings
                    .push(format!("inotify: {e}; fd {} is /dev/null now", s.fd));
                fdinfo::dev_null_on(s.fd, s.cloexec)?;
            }
        }
        Ok(())
    }
}

/// The raw `inotify_add_watch` syscall (the wrapper would record dummies).
fn add_watch(fd: i32, path: &CStr, mask: u32) -> i32 {
    // SAFETY: NUL-terminated path.
    unsafe { libc::syscall(libc::SYS_inotify_add_watch, fd, path.as_ptr(), mask) as i32 }
}

/// Largest wd gap filled with dummy watches (each costs an add and a remove).
const MAX_GAP: i32 = 1 << 20;

/// Consumes the next wd of `fd` with a watch added and removed at once on a directory no
/// saved watch of this instance uses.
fn burn_wd(fd: i32, s: &Saved) -> Result<i32, String> {
    const IN_MASK_CREATE: u32 = 0x1000_0000;
    for cand in [
        c"/", c"/proc", c"/dev", c"/tmp", c"/etc", c"/usr", c"/var", c"/sys",
    ] {
        match stat_of(cand, true) {
            Some(id) if !s.watches.iter().any(|w| (w.dev, w.ino) == id) => {}
            _ => continue,
        }
        let wd = add_watch(
            fd,
            cand,
            libc::IN_ATTRIB | libc::IN_ONLYDIR | IN_MASK_CREATE,
        );
        if wd >= 0 {
            // SAFETY: removing the watch we just added.
            unsafe { libc::inotify_rm_watch(fd, wd) };
            return Ok(wd);
        }
    }
    Err(format!("fd {}: no directory to hold a dummy watch", s.fd))
}

fn restore(s: &Saved, warnings: &mut Vec<String>) -> Result<(), String> {
    // Non-blocking while we drain the IN_IGNORED events of the dummy watches.
    // SAFETY: creating a new inotify instance.
    let nfd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if nfd < 0 {
        return Err(format!("fd {}: inotify_init1: {}", s.fd, fdinfo::errno()));
    }
    let mut next = 1i32;
    for w in &s.watches {
        if w.wd - next > MAX_GAP {
            warnings.push(format!(
                "inotify fd {}: watch {} and later ones get new numbers (gap too large)",
                s.fd, w.wd
            ));
            next = w.wd;
        }
        while next < w.wd {
            next = burn_wd(nfd, s)? + 1;
        }
        let got = match &w.path {
            Some(p) => add_watch(nfd, p, w.mask),
            None => -1,
        };
        if got < 0 {
            if let Some(p) = &w.path {
                warnings.push(format!(
                    "inotify fd {}: cannot watch {} again ({}); watch {} is lost",
                    s.fd,
                    p.to_string_lossy(),
                    fdinfo::errno(),
                    w.wd
                ));
            }
            next = burn_wd(nfd, s)? + 1;
            continue;
        }
        if got != w.wd {
            warnings.push(format!(
                "inotify fd {}: watch {} came back as {got}",
                s.fd, w.wd
            ));
        }
        next = got + 1;
    }
    // Removing a dummy watch queued an IN_IGNORED event the program must not see.
    let mut buf = [0u64; 512];
    loop {
        // SAFETY: reading into our stack buffer (8-aligned, as inotify events need).
        let r = unsafe { libc::read(nfd, buf.as_mut_ptr().cast(), std::mem::size_of_val(&buf)) };
        if r <= 0 {
            break;
        }
    }
    if !s.nonblock {
        // SAFETY: clearing O_NONBLOCK on our new fd.
        unsafe { libc::fcntl(nfd, libc::F_SETFL, 0) };
    }
    fdinfo::put_on(nfd, s.fd, s.cloexec)
}
