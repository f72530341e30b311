//! Restart with the *same* pids and tids, and the post-fork code that rebuilds the process
//! tree. The restored processes run in one new user + pid + mount namespace, where each is
//! created by its original parent with `clone3(set_tid = [its old pid])` and its threads later
//! get their old tids the same way. glibc's cached tids, mutex owner fields, robust and PI
//! futexes then stay right across any number of restarts, and `getpid()` does not change.
//!
//! Owns: probing whether namespaces work ([`usable`]); entering them; the control page
//! ([`Ctl`]) shared by ckpt-restart and every tree process; [`run_tree`] (C, D, and every
//! restored process up to its exec of `ckpt-restorer`: creation, sessions, groups, zombies, fd
//! installation, capabilities); [`abort_tree`] (ckpt-restart kills a half-built tree).
//!
//! ```text
//! ckpt-restart ── C (creates the namespaces, exits like the root)
//!                  └── D  pid 1 of the new pid ns: mounts its /proc, creates the roots, reaps
//!                       └── roots ── their children ── … each execs ckpt-restorer … OUTER_PID
//! ```
//!
//! Each process learns its pid as seen from outside (what `ckpt-command --list` shows and what
//! users signal) with `readlinkat(outer /proc, "self")` and passes it to the restorer. Works
//! unprivileged wherever unprivileged user namespaces do; the caller falls back (new pids and
//! tids, C a child subreaper instead of D) when they don't, or when `CKPT_NO_NAMESPACES` is set.
//!
//! Runs in forked children of a single-threaded process: only async-signal-safe calls and
//! no allocation after `fork` (everything is precomputed in [`TreeSpec`]). Every wait has a
//! 10 s limit and a message naming the vpid and the step.

use crate::tree::{Group, Step};
use std::ffi::CStr;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicI32, AtomicU32};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_CHECKPOINT_RESTORE: u32 = 40;

fn write_file(path: &CStr, data: &[u8]) -> bool {
    // SAFETY: NUL-terminated path; plain open/write/close.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let ok = libc::write(fd, data.as_ptr().cast(), data.len()) == data.len() as isize;
        libc::close(fd);
        ok
    }
}

/// Formats "ID ID 1\n" into `buf`: our own id maps to itself. (A process inside the new
/// namespace may only map its own id; other owners' files then show as nobody/nogroup.)
fn id_map(id: u32, buf: &mut [u8; 64]) -> usize {
    let s = format!("{id} {id} 1\n");
    buf[..s.len()].copy_from_slice(s.as_bytes());
    s.len()
}

/// Enters new user + pid + mount namespaces with our uid/gid mapped to themselves.
/// Only for a single-threaded process. False if the kernel refuses.
fn enter(uid_map: &[u8], gid_map: &[u8]) -> bool {
    // SAFETY: unshare on a single-threaded process.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNS) } != 0 {
        return false;
    }
    write_file(c"/proc/self/setgroups", b"deny")
        && write_file(c"/proc/self/uid_map", uid_map)
        && write_file(c"/proc/self/gid_map", gid_map)
}

/// Unshares a time namespace for our future children with the given `CLOCK_MONOTONIC` and
/// `CLOCK_BOOTTIME` offsets (ns). Best effort: without it (old kernel, or an offset the kernel
/// refuses: a clock may not go below zero) the restored clocks simply go on from the host's.
fn enter_time_ns(off: [i64; 2]) {
    // SAFETY: unshare(2) on this single-threaded process; only children enter it.
    if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
        return;
    }
    let mut buf = [0u8; 96];
    let mut n = 0;
    for (name, ns) in [(&b"monotonic "[..], off[0]), (&b"boottime "[..], off[1])] {
        let (secs, nanos) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
        buf[n..n + name.len()].copy_from_slice(name);
        n += name.len();
        n += signed_decimal(secs, &mut buf[n..]);
        buf[n] = b' ';
        n += 1;
        n += signed_decimal(nanos, &mut buf[n..]);
        buf[n] = b'\n';
        n += 1;
    }
    // Both lines at once: the kernel applies all or nothing.
    if !write_file(c"/proc/self/timens_offsets", &buf[..n]) {
        // A zero offset is always accepted (the namespace then changes nothing).
        write_file(
            c"/proc/self/timens_offsets",
            b"monotonic 0 0\nboottime 0 0\n",
        );
    }
}

/// Writes `v` in decimal into `out` (no allocation: runs in a forked child); returns the
/// length.
fn signed_decimal(v: i64, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 20];
    let mut k = 0;
    let mut u = v.unsigned_abs();
    loop {
        digits[k] = b'0' + (u % 10) as u8;
        k += 1;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    let mut n = 0;
    if v < 0 {
        out[0] = b'-';
        n = 1;
    }
    for i in (0..k).rev() {
        out[n] = digits[i];
        n += 1;
    }
    n
}

/// In the new pid ns: make our mounts private and mount a /proc that shows this namespace.
fn mount_proc() -> bool {
    // SAFETY: mount(2) with NUL-terminated strings, in our own mount namespace.
    unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        );
        libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ) == 0
    }
}

