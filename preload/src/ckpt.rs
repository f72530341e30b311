//! The checkpoint thread: talks to the coordinator, runs the checkpoint sequence (barriers,
//! suspension, plugins, image, commit, resume) and, in a restarted process, the restart work.
//!
//! Between checkpoints it blocks in `recv` on the coordinator socket. Once user threads are
//! suspended it must not call glibc's malloc, stdio or dlsym (see DESIGN principle 4): Rust
//! allocation goes to the private allocator, I/O is plain syscalls through std.

use crate::{alloc, restart, sys, threads, writer};
use ckpt_format::image::{FdInfo, ImageHeader, PeerInfo, Rlimit, ZombieChild};
use ckpt_format::raw;
use ckpt_format::wire::{self, Msg};
use ckpt_plugins::api::{CkptContext, Plugin, RestartContext};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything the checkpoint thread keeps between checkpoints (lives in restored memory).
pub struct Worker {
    pub coord: Option<TcpStream>,
    pub coord_addr: SocketAddr,
    pub comp_id: u64,
    pub vpid: u64,
    pub generation: u64,
    pub num_peers: u32,
    pub ckpt_dir: PathBuf,
    pub level: u32,
    pub program: String,
    pub argv: Vec<String>,
    pub plugins: Vec<Box<dyn Plugin>>,
    pub suspend_timeout_ms: u64,
    /// `CKPT_STATS=1`: log suspend latency and image figures on stderr (for ckpt-bench).
    pub stats: bool,
    /// Our pid as seen from outside our pid namespace (restarted with identical pids), else 0.
    pub outer_pid: i32,
    /// vpid of the parent process when it is in the computation.
    pub parent: Option<u64>,
    /// This is the process `ckpt-launch` started.
    pub root: bool,
    /// Every process of the computation at the last checkpoint (from barrier `suspended`).
    pub peers: Vec<PeerInfo>,
    /// State recorded at the last checkpoint and used at restart.
    saved_fds: Vec<FdInfo>,
    saved_sigactions: Vec<(i32, sys::KSigaction)>,
    saved_cwd: String,
    saved_umask: u32,
}

const HOST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a worker waits for the coordinator during a checkpoint (it has its own timeouts).
const CKPT_RECV_TIMEOUT: Duration = Duration::from_secs(3600);

pub fn log(msg: &str) {
    let s = format!("ckpt[{}]: {msg}\n", sys::getpid());
    sys::write_all(2, s.as_bytes());
}

