//! Everything architecture-specific (x86_64 Linux) lives here and only here: raw system calls,
//! the ELF entry point, the stack switch, the final jump into the restart entry, the kernel's
//! `struct stat` layout, and the `mem*`/`strlen` symbols LLVM emits calls to.
//!
//! Runs with no libc, no TLS, no allocator. Nothing here may touch `%fs`, use a stack it did not
//! set up itself, or call anything but the kernel. An aarch64 port replaces this file only.

use core::arch::{asm, naked_asm};

pub const SYS_READ: usize = 0;
pub const SYS_WRITE: usize = 1;
pub const SYS_CLOSE: usize = 3;
pub const SYS_FSTAT: usize = 5;
pub const SYS_POLL: usize = 7;
pub const SYS_MMAP: usize = 9;
pub const SYS_MPROTECT: usize = 10;
pub const SYS_MUNMAP: usize = 11;
pub const SYS_MREMAP: usize = 25;
pub const SYS_PRCTL: usize = 157;
pub const SYS_EXIT_GROUP: usize = 231;
pub const SYS_OPENAT: usize = 257;

pub const AT_FDCWD: isize = -100;
pub const O_RDONLY: usize = 0;
pub const O_RDWR: usize = 2;
pub const O_CLOEXEC: usize = 0o2_000_000;

pub const PROT_NONE: u32 = 0;
pub const PROT_READ: u32 = 1;
pub const PROT_WRITE: u32 = 2;
pub const PROT_EXEC: u32 = 4;

pub const MAP_SHARED: usize = 0x01;
pub const MAP_PRIVATE: usize = 0x02;
pub const MAP_ANONYMOUS: usize = 0x20;
pub const MAP_GROWSDOWN: usize = 0x100;
pub const MAP_NORESERVE: usize = 0x4000;
pub const MAP_FIXED_NOREPLACE: usize = 0x10_0000;

pub const MREMAP_MAYMOVE: usize = 1;
pub const MREMAP_FIXED: usize = 2;

pub const PR_SET_MM: usize = 35;
pub const PR_SET_MM_MAP: usize = 14;

pub const EINTR: isize = 4;
pub const EAGAIN: isize = 11;
pub const POLLIN: i16 = 1;

/// The x86_64 kernel `struct stat` (what `fstat(2)` fills in).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Stat {
    pub st_dev: u64,
    pub st_ino: u64,
    pub st_nlink: u64,
    pub st_mode: u32,
    pub st_uid: u32,
    pub st_gid: u32,
    pub _pad0: u32,
    pub st_rdev: u64,
    pub st_size: i64,
    pub st_blksize: i64,
    pub st_blocks: i64,
    pub st_atime: i64,
    pub st_atime_nsec: i64,
    pub st_mtime: i64,
    pub st_mtime_nsec: i64,
    pub st_ctime: i64,
    pub st_ctime_nsec: i64,
    pub _unused: [i64; 3],
}

/// # Safety
/// The arguments must be valid for system call `n` (pointers the kernel will dereference must
/// be valid for the access the call makes).
#[inline(always)]
pub unsafe fn syscall6(
    n: usize,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
    a6: usize,
) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the arguments; `syscall` clobbers only rax, rcx and r11.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a1, in("rsi") a2, in("rdx") a3,
             in("r10") a4, in("r8") a5, in("r9") a6,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// `read(2)` into raw memory. Returns bytes read or `-errno`.
///
/// # Safety
/// `buf..buf+len` must be writable memory that nothing else references.
pub unsafe fn read_raw(fd: i32, buf: *mut u8, len: usize) -> isize {
    // SAFETY: the caller guarantees the buffer is writable.
    unsafe { syscall6(SYS_READ, fd as usize, buf as usize, len, 0, 0, 0) }
}

/// `read(2)` into a slice. Returns bytes read or `-errno`.
pub fn read(fd: i32, buf: &mut [u8]) -> isize {
    // SAFETY: the slice is valid writable memory of the given length.
    unsafe { read_raw(fd, buf.as_mut_ptr(), buf.len()) }
}