/// Forks like `fork()` but the child gets pid `pid` in our (new) pid namespace.
fn fork_with_pid(pid: i32) -> libc::pid_t {
    let set_tid: i32 = pid;
    // struct clone_args v2: flags, pidfd, child_tid, parent_tid, exit_signal, stack,
    // stack_size, tls, set_tid, set_tid_size, cgroup.
    let args: [u64; 11] = [
        0,
        0,
        0,
        0,
        libc::SIGCHLD as u64,
        0,
        0,
        0,
        &set_tid as *const i32 as u64,
        1,
        0,
    ];
    // SAFETY: clone3 without CLONE_VM behaves like fork.
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args.as_ptr(),
            std::mem::size_of_val(&args),
        ) as libc::pid_t
    }
}

/// Keeps CAP_SYS_ADMIN and CAP_CHECKPOINT_RESTORE (over our own user namespace only) across the
/// exec of the restorer, so the restored process can give its threads their old tids. The
/// restored threads drop back to the capabilities the program had.
fn keep_caps_across_exec() {
    let hdr: [u32; 2] = [0x2008_0522, 0];
    let mut data = [0u32; 6];
    // SAFETY: capget/capset v3 with valid buffers; prctl on ourselves.
    unsafe {
        libc::syscall(libc::SYS_capget, hdr.as_ptr(), data.as_mut_ptr());
        for cap in [CAP_SYS_ADMIN, CAP_CHECKPOINT_RESTORE] {
            let (w, b) = ((cap / 32) as usize, cap % 32);
            data[w * 3 + 2] |= data[w * 3 + 1] & (1 << b); // inheritable |= permitted
        }
        libc::syscall(libc::SYS_capset, hdr.as_ptr(), data.as_ptr());
        for cap in [CAP_SYS_ADMIN, CAP_CHECKPOINT_RESTORE] {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                cap as libc::c_ulong,
                0,
                0,
            );
        }
    }
}

/// Whether namespaces can be used here (probed once in a throw-away child).
pub fn usable() -> bool {
    if std::env::var_os("CKPT_NO_NAMESPACES").is_some() {
        return false;
    }
    let (mut um, mut gm) = ([0u8; 64], [0u8; 64]);
    // SAFETY: getuid/getgid cannot fail.
    let (un, gn) = unsafe {
        (
            id_map(libc::getuid(), &mut um),
            id_map(libc::getgid(), &mut gm),
        )
    };
    // SAFETY: fork of a single-threaded process; the child only makes syscalls and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = enter(&um[..un], &gm[..gn]) && {
            // SAFETY: fork inside the new namespaces; the grandchild is its pid 1.
            let g = unsafe { libc::fork() };
            if g == 0 {
                // SAFETY: _exit in the child.
                unsafe {
                    libc::_exit(if mount_proc() && fork_with_pid(4242) >= 0 {
                        0
                    } else {
                        1
                    })
                };
            }
            let mut st = 0;
            // SAFETY: waiting for our own child.
            g > 0
                && unsafe { libc::waitpid(g, &mut st, 0) } == g
                && libc::WIFEXITED(st)
                && libc::WEXITSTATUS(st) == 0
        };
        // SAFETY: _exit in the child.
        unsafe { libc::_exit(i32::from(!ok)) };
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    pid > 0
        && unsafe { libc::waitpid(pid, &mut st, 0) } == pid
        && libc::WIFEXITED(st)
        && libc::WEXITSTATUS(st) == 0
}

// ---- the tree --------------------------------------------------------------------------------

/// Slot states in the control page.
const ST_CREATED: u32 = 1;
const ST_EXEC: u32 = 2;
/// How long any step of the tree code waits for the others.
const WAIT_MS: i64 = 10_000;

/// Head of the control page shared by ckpt-restart and every process of the tree.
#[repr(C)]
pub struct CtlHead {
    /// Pid (as ckpt-restart sees it) of the helper that creates the roots: D, or C in fallback
    /// mode. 0 until it exists.
    pub helper: AtomicI32,
    /// 1 when C entered the namespaces.
    pub ns: AtomicU32,
    /// Set by ckpt-restart: stop, the tree is being killed.
    pub abort: AtomicU32,
    /// Set by the first tree process that fails (it printed why).
    pub failed: AtomicU32,
    /// Stage counters (futex words): processes created, group leaders done, members joined.
    pub created: AtomicU32,
    pub grouped: AtomicU32,
    pub joined: AtomicU32,
    _pad: u32,
}

/// One process or zombie of the tree.
#[repr(C)]
pub struct Slot {
    /// Its pid inside the tree (what `getpid()` / `waitpid` show there; outside = inside in
    /// fallback mode). Written by its creator and by itself.
    pub pid: AtomicI32,
    pub state: AtomicU32,
}

