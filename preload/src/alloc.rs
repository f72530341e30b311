//! The preload's private `#[global_allocator]`: every Rust allocation inside libckpt.so comes
//! from here, never from glibc's malloc, so the checkpoint thread can allocate while user threads
//! are frozen holding malloc's locks.
//!
//! Two arenas, both reserved once with `mmap(MAP_NORESERVE)`:
//! - the *heap*: size classes with free lists (blocks ≤ 64 KiB) on a bump region; larger blocks
//!   are their own mappings. A spin lock protects it; only preload code takes it, and user
//!   threads are never frozen inside preload code (wrapper exclusion), so it is always free
//!   when the checkpoint thread needs it.
//! - the *scratch* arena: while the image is being written ([`scratch_begin`]..[`scratch_off`]),
//!   every allocation is bumped from here and frees are ignored, so the heap's metadata and
//!   blocks do not change while their pages are being copied into the image. The scratch arena
//!   is recorded as empty memory in the image.
//!
//! Must never call malloc, take a lock user code can hold, or allocate in a signal handler.

use crate::sys;
use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const HEAP_RESERVE: u64 = 1 << 30;
const SCRATCH_RESERVE: u64 = 512 << 20;
const MAX_SMALL: usize = 64 << 10;
const NCLASSES: usize = 13; // 16 B .. 64 KiB

pub struct CkptAlloc;

static LOCK: AtomicBool = AtomicBool::new(false);
static mut HEAP_BASE: u64 = 0;
static mut HEAP_BUMP: u64 = 0;
static mut FREE: [u64; NCLASSES] = [0; NCLASSES];

static SCRATCH_BASE: AtomicU64 = AtomicU64::new(0);
static SCRATCH_BUMP: AtomicU64 = AtomicU64::new(0);
static SCRATCH_ON: AtomicBool = AtomicBool::new(false);

fn lock() {
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
}

fn unlock() {
    LOCK.store(false, Ordering::Release);
}

/// fork: no other thread may hold the heap lock while the address space is copied.
pub fn fork_prepare() {
    lock();
}

pub fn fork_parent() {
    unlock();
}

/// In the child only the forking thread exists; the lock it took in `fork_prepare` is ours.
pub fn fork_child() {
    unlock();
}

fn reserve(len: u64, name: &core::ffi::CStr) -> u64 {
    // SAFETY: anonymous private mapping at a kernel-chosen address.
    let p = unsafe {
        sys::syscall6(
            sys::SYS_MMAP,
            0,
            len as usize,
            (libc::PROT_READ | libc::PROT_WRITE) as usize,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE) as usize,
            usize::MAX,
            0,
        )
    };
    if p < 0 {
        sys::write_all(
            2,
            b"ckpt: cannot reserve memory for the preload allocator\n",
        );
        sys::exit_group(70);
    }
    // Name it for /proc/self/maps readers (best effort: needs CONFIG_ANON_VMA_NAME).
    // SAFETY: PR_SET_VMA_ANON_NAME only reads the NUL-terminated name.
    unsafe {
        sys::syscall6(
            sys::SYS_PRCTL,
            0x53564d41,
            0,
            p as usize,
            len as usize,
            name.as_ptr() as usize,
            0,
        )
    };
    p as u64
}

fn class_of(size: usize) -> usize {
    let s = size.max(16).next_power_of_two();
    s.trailing_zeros() as usize - 4
}

