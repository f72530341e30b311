//! Shared memory between processes of the computation: `MAP_SHARED|MAP_ANONYMOUS` regions
//! inherited across fork, memfds, POSIX shm (`/dev/shm/NAME`, kept or unlinked) and other
//! deleted files mapped shared.
//!
//! At checkpoint every process records each such mapping ([`ShmMapping`]: object key from the
//! maps line's device and inode — the same in every process —, address range, offset in the
//! object, and a free fd number). The memory writer saves the pages like private memory, so
//! the restorer brings them back in a private placeholder. `ckpt-restart` creates one backing
//! per object (a memfd, or the `/dev/shm` file again) and installs it on each process's fd
//! number; here, before any user thread runs, each process copies its pages into the backing
//! and maps the backing over the placeholder with `MAP_SHARED|MAP_FIXED`. Every process was
//! frozen at the same moment, so all copies agree; user threads run only after every process
//! passed the restart barrier, so nobody sees a half-copied object.
//!
//! SysV segments (`/SYSV<key> (deleted)`, inode = the kernel's shmid) have no fd: the
//! mapping also records [`SysvSeg`] (`IPC_STAT`: key, mode, size, ctime, marked destroyed)
//! and the id the program knows (virtual, see [`crate::sysv_ids`]). `ckpt-restart` reuses
//! the killed run's segment when it is still there unused, else makes one (same key when
//! possible, else `IPC_PRIVATE`), and installs on `fd_hint` a memfd holding its id. Here each
//! attach is copied in through a temporary attach of that id, then attached over the
//! placeholder with `SHM_REMAP` (a real attach: `shmdt` works), marked destroyed again if it
//! was (Linux still lets the other processes attach it by id), and the (old → new) id pair
//! goes to the wrappers' table. An attach of which part was unmapped stays private
//! (warning). Calls go through raw syscalls: `shmat`/`shmctl` of this library are the
//! translating wrappers.
//!
//! Checkpoint and restart hooks run with user threads frozen: raw reads of /proc, no glibc
//! malloc.

use crate::api::{CkptContext, Plugin, RestartContext};
use ckpt_format::image::{ShmMapping, SysvSeg};

/// fd numbers on which ckpt-restart installs backings (kept open by the files plugin at
/// restart until this plugin has used them). Static memory: restored with the process.
const MAX_HINTS: usize = 64;
static HINTS: [std::sync::atomic::AtomicI32; MAX_HINTS] =
    [const { std::sync::atomic::AtomicI32::new(-1) }; MAX_HINTS];

/// Whether `fd` carries a shared memory backing handed over by ckpt-restart.
pub fn is_backing_fd(fd: i32) -> bool {
    HINTS
        .iter()
        .any(|h| h.load(std::sync::atomic::Ordering::Relaxed) == fd)
}

#[derive(Default)]
pub struct Shm {
    saved: Vec<ShmMapping>,
}

/// A shared mapping of shared memory, from one line of /proc/self/maps.
struct Line {
    start: u64,
    end: u64,
    offset: u64,
    dev: (u64, u64),
    ino: u64,
    path: String,
}

