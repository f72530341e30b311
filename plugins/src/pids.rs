//! Virtual pids: the pids a program of the computation sees stay the same across restarts.
//!
//! A process's vpid is the pid it had when it joined. In the default restart (one user+pid
//! namespace for the whole tree, every process recreated with `clone3(set_tid)`) real pids
//! *are* the old pids, so nothing is translated: every wrapper here is one relaxed load and a
//! tail call. After a restart **without** namespaces (`CKPT_NO_NAMESPACES=1`, or no
//! unprivileged user namespaces) processes get new kernel pids; each restarted process learns
//! every (vpid → new pid) pair at the restart barrier ([`set_map`]) and the wrappers translate
//! pids passed in (`kill`, `waitpid`, `setpgid`, …: virtual → real) and pids returned
//! (`getpid`, `getppid`, `wait*`, `getpgid`, …: real → virtual). Process groups and sessions
//! are named by their leader's pid, so the same table translates them.
//!
//! Not translated (documented in docs/process-trees.md): thread ids, `/proc/<pid>` paths,
//! `si_pid` in signal handlers and signalfd, `SO_PEERCRED`, `F_GETOWN`, raw `syscall()`; pids of
//! zombies recreated in fallback mode; a child forked after a fallback restart whose new pid
//! equals some old vpid.
//!
//! Wrappers run on user threads: no allocation, no locks (the table is a fixed array of atomics
//! in static memory, inherited across fork and restored with memory).

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
/// `vpid << 32 | real`, entries `0..N`.
static MAP: [AtomicU64; MAX] = [const { AtomicU64::new(0) }; MAX];
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
    N.store(n, Ordering::Release);
    VIRTUAL.store(n > 0, Ordering::Release);
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
        for k in kids.split_whitespace().filter_map(|w| w.parse::<i32>().ok()) {
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
    let n = N.load(Ordering::Acquire);
    for e in &MAP[..n] {
        let x = e.load(Ordering::Relaxed);
        if x as u32 as pid_t == real {
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

/// Virtual → real.
pub fn v2r(v: pid_t) -> pid_t {
    if !VIRTUAL.load(Ordering::Relaxed) || v <= 0 {
        return v;
    }
    let n = N.load(Ordering::Acquire);
    for e in &MAP[..n] {
        let x = e.load(Ordering::Relaxed);
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
    let n = N.load(Ordering::Acquire);
    for e in &MAP[..n] {
        let x = e.load(Ordering::Relaxed);
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
    call!(real_kill(), v2r_signed(pid), sig)
}

#[unsafe(no_mangle)]
pub extern "C" fn killpg(pgrp: pid_t, sig: c_int) -> c_int {
    call!(real_killpg(), v2r(pgrp), sig)
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
                && (code == libc::CLD_EXITED || code == libc::CLD_KILLED || code == libc::CLD_DUMPED)
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
