//! Timers and sleeps: `nanosleep`, `clock_nanosleep`, `sleep` and `usleep` are wrapped so a
//! checkpoint is invisible to a sleeping program.
//!
//! The checkpoint signal makes the kernel end these calls with `EINTR` (they are never restarted
//! after a handler, `SA_RESTART` or not). The wrappers retry with the *remaining* time when the
//! checkpoint generation changed during the call; an `EINTR` caused by any other signal goes
//! to the program as usual. Time the computation spent down between a checkpoint and its
//! restart does not count against a sleep: deadlines move by [`crate::api::MONO_SKEW_NS`]
//! (or the realtime skew), which the restart hook advances.
//!
//! The wrappers never allocate and hold no lock across the sleep.

use crate::api::{self, CkptContext, Plugin, RestartContext};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

type ClockNanosleep = unsafe extern "C" fn(
    libc::clockid_t,
    libc::c_int,
    *const libc::timespec,
    *mut libc::timespec,
) -> libc::c_int;

static REAL_CLOCK_NANOSLEEP: AtomicUsize = AtomicUsize::new(0);
/// Clock readings when the last checkpoint suspended the threads.
static CKPT_MONO_NS: AtomicI64 = AtomicI64::new(0);
static CKPT_REAL_NS: AtomicI64 = AtomicI64::new(0);

fn now(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn to_ns(ts: &libc::timespec) -> i64 {
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

fn from_ns(ns: i64) -> libc::timespec {
    let ns = ns.max(0);
    libc::timespec {
        tv_sec: ns / 1_000_000_000,
        tv_nsec: ns % 1_000_000_000,
    }
}

fn real() -> ClockNanosleep {
    let mut p = REAL_CLOCK_NANOSLEEP.load(Ordering::Relaxed);
    if p == 0 {
        // SAFETY: dlsym with a NUL-terminated name; only reached if init did not run.
        p = unsafe { libc::dlsym(libc::RTLD_NEXT, c"clock_nanosleep".as_ptr()) } as usize;
        REAL_CLOCK_NANOSLEEP.store(p, Ordering::Relaxed);
    }
    // SAFETY: p is glibc's clock_nanosleep, whose signature is ClockNanosleep.
    unsafe { std::mem::transmute::<usize, ClockNanosleep>(p) }
}

fn skew_of(clock: libc::clockid_t) -> i64 {
    if clock == libc::CLOCK_REALTIME {
        api::REAL_SKEW_NS.load(Ordering::Acquire)
    } else {
        api::MONO_SKEW_NS.load(Ordering::Acquire)
    }
}

/// The common core: returns 0 or an errno value (clock_nanosleep's convention).
fn sleep_core(
    clock: libc::clockid_t,
    flags: libc::c_int,
    req: &libc::timespec,
    rem: *mut libc::timespec,
) -> libc::c_int {
    if req.tv_nsec < 0 || req.tv_nsec >= 1_000_000_000 || req.tv_sec < 0 {
        return libc::EINVAL;
    }
    let f = real();
    let mut gen0 = api::generation();
    let skew0 = skew_of(clock);
    let abs = flags & libc::TIMER_ABSTIME != 0;
    // Absolute deadline on `clock` as the program meant it.
    let deadline = if abs {
        to_ns(req)
    } else {
        now(clock).saturating_add(to_ns(req))
    };
    let mut cur = *req;
    loop {
        let mut r = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: calling glibc's clock_nanosleep with valid pointers.
        let ret = unsafe { f(clock, flags, &cur, &mut r) };
        if ret != libc::EINTR {
            return ret;
        }
        let g = api::generation();
        if g == gen0 {
            // Another signal: the program sees it, with the remaining time.
            if !abs && !rem.is_null() {
                // SAFETY: the caller passed a valid rem pointer.
                unsafe { *rem = r };
            }
            return libc::EINTR;
        }
        gen0 = g;
        // A wall-clock alarm ("wake at 12:00") keeps its absolute time; every other deadline
        // moves by the time the computation was down.
        let target = if abs && clock == libc::CLOCK_REALTIME {
            deadline
        } else {
            deadline.saturating_add(skew_of(clock) - skew0)
        };
        if abs {
            cur = from_ns(target);
        } else {
            let left = target - now(clock);
            if left <= 0 {
                return 0;
            }
            cur = from_ns(left);
        }
    }
}

/// # Safety
/// Same contract as glibc's `clock_nanosleep`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn clock_nanosleep(
    clock: libc::clockid_t,
    flags: libc::c_int,
    req: *const libc::timespec,
    rem: *mut libc::timespec,
) -> libc::c_int {
    if req.is_null() {
        return libc::EFAULT;
    }
    // SAFETY: non-null pointer from the caller.
    sleep_core(clock, flags, unsafe { &*req }, rem)
}

fn set_errno(e: libc::c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// # Safety
/// Same contract as glibc's `nanosleep`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nanosleep(
    req: *const libc::timespec,
    rem: *mut libc::timespec,
) -> libc::c_int {
    if req.is_null() {
        set_errno(libc::EFAULT);
        return -1;
    }
    // SAFETY: non-null pointer from the caller.
    match sleep_core(libc::CLOCK_MONOTONIC, 0, unsafe { &*req }, rem) {
        0 => 0,
        e => {
            set_errno(e);
            -1
        }
    }
}

/// `sleep(3)`: returns the seconds left if a (non-checkpoint) signal interrupted it.
#[unsafe(no_mangle)]
pub extern "C" fn sleep(secs: libc::c_uint) -> libc::c_uint {
    let req = libc::timespec {
        tv_sec: secs as i64,
        tv_nsec: 0,
    };
    let mut rem = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match sleep_core(libc::CLOCK_MONOTONIC, 0, &req, &mut rem) {
        libc::EINTR => (rem.tv_sec + i64::from(rem.tv_nsec > 0)) as libc::c_uint,
        _ => 0,
    }
}

/// `usleep(3)`.
#[unsafe(no_mangle)]
pub extern "C" fn usleep(usec: libc::useconds_t) -> libc::c_int {
    let req = from_ns(usec as i64 * 1000);
    match sleep_core(libc::CLOCK_MONOTONIC, 0, &req, std::ptr::null_mut()) {
        0 => 0,
        e => {
            set_errno(e);
            -1
        }
    }
}

#[derive(Default)]
pub struct Timers;

impl Plugin for Timers {
    fn name(&self) -> &'static str {
        "timers"
    }

    fn init(&mut self) {
        // SAFETY: dlsym with a NUL-terminated name, in the constructor (before any checkpoint).
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, c"clock_nanosleep".as_ptr()) } as usize;
        REAL_CLOCK_NANOSLEEP.store(p, Ordering::Relaxed);
    }

    fn checkpoint(&mut self, _ctx: &mut CkptContext) -> Result<(), String> {
        CKPT_MONO_NS.store(now(libc::CLOCK_MONOTONIC), Ordering::Release);
        CKPT_REAL_NS.store(now(libc::CLOCK_REALTIME), Ordering::Release);
        Ok(())
    }

    fn restart(&mut self, _ctx: &mut RestartContext) -> Result<(), String> {
        let dm = now(libc::CLOCK_MONOTONIC) - CKPT_MONO_NS.load(Ordering::Acquire);
        let dr = now(libc::CLOCK_REALTIME) - CKPT_REAL_NS.load(Ordering::Acquire);
        api::MONO_SKEW_NS.fetch_add(dm, Ordering::AcqRel);
        api::REAL_SKEW_NS.fetch_add(dr, Ordering::AcqRel);
        Ok(())
    }
}
