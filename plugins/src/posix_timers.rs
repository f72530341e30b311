//! POSIX timers (`timer_create` and friends), `SIGEV_THREAD` included, across checkpoint and
//! restart.
//!
//! # Wrappers
//! `timer_create`, `timer_settime`, `timer_gettime`, `timer_getoverrun` and `timer_delete` are
//! wrapped; glibc's functions (resolved with `dlsym(RTLD_NEXT)` in [`Plugin::init`]) do the
//! work. Every timer is recorded in a fixed table in static memory ([`MAX_TIMERS`] slots; no
//! allocation in any wrapper): clock, notification (kind, signal, `sigev_value`, target thread
//! of `SIGEV_THREAD_ID`, function and attributes of `SIGEV_THREAD`), the kernel's timer id and
//! the id the program holds. Creation and deletion take a spin lock with every signal blocked and
//! a [`WrapperGuard`] held, so no thread is ever frozen (or re-entered by a handler) inside the
//! table update; `timer_settime`/`gettime`/`getoverrun` (async-signal-safe) only read atomics.
//! A timer the table cannot hold (full) is created by glibc untracked (not restored; a
//! `SIGEV_THREAD` one fails with `EAGAIN` instead).
//!
//! # `SIGEV_THREAD`
//! glibc's implementation runs a helper thread that blocks every signal, which the checkpoint
//! signal cannot suspend. We never hand `SIGEV_THREAD` to glibc: the kernel timer is created as
//! `SIGEV_THREAD_ID` aimed at our own helper thread (started with `pthread_create` on the first
//! such timer; it blocks every asynchronous signal but the checkpoint signal). Its signal is
//! `SIGRTMIN+4` unless `CKPT_PTIMER_SIGNAL` names another real-time signal; the program should not
//! use it for itself. The `sigev_value` of the kernel timer encodes the table slot and a
//! sequence number; the helper waits with `rt_sigtimedwait`, checks the slot is still that
//! timer, and runs `sigev_notify_function(sigev_value)` in a new detached thread created with a
//! copy of the program's `sigev_notify_attributes` (stack and guard size, scheduling, scope,
//! affinity, signal mask — a caller-provided stack address is not copied), as glibc does; the
//! callback thread inherits the helper's mask (glibc's callbacks also run with signals blocked)
//! unless the attributes carry one, from which the checkpoint signal is removed.
//!
//! # Checkpoint and restart
//! At checkpoint (user threads frozen) each timer's `timer_gettime` (remaining time and interval)
//! is saved in its slot. `/proc/self/timers` supplies the signal value of timers created with a
//! NULL `sigevent` and reveals timers created behind our back (warned about, not restored). In a
//! restarted process, before user threads run, every timer is created again and re-armed with
//! its remaining time and interval: the time the program was down does not count, except for a
//! `CLOCK_REALTIME`/`_ALARM`/`TAI` timer last armed with `TIMER_ABSTIME`, which keeps its
//! absolute expiry (a wall-clock alarm; a periodic one that became overdue fires at once and the
//! kernel counts overruns). The helper thread is restored like any other thread; its timers are
//! re-aimed at its new tid, read from its `struct pthread` (the kernel writes it there at clone).
//! A `SIGEV_THREAD_ID` timer follows its target thread when the target was the creating thread or
//! the main thread; another target cannot be found again (warning, not restored).
//!
//! # Timer ids
//! The program sees the kernel's id (glibc's `timer_t` for non-`SIGEV_THREAD` timers is the
//! kernel id; ours are too, `SIGEV_THREAD` included). At restart each timer is created with the
//! *same* kernel id through `prctl(PR_TIMER_CREATE_RESTORE_IDS)` (Linux ≥ 6.16, CRIU's
//! mechanism: `timer_create` then reads the wanted id from `*timerid`). Without it, or if an id is
//! taken, the timer gets a new kernel id and the wrappers translate the program's id to it; a
//! timer created later whose kernel id equals one the program already holds is given a
//! synthetic id (≥ 2^30) instead. Either way a program's `timer_t` stays valid. Only
//! `si_timerid` in a signal's `siginfo` shows the kernel's id.
//!
//! # Gaps
//! - Overrun counts (`timer_getoverrun`) restart from zero. A timer signal pending at checkpoint
//!   time is not the timer's any more: the core re-queues thread-directed ones (SIGEV_THREAD,
//!   SIGEV_THREAD_ID) with their siginfo, process-directed ones are the signals plugin's.
//! - CPU-time clocks: the process clock and the creating thread's clock (`CLOCK_*_CPUTIME_ID`,
//!   or the ids of `clock_getcpuclockid(0 / own pid)`, `pthread_getcpuclockid` of the creator or
//!   the main thread) are re-armed with the remaining CPU time on the new process/thread; CPU
//!   clocks of other processes or of other threads are not restored (warning).
//! - Timers keep running while the threads are frozen for a checkpoint the process survives.
//! - A child after `fork` starts with an empty table and no helper (its timers are not
//!   inherited, as POSIX says).
//! - After a restart without the old ids, an id the program does not hold but that is another
//!   timer's kernel id answers `EINVAL` rather than reaching that timer.
//!
//! # Knobs (read at startup)
//! - `CKPT_PTIMERS=0` (or `off`) turns the plugin off: wrappers go straight to glibc and nothing
//!   is saved (a `SIGEV_THREAD` timer then makes checkpoints fail) — for comparison and tests.
//! - `CKPT_PTIMERS=map` never uses `PR_TIMER_CREATE_RESTORE_IDS` and recreates the timers in
//!   reverse order, so that their kernel ids change (tests the translation path).
//! - `CKPT_PTIMER_SIGNAL=N`: the helper thread's signal (a real-time signal, default SIGRTMIN+4).

use crate::api::{self, CkptContext, Plugin, RestartContext, WrapperGuard};
use std::cell::UnsafeCell;
use std::ffi::{CStr, c_int, c_void};
use std::sync::atomic::Ordering::*;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU32, AtomicU64, AtomicUsize};

/// Timers the table holds.
pub const MAX_TIMERS: usize = 512;
const PR_TIMER_CREATE_RESTORE_IDS: c_int = 77;
/// First synthetic program-visible id (see the module doc).
const SYNTH_BASE: i32 = 1 << 30;

const FREE: u32 = 0;
const BUSY: u32 = 1;
const LIVE: u32 = 2;

/// glibc's and the kernel's `struct sigevent` (64 bytes): `un[0]` is the tid of
/// `SIGEV_THREAD_ID` (low 32 bits) or the function of `SIGEV_THREAD`, `un[1]` its attributes.
#[repr(C)]
#[derive(Clone, Copy)]
struct SigEvent {
    value: u64,
    signo: c_int,
    notify: c_int,
    un: [u64; 6],
}

