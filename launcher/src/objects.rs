//! The kernel objects `ckpt-restart` makes for the restored tree before it forks anything, and
//! the fd numbers they live on in `ckpt-restart` (all `O_CLOEXEC`, all at or above the plan's
//! `high_fd`, so installing them on the numbers the images need can never clobber a source).
//!
//! Owns: raising `RLIMIT_NOFILE`; keeping a copy of each fd of `ckpt-restart` that a restored
//! fd is re-inherited from (or `/dev/null` when it has none on that number); creating every
//! shared object once — pipes (size, bytes in flight, status flags), FIFOs (made if missing,
//! filled through a keeper), files (reopened at their offset) and deleted files (recreated with
//! their contents in the same directory, reopened, unlinked again), shared memory backings
//! (memfds, `/dev/shm` files, SysV segments — reused or made, handed over as a memfd holding
//! the id). The tree processes inherit all of them through fork; `ckpt-restart` closes its
//! copies once the first helper exists. Must never remove a SysV segment it did not make,
//! nor reuse one (whose contents the restored processes overwrite) unless it is unattached
//! and either provably the checkpointed run's own or the segment of the program's key.

use crate::tree::{Plan, Source};
use anyhow::{Result, anyhow, bail};
use ckpt_format::image::{ObjKind, SharedObject, SysvSeg, reopen_flags};
use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the (new) soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return r.rlim_max;
            }
        }
        r.rlim_cur
    }
}

/// A close-on-exec duplicate of `fd` on the lowest free number at or above `high`.
pub fn above(fd: RawFd, high: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an fd the caller holds.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, high) };
    if n < 0 {
        return Err(last_err());
    }
    // SAFETY: fcntl returned a fresh fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Takes ownership of a fresh fd returned by a system call and moves it above `high`.
fn own_above(fd: RawFd, high: i32) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: `fd` was just returned by the kernel and nobody else owns it.
    let low = unsafe { OwnedFd::from_raw_fd(fd) };
    above(low.as_raw_fd(), high)
}

fn cpath(p: &str) -> Result<CString> {
    CString::new(p).map_err(|_| anyhow!("NUL byte in path {p:?}"))
}

