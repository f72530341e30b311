//! Signals: the checkpoint signal kept out of the program's hands; itimers; pending
//! process-directed signals.
//!
//! ## The checkpoint signal (`api::CKPT_SIGNAL`)
//!
//! The core suspends threads with a real-time signal. A program that blocks, ignores, waits
//! for or installs a handler on that number would make checkpoints impossible, so the public
//! entry points that touch dispositions, masks and waits are wrapped (exported symbols, the
//! real functions resolved once with `dlsym(RTLD_NEXT)`; no allocation, no lock):
//!
//! - `sigaction`, `__sigaction`, `signal`, `bsd_signal`, `ssignal`, `sysv_signal`,
//!   `__sysv_signal`, `sigset`, `sigignore`, `siginterrupt`: a disposition the program sets
//!   for the checkpoint signal is remembered and reported back as the old action, but never
//!   installed. **The program's own use of that signal number is therefore never delivered**;
//!   a program that needs it must run with another `CKPT_SIGNAL`. For every other signal the
//!   checkpoint signal is taken out of `sa_mask` (a handler must not block it while it runs,
//!   nor leave it blocked if it `longjmp`s out); a per-signal bit remembers that the program
//!   asked for it, and the old action reports it again.
//! - `sigprocmask`, `pthread_sigmask`, `sighold`, `sigrelse`, `sigset(SIG_HOLD)`: the checkpoint
//!   signal is never blocked. A per-thread bit (`thread_local!`, const initializer, no
//!   destructor) records whether the program thinks it is blocked; old masks report that bit.
//! - `sigwait`, `sigwaitinfo`, `sigtimedwait`: the checkpoint signal is removed from the wait
//!   set, so they never consume it. `sigsuspend`, `__sigsuspend`: it is removed from the
//!   temporary mask.
//! - `sigwaitinfo`, `sigtimedwait`, `sigsuspend`, `pause` end with `EINTR` when the checkpoint
//!   handler runs (the kernel never restarts them). When `api::generation()` changed during
//!   the call they are called again, `sigtimedwait` with the remaining time (time the
//!   computation was down does not count, as for sleeps in `timers.rs`).
//!
//! Choice for `sigsuspend`/`pause`: a wrapper cannot see whether a *program* handler also ran
//! during a call in which a checkpoint happened (nor whether the checkpoint signal arrived a
//! few instructions before the syscall). It assumes the checkpoint was the only reason and
//! calls again. A signal that arrived during the checkpoint itself stays pending (the handler
//! blocks everything) and ends the repeated call at once, so nothing is lost in that case;
//! the one lost wake-up is a program handler that ran in the same call as a checkpoint: the
//! call then returns at the program's next signal instead. Returning a spurious `EINTR`
//! instead would be harmless to `while (!flag) sigsuspend()` loops but breaks programs that
//! count returns; we chose the retry.
//!
//! Known gaps: threads created with every signal blocked (glibc's `SIGEV_THREAD` timer and
//! AIO helper threads, or a thread whose mask was set with a raw syscall) keep the checkpoint
//! signal blocked and make a checkpoint time out. Masks given to `ppoll`, `pselect`,
//! `epoll_pwait` (their wrappers can use [`mask_without_ckpt_signal`]), `signalfd`, `posix_spawnattr_setsigmask`, and `sigpause`/`sigvec`/
//! `sigblock` (BSD masks cannot name a real-time signal) are not touched. The per-thread bit
//! is not inherited by `pthread_create` (a new thread starts "not blocked") and a change made
//! inside a signal handler survives the handler's return, though the kernel restores the real
//! mask. The checkpoint signal's disposition reported before the program sets one is
//! `SIG_DFL`, whatever was inherited across `exec`.
//!
//! Until this plugin's `init` runs (the core installs its own handler before that, through
//! these very wrappers) and in a process the core does not manage, every wrapper passes
//! straight through.
//!
//! ## itimers
//!
//! At checkpoint `getitimer` for `ITIMER_REAL`, `ITIMER_VIRTUAL` and `ITIMER_PROF`; at restart
//! they are set again with the saved remaining value and interval, so the time the
//! computation was down does not count. A resumed process keeps its timers running. The
//! timers are read *after* the pending signals are drained: the kernel re-arms a periodic
//! `ITIMER_REAL` only when its SIGALRM is dequeued, and until then `getitimer` reads 0 left
//! (saving that would disarm the timer at restart).
//!
//! ## Pending process-directed signals
//!
//! At checkpoint (user threads frozen in the checkpoint handler, which blocks everything) the
//! process-wide pending set (`ShdPnd` in `/proc/self/status`) is dequeued from the checkpoint
//! thread with a zero-timeout `rt_sigtimedwait`, siginfo included, in the kernel's delivery
//! order; on resume and at restart each is queued again with `rt_sigqueueinfo(getpid())`, in
//! that order. The kernel accepts a siginfo with `si_code >= 0` only from the thread whose tid
//! is the target pid, i.e. not from the checkpoint thread: such a signal that this process sent
//! itself with `kill` is re-sent with `kill` (same siginfo); any other (another sender's
//! `kill`, a kernel-generated one such as an itimer's SIGALRM) arrives with
//! `si_code = SI_QUEUE`, the rest of its siginfo unchanged. Thread-directed pending signals
//! belong to the core.