impl SigEvent {
    fn new(notify: c_int, signo: c_int, value: u64, tid: i32) -> SigEvent {
        SigEvent {
            value,
            signo,
            notify,
            un: [tid as u32 as u64, 0, 0, 0, 0, 0],
        }
    }
}

/// What is kept of a `SIGEV_THREAD` timer's `pthread_attr_t` (plain values: nothing to free).
#[derive(Clone, Copy)]
struct AttrCopy {
    present: bool,
    stacksize: usize,
    guardsize: usize,
    inherit: c_int,
    policy: c_int,
    prio: c_int,
    scope: c_int,
    has_cpuset: bool,
    cpuset: [u64; 16],
    has_sigmask: bool,
    sigmask: [u64; 16],
}

/// A timer's record. Written by the creator while the slot is `BUSY` (under the lock, no helper
/// reading it) and by the checkpoint/restart hooks (everybody else frozen); read by the helper
/// under the `users` protocol and by the hooks.
#[derive(Clone, Copy)]
struct Rec {
    /// The program's notification kind (`SIGEV_THREAD` included).
    notify: c_int,
    signo: c_int,
    value: u64,
    /// Created with a NULL `sigevent` (value/signal read from /proc at checkpoint).
    null_evp: bool,
    /// `SIGEV_THREAD_ID` target, and its `pthread_t` when known (0 otherwise).
    target_tid: i32,
    target_pt: u64,
    /// For a thread CPU-time clock: the `pthread_t` of the thread it measures (0 = unknown).
    clock_pt: u64,
    func: u64,
    attr: AttrCopy,
    /// At checkpoint: `timer_gettime`, and whether to recreate at restart.
    saved: [i64; 4],
    restore: bool,
}

struct Slot {
    state: AtomicU32,
    seq: AtomicU32,
    /// The helper is reading `rec` (the slot may not be reused meanwhile).
    users: AtomicU32,
    vid: AtomicI32,
    kid: AtomicI32,
    clock: AtomicI32,
    /// Last armed with TIMER_ABSTIME on a wall clock: that absolute expiry.
    abs: AtomicBool,
    abs_sec: AtomicI64,
    abs_nsec: AtomicI64,
    rec: UnsafeCell<Rec>,
}

// SAFETY: `rec` is only accessed under the protocol documented on `Rec`.
unsafe impl Sync for Slot {}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU32::new(FREE),
            seq: AtomicU32::new(0),
            users: AtomicU32::new(0),
            vid: AtomicI32::new(0),
            kid: AtomicI32::new(0),
            clock: AtomicI32::new(0),
            abs: AtomicBool::new(false),
            abs_sec: AtomicI64::new(0),
            abs_nsec: AtomicI64::new(0),
            // SAFETY: all-zero is a valid Rec (integers, bools false).
            rec: UnsafeCell::new(unsafe { std::mem::zeroed() }),
        }
    }

    /// # Safety
    /// Caller follows the protocol documented on [`Rec`].
    #[allow(clippy::mut_from_ref)]
    unsafe fn rec(&self) -> &mut Rec {
        // SAFETY: see the function's contract.
        unsafe { &mut *self.rec.get() }
    }
}

static SLOTS: [Slot; MAX_TIMERS] = [const { Slot::new() }; MAX_TIMERS];
/// One past the highest slot ever used.
static HIGH: AtomicUsize = AtomicUsize::new(0);
static LOCK: AtomicBool = AtomicBool::new(false);
static NEXT_SYNTH: AtomicI32 = AtomicI32::new(SYNTH_BASE);

static ENABLED: AtomicBool = AtomicBool::new(true);
/// Never ask the kernel for the old ids at restart (`CKPT_PTIMERS=map`).
static FORCE_MAP: AtomicBool = AtomicBool::new(false);
/// Signal of the helper thread's kernel timers (0: not chosen yet).
static TIMER_SIG: AtomicI32 = AtomicI32::new(0);
/// Offset of the tid in glibc's `struct pthread` (usize::MAX: unknown).
static TID_OFF: AtomicUsize = AtomicUsize::new(usize::MAX);
static MAIN_PT: AtomicU64 = AtomicU64::new(0);
/// Our pid when the last checkpoint was taken (the old main thread's tid after a restart).
static CKPT_PID: AtomicI32 = AtomicI32::new(0);

/// 0 none, 1 being started, 2 running.
static HELPER_STATE: AtomicU32 = AtomicU32::new(0);
static HELPER_PT: AtomicU64 = AtomicU64::new(0);
static HELPER_TID: AtomicI32 = AtomicI32::new(0);

// The real functions.
static REAL_CREATE: AtomicUsize = AtomicUsize::new(0);
static REAL_SETTIME: AtomicUsize = AtomicUsize::new(0);
static REAL_GETTIME: AtomicUsize = AtomicUsize::new(0);
static REAL_GETOVERRUN: AtomicUsize = AtomicUsize::new(0);
static REAL_DELETE: AtomicUsize = AtomicUsize::new(0);

type CreateFn = unsafe extern "C" fn(libc::clockid_t, *mut c_void, *mut libc::timer_t) -> c_int;
type SettimeFn = unsafe extern "C" fn(
    libc::timer_t,
    c_int,
    *const libc::itimerspec,
    *mut libc::itimerspec,
) -> c_int;
type GettimeFn = unsafe extern "C" fn(libc::timer_t, *mut libc::itimerspec) -> c_int;
type TimerFn = unsafe extern "C" fn(libc::timer_t) -> c_int;

unsafe extern "C" {
    fn pthread_attr_getguardsize(a: *const libc::pthread_attr_t, s: *mut usize) -> c_int;
    fn pthread_attr_setguardsize(a: *mut libc::pthread_attr_t, s: usize) -> c_int;
    fn pthread_attr_getinheritsched(a: *const libc::pthread_attr_t, v: *mut c_int) -> c_int;
    fn pthread_attr_setinheritsched(a: *mut libc::pthread_attr_t, v: c_int) -> c_int;
    fn pthread_attr_getschedpolicy(a: *const libc::pthread_attr_t, v: *mut c_int) -> c_int;
    fn pthread_attr_setschedpolicy(a: *mut libc::pthread_attr_t, v: c_int) -> c_int;
    fn pthread_attr_getschedparam(
        a: *const libc::pthread_attr_t,
        p: *mut libc::sched_param,
    ) -> c_int;
    fn pthread_attr_setschedparam(
        a: *mut libc::pthread_attr_t,
        p: *const libc::sched_param,
    ) -> c_int;
    fn pthread_attr_getscope(a: *const libc::pthread_attr_t, v: *mut c_int) -> c_int;
    fn pthread_attr_setscope(a: *mut libc::pthread_attr_t, v: c_int) -> c_int;
    fn pthread_attr_getsigmask_np(a: *const libc::pthread_attr_t, s: *mut libc::sigset_t) -> c_int;
    fn pthread_attr_setsigmask_np(a: *mut libc::pthread_attr_t, s: *const libc::sigset_t) -> c_int;
    fn pthread_atfork(
        prepare: Option<unsafe extern "C" fn()>,
        parent: Option<unsafe extern "C" fn()>,
        child: Option<unsafe extern "C" fn()>,
    ) -> c_int;
}

