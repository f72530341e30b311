//! Virtual pids: the pids a program of the computation sees stay the same across restarts.
//!
//! A process's vpid is the pid it had when it joined; a thread's virtual tid is the tid it had
//! when it was created. In the default restart (one user+pid namespace for the whole tree,
//! every process and thread recreated with `clone3(set_tid)`) kernel ids *are* the old ids,
//! so nothing is translated: every wrapper here is one relaxed load and a tail call. After a
//! restart **without** namespaces (`CKPT_NO_NAMESPACES=1`, or no unprivileged user
//! namespaces) processes and threads get new kernel ids. Each restarted process then installs
//! one table ([`set_map`], before user threads run) of (virtual → kernel) pairs: every
//! process of the computation (all-gathered at the restart barrier), its own zombie children
//! (ckpt-restart names each recreated zombie `ckptz:<old pid>`, see [`zombie_pairs`]) and its
//! own recreated threads (each stores its new tid in its thread slot). Tids and pids share the
//! kernel's id space, and process groups and sessions are named by their leader's pid, so the
//! one table translates them all. The image header records pid, pgid, sid and zombie pids
//! virtual, so the next restart plans the same tree.
//!
//! Translated (virtual → kernel for ids passed in, kernel → virtual for ids returned):
//! - `getpid`, `getppid`, `gettid`, `getpgrp`, `getpgid`, `getsid`, `setpgid`, `tcgetpgrp`,
//!   `tcsetpgrp`; `kill`, `killpg`, `sigqueue`, `tgkill`, `pidfd_open`; `wait`, `waitpid`,
//!   `wait3`, `wait4`, `waitid` (also `si_pid`); a reaped child's vpid then maps to a pid
//!   above `pid_max` (`ESRCH`), not to whatever process reuses its kernel pid.
//! - `si_pid` of signals: `SA_SIGINFO` handlers run behind [`siginfo_trampoline`] (installed
//!   by the `sigaction` wrapper in `signals.rs`; old actions and `signal`/`sigset` results
//!   show the program's handler); `sigwaitinfo`/`sigtimedwait` results; signals pending at a
//!   checkpoint are saved with the virtual sender pid (process- and thread-directed). Only
//!   for codes that carry a pid (`SI_USER`, `SI_QUEUE`, `SI_TKILL`, `SI_MESGQ`, `SIGCHLD`).
//! - Paths `/proc/<vpid>[/task/<vtid>]/...` and `/proc/self/task/<vtid>/...` in `open`,
//!   `open64`, `__open_2`, `openat`, `__openat_2` (and the 64 variants), `fopen`, `fopen64`,
//!   `opendir`, `stat`, `lstat`, `fstatat` (and 64), `__xstat`, `__lxstat` (and 64),
//!   `statx`, `access`, `faccessat`, `chdir`, `readlink`, `readlinkat`;
//!   `readlink("/proc/self")` answers the vpid.
//! - `fcntl`/`fcntl64` `F_SETOWN`/`F_GETOWN` (pid or -pgid) and `F_SETOWN_EX`/`F_GETOWN_EX`;
//!   `getsockopt(SO_PEERCRED)`; `sched_{set,get}affinity`, `sched_{set,get}scheduler`,
//!   `sched_{set,get}param`, `sched_rr_get_interval`, `getpriority`/`setpriority`
//!   (`PRIO_PROCESS`, `PRIO_PGRP`), `prlimit`, `prlimit64`.
//!
//! Not translated (docs/process-trees.md): raw `syscall()` and anything else that reaches the
//! kernel without these symbols (glibc-internal calls, static programs, inline asm); the
//! *contents* of `/proc` files (`/proc/<pid>/stat`'s ppid, `status`'s `Pid:`,
//! `/proc/*/children`) and `/proc` paths relative to a directory fd
//! (`openat(proc_fd, "123/stat")`), `execve` of a `/proc` path, other path calls (`truncate`,
//! `scandir`, `name_to_handle_at`, …); `signalfd` reads (signalfds are not checkpointed at
//! all); `SCM_CREDENTIALS`; `process_vm_readv/writev`, `ptrace`, `pidfd_send_signal` on a
//! pid; `ioprio_*` (no glibc wrapper).
//!
//! Collisions. A process forked after a restart without namespaces whose kernel pid is some
//! process's vpid (likely: `pid_max` is often 32768) gets another vpid from the coordinator
//! (from `VPID_HIGH`, above any kernel pid); the fork wrapper adds the pair to the parent's and
//! the child's tables ([`add_pair`]) and `fork()` returns that vpid. Other processes do not
//! learn the pair until the next restart (a sibling told the vpid through a pipe gets `ESRCH`).
//! Threads created after such a restart keep their kernel tid as virtual tid, unchecked: one
//! equal to an old virtual id reaches the old process; and a kernel id of an exited thread
//! reused by a new process or thread reads back as the old thread's.
//!
//! The table survives `exec` in `CKPT_PIDMAP` ([`map_env`], [`set_map_from_env`]). ckpt's
//! own checkpoint thread passes kernel ids through the wrappers untouched.
//!
//! `fcntl` and `open`/`openat` are variadic: the wrappers take the optional argument as a
//! fixed third (fourth) argument, which on x86_64 SysV arrives in the same register, and pass
//! it on only when the command uses one (`O_CREAT`/`O_TMPFILE` for the mode; rust-notes.md
//! §1.4, method A).
//!
//! Wrappers run on user threads, also in signal handlers: no allocation, no locks (the table
//! is a fixed array of atomics in static memory, inherited across fork and restored with
//! memory; paths are rewritten into a stack buffer).

use crate::api::real_fns;
use libc::{c_int, id_t, idtype_t, pid_t, siginfo_t};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

/// After a namespace restart: a directory fd on the outer pid namespace's `/proc`
/// (close-on-exec, at a high number; the exec wrapper hands it to the next program as
/// `CKPT_OUTER_PROC`), so that every process of the tree, also one forked after the restart,
/// can tell the coordinator the pid users outside see. -1 = not in a namespace of ours.
static OUTER_PROC: AtomicI32 = AtomicI32::new(-1);

/// Records the outer `/proc` fd (see [`OUTER_PROC`]).
pub fn set_outer_proc(fd: i32) {
    OUTER_PROC.store(fd, Ordering::Release);
}

/// The outer `/proc` fd, or -1.
pub fn outer_proc() -> i32 {
    OUTER_PROC.load(Ordering::Acquire)
}

/// This process's pid in the outer pid namespace (`readlinkat(outer /proc, "self")`), when
/// it runs in a restart's namespace; None otherwise or if the fd was closed by the program.
pub fn outer_pid() -> Option<i32> {
    let fd = outer_proc();
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 16];
    // SAFETY: readlinkat into a stack buffer relative to a directory fd.
    let n = unsafe { libc::readlinkat(fd, c"self".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return None;
    }
    let s = &buf[..n as usize];
    if !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = s.iter().fold(0i64, |v, &c| v * 10 + (c - b'0') as i64);
    (v > 0 && v <= i32::MAX as i64).then_some(v as i32)
}

