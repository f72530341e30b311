//! Waits that a checkpoint must not cut short: `poll`, `ppoll`, `select`, `pselect`,
//! `epoll_wait`, `epoll_pwait`, `epoll_pwait2`, `sem_wait`, `sem_timedwait`, `sem_clockwait`,
//! and the socket reads and accepts that `SO_RCVTIMEO` makes interruptible (`read`, `recv`,
//! `recvfrom`, `recvmsg`, `accept`, `accept4`), with glibc's `__*_chk` entry points of the
//! fortified ones. This module owns those symbols.
//!
//! The checkpoint signal's handler is `SA_RESTART`, but the kernel still ends these calls with
//! `EINTR` once any handler ran (signal(7)). Each wrapper makes one call to the real function;
//! only when that returns `EINTR` and [`api::generation`] moved during the call (so a checkpoint
//! or a restart happened) does it call again, with the *remaining* time: relative timeouts get
//! a deadline on `CLOCK_MONOTONIC` taken before the first call, moved by the growth of
//! [`api::MONO_SKEW_NS`] (time the computation was down across a restart does not count); an
//! absolute `CLOCK_REALTIME` deadline (`sem_timedwait`) keeps its wall-clock time, as in
//! `timers.rs`. When no time is left the call is made once more with a zero timeout, which
//! returns exactly what an expired one does (0 ready, cleared fd sets, zeroed timeval). An
//! `EINTR` caused by any other signal reaches the program unchanged; errno is never touched
//! otherwise. If a checkpoint and another signal interrupt the same call, the other signal's
//! handler runs but its `EINTR` is absorbed (the wait goes on), as for the sleeps.
//!
//! Socket calls are simply made again: the kernel re-arms `SO_RCVTIMEO` from its full value,
//! so a wait interrupted by a checkpoint may last up to one timeout longer (never shorter).
//!
//! Only the exported symbols are covered: glibc's internal calls (stdio reading a socket,
//! `getaddrinfo`'s poll) use private aliases and are not retried.
//!
//! The wrappers never allocate, take no lock and hold nothing across the blocking call; the
//! real functions are resolved once with `dlsym(RTLD_NEXT)` in [`Plugin::init`] (lazily if the
//! core did not run `init`, i.e. when the process is not checkpointed).

use crate::api::{self, CkptContext, Plugin, RestartContext};
use libc::{c_int, c_void, clockid_t, nfds_t, size_t, sockaddr, socklen_t, ssize_t};
use libc::{epoll_event, fd_set, msghdr, pollfd, sem_t, sigset_t, timespec, timeval};
use std::sync::atomic::{AtomicUsize, Ordering};

type PollFn = unsafe extern "C" fn(*mut pollfd, nfds_t, c_int) -> c_int;
type PollChkFn = unsafe extern "C" fn(*mut pollfd, nfds_t, c_int, size_t) -> c_int;
type PpollFn = unsafe extern "C" fn(*mut pollfd, nfds_t, *const timespec, *const sigset_t) -> c_int;
type PpollChkFn =
    unsafe extern "C" fn(*mut pollfd, nfds_t, *const timespec, *const sigset_t, size_t) -> c_int;
type SelectFn =
    unsafe extern "C" fn(c_int, *mut fd_set, *mut fd_set, *mut fd_set, *mut timeval) -> c_int;
type PselectFn = unsafe extern "C" fn(
    c_int,
    *mut fd_set,
    *mut fd_set,
    *mut fd_set,
    *const timespec,
    *const sigset_t,
) -> c_int;
type EpollWaitFn = unsafe extern "C" fn(c_int, *mut epoll_event, c_int, c_int) -> c_int;
type EpollPwaitFn =
    unsafe extern "C" fn(c_int, *mut epoll_event, c_int, c_int, *const sigset_t) -> c_int;
type EpollPwait2Fn =
    unsafe extern "C" fn(c_int, *mut epoll_event, c_int, *const timespec, *const sigset_t) -> c_int;