fn resolve(cell: &AtomicUsize, name: &CStr) -> usize {
    let mut p = cell.load(Relaxed);
    if p == 0 {
        // SAFETY: dlsym with a NUL-terminated name (reached before init only from a constructor
        // that runs ahead of ours).
        p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
        cell.store(p, Relaxed);
    }
    p
}

fn real_create() -> CreateFn {
    let p = resolve(&REAL_CREATE, c"timer_create");
    // SAFETY: glibc's timer_create has this signature.
    unsafe { std::mem::transmute::<usize, CreateFn>(p) }
}
fn real_settime() -> SettimeFn {
    let p = resolve(&REAL_SETTIME, c"timer_settime");
    // SAFETY: glibc's timer_settime has this signature.
    unsafe { std::mem::transmute::<usize, SettimeFn>(p) }
}
fn real_gettime() -> GettimeFn {
    let p = resolve(&REAL_GETTIME, c"timer_gettime");
    // SAFETY: glibc's timer_gettime has this signature.
    unsafe { std::mem::transmute::<usize, GettimeFn>(p) }
}
fn real_getoverrun() -> TimerFn {
    let p = resolve(&REAL_GETOVERRUN, c"timer_getoverrun");
    // SAFETY: glibc's timer_getoverrun has this signature.
    unsafe { std::mem::transmute::<usize, TimerFn>(p) }
}
fn real_delete() -> TimerFn {
    let p = resolve(&REAL_DELETE, c"timer_delete");
    // SAFETY: glibc's timer_delete has this signature.
    unsafe { std::mem::transmute::<usize, TimerFn>(p) }
}

fn errno() -> c_int {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() }
}
fn set_errno(e: c_int) {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}
fn gettid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}
fn to_timer(id: i32) -> libc::timer_t {
    id as isize as libc::timer_t
}
fn from_timer(t: libc::timer_t) -> i32 {
    t as usize as i32
}
fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

fn timer_sig() -> c_int {
    let s = TIMER_SIG.load(Relaxed);
    if s != 0 {
        return s;
    }
    let s = libc::SIGRTMIN() + 4;
    TIMER_SIG.store(s, Relaxed);
    s
}

/// Blocks every signal (raw syscall: no wrapper of anyone's involved); returns the old mask.
fn block_all() -> u64 {
    let all: u64 = !0;
    let mut old: u64 = 0;
    // SAFETY: kernel sigset of 8 bytes, valid pointers.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &all as *const u64,
            &mut old as *mut u64,
            8usize,
        )
    };
    old
}
fn set_mask(m: u64) {
    // SAFETY: kernel sigset of 8 bytes.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &m as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        )
    };
}

/// The table lock: held with every signal blocked, so its holder is neither frozen nor
/// re-entered by a handler; dropped in reverse order.
struct Locked {
    mask: u64,
    _guard: WrapperGuard,
}

impl Locked {
    fn take() -> Locked {
        let guard = WrapperGuard::enter();
        let mask = block_all();
        while LOCK
            .compare_exchange_weak(false, true, Acquire, Relaxed)
            .is_err()
        {
            // SAFETY: no arguments.
            unsafe { libc::sched_yield() };
        }
        Locked {
            mask,
            _guard: guard,
        }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        LOCK.store(false, Release);
        set_mask(self.mask);
    }
}

/// The live slot whose program-visible id is `vid`.
fn lookup(vid: i32) -> Option<&'static Slot> {
    let high = HIGH.load(Acquire).min(MAX_TIMERS);
    SLOTS[..high]
        .iter()
        .find(|s| s.state.load(Acquire) == LIVE && s.vid.load(Relaxed) == vid)
}

/// An id the program does not hold but that is the kernel id of a timer it knows by another
/// id (after a restart without the old ids): passing it through would reach the wrong timer.
fn aliases_other(id: i32) -> bool {
    let high = HIGH.load(Acquire).min(MAX_TIMERS);
    SLOTS[..high]
        .iter()
        .any(|s| s.state.load(Acquire) == LIVE && s.kid.load(Relaxed) == id)
}

/// The id to hand glibc for an id the table does not know; `None` (errno EINVAL) if it
/// would reach a timer the program knows by another id.
fn passthrough(timerid: libc::timer_t) -> Option<libc::timer_t> {
    if aliases_other(from_timer(timerid)) {
        set_errno(libc::EINVAL);
        None
    } else {
        Some(timerid)
    }
}

fn vid_taken(vid: i32) -> bool {
    lookup(vid).is_some()
}

/// Claims a free slot (lock held). The helper must not be reading it.
fn claim() -> Option<usize> {
    for (i, s) in SLOTS.iter().enumerate() {
        if s.state.load(SeqCst) != FREE {
            continue;
        }
        if s.state
            .compare_exchange(FREE, BUSY, SeqCst, SeqCst)
            .is_err()
        {
            continue;
        }
        if s.users.load(SeqCst) != 0 {
            s.state.store(FREE, SeqCst);
            continue;
        }
        return Some(i);
    }
    None
}

/// Reads a 4-byte value at `addr` of our own memory without faulting if it is unmapped.
fn safe_read_i32(addr: u64) -> Option<i32> {
    let mut v: i32 = 0;
    let local = libc::iovec {
        iov_base: &mut v as *mut i32 as *mut c_void,
        iov_len: 4,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: 4,
    };
    // SAFETY: reading our own address space; the kernel checks the remote range.
    // (The kernel's pid: `getpid()` is virtual after a restart with new pids.)
    let n = unsafe { libc::process_vm_readv(crate::api::real_pid(), &local, 1, &remote, 1, 0) };
    (n == 4).then_some(v)
}

