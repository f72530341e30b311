//! What we must know about glibc's private per-thread state to bring a thread back:
//! where `struct pthread` caches the kernel tid, and how glibc registered rseq.
//!
//! Both are discovered at startup by probing the running glibc (never assumed from a version
//! number), and used at restart before the thread runs any glibc code.

use crate::sys;
use core::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};

/// Offset of `tid` in glibc's `struct pthread` (which starts at the FS base on x86_64).
static TID_OFFSET: AtomicUsize = AtomicUsize::new(usize::MAX);
/// `__rseq_offset` (from the thread pointer) and the length glibc registered with (0 = none).
static RSEQ_OFFSET: AtomicI64 = AtomicI64::new(0);
static RSEQ_LEN: AtomicU32 = AtomicU32::new(0);

/// Probes the running glibc (constructor, main thread).
pub fn probe() {
    let tp = sys::get_fs_base();
    let tid = sys::gettid();
    // glibc ≥ 2.11 keeps tid at 0x2d0 on x86_64; verify, else search the first 2 KiB.
    let mut off = usize::MAX;
    // SAFETY: the TCB (struct pthread) is at least 2 KiB of readable memory at the FS base.
    unsafe {
        if *((tp + 0x2d0) as *const i32) == tid {
            off = 0x2d0;
        } else {
            for o in (0..2048).step_by(4) {
                if *((tp + o as u64) as *const i32) == tid {
                    off = o;
                    break;
                }
            }
        }
    }
    TID_OFFSET.store(off, Ordering::Relaxed);

    // SAFETY: dlsym with NUL-terminated names; the symbols are glibc data objects.
    let (po, ps) = unsafe {
        (
            libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()) as *const i64,
            libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()) as *const u32,
        )
    };
    if po.is_null() || ps.is_null() {
        return;
    }
    // SAFETY: the symbols exist, so they point to glibc's values.
    let (offset, size) = unsafe { (*po, *ps) };
    if size == 0 {
        return;
    }
    let area = (tp as i64 + offset) as u64;
    // The kernel answers EBUSY to a second registration with the same (area, len, sig): that is
    // how we learn the length glibc used (2.36 reports __rseq_size 20 but registers 32).
    for len in [32u32, size, 64, 20] {
        if sys::rseq_register(area, len) == -(libc::EBUSY as isize) {
            RSEQ_OFFSET.store(offset, Ordering::Relaxed);
            RSEQ_LEN.store(len, Ordering::Relaxed);
            return;
        }
    }
}

/// In a child made by a raw `clone()` (which, unlike `fork`, leaves glibc's cached tid at the
/// parent's): cache the child's own tid, so `raise`, `pthread_kill(pthread_self())` and our
/// thread bookkeeping address the child.
pub fn refresh_cached_tid() {
    let off = TID_OFFSET.load(Ordering::Relaxed);
    if off != usize::MAX {
        // SAFETY: the calling thread's TCB is at its FS base; off was validated at startup.
        unsafe { *((sys::get_fs_base() + off as u64) as *mut i32) = sys::gettid() };
    }
}

/// Restores the kernel-side and glibc-cached state of the calling (recreated) thread whose TCB
/// is at `fs_base`. No glibc code may run in the thread before this.
pub fn fix_thread(fs_base: u64, tid_addr: u64, robust_head: u64, robust_len: u64) {
    let tid = sys::gettid();
    let off = TID_OFFSET.load(Ordering::Relaxed);
    if off != usize::MAX {
        // SAFETY: the TCB is restored memory at fs_base; off was validated at startup.
        unsafe { *((fs_base + off as u64) as *mut i32) = tid };
    }
    if tid_addr != 0 {
        sys::set_tid_address(tid_addr);
    }
    sys::set_robust_list(robust_head, robust_len);
    let len = RSEQ_LEN.load(Ordering::Relaxed);
    if len != 0 {
        let area = (fs_base as i64 + RSEQ_OFFSET.load(Ordering::Relaxed)) as u64;
        // SAFETY: struct rseq { u32 cpu_id_start; u32 cpu_id; u64 rseq_cs; ... }: clear the
        // critical-section pointer (no thread is inside one: signal delivery aborts them).
        unsafe { *((area + 8) as *mut u64) = 0 };
        sys::rseq_register(area, len);
    }
}