/// Whether any vpid differs from its real pid (fallback restart happened).
static VIRTUAL: AtomicBool = AtomicBool::new(false);
const MAX: usize = 4096;
/// `vpid << 32 | real`, entries `0..N` (0: none; lookups skip it, as they take only ids > 0).
static MAP: [AtomicU64; MAX] = [const { AtomicU64::new(0) }; MAX];
/// Entries in use or reserved by [`add_pair`] (which fills its entry after reserving it).
static N: AtomicUsize = AtomicUsize::new(0);

/// Installs the table (restart, before user threads run): pairs (vpid, real pid) of every
/// process of the computation. Identity pairs are dropped.
pub fn set_map(pairs: &[(u64, i32)]) {
    let mut n = 0;
    for &(v, r) in pairs {
        if v != r as u64 && n < MAX && v <= u32::MAX as u64 {
            MAP[n].store((v << 32) | (r as u32 as u64), Ordering::Relaxed);
            n += 1;
        }
    }
    let old = N.swap(n, Ordering::AcqRel);
    for e in MAP.iter().take(old.min(MAX)).skip(n) {
        e.store(0, Ordering::Relaxed);
    }
    VIRTUAL.store(n > 0, Ordering::Release);
}

/// Adds one (vpid, kernel pid) pair (a forked child whose kernel pid was already some
/// process's vpid, so the coordinator gave it another vpid). Lock-free: reserves an entry,
/// then fills it.
pub fn add_pair(v: u64, r: i32) {
    if v == r as u64 || r <= 0 || v > u32::MAX as u64 {
        return;
    }
    let i = N.fetch_add(1, Ordering::AcqRel);
    if i >= MAX {
        N.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    MAP[i].store((v << 32) | (r as u32 as u64), Ordering::Release);
    VIRTUAL.store(true, Ordering::Release);
}

/// Adds (old pid, new pid) of this process's zombie children to `pairs` (restart, checkpoint
/// thread). In fallback mode ckpt-restart names each recreated zombie
/// `ZOMBIE_COMM_PREFIX<old pid>`; a zombie keeps its `comm`, which is all we read.
pub fn zombie_pairs(pairs: &mut Vec<(u64, i32)>) {
    let mut tasks = Vec::new();
    let _ = crate::rawdir::list_numeric_dir(c"/proc/self/task", &mut tasks);
    let pre = ckpt_format::raw::ZOMBIE_COMM_PREFIX;
    for t in tasks {
        let Ok(kids) = std::fs::read_to_string(format!("/proc/self/task/{t}/children")) else {
            continue;
        };
        for k in kids
            .split_whitespace()
            .filter_map(|w| w.parse::<i32>().ok())
        {
            let Ok(comm) = std::fs::read(format!("/proc/{k}/comm")) else {
                continue;
            };
            let old = comm
                .strip_prefix(pre)
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| d.trim_end().parse::<u64>().ok());
            if let Some(old) = old
                && !pairs.iter().any(|&(v, _)| v == old)
            {
                pairs.push((old, k));
            }
        }
    }
}

/// Kernel pid a reaped child's vpid translates to from then on: above any `pid_max`, so
/// `kill` & co. fail with `ESRCH` as for any dead process, and never returned by the kernel.
const GONE: u32 = i32::MAX as u32;

/// Marks the entry of a reaped child (kernel pid `real`) gone: the kernel may give that pid to
/// a new process, which must not be taken for the old one, and the old vpid must not reach
/// whatever process now has a kernel pid equal to it.
fn forget(real: pid_t) {
    if !virtual_mode() || real <= 0 {
        return;
    }
    let n = N.load(Ordering::Acquire).min(MAX);
    for e in &MAP[..n] {
        let x = e.load(Ordering::Relaxed);
        if x != 0 && x as u32 as pid_t == real {
            e.store((x & !0xffff_ffff) | GONE as u64, Ordering::Relaxed);
        }
    }
}

/// After a wait call that returned `r` with `status` (may be null) and `options`: whether
/// the child `r` was reaped (exited or killed, not just stopped or continued).
///
/// # Safety
/// `status` is null or points to the status the call wrote.
unsafe fn reaped(r: pid_t, status: *const c_int, options: c_int) -> bool {
    if r <= 0 {
        return false;
    }
    if status.is_null() {
        return options & (libc::WUNTRACED | libc::WCONTINUED) == 0;
    }
    // SAFETY: the caller's status word, just written by the kernel.
    let st = unsafe { *status };
    libc::WIFEXITED(st) || libc::WIFSIGNALED(st)
}

/// Real → virtual of a wait call's result; forgets the child if it was reaped.
///
/// # Safety
/// As [`reaped`].
unsafe fn waited(r: pid_t, status: *const c_int, options: c_int) -> pid_t {
    if !virtual_mode() {
        return r;
    }
    let v = r2v(r);
    // SAFETY: forwarded from the caller.
    if unsafe { reaped(r, status, options) } {
        forget(r);
    }
    v
}

/// The table as `CKPT_PIDMAP` carries it across `exec` (which wipes our memory):
/// `vpid:pid,vpid:pid,…`; empty when no translation is active.
pub fn map_env() -> String {
    let mut out = String::new();
    if !virtual_mode() {
        return out;
    }
    let n = N.load(Ordering::Acquire).min(MAX);
    for e in &MAP[..n] {
        let x = e.load(Ordering::Acquire);
        if x != 0 {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&format!("{}:{}", x >> 32, x as u32));
        }
    }
    out
}

/// Installs the table an exec'd program inherited in `CKPT_PIDMAP` (constructor).
pub fn set_map_from_env(s: &str) {
    let pairs: Vec<(u64, i32)> = s
        .split(',')
        .filter_map(|p| {
            let (v, r) = p.split_once(':')?;
            Some((v.parse().ok()?, r.parse::<u32>().ok()? as i32))
        })
        .collect();
    set_map(&pairs);
}

/// Virtual → real.
pub fn v2r(v: pid_t) -> pid_t {
    if !VIRTUAL.load(Ordering::Relaxed) || v <= 0 {
        return v;
    }
    let n = N.load(Ordering::Acquire).min(MAX);
    for e in &MAP[..n] {
        let x = e.load(Ordering::Acquire);
        if (x >> 32) as pid_t == v {
            return x as u32 as pid_t;
        }
    }
    v
}

/// Real → virtual.
pub fn r2v(r: pid_t) -> pid_t {
    if !VIRTUAL.load(Ordering::Relaxed) || r <= 0 {
        return r;
    }
    let n = N.load(Ordering::Acquire).min(MAX);
    for e in &MAP[..n] {
        let x = e.load(Ordering::Acquire);
        if x as u32 as pid_t == r {
            return (x >> 32) as pid_t;
        }
    }
    r
}

/// A pid argument that may name a group as `-pgid`.
fn v2r_signed(p: pid_t) -> pid_t {
    if p < -1 { -v2r(-p) } else { v2r(p) }
}

