//! The plugin API: what the core (libckpt.so) offers plugins and the hooks it calls on them.
//!
//! The core knows memory, threads and the coordinator; every other kind of kernel object is a
//! [`Plugin`]. Hooks run on the checkpoint thread. `checkpoint` and `restart` run while every
//! user thread is frozen: a plugin must not call glibc's malloc, stdio or dlsym there (Rust
//! allocation is fine: the preload's allocator is private), and must not block without a
//! timeout.
//!
//! Also here: the process-wide counters that wrappers consult (checkpoint generation, time spent
//! down across restarts) and the wrapper guard that keeps checkpoints out of wrapper bookkeeping.

use ckpt_format::image::{FdInfo, ImageHeader, PeerInfo};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Incremented every time user threads are released after a checkpoint (resume) or a restart.
/// A wrapper that sees `EINTR` and a changed generation knows the checkpoint caused it.
pub static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Nanoseconds to add to a CLOCK_MONOTONIC deadline taken before the last restart(s): the time
/// the computation was down (checkpoint → restart) does not count against a sleep.
pub static MONO_SKEW_NS: AtomicI64 = AtomicI64::new(0);
/// Same for CLOCK_REALTIME deadlines.
pub static REAL_SKEW_NS: AtomicI64 = AtomicI64::new(0);

/// This process's vpid (set by the core when it joins; 0 before).
pub static VPID: AtomicU64 = AtomicU64::new(0);

/// The checkpoint signal number (set by the core before any plugin's `init`).
pub static CKPT_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The kernel's pid of this process (never the virtual one the `getpid` wrapper returns).
pub fn real_pid() -> i32 {
    // SAFETY: getpid has no failure mode.
    unsafe { libc::syscall(libc::SYS_getpid) as i32 }
}

/// `ppoll` on `fds` for at most `wait`, with the raw syscall (from plugin code `poll` would be
/// our own wrapper); the kernel's answer (number of ready fds, 0 on timeout, -1 on error).
pub fn ppoll(fds: &mut [libc::pollfd], wait: std::time::Duration) -> i64 {
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(wait.subsec_nanos() as i32),
    };
    // SAFETY: the caller's pollfd array and its length, a timeout, no signal mask.
    unsafe {
        libc::syscall(
            libc::SYS_ppoll,
            fds.as_mut_ptr(),
            fds.len(),
            &ts,
            std::ptr::null::<libc::sigset_t>(),
            0,
        )
    }
}

pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

thread_local! {
    /// Depth of wrapper bookkeeping on this thread, and whether a checkpoint signal arrived
    /// meanwhile (the handler then defers; the guard re-raises it on exit).
    static IN_WRAPPER: Cell<(u32, bool)> = const { Cell::new((0, false)) };
}

/// Set by the core: re-delivers the deferred checkpoint signal to the calling thread.
pub static RAISE_DEFERRED: AtomicU64 = AtomicU64::new(0);

/// Held while a wrapper updates state a checkpoint must see consistently. Never hold it across
/// a blocking call.
pub struct WrapperGuard(());

impl WrapperGuard {
    #[inline]
    pub fn enter() -> WrapperGuard {
        IN_WRAPPER.with(|c| {
            let (d, p) = c.get();
            c.set((d + 1, p));
        });
        WrapperGuard(())
    }
}

impl Drop for WrapperGuard {
    #[inline]
    fn drop(&mut self) {
        let pending = IN_WRAPPER.with(|c| {
            let (d, p) = c.get();
            if d == 1 {
                c.set((0, false));
                p
            } else {
                c.set((d - 1, p));
                false
            }
        });
        if pending {
            let f = RAISE_DEFERRED.load(Ordering::Acquire);
            if f != 0 {
                // SAFETY: the core stores a valid `extern "C" fn()` here before any checkpoint.
                let f: extern "C" fn() = unsafe { std::mem::transmute(f as usize) };
                f();
            }
        }
    }
}

/// Called by the checkpoint signal handler: true if the thread is inside wrapper bookkeeping
/// (the handler must then return at once; the guard re-raises the signal on exit).
pub fn defer_if_in_wrapper() -> bool {
    IN_WRAPPER
        .try_with(|c| {
            let (d, _) = c.get();
            if d > 0 {
                c.set((d, true));
                true
            } else {
                false
            }
        })
        .unwrap_or(false)
}