/// The current tid of the thread whose `pthread_t` is `pt` (from glibc's `struct pthread`).
/// The thread may be gone and its memory unmapped: read through the kernel, unless that is
/// refused (seccomp) and `pt` is a TCB known to be mapped (helper, main thread).
fn tid_of(pt: u64) -> Option<i32> {
    let off = TID_OFF.load(Relaxed);
    if pt == 0 || off == usize::MAX {
        return None;
    }
    let addr = pt + off as u64;
    let v = safe_read_i32(addr).or_else(|| {
        let known = pt == HELPER_PT.load(Relaxed) || pt == MAIN_PT.load(Relaxed);
        // SAFETY: the helper never exits and the main thread's TCB lives as long as the
        // process; off lies inside struct pthread.
        known.then(|| unsafe { std::ptr::read_volatile(addr as *const i32) })
    });
    v.filter(|&t| t > 0)
}

fn probe_tid_offset() {
    // glibc's struct pthread (≥ 2 KiB) starts at pthread_self() on x86_64.
    // SAFETY: no arguments.
    let tp = unsafe { libc::pthread_self() } as u64;
    let me = gettid();
    // SAFETY: the calling thread's own TCB is mapped and at least 2 KiB long.
    let at = |o: u64| unsafe { std::ptr::read_volatile((tp + o) as *const i32) };
    let off = if at(0x2d0) == me {
        0x2d0
    } else {
        (0..2048u64)
            .step_by(4)
            .find(|&o| at(o) == me)
            .map(|o| o as usize)
            .unwrap_or(usize::MAX)
    };
    TID_OFF.store(off, Relaxed);
}

fn sigset_words(s: &libc::sigset_t) -> [u64; 16] {
    // SAFETY: sigset_t is 128 bytes of plain data on x86_64 glibc.
    unsafe { std::mem::transmute_copy(s) }
}
fn words_sigset(w: &[u64; 16]) -> libc::sigset_t {
    // SAFETY: same size, plain data.
    unsafe { std::mem::transmute_copy(w) }
}

/// Copies what can be read of a `pthread_attr_t` through glibc's getters.
///
/// # Safety
/// `a` is a valid, initialized attribute object.
unsafe fn copy_attr(a: *const libc::pthread_attr_t) -> AttrCopy {
    // SAFETY: all-zero is a valid AttrCopy.
    let mut c: AttrCopy = unsafe { std::mem::zeroed() };
    c.present = true;
    // SAFETY: valid attr and out-pointers (getters only).
    unsafe {
        libc::pthread_attr_getstacksize(a, &mut c.stacksize);
        pthread_attr_getguardsize(a, &mut c.guardsize);
        pthread_attr_getinheritsched(a, &mut c.inherit);
        pthread_attr_getschedpolicy(a, &mut c.policy);
        let mut p: libc::sched_param = std::mem::zeroed();
        pthread_attr_getschedparam(a, &mut p);
        c.prio = p.sched_priority;
        pthread_attr_getscope(a, &mut c.scope);
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::pthread_attr_getaffinity_np(a, std::mem::size_of::<libc::cpu_set_t>(), &mut set)
            == 0
        {
            let w: [u64; 16] = std::mem::transmute_copy(&set);
            // glibc reports "no affinity" as every CPU.
            if w.iter().any(|&x| x != !0) {
                c.has_cpuset = true;
                c.cpuset = w;
            }
        }
        let mut ss: libc::sigset_t = std::mem::zeroed();
        // 0: a mask is set; PTHREAD_ATTR_NO_SIGMASK_NP (1): none.
        if pthread_attr_getsigmask_np(a, &mut ss) == 0 {
            c.has_sigmask = true;
            c.sigmask = sigset_words(&ss);
        }
    }
    c
}

/// Signals the helper and the callback threads keep unblocked.
fn helper_mask() -> libc::sigset_t {
    // SAFETY: plain sigset manipulation on a local.
    unsafe {
        let mut ss: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut ss);
        for s in [
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
            libc::SIGTRAP,
            libc::SIGSYS,
            libc::SIGABRT,
        ] {
            libc::sigdelset(&mut ss, s);
        }
        let ck = api::CKPT_SIGNAL.load(Relaxed);
        if ck > 0 {
            libc::sigdelset(&mut ss, ck);
        }
        ss
    }
}

/// Starts the helper thread once; returns an errno value on failure.
fn ensure_helper() -> Result<(), c_int> {
    loop {
        match HELPER_STATE.load(Acquire) {
            2 => return Ok(()),
            0 => {
                if HELPER_STATE.compare_exchange(0, 1, AcqRel, Acquire).is_ok() {
                    return start_helper();
                }
            }
            _ => {
                // SAFETY: no arguments.
                unsafe { libc::sched_yield() };
            }
        }
    }
}

fn start_helper() -> Result<(), c_int> {
    // SAFETY: attr is initialized before use and destroyed after; pthread_create gets valid
    // pointers and a function of the right type.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setstacksize(&mut attr, 256 << 10);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let mask = helper_mask();
        pthread_attr_setsigmask_np(&mut attr, &mask);
        let mut th: libc::pthread_t = 0;
        let r = libc::pthread_create(&mut th, &attr, helper_main, std::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        if r != 0 {
            HELPER_STATE.store(0, Release);
            return Err(r);
        }
        HELPER_PT.store(th as u64, Release);
    }
    while HELPER_TID.load(Acquire) == 0 {
        // SAFETY: no arguments.
        unsafe { libc::sched_yield() };
    }
    HELPER_STATE.store(2, Release);
    Ok(())
}

/// The helper thread: one detached thread per expiration of a `SIGEV_THREAD` timer.
extern "C" fn helper_main(_: *mut c_void) -> *mut c_void {
    HELPER_TID.store(gettid(), Release);
    // SAFETY: sigset manipulation on a local.
    let set = unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        libc::sigaddset(&mut s, timer_sig());
        s
    };
    loop {
        // SAFETY: all-zero siginfo is valid; raw rt_sigtimedwait with valid pointers. The
        // checkpoint signal interrupts it (EINTR): just wait again.
        let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigtimedwait,
                &set as *const libc::sigset_t,
                &mut si as *mut libc::siginfo_t,
                std::ptr::null::<libc::timespec>(),
                8usize,
            )
        };
        if r != timer_sig() as libc::c_long {
            continue;
        }
        // si_value sits at offset 24 for both SI_TIMER and SI_QUEUE.
        // SAFETY: siginfo_t is 128 bytes.
        let payload =
            unsafe { *((&si as *const libc::siginfo_t as *const u8).add(24) as *const u64) };
        dispatch(payload);
    }
}

fn payload(idx: usize, seq: u32) -> u64 {
    (u64::from(seq) << 32) | idx as u64
}