type SemWaitFn = unsafe extern "C" fn(*mut sem_t) -> c_int;
type SemTimedwaitFn = unsafe extern "C" fn(*mut sem_t, *const timespec) -> c_int;
type SemClockwaitFn = unsafe extern "C" fn(*mut sem_t, clockid_t, *const timespec) -> c_int;
type ReadFn = unsafe extern "C" fn(c_int, *mut c_void, size_t) -> ssize_t;
type ReadChkFn = unsafe extern "C" fn(c_int, *mut c_void, size_t, size_t) -> ssize_t;
type RecvFn = unsafe extern "C" fn(c_int, *mut c_void, size_t, c_int) -> ssize_t;
type RecvChkFn = unsafe extern "C" fn(c_int, *mut c_void, size_t, size_t, c_int) -> ssize_t;
type RecvfromFn = unsafe extern "C" fn(
    c_int,
    *mut c_void,
    size_t,
    c_int,
    *mut sockaddr,
    *mut socklen_t,
) -> ssize_t;
type RecvfromChkFn = unsafe extern "C" fn(
    c_int,
    *mut c_void,
    size_t,
    size_t,
    c_int,
    *mut sockaddr,
    *mut socklen_t,
) -> ssize_t;
type RecvmsgFn = unsafe extern "C" fn(c_int, *mut msghdr, c_int) -> ssize_t;
type AcceptFn = unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
type Accept4Fn = unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int;

use crate::api::real_fns;

real_fns! {
    real_poll, POLL, c"poll", PollFn;
    real_poll_chk, POLL_CHK, c"__poll_chk", PollChkFn;
    real_ppoll, PPOLL, c"ppoll", PpollFn;
    real_ppoll_chk, PPOLL_CHK, c"__ppoll_chk", PpollChkFn;
    real_select, SELECT, c"select", SelectFn;
    real_pselect, PSELECT, c"pselect", PselectFn;
    real_epoll_wait, EPOLL_WAIT, c"epoll_wait", EpollWaitFn;
    real_epoll_pwait, EPOLL_PWAIT, c"epoll_pwait", EpollPwaitFn;
    real_epoll_pwait2, EPOLL_PWAIT2, c"epoll_pwait2", EpollPwait2Fn;
    real_sem_wait, SEM_WAIT, c"sem_wait", SemWaitFn;
    real_sem_timedwait, SEM_TIMEDWAIT, c"sem_timedwait", SemTimedwaitFn;
    real_sem_clockwait, SEM_CLOCKWAIT, c"sem_clockwait", SemClockwaitFn;
    real_read, READ, c"read", ReadFn;
    real_read_chk, READ_CHK, c"__read_chk", ReadChkFn;
    real_recv, RECV, c"recv", RecvFn;
    real_recv_chk, RECV_CHK, c"__recv_chk", RecvChkFn;
    real_recvfrom, RECVFROM, c"recvfrom", RecvfromFn;
    real_recvfrom_chk, RECVFROM_CHK, c"__recvfrom_chk", RecvfromChkFn;
    real_recvmsg, RECVMSG, c"recvmsg", RecvmsgFn;
    real_accept, ACCEPT, c"accept", AcceptFn;
    real_accept4, ACCEPT4, c"accept4", Accept4Fn;
}

fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// The real function is missing from libc: fail like a missing system call.
#[cold]
fn enosys() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = libc::ENOSYS };
    -1
}

/// The call just failed: was it the checkpoint signal? (`EINTR` and the generation moved since
/// `gen0` was read before the call.)
#[inline(always)]
fn by_checkpoint(gen0: u64) -> bool {
    errno() == libc::EINTR && api::generation() != gen0
}

/// Calls `call` until it fails other than by a checkpoint's `EINTR`; for calls without a
/// timeout, or whose timeout the kernel re-arms (`SO_RCVTIMEO`).
#[cold]
#[inline(never)]
fn again<R: Copy + PartialOrd + Default>(mut call: impl FnMut() -> R) -> R {
    loop {
        let g = api::generation();
        let r = call();
        if !(r < R::default() && by_checkpoint(g)) {
            return r;
        }
    }
}

