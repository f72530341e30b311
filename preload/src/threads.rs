//! Thread suspension: the checkpoint signal handler, the per-thread slots it fills, and the
//! suspend/resume protocol run by the checkpoint thread.
//!
//! Every user thread found in `/proc/self/task` gets the checkpoint signal. Its handler records
//! where the kernel put the signal frame (`ucontext`), its FS base, clear-tid address and robust
//! list, then parks on a futex. At restart each thread is recreated and returns through that very
//! frame with `rt_sigreturn`, which gives back every register, the FPU state, the signal mask
//! and the alternate stack.
//!
//! The handler runs on frozen-to-be user threads: raw syscalls only — no malloc, no locks, no
//! errno, no allocation.

use crate::sys;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};

pub const MAX_THREADS: usize = 1024;
/// Thread-directed pending signals kept per thread (more are dropped with a warning).
pub const MAX_PENDING: usize = 8;

/// What the handler records for one thread.
pub struct Slot {
    /// Thread name (comm), 16 bytes.
    pub name: [AtomicU64; 2],
    /// Thread-directed signals that were pending, with their siginfo, in dequeue order.
    pub npending: AtomicU32,
    pub pending: crate::cell::Owned<[[u8; 128]; MAX_PENDING]>,
    pub tid: AtomicI32,
    /// The tid as the program knows it (differs from `tid` after a restart with new ids).
    pub vtid: AtomicI32,
    pub uctx: AtomicU64,
    pub fs_base: AtomicU64,
    pub tid_addr: AtomicU64,
    pub robust_head: AtomicU64,
    pub robust_len: AtomicU64,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            name: [AtomicU64::new(0), AtomicU64::new(0)],
            npending: AtomicU32::new(0),
            pending: crate::cell::Owned::new([[0; 128]; MAX_PENDING]),
            tid: AtomicI32::new(0),
            vtid: AtomicI32::new(0),
            uctx: AtomicU64::new(0),
            fs_base: AtomicU64::new(0),
            tid_addr: AtomicU64::new(0),
            robust_head: AtomicU64::new(0),
            robust_len: AtomicU64::new(0),
        }
    }
}

pub static SLOTS: [Slot; MAX_THREADS] = [const { Slot::new() }; MAX_THREADS];
/// Slots in use for the current checkpoint.
pub static NSLOTS: AtomicU32 = AtomicU32::new(0);
/// Threads parked in the handler (futex word the checkpoint thread waits on).
pub static PARKED: AtomicU32 = AtomicU32::new(0);
/// Set while a suspension is wanted; a stray checkpoint signal outside it is ignored.
static SUSPENDING: AtomicBool = AtomicBool::new(false);
/// Futex word the parked threads wait on; bumped to release them.
pub static RELEASE: AtomicU32 = AtomicU32::new(0);
static PARK_EPOCH: AtomicU32 = AtomicU32::new(0);
/// The checkpoint signal number.
pub static CKPT_SIG: AtomicI32 = AtomicI32::new(0);

extern "C" fn handler(_sig: i32, _info: *mut libc::siginfo_t, uctx: *mut libc::c_void) {
    if !SUSPENDING.load(Ordering::Acquire) {
        return;
    }
    if ckpt_plugins::api::defer_if_in_wrapper() {
        return;
    }
    let idx = NSLOTS.fetch_add(1, Ordering::AcqRel) as usize;
    if idx >= MAX_THREADS {
        sys::write_all(
            2,
            b"ckpt: more threads than the checkpoint supports (4096)\n",
        );
        sys::exit_group(70);
    }
    let s = &SLOTS[idx];
    let name = sys::get_thread_name();
    s.name[0].store(
        u64::from_ne_bytes(name[..8].try_into().expect("8")),
        Ordering::Relaxed,
    );
    s.name[1].store(
        u64::from_ne_bytes(name[8..].try_into().expect("8")),
        Ordering::Relaxed,
    );
    save_private_pending(s);
    let (rh, rl) = sys::get_robust_list();
    s.uctx.store(uctx as u64, Ordering::Relaxed);
    s.fs_base.store(sys::get_fs_base(), Ordering::Relaxed);
    s.tid_addr.store(sys::get_tid_address(), Ordering::Relaxed);
    s.robust_head.store(rh, Ordering::Relaxed);
    s.robust_len.store(rl, Ordering::Relaxed);
    let tid = sys::gettid();
    s.vtid
        .store(ckpt_plugins::pids::r2v(tid), Ordering::Relaxed);
    s.tid.store(tid, Ordering::Release);
    PARKED.fetch_add(1, Ordering::AcqRel);
    sys::futex_wake(&PARKED);
    let epoch = PARK_EPOCH.load(Ordering::Acquire);
    while RELEASE.load(Ordering::Acquire) == epoch {
        sys::futex_wait(&RELEASE, epoch, 0);
    }
    requeue_private_pending(s);
}