use crate::api::{self, CkptContext, Plugin, RestartContext};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

type Sigset = libc::sigset_t;
type Handler = libc::sighandler_t;

// ---------------------------------------------------------------------------------------------
// Real functions.

const R_SIGACTION: usize = 0;
const R_SIGNAL: usize = 1;
const R_SYSV_SIGNAL: usize = 2;
const R_SIGSET: usize = 3;
const R_SIGHOLD: usize = 4;
const R_SIGRELSE: usize = 5;
const R_SIGIGNORE: usize = 6;
const R_SIGINTERRUPT: usize = 7;
const R_SIGPROCMASK: usize = 8;
const R_PTHREAD_SIGMASK: usize = 9;
const R_SIGSUSPEND: usize = 10;
const R_SIGWAIT: usize = 11;
const R_SIGWAITINFO: usize = 12;
const R_SIGTIMEDWAIT: usize = 13;
const R_PAUSE: usize = 14;
const NREAL: usize = 15;

const REAL_NAMES: [&std::ffi::CStr; NREAL] = [
    c"sigaction",
    c"signal",
    c"sysv_signal",
    c"sigset",
    c"sighold",
    c"sigrelse",
    c"sigignore",
    c"siginterrupt",
    c"sigprocmask",
    c"pthread_sigmask",
    c"sigsuspend",
    c"sigwait",
    c"sigwaitinfo",
    c"sigtimedwait",
    c"pause",
];

static REAL: [AtomicUsize; NREAL] = [const { AtomicUsize::new(0) }; NREAL];

/// The real function `i` (resolved in `init`; lazily if a wrapper runs before it, which
/// happens only in the constructor or in a process the core does not manage).
fn real(i: usize) -> usize {
    let mut p = REAL[i].load(Ordering::Relaxed);
    if p == 0 {
        // SAFETY: dlsym with a NUL-terminated name.
        p = unsafe { libc::dlsym(libc::RTLD_NEXT, REAL_NAMES[i].as_ptr()) } as usize;
        if p == 0 {
            let msg = b"ckpt: a libc signal function is missing\n";
            // SAFETY: writing a static buffer to stderr.
            unsafe {
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::abort();
            }
        }
        REAL[i].store(p, Ordering::Relaxed);
    }
    p
}

macro_rules! real_fn {
    ($i:expr, $t:ty) => {{
        // SAFETY: REAL[$i] holds glibc's function of that name, whose C signature is $t.
        unsafe { std::mem::transmute::<usize, $t>(real($i)) }
    }};
}

type SigactionFn =
    unsafe extern "C" fn(libc::c_int, *const libc::sigaction, *mut libc::sigaction) -> libc::c_int;
type SignalFn = unsafe extern "C" fn(libc::c_int, Handler) -> Handler;
type SigFn = unsafe extern "C" fn(libc::c_int) -> libc::c_int;
type SiginterruptFn = unsafe extern "C" fn(libc::c_int, libc::c_int) -> libc::c_int;
type MaskFn = unsafe extern "C" fn(libc::c_int, *const Sigset, *mut Sigset) -> libc::c_int;
type SigsuspendFn = unsafe extern "C" fn(*const Sigset) -> libc::c_int;
type SigwaitFn = unsafe extern "C" fn(*const Sigset, *mut libc::c_int) -> libc::c_int;
type SigwaitinfoFn = unsafe extern "C" fn(*const Sigset, *mut libc::siginfo_t) -> libc::c_int;
type SigtimedwaitFn =
    unsafe extern "C" fn(*const Sigset, *mut libc::siginfo_t, *const libc::timespec) -> libc::c_int;
type PauseFn = unsafe extern "C" fn() -> libc::c_int;

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// Set by `init`: the wrappers enforce the rules from then on.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The checkpoint signal, or 0 while the wrappers pass through.
#[inline]
fn ckpt_sig() -> i32 {
    if ACTIVE.load(Ordering::Relaxed) {
        api::CKPT_SIGNAL.load(Ordering::Relaxed)
    } else {
        0
    }
}

#[inline]
fn bit(sig: i32) -> u64 {
    if (1..=64).contains(&sig) {
        1u64 << (sig - 1)
    } else {
        0
    }
}

/// Signals 1..64 of a glibc `sigset_t` (its first word; the kernel knows no more).
#[inline]
fn word(s: &Sigset) -> u64 {
    // SAFETY: sigset_t is at least 8 bytes of plain data.
    unsafe { *(s as *const Sigset as *const u64) }
}

#[inline]
fn set_word(s: &mut Sigset, w: u64) {
    // SAFETY: as in `word`.
    unsafe { *(s as *mut Sigset as *mut u64) = w };
}

