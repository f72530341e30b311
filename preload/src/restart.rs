//! The in-process half of restart.
//!
//! `ckpt-restorer` maps the image back and calls [`ckpt_restart_entry`] on its own stack with the
//! FS base still zero. The entry gives the main thread its TCB back, recreates every other user
//! thread and the checkpoint thread with raw `clone` (no glibc: its locks may be held by frozen
//! threads), and waits. The checkpoint thread resumes inside `sys::ckpt_point`, does the restart
//! work that needs Rust and libc (signal handlers, cwd, plugins: files…, the coordinator) and then
//! releases everybody; each user thread leaves through `rt_sigreturn` on the signal frame the
//! checkpoint signal left on its stack, exactly where it was interrupted.
//!
//! Until the FS base is set the entry must not touch TLS or call any libc function.

use crate::cell::Owned;
use crate::{glibc, sys, threads};
use ckpt_format::raw::RestartArgs;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Copy of the restorer's arguments (the original lives in the zone, which the main thread
/// unmaps on its way out).
pub static ARGS: Owned<RestartArgs> = Owned::new(RestartArgs {
    zone_start: 0,
    zone_len: 0,
    coord_host: [0; 256],
    coord_port: 0,
    _pad: [0; 2],
    outer_pid: 0,
    ckpt_dir: [0; 4096],
    flags: 0,
    outer_proc: 0,
    _pad2: 0,
});

/// Set by the checkpoint thread when the restart work is done (futex word).
static RESTART_DONE: AtomicU32 = AtomicU32::new(0);
/// Index in `threads::SLOTS` of the main thread at checkpoint time.
pub static MAIN_SLOT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The checkpoint thread's own TCB and kernel registrations, recorded when it starts.
pub struct SelfInfo {
    pub tid: i32,
    pub fs_base: u64,
    pub tid_addr: u64,
    pub robust_head: u64,
    pub robust_len: u64,
}

pub static CKPT_THREAD: Owned<SelfInfo> = Owned::new(SelfInfo {
    tid: 0,
    fs_base: 0,
    tid_addr: 0,
    robust_head: 0,
    robust_len: 0,
});

/// Records the calling (checkpoint) thread's registrations.
pub fn record_ckpt_thread() {
    let (h, l) = sys::get_robust_list();
    // SAFETY: written once by the checkpoint thread itself before any checkpoint.
    unsafe {
        *CKPT_THREAD.get() = SelfInfo {
            tid: sys::gettid(),
            fs_base: sys::get_fs_base(),
            tid_addr: sys::get_tid_address(),
            robust_head: h,
            robust_len: l,
        };
    }
}

/// Capabilities of the main thread at checkpoint time (restored in every thread when the
/// restart ran in its own user namespace, where the restorer got extra ones to pick tids).
pub static CAPS: Owned<sys::Caps> = Owned::new([0; 6]);

/// True when the process was restarted in its own pid namespace (threads keep their tids).
fn same_tids() -> bool {
    // SAFETY: ARGS is written once by the entry before any thread is created.
    unsafe { (*ARGS.as_ptr()).outer_pid != 0 }
}

/// Creates a thread, with its old tid when the restart runs in its own pid namespace.
///
/// # Safety
/// As `sys::clone_thread`.
unsafe fn spawn(start: u64, stack: u64, tls: u64, tid_addr: u64, arg: u64, old_tid: i32) -> isize {
    if same_tids() {
        // SAFETY: forwarded contract.
        let r = unsafe { sys::clone_thread(start, stack, tls, tid_addr, arg, old_tid) };
        if r >= 0 {
            return r;
        }
    }
    // SAFETY: forwarded contract.
    unsafe { sys::clone_thread(start, stack, tls, tid_addr, arg, 0) }
}

/// Gives the calling thread back the capabilities the program had.
fn restore_caps() {
    if same_tids() {
        // SAFETY: CAPS is only written at checkpoint time, with all threads stopped.
        sys::capset_self(unsafe { &*CAPS.as_ptr() });
    }
}

fn wait_done() {
    while RESTART_DONE.load(Ordering::Acquire) == 0 {
        sys::futex_wait(&RESTART_DONE, 0, 1000);
    }
}