fn write_all(fd: RawFd, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        // SAFETY: writing from a valid slice.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = last_err();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

fn set_fl(fd: RawFd, flags: i32) {
    if flags != 0 {
        // SAFETY: F_SETFL on our fd (only the status flags change).
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
    }
}

/// Everything `ckpt-restart` holds for the tree, keyed for [`Made::source`].
#[derive(Default)]
pub struct Made {
    high: i32,
    objects: HashMap<(u64, u8), OwnedFd>,
    inherited: HashMap<i32, OwnedFd>,
    devnull: HashMap<i32, OwnedFd>,
    /// FIFO keepers: hold the bytes until the ends exist (closed with the rest).
    keepers: Vec<OwnedFd>,
    /// Non-fatal remarks for the user.
    pub warnings: Vec<String>,
    /// SysV segments made here for segments that were marked destroyed (see
    /// [`remove_made_sysv`]).
    pub sysv_removed: Vec<MadeSeg>,
}

/// A SysV segment `ckpt-restart` made, identified beyond its id (ids get reused).
#[derive(Debug, Clone, Copy)]
pub struct MadeSeg {
    pub id: i32,
    pub ctime: i64,
}

impl Made {
    pub fn new(high: i32) -> Made {
        Made {
            high,
            ..Default::default()
        }
    }

    /// Copies every fd of ours that an image re-inherits (or opens `/dev/null` with the access
    /// mode the fd had). Must run before `ckpt-restart` opens any fd it keeps, so the numbers
    /// are still the ones it was started with.
    pub fn take_inherited(&mut self, plan: &Plan) -> Result<()> {
        for node in &plan.nodes {
            for inst in &node.installs {
                let Source::Inherit { from, accmode } = inst.source else {
                    continue;
                };
                if self.inherited.contains_key(&from) || self.devnull.contains_key(&accmode) {
                    continue;
                }
                // SAFETY: F_GETFD only asks whether the number is open.
                if unsafe { libc::fcntl(from, libc::F_GETFD) } >= 0 {
                    let fd = above(from, self.high)
                        .map_err(|e| anyhow!("cannot keep fd {from} for the restart: {e}"))?;
                    self.inherited.insert(from, fd);
                } else {
                    self.devnull_for(accmode)?;
                }
            }
        }
        Ok(())
    }

    fn devnull_for(&mut self, accmode: i32) -> Result<RawFd> {
        if let Some(fd) = self.devnull.get(&accmode) {
            return Ok(fd.as_raw_fd());
        }
        // SAFETY: open with a NUL-terminated path.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), accmode | libc::O_CLOEXEC) };
        let fd = own_above(fd, self.high).map_err(|e| anyhow!("/dev/null: {e}"))?;
        let raw = fd.as_raw_fd();
        self.devnull.insert(accmode, fd);
        Ok(raw)
    }

    /// The fd in `ckpt-restart` to install for `s` (always at or above `high`).
    pub fn source(&self, s: &Source) -> Option<RawFd> {
        match *s {
            Source::Object { key, end } => self.objects.get(&(key, end)).map(|f| f.as_raw_fd()),
            Source::Inherit { from, accmode } => self
                .inherited
                .get(&from)
                .or_else(|| self.devnull.get(&accmode))
                .map(|f| f.as_raw_fd()),
        }
    }

    /// Every fd held here (the helpers close them once their children exist).
    pub fn fds(&self) -> Vec<RawFd> {
        self.objects
            .values()
            .chain(self.inherited.values())
            .chain(self.devnull.values())
            .chain(self.keepers.iter())
            .map(|f| f.as_raw_fd())
            .collect()
    }

    /// Creates every shared object of the plan. `owner(key)` names the image that first lists
    /// it, for messages. Which ends are needed is taken from the installs. `parts`: the name
    /// service of a restart in parts (connections to other parts' processes go through it).
    pub fn create_objects(
        &mut self,
        plan: &Plan,
        owner: &dyn Fn(u64) -> String,
        parts: Option<&mut crate::parts::Names>,
    ) -> Result<()> {
        for o in &plan.objects {
            let who = owner(o.key);
            match &o.kind {
                ObjKind::Pipe { size } => self.make_pipe(o, *size, &who)?,
                ObjKind::Fifo { path, size } => self.make_fifo(o, path, *size, &who)?,
                ObjKind::File {
                    path,
                    directory,
                    deleted,
                    size,
                    mode,
                } => {
                    let fd = if *deleted {
                        self.make_deleted(o, path, *directory, *size, *mode, &who)?
                    } else {
                        self.open_file(o, path, *directory, &who)?
                    };
                    self.objects.insert((o.key, 0), fd);
                }
                ObjKind::Socket(_) => {}
                ObjKind::Pty(p) => {
                    let (m, s) = crate::ptys::make(o, p, self.high, &who, &mut self.warnings)?;
                    if let Some(m) = m {
                        self.objects.insert((o.key, 0), m);
                    }
                    self.objects.insert((o.key, 1), s);
                }
            }
        }
        let sockets: Vec<&SharedObject> = plan
            .objects
            .iter()
            .filter(|o| matches!(o.kind, ObjKind::Socket(_)))
            .collect();
        if !sockets.is_empty() || parts.is_some() {
            for (key, fd) in
                crate::sockets::rebuild(&sockets, self.high, owner, &mut self.warnings, parts)?
            {
                self.objects.insert((key, 0), fd);
            }
        }
        Ok(())
    }

    /// Creates the backing of every shared memory object: a memfd, or the `/dev/shm` file
    /// again (its contents are replaced by the pages the processes copy in at restart).
    pub fn create_shm(&mut self, plan: &Plan) -> Result<()> {
        for o in &plan.shm {
            if let Some(seg) = &o.sysv {
                let fd = self.make_sysv(seg)?;
                self.objects.insert((o.key, crate::tree::SHM_END), fd);
                continue;
            }
            let fd = match &o.path {
                Some(p) => {
                    let c = cpath(p)?;
                    // SAFETY: open with a NUL-terminated path.
                    unsafe {
                        libc::open(
                            c.as_ptr(),
                            libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC,
                            0o600 as libc::c_uint,
                        )
                    }
                }
                // SAFETY: memfd_create with a NUL-terminated name.
                None => unsafe { libc::memfd_create(c"ckpt-shm".as_ptr(), libc::MFD_CLOEXEC) },
            };
            let what = o.path.as_deref().unwrap_or("shared anonymous memory");
            let fd = own_above(fd, self.high).map_err(|e| anyhow!("{what}: {e}"))?;
            // SAFETY: sizing our own file.
            if unsafe { libc::ftruncate(fd.as_raw_fd(), o.size as i64) } != 0 {
                bail!("{what}: cannot size it to {} bytes: {}", o.size, last_err());
            }
            self.objects.insert((o.key, crate::tree::SHM_END), fd);
        }
        Ok(())
    }

    /// A SysV segment for `seg` (see [`sysv_segment`]), handed over as a memfd holding its id
    /// (an `i32`, native byte order): SysV segments have no fd of their own.
    fn make_sysv(&mut self, seg: &SysvSeg) -> Result<OwnedFd> {
        let (id, warning) = sysv_segment(seg)?;
        self.warnings.extend(warning);
        if seg.removed
            && let Some(ds) = shm_stat(id)
        {
            self.sysv_removed.push(MadeSeg {
                id,
                ctime: ds.shm_ctime,
            });
        }
        // SAFETY: memfd_create with a NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"ckpt-sysv-id".as_ptr(), libc::MFD_CLOEXEC) };
        let fd = own_above(fd, self.high).map_err(|e| anyhow!("SysV segment {id}: {e}"))?;
        write_all(fd.as_raw_fd(), &id.to_ne_bytes())
            .map_err(|e| anyhow!("SysV segment {id}: {e}"))?;
        Ok(fd)
    }

    fn make_pipe(&mut self, o: &SharedObject, size: i32, who: &str) -> Result<()> {
        let mut p = [0i32; 2];
        // SAFETY: pipe2 fills two fds.
        if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            bail!("{who}: pipe: {}", last_err());
        }
        let r = own_above(p[0], self.high);
        let w = own_above(p[1], self.high);
        let (r, w) = (
            r.map_err(|e| anyhow!("{who}: pipe: {e}"))?,
            w.map_err(|e| anyhow!("{who}: pipe: {e}"))?,
        );
        self.fill(w.as_raw_fd(), size, &o.data)
            .map_err(|e| anyhow!("{who}: pipe with {} bytes in flight: {e}", o.data.len()))?;
        // Blocking unless the program had O_NONBLOCK (F_SETFL with its saved flags).
        for (fd, i, acc) in [
            (r.as_raw_fd(), 0, libc::O_RDONLY),
            (w.as_raw_fd(), 1, libc::O_WRONLY),
        ] {
            let saved = o.flags.get(i).copied().unwrap_or(0);
            // SAFETY: F_SETFL on our fd.
            unsafe { libc::fcntl(fd, libc::F_SETFL, if saved != 0 { saved } else { acc }) };
        }
        self.objects.insert((o.key, 0), r);
        self.objects.insert((o.key, 1), w);
        Ok(())
    }

    /// Sets the pipe size and writes the saved bytes (the fd is non-blocking: bytes that do
    /// not fit are an error, never a hang).
    fn fill(&self, fd: RawFd, size: i32, data: &[u8]) -> std::io::Result<()> {
        if size > 0 {
            // SAFETY: F_SETPIPE_SZ on our pipe; failure leaves the default size.
            unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, size) };
        }
        write_all(fd, data)
    }

    fn make_fifo(&mut self, o: &SharedObject, path: &str, size: i32, who: &str) -> Result<()> {
        let c = cpath(path)?;
        match std::fs::metadata(path) {
            Ok(md) => {
                use std::os::unix::fs::FileTypeExt;
                if !md.file_type().is_fifo() {
                    bail!("{who}: FIFO {path} needed by the image is not a FIFO any more");
                }
            }
            Err(_) => {
                // SAFETY: mkfifo with a NUL-terminated path.
                if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                    bail!("{who}: FIFO {path} needed by the image: {}", last_err());
                }
                self.warnings
                    .push(format!("FIFO {path} was missing; created it (mode 0600)"));
            }
        }
        let open = |flags: i32| {
            // SAFETY: open with a NUL-terminated path.
            let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_NONBLOCK | libc::O_CLOEXEC) };
            own_above(fd, self.high).map_err(|e| anyhow!("{who}: FIFO {path}: {e}"))
        };
        let keeper = open(libc::O_RDWR)?;
        self.fill(keeper.as_raw_fd(), size, &o.data).map_err(|e| {
            anyhow!(
                "{who}: FIFO {path} with {} bytes in flight: {e}",
                o.data.len()
            )
        })?;
        let r = open(libc::O_RDONLY)?;
        let w = open(libc::O_WRONLY)?;
        set_fl(r.as_raw_fd(), o.flags.first().copied().unwrap_or(0));
        set_fl(w.as_raw_fd(), o.flags.get(1).copied().unwrap_or(0));
        self.objects.insert((o.key, 0), r);
        self.objects.insert((o.key, 1), w);
        self.keepers.push(keeper);
        Ok(())
    }

    fn open_file(
        &mut self,
        o: &SharedObject,
        path: &str,
        directory: bool,
        who: &str,
    ) -> Result<OwnedFd> {
        let c = cpath(path)?;
        let flags0 = o.flags.first().copied().unwrap_or(libc::O_RDONLY);
        let flags = reopen_flags(flags0, directory);
        // SAFETY: open with a NUL-terminated path.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        let fd = own_above(fd, self.high)
            .map_err(|e| anyhow!("{who}: file {path} needed by the image: {e}"))?;
        // SAFETY: lseek on our fd; a directory cookie that no longer exists is not fatal.
        if unsafe { libc::lseek(fd.as_raw_fd(), o.offset, libc::SEEK_SET) } < 0 && !directory {
            bail!(
                "{who}: file {path}: cannot seek to {}: {}",
                o.offset,
                last_err()
            );
        }
        Ok(fd)
    }

    /// A deleted-but-open file: recreated in its directory with its contents, reopened with its
    /// flags, put at its offset, unlinked again.
    fn make_deleted(
        &mut self,
        o: &SharedObject,
        path: &str,
        directory: bool,
        size: u64,
        mode: u32,
        who: &str,
    ) -> Result<OwnedFd> {
        let p = std::path::Path::new(path);
        let dir = p.parent().unwrap_or(std::path::Path::new("/"));
        if !dir.is_dir() {
            bail!(
                "{who}: deleted file {path} cannot be recreated: its directory {} is gone",
                dir.display()
            );
        }
        let tmp_name = |i: u32| {
            dir.join(format!(
                ".ckpt-deleted-{}-{:x}-{i}",
                std::process::id(),
                o.key
            ))
        };
        if directory {
            let t = tmp_name(0);
            std::fs::create_dir(&t).map_err(|e| anyhow!("{who}: deleted directory {path}: {e}"))?;
            let c = cpath(&t.to_string_lossy())?;
            // SAFETY: open with a NUL-terminated path.
            let fd = unsafe {
                libc::open(
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            let fd = own_above(fd, self.high);
            let _ = std::fs::remove_dir(&t);
            return fd.map_err(|e| anyhow!("{who}: deleted directory {path}: {e}"));
        }
        if !o.has_data && size > 0 {
            self.warnings.push(format!(
                "the contents of deleted file {path} were not saved; it comes back empty"
            ));
        }
        // The original name when it is free (what /proc/PID/fd shows stays the same), else a
        // temporary one.
        let mut made = None;
        for i in 0..100u32 {
            let name = if i == 0 && !p.exists() {
                p.to_path_buf()
            } else {
                tmp_name(i)
            };
            let c = cpath(&name.to_string_lossy())?;
            // SAFETY: open with a NUL-terminated path.
            let fd = unsafe {
                libc::open(
                    c.as_ptr(),
                    libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                    0o600,
                )
            };
            if fd >= 0 {
                // SAFETY: a fresh fd we own.
                made = Some((unsafe { OwnedFd::from_raw_fd(fd) }, c));
                break;
            }
            if last_err().kind() != std::io::ErrorKind::AlreadyExists {
                bail!("{who}: deleted file {path}: {}", last_err());
            }
        }
        let Some((tmp, cname)) = made else {
            bail!("{who}: deleted file {path}: no free temporary name");
        };
        let result = (|| -> Result<OwnedFd> {
            write_all(tmp.as_raw_fd(), &o.data)?;
            if size > o.data.len() as u64 {
                // SAFETY: ftruncate on our fd.
                unsafe { libc::ftruncate(tmp.as_raw_fd(), size as libc::off_t) };
            }
            let proc_path = CString::new(format!("/proc/self/fd/{}", tmp.as_raw_fd()))?;
            let flags = reopen_flags(o.flags.first().copied().unwrap_or(libc::O_RDWR), false);
            // SAFETY: open with a NUL-terminated path.
            let fd = unsafe { libc::open(proc_path.as_ptr(), flags) };
            let fd = own_above(fd, self.high)?;
            // SAFETY: fchmod/lseek on our fds.
            unsafe {
                libc::fchmod(tmp.as_raw_fd(), mode & 0o7777);
                if libc::lseek(fd.as_raw_fd(), o.offset, libc::SEEK_SET) < 0 {
                    bail!("cannot seek to {}: {}", o.offset, last_err());
                }
            }
            Ok(fd)
        })();
        // SAFETY: unlink with a NUL-terminated path we created.
        unsafe { libc::unlink(cname.as_ptr()) };
        result.map_err(|e| anyhow!("{who}: deleted file {path}: {e:#}"))
    }
}

/// `shm_perm.mode` bit of a segment marked destroyed (`IPC_RMID` while attached).
const SHM_DEST: u32 = 0o1000;

/// `shmctl(id, IPC_STAT)`, or None if `id` names no segment we may read.
pub fn shm_stat(id: i32) -> Option<libc::shmid_ds> {
    // SAFETY: an all-zero shmid_ds is valid; IPC_STAT fills it.
    unsafe {
        let mut ds: libc::shmid_ds = std::mem::zeroed();
        (libc::shmctl(id, libc::IPC_STAT, &mut ds) == 0).then_some(ds)
    }
}

/// Marks destroyed (`IPC_RMID`) the segments made for segments that were: the restored
/// processes do it themselves once attached; this is for a restart that failed before they
/// did (the segment would stay forever). Only a segment that is still the one made here
/// (same id, creator = this process, same `shm_ctime`) is touched.
pub fn remove_made_sysv(segs: &[MadeSeg]) {
    // SAFETY: getpid has no failure mode.
    let me = unsafe { libc::getpid() };
    for s in segs {
        if let Some(ds) = shm_stat(s.id)
            && ds.shm_cpid == me
            && ds.shm_ctime == s.ctime
            && u32::from(ds.shm_perm.mode) & SHM_DEST == 0
        {
            // SAFETY: IPC_RMID takes no buffer.
            unsafe { libc::shmctl(s.id, libc::IPC_RMID, std::ptr::null_mut()) };
        }
    }
}

/// The segment the restored processes attach for `seg`, and a warning for the user:
/// 1. the segment of the checkpointed run itself when it is still there, unattached and
///    unchanged (same id, key, size, `shm_ctime`, owner): SysV segments outlive the processes
///    that were killed, so a restart in the same IPC namespace reuses it (no segment leaks per
///    restart cycle, and the id does not even change);
/// 2. for a key other than `IPC_PRIVATE` (and not marked destroyed): a new segment with that
///    key, or the existing one of that key when nobody has it attached and it has the same
///    size;
/// 3. else a new `IPC_PRIVATE` segment (a taken key is reported).
///
/// The contents do not matter here: every restored process copies its saved pages in.
pub fn sysv_segment(seg: &SysvSeg) -> Result<(i32, Option<String>)> {
    // SAFETY: geteuid has no failure mode.
    let euid = unsafe { libc::geteuid() };
    if !seg.removed
        && let Some(ds) = shm_stat(seg.real_id)
        && ds.shm_perm.__key == seg.key
        && ds.shm_segsz as u64 == seg.segsz
        && ds.shm_ctime == seg.ctime
        && ds.shm_nattch == 0
        && ds.shm_perm.uid == euid
        && u32::from(ds.shm_perm.mode) & SHM_DEST == 0
    {
        return Ok((seg.real_id, None));
    }
    let mode = (seg.mode & 0o777) as i32;
    let size = seg.segsz as usize;
    let mut warning = None;
    if seg.key != libc::IPC_PRIVATE && !seg.removed {
        // SAFETY: shmget has no pointer arguments.
        let id = unsafe { libc::shmget(seg.key, size, libc::IPC_CREAT | libc::IPC_EXCL | mode) };
        if id >= 0 {
            return Ok((id, None));
        }
        // SAFETY: as above; size 0 finds the existing segment of any size.
        let id = unsafe { libc::shmget(seg.key, 0, 0) };
        match (id >= 0).then(|| shm_stat(id)).flatten() {
            // Same size: the processes attach it over exactly the range they had.
            Some(ds) if ds.shm_nattch == 0 && ds.shm_segsz == size => return Ok((id, None)),
            _ => {
                warning = Some(format!(
                    "SysV shared memory key {:#x} is taken by a segment in use or of another \
                     size: the restored processes share a new IPC_PRIVATE segment instead \
                     (shmget of the key finds the other one)",
                    seg.key
                ))
            }
        }
    }
    // SAFETY: shmget has no pointer arguments.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, size, libc::IPC_CREAT | mode) };
    if id < 0 {
        bail!(
            "SysV shared memory segment {} ({} bytes): shmget: {}",
            seg.shmid,
            seg.segsz,
            last_err()
        );
    }
    Ok((id, warning))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Plan;
    use ckpt_format::image::{FdInfo, ImageHeader, ObjRef};

    fn read_fd(fd: RawFd, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        // SAFETY: reading into a buffer of n bytes.
        let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), n) };
        buf.truncate(got.max(0) as usize);
        buf
    }

    #[test]
    fn objects_are_made_above_high_with_data_flags_and_offsets() {
        let dir = std::env::temp_dir().join(format!("ckpt-objects-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f.txt");
        std::fs::write(&file, b"0123456789").unwrap();
        let fifo = dir.join("fifo");
        let gone = dir.join("gone.tmp");
        let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let obj = |key, kind, flags: Vec<i32>, offset, data: &[u8]| SharedObject {
            key,
            kind,
            flags,
            offset,
            has_data: !data.is_empty(),
            data: data.to_vec(),
        };
        let objects = vec![
            obj(
                1,
                ObjKind::Pipe { size: 65536 },
                vec![libc::O_RDONLY | libc::O_NONBLOCK, libc::O_WRONLY],
                0,
                b"in flight",
            ),
            obj(
                2,
                ObjKind::Fifo {
                    path: s(&fifo),
                    size: 0,
                },
                vec![libc::O_RDONLY, 0],
                0,
                b"fifo bytes",
            ),
            obj(
                3,
                ObjKind::File {
                    path: s(&file),
                    directory: false,
                    deleted: false,
                    size: 10,
                    mode: 0o644,
                },
                vec![libc::O_RDONLY],
                4,
                b"",
            ),
            obj(
                4,
                ObjKind::File {
                    path: s(&gone),
                    directory: false,
                    deleted: true,
                    size: 5,
                    mode: 0o600,
                },
                vec![libc::O_RDWR],
                2,
                b"hello",
            ),
        ];
        let fd = |fd, key, end| FdInfo {
            fd,
            object: Some(ObjRef { key, end }),
            ..Default::default()
        };
        let h = ImageHeader {
            vpid: 5,
            pid: 5,
            root: true,
            objects,
            fds: vec![
                fd(3, 1, 0),
                fd(4, 1, 1),
                fd(5, 2, 0),
                fd(6, 3, 0),
                fd(7, 4, 0),
                FdInfo {
                    fd: 40,
                    reinherit_from: Some(1000),
                    flags: libc::O_WRONLY,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let plan = Plan::build(&[("img", &h)]).unwrap();
        assert_eq!(plan.high_fd, 1001);
        let mut made = Made::new(plan.high_fd);
        made.take_inherited(&plan).unwrap();
        made.create_objects(&plan, &|_| "img".into(), None).unwrap();
        assert_eq!(made.warnings.len(), 1, "{:?}", made.warnings); // the FIFO was created
        for f in made.fds() {
            assert!(f >= plan.high_fd);
            // SAFETY: F_GETFD on our fd.
            assert_eq!(unsafe { libc::fcntl(f, libc::F_GETFD) }, libc::FD_CLOEXEC);
        }
        let src = |key, end| made.source(&Source::Object { key, end }).unwrap();
        // Pipe: bytes in flight, read end non-blocking as saved, write end blocking.
        assert_eq!(read_fd(src(1, 0), 64), b"in flight");
        // SAFETY: F_GETFL on our fds.
        unsafe {
            assert_ne!(libc::fcntl(src(1, 0), libc::F_GETFL) & libc::O_NONBLOCK, 0);
            assert_eq!(libc::fcntl(src(1, 1), libc::F_GETFL) & libc::O_NONBLOCK, 0);
        }
        assert_eq!(read_fd(src(2, 0), 64), b"fifo bytes");
        assert_eq!(read_fd(src(3, 0), 64), b"456789");
        assert_eq!(read_fd(src(4, 0), 64), b"llo");
        assert!(
            !gone.exists(),
            "the recreated deleted file must be unlinked again"
        );
        // Nothing on fd 1000 here: /dev/null, write-only.
        let null = made
            .source(&Source::Inherit {
                from: 1000,
                accmode: libc::O_WRONLY,
            })
            .unwrap();
        // SAFETY: F_GETFL on our fd.
        assert_eq!(
            unsafe { libc::fcntl(null, libc::F_GETFL) } & libc::O_ACCMODE,
            libc::O_WRONLY
        );
        drop(made);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn seg_of(id: i32, removed: bool) -> SysvSeg {
        let ds = shm_stat(id).expect("IPC_STAT of our own segment");
        SysvSeg {
            shmid: id,
            real_id: id,
            key: ds.shm_perm.__key,
            mode: u32::from(ds.shm_perm.mode) & 0o777,
            segsz: ds.shm_segsz as u64,
            ctime: ds.shm_ctime,
            removed,
        }
    }

    fn rmid(id: i32) {
        // SAFETY: IPC_RMID takes no buffer.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    }

    #[test]
    fn sysv_segments_are_reused_when_unused_else_made() {
        // SAFETY: shmget/shmat/shmdt on segments this test creates and removes.
        unsafe {
            let old = libc::shmget(libc::IPC_PRIVATE, 5000, libc::IPC_CREAT | 0o600);
            assert!(old >= 0, "shmget: {}", last_err());
            let seg = seg_of(old, false);
            // Still there, unattached, unchanged: the same segment.
            assert_eq!(sysv_segment(&seg).unwrap(), (old, None));
            // Attached by someone: a new one of the same size and mode.
            let p = libc::shmat(old, std::ptr::null(), 0);
            assert_ne!(p as isize, -1);
            let (new, w) = sysv_segment(&seg).unwrap();
            assert!(new != old && w.is_none());
            let ds = shm_stat(new).unwrap();
            assert_eq!((ds.shm_segsz, ds.shm_perm.mode & 0o777), (5000, 0o600));
            rmid(new);
            libc::shmdt(p);
            // Marked destroyed at checkpoint: never the old one; ckpt-restart removes what
            // it made if nobody marked it.
            let (new, _) = sysv_segment(&seg_of(old, true)).unwrap();
            assert_ne!(new, old);
            let made = MadeSeg {
                id: new,
                ctime: shm_stat(new).unwrap().shm_ctime,
            };
            remove_made_sysv(&[made]);
            assert!(shm_stat(new).is_none(), "segment {new} was not removed");
            rmid(old);

            // A key: made with it when free, reused when its segment is unattached.
            let dir = std::env::temp_dir().join(format!("ckpt-sysv-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let c = CString::new(dir.to_string_lossy().as_bytes()).unwrap();
            let key = libc::ftok(c.as_ptr(), b'T' as i32);
            assert_ne!(key, -1);
            let mut seg = seg_of(libc::shmget(libc::IPC_PRIVATE, 100, 0o600), false);
            rmid(seg.real_id); // gone: as after a reboot
            seg.key = key;
            let (k1, _) = sysv_segment(&seg).unwrap();
            assert_eq!(shm_stat(k1).unwrap().shm_perm.__key, key);
            assert_eq!(sysv_segment(&seg).unwrap(), (k1, None));
            // In use by someone else, or of another size: IPC_PRIVATE, with a warning.
            let p = libc::shmat(k1, std::ptr::null(), 0);
            let (k2, w) = sysv_segment(&seg).unwrap();
            assert!(k2 != k1 && w.unwrap().contains("is taken"));
            assert_eq!(shm_stat(k2).unwrap().shm_perm.__key, libc::IPC_PRIVATE);
            libc::shmdt(p);
            seg.segsz = 200;
            let (k3, w) = sysv_segment(&seg).unwrap();
            assert!(k3 != k1 && w.unwrap().contains("of another size"));
            assert_eq!(shm_stat(k3).unwrap().shm_segsz, 200);
            rmid(k3);
            rmid(k1);
            rmid(k2);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let h = ImageHeader {
            vpid: 5,
            pid: 5,
            objects: vec![SharedObject {
                key: 9,
                kind: ObjKind::File {
                    path: "/nonexistent/ckpt/x".into(),
                    directory: false,
                    deleted: false,
                    size: 0,
                    mode: 0o644,
                },
                flags: vec![libc::O_RDONLY],
                offset: 0,
                has_data: false,
                data: vec![],
            }],
            ..Default::default()
        };
        let plan = Plan::build(&[("img", &h)]).unwrap();
        let err = Made::new(plan.high_fd)
            .create_objects(&plan, &|_| "img".into(), None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "img: file /nonexistent/ckpt/x needed by the image: No such file or directory (os error 2)"
        );
    }
}