fn virtual_mode() -> bool {
    VIRTUAL.load(Ordering::Relaxed)
}

thread_local! {
    /// Set on the checkpoint thread: ckpt's own code names processes by kernel pid
    /// (`/proc/<peer>/fd`, `kill(own pid)`), which the wrappers must pass through untouched.
    static KERNEL_PIDS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread (the checkpoint thread, when it starts) as one whose calls of
/// `kill`-like functions and `/proc/<pid>` paths already use kernel pids.
pub fn kernel_pids_on_this_thread() {
    KERNEL_PIDS.with(|c| c.set(true));
}

/// Whether a wrapper translates pids coming from the caller: a restart gave new pids and
/// the caller is program code (not the checkpoint thread).
fn translate_args() -> bool {
    virtual_mode() && !KERNEL_PIDS.with(|c| c.get())
}

type PidFn = unsafe extern "C" fn() -> pid_t;
type PidPidFn = unsafe extern "C" fn(pid_t) -> pid_t;
type KillFn = unsafe extern "C" fn(pid_t, c_int) -> c_int;
type WaitpidFn = unsafe extern "C" fn(pid_t, *mut c_int, c_int) -> pid_t;
type WaitFn = unsafe extern "C" fn(*mut c_int) -> pid_t;
type Wait3Fn = unsafe extern "C" fn(*mut c_int, c_int, *mut libc::rusage) -> pid_t;
type Wait4Fn = unsafe extern "C" fn(pid_t, *mut c_int, c_int, *mut libc::rusage) -> pid_t;
type WaitidFn = unsafe extern "C" fn(idtype_t, id_t, *mut siginfo_t, c_int) -> c_int;
type SetpgidFn = unsafe extern "C" fn(pid_t, pid_t) -> c_int;
type TcgetpgrpFn = unsafe extern "C" fn(c_int) -> pid_t;
type TcsetpgrpFn = unsafe extern "C" fn(c_int, pid_t) -> c_int;
type SigqueueFn = unsafe extern "C" fn(pid_t, c_int, libc::sigval) -> c_int;

real_fns! {
    real_getpid, GETPID, c"getpid", PidFn;
    real_getppid, GETPPID, c"getppid", PidFn;
    real_getpgrp, GETPGRP, c"getpgrp", PidFn;
    real_getpgid, GETPGID, c"getpgid", PidPidFn;
    real_getsid, GETSID, c"getsid", PidPidFn;
    real_kill, KILL, c"kill", KillFn;
    real_killpg, KILLPG, c"killpg", KillFn;
    real_waitpid, WAITPID, c"waitpid", WaitpidFn;
    real_wait, WAIT, c"wait", WaitFn;
    real_wait3, WAIT3, c"wait3", Wait3Fn;
    real_wait4, WAIT4, c"wait4", Wait4Fn;
    real_waitid, WAITID, c"waitid", WaitidFn;
    real_setpgid, SETPGID, c"setpgid", SetpgidFn;
    real_tcgetpgrp, TCGETPGRP, c"tcgetpgrp", TcgetpgrpFn;
    real_tcsetpgrp, TCSETPGRP, c"tcsetpgrp", TcsetpgrpFn;
    real_sigqueue, SIGQUEUE, c"sigqueue", SigqueueFn;
    real_gettid, GETTID, c"gettid", GettidFn;
    real_tgkill, TGKILL, c"tgkill", TgkillFn;
    real_pidfd_open, PIDFD_OPEN, c"pidfd_open", PidfdOpenFn;
    real_open, OPEN, c"open", OpenFn;
    real_open64, OPEN64, c"open64", OpenFn;
    real_open_2, OPEN_2, c"__open_2", Open2Fn;
    real_open64_2, OPEN64_2, c"__open64_2", Open2Fn;
    real_openat, OPENAT, c"openat", OpenatFn;
    real_openat64, OPENAT64, c"openat64", OpenatFn;
    real_openat_2, OPENAT_2, c"__openat_2", Openat2Fn;
    real_openat64_2, OPENAT64_2, c"__openat64_2", Openat2Fn;
    real_fopen, FOPEN, c"fopen", FopenFn;
    real_fopen64, FOPEN64, c"fopen64", FopenFn;
    real_opendir, OPENDIR, c"opendir", OpendirFn;
    real_stat, STAT, c"stat", StatFn;
    real_stat64, STAT64, c"stat64", StatFn;
    real_lstat, LSTAT, c"lstat", StatFn;
    real_lstat64, LSTAT64, c"lstat64", StatFn;
    real_fstatat, FSTATAT, c"fstatat", FstatatFn;
    real_fstatat64, FSTATAT64, c"fstatat64", FstatatFn;
    real_xstat, XSTAT, c"__xstat", XstatFn;
    real_xstat64, XSTAT64, c"__xstat64", XstatFn;
    real_lxstat, LXSTAT, c"__lxstat", XstatFn;
    real_lxstat64, LXSTAT64, c"__lxstat64", XstatFn;
    real_access, ACCESS, c"access", AccessFn;
    real_faccessat, FACCESSAT, c"faccessat", FaccessatFn;
    real_statx, STATX, c"statx", StatxFn;
    real_chdir, CHDIR, c"chdir", ChdirFn;
    real_readlink, READLINK, c"readlink", ReadlinkFn;
    real_readlinkat, READLINKAT, c"readlinkat", ReadlinkatFn;
    real_fcntl, FCNTL, c"fcntl", FcntlFn;
    real_fcntl64, FCNTL64, c"fcntl64", FcntlFn;
    real_getsockopt, GETSOCKOPT, c"getsockopt", GetsockoptFn;
    real_sched_setaffinity, SCHED_SETAFFINITY, c"sched_setaffinity", AffinityFn;
    real_sched_getaffinity, SCHED_GETAFFINITY, c"sched_getaffinity", AffinityFn;
    real_sched_setscheduler, SCHED_SETSCHEDULER, c"sched_setscheduler", SetschedFn;
    real_sched_getscheduler, SCHED_GETSCHEDULER, c"sched_getscheduler", GetschedFn;
    real_sched_setparam, SCHED_SETPARAM, c"sched_setparam", SchedParamFn;
    real_sched_getparam, SCHED_GETPARAM, c"sched_getparam", SchedParamFn;
    real_sched_rr_get_interval, SCHED_RR_GET_INTERVAL, c"sched_rr_get_interval", RrFn;
    real_getpriority, GETPRIORITY, c"getpriority", GetprioFn;
    real_setpriority, SETPRIORITY, c"setpriority", SetprioFn;
    real_prlimit, PRLIMIT, c"prlimit", PrlimitFn;
    real_prlimit64, PRLIMIT64, c"prlimit64", PrlimitFn;
}

/// Resolves the real functions (constructor).
pub fn init() {
    resolve_all();
}

macro_rules! call {
    ($f:expr $(, $a:expr)*) => {
        match $f {
            // SAFETY: glibc's function with the caller's (translated) arguments.
            Some(f) => unsafe { f($($a),*) },
            None => {
                // SAFETY: glibc's thread-local errno.
                unsafe { *libc::__errno_location() = libc::ENOSYS };
                -1
            }
        }
    };
}

#[unsafe(no_mangle)]
pub extern "C" fn getpid() -> pid_t {
    if virtual_mode() {
        let v = crate::api::VPID.load(Ordering::Relaxed);
        if v != 0 {
            return v as pid_t;
        }
    }
    call!(real_getpid())
}

#[unsafe(no_mangle)]
pub extern "C" fn getppid() -> pid_t {
    r2v(call!(real_getppid()))
}

#[unsafe(no_mangle)]
pub extern "C" fn getpgrp() -> pid_t {
    r2v(call!(real_getpgrp()))
}

#[unsafe(no_mangle)]
pub extern "C" fn getpgid(pid: pid_t) -> pid_t {
    r2v(call!(real_getpgid(), v2r(pid)))
}

#[unsafe(no_mangle)]
pub extern "C" fn getsid(pid: pid_t) -> pid_t {
    r2v(call!(real_getsid(), v2r(pid)))
}

#[unsafe(no_mangle)]
pub extern "C" fn kill(pid: pid_t, sig: c_int) -> c_int {
    let pid = if translate_args() {
        v2r_signed(pid)
    } else {
        pid
    };
    call!(real_kill(), pid, sig)
}

#[unsafe(no_mangle)]
pub extern "C" fn killpg(pgrp: pid_t, sig: c_int) -> c_int {
    let pgrp = if translate_args() { v2r(pgrp) } else { pgrp };
    call!(real_killpg(), pgrp, sig)
}

#[unsafe(no_mangle)]
pub extern "C" fn sigqueue(pid: pid_t, sig: c_int, val: libc::sigval) -> c_int {
    call!(real_sigqueue(), v2r(pid), sig, val)
}

/// # Safety
/// Pointers as for the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t {
    let r = call!(real_waitpid(), v2r_signed(pid), status, options);
    // SAFETY: `status` is the caller's, as the call used it.
    unsafe { waited(r, status, options) }
}