/// Entry of every recreated user thread except the main one.
extern "C" fn user_thread_start(slot: u64) -> ! {
    let s = &threads::SLOTS[slot as usize];
    let fs = s.fs_base.load(Ordering::Relaxed);
    // The kernel already set the FS base (CLONE_SETTLS) and the clear-tid address.
    glibc::fix_thread(
        fs,
        0,
        s.robust_head.load(Ordering::Relaxed),
        s.robust_len.load(Ordering::Relaxed),
    );
    sys::set_thread_name(&threads::slot_name(s));
    // Our new kernel tid, for the pids plugin's table (`vtid` keeps the program's).
    s.tid.store(sys::gettid(), Ordering::Release);
    wait_done();
    restore_caps();
    threads::requeue_private_pending(s);
    // SAFETY: uctx is this thread's signal frame on its restored stack.
    unsafe { sys::unmap_and_sigreturn(0, 0, s.uctx.load(Ordering::Relaxed)) }
}

/// Called by the restorer once every region is back. Never returns.
///
/// # Safety
/// Only `ckpt-restorer` calls this, in a process whose memory is the image's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ckpt_restart_entry(_arg: u64, args: *const RestartArgs) -> ! {
    // Nothing may be delivered until each thread's own mask comes back with rt_sigreturn
    // (re-queued pending signals, handlers being restored); recreated threads inherit this.
    sys::sigprocmask(sys::SIG_SETMASK, Some(!0));
    let main = MAIN_SLOT.load(Ordering::Relaxed);
    let slots = threads::parked_slots();
    if main >= slots.len() {
        sys::write_all(2, b"ckpt: image has no main thread context\n");
        sys::exit_group(75);
    }
    let m = &slots[main];
    let fs = m.fs_base.load(Ordering::Relaxed);
    // SAFETY: fs is the main thread's TCB, restored with the rest of memory.
    unsafe { sys::set_fs_base(fs) };
    // From here on TLS works (it is the main thread's); still no libc until the end.
    // SAFETY: args points into the zone, valid until we unmap it; ARGS is ours.
    unsafe { core::ptr::copy_nonoverlapping(args, ARGS.as_ptr(), 1) };
    RESTART_DONE.store(0, Ordering::Release);
    glibc::fix_thread(
        fs,
        m.tid_addr.load(Ordering::Relaxed),
        m.robust_head.load(Ordering::Relaxed),
        m.robust_len.load(Ordering::Relaxed),
    );
    for (i, s) in slots.iter().enumerate() {
        if i == main {
            continue;
        }
        let stack = (s.uctx.load(Ordering::Relaxed) - 8192) & !15;
        // SAFETY: the thread's own stack lies below its signal frame; its TCB is restored.
        let r = unsafe {
            spawn(
                user_thread_start as *const () as u64,
                stack,
                s.fs_base.load(Ordering::Relaxed),
                s.tid_addr.load(Ordering::Relaxed),
                i as u64,
                s.tid.load(Ordering::Relaxed),
            )
        };
        if r < 0 {
            sys::write_all(2, b"ckpt: cannot recreate a thread (clone failed)\n");
            sys::exit_group(75);
        }
    }
    // SAFETY: CKPT_THREAD and CKPT_POINT_RSP were recorded before the image was written.
    let r = unsafe {
        let ck = &*CKPT_THREAD.as_ptr();
        spawn(
            sys::ckpt_point_resume as *const () as u64,
            sys::CKPT_POINT_RSP & !15,
            ck.fs_base,
            ck.tid_addr,
            0,
            ck.tid,
        )
    };
    if r < 0 {
        sys::write_all(
            2,
            b"ckpt: cannot recreate the checkpoint thread (clone failed)\n",
        );
        sys::exit_group(75);
    }
    sys::set_thread_name(&threads::slot_name(m));
    m.tid.store(sys::gettid(), Ordering::Release);
    wait_done();
    restore_caps();
    threads::requeue_private_pending(m);
    // SAFETY: ARGS describes the restorer zone we are running on; uctx is the main thread's
    // signal frame.
    unsafe {
        let a = &*ARGS.as_ptr();
        sys::unmap_and_sigreturn(a.zone_start, a.zone_len, m.uctx.load(Ordering::Relaxed))
    }
}

/// Lets every recreated thread go back to the program.
pub fn release_threads() {
    RESTART_DONE.store(1, Ordering::Release);
    sys::futex_wake(&RESTART_DONE);
}

/// NUL-terminated byte array → String.
pub fn c_field(b: &[u8]) -> String {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..n]).into_owned()
}