fn dispatch(payload: u64) {
    let idx = (payload & 0xffff_ffff) as usize;
    let seq = (payload >> 32) as u32;
    if idx >= MAX_TIMERS || seq == 0 {
        return;
    }
    let s = &SLOTS[idx];
    s.users.fetch_add(1, SeqCst);
    let rec = (s.state.load(SeqCst) == LIVE && s.seq.load(SeqCst) == seq)
        // SAFETY: LIVE and users > 0: nobody writes the record (see Rec).
        .then(|| unsafe { *s.rec() });
    s.users.fetch_sub(1, SeqCst);
    let Some(rec) = rec else { return };
    if rec.notify != libc::SIGEV_THREAD || rec.func == 0 {
        return;
    }
    // glibc allocates the same way (malloc in its helper, free in the new thread).
    // SAFETY: malloc of 16 bytes; written before use.
    let td = unsafe { libc::malloc(16) } as *mut u64;
    if td.is_null() {
        return;
    }
    // SAFETY: td holds 2 words; attr is initialized and destroyed here; pthread_create gets a
    // valid start routine.
    unsafe {
        *td = rec.func;
        *td.add(1) = rec.value;
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        let a = &rec.attr;
        if a.present {
            if a.stacksize != 0 {
                libc::pthread_attr_setstacksize(&mut attr, a.stacksize);
            }
            pthread_attr_setguardsize(&mut attr, a.guardsize);
            pthread_attr_setscope(&mut attr, a.scope);
            pthread_attr_setinheritsched(&mut attr, a.inherit);
            if a.inherit == libc::PTHREAD_EXPLICIT_SCHED {
                pthread_attr_setschedpolicy(&mut attr, a.policy);
                let p = libc::sched_param {
                    sched_priority: a.prio,
                };
                pthread_attr_setschedparam(&mut attr, &p);
            }
            if a.has_cpuset {
                let set: libc::cpu_set_t = std::mem::transmute_copy(&a.cpuset);
                libc::pthread_attr_setaffinity_np(
                    &mut attr,
                    std::mem::size_of::<libc::cpu_set_t>(),
                    &set,
                );
            }
            if a.has_sigmask {
                let mut m = words_sigset(&a.sigmask);
                let ck = api::CKPT_SIGNAL.load(Relaxed);
                if ck > 0 {
                    libc::sigdelset(&mut m, ck);
                }
                pthread_attr_setsigmask_np(&mut attr, &m);
            }
        }
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let mut th: libc::pthread_t = 0;
        if libc::pthread_create(&mut th, &attr, callback_thread, td as *mut c_void) != 0 {
            libc::free(td as *mut c_void);
        }
        libc::pthread_attr_destroy(&mut attr);
    }
}

extern "C" fn callback_thread(arg: *mut c_void) -> *mut c_void {
    // SAFETY: arg is the 2-word block dispatch allocated; func is the program's
    // `void (*)(union sigval)` (a one-word argument).
    unsafe {
        let td = arg as *const u64;
        let (f, v) = (*td, *td.add(1));
        libc::free(arg);
        let f: extern "C" fn(libc::sigval) = std::mem::transmute(f as usize);
        f(libc::sigval {
            sival_ptr: v as usize as *mut c_void,
        });
    }
    std::ptr::null_mut()
}

/// A child after fork has no timers and no helper thread.
unsafe extern "C" fn atfork_child() {
    for s in SLOTS.iter() {
        s.state.store(FREE, Relaxed);
        s.users.store(0, Relaxed);
    }
    HIGH.store(0, Relaxed);
    LOCK.store(false, Relaxed);
    HELPER_STATE.store(0, Relaxed);
    HELPER_PT.store(0, Relaxed);
    HELPER_TID.store(0, Relaxed);
}

/// # Safety
/// Same contract as glibc's `timer_create`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn timer_create(
    clock: libc::clockid_t,
    evp: *mut c_void,
    timerid: *mut libc::timer_t,
) -> c_int {
    if !enabled() {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real_create()(clock, evp, timerid) };
    }
    let ev = (!evp.is_null())
        // SAFETY: the caller passes a valid struct sigevent.
        .then(|| unsafe { std::ptr::read_unaligned(evp as *const SigEvent) });
    let notify = ev.map_or(libc::SIGEV_SIGNAL, |e| e.notify);
    if ![
        libc::SIGEV_NONE,
        libc::SIGEV_SIGNAL,
        libc::SIGEV_THREAD,
        libc::SIGEV_THREAD_ID,
    ]
    .contains(&notify)
    {
        // SAFETY: as above; glibc/the kernel report the error.
        return unsafe { real_create()(clock, evp, timerid) };
    }
    if timerid.is_null() {
        set_errno(libc::EFAULT);
        return -1;
    }
    let mut rec = Rec {
        notify,
        signo: ev.map_or(libc::SIGALRM, |e| e.signo),
        value: ev.map_or(0, |e| e.value),
        null_evp: ev.is_none(),
        target_tid: 0,
        target_pt: 0,
        clock_pt: 0,
        func: 0,
        // SAFETY: all-zero is a valid AttrCopy.
        attr: unsafe { std::mem::zeroed() },
        saved: [0; 4],
        restore: false,
    };
    let me = gettid();
    // SAFETY: no arguments.
    let self_pt = unsafe { libc::pthread_self() } as u64;
    // SAFETY: no arguments.
    let pid = crate::api::real_pid();
    if notify == libc::SIGEV_THREAD_ID {
        let t = ev.map_or(0, |e| e.un[0] as u32 as i32);
        rec.target_tid = t;
        rec.target_pt = if t == me {
            self_pt
        } else if t == pid {
            MAIN_PT.load(Relaxed)
        } else {
            0
        };
    }
    rec.clock_pt = cpu_clock_owner(clock, me, self_pt, pid);
    if notify == libc::SIGEV_THREAD {
        let e = ev.expect("SIGEV_THREAD has a sigevent");
        rec.func = e.un[0];
        if e.un[1] != 0 {
            // SAFETY: the program's attribute object, valid for the call.
            rec.attr = unsafe { copy_attr(e.un[1] as *const libc::pthread_attr_t) };
        }
        if let Err(e) = ensure_helper() {
            set_errno(e);
            return -1;
        }
    }

    let locked = Locked::take();
    let Some(idx) = claim() else {
        drop(locked);
        if notify == libc::SIGEV_THREAD {
            set_errno(libc::EAGAIN);
            return -1;
        }
        // Table full: glibc's timer, untracked (warned about at checkpoint).
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real_create()(clock, evp, timerid) };
    };
    let slot = &SLOTS[idx];
    let mut seq = slot.seq.load(Relaxed).wrapping_add(1);
    if seq == 0 {
        seq = 1;
    }
    slot.seq.store(seq, SeqCst);
    let mut kev = ev.unwrap_or(SigEvent::new(libc::SIGEV_SIGNAL, libc::SIGALRM, 0, 0));
    if notify == libc::SIGEV_THREAD {
        // Read under the guard: a restart cannot change it between here and the kernel call.
        kev = SigEvent::new(
            libc::SIGEV_THREAD_ID,
            timer_sig(),
            payload(idx, seq),
            HELPER_TID.load(Acquire),
        );
    }
    let mut t: libc::timer_t = std::ptr::null_mut();
    let kp = if ev.is_none() {
        std::ptr::null_mut()
    } else {
        &mut kev as *mut SigEvent as *mut c_void
    };
    // SAFETY: valid sigevent (or NULL as the program asked) and out-pointer.
    let r = unsafe { real_create()(clock, kp, &mut t) };
    if r != 0 {
        let e = errno();
        slot.state.store(FREE, SeqCst);
        drop(locked);
        set_errno(e);
        return -1;
    }
    let kid = from_timer(t);
    let mut vid = kid;
    while vid_taken(vid) {
        vid = NEXT_SYNTH.fetch_add(1, Relaxed);
    }
    // SAFETY: the slot is BUSY and its users count was 0 when claimed: ours alone.
    unsafe { *slot.rec() = rec };
    slot.kid.store(kid, Relaxed);
    slot.vid.store(vid, Relaxed);
    slot.clock.store(clock, Relaxed);
    slot.abs.store(false, Relaxed);
    HIGH.fetch_max(idx + 1, AcqRel);
    slot.state.store(LIVE, SeqCst);
    drop(locked);
    // SAFETY: non-null out-pointer from the caller.
    unsafe { *timerid = to_timer(vid) };
    0
}