fn mono_ns() -> i64 {
    let mut ts = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; clock_gettime does not touch errno on success.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn mono_skew() -> i64 {
    api::MONO_SKEW_NS.load(Ordering::Acquire)
}

fn ts_ns(ts: &timespec) -> i64 {
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

fn ns_ts(ns: i64) -> timespec {
    let ns = ns.max(0);
    timespec {
        tv_sec: ns / 1_000_000_000,
        tv_nsec: ns % 1_000_000_000,
    }
}

/// Where a relative timeout ends on CLOCK_MONOTONIC, and the skew when it was taken.
#[derive(Clone, Copy)]
struct Deadline {
    at: i64,
    skew: i64,
}

impl Deadline {
    fn after_ns(ns: i64) -> Deadline {
        Deadline {
            at: mono_ns().saturating_add(ns),
            skew: mono_skew(),
        }
    }

    /// `Some` for a positive poll-style timeout in ms (0 never blocks, < 0 waits forever).
    #[inline(always)]
    fn after_ms(ms: c_int) -> Option<Deadline> {
        (ms > 0).then(|| Deadline::after_ns(i64::from(ms) * 1_000_000))
    }

    /// Nanoseconds left (>= 0); time spent down across restarts since does not count.
    fn left_ns(&self) -> i64 {
        let at = self.at.saturating_add(mono_skew() - self.skew);
        at.saturating_sub(mono_ns()).max(0)
    }

    /// Milliseconds left, rounded up so that the wait never ends early.
    fn left_ms(&self) -> c_int {
        let ms = self.left_ns().saturating_add(999_999) / 1_000_000;
        ms.min(c_int::MAX as i64) as c_int
    }
}

/// Retry loop of the poll-style calls (timeout in ms, passed to `call`).
#[cold]
#[inline(never)]
fn again_ms(d: Option<Deadline>, timeout: c_int, mut call: impl FnMut(c_int) -> c_int) -> c_int {
    loop {
        let t = d.map_or(timeout, |d| d.left_ms());
        let g = api::generation();
        let r = call(t);
        if !(r < 0 && by_checkpoint(g)) {
            return r;
        }
    }
}

/// Retry loop of the calls taking a relative `timespec` (NULL: wait forever).
#[cold]
#[inline(never)]
fn again_ts(
    d: Option<Deadline>,
    tmo: *const timespec,
    mut call: impl FnMut(*const timespec) -> c_int,
) -> c_int {
    loop {
        let left = d.map(|d| ns_ts(d.left_ns()));
        let p = left.as_ref().map_or(tmo, |t| t as *const timespec);
        let g = api::generation();
        let r = call(p);
        if !(r < 0 && by_checkpoint(g)) {
            return r;
        }
    }
}

/// The deadline of a relative `timespec` timeout (None when NULL: no timeout).
///
/// # Safety
/// `tmo` is NULL or readable (glibc's `ppoll`/`pselect` read it themselves too).
#[inline(always)]
unsafe fn deadline_ts(tmo: *const timespec) -> Option<Deadline> {
    // SAFETY: per the contract.
    (!tmo.is_null()).then(|| Deadline::after_ns(ts_ns(unsafe { &*tmo })))
}

// ---- poll, ppoll, epoll ----

/// # Safety
/// Same contract as glibc's `poll`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    let Some(f) = real_poll() else {
        return enosys();
    };
    let g = api::generation();
    let d = Deadline::after_ms(timeout);
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(fds, nfds, timeout) };
    if r < 0 && by_checkpoint(g) {
        // SAFETY: as above, with the time left.
        again_ms(d, timeout, |t| unsafe { f(fds, nfds, t) })
    } else {
        r
    }
}

/// # Safety
/// Same contract as glibc's `__poll_chk`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut pollfd,
    nfds: nfds_t,
    timeout: c_int,
    fdslen: size_t,
) -> c_int {
    let Some(f) = real_poll_chk() else {
        return enosys();
    };
    let g = api::generation();
    let d = Deadline::after_ms(timeout);
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(fds, nfds, timeout, fdslen) };
    if r < 0 && by_checkpoint(g) {
        // SAFETY: as above, with the time left.
        again_ms(d, timeout, |t| unsafe { f(fds, nfds, t, fdslen) })
    } else {
        r
    }
}