fn errno() -> libc::c_int {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn set_errno(e: libc::c_int) {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

const SIG_HOLD: Handler = 2;

thread_local! {
    /// Whether the program believes this thread blocks the checkpoint signal.
    static THINKS_BLOCKED: Cell<bool> = const { Cell::new(false) };
}

fn thinks_blocked() -> bool {
    THINKS_BLOCKED.with(|c| c.get())
}

fn set_thinks_blocked(v: bool) -> bool {
    THINKS_BLOCKED.with(|c| c.replace(v))
}

// ---------------------------------------------------------------------------------------------
// The program's disposition for the checkpoint signal (remembered, never installed).
//
// Lock-free: a writer fills a fresh slot of a small ring and swaps the index of the current one,
// so each caller gets a distinct old value. A slot is reused only 8 writes later.

struct ActSlot {
    handler: AtomicUsize,
    flags: AtomicI32,
    mask: AtomicU64,
    restorer: AtomicUsize,
}

#[derive(Clone, Copy, Default)]
struct Act {
    handler: usize,
    flags: i32,
    mask: u64,
    restorer: usize,
}

const NACT: usize = 8;
static ACTS: [ActSlot; NACT] = [const {
    ActSlot {
        handler: AtomicUsize::new(0),
        flags: AtomicI32::new(0),
        mask: AtomicU64::new(0),
        restorer: AtomicUsize::new(0),
    }
}; NACT];
/// Index + 1 of the current slot; 0: the program never set one (SIG_DFL).
static CUR_ACT: AtomicUsize = AtomicUsize::new(0);
static NEXT_ACT: AtomicUsize = AtomicUsize::new(0);

fn read_act(idx1: usize) -> Act {
    if idx1 == 0 {
        return Act::default();
    }
    let s = &ACTS[idx1 - 1];
    Act {
        handler: s.handler.load(Ordering::Acquire),
        flags: s.flags.load(Ordering::Acquire),
        mask: s.mask.load(Ordering::Acquire),
        restorer: s.restorer.load(Ordering::Acquire),
    }
}

fn load_act() -> Act {
    read_act(CUR_ACT.load(Ordering::Acquire))
}

/// Makes `a` the program's disposition; returns the previous one.
fn swap_act(a: Act) -> Act {
    let i = NEXT_ACT.fetch_add(1, Ordering::AcqRel) % NACT;
    let s = &ACTS[i];
    s.handler.store(a.handler, Ordering::Release);
    s.flags.store(a.flags, Ordering::Release);
    s.mask.store(a.mask, Ordering::Release);
    s.restorer.store(a.restorer, Ordering::Release);
    read_act(CUR_ACT.swap(i + 1, Ordering::AcqRel))
}

fn act_of(sa: &libc::sigaction) -> Act {
    Act {
        handler: sa.sa_sigaction,
        flags: sa.sa_flags,
        mask: word(&sa.sa_mask),
        restorer: sa.sa_restorer.map_or(0, |f| f as usize),
    }
}

/// # Safety
/// `out` must be valid for writes.
unsafe fn write_act(out: *mut libc::sigaction, a: Act) {
    // SAFETY: a zeroed sigaction is valid; `out` is valid per the contract.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = a.handler;
        sa.sa_flags = a.flags;
        set_word(&mut sa.sa_mask, a.mask);
        sa.sa_restorer = std::mem::transmute::<usize, Option<extern "C" fn()>>(a.restorer);
        std::ptr::write(out, sa);
    }
}

/// Signals whose handler the program installed with the checkpoint signal in `sa_mask`
/// (bit `sig - 1`): it was taken out, and is put back in the old action we report.
static MASK_HAD_CKPT: AtomicU64 = AtomicU64::new(0);

fn forget_mask_bit(sig: i32) {
    MASK_HAD_CKPT.fetch_and(!bit(sig), Ordering::AcqRel);
}

// ---------------------------------------------------------------------------------------------
// Dispositions.

unsafe fn sigaction_impl(
    sig: libc::c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> libc::c_int {
    let f = real_fn!(R_SIGACTION, SigactionFn);
    let ck = ckpt_sig();
    if ck == 0 {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { f(sig, act, old) };
    }
    if sig == ck {
        let prev = if act.is_null() {
            load_act()
        } else {
            // SAFETY: non-null pointer from the caller.
            swap_act(act_of(unsafe { &*act }))
        };
        if !old.is_null() {
            // SAFETY: non-null pointer from the caller.
            unsafe { write_act(old, prev) };
        }
        return 0;
    }
    let had = MASK_HAD_CKPT.load(Ordering::Acquire) & bit(sig) != 0;
    // The program's handler before this call (the kernel may have the pids plugin's
    // trampoline instead, which the old action must not show).
    let mut prev = crate::pids::program_handler(sig);
    let r = if act.is_null() {
        // SAFETY: the caller's arguments.
        unsafe { f(sig, act, old) }
    } else {
        // SAFETY: non-null pointer from the caller; copied before the call (old may alias).
        let mut a = unsafe { *act };
        let w = word(&a.sa_mask);
        let wants = w & bit(ck) != 0;
        set_word(&mut a.sa_mask, w & !bit(ck));
        // An SA_SIGINFO handler runs behind a trampoline that makes `si_pid` virtual.
        prev = crate::pids::wrap_action(sig, &mut a);
        // SAFETY: a local copy and the caller's out-pointer.
        let r = unsafe { f(sig, &a, old) };
        if r == 0 {
            if wants {
                MASK_HAD_CKPT.fetch_or(bit(sig), Ordering::AcqRel);
            } else {
                forget_mask_bit(sig);
            }
        }
        r
    };
    if r == 0 && !old.is_null() {
        // SAFETY: non-null pointer the real call just filled.
        let o = unsafe { &mut *old };
        o.sa_sigaction = crate::pids::unwrap_handler(o.sa_sigaction, prev);
    }
    if r == 0 && had && !old.is_null() {
        // SAFETY: non-null pointer the real call just filled.
        let o = unsafe { &mut (*old).sa_mask };
        set_word(o, word(o) | bit(ck));
    }
    r
}

/// # Safety
/// Same contract as glibc's `sigaction`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigaction(
    sig: libc::c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> libc::c_int {
    // SAFETY: forwarded contract.
    unsafe { sigaction_impl(sig, act, old) }
}

/// # Safety
/// Same contract as glibc's `__sigaction`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __sigaction(
    sig: libc::c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> libc::c_int {
    // SAFETY: forwarded contract.
    unsafe { sigaction_impl(sig, act, old) }
}

/// `signal` and its aliases: BSD semantics (`SA_RESTART`, the signal masked in its handler).
unsafe fn signal_impl(
    real_idx: usize,
    sig: libc::c_int,
    h: Handler,
    flags: i32,
    self_mask: bool,
) -> Handler {
    let ck = ckpt_sig();
    if ck != 0 && sig == ck {
        if h == libc::SIG_ERR {
            set_errno(libc::EINVAL);
            return libc::SIG_ERR;
        }
        let mask = if self_mask { bit(ck) } else { 0 };
        return swap_act(Act {
            handler: h,
            flags,
            mask,
            restorer: 0,
        })
        .handler;
    }
    let f = real_fn!(real_idx, SignalFn);
    let prev = crate::pids::program_handler(sig);
    // SAFETY: the caller's arguments.
    let r = unsafe { f(sig, h) };
    if r != libc::SIG_ERR {
        forget_mask_bit(sig);
    }
    crate::pids::unwrap_handler(r, prev)
}

/// # Safety
/// Same contract as glibc's `signal`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn signal(sig: libc::c_int, h: Handler) -> Handler {
    // SAFETY: forwarded contract.
    unsafe { signal_impl(R_SIGNAL, sig, h, libc::SA_RESTART, true) }
}

/// # Safety
/// Same contract as glibc's `bsd_signal` (an alias of `signal`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bsd_signal(sig: libc::c_int, h: Handler) -> Handler {
    // SAFETY: forwarded contract.
    unsafe { signal_impl(R_SIGNAL, sig, h, libc::SA_RESTART, true) }
}