/// Resolves `host` without getaddrinfo (which may malloc): IP literals and "localhost" only;
/// the launcher resolves names before exporting them.
pub fn parse_addr(host: &str, port: u16) -> Option<SocketAddr> {
    let h = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

impl Worker {
    pub fn new(
        coord_addr: SocketAddr,
        ckpt_dir: PathBuf,
        level: u32,
        program: String,
        argv: Vec<String>,
        plugins: Vec<Box<dyn Plugin>>,
    ) -> Worker {
        Worker {
            coord: None,
            coord_addr,
            comp_id: 0,
            vpid: 0,
            generation: 0,
            num_peers: 1,
            ckpt_dir,
            level,
            program,
            argv,
            plugins,
            // From the constructor's snapshot, not std::env: a forked child must not take the
            // environment lock another thread of its parent may have held at fork time.
            suspend_timeout_ms: crate::procs::config_env("CKPT_SUSPEND_TIMEOUT_MS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(10_000),
            stats: crate::procs::config_env("CKPT_STATS").is_some(),
            outer_pid: 0,
            parent: None,
            root: false,
            peers: Vec::new(),
            saved_fds: Vec::new(),
            saved_sigactions: Vec::new(),
            saved_cwd: String::new(),
            saved_umask: 0o022,
        }
    }

    /// Connects and says hello; fills comp_id/vpid/generation from the welcome.
    pub fn join(&mut self, kind: wire::JoinKind) -> Result<(), String> {
        let restarting = kind == wire::JoinKind::Restart;
        let s = TcpStream::connect_timeout(&self.coord_addr, HOST_TIMEOUT)
            .map_err(|e| format!("cannot reach the coordinator at {}: {e}", self.coord_addr))?;
        let _ = s.set_nodelay(true);
        let s = move_high(s);
        let stream = match &self.coord {
            // Restart: the old connection's fd number is part of the restored program's view of
            // its fd table (it was skipped at checkpoint); put the new socket on it.
            Some(old) if restarting => {
                let n = old.as_raw_fd();
                if s.as_raw_fd() == n {
                    // The free number was the old one: the new socket already sits there.
                    std::mem::forget(self.coord.take());
                    s
                } else {
                    // SAFETY: dup3 onto the number our old TcpStream owns; dropping `s` closes
                    // the temporary fd and the old TcpStream object now owns the new socket.
                    if unsafe { libc::dup3(s.as_raw_fd(), n, libc::O_CLOEXEC) } < 0 {
                        return Err(format!(
                            "dup3 coordinator socket: {}",
                            std::io::Error::last_os_error()
                        ));
                    }
                    drop(s);
                    self.coord.take().expect("checked above")
                }
            }
            _ => s,
        };
        let mut st = stream;
        let hello = Msg::HelloWorker {
            comp_id: restarting.then_some(self.comp_id),
            vpid: Some(match kind {
                wire::JoinKind::Fresh | wire::JoinKind::Forked => sys::getpid() as u64,
                wire::JoinKind::Exec | wire::JoinKind::Restart => self.vpid,
            }),
            restarting,
            num_peers: if restarting { self.num_peers } else { 0 },
            generation: self.generation,
            // The coordinator lists the pid users can signal from where they are.
            pid: ckpt_plugins::pids::outer_pid().unwrap_or(if self.outer_pid != 0 {
                self.outer_pid
            } else {
                sys::getpid()
            }),
            host: hostname(),
            program: self.program.clone(),
            join: kind,
            parent: self.parent,
        };
        let _ = st.set_read_timeout(Some(HOST_TIMEOUT));
        wire::send(&mut st, &hello).map_err(|e| format!("coordinator hello: {e}"))?;
        match wire::recv(&mut st) {
            Ok(Msg::Welcome {
                comp_id,
                vpid,
                generation,
            }) => {
                self.comp_id = comp_id;
                self.vpid = vpid;
                self.generation = generation;
            }
            Ok(Msg::Error { message }) => return Err(format!("coordinator refused us: {message}")),
            Ok(other) => return Err(format!("unexpected coordinator answer {other:?}")),
            Err(e) => return Err(format!("coordinator hello: {e}")),
        }
        let _ = st.set_read_timeout(None);
        crate::procs::COORD_FD.store(st.as_raw_fd(), core::sync::atomic::Ordering::Release);
        crate::procs::VPID.store(self.vpid, core::sync::atomic::Ordering::Release);
        self.coord = Some(st);
        Ok(())
    }

    fn send(&mut self, m: &Msg) -> Result<(), String> {
        let s = self.coord.as_mut().ok_or("not connected")?;
        wire::send(s, m).map_err(|e| format!("coordinator: {e}"))
    }

    fn recv(&mut self) -> Result<Msg, String> {
        let s = self.coord.as_mut().ok_or("not connected")?;
        wire::recv(s).map_err(|e| format!("coordinator: {e}"))
    }

    /// Waits for a barrier release. `Err` = abort the checkpoint.
    fn barrier(&mut self, name: &str) -> Result<(), String> {
        self.allgather(name, None).map(|_| ())
    }

    /// A barrier where every arrival contributes `data`; returns all contributions by vpid.
    fn allgather(
        &mut self,
        name: &str,
        data: Option<Vec<u8>>,
    ) -> Result<Vec<wire::PeerData>, String> {
        let vpid = self.vpid;
        self.send(&Msg::Barrier {
            name: name.to_string(),
            data: data.map(|data| wire::PeerData { vpid, data }),
        })?;
        loop {
            match self.recv()? {
                Msg::BarrierReleased { name: n, data } if n == name => return Ok(data),
                Msg::Commit {
                    commit: false,
                    reason,
                    ..
                } => {
                    return Err(reason.unwrap_or_else(|| "aborted by the coordinator".into()));
                }
                Msg::Kill => kill_self(),
                other => log(&format!(
                    "ignoring {other:?} while waiting at barrier {name}"
                )),
            }
        }
    }

    fn core_fds(&self) -> Vec<i32> {
        let outer_proc = ckpt_plugins::pids::outer_proc();
        self.coord
            .as_ref()
            .map(|s| s.as_raw_fd())
            .into_iter()
            .chain((outer_proc >= 0).then_some(outer_proc))
            .collect()
    }

    fn image_name(&self) -> String {
        let prog: String = self
            .program
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("ckpt_{prog}_{:016x}_{}.img", self.comp_id, self.vpid)
    }

    fn header(&self, generation: u64) -> ImageHeader {
        ImageHeader {
            format_version: raw::FORMAT_VERSION,
            arch: ckpt_format::image::current_arch().to_string(),
            kernel_release: ckpt_format::image::host::kernel_release(),
            glibc_version: ckpt_format::image::host::glibc_version(),
            computation_id: self.comp_id,
            generation,
            vpid: self.vpid,
            num_peers: self.peers.len().max(1) as u32,
            program: self.program.clone(),
            argv: self.argv.clone(),
            cwd: std::env::current_dir()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            hostname: hostname(),
            // pid, pgid, sid and zombie pids are recorded as the program sees them (virtual
            // after a restart without namespaces): the restart plan matches them with each
            // other and with the old pids it recreates.
            pid: ckpt_plugins::pids::r2v(sys::getpid()),
            created_unix_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            umask: read_umask(),
            rlimits: rlimits(),
            threads: Vec::new(),
            fds: Vec::new(),
            files: Vec::new(),
            special: Vec::new(),
            memory_bytes: 0,
            nregions: 0,
            parent: self.parent_in_computation(),
            // SAFETY: plain queries about ourselves.
            pgid: ckpt_plugins::pids::r2v(unsafe { libc::syscall(libc::SYS_getpgid, 0) } as i32),
            // SAFETY: as above.
            sid: ckpt_plugins::pids::r2v(unsafe { libc::syscall(libc::SYS_getsid, 0) } as i32),
            root: self.root,
            zombies: self.zombie_children(),
            peers: self.peers.clone(),
            monotonic_ns: ckpt_format::image::clock_ns(libc::CLOCK_MONOTONIC),
            boottime_ns: ckpt_format::image::clock_ns(libc::CLOCK_BOOTTIME),
            ..Default::default()
        }
    }

    /// The parent's vpid if our parent is a process of the computation (an orphan's parent is
    /// init or a subreaper outside it).
    fn parent_in_computation(&self) -> Option<u64> {
        // The kernel's ppid (not the pids plugin's virtual one): `peers` hold kernel pids.
        // SAFETY: getppid cannot fail.
        let ppid = unsafe { libc::syscall(libc::SYS_getppid) } as i32;
        self.peers
            .iter()
            .find(|p| p.pid == ppid && p.vpid != self.vpid)
            .map(|p| p.vpid)
    }

    /// Children that exited but were not reaped: restart recreates them as zombies so the
    /// program's `wait` still finds their status. Children that are neither processes of the
    /// computation nor zombies are reported (they will not come back).
    fn zombie_children(&self) -> Vec<ZombieChild> {
        let mut kids: Vec<i32> = Vec::new();
        let mut tasks: Vec<i32> = Vec::new();
        let _ = ckpt_plugins::rawdir::list_numeric_dir(c"/proc/self/task", &mut tasks);
        for t in tasks {
            let path = format!("/proc/self/task/{t}/children");
            if let Ok(txt) = std::fs::read_to_string(&path) {
                kids.extend(txt.split_whitespace().filter_map(|w| w.parse::<i32>().ok()));
            }
        }
        let mut out = Vec::new();
        for k in kids {
            if self.peers.iter().any(|p| p.pid == k) {
                continue;
            }
            // A child that has just exited may still be inside do_exit: give it a moment.
            let mut found = None;
            for _ in 0..100 {
                // SAFETY: siginfo out-buffer; WNOWAIT leaves the zombie in place.
                let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
                // The raw syscall: `k` is a kernel pid, which the waitid wrapper would take
                // for a virtual one.
                // SAFETY: waitid on our own child without reaping it.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_waitid,
                        libc::P_PID,
                        k as libc::id_t,
                        &mut si as *mut libc::siginfo_t,
                        libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                        std::ptr::null_mut::<libc::rusage>(),
                    )
                } as i32;
                // SAFETY: si_pid/si_status are valid after a successful waitid.
                let (pid, status) = unsafe { (si.si_pid(), si.si_status()) };
                if r == 0 && pid == k {
                    let ws = if si.si_code == libc::CLD_EXITED {
                        (status & 0xff) << 8
                    } else if si.si_code == libc::CLD_DUMPED {
                        (status & 0x7f) | 0x80
                    } else {
                        status & 0x7f
                    };
                    found = Some(ws);
                    break;
                }
                if r != 0 {
                    break; // not our child any more (reaped meanwhile)
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            match found {
                Some(status) => out.push(ZombieChild {
                    pid: ckpt_plugins::pids::r2v(k),
                    status,
                }),
                None => {
                    if std::fs::metadata(format!("/proc/{k}")).is_ok() {
                        log(&format!(
                            "child {k} is not under checkpoint control (static or setuid program, or a raw clone); it will not be restarted"
                        ));
                    }
                }
            }
        }
        out
    }

    /// One whole checkpoint. Returns only when user threads run again (or, in a restarted
    /// process, after the restart work).
    fn checkpoint(&mut self, generation: u64, dir: Option<String>) {
        let dir = dir
            .map(PathBuf::from)
            .unwrap_or_else(|| self.ckpt_dir.clone());
        let final_path = dir.join(self.image_name());
        let tmp = dir.join(format!("{}.tmp", self.image_name()));
        // No fork or exec may be half done while we are frozen: close the gate and wait for
        // those in flight (their children join before the gate drains, so they take part).
        let drained = crate::procs::gate_close_and_drain(15_000);
        if let Err(e) = self.barrier("suspend") {
            log(&format!("checkpoint {generation} aborted: {e}"));
            return;
        }
        let t0 = sys::monotonic_ns();
        // The compressor threads must exist before anything is frozen (creating a thread
        // takes glibc locks); they are never suspended.
        crate::compress::ensure(self.level);
        let suspended = drained
            .and_then(|()| threads::suspend_all(self.suspend_timeout_ms, &crate::compress::tids()));
        let suspend_us = (sys::monotonic_ns() - t0) / 1000;
        let mut warnings_early = Vec::new();
        // suspend_all has already released the threads if it failed.
        let threads_held = suspended.is_ok();
        if threads_held {
            // Our threads are frozen: push out what they sent but the kernel still holds
            // (TCP send queues), so that once every process passed 'suspended' every byte in
            // flight sits in a receive queue, where the checkpoint hooks find it.
            for p in self.plugins.iter_mut() {
                p.drain(&mut warnings_early);
            }
        }
        // Everybody is frozen once this releases; each arrival says who it is, so every image
        // records the same list of processes.
        let me = PeerInfo {
            vpid: self.vpid,
            pid: sys::getpid(),
            program: self.program.clone(),
        };
        // With it, whether this process needs the settle step (a plugin hook that runs once
        // every process is frozen, before any records anything).
        // And each plugin's note for the others (one per plugin, in plugin order).
        let notes: Vec<Vec<u8>> = if threads_held {
            self.plugins.iter().map(|p| p.settle_note()).collect()
        } else {
            Vec::new()
        };
        let wants_settle = threads_held
            && (self.plugins.iter().any(|p| p.wants_settle())
                || notes.iter().any(|n| !n.is_empty()));
        let mine = rmp_serde::to_vec(&(&me, wants_settle, &notes)).unwrap_or_default();
        let settle;
        // Per plugin: the notes of every process.
        let mut all_notes: Vec<Vec<Vec<u8>>> = vec![Vec::new(); self.plugins.len()];
        match self.allgather("suspended", Some(mine)) {
            Ok(data) => {
                type Arrival = (PeerInfo, bool, Vec<Vec<u8>>);
                let arrivals: Vec<Arrival> = data
                    .iter()
                    .filter_map(|d| rmp_serde::from_slice::<Arrival>(&d.data).ok())
                    .collect();
                settle = arrivals.iter().any(|a| a.1);
                for (_, _, n) in &arrivals {
                    for (i, note) in n.iter().enumerate().take(all_notes.len()) {
                        if !note.is_empty() {
                            all_notes[i].push(note.clone());
                        }
                    }
                }
                self.peers = arrivals.into_iter().map(|a| a.0).collect();
                if self.peers.is_empty() {
                    self.peers.push(me);
                }
                self.num_peers = self.peers.len() as u32;
            }
            Err(e) => {
                if threads_held {
                    threads::resume_all();
                }
                log(&format!("checkpoint {generation} aborted: {e}"));
                return;
            }
        }
        if settle {
            // Every process decided the same from the same arrivals: all of them come here.
            if threads_held {
                for (p, notes) in self.plugins.iter_mut().zip(&all_notes) {
                    p.settle(&self.peers, notes, &mut warnings_early);
                }
            }
            if let Err(e) = self.barrier("settled") {
                if threads_held {
                    threads::resume_all();
                }
                log(&format!("checkpoint {generation} aborted: {e}"));
                return;
            }
        }
        let mut warnings = warnings_early;
        let result = suspended.and_then(|()| self.write_image(generation, &tmp, &mut warnings));
        let (restarted, result) = match result {
            Ok(None) => (true, Ok(0)),
            Ok(Some(o)) => {
                warnings.extend(o.warnings);
                (false, Ok(o.bytes))
            }
            Err(e) => (false, Err(e)),
        };
        if restarted {
            self.after_restart();
            return;
        }
        if self.stats {
            log(&format!(
                "stats: suspended {} threads in {suspend_us} us; image {:?}",
                threads::parked_slots().len(),
                result
            ));
        }
        let (bytes, error) = match &result {
            Ok(b) => (*b, None),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                (0, Some(e.clone()))
            }
        };
        let _ = self.send(&Msg::ImageWritten {
            generation,
            path: error
                .is_none()
                .then(|| final_path.to_string_lossy().into_owned()),
            bytes,
            error: error.clone(),
            warnings,
        });
        let commit = loop {
            match self.recv() {
                Ok(Msg::Commit { commit, .. }) => break commit,
                Ok(Msg::Kill) => kill_self(),
                Ok(other) => log(&format!("ignoring {other:?} while waiting for commit")),
                Err(e) => {
                    log(&format!(
                        "checkpoint {generation}: {e}; discarding the image"
                    ));
                    break false;
                }
            }
        };
        if commit && error.is_none() {
            if let Err(e) = std::fs::rename(&tmp, &final_path) {
                log(&format!(
                    "cannot rename {} to {}: {e}",
                    tmp.display(),
                    final_path.display()
                ));
            } else if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            self.generation = generation;
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
        for p in self.plugins.iter_mut() {
            p.resume();
        }
        // Resumed goes out before the threads run: the image is in place now, and a program
        // that exits at once must not take the message with it.
        let _ = self.send(&Msg::Resumed { generation });
        if threads_held {
            threads::resume_all();
        }
    }

    /// Records plugin state and writes the image. `Ok(None)`: we are a restarted process.
    fn write_image(
        &mut self,
        generation: u64,
        tmp: &Path,
        warnings: &mut Vec<String>,
    ) -> Result<Option<writer::Outcome>, String> {
        let mut header = self.header(generation);
        let core_fds = self.core_fds();
        let plug_result = {
            let mut ctx = CkptContext {
                core_fds: &core_fds,
                header: &mut header,
                warnings,
                vpid: self.vpid,
                peers: &self.peers,
            };
            let mut r = Ok(());
            for p in self.plugins.iter_mut() {
                if let Err(e) = p.checkpoint(&mut ctx) {
                    r = Err(format!("{}: {e}", p.name()));
                    break;
                }
            }
            r
        };
        plug_result?;
        // Main thread = the slot whose tid is the pid.
        let pid = sys::getpid();
        let slots = threads::parked_slots();
        match slots
            .iter()
            .position(|s| s.tid.load(core::sync::atomic::Ordering::Relaxed) == pid)
        {
            Some(i) => restart::MAIN_SLOT.store(i, core::sync::atomic::Ordering::Relaxed),
            None => {
                return Err(
                    "the main thread has exited; cannot checkpoint a process without it".into(),
                );
            }
        }
        header.threads = slots
            .iter()
            .map(|s| ckpt_format::image::ThreadInfo {
                tid: s.tid.load(core::sync::atomic::Ordering::Relaxed),
                fs_base: s.fs_base.load(core::sync::atomic::Ordering::Relaxed),
                is_main: s.tid.load(core::sync::atomic::Ordering::Relaxed) == pid,
                is_ckpt_thread: false,
            })
            .collect();
        self.saved_fds = header.fds.clone();
        self.saved_cwd = header.cwd.clone();
        self.saved_umask = header.umask;
        // What the restarted process tells the coordinator (an exec'd image never learned its
        // parent's vpid: the coordinator had it from the place kept during the exec).
        if header.parent.is_some() {
            self.parent = header.parent;
        }
        self.saved_sigactions = save_sigactions();
        // SAFETY: only the checkpoint thread writes CAPS, with user threads stopped.
        unsafe { *restart::CAPS.get() = sys::capget(pid) };
        // SAFETY: JOB is only used by this thread.
        unsafe {
            *writer::JOB.get() = Some(writer::Job {
                tmp: tmp.to_path_buf(),
                header,
                level: self.level,
            });
            *writer::RESULT.get() = None;
        }
        self.generation = generation;
        alloc::scratch_begin();
        // SAFETY: write_job only touches JOB/RESULT; see sys::ckpt_point.
        let r = unsafe { sys::ckpt_point(writer::write_job) };
        alloc::scratch_off();
        if r == 1 {
            // Restarted: JOB's header lives in the heap (consistent), its result was never set.
            // SAFETY: single-threaded use of JOB.
            unsafe { *writer::JOB.get() = None };
            alloc::scratch_release();
            return Ok(None);
        }
        let outcome = writer::take_result();
        alloc::scratch_release();
        outcome.map(Some)
    }

    /// The restart work, on the recreated checkpoint thread, user threads still held.
    fn after_restart(&mut self) {
        // SAFETY: recorded by this thread at startup; the clone gave us the same TCB.
        let me = unsafe { &*restart::CKPT_THREAD.as_ptr() };
        crate::glibc::fix_thread(me.fs_base, 0, me.robust_head, me.robust_len);
        block_signals_in_ckpt_thread();
        crate::compress::forget_threads();
        // SAFETY: ARGS was copied by the entry before this thread was created.
        let args = unsafe { &*restart::ARGS.as_ptr() };
        if args.outer_pid != 0 {
            // SAFETY: CAPS was written at checkpoint time.
            sys::capset_self(unsafe { &*restart::CAPS.as_ptr() });
        }
        self.outer_pid = args.outer_pid as i32;
        if args.outer_proc > 2 {
            // Out of the way of the fds the files plugin installs next.
            // Not on the number of the restored coordinator socket: the join puts the new
            // connection there.
            let fd = args.outer_proc as i32;
            let avoid = self.coord.as_ref().map(|s| s.as_raw_fd());
            // SAFETY: duplicating the fd ckpt-restart handed us, then closing the original.
            let mut high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, high_fd_floor()) };
            if high >= 0 && Some(high) == avoid {
                // SAFETY: as above.
                let next = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, high + 1) };
                // SAFETY: as above.
                unsafe { libc::close(high) };
                high = next;
            }
            // SAFETY: as above.
            unsafe { libc::close(fd) };
            ckpt_plugins::pids::set_outer_proc(high);
        } else {
            // The number restored with memory belongs to the previous run.
            ckpt_plugins::pids::set_outer_proc(-1);
        }
        if let Err(e) = self.restart_work(args) {
            log(&format!("restart failed: {e}"));
            sys::exit_group(75);
        }
        threads::end_suspension_after_restart();
        restart::release_threads();
        if self.coord.is_some() {
            let _ = self.send(&Msg::Resumed {
                generation: self.generation,
            });
        }
        if args.flags & raw::RA_MM_NOT_RESTORED != 0 {
            log(
                "note: the heap break could not be restored (PR_SET_MM_MAP refused); malloc will use mmap",
            );
        }
    }

    fn restart_work(&mut self, args: &raw::RestartArgs) -> Result<(), String> {
        for (sig, sa) in &self.saved_sigactions {
            // SAFETY: the handlers point into restored memory, as they did at checkpoint time.
            unsafe { sys::rt_sigaction(*sig, Some(sa), None) };
        }
        if !self.saved_cwd.is_empty() && std::env::set_current_dir(&self.saved_cwd).is_err() {
            return Err(format!(
                "cannot change to the working directory {}",
                self.saved_cwd
            ));
        }
        // SAFETY: umask has no failure mode.
        unsafe { libc::umask(self.saved_umask as libc::mode_t) };
        let core_fds = self.core_fds();
        let fds = self.saved_fds.clone();
        let mut warnings = Vec::new();
        for p in self.plugins.iter_mut() {
            let mut ctx = RestartContext {
                core_fds: &core_fds,
                fds: &fds,
                warnings: &mut warnings,
            };
            p.restart(&mut ctx)
                .map_err(|e| format!("{}: {e}", p.name()))?;
        }
        for w in warnings {
            log(&w);
        }
        let dir = restart::c_field(&args.ckpt_dir);
        if !dir.is_empty() {
            self.ckpt_dir = PathBuf::from(&dir);
        }
        let host = restart::c_field(&args.coord_host);
        match parse_addr(&host, args.coord_port) {
            Some(a) => {
                self.coord_addr = a;
                crate::procs::update_config(&host, args.coord_port, &dir, a);
                if let Err(e) = self.join(wire::JoinKind::Restart) {
                    log(&format!("{e}; this process continues without checkpoints"));
                    self.coord = None;
                } else {
                    // Every restarted process says which kernel pid it has now: after a restart
                    // without pid namespaces the pids plugin translates with this table.
                    let mine = (self.vpid, sys::getpid());
                    match self.allgather("restart", rmp_serde::to_vec(&mine).ok()) {
                        Ok(data) => {
                            let mut pairs: Vec<(u64, i32)> = data
                                .iter()
                                .filter_map(|d| rmp_serde::from_slice(&d.data).ok())
                                .collect();
                            if pairs.is_empty() {
                                pairs.push(mine);
                            }
                            // Our zombie children, recreated with new pids in fallback mode.
                            ckpt_plugins::pids::zombie_pairs(&mut pairs);
                            // Our threads' tids (each recreated thread stored its new one).
                            for s in crate::threads::parked_slots() {
                                let v = s.vtid.load(std::sync::atomic::Ordering::Acquire);
                                if v > 0 && v as u64 != self.vpid {
                                    pairs.push((
                                        v as u64,
                                        s.tid.load(std::sync::atomic::Ordering::Acquire),
                                    ));
                                }
                            }
                            ckpt_plugins::pids::set_map(&pairs);
                        }
                        Err(e) => log(&format!("restart barrier: {e}")),
                    }
                }
            }
            None => {
                log(&format!(
                    "coordinator host {host:?} is not an IP address; continuing without checkpoints"
                ));
                self.coord = None;
            }
        }
        Ok(())
    }

    /// The thread's main loop.
    pub fn run(&mut self) {
        loop {
            if self.coord.is_none() {
                // Disconnected: nothing to do but stay out of the way.
                std::thread::sleep(Duration::from_secs(3600));
                continue;
            }
            let _ = self.coord.as_ref().map(|s| s.set_read_timeout(None));
            match self.recv() {
                Ok(Msg::DoCheckpoint {
                    generation,
                    ckpt_dir,
                }) => {
                    let _ = self
                        .coord
                        .as_ref()
                        .map(|s| s.set_read_timeout(Some(CKPT_RECV_TIMEOUT)));
                    self.checkpoint(generation, ckpt_dir);
                    // Every path out of a checkpoint (done, aborted, restarted) reopens it.
                    crate::procs::gate_open();
                }
                Ok(Msg::Kill) => kill_self(),
                Ok(Msg::Error { message }) => log(&format!("coordinator: {message}")),
                Ok(other) => log(&format!(
                    "unexpected message from the coordinator: {other:?}"
                )),
                Err(e) => {
                    log(&format!(
                        "lost the coordinator ({e}); this process continues without checkpoints"
                    ));
                    self.coord = None;
                }
            }
        }
    }
}