/// # Safety
/// Same contract as glibc's `ppoll`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    nfds: nfds_t,
    tmo: *const timespec,
    sigmask: *const sigset_t,
) -> c_int {
    let Some(f) = real_ppoll() else {
        return enosys();
    };
    let g = api::generation();
    // SAFETY: glibc's ppoll reads *tmo as well.
    let d = unsafe { deadline_ts(tmo) };
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(fds, nfds, tmo, sigmask) };
    if r < 0 && by_checkpoint(g) {
        // SAFETY: as above, with the time left.
        again_ts(d, tmo, |t| unsafe { f(fds, nfds, t, sigmask) })
    } else {
        r
    }
}

/// # Safety
/// Same contract as glibc's `__ppoll_chk`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __ppoll_chk(
    fds: *mut pollfd,
    nfds: nfds_t,
    tmo: *const timespec,
    sigmask: *const sigset_t,
    fdslen: size_t,
) -> c_int {
    let Some(f) = real_ppoll_chk() else {
        return enosys();
    };
    let g = api::generation();
    // SAFETY: glibc's ppoll reads *tmo as well.
    let d = unsafe { deadline_ts(tmo) };
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(fds, nfds, tmo, sigmask, fdslen) };
    if r < 0 && by_checkpoint(g) {
        // SAFETY: as above, with the time left.
        again_ts(d, tmo, |t| unsafe { f(fds, nfds, t, sigmask, fdslen) })
    } else {
        r
    }
}

/// # Safety
/// Same contract as glibc's `epoll_wait`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    events: *mut epoll_event,
    maxevents: c_int,
    timeout: c_int,
) -> c_int {
    let Some(f) = real_epoll_wait() else {
        return enosys();
    };
    let g = api::generation();
    let d = Deadline::after_ms(timeout);
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(epfd, events, maxevents, timeout) };
    if r < 0 && by_checkpoint(g) {
        // SAFETY: as above, with the time left.
        again_ms(d, timeout, |t| unsafe { f(epfd, events, maxevents, t) })
    } else {
        r
    }
}

/// # Safety
/// Same contract as glibc's `epoll_pwait`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut epoll_event,
    maxevents: c_int,
    timeout: c_int,
    sigmask: *const sigset_t,
) -> c_int {
    let Some(f) = real_epoll_pwait() else {
        return enosys();
    };
    let g = api::generation();
    let d = Deadline::after_ms(timeout);
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(epfd, events, maxevents, timeout, sigmask) };
    if r < 0 && by_checkpoint(g) {
        // SAFETY: as above, with the time left.
        again_ms(d, timeout, |t| unsafe {
            f(epfd, events, maxevents, t, sigmask)
        })
    } else {
        r
    }
}

/// # Safety
/// Same contract as glibc's `epoll_pwait2`; `tmo` must be NULL or readable (the kernel would
/// report EFAULT for a bad pointer, the wrapper reads it first).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_pwait2(
    epfd: c_int,
    events: *mut epoll_event,
    maxevents: c_int,
    tmo: *const timespec,
    sigmask: *const sigset_t,
) -> c_int {
    let Some(f) = real_epoll_pwait2() else {
        return enosys();
    };
    let g = api::generation();
    // SAFETY: per this function's contract.
    let d = unsafe { deadline_ts(tmo) };
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(epfd, events, maxevents, tmo, sigmask) };
    if r < 0 && by_checkpoint(g) {
        // SAFETY: as above, with the time left.
        again_ts(d, tmo, |t| unsafe {
            f(epfd, events, maxevents, t, sigmask)
        })
    } else {
        r
    }
}

// ---- select, pselect ----

/// Words of an fd set the kernel reads for `nfds` (what `select` may look at).
const SET_WORDS: usize = libc::FD_SETSIZE / 64;

/// The caller's fd sets as they were before the call (the first `words` 64-bit words of each;
/// sets larger than `FD_SETSIZE` are not copied: the kernel leaves the sets untouched when it
/// returns `EINTR`, the copy only guards against a libc that would not).
struct Sets {
    ptrs: [*mut fd_set; 3],
    saved: [[u64; SET_WORDS]; 3],
    words: usize,
}