/// # Safety
/// Same contract as glibc's `ssignal` (an alias of `signal`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ssignal(sig: libc::c_int, h: Handler) -> Handler {
    // SAFETY: forwarded contract.
    unsafe { signal_impl(R_SIGNAL, sig, h, libc::SA_RESTART, true) }
}

/// # Safety
/// Same contract as glibc's `sysv_signal` (one-shot, not masked in its handler).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysv_signal(sig: libc::c_int, h: Handler) -> Handler {
    // SAFETY: forwarded contract.
    unsafe {
        signal_impl(
            R_SYSV_SIGNAL,
            sig,
            h,
            libc::SA_RESETHAND | libc::SA_NODEFER,
            false,
        )
    }
}

/// # Safety
/// Same contract as glibc's `__sysv_signal` (what `signal` becomes under strict ISO C).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __sysv_signal(sig: libc::c_int, h: Handler) -> Handler {
    // SAFETY: forwarded contract.
    unsafe {
        signal_impl(
            R_SYSV_SIGNAL,
            sig,
            h,
            libc::SA_RESETHAND | libc::SA_NODEFER,
            false,
        )
    }
}

/// System V `sigset`: `SIG_HOLD` blocks the signal, any other disposition installs it and
/// unblocks the signal; returns `SIG_HOLD` if the signal was blocked, else the old handler.
///
/// # Safety
/// Same contract as glibc's `sigset`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigset(sig: libc::c_int, disp: Handler) -> Handler {
    let ck = ckpt_sig();
    if ck != 0 && sig == ck {
        if disp == SIG_HOLD {
            if set_thinks_blocked(true) {
                return SIG_HOLD;
            }
            return load_act().handler;
        }
        if disp == libc::SIG_ERR {
            set_errno(libc::EINVAL);
            return libc::SIG_ERR;
        }
        let prev = swap_act(Act {
            handler: disp,
            ..Act::default()
        });
        return if set_thinks_blocked(false) {
            SIG_HOLD
        } else {
            prev.handler
        };
    }
    let f = real_fn!(R_SIGSET, SignalFn);
    let prev = crate::pids::program_handler(sig);
    // SAFETY: the caller's arguments (glibc's sigset builds masks of `sig` alone).
    let r = unsafe { f(sig, disp) };
    if r != libc::SIG_ERR && disp != SIG_HOLD {
        forget_mask_bit(sig);
    }
    crate::pids::unwrap_handler(r, prev)
}