fn parse(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    for l in text.lines() {
        let mut it = l.splitn(6, ' ');
        let (Some(range), Some(perms), Some(off), Some(dev), Some(ino)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        if perms.as_bytes().get(3) != Some(&b's') {
            continue;
        }
        let path = it.next().unwrap_or("").trim_start().to_string();
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let Some((ma, mi)) = dev.split_once(':') else {
            continue;
        };
        let h = |s: &str| u64::from_str_radix(s, 16).unwrap_or(0);
        let deleted = path.ends_with(" (deleted)");
        let shmem = path.starts_with("/dev/zero")
            || path.starts_with("/memfd:")
            || path.starts_with("/dev/shm/")
            || deleted;
        if !shmem {
            continue;
        }
        out.push(Line {
            start: h(a),
            end: h(b),
            offset: h(off),
            dev: (h(ma), h(mi)),
            ino: ino.parse().unwrap_or(0),
            path,
        });
    }
    out
}

/// Whether the memory writer should save the pages of this shared mapping (and not warn):
/// the plugin re-shares it at restart. Used by the core's memory plan.
pub fn handles(path: &str) -> bool {
    path.starts_with("/dev/zero")
        || path.starts_with("/memfd:")
        || path.starts_with("/dev/shm/")
        || path.ends_with(" (deleted)")
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

impl Plugin for Shm {
    fn name(&self) -> &'static str {
        "shm"
    }

    fn init(&mut self) {
        crate::sysv_ids::init();
        if let Ok(v) = std::env::var("CKPT_SHMIDS") {
            crate::sysv_ids::from_env(&v);
        }
    }

    fn checkpoint(&mut self, ctx: &mut CkptContext) -> Result<(), String> {
        let text = std::fs::read_to_string("/proc/self/maps")
            .map_err(|e| format!("/proc/self/maps: {e}"))?;
        let lines = parse(&text);
        let mut next_fd = ctx.header.fds.iter().map(|f| f.fd).max().unwrap_or(2) + 1;
        let mut out: Vec<ShmMapping> = Vec::new();
        for l in &lines {
            let key = crate::files::obj_key("shm", &[l.dev.0, l.dev.1, l.ino]);
            let sysv = if is_sysv(&l.path) {
                match sysv_seg(l.ino as i32) {
                    Ok(seg) => Some(seg),
                    Err(e) => {
                        ctx.warnings.push(format!(
                            "SysV shared memory {:#x}-{:#x} (id {}): IPC_STAT: {e}; it comes \
                             back private",
                            l.start, l.end, l.ino
                        ));
                        continue;
                    }
                }
            } else {
                None
            };
            let name = l.path.trim_end_matches(" (deleted)");
            let live_posix = name.starts_with("/dev/shm/") && !l.path.ends_with(" (deleted)");
            let size = if live_posix {
                std::fs::metadata(name).map(|m| m.len()).unwrap_or(0)
            } else {
                0
            }
            .max(l.offset + (l.end - l.start));
            let fd_hint = match out.iter().find(|m| m.key == key) {
                Some(m) => m.fd_hint,
                None => {
                    while ctx.core_fds.contains(&next_fd) {
                        next_fd += 1;
                    }
                    let f = next_fd;
                    next_fd += 1;
                    f
                }
            };
            out.push(ShmMapping {
                key,
                start: l.start,
                end: l.end,
                obj_off: l.offset,
                size,
                path: live_posix.then(|| name.to_string()),
                fd_hint,
                sysv,
            });
        }
        // Every mapping of one object must ask for a backing that covers all of them.
        for i in 0..out.len() {
            let max = out
                .iter()
                .filter(|m| m.key == out[i].key)
                .map(|m| m.size)
                .max()
                .unwrap_or(0);
            out[i].size = max;
        }
        for (i, h) in HINTS.iter().enumerate() {
            let mut hints: Vec<i32> = out.iter().map(|m| m.fd_hint).collect();
            hints.dedup();
            h.store(
                hints.get(i).copied().unwrap_or(-1),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        ctx.header.shm = out.clone();
        self.saved = out;
        Ok(())
    }

    fn restart(&mut self, ctx: &mut RestartContext) -> Result<(), String> {
        let mut fds: Vec<i32> = Vec::new();
        let mut sysv: Vec<&ShmMapping> = Vec::new();
        for m in &self.saved {
            let fd = m.fd_hint;
            if m.sysv.is_some() {
                sysv.push(m);
                continue;
            }
            // SAFETY: F_GETFD only probes the number.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                ctx.warnings.push(format!(
                    "shared memory {:#x}-{:#x}: no backing was handed over (fd {fd}); it stays private",
                    m.start, m.end
                ));
                continue;
            }
            if !fds.contains(&fd) {
                fds.push(fd);
            }
            let len = (m.end - m.start) as usize;
            let prot = region_prot(m.start);
            // SAFETY: the placeholder the restorer mapped at [start, end) holds the saved pages;
            // make it readable, copy it into the backing at its offset, then map the backing
            // over it with the original protection.
            unsafe {
                if prot == libc::PROT_NONE {
                    // No content of ours (an inaccessible view): only re-share it.
                    let p = libc::mmap(
                        m.start as *mut libc::c_void,
                        len,
                        prot,
                        libc::MAP_SHARED | libc::MAP_FIXED,
                        fd,
                        m.obj_off as i64,
                    );
                    if p == libc::MAP_FAILED {
                        return Err(format!("shared memory {:#x}: mmap: {}", m.start, errno()));
                    }
                    continue;
                }
                if prot & libc::PROT_READ == 0 {
                    libc::mprotect(m.start as *mut libc::c_void, len, libc::PROT_READ);
                }
                let mut done = 0usize;
                while done < len {
                    let r = libc::pwrite(
                        fd,
                        (m.start as usize + done) as *const libc::c_void,
                        len - done,
                        (m.obj_off as usize + done) as i64,
                    );
                    if r <= 0 {
                        return Err(format!(
                            "shared memory {:#x}-{:#x}: writing its pages back: {}",
                            m.start,
                            m.end,
                            errno()
                        ));
                    }
                    done += r as usize;
                }
                let p = libc::mmap(
                    m.start as *mut libc::c_void,
                    len,
                    prot,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd,
                    m.obj_off as i64,
                );
                if p == libc::MAP_FAILED {
                    return Err(format!(
                        "shared memory {:#x}-{:#x}: mmap of its backing: {}",
                        m.start,
                        m.end,
                        errno()
                    ));
                }
            }
        }
        reattach_sysv(&sysv, &mut fds, ctx.warnings)?;
        for fd in fds {
            // SAFETY: the backing fds ckpt-restart installed for us; the mappings keep the
            // objects alive.
            unsafe { libc::close(fd) };
        }
        Ok(())
    }
}