/// This thread's private pending set, from /proc/thread-self/status (`SigPnd:`).
fn private_pending_set() -> u64 {
    let mut buf = [0u8; 2048];
    let Ok(n) = sys::read_file_raw(c"/proc/thread-self/status", &mut buf) else {
        return 0;
    };
    let text = &buf[..n];
    let key = b"SigPnd:";
    let Some(pos) = text.windows(key.len()).position(|w| w == key) else {
        return 0;
    };
    let mut v: u64 = 0;
    for &c in text[pos + key.len()..]
        .iter()
        .skip_while(|c| c.is_ascii_whitespace())
    {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => break,
        };
        v = (v << 4) | d as u64;
    }
    v
}

/// Takes this thread's pending thread-directed signals (they would otherwise be lost at
/// restart: a new thread starts with none) and keeps them with their siginfo.
fn save_private_pending(s: &Slot) {
    let ckpt = 1u64 << (CKPT_SIG.load(Ordering::Relaxed) - 1);
    let set = private_pending_set() & !ckpt;
    let mut n = 0;
    if set != 0 {
        // SAFETY: only this thread touches its slot's pending array until it is released.
        let arr = unsafe { s.pending.get() };
        while n < MAX_PENDING {
            if sys::take_pending(set, &mut arr[n]) == 0 {
                break;
            }
            // The sender's pid as the program knows it, right after any later restart too.
            // SAFETY: a 128-byte siginfo just filled by the kernel.
            unsafe { ckpt_plugins::pids::siginfo_to_virtual(arr[n].as_mut_ptr().cast()) };
            n += 1;
        }
    }
    s.npending.store(n as u32, Ordering::Release);
}

/// Queues the saved signals again to the calling thread (after a resume, or in the
/// recreated thread after a restart); they are delivered once its mask allows.
pub fn requeue_private_pending(s: &Slot) {
    let n = s.npending.swap(0, Ordering::AcqRel) as usize;
    // SAFETY: this thread owns its slot's pending array while parked/recreated.
    let arr = unsafe { s.pending.get() };
    let (pid, tid) = (sys::getpid(), sys::gettid());
    for info in arr.iter().take(n) {
        let sig = i32::from_ne_bytes(info[..4].try_into().expect("4"));
        sys::requeue(pid, tid, sig, info);
    }
}

/// The saved thread name of a slot.
pub fn slot_name(s: &Slot) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&s.name[0].load(Ordering::Relaxed).to_ne_bytes());
    b[8..].copy_from_slice(&s.name[1].load(Ordering::Relaxed).to_ne_bytes());
    b
}

/// Re-delivers a checkpoint signal that arrived inside wrapper bookkeeping.
extern "C" fn raise_deferred() {
    sys::tgkill(
        sys::getpid(),
        sys::gettid(),
        CKPT_SIG.load(Ordering::Relaxed),
    );
}