/// # Safety
/// Pointers as for the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wait(status: *mut c_int) -> pid_t {
    let r = call!(real_wait(), status);
    // SAFETY: as in `waitpid`.
    unsafe { waited(r, status, 0) }
}

/// # Safety
/// Pointers as for the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wait3(status: *mut c_int, options: c_int, ru: *mut libc::rusage) -> pid_t {
    let r = call!(real_wait3(), status, options, ru);
    // SAFETY: as in `waitpid`.
    unsafe { waited(r, status, options) }
}

/// # Safety
/// Pointers as for the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wait4(
    pid: pid_t,
    status: *mut c_int,
    options: c_int,
    ru: *mut libc::rusage,
) -> pid_t {
    let r = call!(real_wait4(), v2r_signed(pid), status, options, ru);
    // SAFETY: as in `waitpid`.
    unsafe { waited(r, status, options) }
}

/// # Safety
/// Pointers as for the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn waitid(
    idtype: idtype_t,
    id: id_t,
    info: *mut siginfo_t,
    options: c_int,
) -> c_int {
    let id = if virtual_mode() && (idtype == libc::P_PID || idtype == libc::P_PGID) {
        v2r(id as pid_t) as id_t
    } else {
        id
    };
    let r = call!(real_waitid(), idtype, id, info, options);
    if r == 0 && virtual_mode() && !info.is_null() {
        // siginfo_t for SIGCHLD: si_pid is the int at offset 16 on x86_64.
        // SAFETY: the kernel filled `info`; we rewrite one int field inside it.
        unsafe {
            let p = (info as *mut u8).add(16) as *mut pid_t;
            let real = *p;
            *p = r2v(real);
            let code = (*info).si_code;
            if options & libc::WNOWAIT == 0
                && (code == libc::CLD_EXITED
                    || code == libc::CLD_KILLED
                    || code == libc::CLD_DUMPED)
            {
                forget(real);
            }
        }
    }
    r
}

#[unsafe(no_mangle)]
pub extern "C" fn setpgid(pid: pid_t, pgid: pid_t) -> c_int {
    call!(real_setpgid(), v2r(pid), v2r(pgid))
}

#[unsafe(no_mangle)]
pub extern "C" fn tcgetpgrp(fd: c_int) -> pid_t {
    r2v(call!(real_tcgetpgrp(), fd))
}

#[unsafe(no_mangle)]
pub extern "C" fn tcsetpgrp(fd: c_int, pgrp: pid_t) -> c_int {
    call!(real_tcsetpgrp(), fd, v2r(pgrp))
}

// ---- siginfo: si_pid of delivered signals -----------------------------------------------

/// Byte offsets in a raw `siginfo_t` (x86_64): `si_signo`, `si_code`, `si_pid`.
const SI_SIGNO: usize = 0;
const SI_CODE: usize = 8;
const SI_PID: usize = 16;

/// Whether `si_pid` holds a pid for this signal and code: the sender of `kill`, `sigqueue`,
/// `tgkill`, `mq_notify`, or the child of a `SIGCHLD` from the kernel. (For other codes the
/// same bytes are a fault address, a timer id, a band, ...)
fn carries_pid(sig: c_int, code: c_int) -> bool {
    matches!(
        code,
        libc::SI_USER | libc::SI_QUEUE | libc::SI_TKILL | libc::SI_MESGQ
    ) || (sig == libc::SIGCHLD && (libc::CLD_EXITED..=libc::CLD_CONTINUED).contains(&code))
}

/// Rewrites `si_pid` of `info` (a raw siginfo, null allowed) real → virtual.
///
/// Async-signal-safe (atomic loads only).
///
/// # Safety
/// `info` is null or points to a writable 128-byte siginfo.
pub unsafe fn siginfo_to_virtual(info: *mut siginfo_t) {
    if !virtual_mode() || info.is_null() {
        return;
    }
    let b = info as *mut u8;
    // SAFETY: the fields lie inside the 128-byte siginfo the caller vouches for (which may
    // be a byte buffer: unaligned accesses).
    unsafe {
        let sig = std::ptr::read_unaligned(b.add(SI_SIGNO) as *const c_int);
        let code = std::ptr::read_unaligned(b.add(SI_CODE) as *const c_int);
        if carries_pid(sig, code) {
            let p = b.add(SI_PID) as *mut pid_t;
            std::ptr::write_unaligned(p, r2v(std::ptr::read_unaligned(p)));
        }
    }
}

/// The program's `SA_SIGINFO` handlers by signal number; the kernel has
/// [`siginfo_trampoline`] instead, which translates `si_pid` and calls them.
static HANDLERS: [AtomicUsize; 65] = [const { AtomicUsize::new(0) }; 65];

type InfoHandler = unsafe extern "C" fn(c_int, *mut siginfo_t, *mut libc::c_void);