/// # Safety
/// Same contract as glibc's `sighold`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sighold(sig: libc::c_int) -> libc::c_int {
    let ck = ckpt_sig();
    if ck != 0 && sig == ck {
        set_thinks_blocked(true);
        return 0;
    }
    let f = real_fn!(R_SIGHOLD, SigFn);
    // SAFETY: the caller's argument.
    unsafe { f(sig) }
}

/// # Safety
/// Same contract as glibc's `sigrelse`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigrelse(sig: libc::c_int) -> libc::c_int {
    let ck = ckpt_sig();
    if ck != 0 && sig == ck {
        set_thinks_blocked(false);
        return 0;
    }
    let f = real_fn!(R_SIGRELSE, SigFn);
    // SAFETY: the caller's argument.
    unsafe { f(sig) }
}

/// # Safety
/// Same contract as glibc's `sigignore`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigignore(sig: libc::c_int) -> libc::c_int {
    let ck = ckpt_sig();
    if ck != 0 && sig == ck {
        swap_act(Act {
            handler: libc::SIG_IGN,
            ..Act::default()
        });
        return 0;
    }
    let f = real_fn!(R_SIGIGNORE, SigFn);
    // SAFETY: the caller's argument.
    let r = unsafe { f(sig) };
    if r == 0 {
        forget_mask_bit(sig);
    }
    r
}

/// # Safety
/// Same contract as glibc's `siginterrupt`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn siginterrupt(sig: libc::c_int, flag: libc::c_int) -> libc::c_int {
    let ck = ckpt_sig();
    if ck != 0 && sig == ck {
        let mut a = load_act();
        if flag != 0 {
            a.flags &= !libc::SA_RESTART;
        } else {
            a.flags |= libc::SA_RESTART;
        }
        swap_act(a);
        return 0;
    }
    let f = real_fn!(R_SIGINTERRUPT, SiginterruptFn);
    // SAFETY: the caller's arguments.
    unsafe { f(sig, flag) }
}

// ---------------------------------------------------------------------------------------------
// Masks.

/// Common body of `sigprocmask` and `pthread_sigmask` (both return 0 on success).
unsafe fn mask_impl(
    f: MaskFn,
    how: libc::c_int,
    set: *const Sigset,
    old: *mut Sigset,
) -> libc::c_int {
    let ck = ckpt_sig();
    if ck == 0 {
        // SAFETY: the caller's arguments.
        return unsafe { f(how, set, old) };
    }
    let thinks = thinks_blocked();
    let r = if set.is_null() {
        // SAFETY: the caller's arguments.
        unsafe { f(how, set, old) }
    } else {
        // SAFETY: non-null pointer from the caller; copied (old may alias set).
        let mut s = unsafe { *set };
        let w = word(&s);
        let wants = w & bit(ck) != 0;
        let new_thinks = match how {
            libc::SIG_BLOCK => thinks || wants,
            libc::SIG_UNBLOCK => thinks && !wants,
            libc::SIG_SETMASK => wants,
            _ => thinks,
        };
        set_word(&mut s, w & !bit(ck));
        // SAFETY: a local copy and the caller's out-pointer.
        let r = unsafe { f(how, &s, old) };
        if r == 0 {
            set_thinks_blocked(new_thinks);
        }
        r
    };
    if r == 0 && !old.is_null() {
        // SAFETY: non-null pointer the real call just filled.
        let o = unsafe { &mut *old };
        let w = word(o) & !bit(ck);
        set_word(o, if thinks { w | bit(ck) } else { w });
    }
    r
}

/// # Safety
/// Same contract as glibc's `sigprocmask`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigprocmask(
    how: libc::c_int,
    set: *const Sigset,
    old: *mut Sigset,
) -> libc::c_int {
    let f = real_fn!(R_SIGPROCMASK, MaskFn);
    // SAFETY: forwarded contract.
    unsafe { mask_impl(f, how, set, old) }
}

/// # Safety
/// Same contract as glibc's `pthread_sigmask`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pthread_sigmask(
    how: libc::c_int,
    set: *const Sigset,
    old: *mut Sigset,
) -> libc::c_int {
    let f = real_fn!(R_PTHREAD_SIGMASK, MaskFn);
    // SAFETY: forwarded contract.
    unsafe { mask_impl(f, how, set, old) }
}

// ---------------------------------------------------------------------------------------------
// Waits.

/// A copy of `*set` without the checkpoint signal.
///
/// # Safety
/// `set` must be valid for reads.
unsafe fn without_ckpt(set: *const Sigset, ck: i32) -> Sigset {
    // SAFETY: per the contract.
    let mut s = unsafe { *set };
    let w = word(&s);
    set_word(&mut s, w & !bit(ck));
    s
}

/// `set` without the checkpoint signal, for other wrappers that pass a program's temporary mask
/// to the kernel (`ppoll`, `pselect`, `epoll_pwait`): a mask must never block it.
pub fn mask_without_ckpt_signal(set: &libc::sigset_t) -> libc::sigset_t {
    let mut s = *set;
    let w = word(&s);
    set_word(&mut s, w & !bit(ckpt_sig()));
    s
}

/// True if the last call ended with EINTR while a checkpoint happened since `gen0`.
fn interrupted_by_checkpoint(r: libc::c_int, gen0: u64) -> bool {
    r == -1 && errno() == libc::EINTR && api::generation() != gen0
}