impl Sets {
    /// # Safety
    /// Each non-null pointer holds at least `nfds` bits (select's contract).
    #[inline(always)]
    unsafe fn save(nfds: c_int, ptrs: [*mut fd_set; 3]) -> Sets {
        let words = if nfds > 0 && nfds as usize <= libc::FD_SETSIZE {
            (nfds as usize).div_ceil(64)
        } else {
            0
        };
        let mut s = Sets {
            ptrs,
            saved: [[0; SET_WORDS]; 3],
            words,
        };
        for (p, saved) in ptrs.iter().zip(s.saved.iter_mut()) {
            if !p.is_null() {
                // SAFETY: `words` words are within the caller's set and within `saved`.
                unsafe {
                    std::ptr::copy_nonoverlapping(*p as *const u64, saved.as_mut_ptr(), words)
                };
            }
        }
        s
    }

    fn restore(&self) {
        for (p, saved) in self.ptrs.iter().zip(self.saved.iter()) {
            if !p.is_null() {
                // SAFETY: the same words that `save` read, in the caller's set.
                unsafe {
                    std::ptr::copy_nonoverlapping(saved.as_ptr(), *p as *mut u64, self.words)
                };
            }
        }
    }
}

/// # Safety
/// Same contract as glibc's `select`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn select(
    nfds: c_int,
    readfds: *mut fd_set,
    writefds: *mut fd_set,
    exceptfds: *mut fd_set,
    timeout: *mut timeval,
) -> c_int {
    let Some(f) = real_select() else {
        return enosys();
    };
    let g = api::generation();
    let d = (!timeout.is_null()).then(|| {
        // SAFETY: glibc's select reads *timeout as well.
        let tv = unsafe { &*timeout };
        let ns = tv
            .tv_sec
            .saturating_mul(1_000_000_000)
            .saturating_add(tv.tv_usec.saturating_mul(1000));
        Deadline::after_ns(ns)
    });
    // SAFETY: the caller's sets hold nfds bits.
    let sets = unsafe { Sets::save(nfds, [readfds, writefds, exceptfds]) };
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(nfds, readfds, writefds, exceptfds, timeout) };
    if r < 0 && by_checkpoint(g) {
        select_again(f, nfds, &sets, timeout, d)
    } else {
        r
    }
}

#[cold]
#[inline(never)]
fn select_again(
    f: SelectFn,
    nfds: c_int,
    sets: &Sets,
    timeout: *mut timeval,
    d: Option<Deadline>,
) -> c_int {
    loop {
        sets.restore();
        if let Some(d) = d {
            // Rounded up to the microsecond: never early. Linux select writes the time left
            // back into the caller's timeval, which the last call does.
            let us = d.left_ns().saturating_add(999) / 1000;
            // SAFETY: the caller's timeval, non-null since there is a deadline.
            unsafe {
                *timeout = timeval {
                    tv_sec: us / 1_000_000,
                    tv_usec: us % 1_000_000,
                }
            };
        }
        let g = api::generation();
        let [r, w, e] = sets.ptrs;
        // SAFETY: the caller's arguments, sets restored, time left in the timeval.
        let ret = unsafe { f(nfds, r, w, e, timeout) };
        if !(ret < 0 && by_checkpoint(g)) {
            return ret;
        }
    }
}

/// # Safety
/// Same contract as glibc's `pselect`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pselect(
    nfds: c_int,
    readfds: *mut fd_set,
    writefds: *mut fd_set,
    exceptfds: *mut fd_set,
    tmo: *const timespec,
    sigmask: *const sigset_t,
) -> c_int {
    let Some(f) = real_pselect() else {
        return enosys();
    };
    let g = api::generation();
    // SAFETY: glibc's pselect reads *tmo as well.
    let d = unsafe { deadline_ts(tmo) };
    // SAFETY: the caller's sets hold nfds bits.
    let sets = unsafe { Sets::save(nfds, [readfds, writefds, exceptfds]) };
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(nfds, readfds, writefds, exceptfds, tmo, sigmask) };
    if r < 0 && by_checkpoint(g) {
        again_ts(d, tmo, |t| {
            sets.restore();
            // SAFETY: the caller's arguments, sets restored, time left.
            unsafe { f(nfds, readfds, writefds, exceptfds, t, sigmask) }
        })
    } else {
        r
    }
}

