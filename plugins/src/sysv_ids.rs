//! Virtual SysV shared memory ids: the `shmid` a program got from `shmget` keeps working
//! after a restart that had to give its segment a new id.
//!
//! A segment's virtual id is the id it had when the program first got it. As long as the
//! segment was never recreated the table is empty and every wrapper is one relaxed load and a
//! tail call. At restart the shm plugin ([`crate::shm`]) attaches the segment `ckpt-restart`
//! made for each checkpointed one and records (virtual id → new real id) with [`set`]; the
//! wrappers then translate ids passed in (`shmat`, `shmctl`: virtual → real) and ids returned
//! (`shmget`, `shmctl(SHM_STAT)`: real → virtual). Entries of segments that were not attached
//! at checkpoint stay as they were (such a segment, if it still exists, kept its id).
//!
//! Limits (docs/process-trees.md): only a process that had the segment attached at checkpoint
//! learns its new id (a process that only holds the number does not); a new segment created
//! after a restart whose kernel id equals an old virtual id is shadowed by it; `ipcs` and
//! `/proc/sysvipc/shm` show the real ids. An `exec`ed program gets the table from its
//! predecessor (`CKPT_SHMIDS`, written by the exec wrapper, read at plugin init).
//!
//! Wrappers run on user threads: no allocation, no locks (a fixed array of atomics in static
//! memory, inherited across fork and restored with the process's memory). [`set`] runs at
//! restart with user threads frozen.

use crate::api::real_fns;
use libc::{c_int, c_void, key_t, size_t};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const MAX: usize = 256;
/// `virtual << 32 | real` (both as u32), entries `0..N`.
static MAP: [AtomicU64; MAX] = [const { AtomicU64::new(0) }; MAX];
static N: AtomicUsize = AtomicUsize::new(0);

/// `shmctl` commands whose first argument is an index into the kernel's table, not an id, and
/// whose result is an id (`SHM_STAT`, `SHM_STAT_ANY`) or a count (`IPC_INFO`, `SHM_INFO`).
const IPC_INFO: c_int = 3;
const SHM_STAT: c_int = 13;
const SHM_INFO: c_int = 14;
const SHM_STAT_ANY: c_int = 15;

/// Records that virtual id `v` is now the kernel's `real` (restart, user threads frozen).
/// False if the table is full (the id is then not translated).
pub fn set(v: i32, real: i32) -> bool {
    let n = N.load(Ordering::Acquire);
    let x = ((v as u32 as u64) << 32) | real as u32 as u64;
    for e in &MAP[..n] {
        if (e.load(Ordering::Relaxed) >> 32) as u32 as i32 == v {
            e.store(x, Ordering::Relaxed);
            return true;
        }
    }
    if v == real {
        return true;
    }
    if n >= MAX {
        return false;
    }
    MAP[n].store(x, Ordering::Relaxed);
    N.store(n + 1, Ordering::Release);
    true
}

/// Virtual → real.
pub fn v2r(v: i32) -> i32 {
    let n = N.load(Ordering::Acquire);
    for e in &MAP[..n] {
        let x = e.load(Ordering::Relaxed);
        if (x >> 32) as u32 as i32 == v {
            return x as u32 as i32;
        }
    }
    v
}

/// Real → virtual.
pub fn r2v(r: i32) -> i32 {
    let n = N.load(Ordering::Acquire);
    for e in &MAP[..n] {
        let x = e.load(Ordering::Relaxed);
        if x as u32 as i32 == r {
            return (x >> 32) as u32 as i32;
        }
    }
    r
}

/// The table as `virtual:real,...` for `CKPT_SHMIDS`: an `exec`ed program of the tree keeps
/// using the ids its predecessor had (passed in argv or the environment, say).
pub fn to_env() -> String {
    MAP[..N.load(Ordering::Acquire)]
        .iter()
        .map(|e| {
            let x = e.load(Ordering::Relaxed);
            format!("{}:{}", (x >> 32) as u32 as i32, x as u32 as i32)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Loads the table from the value of `CKPT_SHMIDS` (plugin init of an `exec`ed program).
pub fn from_env(v: &str) {
    for e in v.split(',') {
        if let Some((a, b)) = e.split_once(':')
            && let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>())
        {
            set(a, b);
        }
    }
}

type ShmgetFn = unsafe extern "C" fn(key_t, size_t, c_int) -> c_int;
type ShmatFn = unsafe extern "C" fn(c_int, *const c_void, c_int) -> *mut c_void;
type ShmctlFn = unsafe extern "C" fn(c_int, c_int, *mut libc::shmid_ds) -> c_int;

real_fns! {
    real_shmget, SHMGET, c"shmget", ShmgetFn;
    real_shmat, SHMAT, c"shmat", ShmatFn;
    real_shmctl, SHMCTL, c"shmctl", ShmctlFn;
}

/// Resolves the real functions (plugin init, before `main`).
pub fn init() {
    resolve_all();
}

fn enosys() {
    // SAFETY: glibc's thread-local errno.
    unsafe { *libc::__errno_location() = libc::ENOSYS };
}

#[unsafe(no_mangle)]
pub extern "C" fn shmget(key: key_t, size: size_t, flags: c_int) -> c_int {
    let Some(f) = real_shmget() else {
        enosys();
        return -1;
    };
    // SAFETY: glibc's shmget with the caller's arguments.
    let r = unsafe { f(key, size, flags) };
    if r < 0 { r } else { r2v(r) }
}

/// # Safety
/// As for the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmat(id: c_int, addr: *const c_void, flags: c_int) -> *mut c_void {
    let Some(f) = real_shmat() else {
        enosys();
        return usize::MAX as *mut c_void;
    };
    // SAFETY: glibc's shmat with the caller's arguments, the id translated.
    unsafe { f(v2r(id), addr, flags) }
}

/// # Safety
/// As for the C function.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmctl(id: c_int, cmd: c_int, buf: *mut libc::shmid_ds) -> c_int {
    let Some(f) = real_shmctl() else {
        enosys();
        return -1;
    };
    // glibc may pass IPC_64 in the command on other ABIs; compare without it.
    match cmd & !0x100 {
        // SAFETY: glibc's shmctl with the caller's arguments (an index, not an id).
        IPC_INFO | SHM_INFO => unsafe { f(id, cmd, buf) },
        SHM_STAT | SHM_STAT_ANY => {
            // SAFETY: as above; the result is an id.
            let r = unsafe { f(id, cmd, buf) };
            if r < 0 { r } else { r2v(r) }
        }
        // SAFETY: glibc's shmctl with the caller's arguments, the id translated.
        _ => unsafe { f(v2r(id), cmd, buf) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_both_ways_and_updates() {
        assert_eq!(v2r(5), 5);
        set(7, 7); // identity: nothing recorded
        assert_eq!(N.load(Ordering::Acquire), 0);
        set(7, 98311);
        assert_eq!((v2r(7), r2v(98311), r2v(7)), (98311, 7, 7));
        set(7, 131079); // second restart: same virtual id, new real one
        assert_eq!((v2r(7), r2v(131079), r2v(98311)), (131079, 7, 98311));
        set(7, 7); // back to its own id: the entry stays, as identity
        assert_eq!((v2r(7), r2v(7)), (7, 7));
        assert_eq!(N.load(Ordering::Acquire), 1);
        from_env("9:65545,bad,10:x");
        assert_eq!((v2r(9), r2v(65545), v2r(10)), (65545, 9, 10));
        assert_eq!(to_env(), "7:7,9:65545");
    }
}