unsafe fn sigsuspend_impl(mask: *const Sigset) -> libc::c_int {
    let f = real_fn!(R_SIGSUSPEND, SigsuspendFn);
    let ck = ckpt_sig();
    if ck == 0 || mask.is_null() {
        // SAFETY: the caller's argument.
        return unsafe { f(mask) };
    }
    // SAFETY: non-null pointer from the caller.
    let m = unsafe { without_ckpt(mask, ck) };
    loop {
        let g = api::generation();
        // SAFETY: a local mask.
        let r = unsafe { f(&m) };
        if !interrupted_by_checkpoint(r, g) {
            return r;
        }
    }
}

/// # Safety
/// Same contract as glibc's `sigsuspend`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigsuspend(mask: *const Sigset) -> libc::c_int {
    // SAFETY: forwarded contract.
    unsafe { sigsuspend_impl(mask) }
}

/// # Safety
/// Same contract as glibc's `__sigsuspend`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __sigsuspend(mask: *const Sigset) -> libc::c_int {
    // SAFETY: forwarded contract.
    unsafe { sigsuspend_impl(mask) }
}

/// `pause()`: called again when only the checkpoint interrupted it (see the module doc).
#[unsafe(no_mangle)]
pub extern "C" fn pause() -> libc::c_int {
    let f = real_fn!(R_PAUSE, PauseFn);
    loop {
        let g = api::generation();
        // SAFETY: no arguments.
        let r = unsafe { f() };
        if ckpt_sig() == 0 || !interrupted_by_checkpoint(r, g) {
            return r;
        }
    }
}

/// # Safety
/// Same contract as glibc's `sigwait` (which itself retries on EINTR).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigwait(set: *const Sigset, sig: *mut libc::c_int) -> libc::c_int {
    let f = real_fn!(R_SIGWAIT, SigwaitFn);
    let ck = ckpt_sig();
    if ck == 0 || set.is_null() {
        // SAFETY: the caller's arguments.
        return unsafe { f(set, sig) };
    }
    // SAFETY: non-null pointer from the caller.
    let s = unsafe { without_ckpt(set, ck) };
    // SAFETY: a local set and the caller's out-pointer.
    unsafe { f(&s, sig) }
}

/// # Safety
/// Same contract as glibc's `sigwaitinfo`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigwaitinfo(
    set: *const Sigset,
    info: *mut libc::siginfo_t,
) -> libc::c_int {
    // SAFETY: forwarded contract; then `si_pid` of what the call wrote made virtual.
    unsafe {
        let r = sigwaitinfo_impl(set, info);
        if r > 0 {
            crate::pids::siginfo_to_virtual(info);
        }
        r
    }
}

unsafe fn sigwaitinfo_impl(set: *const Sigset, info: *mut libc::siginfo_t) -> libc::c_int {
    let f = real_fn!(R_SIGWAITINFO, SigwaitinfoFn);
    let ck = ckpt_sig();
    if ck == 0 || set.is_null() {
        // SAFETY: the caller's arguments.
        return unsafe { f(set, info) };
    }
    // SAFETY: non-null pointer from the caller.
    let s = unsafe { without_ckpt(set, ck) };
    loop {
        let g = api::generation();
        // SAFETY: a local set and the caller's out-pointer.
        let r = unsafe { f(&s, info) };
        if !interrupted_by_checkpoint(r, g) {
            return r;
        }
    }
}

fn mono_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer (vDSO; errno untouched on success).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

/// # Safety
/// Same contract as glibc's `sigtimedwait`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigtimedwait(
    set: *const Sigset,
    info: *mut libc::siginfo_t,
    timeout: *const libc::timespec,
) -> libc::c_int {
    // SAFETY: forwarded contract; then `si_pid` of what the call wrote made virtual.
    unsafe {
        let r = sigtimedwait_impl(set, info, timeout);
        if r > 0 {
            crate::pids::siginfo_to_virtual(info);
        }
        r
    }
}

unsafe fn sigtimedwait_impl(
    set: *const Sigset,
    info: *mut libc::siginfo_t,
    timeout: *const libc::timespec,
) -> libc::c_int {
    let f = real_fn!(R_SIGTIMEDWAIT, SigtimedwaitFn);
    let ck = ckpt_sig();
    if ck == 0 || set.is_null() {
        // SAFETY: the caller's arguments.
        return unsafe { f(set, info, timeout) };
    }
    // SAFETY: non-null pointer from the caller.
    let s = unsafe { without_ckpt(set, ck) };
    if timeout.is_null() {
        loop {
            let g = api::generation();
            // SAFETY: a local set and the caller's out-pointer.
            let r = unsafe { f(&s, info, timeout) };
            if !interrupted_by_checkpoint(r, g) {
                return r;
            }
        }
    }
    // SAFETY: non-null pointer from the caller.
    let req = unsafe { *timeout };
    if req.tv_sec < 0 || !(0..1_000_000_000).contains(&req.tv_nsec) {
        // SAFETY: the real function reports EINVAL.
        return unsafe { f(&s, info, timeout) };
    }
    let deadline = mono_ns().saturating_add(
        req.tv_sec
            .saturating_mul(1_000_000_000)
            .saturating_add(req.tv_nsec),
    );
    let skew0 = api::MONO_SKEW_NS.load(Ordering::Acquire);
    let mut cur = req;
    loop {
        let g = api::generation();
        // SAFETY: a local set and timeout, the caller's out-pointer.
        let r = unsafe { f(&s, info, &cur) };
        if !interrupted_by_checkpoint(r, g) {
            return r;
        }
        // Time the computation was down (checkpoint -> restart) does not count.
        let target = deadline.saturating_add(api::MONO_SKEW_NS.load(Ordering::Acquire) - skew0);
        let left = target - mono_ns();
        if left <= 0 {
            set_errno(libc::EAGAIN);
            return -1;
        }
        cur = libc::timespec {
            tv_sec: left / 1_000_000_000,
            tv_nsec: left % 1_000_000_000,
        };
    }
}