/// What the kernel runs for a program's `SA_SIGINFO` handler: `si_pid` real → virtual (only
/// after a restart with new pids; one relaxed load otherwise), then the program's handler.
extern "C" fn siginfo_trampoline(sig: c_int, info: *mut siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo for this delivery, on our signal frame.
    unsafe { siginfo_to_virtual(info) };
    let h = handler_slot(sig).map_or(0, |s| s.load(Ordering::Acquire));
    if h != libc::SIG_DFL && h != libc::SIG_IGN && h != libc::SIG_ERR {
        // SAFETY: the program installed `h` as an SA_SIGINFO handler for `sig`.
        unsafe { std::mem::transmute::<usize, InfoHandler>(h)(sig, info, ctx) };
    }
}

fn trampoline_addr() -> usize {
    siginfo_trampoline as InfoHandler as usize
}

fn handler_slot(sig: c_int) -> Option<&'static AtomicUsize> {
    usize::try_from(sig).ok().and_then(|i| HANDLERS.get(i))
}

/// For the `sigaction` wrapper, on the action about to be installed for `sig`: an
/// `SA_SIGINFO` handler is remembered and replaced by [`siginfo_trampoline`]. Returns the
/// program's previous handler, for [`unwrap_old_action`].
pub fn wrap_action(sig: c_int, a: &mut libc::sigaction) -> usize {
    let Some(slot) = handler_slot(sig) else {
        return 0;
    };
    let prev = slot.load(Ordering::Acquire);
    let h = a.sa_sigaction;
    if a.sa_flags & libc::SA_SIGINFO != 0
        && h != libc::SIG_DFL
        && h != libc::SIG_IGN
        && h != trampoline_addr()
        && (1..=64).contains(&sig)
    {
        slot.store(h, Ordering::Release);
        a.sa_sigaction = trampoline_addr();
    }
    prev
}

/// The program's handler for `sig` as it installed it (for a `sigaction` that only queries).
pub fn program_handler(sig: c_int) -> usize {
    handler_slot(sig).map_or(0, |s| s.load(Ordering::Acquire))
}

/// A handler the kernel reported for `sig` as the program knows it: [`siginfo_trampoline`]
/// becomes `prev`, the program's handler at the time of the call.
pub fn unwrap_handler(h: usize, prev: usize) -> usize {
    if h == trampoline_addr() { prev } else { h }
}

// ---- thread ids, /proc paths, fcntl owners, peer credentials ----------------------------

type GettidFn = unsafe extern "C" fn() -> pid_t;
type TgkillFn = unsafe extern "C" fn(pid_t, pid_t, c_int) -> c_int;
type PidfdOpenFn = unsafe extern "C" fn(pid_t, libc::c_uint) -> c_int;
type OpenFn = unsafe extern "C" fn(*const libc::c_char, c_int, ...) -> c_int;
type OpenatFn = unsafe extern "C" fn(c_int, *const libc::c_char, c_int, ...) -> c_int;
type Open2Fn = unsafe extern "C" fn(*const libc::c_char, c_int) -> c_int;
type Openat2Fn = unsafe extern "C" fn(c_int, *const libc::c_char, c_int) -> c_int;
type FopenFn = unsafe extern "C" fn(*const libc::c_char, *const libc::c_char) -> *mut libc::FILE;
type OpendirFn = unsafe extern "C" fn(*const libc::c_char) -> *mut libc::DIR;
type StatFn = unsafe extern "C" fn(*const libc::c_char, *mut libc::stat) -> c_int;
type FstatatFn = unsafe extern "C" fn(c_int, *const libc::c_char, *mut libc::stat, c_int) -> c_int;
type XstatFn = unsafe extern "C" fn(c_int, *const libc::c_char, *mut libc::stat) -> c_int;
type AccessFn = unsafe extern "C" fn(*const libc::c_char, c_int) -> c_int;
type FaccessatFn = unsafe extern "C" fn(c_int, *const libc::c_char, c_int, c_int) -> c_int;
type StatxFn = unsafe extern "C" fn(
    c_int,
    *const libc::c_char,
    c_int,
    libc::c_uint,
    *mut libc::statx,
) -> c_int;
type ChdirFn = unsafe extern "C" fn(*const libc::c_char) -> c_int;
type ReadlinkFn =
    unsafe extern "C" fn(*const libc::c_char, *mut libc::c_char, libc::size_t) -> libc::ssize_t;
type ReadlinkatFn = unsafe extern "C" fn(
    c_int,
    *const libc::c_char,
    *mut libc::c_char,
    libc::size_t,
) -> libc::ssize_t;
type FcntlFn = unsafe extern "C" fn(c_int, c_int, ...) -> c_int;
type AffinityFn = unsafe extern "C" fn(pid_t, libc::size_t, *mut libc::cpu_set_t) -> c_int;
type SetschedFn = unsafe extern "C" fn(pid_t, c_int, *const libc::sched_param) -> c_int;
type GetschedFn = unsafe extern "C" fn(pid_t) -> c_int;
type SchedParamFn = unsafe extern "C" fn(pid_t, *mut libc::sched_param) -> c_int;
type RrFn = unsafe extern "C" fn(pid_t, *mut libc::timespec) -> c_int;
type GetprioFn = unsafe extern "C" fn(c_int, libc::id_t) -> c_int;
type SetprioFn = unsafe extern "C" fn(c_int, libc::id_t, c_int) -> c_int;
type PrlimitFn =
    unsafe extern "C" fn(pid_t, c_int, *const libc::rlimit64, *mut libc::rlimit64) -> c_int;
type GetsockoptFn =
    unsafe extern "C" fn(c_int, c_int, c_int, *mut libc::c_void, *mut libc::socklen_t) -> c_int;

/// glibc's `gettid()`: virtual like `getpid()` (the main thread's tid is the pid; the
/// threads a restart recreated are in the table with their old tids). `pthread_kill` & co.
/// use glibc's own copy of the kernel tid and need no translation.
#[unsafe(no_mangle)]
pub extern "C" fn gettid() -> pid_t {
    let t = match real_gettid() {
        // SAFETY: glibc's gettid, no arguments.
        Some(f) => unsafe { f() },
        // SAFETY: the raw syscall, no arguments.
        None => unsafe { libc::syscall(libc::SYS_gettid) as pid_t },
    };
    r2v(t)
}

#[unsafe(no_mangle)]
pub extern "C" fn tgkill(tgid: pid_t, tid: pid_t, sig: c_int) -> c_int {
    call!(real_tgkill(), v2r(tgid), v2r(tid), sig)
}

#[unsafe(no_mangle)]
pub extern "C" fn pidfd_open(pid: pid_t, flags: libc::c_uint) -> c_int {
    call!(real_pidfd_open(), v2r(pid), flags)
}

/// Room for a translated path (PATH_MAX).
const PATH_BUF: usize = 4096;