/// For a thread CPU-time clock: the `pthread_t` of the thread it measures, when known.
fn cpu_clock_owner(clock: libc::clockid_t, me: i32, self_pt: u64, pid: i32) -> u64 {
    if clock == libc::CLOCK_THREAD_CPUTIME_ID {
        return self_pt;
    }
    if clock >= 0 || clock & 4 == 0 {
        return 0;
    }
    let tid = !(clock >> 3);
    if tid == 0 || tid == me {
        self_pt
    } else if tid == pid {
        MAIN_PT.load(Relaxed)
    } else {
        0
    }
}

/// The id to hand glibc for the program's `timerid`: the kernel's id of a tracked timer, the
/// program's own value otherwise. `Err(-1)` (errno EINVAL) for a timer that could not be
/// restored: glibc would take a negative `timer_t` for one of its `SIGEV_THREAD` timers.
fn kernel_id(timerid: libc::timer_t) -> Result<libc::timer_t, c_int> {
    match lookup(from_timer(timerid)) {
        None => passthrough(timerid).ok_or(-1),
        Some(s) => {
            let kid = s.kid.load(Relaxed);
            if kid < 0 {
                set_errno(libc::EINVAL);
                Err(-1)
            } else {
                Ok(to_timer(kid))
            }
        }
    }
}

/// # Safety
/// Same contract as glibc's `timer_settime`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn timer_settime(
    timerid: libc::timer_t,
    flags: c_int,
    new: *const libc::itimerspec,
    old: *mut libc::itimerspec,
) -> c_int {
    if !enabled() {
        // SAFETY: the caller's arguments.
        return unsafe { real_settime()(timerid, flags, new, old) };
    }
    // Kernel state and our record change together: no checkpoint in between.
    let _g = WrapperGuard::enter();
    let Some(slot) = lookup(from_timer(timerid)) else {
        let Some(t) = passthrough(timerid) else {
            return -1;
        };
        // SAFETY: the caller's arguments (an untracked or invalid timer).
        return unsafe { real_settime()(t, flags, new, old) };
    };
    let kid = slot.kid.load(Relaxed);
    if kid < 0 {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: the caller's pointers, the kernel's id.
    let r = unsafe { real_settime()(to_timer(kid), flags, new, old) };
    if r == 0 {
        let clock = slot.clock.load(Relaxed);
        let wall = [
            libc::CLOCK_REALTIME,
            libc::CLOCK_REALTIME_ALARM,
            libc::CLOCK_TAI,
        ]
        .contains(&clock);
        // SAFETY: the kernel accepted it, so it is readable.
        let v = unsafe { (*new).it_value };
        let armed = v.tv_sec != 0 || v.tv_nsec != 0;
        if flags & libc::TIMER_ABSTIME != 0 && wall && armed {
            slot.abs_sec.store(v.tv_sec, Relaxed);
            slot.abs_nsec.store(v.tv_nsec, Relaxed);
            slot.abs.store(true, Release);
        } else {
            slot.abs.store(false, Release);
        }
    }
    r
}

/// # Safety
/// Same contract as glibc's `timer_gettime`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn timer_gettime(
    timerid: libc::timer_t,
    cur: *mut libc::itimerspec,
) -> c_int {
    if !enabled() {
        // SAFETY: the caller's arguments.
        return unsafe { real_gettime()(timerid, cur) };
    }
    // No checkpoint (and restart renumbering) between the lookup and the call.
    let _g = WrapperGuard::enter();
    match kernel_id(timerid) {
        // SAFETY: the caller's pointer.
        Ok(t) => unsafe { real_gettime()(t, cur) },
        Err(e) => e,
    }
}

/// # Safety
/// Same contract as glibc's `timer_getoverrun`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn timer_getoverrun(timerid: libc::timer_t) -> c_int {
    if !enabled() {
        // SAFETY: plain id.
        return unsafe { real_getoverrun()(timerid) };
    }
    let _g = WrapperGuard::enter();
    match kernel_id(timerid) {
        // SAFETY: plain id.
        Ok(t) => unsafe { real_getoverrun()(t) },
        Err(e) => e,
    }
}

/// # Safety
/// Same contract as glibc's `timer_delete`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn timer_delete(timerid: libc::timer_t) -> c_int {
    if !enabled() {
        // SAFETY: plain id.
        return unsafe { real_delete()(timerid) };
    }
    let locked = Locked::take();
    let Some(slot) = lookup(from_timer(timerid)) else {
        let t = passthrough(timerid);
        drop(locked);
        let Some(t) = t else {
            set_errno(libc::EINVAL);
            return -1;
        };
        // SAFETY: plain id (untracked or invalid).
        return unsafe { real_delete()(t) };
    };
    slot.state.store(BUSY, SeqCst);
    let kid = slot.kid.load(Relaxed);
    let (r, e) = if kid < 0 {
        (0, 0)
    } else {
        // SAFETY: plain id.
        let r = unsafe { real_delete()(to_timer(kid)) };
        (r, errno())
    };
    // Even if the kernel no longer knew it (deleted by a raw syscall), the id is gone.
    slot.state.store(FREE, SeqCst);
    drop(locked);
    set_errno(e);
    r
}