/// Current protection of the mapping containing `addr` (from /proc/self/maps).
fn region_prot(addr: u64) -> i32 {
    let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    for l in text.lines() {
        let mut it = l.split(' ');
        let (Some(range), Some(perms)) = (it.next(), it.next()) else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap_or(0),
            u64::from_str_radix(b, 16).unwrap_or(0),
        );
        if addr >= a && addr < b {
            let p = perms.as_bytes();
            let mut prot = 0;
            if p.first() == Some(&b'r') {
                prot |= libc::PROT_READ;
            }
            if p.get(1) == Some(&b'w') {
                prot |= libc::PROT_WRITE;
            }
            if p.get(2) == Some(&b'x') {
                prot |= libc::PROT_EXEC;
            }
            return prot;
        }
    }
    libc::PROT_READ | libc::PROT_WRITE
}

// ---- SysV segments -----------------------------------------------------------------------

/// `shm_perm.mode` bit of a segment marked destroyed (`IPC_RMID` while attached).
const SHM_DEST: u32 = 0o1000;

/// Whether a maps path is a SysV segment's: `/SYSV` + the key as 8 hex digits + ` (deleted)`.
fn is_sysv(path: &str) -> bool {
    path.strip_prefix("/SYSV")
        .and_then(|r| r.strip_suffix(" (deleted)"))
        .is_some_and(|k| k.len() == 8 && k.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Raw `shmctl(id, IPC_STAT)`: the `shmctl` symbol of this library is the translating wrapper.
fn shm_stat(id: i32) -> std::io::Result<libc::shmid_ds> {
    // SAFETY: an all-zero shmid_ds is valid; IPC_STAT fills it.
    unsafe {
        let mut ds: libc::shmid_ds = std::mem::zeroed();
        if libc::syscall(
            libc::SYS_shmctl,
            id,
            libc::IPC_STAT,
            &mut ds as *mut libc::shmid_ds,
        ) != 0
        {
            return Err(errno());
        }
        Ok(ds)
    }
}

/// What the image records of the segment with kernel id `real`.
fn sysv_seg(real: i32) -> std::io::Result<SysvSeg> {
    let ds = shm_stat(real)?;
    let mode = u32::from(ds.shm_perm.mode);
    Ok(SysvSeg {
        shmid: crate::sysv_ids::r2v(real),
        real_id: real,
        key: ds.shm_perm.__key,
        mode: mode & 0o777,
        segsz: ds.shm_segsz as u64,
        ctime: ds.shm_ctime,
        removed: mode & SHM_DEST != 0,
    })
}

/// Raw `shmat`; None on failure (errno set).
fn raw_shmat(id: i32, addr: u64, flags: i32) -> Option<u64> {
    // SAFETY: shmat maps the segment; at `addr` with SHM_REMAP only over our own placeholder.
    let r = unsafe { libc::syscall(libc::SYS_shmat, id, addr as usize, flags) };
    (r != -1).then_some(r as u64)
}

/// Re-attaches every checkpointed SysV attach (one per object and base address; an attach
/// whose parts were `mprotect`ed differently shows as several maps lines) to the segment
/// ckpt-restart handed over: attach it at a free address, copy the saved pages in, attach it
/// over the placeholder (`SHM_REMAP`), give each part its saved protection, detach the
/// temporary view. Then mark it destroyed again if it was (Linux lets the other processes
/// still attach it by id) and record its new id for the wrappers. The backing fds carrying
/// the ids are added to `fds` (closed by the caller).
fn reattach_sysv(
    maps: &[&ShmMapping],
    fds: &mut Vec<i32>,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let page = 4096u64;
    let mut done: Vec<(u64, u64)> = Vec::new();
    for m in maps {
        let Some(seg) = m.sysv else { continue };
        let base = m.start - m.obj_off;
        if done.contains(&(m.key, base)) {
            continue;
        }
        done.push((m.key, base));
        let mut parts: Vec<&ShmMapping> = maps
            .iter()
            .copied()
            .filter(|x| x.key == m.key && x.start - x.obj_off == base)
            .collect();
        parts.sort_by_key(|p| p.start);
        let fd = m.fd_hint;
        let mut buf = [0u8; 4];
        // SAFETY: pread into a 4-byte stack buffer.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), 4, 0) };
        if n != 4 {
            warnings.push(format!(
                "SysV shared memory {base:#x} (id {}): no segment was handed over (fd {fd}); \
                 it stays private",
                seg.shmid
            ));
            continue;
        }
        if !fds.contains(&fd) {
            fds.push(fd);
        }
        let id = i32::from_ne_bytes(buf);
        let len = seg.segsz.div_ceil(page) * page;
        match shm_stat(id) {
            Ok(ds) if (ds.shm_segsz as u64).div_ceil(page) * page == len => {}
            other => {
                // An attach of another length would cover more or less than the placeholder.
                warnings.push(format!(
                    "SysV shared memory {base:#x} (id {}): the segment handed over (id {id}) \
                     {}; it stays private",
                    seg.shmid,
                    match other {
                        Ok(ds) => format!("has {} bytes, not {}", ds.shm_segsz, seg.segsz),
                        Err(e) => format!("cannot be examined: {e}"),
                    }
                ));
                continue;
            }
        }
        let mut at = base;
        for p in &parts {
            if p.start != at {
                break;
            }
            at = p.end;
        }
        if at != base + len {
            // Part of the attach was unmapped: attaching the whole segment would replace
            // whatever the program mapped in the hole.
            warnings.push(format!(
                "SysV shared memory {base:#x} (id {}): only part of the segment was mapped; it \
                 stays private",
                seg.shmid
            ));
            continue;
        }
        let prots: Vec<i32> = parts.iter().map(|p| region_prot(p.start)).collect();
        let exec = if prots.iter().any(|p| p & libc::PROT_EXEC != 0) {
            libc::SHM_EXEC
        } else {
            0
        };
        // A writable temporary view to copy our pages in (none if the segment is read-only
        // for us: then only a writer's copy counts).
        let tmp = raw_shmat(id, 0, 0);
        if tmp.is_none() {
            let e = errno();
            if e.raw_os_error() != Some(libc::EACCES) {
                return Err(format!(
                    "SysV shared memory {base:#x} (id {}, now {id}): temporary shmat: {e}",
                    seg.shmid
                ));
            }
        }
        if let Some(t) = tmp {
            for (p, &prot) in parts.iter().zip(&prots) {
                if prot == libc::PROT_NONE {
                    continue; // an inaccessible view: nothing of ours to copy
                }
                let plen = (p.end - p.start) as usize;
                // SAFETY: [p.start, p.end) is the placeholder the restorer filled (made
                // readable for the copy); t + obj_off .. + plen lies inside the temporary
                // attach of a segment of `len` bytes (the parts cover exactly [base, base+len)).
                unsafe {
                    if prot & libc::PROT_READ == 0 {
                        libc::mprotect(p.start as *mut libc::c_void, plen, libc::PROT_READ);
                    }
                    std::ptr::copy_nonoverlapping(
                        p.start as *const u8,
                        (t + p.obj_off) as *mut u8,
                        plen,
                    );
                }
            }
        }
        let rdonly = if tmp.is_some() { 0 } else { libc::SHM_RDONLY };
        let got = raw_shmat(id, base, libc::SHM_REMAP | rdonly | exec);
        let err = errno();
        if let Some(t) = tmp {
            // SAFETY: detaching the temporary view made above.
            unsafe { libc::syscall(libc::SYS_shmdt, t as usize) };
        }
        if got != Some(base) {
            return Err(format!(
                "SysV shared memory {base:#x}-{:#x} (id {}, now {id}): shmat: {err}",
                base + len,
                seg.shmid
            ));
        }
        for (p, &prot) in parts.iter().zip(&prots) {
            // SAFETY: setting the saved protection on our own fresh attach.
            unsafe {
                libc::mprotect(
                    p.start as *mut libc::c_void,
                    (p.end - p.start) as usize,
                    prot,
                )
            };
        }
        if seg.removed {
            // SAFETY: IPC_RMID takes no buffer.
            unsafe {
                libc::syscall(
                    libc::SYS_shmctl,
                    id,
                    libc::IPC_RMID,
                    std::ptr::null_mut::<libc::shmid_ds>(),
                )
            };
        }
        if !crate::sysv_ids::set(seg.shmid, id) {
            warnings.push(format!(
                "SysV shared memory id {} is now {id}: too many segments to translate its id",
                seg.shmid
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysv_paths_are_recognized() {
        assert!(is_sysv("/SYSV00000000 (deleted)"));
        assert!(is_sysv("/SYSV4b0a1c2f (deleted)"));
        assert!(!is_sysv("/SYSVnotes.txt (deleted)"));
        assert!(!is_sysv("/SYSV00000000"));
        let maps = "7f86c6d17000-7f86c6d19000 rw-s 00000000 00:01 11                         /SYSV4b0a1c2f (deleted)\n\
                    7f86c6d19000-7f86c6d1a000 rw-p 00000000 00:00 0 \n";
        let l = parse(maps);
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].start, l[0].end, l[0].ino),
            (0x7f86c6d17000, 0x7f86c6d19000, 11)
        );
        assert!(handles(&l[0].path) && is_sysv(&l[0].path));
    }
}