/// Parses the decimal pid at the start of `s`; returns (pid, digits), None if `s` does not
/// start with 1..=10 digits or the value is not a pid.
fn leading_pid(s: &[u8]) -> Option<(pid_t, usize)> {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 10 || s[0] == b'0' {
        return None;
    }
    let v = s[..n]
        .iter()
        .fold(0i64, |v, &c| v * 10 + i64::from(c - b'0'));
    (v <= i64::from(i32::MAX)).then_some((v as pid_t, n))
}

/// Appends the decimal `v` to `out` at `*len`; false if it does not fit.
fn push_pid(out: &mut [u8], len: &mut usize, v: pid_t) -> bool {
    let mut d = [0u8; 10];
    let (mut x, mut n) = (v.max(0) as u32, 0);
    loop {
        d[n] = b'0' + (x % 10) as u8;
        n += 1;
        x /= 10;
        if x == 0 {
            break;
        }
    }
    if *len + n > out.len() {
        return false;
    }
    for (i, c) in d[..n].iter().rev().enumerate() {
        out[*len + i] = *c;
    }
    *len += n;
    true
}

/// `/proc/<vpid>[/task/<vtid>][/rest]` → the same path with real ids, into `buf`; null if
/// `path` needs no translation (no translation active, another path, an unknown pid, too
/// long).
///
/// # Safety
/// `path` is null or a NUL-terminated string.
unsafe fn proc_path(path: *const libc::c_char, buf: &mut [u8; PATH_BUF]) -> *const libc::c_char {
    if !translate_args() || path.is_null() {
        return std::ptr::null();
    }
    // SAFETY: NUL-terminated per the contract.
    let s = unsafe { std::ffi::CStr::from_ptr(path) }.to_bytes();
    let Some(rest) = s.strip_prefix(b"/proc/") else {
        return std::ptr::null();
    };
    if let Some(t) = rest.strip_prefix(b"self/task/") {
        // One of our threads: /proc/self/task/<vtid>.
        let Some((tv, tn)) = leading_pid(t) else {
            return std::ptr::null();
        };
        let tr = v2r(tv);
        let tail = &t[tn..];
        let mut len = 16;
        if tr == tv || !matches!(tail.first(), None | Some(b'/')) {
            return std::ptr::null();
        }
        buf[..len].copy_from_slice(b"/proc/self/task/");
        if !push_pid(buf, &mut len, tr) || len + tail.len() + 1 > buf.len() {
            return std::ptr::null();
        }
        buf[len..len + tail.len()].copy_from_slice(tail);
        buf[len + tail.len()] = 0;
        return buf.as_ptr().cast();
    }
    let Some((v, n)) = leading_pid(rest) else {
        return std::ptr::null();
    };
    if !matches!(rest.get(n), None | Some(b'/')) {
        return std::ptr::null();
    }
    let r = v2r(v);
    if r == v {
        return std::ptr::null();
    }
    let mut tail = &rest[n..];
    let mut len = 0;
    buf[..6].copy_from_slice(b"/proc/");
    len += 6;
    if !push_pid(buf, &mut len, r) {
        return std::ptr::null();
    }
    // A thread: /proc/<pid>/task/<tid>.
    if let Some(t) = tail.strip_prefix(b"/task/")
        && let Some((tv, tn)) = leading_pid(t)
        && matches!(t.get(tn), None | Some(b'/'))
    {
        if len + 6 > buf.len() {
            return std::ptr::null();
        }
        buf[len..len + 6].copy_from_slice(b"/task/");
        len += 6;
        if !push_pid(buf, &mut len, v2r(tv)) {
            return std::ptr::null();
        }
        tail = &t[tn..];
    }
    if len + tail.len() + 1 > buf.len() {
        return std::ptr::null();
    }
    buf[len..len + tail.len()].copy_from_slice(tail);
    buf[len + tail.len()] = 0;
    buf.as_ptr().cast()
}

/// `$path` translated if it names `/proc/<vpid>`, else unchanged (evaluates to a pointer
/// valid as long as the `$buf` local).
macro_rules! xlate_path {
    ($path:expr, $buf:ident) => {{
        // SAFETY: the caller's path, NUL-terminated as the C function requires.
        let t = unsafe { proc_path($path, &mut $buf) };
        if t.is_null() { $path } else { t }
    }};
}

macro_rules! path_wrappers {
    ($( $name:ident, $real:ident, ($($a:ident: $t:ty),*) -> $ret:ty, $err:expr, |$p:ident = $path:ident| ($($call:expr),*); )*) => {
        $(
            /// # Safety
            /// Same contract as the C function.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $name($($a: $t),*) -> $ret {
                let Some(f) = $real() else {
                    // SAFETY: glibc's thread-local errno.
                    unsafe { *libc::__errno_location() = libc::ENOSYS };
                    return $err;
                };
                if !virtual_mode() {
                    let $p = $path;
                    // SAFETY: glibc's function with the caller's arguments.
                    return unsafe { f($($call),*) };
                }
                let mut buf = [0u8; PATH_BUF];
                let $p = xlate_path!($path, buf);
                // SAFETY: glibc's function with the caller's arguments (path translated).
                unsafe { f($($call),*) }
            }
        )*
    };
}

path_wrappers! {
    __open_2, real_open_2, (path: *const libc::c_char, flags: c_int) -> c_int, -1,
        |p = path| (p, flags);
    __open64_2, real_open64_2, (path: *const libc::c_char, flags: c_int) -> c_int, -1,
        |p = path| (p, flags);
    __openat_2, real_openat_2, (dirfd: c_int, path: *const libc::c_char, flags: c_int) -> c_int,
        -1, |p = path| (dirfd, p, flags);
    __openat64_2, real_openat64_2,
        (dirfd: c_int, path: *const libc::c_char, flags: c_int) -> c_int, -1,
        |p = path| (dirfd, p, flags);
    fopen, real_fopen, (path: *const libc::c_char, mode: *const libc::c_char) -> *mut libc::FILE,
        std::ptr::null_mut(), |p = path| (p, mode);
    fopen64, real_fopen64,
        (path: *const libc::c_char, mode: *const libc::c_char) -> *mut libc::FILE,
        std::ptr::null_mut(), |p = path| (p, mode);
    opendir, real_opendir, (path: *const libc::c_char) -> *mut libc::DIR, std::ptr::null_mut(),
        |p = path| (p);
    stat, real_stat, (path: *const libc::c_char, st: *mut libc::stat) -> c_int, -1, |p = path| (p, st);
    stat64, real_stat64, (path: *const libc::c_char, st: *mut libc::stat) -> c_int, -1,
        |p = path| (p, st);
    lstat, real_lstat, (path: *const libc::c_char, st: *mut libc::stat) -> c_int, -1,
        |p = path| (p, st);
    lstat64, real_lstat64, (path: *const libc::c_char, st: *mut libc::stat) -> c_int, -1,
        |p = path| (p, st);
    fstatat, real_fstatat,
        (dirfd: c_int, path: *const libc::c_char, st: *mut libc::stat, flags: c_int) -> c_int, -1,
        |p = path| (dirfd, p, st, flags);
    fstatat64, real_fstatat64,
        (dirfd: c_int, path: *const libc::c_char, st: *mut libc::stat, flags: c_int) -> c_int, -1,
        |p = path| (dirfd, p, st, flags);
    __xstat, real_xstat, (ver: c_int, path: *const libc::c_char, st: *mut libc::stat) -> c_int,
        -1, |p = path| (ver, p, st);
    __xstat64, real_xstat64,
        (ver: c_int, path: *const libc::c_char, st: *mut libc::stat) -> c_int, -1,
        |p = path| (ver, p, st);
    __lxstat, real_lxstat, (ver: c_int, path: *const libc::c_char, st: *mut libc::stat) -> c_int,
        -1, |p = path| (ver, p, st);
    __lxstat64, real_lxstat64,
        (ver: c_int, path: *const libc::c_char, st: *mut libc::stat) -> c_int, -1,
        |p = path| (ver, p, st);
    access, real_access, (path: *const libc::c_char, mode: c_int) -> c_int, -1, |p = path| (p, mode);
    faccessat, real_faccessat,
        (dirfd: c_int, path: *const libc::c_char, mode: c_int, flags: c_int) -> c_int, -1,
        |p = path| (dirfd, p, mode, flags);
    statx, real_statx,
        (dirfd: c_int, path: *const libc::c_char, flags: c_int, mask: libc::c_uint,
         buf: *mut libc::statx) -> c_int, -1,
        |p = path| (dirfd, p, flags, mask, buf);
    chdir, real_chdir, (path: *const libc::c_char) -> c_int, -1, |p = path| (p);

}

