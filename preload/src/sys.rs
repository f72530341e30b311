//! Raw Linux x86_64 system calls and every piece of architecture-specific code of the preload:
//! FS base, thread creation with `clone`, the checkpoint-thread context switch and the final
//! `rt_sigreturn` into a saved signal frame.
//!
//! Nothing here touches errno, TLS, locks or the allocator: these functions are called from the
//! checkpoint signal handler and from the restart entry before the FS base is valid.
#![allow(dead_code)]

use core::arch::{asm, naked_asm};

pub const SYS_READ: usize = 0;
pub const SYS_WRITE: usize = 1;
pub const SYS_OPEN: usize = 2;
pub const SYS_CLOSE: usize = 3;
pub const SYS_MMAP: usize = 9;
pub const SYS_MPROTECT: usize = 10;
pub const SYS_MUNMAP: usize = 11;
pub const SYS_BRK: usize = 12;
pub const SYS_RT_SIGACTION: usize = 13;
pub const SYS_RT_SIGPROCMASK: usize = 14;
pub const SYS_RT_SIGRETURN: usize = 15;
pub const SYS_RT_SIGTIMEDWAIT: usize = 128;
pub const SYS_RT_TGSIGQUEUEINFO: usize = 297;
pub const SYS_MADVISE: usize = 28;
pub const SYS_GETPID: usize = 39;
pub const SYS_CLONE: usize = 56;
pub const SYS_KILL: usize = 62;
pub const SYS_PRCTL: usize = 157;
pub const SYS_ARCH_PRCTL: usize = 158;
pub const SYS_GETTID: usize = 186;
pub const SYS_FUTEX: usize = 202;
pub const SYS_GETDENTS64: usize = 217;
pub const SYS_SET_TID_ADDRESS: usize = 218;
pub const SYS_EXIT_GROUP: usize = 231;
pub const SYS_TGKILL: usize = 234;
pub const SYS_SET_ROBUST_LIST: usize = 273;
pub const SYS_GET_ROBUST_LIST: usize = 274;
pub const SYS_RSEQ: usize = 334;
pub const SYS_CLONE3: usize = 435;
pub const SYS_CAPGET: usize = 125;
pub const SYS_CAPSET: usize = 126;

const ARCH_SET_FS: usize = 0x1002;
const ARCH_GET_FS: usize = 0x1003;