// ---------------------------------------------------------------------------------------------
// The plugin: itimers and pending process-directed signals.

/// At most this many process-directed signals are carried over (more are dropped, with a
/// warning).
const MAX_PENDING: usize = 256;

/// A raw `siginfo_t` (128 bytes).
type RawInfo = [u64; 16];

const WHICH: [libc::c_int; 3] = [libc::ITIMER_REAL, libc::ITIMER_VIRTUAL, libc::ITIMER_PROF];

#[derive(Default)]
pub struct P {
    /// `getitimer` of ITIMER_REAL, _VIRTUAL, _PROF: (value sec, usec, interval sec, usec).
    itimers: [[i64; 4]; 3],
    /// Process-directed signals dequeued at the last checkpoint, in delivery order.
    pending: Vec<RawInfo>,
}

/// `ShdPnd` of /proc/self/status, read with plain syscalls into a stack buffer.
fn shared_pending() -> Result<u64, String> {
    let mut buf = [0u8; 8192];
    // SAFETY: NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/proc/self/status".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(format!("open /proc/self/status: errno {}", errno()));
    }
    let mut n = 0;
    while n < buf.len() {
        // SAFETY: reading into the rest of our buffer.
        let r = unsafe { libc::read(fd, buf[n..].as_mut_ptr().cast(), buf.len() - n) };
        if r <= 0 {
            break;
        }
        n += r as usize;
    }
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    parse_mask(&buf[..n], b"ShdPnd:").ok_or_else(|| "no ShdPnd in /proc/self/status".into())
}

/// The hexadecimal mask after `key` in a /proc status text.
fn parse_mask(text: &[u8], key: &[u8]) -> Option<u64> {
    let pos = text.windows(key.len()).position(|w| w == key)?;
    let mut v: u64 = 0;
    let mut digits = 0;
    for &c in text[pos + key.len()..]
        .iter()
        .skip_while(|c| **c == b' ' || **c == b'\t')
    {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => break,
        };
        v = (v << 4) | u64::from(d);
        digits += 1;
    }
    (digits > 0).then_some(v)
}

impl P {
    /// Queues the saved process-directed signals again, in order, and forgets them.
    ///
    /// The kernel lets a caller queue a siginfo with `si_code >= 0` (`SI_USER`, `SI_KERNEL`,
    /// ...) only to itself, and "itself" is its *thread* id: from the checkpoint thread that
    /// fails with EPERM. Such a signal sent by this very process with `kill` is sent again with
    /// `kill` (identical siginfo); any other is queued with `si_code = SI_QUEUE` and the rest
    /// of its siginfo unchanged.
    fn requeue(&mut self) -> Vec<String> {
        let mut errs = Vec::new();
        // SAFETY: getpid has no failure mode.
        let pid = crate::api::real_pid();
        for mut info in self.pending.drain(..) {
            let sig = info[0] as u32 as i32;
            // si_signo, si_errno, si_code: i32 at bytes 0, 4, 8; the union starts at byte 16.
            let code = info[1] as u32 as i32;
            let mut r = queue(pid, sig, &info);
            if r != 0 && errno() == libc::EPERM {
                let si_pid = info[2] as u32 as i32;
                r = if code == libc::SI_USER && si_pid == crate::pids::r2v(pid) {
                    // SAFETY: a signal to our own process.
                    libc::c_long::from(unsafe { libc::kill(pid, sig) })
                } else {
                    info[1] = (info[1] & !0xffff_ffff) | u64::from(libc::SI_QUEUE as u32);
                    queue(pid, sig, &info)
                };
            }
            if r != 0 {
                errs.push(format!(
                    "signals: could not queue pending signal {sig} again (errno {})",
                    errno()
                ));
            }
        }
        errs
    }
}