/// `write(2)`. Returns bytes written or `-errno`.
pub fn write(fd: i32, buf: &[u8]) -> isize {
    // SAFETY: the slice is valid readable memory of the given length.
    unsafe {
        syscall6(
            SYS_WRITE,
            fd as usize,
            buf.as_ptr() as usize,
            buf.len(),
            0,
            0,
            0,
        )
    }
}

/// `openat(AT_FDCWD, path, flags)`. `path` must end with a NUL byte. Returns fd or `-errno`.
pub fn open(path: &[u8], flags: usize) -> isize {
    if path.last() != Some(&0) {
        return -22; // EINVAL: never hand the kernel an unterminated string
    }
    // SAFETY: `path` is a NUL-terminated string in valid memory.
    unsafe {
        syscall6(
            SYS_OPENAT,
            AT_FDCWD as usize,
            path.as_ptr() as usize,
            flags,
            0,
            0,
            0,
        )
    }
}

/// Wait until `fd` is readable (for a stream handed over in non-blocking mode).
pub fn poll_in(fd: i32) -> isize {
    #[repr(C)]
    struct PollFd {
        fd: i32,
        events: i16,
        revents: i16,
    }
    let mut p = PollFd {
        fd,
        events: POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; timeout -1 = wait.
    unsafe {
        syscall6(
            SYS_POLL,
            &mut p as *mut PollFd as usize,
            1,
            -1isize as usize,
            0,
            0,
            0,
        )
    }
}

pub fn close(fd: i32) -> isize {
    // SAFETY: closing a descriptor has no memory-safety effect on this program.
    unsafe { syscall6(SYS_CLOSE, fd as usize, 0, 0, 0, 0, 0) }
}

pub fn fstat(fd: i32, st: &mut Stat) -> isize {
    // SAFETY: `st` is a valid, writable `struct stat`.
    unsafe { syscall6(SYS_FSTAT, fd as usize, st as *mut Stat as usize, 0, 0, 0, 0) }
}

/// `mmap(2)`. Returns the address or `-errno`.
///
/// # Safety
/// Must not replace memory still referenced by this program (use `MAP_FIXED_NOREPLACE`).
pub unsafe fn mmap(addr: u64, len: u64, prot: u32, flags: usize, fd: i32, off: u64) -> isize {
    // SAFETY: the caller guarantees no live memory is replaced.
    unsafe {
        syscall6(
            SYS_MMAP,
            addr as usize,
            len as usize,
            prot as usize,
            flags,
            fd as isize as usize,
            off as usize,
        )
    }
}

/// # Safety
/// Nothing still in use (code, stack, data) may live in the range.
pub unsafe fn munmap(addr: u64, len: u64) -> isize {
    // SAFETY: the caller guarantees the range is unused.
    unsafe { syscall6(SYS_MUNMAP, addr as usize, len as usize, 0, 0, 0, 0) }
}

/// # Safety
/// Removing access from memory still in use faults later.
pub unsafe fn mprotect(addr: u64, len: u64, prot: u32) -> isize {
    // SAFETY: the caller guarantees the range may take this protection.
    unsafe {
        syscall6(
            SYS_MPROTECT,
            addr as usize,
            len as usize,
            prot as usize,
            0,
            0,
            0,
        )
    }
}

/// `mremap(old, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, new)`: move a whole mapping.
///
/// # Safety
/// Whatever was at `new..new+len` is unmapped; nothing there may still be in use.
pub unsafe fn mremap_fixed(old: u64, len: u64, new: u64) -> isize {
    // SAFETY: the caller guarantees the destination holds nothing in use.
    unsafe {
        syscall6(
            SYS_MREMAP,
            old as usize,
            len as usize,
            len as usize,
            MREMAP_MAYMOVE | MREMAP_FIXED,
            new as usize,
            0,
        )
    }
}

/// `prctl(PR_SET_MM, PR_SET_MM_MAP, map, size)`.
///
/// # Safety
/// `map` must point to `size` readable bytes laid out as the kernel's `struct prctl_mm_map`.
pub unsafe fn prctl_set_mm_map(map: *const u8, size: usize) -> isize {
    // SAFETY: the caller guarantees the structure is valid.
    unsafe {
        syscall6(
            SYS_PRCTL,
            PR_SET_MM,
            PR_SET_MM_MAP,
            map as usize,
            size,
            0,
            0,
        )
    }
}

pub fn exit_group(code: i32) -> ! {
    // SAFETY: exit_group never returns and touches no memory of ours.
    unsafe {
        asm!("syscall", in("rax") SYS_EXIT_GROUP, in("rdi") code as isize, options(noreturn, nostack));
    }
}

/// ELF entry point. At entry `%rsp` points at argc (then argv, envp, auxv); there is no return
/// address. Clear `%rbp` (end of the frame chain) and hand the initial stack pointer to Rust.
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _start() -> ! {
    naked_asm!(
        "xor ebp, ebp",
        "mov rdi, rsp",
        "and rsp, -16",
        "call {entry}",
        "ud2",
        entry = sym crate::rust_start,
    )
}

/// Continue on another stack: `f(arg)` with `%rsp` = `top` (rounded down to 16 bytes).
///
/// # Safety
/// `top` must be the top of a mapped, writable stack; nothing on the current stack may be used
/// afterwards (this never returns to it).
#[unsafe(naked)]
pub unsafe extern "C" fn run_on_stack(
    arg: *mut u8,
    top: u64,
    f: unsafe extern "C" fn(*mut u8) -> !,
) -> ! {
    naked_asm!(
        "mov rsp, rsi",
        "and rsp, -16",
        "xor ebp, ebp",
        "call rdx",
        "ud2"
    )
}

/// Jump into the restart entry: `entry(entry_arg, args)` on a fresh 16-byte aligned stack at
/// `top` (the ABI's alignment at the call instruction).
///
/// # Safety
/// `entry` must be the address of a function with the `RestartEntry` signature; `args` must stay
/// valid for as long as the entry uses it; `top` as for [`run_on_stack`].
#[unsafe(naked)]
pub unsafe extern "C" fn jump_to_entry(entry_arg: u64, args: *const u8, entry: u64, top: u64) -> ! {
    naked_asm!(
        "mov rsp, rcx",
        "and rsp, -16",
        "xor ebp, ebp",
        "call rdx",
        "ud2"
    )
}

// ---- symbols LLVM expects from libc ------------------------------------------------------------
// compiler_builtins does not export these on *-linux-gnu. `rep movsb/stosb` keeps LLVM from
// recognizing the bodies as memcpy/memset and turning them into recursive calls.

/// # Safety
/// Standard C `memcpy` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid and do not overlap.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// Standard C `memmove` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // SAFETY: forward copy never reads a byte it already overwrote here.
        unsafe { memcpy(dst, src, n) }
    } else {
        // SAFETY: backward copy for an overlapping destination above the source; DF is restored.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _, inout("rdi") dst.wrapping_add(n).wrapping_sub(1) => _,
                 inout("rsi") src.wrapping_add(n).wrapping_sub(1) => _, options(nostack));
        }
        dst
    }
}

/// # Safety
/// Standard C `memset` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range is writable.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// Standard C `memcmp` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller guarantees both ranges are readable; volatile keeps this a loop.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// # Safety
/// Standard C `bcmp` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// # Safety
/// `s` must be a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: the caller guarantees a terminating NUL; volatile keeps LLVM from calling strlen.
    while unsafe { core::ptr::read_volatile(s.add(n)) } != 0 {
        n += 1;
    }
    n
}

/// The precompiled `core` references this from its unwind tables; non-LTO (debug) links need
/// the symbol even though panic=abort never calls it.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}