/// What a plugin sees at checkpoint time.
pub struct CkptContext<'a> {
    /// fds that belong to the core (coordinator connection, ...): not the program's.
    pub core_fds: &'a [i32],
    /// The image header being built; plugins add their records (fds, ...).
    pub header: &'a mut ImageHeader,
    /// Human-readable warnings reported to `ckpt-command`.
    pub warnings: &'a mut Vec<String>,
    /// This process's vpid.
    pub vpid: u64,
    /// Every process of the computation (all frozen now), with the pids they see themselves
    /// as (the pid namespace is the same for all of them).
    pub peers: &'a [PeerInfo],
}

/// What a plugin sees in a restarted process, before user threads run again.
pub struct RestartContext<'a> {
    pub core_fds: &'a [i32],
    /// fds as recorded in the image.
    pub fds: &'a [FdInfo],
    pub warnings: &'a mut Vec<String>,
}

/// A kind of kernel object saved and restored outside the core.
pub trait Plugin: Send {
    fn name(&self) -> &'static str;
    /// In the process, at startup (constructor), before `main`.
    fn init(&mut self) {}
    /// This process's user threads are frozen, other processes' maybe not yet: push out what
    /// the kernel still holds for them on the way to another process (e.g. TCP send queues).
    /// Every process has drained when [`Plugin::checkpoint`] runs.
    fn drain(&mut self, _warnings: &mut Vec<String>) {}
    /// Asked after [`Plugin::drain`]: whether this process needs [`Plugin::settle`] at this
    /// checkpoint. Each process says so at barrier `suspended`; when any does, every process
    /// runs `settle` and meets the others at barrier `settled` before recording anything.
    fn wants_settle(&self) -> bool {
        false
    }
    /// Every process of the computation is frozen (barrier `suspended` passed; `peers` lists
    /// them) and none has recorded anything yet: rearrange kernel state that other processes'
    /// records depend on (e.g. accept the connections waiting in a listener's queue, so both
    /// ends are recorded as a connection). Same rules as `checkpoint`.
    fn settle(&mut self, _peers: &[PeerInfo], _notes: &[Vec<u8>], _warnings: &mut Vec<String>) {}
    /// Asked after [`Plugin::drain`], with [`Plugin::wants_settle`]: bytes this process tells
    /// the same plugin in every process (given to [`Plugin::settle`] as `notes`, one per
    /// process, in any order). A non-empty note asks for the settle step too.
    fn settle_note(&self) -> Vec<u8> {
        Vec::new()
    }
    /// User threads are frozen; record what the image needs.
    fn checkpoint(&mut self, ctx: &mut CkptContext) -> Result<(), String>;
    /// Image written (committed or not); user threads are about to run again.
    fn resume(&mut self) {}
    /// Restarted process, user threads still frozen: recreate the objects.
    fn restart(&mut self, ctx: &mut RestartContext) -> Result<(), String>;
}

// ---- real functions ----------------------------------------------------------------------

use std::ffi::CStr;
use std::sync::atomic::AtomicUsize;

/// Stores `dlsym(RTLD_NEXT, name)` in `slot` and returns it (0 if glibc has no such symbol).
#[cold]
#[inline(never)]
pub fn resolve(slot: &AtomicUsize, name: &CStr) -> usize {
    // SAFETY: dlsym with a NUL-terminated name.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    slot.store(p, Ordering::Relaxed);
    p
}

/// One `AtomicUsize` per real function and a typed accessor for it; `resolve_all` for init.
macro_rules! real_fns_impl {
    ($($get:ident, $slot:ident, $name:literal, $ty:ty;)*) => {
        $(
            static $slot: AtomicUsize = AtomicUsize::new(0);

            #[inline(always)]
            fn $get() -> Option<$ty> {
                let p = match $slot.load(Ordering::Relaxed) {
                    0 => $crate::api::resolve(&$slot, $name),
                    p => p,
                };
                // SAFETY: p is 0 or glibc's function of that name, whose C signature is $ty;
                // Option of a fn pointer is a nullable pointer.
                unsafe { std::mem::transmute::<usize, Option<$ty>>(p) }
            }
        )*

        fn resolve_all() {
            $( $crate::api::resolve(&$slot, $name); )*
        }
    };
}

pub(crate) use real_fns_impl as real_fns;