/// The control page: a `MAP_SHARED | MAP_ANONYMOUS` mapping made before the first fork, so
/// every process of the tree and ckpt-restart see the same words.
pub struct Ctl {
    base: *mut u8,
    len: usize,
    nslots: usize,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for Ctl {}
// SAFETY: as above.
unsafe impl Sync for Ctl {}

impl Ctl {
    pub fn new(nslots: usize) -> std::io::Result<Ctl> {
        let len = std::mem::size_of::<CtlHead>() + nslots.max(1) * std::mem::size_of::<Slot>();
        // SAFETY: fresh anonymous shared mapping (zero-filled), checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Ctl {
            base: base.cast(),
            len,
            nslots,
        })
    }

    pub fn head(&self) -> &CtlHead {
        // SAFETY: the mapping starts with a zero-initialised CtlHead (all atomics, any bits valid).
        unsafe { &*(self.base as *const CtlHead) }
    }

    pub fn slot(&self, i: usize) -> &Slot {
        assert!(i < self.nslots);
        // SAFETY: slot i lies inside the mapping, right after the head; zero is a valid Slot.
        unsafe { &*(self.base.add(std::mem::size_of::<CtlHead>()) as *const Slot).add(i) }
    }

    fn wake_all(&self) {
        let h = self.head();
        for w in [&h.created, &h.grouped, &h.joined] {
            futex_wake(w);
        }
    }

    /// SIGKILLs every pid recorded in a slot (fallback mode: they are real pids).
    fn kill_slots(&self) {
        for i in 0..self.nslots {
            let p = self.slot(i).pid.load(SeqCst);
            if p > 1 {
                // SAFETY: kill(2) on a pid of our tree.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping (the tree processes keep their copies).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// One restored process, everything precomputed (no allocation after fork).
pub struct NodeRt {
    pub vpid: u64,
    pub pid: i32,
    pub steps: Vec<Step>,
    pub setsid: bool,
    /// After `setsid()`: source fd of a pty slave to make the session's controlling terminal
    /// (-1: none), and the group to make its foreground once every group exists (0: none).
    pub ctty: i32,
    pub fg_pgrp: i32,
    pub group: Group,
    /// (source fd, target number): sources are ckpt-restart's fds above every target.
    pub installs: Vec<(i32, i32)>,
    /// Read end of its image stream (argv FD); the only fd whose FD_CLOEXEC it clears.
    pub stream_fd: i32,
    /// `ckpt-restorer FD HOST PORT CKPT_DIR`; OUTER_PID is appended after fork.
    pub argv: [*const libc::c_char; 5],
}

/// Our uid/gid mapped to themselves, formatted before fork.
#[derive(Clone, Copy)]
pub struct IdMaps {
    um: [u8; 64],
    un: usize,
    gm: [u8; 64],
    gn: usize,
}

impl IdMaps {
    pub fn current() -> IdMaps {
        let (mut um, mut gm) = ([0u8; 64], [0u8; 64]);
        // SAFETY: getuid/getgid cannot fail.
        let (un, gn) = unsafe {
            (
                id_map(libc::getuid(), &mut um),
                id_map(libc::getgid(), &mut gm),
            )
        };
        IdMaps { um, un, gm, gn }
    }
}

/// What the tree code needs; built by ckpt-restart before it forks C.
#[derive(Clone, Copy)]
pub struct TreeSpec<'a> {
    pub use_ns: bool,
    pub ids: IdMaps,
    pub nodes: &'a [NodeRt],
    /// What the helper creates (roots, orphans).
    pub top: &'a [Step],
    /// Node whose exit status becomes ckpt-restart's.
    pub root: usize,
    pub ctl: &'a Ctl,
    /// A directory fd on the outer /proc (namespace mode), for the outer pids.
    pub outer_proc: i32,
    /// fds C closes first thing (the write ends of the image streams).
    pub close_in_c: &'a [i32],
    /// fds the helpers close once their children exist (everything else ckpt-restart made).
    pub close_in_helpers: &'a [i32],
    /// Namespace mode: `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` offsets (ns) for a new time
    /// namespace, so the restored clocks go on from their checkpoint values; None = no time
    /// namespace (the clocks show the time the computation was down).
    pub clock_offsets: Option<[i64; 2]>,
}

/// Kills the whole tree from ckpt-restart (any thread): C (`c`, skipped when 0: already
/// reaped), then D (which takes the namespace with it) or, in fallback mode, every recorded
/// process. Processes being created at that moment see `abort` and exit.
pub fn abort_tree(ctl: &Ctl, c: libc::pid_t) {
    let h = ctl.head();
    h.abort.store(1, SeqCst);
    if c > 0 {
        // SAFETY: kill(2) of our own, unreaped child (never 0 or -1: those mean groups).
        unsafe { libc::kill(c, libc::SIGKILL) };
    }
    for _ in 0..3 {
        if h.ns.load(SeqCst) == 1 {
            let d = h.helper.load(SeqCst);
            if d > 1 {
                // SAFETY: kill(2) of D (the pid namespace dies with it).
                unsafe { libc::kill(d, libc::SIGKILL) };
            }
        } else {
            ctl.kill_slots();
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// A stack-buffer line for stderr (no allocation after fork).
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line {
            buf: [0; 512],
            len: 0,
        }
        .s(b"ckpt-restart: ")
    }
    fn s(mut self, b: &[u8]) -> Line {
        let n = b.len().min(self.buf.len() - 1 - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
        self
    }
    fn u(self, v: u64) -> Line {
        let mut d = [0u8; 20];
        let mut i = d.len();
        let mut v = v;
        loop {
            i -= 1;
            d[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.s(&d[i..])
    }
    fn vpid(self, v: u64) -> Line {
        self.s(b"vpid ").u(v)
    }
    fn errno(self, e: i32) -> Line {
        let name: &[u8] = match e {
            libc::EPERM => b"EPERM (operation not permitted)",
            libc::ENOENT => b"ENOENT (no such file or directory)",
            libc::ESRCH => b"ESRCH (no such process)",
            libc::EBADF => b"EBADF (bad file descriptor)",
            libc::EAGAIN => b"EAGAIN (resource temporarily unavailable)",
            libc::ENOMEM => b"ENOMEM (out of memory)",
            libc::EACCES => b"EACCES (permission denied)",
            libc::EEXIST => b"EEXIST (pid already in use)",
            libc::EINVAL => b"EINVAL (invalid argument)",
            libc::EMFILE => b"EMFILE (too many open files)",
            libc::ENOSPC => b"ENOSPC (no space left, or pid out of range)",
            libc::EBUSY => b"EBUSY (busy)",
            _ => return self.s(b"errno ").u(e.max(0) as u64),
        };
        self.s(name)
    }
    fn emit(mut self) {
        self.buf[self.len] = b'\n';
        // SAFETY: write(2) from a stack buffer.
        unsafe { libc::write(2, self.buf.as_ptr().cast(), self.len + 1) };
    }
}

fn errno() -> i32 {
    // SAFETY: errno is thread-local and always readable.
    unsafe { *libc::__errno_location() }
}

fn now_ms() -> i64 {
    // SAFETY: clock_gettime into a zeroed timespec.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
    }
}

fn futex_wait(w: &AtomicU32, val: u32, ms: i64) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: ms * 1_000_000,
    };
    // SAFETY: FUTEX_WAIT (shared: the word is in a MAP_SHARED page) with a relative timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            w.as_ptr(),
            libc::FUTEX_WAIT,
            val,
            &ts as *const libc::timespec,
            0usize,
            0u32,
        )
    };
}

fn futex_wake(w: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a word of the shared page.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            w.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            0usize,
            0usize,
            0u32,
        )
    };
}