// ---- semaphores ----

/// # Safety
/// Same contract as glibc's `sem_wait`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sem_wait(sem: *mut sem_t) -> c_int {
    let Some(f) = real_sem_wait() else {
        return enosys();
    };
    let g = api::generation();
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(sem) };
    if r < 0 && by_checkpoint(g) {
        // SAFETY: as above.
        again(|| unsafe { f(sem) })
    } else {
        r
    }
}

/// `sem_timedwait`: the deadline is a CLOCK_REALTIME time and keeps its wall-clock meaning
/// (like `clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME)` in `timers.rs`).
///
/// # Safety
/// Same contract as glibc's `sem_timedwait`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sem_timedwait(sem: *mut sem_t, abstime: *const timespec) -> c_int {
    let Some(f) = real_sem_timedwait() else {
        return enosys();
    };
    let g = api::generation();
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(sem, abstime) };
    if r < 0 && by_checkpoint(g) {
        // SAFETY: as above.
        again(|| unsafe { f(sem, abstime) })
    } else {
        r
    }
}

/// `sem_clockwait`: a CLOCK_REALTIME deadline is kept; any other clock's deadline moves by
/// the time the computation was down across restarts.
///
/// # Safety
/// Same contract as glibc's `sem_clockwait`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sem_clockwait(
    sem: *mut sem_t,
    clock: clockid_t,
    abstime: *const timespec,
) -> c_int {
    let Some(f) = real_sem_clockwait() else {
        return enosys();
    };
    let g = api::generation();
    let skew0 = mono_skew();
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(sem, clock, abstime) };
    if r < 0 && by_checkpoint(g) {
        sem_clockwait_again(f, sem, clock, abstime, skew0)
    } else {
        r
    }
}

#[cold]
#[inline(never)]
fn sem_clockwait_again(
    f: SemClockwaitFn,
    sem: *mut sem_t,
    clock: clockid_t,
    abstime: *const timespec,
    skew0: i64,
) -> c_int {
    loop {
        let moved;
        let t = if clock == libc::CLOCK_REALTIME || abstime.is_null() {
            abstime
        } else {
            // SAFETY: the first call read it without failing with EFAULT/EINVAL.
            let at = ts_ns(unsafe { &*abstime });
            moved = ns_ts(at.saturating_add(mono_skew() - skew0));
            &moved as *const timespec
        };
        let g = api::generation();
        // SAFETY: the caller's arguments, the deadline moved by the down time.
        let r = unsafe { f(sem, clock, t) };
        if !(r < 0 && by_checkpoint(g)) {
            return r;
        }
    }
}

// ---- reads and accepts (SO_RCVTIMEO) ----

/// # Safety
/// Same contract as glibc's `read`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    let Some(f) = real_read() else {
        return enosys() as ssize_t;
    };
    let g = api::generation();
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(fd, buf, count) };
    if r < 0 && by_checkpoint(g) {
        // SAFETY: as above.
        again(|| unsafe { f(fd, buf, count) })
    } else {
        r
    }
}

/// # Safety
/// Same contract as glibc's `__read_chk`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    buflen: size_t,
) -> ssize_t {
    let Some(f) = real_read_chk() else {
        return enosys() as ssize_t;
    };
    let g = api::generation();
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(fd, buf, count, buflen) };
    if r < 0 && by_checkpoint(g) {
        // SAFETY: as above.
        again(|| unsafe { f(fd, buf, count, buflen) })
    } else {
        r
    }
}

/// # Safety
/// Same contract as glibc's `recv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    let Some(f) = real_recv() else {
        return enosys() as ssize_t;
    };
    let g = api::generation();
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(fd, buf, len, flags) };
    if r < 0 && by_checkpoint(g) {
        // SAFETY: as above.
        again(|| unsafe { f(fd, buf, len, flags) })
    } else {
        r
    }
}