impl P {
    /// `getitimer` x3, after the drain of pending signals.
    fn save_itimers(&mut self) -> Result<(), String> {
        // After the drain: an expired ITIMER_REAL is re-armed only when its SIGALRM is
        // dequeued (which the drain just did); until then getitimer reports 0 left.
        for (i, &w) in WHICH.iter().enumerate() {
            // SAFETY: a zeroed itimerval is valid; getitimer fills it.
            let mut v: libc::itimerval = unsafe { std::mem::zeroed() };
            // SAFETY: valid out-pointer.
            if unsafe { libc::getitimer(w, &mut v) } != 0 {
                return Err(format!("getitimer({w}): errno {}", errno()));
            }
            if w == libc::ITIMER_REAL
                && v.it_value.tv_sec == 0
                && v.it_value.tv_usec == 0
                && (v.it_interval.tv_sec != 0 || v.it_interval.tv_usec != 0)
            {
                // It expired again since the drain: its SIGALRM is pending in this process but
                // not in the image; a restarted process gets it at once, then the period.
                v.it_value = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 1,
                };
            }
            self.itimers[i] = [
                v.it_value.tv_sec,
                v.it_value.tv_usec,
                v.it_interval.tv_sec,
                v.it_interval.tv_usec,
            ];
        }
        Ok(())
    }
}

/// `rt_sigqueueinfo(pid, sig, info)`: 0 or -1 with errno.
fn queue(pid: i32, sig: i32, info: &RawInfo) -> libc::c_long {
    // SAFETY: a 128-byte siginfo, queued to our own process.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigqueueinfo,
            pid as libc::c_long,
            sig as libc::c_long,
            info.as_ptr(),
        )
    }
}

impl Plugin for P {
    fn name(&self) -> &'static str {
        "signals"
    }

    fn init(&mut self) {
        for i in 0..NREAL {
            real(i);
        }
        self.pending.reserve(16);
        ACTIVE.store(true, Ordering::Release);
    }

    fn checkpoint(&mut self, ctx: &mut CkptContext) -> Result<(), String> {
        self.pending.clear();
        let ck = api::CKPT_SIGNAL.load(Ordering::Relaxed);
        let set = shared_pending()? & !bit(ck) & !bit(libc::SIGKILL) & !bit(libc::SIGSTOP);
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if set == 0 {
            return self.save_itimers();
        }
        loop {
            let mut info: RawInfo = [0; 16];
            // SAFETY: an 8-byte kernel sigset, a 128-byte siginfo buffer, a zero timeout. This
            // thread blocks these signals, and every user thread is parked with all blocked,
            // so what is dequeued here is exactly the shared queue.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_rt_sigtimedwait,
                    &set as *const u64,
                    info.as_mut_ptr(),
                    &zero as *const libc::timespec,
                    8usize,
                )
            };
            if r <= 0 {
                break;
            }
            if self.pending.len() == MAX_PENDING {
                // Give this one back to the live process; it and the ones still queued are
                // not in the image.
                // SAFETY: getpid has no failure mode.
                queue(crate::api::real_pid(), r as i32, &info);
                ctx.warnings.push(format!(
                    "signals: more than {MAX_PENDING} pending process-directed signals; \
                     signal {r} and later ones are not in the image"
                ));
                break;
            }
            // The sender's pid as the program knows it (after a restart with new pids the
            // kernel's differs), so it is still right after the next restart.
            // SAFETY: a 128-byte siginfo the kernel just filled.
            unsafe { crate::pids::siginfo_to_virtual(info.as_mut_ptr().cast()) };
            self.pending.push(info);
        }
        self.save_itimers()
    }

    fn resume(&mut self) {
        // The process goes on: its timers kept running; give back its pending signals.
        for e in self.requeue() {
            let s = format!("ckpt[{}]: {e}\n", crate::api::real_pid());
            // SAFETY: writing our buffer to stderr.
            unsafe { libc::write(2, s.as_ptr().cast(), s.len()) };
        }
    }

    fn restart(&mut self, ctx: &mut RestartContext) -> Result<(), String> {
        for (i, &w) in WHICH.iter().enumerate() {
            let [vs, vu, is, iu] = self.itimers[i];
            let v = libc::itimerval {
                it_value: libc::timeval {
                    tv_sec: vs,
                    tv_usec: vu,
                },
                it_interval: libc::timeval {
                    tv_sec: is,
                    tv_usec: iu,
                },
            };
            // SAFETY: a valid itimerval (as getitimer returned it).
            if unsafe { libc::setitimer(w, &v, std::ptr::null_mut()) } != 0 {
                return Err(format!("setitimer({w}): errno {}", errno()));
            }
        }
        ctx.warnings.extend(self.requeue());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_masks() {
        let t = b"Name:\tx\nSigPnd:\t0000000000000001\nShdPnd:\t0000000000000a00\nSigBlk:\t0\n";
        assert_eq!(parse_mask(t, b"ShdPnd:"), Some(0xa00));
        assert_eq!(parse_mask(t, b"SigPnd:"), Some(1));
        assert_eq!(parse_mask(t, b"SigCgt:"), None);
    }

    #[test]
    fn act_ring_returns_previous() {
        let a = Act {
            handler: 1,
            ..Act::default()
        };
        let b = Act {
            handler: 7,
            flags: 3,
            mask: 5,
            restorer: 0,
        };
        let p0 = swap_act(a);
        assert_eq!(p0.handler, 0);
        assert_eq!(swap_act(b).handler, 1);
        let cur = load_act();
        assert_eq!((cur.handler, cur.flags, cur.mask), (7, 3, 5));
        for i in 0..20 {
            swap_act(Act {
                handler: 100 + i,
                ..Act::default()
            });
        }
        assert_eq!(load_act().handler, 119);
    }
}