fn map_large(size: usize) -> *mut u8 {
    let len = (size + 4095) & !4095;
    // SAFETY: anonymous private mapping.
    let p = unsafe {
        sys::syscall6(
            sys::SYS_MMAP,
            0,
            len,
            (libc::PROT_READ | libc::PROT_WRITE) as usize,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as usize,
            usize::MAX,
            0,
        )
    };
    if p < 0 {
        core::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

fn scratch_alloc(layout: Layout) -> *mut u8 {
    let base = SCRATCH_BASE.load(Ordering::Relaxed);
    let align = layout.align().max(16) as u64;
    let mut cur = SCRATCH_BUMP.load(Ordering::Relaxed);
    loop {
        let start = (base + cur + align - 1) & !(align - 1);
        let end = start + layout.size() as u64;
        if end > base + SCRATCH_RESERVE {
            return core::ptr::null_mut();
        }
        match SCRATCH_BUMP.compare_exchange(cur, end - base, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return start as *mut u8,
            Err(c) => cur = c,
        }
    }
}

/// Reserves both arenas. Called once from the constructor, before any other thread exists.
pub fn init() {
    // SAFETY: single-threaded at this point (constructor).
    unsafe {
        if HEAP_BASE == 0 {
            HEAP_BASE = reserve(HEAP_RESERVE, c"ckpt-heap");
            HEAP_BUMP = HEAP_BASE;
        }
    }
    if SCRATCH_BASE.load(Ordering::Relaxed) == 0 {
        SCRATCH_BASE.store(reserve(SCRATCH_RESERVE, c"ckpt-scratch"), Ordering::Relaxed);
    }
}

/// The scratch arena's range, recorded as zero-filled memory in the image.
pub fn scratch_range() -> (u64, u64) {
    let b = SCRATCH_BASE.load(Ordering::Relaxed);
    (b, b + SCRATCH_RESERVE)
}

/// From now on allocations come from the scratch arena (checkpoint thread only).
pub fn scratch_begin() {
    SCRATCH_BUMP.store(0, Ordering::Relaxed);
    SCRATCH_ON.store(true, Ordering::SeqCst);
}

/// Back to the heap. Scratch blocks stay readable until [`scratch_release`], so results can be
/// copied out of them first.
pub fn scratch_off() {
    SCRATCH_ON.store(false, Ordering::SeqCst);
}

/// Returns the scratch pages to the kernel (they read as zero afterwards).
pub fn scratch_release() {
    let (b, _) = scratch_range();
    let used = (SCRATCH_BUMP.swap(0, Ordering::Relaxed) + 4095) & !4095;
    if used > 0 {
        // SAFETY: nothing references scratch memory once the writer's results were copied.
        unsafe {
            sys::syscall3(
                sys::SYS_MADVISE,
                b as usize,
                used as usize,
                libc::MADV_DONTNEED as usize,
            )
        };
    }
}

unsafe impl GlobalAlloc for CkptAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if SCRATCH_ON.load(Ordering::Relaxed) {
            let p = scratch_alloc(layout);
            if !p.is_null() {
                return p;
            }
            // Scratch exhausted: a private mapping (leaked if freed while writing) is better than
            // aborting the program.
            return map_large(layout.size().max(layout.align()));
        }
        let size = layout.size().max(layout.align());
        if size > MAX_SMALL || layout.align() > 4096 {
            return map_large(size);
        }
        let c = class_of(size);
        let csize = 16u64 << c;
        lock();
        // SAFETY: the heap statics are only touched under LOCK.
        let p = unsafe {
            if HEAP_BASE == 0 {
                unlock();
                init();
                lock();
            }
            let head = FREE[c];
            if head != 0 {
                FREE[c] = *(head as *const u64);
                head
            } else {
                // Blocks are naturally aligned to their class size (up to a page).
                let align = csize.min(4096);
                let start = (HEAP_BUMP + align - 1) & !(align - 1);
                if start + csize > HEAP_BASE + HEAP_RESERVE {
                    0
                } else {
                    HEAP_BUMP = start + csize;
                    start
                }
            }
        };
        unlock();
        p as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let p = ptr as u64;
        let (sb, se) = scratch_range();
        // While the image is written the heap must not change: frees are dropped (a leak of
        // whatever the writer releases, never a corrupted free list in the image).
        if p >= sb && p < se {
            // Freeing the newest scratch block gives its space back (Vec growth, temporaries).
            let end = p - sb + layout.size() as u64;
            let _ =
                SCRATCH_BUMP.compare_exchange(end, p - sb, Ordering::Relaxed, Ordering::Relaxed);
            return;
        }
        if SCRATCH_ON.load(Ordering::Relaxed) {
            return;
        }
        let size = layout.size().max(layout.align());
        if size > MAX_SMALL || layout.align() > 4096 {
            let len = (size + 4095) & !4095;
            // SAFETY: large blocks are whole mappings made by map_large.
            unsafe { sys::syscall2(sys::SYS_MUNMAP, p as usize, len) };
            return;
        }
        let c = class_of(size);
        lock();
        // SAFETY: the block is ours and at least 16 bytes; the list is protected by LOCK.
        unsafe {
            *(p as *mut u64) = FREE[c];
            FREE[c] = p;
        }
        unlock();
    }
}