/// # Safety
/// Same contract as glibc's `__recv_chk`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
    flags: c_int,
) -> ssize_t {
    let Some(f) = real_recv_chk() else {
        return enosys() as ssize_t;
    };
    let g = api::generation();
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(fd, buf, len, buflen, flags) };
    if r < 0 && by_checkpoint(g) {
        // SAFETY: as above.
        again(|| unsafe { f(fd, buf, len, buflen, flags) })
    } else {
        r
    }
}

/// # Safety
/// Same contract as glibc's `recvfrom`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    let Some(f) = real_recvfrom() else {
        return enosys() as ssize_t;
    };
    let g = api::generation();
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(fd, buf, len, flags, addr, addrlen) };
    if r < 0 && by_checkpoint(g) {
        // SAFETY: as above (the kernel writes *addrlen only on success).
        again(|| unsafe { f(fd, buf, len, flags, addr, addrlen) })
    } else {
        r
    }
}

/// # Safety
/// Same contract as glibc's `__recvfrom_chk`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    let Some(f) = real_recvfrom_chk() else {
        return enosys() as ssize_t;
    };
    let g = api::generation();
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(fd, buf, len, buflen, flags, addr, addrlen) };
    if r < 0 && by_checkpoint(g) {
        // SAFETY: as above.
        again(|| unsafe { f(fd, buf, len, buflen, flags, addr, addrlen) })
    } else {
        r
    }
}

/// # Safety
/// Same contract as glibc's `recvmsg`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    let Some(f) = real_recvmsg() else {
        return enosys() as ssize_t;
    };
    let g = api::generation();
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(fd, msg, flags) };
    if r < 0 && by_checkpoint(g) {
        // SAFETY: as above (the kernel updates *msg only on success).
        again(|| unsafe { f(fd, msg, flags) })
    } else {
        r
    }
}

/// # Safety
/// Same contract as glibc's `accept`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, addrlen: *mut socklen_t) -> c_int {
    let Some(f) = real_accept() else {
        return enosys();
    };
    let g = api::generation();
    // The caller's buffer size (the kernel overwrites *addrlen).
    // SAFETY: the caller's addrlen.
    let cap = unsafe { crate::accept_queue::buffer_len(addrlen) };
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(fd, addr, addrlen) };
    let r = if r < 0 && by_checkpoint(g) {
        // SAFETY: as above.
        again(|| unsafe { f(fd, addr, addrlen) })
    } else {
        r
    };
    // A placeholder queued at checkpoint time gives way to the connection it stands for.
    // SAFETY: the caller's address buffers.
    unsafe { crate::accept_queue::accepted(r, addr, addrlen, cap, 0) }
}

/// # Safety
/// Same contract as glibc's `accept4`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let Some(f) = real_accept4() else {
        return enosys();
    };
    let g = api::generation();
    // The caller's buffer size (the kernel overwrites *addrlen).
    // SAFETY: the caller's addrlen.
    let cap = unsafe { crate::accept_queue::buffer_len(addrlen) };
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(fd, addr, addrlen, flags) };
    let r = if r < 0 && by_checkpoint(g) {
        // SAFETY: as above.
        again(|| unsafe { f(fd, addr, addrlen, flags) })
    } else {
        r
    };
    // As in accept.
    // SAFETY: the caller's address buffers.
    unsafe { crate::accept_queue::accepted(r, addr, addrlen, cap, flags) }
}

/// The plugin: resolves the real functions at startup; nothing to save or restore.
#[derive(Default)]
pub struct P;

impl Plugin for P {
    fn name(&self) -> &'static str {
        "eintr"
    }

    fn init(&mut self) {
        resolve_all();
    }

    fn checkpoint(&mut self, _ctx: &mut CkptContext) -> Result<(), String> {
        Ok(())
    }

    fn restart(&mut self, _ctx: &mut RestartContext) -> Result<(), String> {
        Ok(())
    }
}