/// Installs the handler (constructor time).
pub fn install(sig: i32) -> Result<(), String> {
    CKPT_SIG.store(sig, Ordering::Relaxed);
    ckpt_plugins::api::CKPT_SIGNAL.store(sig, Ordering::Relaxed);
    ckpt_plugins::api::RAISE_DEFERRED.store(raise_deferred as *const () as u64, Ordering::Release);
    // SAFETY: a zeroed sigaction is valid; we fill handler, flags and mask.
    let mut sa: libc::sigaction = unsafe { core::mem::zeroed() };
    sa.sa_sigaction = handler as *const () as usize;
    // No SA_ONSTACK: the frame must be on the thread's own stack, not its altstack.
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: sa_mask is a valid sigset_t inside sa.
    unsafe { libc::sigfillset(&mut sa.sa_mask) };
    // SAFETY: installing a handler for our own signal.
    if unsafe { libc::sigaction(sig, &sa, core::ptr::null_mut()) } != 0 {
        return Err(format!(
            "sigaction({sig}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// `SigBlk` of thread `tid` (its blocked mask), from /proc.
fn blocked_set(tid: i32) -> u64 {
    let path = format!("/proc/self/task/{tid}/status\0");
    let mut buf = [0u8; 2048];
    let p = core::ffi::CStr::from_bytes_with_nul(path.as_bytes()).expect("NUL-terminated");
    let Ok(n) = sys::read_file_raw(p, &mut buf) else {
        return 0;
    };
    let text = String::from_utf8_lossy(&buf[..n]);
    text.lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

fn thread_state(tid: i32) -> u8 {
    let path = format!("/proc/self/task/{tid}/stat\0");
    let mut buf = [0u8; 512];
    let p = core::ffi::CStr::from_bytes_with_nul(path.as_bytes()).expect("NUL-terminated");
    match sys::read_file_raw(p, &mut buf) {
        Ok(n) => {
            let s = &buf[..n];
            match s.iter().rposition(|&c| c == b')') {
                Some(i) if i + 2 < n => s[i + 2],
                _ => b'?',
            }
        }
        Err(_) => b'X',
    }
}

/// Signals every user thread (all but the caller and `core_tids`, the preload's own helper
/// threads) and waits until all are parked in the handler.
/// On failure every thread that did park is released again.
pub fn suspend_all(timeout_ms: u64, core_tids: &[i32]) -> Result<(), String> {
    let me = sys::gettid();
    let ours = |t: i32| t == me || core_tids.contains(&t);
    let pid = sys::getpid();
    let sig = CKPT_SIG.load(Ordering::Relaxed);
    NSLOTS.store(0, Ordering::Release);
    PARKED.store(0, Ordering::Release);
    PARK_EPOCH.store(RELEASE.load(Ordering::Acquire), Ordering::Release);
    SUSPENDING.store(true, Ordering::SeqCst);
    let start = sys::monotonic_ns();
    let mut signaled: Vec<i32> = Vec::new();
    let mut tasks: Vec<i32> = Vec::new();
    let mut stable_rounds = 0;
    loop {
        if let Err(e) = ckpt_plugins::rawdir::list_numeric_dir(c"/proc/self/task", &mut tasks) {
            resume_all_internal(false);
            return Err(format!("cannot list /proc/self/task: errno {e}"));
        }
        let mut new_threads = false;
        for &t in &tasks {
            if !ours(t) && !signaled.contains(&t) && sys::tgkill(pid, t, sig) == 0 {
                signaled.push(t);
                new_threads = true;
            }
        }
        let n = NSLOTS.load(Ordering::Acquire) as usize;
        let parked = PARKED.load(Ordering::Acquire);
        let mut unparked: Vec<i32> = tasks
            .iter()
            .copied()
            .filter(|&t| !ours(t) && !(0..n).any(|i| SLOTS[i].tid.load(Ordering::Acquire) == t))
            .collect();
        if !unparked.is_empty() && sys::monotonic_ns() - start > 20_000_000 {
            // A thread that is exiting never runs a handler: wait it out, don't wait for it.
            unparked.retain(|&t| !matches!(thread_state(t), b'Z' | b'X' | b'?'));
        }
        if unparked.is_empty() && !new_threads && parked as usize == n {
            // Two consecutive quiet listings: no thread is being created behind our back.
            stable_rounds += 1;
            if stable_rounds >= 2 {
                return Ok(());
            }
            continue;
        }
        stable_rounds = 0;
        let waited_ms = ((sys::monotonic_ns() - start) / 1_000_000) as u64;
        if waited_ms > 100 {
            for &t in &unparked {
                let st = thread_state(t);
                if st == b't' || st == b'T' {
                    resume_all_internal(false);
                    return Err(format!(
                        "thread {t} is {} (state {}): a stopped or traced thread cannot be checkpointed",
                        if st == b't' {
                            "being traced"
                        } else {
                            "stopped"
                        },
                        st as char
                    ));
                }
            }
        }
        if waited_ms > timeout_ms {
            resume_all_internal(false);
            let states: Vec<String> = unparked
                .iter()
                .map(|&t| {
                    let blocked = blocked_set(t) & (1u64 << (sig - 1)) != 0;
                    format!(
                        "{t} ({}, state {})",
                        if blocked {
                            "blocks the checkpoint signal"
                        } else {
                            "not responding"
                        },
                        thread_state(t) as char
                    )
                })
                .collect();
            return Err(format!(
                "threads did not stop within {} ms: {} (checkpoint signal {sig})",
                timeout_ms,
                states.join(", ")
            ));
        }
        sys::futex_wait(&PARKED, parked, 5);
    }
}

fn resume_all_internal(bump_generation: bool) {
    SUSPENDING.store(false, Ordering::SeqCst);
    if bump_generation {
        ckpt_plugins::api::GENERATION.fetch_add(1, Ordering::AcqRel);
    }
    RELEASE.fetch_add(1, Ordering::AcqRel);
    sys::futex_wake(&RELEASE);
}

/// Releases every parked thread after a checkpoint.
pub fn resume_all() {
    resume_all_internal(true);
}

/// Marks the end of a suspension in a restarted process (threads are released by the restart
/// path itself, not through [`RELEASE`]).
pub fn end_suspension_after_restart() {
    SUSPENDING.store(false, Ordering::SeqCst);
    ckpt_plugins::api::GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// The slots of the last suspension, in order of parking.
pub fn parked_slots() -> &'static [Slot] {
    &SLOTS[..NSLOTS.load(Ordering::Acquire) as usize]
}