fn raw_create(clock: libc::clockid_t, ev: &SigEvent, id: &mut i32) -> Result<(), c_int> {
    // SAFETY: valid sigevent and out-pointer (also read as the wanted id in restore mode).
    let r = unsafe {
        libc::syscall(
            libc::SYS_timer_create,
            clock,
            ev as *const SigEvent,
            id as *mut i32,
        )
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

fn raw_settime(id: i32, flags: c_int, v: &libc::itimerspec) -> Result<(), c_int> {
    // SAFETY: valid itimerspec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_timer_settime,
            id,
            flags,
            v as *const libc::itimerspec,
            std::ptr::null_mut::<libc::itimerspec>(),
        )
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

fn raw_gettime(id: i32) -> Result<libc::itimerspec, c_int> {
    // SAFETY: all-zero itimerspec is valid; out-pointer.
    let mut v: libc::itimerspec = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    let r = unsafe { libc::syscall(libc::SYS_timer_gettime, id, &mut v as *mut libc::itimerspec) };
    if r == 0 { Ok(v) } else { Err(errno()) }
}

fn prctl_restore_ids(on: bool) -> bool {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(PR_TIMER_CREATE_RESTORE_IDS, c_int::from(on), 0, 0, 0) == 0 }
}

/// One entry of `/proc/self/timers`.
struct ProcTimer {
    id: i32,
    signo: c_int,
    value: u64,
}

fn proc_timers() -> Vec<ProcTimer> {
    let text = std::fs::read_to_string("/proc/self/timers").unwrap_or_default();
    let mut v: Vec<ProcTimer> = Vec::new();
    for l in text.lines() {
        if let Some(id) = l.strip_prefix("ID:") {
            if let Ok(id) = id.trim().parse() {
                v.push(ProcTimer {
                    id,
                    signo: 0,
                    value: 0,
                });
            }
        } else if let (Some(sig), Some(last)) = (l.strip_prefix("signal:"), v.last_mut()) {
            let mut it = sig.trim().splitn(2, '/');
            last.signo = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            last.value = it
                .next()
                .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                .unwrap_or(0);
        }
    }
    v
}

fn fmt_ts(s: &[i64]) -> libc::itimerspec {
    libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: s[0],
            tv_nsec: s[1],
        },
        it_value: libc::timespec {
            tv_sec: s[2],
            tv_nsec: s[3],
        },
    }
}

/// The clock to create a timer on in the restarted process, or why it cannot be.
fn restart_clock(clock: libc::clockid_t, rec: &Rec, old_pid: i32) -> Result<c_int, String> {
    if clock >= 0 && clock != libc::CLOCK_THREAD_CPUTIME_ID {
        return Ok(clock);
    }
    let thread = clock == libc::CLOCK_THREAD_CPUTIME_ID || clock & 4 != 0;
    if !thread {
        let pid = !(clock >> 3);
        if pid == 0 || pid == old_pid {
            // MAKE_PROCESS_CPUCLOCK(0, kind): this process.
            return Ok(((!0u32) << 3) as c_int | (clock & 3));
        }
        return Err(format!("CPU-time clock of another process ({pid})"));
    }
    // CPUCLOCK_SCHED for CLOCK_THREAD_CPUTIME_ID, else the id's own kind (PROF/VIRT/SCHED).
    let kind = if clock < 0 { clock & 3 } else { 2 };
    match tid_of(rec.clock_pt) {
        // MAKE_THREAD_CPUCLOCK(tid, kind)
        Some(t) => Ok(((!(t as u32)) << 3) as c_int | 4 | kind),
        None => Err("CPU-time clock of a thread that cannot be found again".into()),
    }
}

/// The plugin (all its state is static: wrappers and hooks share it). Not a unit struct so that
/// `P::default()` (as `lib.rs` builds it) stays clippy-clean.
#[derive(Default)]
pub struct P {
    _private: (),
}