/// Moves the coordinator socket to a high fd number, out of the way of programs that pick
/// small numbers themselves (`exec 3>file` in a shell, `dup2(x, 3)`).
fn move_high(s: TcpStream) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: duplicating our own socket above the floor.
    let n = unsafe { libc::fcntl(s.as_raw_fd(), libc::F_DUPFD_CLOEXEC, high_fd_floor()) };
    if n < 0 {
        return s;
    }
    drop(s);
    // SAFETY: n is a fresh fd we own.
    unsafe { TcpStream::from_raw_fd(n) }
}

/// Lowest fd number for the core's own fds (coordinator socket, outer /proc).
fn high_fd_floor() -> i32 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (lim.rlim_cur.min(1024) as i32 - 64).max(100)
}

fn kill_self() -> ! {
    // SAFETY: SIGKILL to ourselves.
    unsafe { libc::kill(sys::getpid(), libc::SIGKILL) };
    sys::exit_group(137)
}

/// The checkpoint thread takes no asynchronous signal: they go to user threads. glibc's two
/// internal signals (SIGCANCEL 32, SIGSETXID 33) stay unblocked or setuid() would hang.
pub fn block_signals_in_ckpt_thread() {
    let mut mask: u64 = !0;
    for s in [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGTRAP,
        libc::SIGSYS,
        32,
        33,
    ] {
        mask &= !(1u64 << (s - 1));
    }
    sys::sigprocmask(sys::SIG_SETMASK, Some(mask));
}

fn save_sigactions() -> Vec<(i32, sys::KSigaction)> {
    let mut v = Vec::new();
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut old = sys::KSigaction::default();
        // SAFETY: query only.
        if unsafe { sys::rt_sigaction(sig, None, Some(&mut old)) } == 0 && old.handler != 0 {
            v.push((sig, old));
        }
    }
    v
}

fn read_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

fn rlimits() -> Vec<Rlimit> {
    (0..16u32)
        .filter_map(|r| {
            let mut l = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: valid out-pointer.
            (unsafe { libc::getrlimit(r as _, &mut l) } == 0).then_some(Rlimit {
                resource: r,
                soft: l.rlim_cur,
                hard: l.rlim_max,
            })
        })
        .collect()
}

pub fn hostname() -> String {
    ckpt_format::image::host::name()
}