/// `open`, `open64`: the mode is a variadic argument, present when `O_CREAT` or `O_TMPFILE`
/// is set. It arrives in the register of a third fixed argument (x86_64 SysV; see
/// /work/shared/research/rust-notes.md §1.4, method A) and is passed on only then.
macro_rules! open_wrappers {
    ($($name:ident, $real:ident;)*) => {
        $(
            /// # Safety
            /// Same contract as the C function.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $name(
                path: *const libc::c_char,
                flags: c_int,
                mode: libc::c_uint,
            ) -> c_int {
                let Some(f) = $real() else {
                    // SAFETY: glibc's thread-local errno.
                    unsafe { *libc::__errno_location() = libc::ENOSYS };
                    return -1;
                };
                let with_mode =
                    flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE;
                if !virtual_mode() {
                    // SAFETY: glibc's variadic function; `mode` only when the caller passed one.
                    return unsafe { if with_mode { f(path, flags, mode) } else { f(path, flags) } };
                }
                let mut buf = [0u8; PATH_BUF];
                let p = xlate_path!(path, buf);
                // SAFETY: as above, the path translated.
                unsafe { if with_mode { f(p, flags, mode) } else { f(p, flags) } }
            }
        )*
    };
}

open_wrappers! {
    open, real_open;
    open64, real_open64;
}

macro_rules! openat_wrappers {
    ($($name:ident, $real:ident;)*) => {
        $(
            /// # Safety
            /// Same contract as the C function (mode as for `open`).
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $name(
                dirfd: c_int,
                path: *const libc::c_char,
                flags: c_int,
                mode: libc::c_uint,
            ) -> c_int {
                let Some(f) = $real() else {
                    // SAFETY: glibc's thread-local errno.
                    unsafe { *libc::__errno_location() = libc::ENOSYS };
                    return -1;
                };
                let with_mode =
                    flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE;
                if !virtual_mode() {
                    // SAFETY: glibc's variadic function; `mode` only when the caller passed one.
                    return unsafe {
                        if with_mode { f(dirfd, path, flags, mode) } else { f(dirfd, path, flags) }
                    };
                }
                let mut buf = [0u8; PATH_BUF];
                let p = xlate_path!(path, buf);
                // SAFETY: as above, the path translated.
                unsafe { if with_mode { f(dirfd, p, flags, mode) } else { f(dirfd, p, flags) } }
            }
        )*
    };
}

openat_wrappers! {
    openat, real_openat;
    openat64, real_openat64;
}

/// After `readlink` of `/proc/self` or `/proc/thread-self`, whose targets name our pid (and
/// tid): the kernel's pid in the result becomes the virtual one. Returns the new length.
///
/// # Safety
/// `path` NUL-terminated; `out` holds `len` bytes the call wrote, room for `cap`.
unsafe fn readlink_result(
    path: *const libc::c_char,
    out: *mut libc::c_char,
    len: libc::ssize_t,
    cap: libc::size_t,
) -> libc::ssize_t {
    if len <= 0 || path.is_null() || out.is_null() {
        return len;
    }
    // SAFETY: per the contract.
    let p = unsafe { std::ffi::CStr::from_ptr(path) }.to_bytes();
    if p != b"/proc/self" && p != b"/proc/thread-self" {
        return len;
    }
    // SAFETY: per the contract.
    let got = unsafe { std::slice::from_raw_parts(out as *const u8, len as usize) };
    let Some((r, n)) = leading_pid(got) else {
        return len;
    };
    let v = r2v(r);
    if v == r {
        return len;
    }
    let mut tmp = [0u8; 64];
    let mut l = 0;
    if !push_pid(&mut tmp, &mut l, v) || l + got.len() - n > tmp.len() {
        return len;
    }
    tmp[l..l + got.len() - n].copy_from_slice(&got[n..]);
    l += got.len() - n;
    let l = l.min(cap);
    // SAFETY: `out` has room for `cap` bytes.
    unsafe { std::ptr::copy_nonoverlapping(tmp.as_ptr(), out as *mut u8, l) };
    l as libc::ssize_t
}

/// # Safety
/// Same contract as the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readlink(
    path: *const libc::c_char,
    out: *mut libc::c_char,
    cap: libc::size_t,
) -> libc::ssize_t {
    let Some(f) = real_readlink() else {
        // SAFETY: glibc's thread-local errno.
        unsafe { *libc::__errno_location() = libc::ENOSYS };
        return -1;
    };
    if !virtual_mode() {
        // SAFETY: the caller's arguments.
        return unsafe { f(path, out, cap) };
    }
    let mut buf = [0u8; PATH_BUF];
    let p = xlate_path!(path, buf);
    // SAFETY: the caller's arguments, the path translated; then our fix-up of the result.
    unsafe { readlink_result(path, out, f(p, out, cap), cap) }
}

/// # Safety
/// Same contract as the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readlinkat(
    dirfd: c_int,
    path: *const libc::c_char,
    out: *mut libc::c_char,
    cap: libc::size_t,
) -> libc::ssize_t {
    let Some(f) = real_readlinkat() else {
        // SAFETY: glibc's thread-local errno.
        unsafe { *libc::__errno_location() = libc::ENOSYS };
        return -1;
    };
    if !virtual_mode() {
        // SAFETY: the caller's arguments.
        return unsafe { f(dirfd, path, out, cap) };
    }
    let mut buf = [0u8; PATH_BUF];
    let p = xlate_path!(path, buf);
    // SAFETY: the caller's arguments, the path translated; then our fix-up of the result.
    unsafe { readlink_result(path, out, f(dirfd, p, out, cap), cap) }
}