#[inline(always)]
pub unsafe fn syscall0(n: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller upholds the syscall's contract; rcx/r11 are clobbered by `syscall`.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

#[inline(always)]
pub unsafe fn syscall1(n: usize, a1: usize) -> isize {
    let ret: isize;
    // SAFETY: as syscall0.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a1,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

#[inline(always)]
pub unsafe fn syscall2(n: usize, a1: usize, a2: usize) -> isize {
    let ret: isize;
    // SAFETY: as syscall0.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a1, in("rsi") a2,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

#[inline(always)]
pub unsafe fn syscall3(n: usize, a1: usize, a2: usize, a3: usize) -> isize {
    let ret: isize;
    // SAFETY: as syscall0.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a1, in("rsi") a2,
             in("rdx") a3, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

#[inline(always)]
pub unsafe fn syscall4(n: usize, a1: usize, a2: usize, a3: usize, a4: usize) -> isize {
    let ret: isize;
    // SAFETY: as syscall0.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a1, in("rsi") a2,
             in("rdx") a3, in("r10") a4, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

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
    // SAFETY: as syscall0.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a1, in("rsi") a2,
             in("rdx") a3, in("r10") a4, in("r8") a5, in("r9") a6,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { syscall0(SYS_GETTID) as i32 }
}

pub fn getpid() -> i32 {
    // SAFETY: getpid has no arguments and cannot fail.
    unsafe { syscall0(SYS_GETPID) as i32 }
}

pub fn tgkill(pid: i32, tid: i32, sig: i32) -> isize {
    // SAFETY: sends a signal; no memory is passed.
    unsafe { syscall3(SYS_TGKILL, pid as usize, tid as usize, sig as usize) }
}

pub fn write_all(fd: i32, mut b: &[u8]) {
    while !b.is_empty() {
        // SAFETY: the buffer is valid for b.len() bytes.
        let r = unsafe { syscall3(SYS_WRITE, fd as usize, b.as_ptr() as usize, b.len()) };
        if r == -4 {
            continue;
        }
        if r <= 0 {
            return;
        }
        b = &b[r as usize..];
    }
}

pub fn exit_group(code: i32) -> ! {
    // SAFETY: exit_group never returns.
    unsafe {
        asm!("syscall", in("rax") SYS_EXIT_GROUP, in("rdi") code as usize,
             options(noreturn, nostack));
    }
}

pub fn get_fs_base() -> u64 {
    let mut v: u64 = 0;
    // SAFETY: ARCH_GET_FS writes one u64 to the pointer we pass.
    unsafe { syscall2(SYS_ARCH_PRCTL, ARCH_GET_FS, &mut v as *mut u64 as usize) };
    v
}

/// # Safety
/// `base` must be the TCB of the calling thread: every TLS access after this uses it.
pub unsafe fn set_fs_base(base: u64) {
    // SAFETY: caller guarantees `base` is a valid TCB.
    unsafe { syscall2(SYS_ARCH_PRCTL, ARCH_SET_FS, base as usize) };
}

pub const FUTEX_WAIT_PRIVATE: usize = 128;
pub const FUTEX_WAKE_PRIVATE: usize = 129;

#[repr(C)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: i64,
}

/// Waits while `*addr == val`, at most `timeout_ms` (0 = forever). Returns the raw result.
pub fn futex_wait(addr: &core::sync::atomic::AtomicU32, val: u32, timeout_ms: u64) -> isize {
    let ts = Timespec {
        sec: (timeout_ms / 1000) as i64,
        nsec: ((timeout_ms % 1000) * 1_000_000) as i64,
    };
    let tsp = if timeout_ms == 0 {
        0
    } else {
        &ts as *const Timespec as usize
    };
    // SAFETY: addr is a valid aligned u32 for the lifetime of the call; ts outlives it.
    unsafe {
        syscall4(
            SYS_FUTEX,
            addr.as_ptr() as usize,
            FUTEX_WAIT_PRIVATE,
            val as usize,
            tsp,
        )
    }
}

pub fn futex_wake(addr: &core::sync::atomic::AtomicU32) {
    // SAFETY: waking waiters on a valid address has no memory effects.
    unsafe {
        syscall3(
            SYS_FUTEX,
            addr.as_ptr() as usize,
            FUTEX_WAKE_PRIVATE,
            i32::MAX as usize,
        )
    };
}

/// The kernel's `struct sigaction` for `rt_sigaction` (not glibc's).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct KSigaction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

pub const SA_RESTORER: u64 = 0x0400_0000;

/// # Safety
/// `new` (if any) must describe a valid handler in this address space.
pub unsafe fn rt_sigaction(
    sig: i32,
    new: Option<&KSigaction>,
    old: Option<&mut KSigaction>,
) -> isize {
    let n = new.map_or(0, |p| p as *const KSigaction as usize);
    let o = old.map_or(0, |p| p as *mut KSigaction as usize);
    // SAFETY: pointers are valid or null; sigsetsize is 8 on x86_64.
    unsafe { syscall4(SYS_RT_SIGACTION, sig as usize, n, o, 8) }
}

pub const SIG_BLOCK: usize = 0;
pub const SIG_UNBLOCK: usize = 1;
pub const SIG_SETMASK: usize = 2;

pub fn sigprocmask(how: usize, set: Option<u64>) -> u64 {
    let mut old: u64 = 0;
    let s = set.unwrap_or(0);
    let sp = if set.is_some() {
        &s as *const u64 as usize
    } else {
        0
    };
    // SAFETY: both pointers are valid for 8 bytes.
    unsafe {
        syscall4(
            SYS_RT_SIGPROCMASK,
            how,
            sp,
            &mut old as *mut u64 as usize,
            8,
        )
    };
    old
}

/// (head, len) of the calling thread's robust futex list.
pub fn get_robust_list() -> (u64, u64) {
    let mut head: u64 = 0;
    let mut len: u64 = 0;
    // SAFETY: pid 0 = self; both out-pointers are valid.
    unsafe {
        syscall3(
            SYS_GET_ROBUST_LIST,
            0,
            &mut head as *mut u64 as usize,
            &mut len as *mut u64 as usize,
        )
    };
    (head, len)
}

pub fn set_robust_list(head: u64, len: u64) {
    if head != 0 {
        // SAFETY: the list head lives in restored memory (glibc's struct pthread).
        unsafe { syscall2(SYS_SET_ROBUST_LIST, head as usize, len as usize) };
    }
}

const PR_GET_TID_ADDRESS: usize = 40;
const PR_SET_NAME: usize = 15;
const PR_GET_NAME: usize = 16;

/// The calling thread's name (comm), 16 bytes NUL-padded.
pub fn get_thread_name() -> [u8; 16] {
    let mut b = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes.
    unsafe { syscall2(SYS_PRCTL, PR_GET_NAME, b.as_mut_ptr() as usize) };
    b
}

pub fn set_thread_name(name: &[u8; 16]) {
    let mut b = *name;
    b[15] = 0;
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { syscall2(SYS_PRCTL, PR_SET_NAME, b.as_ptr() as usize) };
}

/// Dequeues one pending signal of `set` without waiting; returns its number (0 = none) and
/// fills `info` (128 bytes).
pub fn take_pending(set: u64, info: &mut [u8; 128]) -> i32 {
    let ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: set, info and ts are valid for the kernel's reads and writes.
    let r = unsafe {
        syscall4(
            SYS_RT_SIGTIMEDWAIT,
            &set as *const u64 as usize,
            info.as_mut_ptr() as usize,
            &ts as *const Timespec as usize,
            8,
        )
    };
    if r > 0 { r as i32 } else { 0 }
}

/// Queues `sig` with `info` to thread `tid` of this process.
pub fn requeue(pid: i32, tid: i32, sig: i32, info: &[u8; 128]) {
    // SAFETY: info is a full siginfo; sending to our own process is always permitted.
    unsafe {
        syscall4(
            SYS_RT_TGSIGQUEUEINFO,
            pid as usize,
            tid as usize,
            sig as usize,
            info.as_ptr() as usize,
        )
    };
}

/// The calling thread's clear-child-tid address (glibc: `&pd->tid`).
pub fn get_tid_address() -> u64 {
    let mut v: u64 = 0;
    // SAFETY: PR_GET_TID_ADDRESS stores one pointer into v.
    unsafe { syscall2(SYS_PRCTL, PR_GET_TID_ADDRESS, &mut v as *mut u64 as usize) };
    v
}

pub fn set_tid_address(addr: u64) {
    // SAFETY: the address lies in restored memory owned by glibc for this thread.
    unsafe { syscall1(SYS_SET_TID_ADDRESS, addr as usize) };
}

pub const RSEQ_SIG: u32 = 0x5305_3053;

/// Registers an rseq area; returns the raw result (0, -EBUSY, -EINVAL, -EPERM ...).
pub fn rseq_register(area: u64, len: u32) -> isize {
    // SAFETY: area points to a struct rseq of at least `len` bytes in this thread's TCB.
    unsafe { syscall4(SYS_RSEQ, area as usize, len as usize, 0, RSEQ_SIG as usize) }
}

/// Creates a thread of this process (raw `clone3`, no glibc) that calls `start(arg)` with its
/// stack pointer at `stack` (16-byte aligned), TLS `tls`, and `ptid`/`ctid` both at `tid_addr`
/// (glibc's `&pd->tid`, which the kernel fills with the new tid). With `tid != 0` the thread
/// gets exactly that kernel tid (`set_tid`: needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN in the
/// user namespace owning our pid namespace). Returns the tid or a negative errno.
///
/// # Safety
/// `start` must never return and must not rely on any register but rsp and rdi; `stack` must
/// be writable memory (the call pushes a return address below it).
pub unsafe fn clone_thread(
    start: u64,
    stack: u64,
    tls: u64,
    tid_addr: u64,
    arg: u64,
    tid: i32,
) -> isize {
    let flags = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_SETTLS
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID) as u64;
    let set_tid: i32 = tid;
    // struct clone_args (v2, 88 bytes): flags, pidfd, child_tid, parent_tid, exit_signal,
    // stack, stack_size, tls, set_tid, set_tid_size, cgroup. The child's sp = stack + size.
    let args: [u64; 11] = [
        flags,
        0,
        tid_addr,
        tid_addr,
        0,
        stack - 16,
        16,
        tls,
        // The kernel wants no array at all (not an empty one) when no tid is asked for.
        if tid != 0 {
            &set_tid as *const i32 as u64
        } else {
            0
        },
        u64::from(tid != 0),
        0,
    ];
    let ret: isize;
    // SAFETY: raw clone3(2); the child calls `start(arg)` on its new stack and never returns.
    unsafe {
        asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") SYS_CLONE3 as isize => ret,
            in("rdi") args.as_ptr(),
            in("rsi") core::mem::size_of_val(&args),
            in("r12") start,
            in("r13") arg,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Capability sets of a thread (`capget` v3: effective, permitted, inheritable × 2 words).
pub type Caps = [u32; 6];

pub fn capget(tid: i32) -> Caps {
    let hdr: [u32; 2] = [0x2008_0522, tid as u32];
    let mut data: Caps = [0; 6];
    // SAFETY: v3 header and two data structs (6 u32).
    unsafe {
        syscall2(
            SYS_CAPGET,
            hdr.as_ptr() as usize,
            data.as_mut_ptr() as usize,
        )
    };
    data
}

/// Sets the calling thread's capabilities to `caps` and clears its ambient set.
pub fn capset_self(caps: &Caps) {
    const PR_CAP_AMBIENT: usize = 47;
    const PR_CAP_AMBIENT_CLEAR_ALL: usize = 4;
    let hdr: [u32; 2] = [0x2008_0522, 0];
    // SAFETY: prctl and capset with valid pointers on the calling thread only.
    unsafe {
        syscall2(SYS_PRCTL, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL);
        syscall2(SYS_CAPSET, hdr.as_ptr() as usize, caps.as_ptr() as usize);
    }
}

/// Unmaps `[start, start+len)` — the stack we are running on — and returns from the signal
/// frame whose `ucontext` is at `uctx`, restoring every register, the signal mask and the
/// alternate stack exactly as they were when the checkpoint signal interrupted this thread.
///
/// # Safety
/// `uctx` must point at the `ucontext` of a live signal frame on this thread's restored stack.
pub unsafe fn unmap_and_sigreturn(start: u64, len: u64, uctx: u64) -> ! {
    // SAFETY: after munmap nothing touches the old stack: the next instruction switches rsp to
    // the signal frame, and rt_sigreturn reads `frame = rsp - 8`, i.e. uctx - 8.
    unsafe {
        asm!(
            "test rsi, rsi",
            "jz 2f",
            "mov eax, 11",
            "syscall",
            "2:",
            "mov rsp, rdx",
            "mov eax, 15",
            "syscall",
            "ud2",
            in("rdi") start,
            in("rsi") len,
            in("rdx") uctx,
            options(noreturn),
        );
    }
}

/// Saved stack pointer of the checkpoint thread inside [`ckpt_point`].
pub static mut CKPT_POINT_RSP: u64 = 0;

/// Calls `f` after saving the callee-saved registers on the stack and the stack pointer in
/// [`CKPT_POINT_RSP`]. Returns 0 when `f` returns; "returns" 1 a second time when a restarted
/// process jumps to [`ckpt_point_resume`] with the saved stack (the image captured that stack,
/// so the saved registers are popped back from it). `f` must not rely on anything of this frame.
///
/// # Safety
/// Only the checkpoint thread calls this, with a function that writes the image.
#[unsafe(naked)]
pub unsafe extern "C" fn ckpt_point(f: extern "C" fn()) -> u64 {
    naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "sub rsp, 8",
        "mov [rip + {rsp_slot}], rsp",
        "call rdi",
        "xor eax, eax",
        "add rsp, 8",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
        rsp_slot = sym CKPT_POINT_RSP,
    )
}

/// Entry of the recreated checkpoint thread: continue as if [`ckpt_point`] returned 1.
///
/// # Safety
/// Only valid in a restarted process whose memory holds the frame saved by `ckpt_point`.
#[unsafe(naked)]
pub unsafe extern "C" fn ckpt_point_resume() -> ! {
    naked_asm!(
        "mov rsp, [rip + {rsp_slot}]",
        "mov eax, 1",
        "add rsp, 8",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
        rsp_slot = sym CKPT_POINT_RSP,
    )
}

/// Reads the whole of a (small) file with raw syscalls into `buf`; returns bytes read.
pub fn read_file_raw(path: &core::ffi::CStr, buf: &mut [u8]) -> Result<usize, i32> {
    // SAFETY: path is NUL-terminated; flags are O_RDONLY|O_CLOEXEC.
    let fd = unsafe { syscall3(SYS_OPEN, path.as_ptr() as usize, 0o2000000, 0) };
    if fd < 0 {
        return Err(-fd as i32);
    }
    let mut n = 0;
    while n < buf.len() {
        // SAFETY: the destination is the unfilled tail of buf.
        let r = unsafe {
            syscall3(
                SYS_READ,
                fd as usize,
                buf[n..].as_mut_ptr() as usize,
                buf.len() - n,
            )
        };
        if r == -4 {
            continue;
        }
        if r <= 0 {
            break;
        }
        n += r as usize;
    }
    // SAFETY: closing the fd we opened.
    unsafe { syscall1(SYS_CLOSE, fd as usize) };
    Ok(n)
}

pub fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; the vDSO call takes no locks.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}