impl Plugin for P {
    fn name(&self) -> &'static str {
        "posix_timers"
    }

    fn init(&mut self) {
        if let Some(v) = std::env::var_os("CKPT_PTIMERS") {
            let v = v.to_string_lossy().to_ascii_lowercase();
            if ["0", "off", "no", "false"].contains(&v.as_str()) {
                ENABLED.store(false, Relaxed);
            } else if v == "map" {
                FORCE_MAP.store(true, Relaxed);
            }
        }
        resolve(&REAL_CREATE, c"timer_create");
        resolve(&REAL_SETTIME, c"timer_settime");
        resolve(&REAL_GETTIME, c"timer_gettime");
        resolve(&REAL_GETOVERRUN, c"timer_getoverrun");
        resolve(&REAL_DELETE, c"timer_delete");
        let (lo, hi) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        let mut sig = lo + 4;
        if let Some(n) = std::env::var("CKPT_PTIMER_SIGNAL")
            .ok()
            .and_then(|s| s.trim().parse::<c_int>().ok())
            && (lo..=hi).contains(&n)
        {
            sig = n;
        }
        if sig == api::CKPT_SIGNAL.load(Relaxed) {
            sig = lo + 5;
        }
        TIMER_SIG.store(sig, Relaxed);
        // The constructor runs on the main thread.
        // SAFETY: no arguments.
        MAIN_PT.store(unsafe { libc::pthread_self() } as u64, Relaxed);
        probe_tid_offset();
        // SAFETY: registering a handler that only resets our statics.
        unsafe { pthread_atfork(None, None, Some(atfork_child)) };
    }

    fn checkpoint(&mut self, ctx: &mut CkptContext) -> Result<(), String> {
        if !enabled() {
            return Ok(());
        }
        // SAFETY: no arguments.
        CKPT_PID.store(crate::api::real_pid(), Relaxed);
        let procs = proc_timers();
        let high = HIGH.load(Acquire).min(MAX_TIMERS);
        let mut tracked: Vec<i32> = Vec::new();
        for s in &SLOTS[..high] {
            if s.state.load(Acquire) != LIVE {
                continue;
            }
            // SAFETY: every user thread is frozen outside the table's critical sections.
            let rec = unsafe { s.rec() };
            let kid = s.kid.load(Relaxed);
            let vid = s.vid.load(Relaxed);
            tracked.push(kid);
            match raw_gettime(kid) {
                Ok(v) => {
                    rec.saved = [
                        v.it_interval.tv_sec,
                        v.it_interval.tv_nsec,
                        v.it_value.tv_sec,
                        v.it_value.tv_nsec,
                    ];
                    rec.restore = true;
                }
                Err(e) => {
                    rec.restore = false;
                    ctx.warnings.push(format!(
                        "POSIX timer {vid}: timer_gettime failed (errno {e}); it will not be restored"
                    ));
                    continue;
                }
            }
            if rec.null_evp
                && let Some(p) = procs.iter().find(|p| p.id == kid)
            {
                rec.signo = p.signo;
                rec.value = p.value;
            }
            if rec.notify == libc::SIGEV_THREAD_ID
                && rec.target_pt != 0
                && tid_of(rec.target_pt) != Some(rec.target_tid)
            {
                rec.target_pt = 0;
            }
            if rec.notify == libc::SIGEV_THREAD_ID
                && rec.target_pt == 0
                && rec.target_tid != CKPT_PID.load(Relaxed)
            {
                ctx.warnings.push(format!(
                    "POSIX timer {vid}: its SIGEV_THREAD_ID target (tid {}) was neither its creator nor the main thread; it will not be restored",
                    rec.target_tid
                ));
            }
        }
        let untracked: Vec<String> = procs
            .iter()
            .filter(|p| !tracked.contains(&p.id))
            .map(|p| p.id.to_string())
            .collect();
        if !untracked.is_empty() {
            ctx.warnings.push(format!(
                "POSIX timers {} were not created through timer_create (or the table of {MAX_TIMERS} was full); they will not be restored",
                untracked.join(", ")
            ));
        }
        Ok(())
    }

    fn restart(&mut self, ctx: &mut RestartContext) -> Result<(), String> {
        if !enabled() {
            return Ok(());
        }
        let old_pid = CKPT_PID.load(Relaxed);
        // SAFETY: no arguments.
        let new_pid = crate::api::real_pid();
        let helper_pt = HELPER_PT.load(Acquire);
        if helper_pt != 0 {
            match tid_of(helper_pt) {
                Some(t) => HELPER_TID.store(t, Release),
                None => {
                    return Err("cannot find the SIGEV_THREAD helper thread's new tid".into());
                }
            }
        }
        let restore_ids = !FORCE_MAP.load(Relaxed) && prctl_restore_ids(true);
        let high = HIGH.load(Acquire).min(MAX_TIMERS);
        let mut renumbered = 0;
        // In `map` mode, in reverse order: the new kernel ids then differ from the old ones.
        let order: Vec<usize> = if restore_ids {
            (0..high).collect()
        } else {
            (0..high).rev().collect()
        };
        for idx in order {
            let s = &SLOTS[idx];
            if s.state.load(Acquire) != LIVE {
                continue;
            }
            // SAFETY: user threads are frozen; the checkpoint left no critical section open.
            let rec = unsafe { s.rec() };
            let vid = s.vid.load(Relaxed);
            // An id the kernel will refuse until the timer exists again.
            s.kid.store(-1, Relaxed);
            if !rec.restore {
                continue;
            }
            let clock = match restart_clock(s.clock.load(Relaxed), rec, old_pid) {
                Ok(c) => c,
                Err(e) => {
                    ctx.warnings
                        .push(format!("POSIX timer {vid} not restored: {e}"));
                    continue;
                }
            };
            let ev = match rec.notify {
                libc::SIGEV_NONE => SigEvent::new(libc::SIGEV_NONE, 0, rec.value, 0),
                libc::SIGEV_SIGNAL => SigEvent::new(libc::SIGEV_SIGNAL, rec.signo, rec.value, 0),
                libc::SIGEV_THREAD => SigEvent::new(
                    libc::SIGEV_THREAD_ID,
                    timer_sig(),
                    payload(idx, s.seq.load(Relaxed)),
                    HELPER_TID.load(Acquire),
                ),
                _ => {
                    let tid = tid_of(rec.target_pt)
                        .or_else(|| (rec.target_tid == old_pid && old_pid != 0).then_some(new_pid));
                    let Some(tid) = tid else {
                        ctx.warnings.push(format!(
                            "POSIX timer {vid} not restored: its target thread (tid {}) cannot be found again",
                            rec.target_tid
                        ));
                        continue;
                    };
                    rec.target_tid = tid;
                    SigEvent::new(libc::SIGEV_THREAD_ID, rec.signo, rec.value, tid)
                }
            };
            let mut id = vid;
            let mut r = raw_create(clock, &ev, &mut id);
            if r.is_err() && restore_ids {
                // The id is taken or refused: a new one, translated by the wrappers.
                prctl_restore_ids(false);
                r = raw_create(clock, &ev, &mut id);
                prctl_restore_ids(true);
            }
            if let Err(e) = r {
                ctx.warnings.push(format!(
                    "POSIX timer {vid} not restored: timer_create failed (errno {e})"
                ));
                continue;
            }
            if id != vid {
                renumbered += 1;
            }
            s.kid.store(id, Relaxed);
        }
        if restore_ids {
            prctl_restore_ids(false);
        }
        // Arm them once all exist.
        for s in &SLOTS[..high] {
            let kid = s.kid.load(Relaxed);
            if s.state.load(Acquire) != LIVE || kid < 0 {
                continue;
            }
            // SAFETY: as above.
            let rec = unsafe { s.rec() };
            let mut v = fmt_ts(&rec.saved);
            if v.it_value.tv_sec == 0 && v.it_value.tv_nsec == 0 {
                continue;
            }
            let mut flags = 0;
            if s.abs.load(Acquire) {
                v.it_value = libc::timespec {
                    tv_sec: s.abs_sec.load(Relaxed),
                    tv_nsec: s.abs_nsec.load(Relaxed),
                };
                flags = libc::TIMER_ABSTIME;
            }
            if let Err(e) = raw_settime(kid, flags, &v) {
                ctx.warnings.push(format!(
                    "POSIX timer {}: re-arming failed (errno {e})",
                    s.vid.load(Relaxed)
                ));
            }
        }
        if renumbered > 0 {
            ctx.warnings.push(format!(
                "{renumbered} POSIX timer(s) got new kernel ids{}; their timer_t values are translated",
                if restore_ids {
                    ""
                } else {
                    " (no PR_TIMER_CREATE_RESTORE_IDS)"
                }
            ));
        }
        Ok(())
    }
}