const F_SETOWN_EX: c_int = 15;
const F_GETOWN_EX: c_int = 16;

/// `struct f_owner_ex` (not in the libc crate).
#[repr(C)]
#[derive(Clone, Copy)]
struct FOwnerEx {
    kind: c_int,
    pid: pid_t,
}

/// `fcntl`'s owner commands: `F_SETOWN` (pid, or -pgid) virtual → real, `F_GETOWN` real →
/// virtual, the `pid` of `struct f_owner_ex` for `F_SETOWN_EX`/`F_GETOWN_EX` likewise (a
/// thread owner's tid: only the main thread's). The third argument is variadic: read as
/// the register of a third fixed argument (x86_64 SysV, method A of rust-notes.md §1.4),
/// as glibc itself reads it (one `unsigned long`-sized word, int or pointer).
///
/// # Safety
/// Same contract as the C function.
unsafe fn fcntl_impl(f: Option<FcntlFn>, fd: c_int, cmd: c_int, arg: libc::c_ulong) -> c_int {
    let Some(f) = f else {
        // SAFETY: glibc's thread-local errno.
        unsafe { *libc::__errno_location() = libc::ENOSYS };
        return -1;
    };
    if !virtual_mode() {
        // SAFETY: glibc's fcntl with the caller's three words.
        return unsafe { f(fd, cmd, arg) };
    }
    match cmd {
        libc::F_SETOWN => {
            let who = arg as c_int;
            let w = if who < 0 { -v2r(-who) } else { v2r(who) };
            // SAFETY: as above, the owner translated.
            unsafe { f(fd, cmd, w as libc::c_ulong) }
        }
        libc::F_GETOWN => {
            // SAFETY: as above.
            let r = unsafe { f(fd, cmd, arg) };
            if r < -1 { -r2v(-r) } else { r2v(r) }
        }
        F_SETOWN_EX | F_GETOWN_EX if arg != 0 => {
            let p = arg as *mut FOwnerEx;
            if cmd == F_GETOWN_EX {
                // SAFETY: the caller's struct, which the kernel fills.
                let r = unsafe { f(fd, cmd, arg) };
                if r == 0 {
                    // SAFETY: as above.
                    unsafe { (*p).pid = r2v((*p).pid) };
                }
                return r;
            }
            // SAFETY: the caller's struct, read; a translated copy is passed.
            let mut o = unsafe { std::ptr::read(p) };
            o.pid = v2r(o.pid);
            // SAFETY: our copy lives across the call.
            unsafe { f(fd, cmd, &mut o as *mut FOwnerEx as libc::c_ulong) }
        }
        // SAFETY: glibc's fcntl with the caller's three words.
        _ => unsafe { f(fd, cmd, arg) },
    }
}

/// # Safety
/// Same contract as the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: libc::c_ulong) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { fcntl_impl(real_fcntl(), fd, cmd, arg) }
}

/// # Safety
/// Same contract as the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: libc::c_ulong) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { fcntl_impl(real_fcntl64(), fd, cmd, arg) }
}

/// `SO_PEERCRED`: the peer's pid real → virtual.
///
/// # Safety
/// Same contract as the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut libc::c_void,
    len: *mut libc::socklen_t,
) -> c_int {
    let r = call!(real_getsockopt(), fd, level, name, val, len);
    if r == 0
        && virtual_mode()
        && level == libc::SOL_SOCKET
        && name == libc::SO_PEERCRED
        && !val.is_null()
        && !len.is_null()
        // SAFETY: the caller's length word, just written by the kernel.
        && unsafe { *len } as usize >= std::mem::size_of::<libc::ucred>()
    {
        // SAFETY: the kernel filled a `struct ucred` there.
        unsafe {
            let c = val as *mut libc::ucred;
            (*c).pid = r2v((*c).pid);
        }
    }
    r
}

// ---- other calls naming a process or thread by id ---------------------------------------

/// `sched_*` calls take a pid or tid (0 = the caller).
///
/// # Safety
/// Pointers as for the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sched_setaffinity(
    pid: pid_t,
    size: libc::size_t,
    set: *mut libc::cpu_set_t,
) -> c_int {
    call!(real_sched_setaffinity(), v2r(pid), size, set)
}

/// # Safety
/// Pointers as for the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sched_getaffinity(
    pid: pid_t,
    size: libc::size_t,
    set: *mut libc::cpu_set_t,
) -> c_int {
    call!(real_sched_getaffinity(), v2r(pid), size, set)
}

/// # Safety
/// Pointers as for the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sched_setscheduler(
    pid: pid_t,
    policy: c_int,
    p: *const libc::sched_param,
) -> c_int {
    call!(real_sched_setscheduler(), v2r(pid), policy, p)
}

#[unsafe(no_mangle)]
pub extern "C" fn sched_getscheduler(pid: pid_t) -> c_int {
    call!(real_sched_getscheduler(), v2r(pid))
}

/// # Safety
/// Pointers as for the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sched_setparam(pid: pid_t, p: *mut libc::sched_param) -> c_int {
    call!(real_sched_setparam(), v2r(pid), p)
}

/// # Safety
/// Pointers as for the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sched_getparam(pid: pid_t, p: *mut libc::sched_param) -> c_int {
    call!(real_sched_getparam(), v2r(pid), p)
}

/// # Safety
/// Pointers as for the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sched_rr_get_interval(pid: pid_t, t: *mut libc::timespec) -> c_int {
    call!(real_sched_rr_get_interval(), v2r(pid), t)
}

/// The id of `PRIO_PROCESS` (a pid or tid) and `PRIO_PGRP` (a group) virtual → real.
fn prio_id(which: c_int, who: libc::id_t) -> libc::id_t {
    if which == libc::PRIO_PROCESS as c_int || which == libc::PRIO_PGRP as c_int {
        v2r(who as pid_t) as libc::id_t
    } else {
        who
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn getpriority(which: c_int, who: libc::id_t) -> c_int {
    call!(real_getpriority(), which, prio_id(which, who))
}

#[unsafe(no_mangle)]
pub extern "C" fn setpriority(which: c_int, who: libc::id_t, prio: c_int) -> c_int {
    call!(real_setpriority(), which, prio_id(which, who), prio)
}

/// # Safety
/// Pointers as for the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn prlimit(
    pid: pid_t,
    res: c_int,
    new: *const libc::rlimit64,
    old: *mut libc::rlimit64,
) -> c_int {
    call!(real_prlimit(), v2r(pid), res, new, old)
}

/// # Safety
/// Pointers as for the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn prlimit64(
    pid: pid_t,
    res: c_int,
    new: *const libc::rlimit64,
    old: *mut libc::rlimit64,
) -> c_int {
    call!(real_prlimit64(), v2r(pid), res, new, old)
}