fn bump(w: &AtomicU32) {
    w.fetch_add(1, SeqCst);
    futex_wake(w);
}

fn sleep_ms(ms: i64) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: ms * 1_000_000,
    };
    // SAFETY: nanosleep with a valid timespec.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

const JOB_SIGNALS: [i32; 5] = [
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

/// Signal the helper sends itself about failures after the stages (interrupts its waitpid).
const NOTIFY: i32 = libc::SIGUSR1;

extern "C" fn on_notify(_: libc::c_int) {}

// ---- job control: ckpt-restart stands for the restored foreground job --------------------
//
// ^Z stops the root's group inside the namespace; the user's shell only knows ckpt-restart.
// So D (waiting with WUNTRACED) tells C "the root stopped" (message kind 2 on the report
// pipe), and C stops ckpt-restart: the shell sees its job stop. `fg`/`bg` continue
// ckpt-restart's group (C and D are in it too); C sees SIGCONT and tells D to continue the
// root's group, giving it the terminal first when ckpt-restart's group has it (`fg`: SIGUSR2;
// `bg`: SIGURG).

/// Message kind on the report pipe: the root stopped (the other kinds: 0 or 1 = exit status,
/// with or without processes left).
const MSG_STOPPED: i32 = 2;
const CONT_FG: i32 = libc::SIGUSR2;
const CONT_BG: i32 = libc::SIGURG;
static GOT_CONT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static CONT_ASKED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_cont(_: libc::c_int) {
    GOT_CONT.store(1, SeqCst);
}

extern "C" fn on_cont_ask(sig: libc::c_int) {
    CONT_ASKED.store(sig, SeqCst);
}

/// D: continue the stopped root's group, giving it the controlling terminal first if asked.
fn continue_root(root_pid: i32, foreground: bool) {
    // SAFETY: plain syscalls on our own children and our controlling terminal (SIGTTOU is
    // ignored in the helpers).
    unsafe {
        let pgid = libc::getpgid(root_pid);
        if foreground && pgid > 0 {
            let tty = libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            if tty >= 0 {
                libc::tcsetpgrp(tty, pgid);
                libc::close(tty);
            }
        }
        if pgid > 0 {
            libc::kill(-pgid, libc::SIGCONT);
        } else {
            libc::kill(root_pid, libc::SIGCONT);
        }
    }
}

fn set_handler(sig: i32, handler: libc::sighandler_t) {
    // SAFETY: sigaction with a zeroed struct (no SA_RESTART: waitpid returns EINTR).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Our pid in the outer pid namespace: `readlinkat(outer /proc, "self")`.
fn outer_pid(outer_proc: i32) -> i32 {
    let mut buf = [0u8; 16];
    // SAFETY: readlinkat into a stack buffer relative to our /proc dirfd.
    let n = unsafe {
        libc::readlinkat(
            outer_proc,
            c"self".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    buf[..n.max(0) as usize]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .fold(0i32, |v, &c| v * 10 + (c - b'0') as i32)
}

/// Exits like a process that got wait status `st` (C mirrors the root this way).
fn mirror(st: i32) -> ! {
    // SAFETY: plain syscalls; we die of the same signal or exit with the same code.
    unsafe {
        if libc::WIFSIGNALED(st) {
            let sig = libc::WTERMSIG(st);
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
        libc::_exit(if libc::WIFEXITED(st) {
            libc::WEXITSTATUS(st)
        } else {
            1
        })
    }
}

/// A recreated zombie: exits at once with the saved wait status. With `old_pid` (fallback
/// mode: it has a new pid) it first names itself `ZOMBIE_COMM_PREFIX` + old pid, which its
/// restored parent reads to translate the old pid.
fn become_zombie(status: i32, old_pid: Option<i32>) -> ! {
    if let Some(p) = old_pid {
        let mut name = [0u8; 16];
        let pre = ckpt_format::raw::ZOMBIE_COMM_PREFIX;
        name[..pre.len()].copy_from_slice(pre);
        let mut digits = [0u8; 10];
        let (mut v, mut nd) = (p.max(0) as u32, 0);
        loop {
            digits[nd] = b'0' + (v % 10) as u8;
            nd += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for (k, d) in digits[..nd].iter().rev().enumerate() {
            if pre.len() + k < 15 {
                name[pre.len() + k] = *d;
            }
        }
        // SAFETY: PR_SET_NAME reads a NUL-terminated name of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    }
    // SAFETY: plain syscalls in a fresh child.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
        libc::_exit(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            0
        })
    }
}

/// Creates one step's process; the child never returns from here.
fn create(spec: &TreeSpec, step: &Step) -> Result<(), (u64, i32, i32)> {
    let (slot, pid) = match *step {
        Step::Child(c) => (c, spec.nodes[c].pid),
        Step::Zombie { slot, pid, .. } => (slot, pid),
    };
    let r = if spec.use_ns {
        fork_with_pid(pid)
    } else {
        // SAFETY: fork of a single-threaded process that only makes syscalls afterwards.
        unsafe { libc::fork() }
    };
    if r == 0 {
        match *step {
            Step::Child(c) => node_main(spec, c),
            Step::Zombie { status, pid, .. } => {
                become_zombie(status, (!spec.use_ns).then_some(pid))
            }
        }
    }
    if r < 0 {
        let who = match *step {
            Step::Child(c) => spec.nodes[c].vpid,
            Step::Zombie { .. } => 0,
        };
        return Err((who, pid, errno()));
    }
    spec.ctl.slot(slot).pid.store(r, SeqCst);
    if spec.ctl.head().abort.load(SeqCst) != 0 {
        // SAFETY: killing the child we just made; ckpt-restart is tearing the tree down.
        unsafe {
            libc::kill(r, libc::SIGKILL);
            libc::_exit(1)
        };
    }
    Ok(())
}

fn create_error(line: Line, (vpid, pid, e): (u64, i32, i32)) -> Line {
    let line = if vpid != 0 {
        line.s(b"cannot create ").vpid(vpid)
    } else {
        line.s(b"cannot create zombie child")
    };
    line.s(b" with pid ").u(pid as u64).s(b": ").errno(e)
}

/// A tree process gives up: the first failure is printed, everybody waiting is woken and the
/// helper told, so the whole tree goes down.
fn fail(spec: &TreeSpec, line: Line) -> ! {
    let h = spec.ctl.head();
    if h.failed.swap(1, SeqCst) == 0 {
        line.emit();
    }
    spec.ctl.wake_all();
    let helper = if spec.use_ns {
        1
    } else {
        h.helper.load(SeqCst)
    };
    // SAFETY: notifying the helper (pid 1 of our namespace, or C) and exiting.
    unsafe {
        if helper > 0 {
            libc::kill(helper, NOTIFY);
        }
        libc::_exit(1)
    }
}

/// Checks that no child of `n` died before it reached its exec.
fn check_children(spec: &TreeSpec, n: &NodeRt) {
    for s in &n.steps {
        let Step::Child(c) = *s else { continue };
        let slot = spec.ctl.slot(c);
        let pid = slot.pid.load(SeqCst);
        if pid <= 0 || slot.state.load(SeqCst) == ST_EXEC {
            continue;
        }
        // SAFETY: waitid with WNOWAIT leaves the child unreaped; zeroed siginfo is valid.
        let died = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            ) == 0
                && info.si_pid() != 0
        };
        if died && slot.state.load(SeqCst) != ST_EXEC {
            fail(
                spec,
                Line::new()
                    .vpid(n.vpid)
                    .s(b": its child ")
                    .vpid(spec.nodes[c].vpid)
                    .s(b" died before its restorer started"),
            );
        }
    }
}

/// Waits (≤ 10 s) until `counter` reaches the number of processes.
fn wait_all(spec: &TreeSpec, n: &NodeRt, counter: &AtomicU32, what: &[u8]) {
    let h = spec.ctl.head();
    let total = spec.nodes.len() as u32;
    let deadline = now_ms() + WAIT_MS;
    loop {
        let v = counter.load(SeqCst);
        if v >= total {
            return;
        }
        if h.failed.load(SeqCst) != 0 || h.abort.load(SeqCst) != 0 {
            // SAFETY: someone else failed and said why; just go.
            unsafe { libc::_exit(1) };
        }
        check_children(spec, n);
        if now_ms() > deadline {
            fail(
                spec,
                Line::new()
                    .vpid(n.vpid)
                    .s(b": timed out after 10 s waiting for ")
                    .s(what)
                    .s(b" (")
                    .u(v as u64)
                    .s(b" of ")
                    .u(total as u64)
                    .s(b")"),
            );
        }
        futex_wait(counter, v, 20);
    }
}

/// Life of one restored process until it execs the restorer.
fn node_main(spec: &TreeSpec, i: usize) -> ! {
    let n = &spec.nodes[i];
    let ctl = spec.ctl;
    let h = ctl.head();
    let me = ctl.slot(i);
    // SAFETY: getpid cannot fail.
    me.pid.store(unsafe { libc::getpid() }, SeqCst);
    if h.abort.load(SeqCst) != 0 {
        // SAFETY: ckpt-restart is tearing the tree down.
        unsafe { libc::_exit(1) };
    }
    let outer = if spec.use_ns {
        outer_pid(spec.outer_proc)
    } else {
        0
    };
    // SAFETY: setsid on ourselves.
    if n.setsid && unsafe { libc::setsid() } < 0 {
        fail(
            spec,
            Line::new().vpid(n.vpid).s(b": setsid(): ").errno(errno()),
        );
    }
    // SAFETY: TIOCSCTTY on a pty slave we inherited, as the new session's leader.
    if n.setsid && n.ctty >= 0 && unsafe { libc::ioctl(n.ctty, libc::TIOCSCTTY, 0) } < 0 {
        fail(
            spec,
            Line::new()
                .vpid(n.vpid)
                .s(b": cannot make its pty its controlling terminal: ")
                .errno(errno()),
        );
    }
    me.state.store(ST_CREATED, SeqCst);
    bump(&h.created);
    for s in &n.steps {
        if let Err(e) = create(spec, s) {
            fail(spec, create_error(Line::new().vpid(n.vpid).s(b": "), e));
        }
    }
    wait_all(spec, n, &h.created, b"every process to be created");
    // SAFETY: setpgid on ourselves.
    if n.group == Group::Leader && unsafe { libc::setpgid(0, 0) } < 0 {
        fail(
            spec,
            Line::new()
                .vpid(n.vpid)
                .s(b": setpgid(0, 0): ")
                .errno(errno()),
        );
    }
    bump(&h.grouped);
    wait_all(spec, n, &h.grouped, b"the group leaders");
    if let Group::Join(l) = n.group {
        let g = ctl.slot(l).pid.load(SeqCst);
        // SAFETY: setpgid on ourselves.
        if unsafe { libc::setpgid(0, g) } < 0 {
            fail(
                spec,
                Line::new()
                    .vpid(n.vpid)
                    .s(b": setpgid(0, ")
                    .u(g as u64)
                    .s(b"): ")
                    .errno(errno()),
            );
        }
    }
    bump(&h.joined);
    wait_all(spec, n, &h.joined, b"every process to join its group");
    // SAFETY: TIOCSPGRP on our controlling terminal (SIGTTOU is ignored while the tree is
    // built); only with namespaces, where the saved group id is the group's id again.
    if n.ctty >= 0
        && n.fg_pgrp > 0
        && spec.use_ns
        && unsafe { libc::ioctl(n.ctty, libc::TIOCSPGRP, &n.fg_pgrp) } < 0
    {
        fail(
            spec,
            Line::new()
                .vpid(n.vpid)
                .s(b": cannot give its pty to group ")
                .u(n.fg_pgrp as u64)
                .s(b": ")
                .errno(errno()),
        );
    }
    // Zombie children must be zombies before the program looks for them.
    for s in &n.steps {
        let Step::Zombie { slot, pid, .. } = *s else {
            continue;
        };
        let zpid = ctl.slot(slot).pid.load(SeqCst);
        let deadline = now_ms() + WAIT_MS;
        loop {
            // SAFETY: waitid with WNOWAIT leaves the zombie unreaped; zeroed siginfo is valid.
            let dead = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(
                    libc::P_PID,
                    zpid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                ) == 0
                    && info.si_pid() != 0
            };
            if dead {
                break;
            }
            if now_ms() > deadline {
                fail(
                    spec,
                    Line::new()
                        .vpid(n.vpid)
                        .s(b": timed out after 10 s waiting for zombie child ")
                        .u(pid as u64)
                        .s(b" to exit"),
                );
            }
            sleep_ms(1);
        }
    }
    // SAFETY: dup2/fcntl on fds we inherited; sources are above every target.
    unsafe {
        for &(src, dst) in &n.installs {
            if libc::dup2(src, dst) < 0 {
                fail(
                    spec,
                    Line::new()
                        .vpid(n.vpid)
                        .s(b": cannot install fd ")
                        .u(dst as u64)
                        .s(b": ")
                        .errno(errno()),
                );
            }
        }
        libc::fcntl(n.stream_fd, libc::F_SETFD, 0);
        for s in JOB_SIGNALS {
            libc::signal(s, libc::SIG_DFL);
        }
        libc::signal(NOTIFY, libc::SIG_DFL);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    if spec.use_ns {
        keep_caps_across_exec();
    }
    let mut digits = [0u8; 16];
    let mut fd_digits = [0u8; 16];
    let mut argv: [*const libc::c_char; 8] = [
        n.argv[0],
        n.argv[1],
        n.argv[2],
        n.argv[3],
        n.argv[4],
        std::ptr::null(),
        std::ptr::null(),
        std::ptr::null(),
    ];
    if outer > 0 {
        argv[5] = decimal(outer as u32, &mut digits);
        if spec.outer_proc > 2 {
            // The restored process keeps the outer /proc to read its children's outer pids.
            // SAFETY: clearing close-on-exec on our copy of ckpt-restart's /proc fd.
            unsafe { libc::fcntl(spec.outer_proc, libc::F_SETFD, 0) };
            argv[6] = decimal(spec.outer_proc as u32, &mut fd_digits);
        }
    }
    me.state.store(ST_EXEC, SeqCst);
    // SAFETY: argv is a NULL-terminated array of NUL-terminated strings that outlive the call.
    unsafe { libc::execv(argv[0], argv.as_ptr()) };
    let e = errno();
    me.state.store(ST_CREATED, SeqCst);
    fail(
        spec,
        Line::new()
            .vpid(n.vpid)
            .s(b": cannot execute ckpt-restorer: ")
            .errno(e),
    )
}

/// Writes `v` in decimal, NUL-terminated, into `buf`; returns a pointer to it (no allocation:
/// runs in a freshly cloned process).
fn decimal(mut v: u32, buf: &mut [u8; 16]) -> *const libc::c_char {
    let mut k = 10;
    loop {
        k -= 1;
        buf[k] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.copy_within(k..10, 0);
    buf[10 - k] = 0;
    buf.as_ptr().cast()
}

/// Whether this process still has children (a reaped one does not count).
fn has_children() -> bool {
    loop {
        // SAFETY: non-blocking waitpid; reaping here is what the helper does anyway.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if r > 0 {
            continue;
        }
        return r == 0;
    }
}

/// The helper that creates the roots and reaps: D (pid 1 of the namespace; reports the root's
/// status through `report`) or C in fallback mode (`report` < 0: it exits like the root).
fn helper(spec: &TreeSpec, report: i32) -> ! {
    let ctl = spec.ctl;
    let h = ctl.head();
    let me = if spec.use_ns {
        outer_pid(spec.outer_proc)
    } else {
        // SAFETY: getpid cannot fail.
        unsafe { libc::getpid() }
    };
    h.helper.store(me, SeqCst);
    set_handler(NOTIFY, on_notify as *const () as libc::sighandler_t);
    if report >= 0 {
        set_handler(CONT_FG, on_cont_ask as *const () as libc::sighandler_t);
        set_handler(CONT_BG, on_cont_ask as *const () as libc::sighandler_t);
    }
    // SAFETY: ignoring SIGPIPE in the helper (its report pipe may outlive C).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    if h.abort.load(SeqCst) != 0 {
        // SAFETY: ckpt-restart is tearing the tree down.
        unsafe { libc::_exit(1) };
    }
    let mut reported = false;
    let teardown = |reported: bool| -> ! {
        h.failed.store(1, SeqCst);
        ctl.wake_all();
        // SAFETY: killing our own tree, reaping it, telling C; plain syscalls.
        unsafe {
            if spec.use_ns {
                libc::kill(-1, libc::SIGKILL);
                while libc::waitpid(-1, std::ptr::null_mut(), 0) > 0 || errno() == libc::EINTR {}
            } else {
                ctl.kill_slots();
            }
            if report >= 0 && !reported {
                let msg = [1i32 << 8, 0];
                libc::write(report, msg.as_ptr().cast(), 8);
            }
            libc::_exit(1)
        }
    };
    for s in spec.top {
        if let Err(e) = create(spec, s) {
            if h.failed.swap(1, SeqCst) == 0 {
                create_error(Line::new(), e).emit();
            }
            teardown(false);
        }
    }
    for &fd in spec.close_in_helpers {
        // SAFETY: closing ckpt-restart's fds: our children have their copies.
        unsafe { libc::close(fd) };
    }
    loop {
        let mut st = 0;
        let flags = if report >= 0 { libc::WUNTRACED } else { 0 };
        // SAFETY: waiting for any child.
        let r = unsafe { libc::waitpid(-1, &mut st, flags) };
        if h.failed.load(SeqCst) != 0 {
            teardown(reported);
        }
        let asked = CONT_ASKED.swap(0, SeqCst);
        if asked != 0 {
            continue_root(ctl.slot(spec.root).pid.load(SeqCst), asked == CONT_FG);
        }
        if r > 0 && libc::WIFSTOPPED(st) {
            if r == ctl.slot(spec.root).pid.load(SeqCst) {
                let msg = [st, MSG_STOPPED];
                // SAFETY: telling C the root stopped.
                unsafe { libc::write(report, msg.as_ptr().cast(), 8) };
            }
            continue;
        }
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            if !reported {
                teardown(false);
            }
            // SAFETY: nothing left to reap.
            unsafe { libc::_exit(0) };
        }
        for s in spec.top {
            let Step::Child(c) = *s else { continue };
            let slot = ctl.slot(c);
            if slot.pid.load(SeqCst) != r {
                continue;
            }
            if slot.state.load(SeqCst) != ST_EXEC {
                if h.failed.swap(1, SeqCst) == 0 {
                    Line::new()
                        .vpid(spec.nodes[c].vpid)
                        .s(b" died before its restorer started")
                        .emit();
                }
                teardown(reported);
            }
            if c == spec.root {
                if report < 0 {
                    mirror(st);
                }
                let msg = [st, i32::from(has_children())];
                // SAFETY: telling C the root's status.
                unsafe { libc::write(report, msg.as_ptr().cast(), 8) };
                reported = true;
                if msg[1] == 0 {
                    // SAFETY: nothing left in the namespace.
                    unsafe { libc::_exit(0) };
                }
            }
        }
    }
}

/// Called in C (a fresh child of single-threaded ckpt-restart): builds the whole tree and never
/// returns; C's exit status is the root's.
///
/// ```text
/// namespace mode                              fallback mode
/// C  unshare(USER|PID|NS), relays the root    C  PR_SET_CHILD_SUBREAPER, creates the roots,
/// └─ D  pid 1: mounts /proc, creates roots,      reaps, exits like the root
///       reaps, reports the root's status      └─ roots ─ children ─ … (fork)
///       └─ roots ─ children ─ … (clone3 set_tid = [old pid])
/// ```
///
/// Every process, once created: `setsid()` if planned, creates its children and zombies in
/// plan order, waits until every process exists, leads its group, waits for every leader, joins
/// its group, waits for every member, waits for its zombies to be dead, installs its fds,
/// clears FD_CLOEXEC on its image stream, keeps its capabilities (namespace mode) and execs
/// `ckpt-restorer FD HOST PORT DIR [OUTER_PID [OUTER_PROC_FD]]`.
pub fn run_tree(spec: &TreeSpec) -> ! {
    let mut spec = *spec;
    // SAFETY: plain syscalls in a single-threaded child.
    unsafe {
        for &fd in spec.close_in_c {
            libc::close(fd);
        }
        for s in JOB_SIGNALS {
            libc::signal(s, libc::SIG_IGN);
        }
        if spec.use_ns && !enter(&spec.ids.um[..spec.ids.un], &spec.ids.gm[..spec.ids.gn]) {
            spec.use_ns = false;
        }
        spec.ctl.head().ns.store(u32::from(spec.use_ns), SeqCst);
        if spec.use_ns
            && let Some(off) = spec.clock_offsets
        {
            enter_time_ns(off);
        }
        if !spec.use_ns {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            helper(&spec, -1);
        }
        let mut st = [0i32; 2];
        if libc::pipe2(st.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            Line::new().s(b"pipe: ").errno(errno()).emit();
            libc::_exit(1);
        }
        let d = libc::fork();
        if d == 0 {
            libc::close(st[0]);
            mount_proc();
            helper(&spec, st[1]);
        }
        libc::close(st[1]);
        for &fd in spec.close_in_helpers {
            libc::close(fd);
        }
        if d < 0 {
            Line::new()
                .s(b"cannot fork the namespace's init: ")
                .errno(errno())
                .emit();
            libc::_exit(1);
        }
        set_handler(libc::SIGCONT, on_cont as *const () as libc::sighandler_t);
        let mut msg = [0i32; 2];
        let mut got = 0usize;
        let mut stopped = false;
        loop {
            while got < 8 {
                let r = libc::read(
                    st[0],
                    msg.as_mut_ptr().cast::<u8>().add(got).cast(),
                    8 - got,
                );
                if r > 0 {
                    got += r as usize;
                } else if r == 0 || errno() != libc::EINTR {
                    break;
                } else if GOT_CONT.swap(0, SeqCst) != 0 && stopped {
                    // fg or bg: our group was continued; does it have the terminal?
                    stopped = false;
                    let tty = libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
                    let fg = tty >= 0 && libc::tcgetpgrp(tty) == libc::getpgrp();
                    if tty >= 0 {
                        libc::close(tty);
                    }
                    libc::kill(d, if fg { CONT_FG } else { CONT_BG });
                }
            }
            if got == 8 && msg[1] == MSG_STOPPED {
                // The restored job stopped (^Z): so does ckpt-restart, for the user's shell.
                got = 0;
                stopped = true;
                GOT_CONT.store(0, SeqCst);
                libc::kill(libc::getppid(), libc::SIGSTOP);
                continue;
            }
            break;
        }
        if got < 8 {
            libc::waitpid(d, std::ptr::null_mut(), 0);
            if spec.ctl.head().failed.load(SeqCst) == 0 {
                Line::new()
                    .s(b"the restored process vanished without a status")
                    .emit();
            }
            libc::_exit(1);
        }
        if msg[1] == 0 {
            libc::waitpid(d, std::ptr::null_mut(), 0);
        }
        mirror(msg[0])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_answers() {
        // Environment-dependent: only prints. The e2e tests show whether ids are kept.
        eprintln!("namespaces usable: {}", super::usable());
    }
}
