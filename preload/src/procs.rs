//! Processes joining and leaving the computation: `fork` (and `vfork`, `_Fork`, `daemon`),
//! every `exec` variant, `posix_spawn[p]`, `system`, `popen`/`pclose`.
//!
//! * A forked child joins the coordinator (its own connection and checkpoint thread) *inside*
//!   the `fork` wrapper, before `fork` returns in either process: the parent waits for the
//!   child's vpid on a pipe. The parent holds this process's **fork/exec gate** meanwhile; the
//!   checkpoint thread closes and drains the gate before barrier `suspend`, so a fork racing a
//!   checkpoint is either a participant of it or not started yet — never half.
//! * `exec` rebuilds the environment so the new program is preloaded with the same settings
//!   even if the program rewrote its environment (the user's own `LD_PRELOAD` entries are kept
//!   after ours), tells the coordinator (`Exec`: keep my place), and the new image joins with
//!   `JoinKind::Exec` and the same vpid (`CKPT_VPID`).
//! * glibc's `posix_spawn`, `system`, `popen` and `daemon` create processes with internal
//!   `clone`/`fork`/`execve` calls we cannot interpose, so they are implemented here on our
//!   fork and exec (POSIX semantics; `posix_spawn` reads glibc's file-action array, whose
//!   layout is stable since glibc 2.29).
//! * `vfork` is `fork` (the join cannot run in a child that borrows its parent's memory).
//! * `clone()` making a process with its own memory (no `CLONE_VM`, no `CLONE_THREAD`) joins
//!   like a fork: the child runs the join, then the caller's function. A `CLONE_VM` process
//!   shares its parent's memory (and allocator state), so it cannot run the join: it is not
//!   part of the computation (not checkpointed; documented in docs/process-trees.md).
//!
//! Wrappers run on user threads: no lock a checkpoint can hold, allocation only through the
//! preload's allocator; the forked child uses only [`config`] (filled once by the constructor),
//! raw syscalls and the private allocator — never stdio or `std::env`.

use crate::cell::Owned;
use crate::{ckpt, sys};
use ckpt_format::wire::{self, Msg};
use libc::{c_char, c_int, pid_t};
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};

/// Settings of this process, captured by the constructor (read-only afterwards except by the
/// checkpoint thread after a restart, while user threads are frozen).
pub struct Config {
    pub addr: std::net::SocketAddr,
    pub dir: std::path::PathBuf,
    pub level: u32,
    pub program: String,
    pub argv: Vec<String>,
    /// `CKPT_*` variables (name, value) to hand to exec'd programs.
    pub ckpt_env: Vec<(String, String)>,
    /// Absolute path of libckpt.so (for `LD_PRELOAD` of exec'd programs).
    pub lib: String,
    /// This process is the one `ckpt-launch` started.
    pub root: bool,
}

static CONFIG: Owned<Option<Config>> = Owned::new(None);

/// Set by the constructor once the process joined the computation.
pub static MANAGED: AtomicBool = AtomicBool::new(false);
/// This process's vpid (0 before it joined).
pub use ckpt_plugins::api::VPID;
/// fd of the coordinator connection (-1 if none).
pub static COORD_FD: AtomicI32 = AtomicI32::new(-1);

/// Stores the configuration (constructor only, single-threaded).
pub fn set_config(c: Config) {
    // SAFETY: called by the constructor before any other thread exists.
    unsafe { *CONFIG.get() = Some(c) };
}

/// The configuration.
pub fn config() -> &'static Config {
    // SAFETY: written once by the constructor before MANAGED is set; read-only afterwards
    // (update_config runs with user threads frozen).
    unsafe { (*CONFIG.as_ptr()).as_ref().expect("config set before use") }
}

/// A `CKPT_*` setting from the constructor's snapshot.
pub fn config_env(name: &str) -> Option<&'static str> {
    config()
        .ckpt_env
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// After a restart: the coordinator and image directory may have moved.
pub fn update_config(host: &str, port: u16, dir: &str, addr: std::net::SocketAddr) {
    // SAFETY: checkpoint thread, user threads frozen.
    let Some(c) = (unsafe { CONFIG.get() }).as_mut() else {
        return;
    };
    c.addr = addr;
    for (k, v) in c.ckpt_env.iter_mut() {
        match k.as_str() {
            "CKPT_COORD_HOST" => *v = host.to_string(),
            "CKPT_COORD_PORT" => *v = port.to_string(),
            "CKPT_DIR" if !dir.is_empty() => *v = dir.to_string(),
            _ => {}
        }
    }
    if !dir.is_empty() {
        c.dir = std::path::PathBuf::from(dir);
    }
}

// ---- the fork/exec gate -----------------------------------------------------------------

/// Bit 31: closed (a checkpoint is under way); bits 0..30: forks/execs in flight.
static GATE: AtomicU32 = AtomicU32::new(0);
const CLOSED: u32 = 1 << 31;

/// A fork or exec in flight; dropping it lets a waiting checkpoint go on.
pub struct Ticket(());

/// Waits while a checkpoint is under way, then registers a fork/exec in flight. A thread
/// waiting here holds nothing: the checkpoint signal parks it like any other thread.
pub fn gate_enter() -> Ticket {
    loop {
        let g = GATE.load(Ordering::Acquire);
        if g & CLOSED != 0 {
            sys::futex_wait(&GATE, g, 100);
            continue;
        }
        if GATE
            .compare_exchange_weak(g, g + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return Ticket(());
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        GATE.fetch_sub(1, Ordering::AcqRel);
        sys::futex_wake(&GATE);
    }
}

/// Checkpoint thread: no new fork/exec may start; waits for those in flight.
pub fn gate_close_and_drain(timeout_ms: u64) -> Result<(), String> {
    GATE.fetch_or(CLOSED, Ordering::AcqRel);
    let start = sys::monotonic_ns();
    loop {
        let g = GATE.load(Ordering::Acquire);
        if g & !CLOSED == 0 {
            return Ok(());
        }
        if (sys::monotonic_ns() - start) as u64 / 1_000_000 > timeout_ms {
            return Err(format!(
                "{} fork/exec call(s) did not finish within {timeout_ms} ms",
                g & !CLOSED
            ));
        }
        sys::futex_wait(&GATE, g, 20);
    }
}

/// Checkpoint thread: forks and execs may go on.
pub fn gate_open() {
    GATE.fetch_and(!CLOSED, Ordering::AcqRel);
    sys::futex_wake(&GATE);
}

// ---- real functions -----------------------------------------------------------------------

#[cold]
#[inline(never)]
fn resolve(slot: &AtomicUsize, name: &CStr) -> usize {
    // SAFETY: dlsym with a NUL-terminated name.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    slot.store(p, Ordering::Relaxed);
    p
}

macro_rules! real_fns {
    ($($get:ident, $slot:ident, $name:literal, $ty:ty;)*) => {
        $(
            static $slot: AtomicUsize = AtomicUsize::new(0);
            #[inline(always)]
            fn $get() -> Option<$ty> {
                let p = match $slot.load(Ordering::Relaxed) {
                    0 => resolve(&$slot, $name),
                    p => p,
                };
                // SAFETY: p is 0 or glibc's function of that name, whose C signature is $ty.
                unsafe { std::mem::transmute::<usize, Option<$ty>>(p) }
            }
        )*
        /// Resolves every real function (constructor).
        pub fn resolve_all() {
            $( resolve(&$slot, $name); )*
        }
    };
}

type ForkFn = unsafe extern "C" fn() -> pid_t;
type ExecveFn =
    unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;
type FexecveFn = unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char) -> c_int;
type ExecveatFn = unsafe extern "C" fn(
    c_int,
    *const c_char,
    *const *const c_char,
    *const *const c_char,
    c_int,
) -> c_int;
type SpawnFn = unsafe extern "C" fn(
    *mut pid_t,
    *const c_char,
    *const libc::posix_spawn_file_actions_t,
    *const libc::posix_spawnattr_t,
    *const *mut c_char,
    *const *mut c_char,
) -> c_int;
type SystemFn = unsafe extern "C" fn(*const c_char) -> c_int;
type PopenFn = unsafe extern "C" fn(*const c_char, *const c_char) -> *mut libc::FILE;
type PcloseFn = unsafe extern "C" fn(*mut libc::FILE) -> c_int;
type DaemonFn = unsafe extern "C" fn(c_int, c_int) -> c_int;
type CloneFn = unsafe extern "C" fn(
    extern "C" fn(*mut libc::c_void) -> c_int,
    *mut libc::c_void,
    c_int,
    *mut libc::c_void,
    *mut pid_t,
    *mut libc::c_void,
    *mut pid_t,
) -> c_int;

real_fns! {
    real_fork, FORK, c"fork", ForkFn;
    real_underscore_fork, UFORK, c"_Fork", ForkFn;
    real_execve, EXECVE, c"execve", ExecveFn;
    real_execvpe, EXECVPE, c"execvpe", ExecveFn;
    real_fexecve, FEXECVE, c"fexecve", FexecveFn;
    real_execveat, EXECVEAT, c"execveat", ExecveatFn;
    real_posix_spawn, SPAWN, c"posix_spawn", SpawnFn;
    real_posix_spawnp, SPAWNP, c"posix_spawnp", SpawnFn;
    real_system, SYSTEM, c"system", SystemFn;
    real_popen, POPEN, c"popen", PopenFn;
    real_pclose, PCLOSE, c"pclose", PcloseFn;
    real_daemon, DAEMON, c"daemon", DaemonFn;
    real_clone, CLONE, c"clone", CloneFn;
}

fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn set_errno(e: c_int) {
    // SAFETY: glibc's thread-local errno.
    unsafe { *libc::__errno_location() = e };
}

// ---- atfork handlers ------------------------------------------------------------------------

extern "C" fn atfork_prepare() {
    crate::alloc::fork_prepare();
}

extern "C" fn atfork_parent() {
    crate::alloc::fork_parent();
}

extern "C" fn atfork_child() {
    crate::alloc::fork_child();
    GATE.store(0, Ordering::Release);
    crate::compress::forget_threads();
    // Connections hidden from a listener's queue at a checkpoint stay the parent's.
    ckpt_plugins::accept_queue::forget_in_child();
}

/// Registers the allocator's fork handlers (constructor, before anything else forks).
pub fn register_atfork() {
    // SAFETY: plain function pointers with static lifetime.
    unsafe {
        libc::pthread_atfork(
            Some(atfork_prepare),
            Some(atfork_parent),
            Some(atfork_child),
        )
    };
}

// ---- fork ---------------------------------------------------------------------------------

// ---- clone --------------------------------------------------------------------------------

/// What the clone child's trampoline needs (in the parent's memory, copied into the child's).
struct CloneJob {
    f: extern "C" fn(*mut libc::c_void) -> c_int,
    arg: *mut libc::c_void,
    rep: [c_int; 2],
}

extern "C" fn clone_child(job: *mut libc::c_void) -> c_int {
    // SAFETY: our CloneJob, in this child's own copy of the parent's memory.
    let job = unsafe { &*(job as *const CloneJob) };
    crate::glibc::refresh_cached_tid();
    atfork_child();
    // SAFETY: our own pipe.
    unsafe { libc::close(job.rep[0]) };
    let vpid = child_join();
    // SAFETY: writing 8 bytes to our pipe, then closing it.
    unsafe {
        libc::write(job.rep[1], (&vpid as *const u64).cast(), 8);
        libc::close(job.rep[1]);
    }
    let status = (job.f)(job.arg);
    // glibc's clone ends the child with the thread-only `exit` syscall, which would leave our
    // checkpoint thread running: end the whole process (no atexit handlers, as glibc).
    sys::exit_group(status)
}

/// `clone(fn, stack, flags, arg, [ptid, tls, ctid])`. Variadic in C; on x86_64 the optional
/// arguments travel in the same registers (and stack slot) as fixed ones, so a 7-argument
/// function receives them (unspecified values when the caller passed fewer, which glibc's own
/// clone reads just the same and uses only under the flags that name them).
///
/// # Safety
/// As clone(2) (glibc's wrapper).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn clone(
    f: extern "C" fn(*mut libc::c_void) -> c_int,
    stack: *mut libc::c_void,
    flags: c_int,
    arg: *mut libc::c_void,
    ptid: *mut pid_t,
    tls: *mut libc::c_void,
    ctid: *mut pid_t,
) -> c_int {
    let Some(real) = real_clone() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    if !MANAGED.load(Ordering::Acquire) || flags & (libc::CLONE_VM | libc::CLONE_THREAD) != 0 {
        // SAFETY: the real clone with the caller's arguments.
        return unsafe { real(f, stack, flags, arg, ptid, tls, ctid) };
    }
    let ticket = gate_enter();
    let mut job = CloneJob {
        f,
        arg,
        rep: [-1, -1],
    };
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(job.rep.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return -1;
    }
    atfork_prepare();
    // SAFETY: the real clone; the child runs clone_child on the caller's stack with its own
    // copy of `job` (no CLONE_VM).
    let pid = unsafe {
        real(
            clone_child,
            stack,
            flags,
            (&mut job as *mut CloneJob).cast(),
            ptid,
            tls,
            ctid,
        )
    };
    let e = errno();
    atfork_parent();
    // SAFETY: our own pipe.
    unsafe { libc::close(job.rep[1]) };
    let ret = if pid > 0 {
        known_as(pid, wait_child_vpid(pid, job.rep[0]))
    } else {
        pid
    };
    // SAFETY: our own pipe.
    unsafe { libc::close(job.rep[0]) };
    drop(ticket);
    set_errno(e);
    ret
}

/// The pid the program knows its new child by: the vpid the coordinator gave it when its
/// kernel pid collided with an existing vpid (after a restart without namespaces), else `pid`.
fn known_as(pid: pid_t, vpid: u64) -> pid_t {
    if vpid != 0 && vpid != pid as u64 && vpid <= i32::MAX as u64 {
        ckpt_plugins::pids::add_pair(vpid, pid);
        vpid as pid_t
    } else {
        pid
    }
}

/// Parent side of a fork or clone: waits (10 s at most) for the child's vpid on `rd`; 0 if
/// it did not come.
fn wait_child_vpid(pid: pid_t, rd: c_int) -> u64 {
    let mut pfd = libc::pollfd {
        fd: rd,
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = sys::monotonic_ns() + 10_000_000_000;
    let mut vpid = 0u64;
    loop {
        let left = (deadline - sys::monotonic_ns()) / 1_000_000;
        if left <= 0 {
            ckpt::log(&format!(
                "child {pid} did not join the computation within 10 s; it runs without checkpoints"
            ));
            break;
        }
        // SAFETY: polling our own pipe.
        let r = unsafe { libc::poll(&mut pfd, 1, left as c_int) };
        if r < 0 && errno() == libc::EINTR {
            continue;
        }
        if r > 0 {
            // SAFETY: reading 8 bytes into a u64.
            let n = unsafe { libc::read(rd, (&mut vpid as *mut u64).cast(), 8) };
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
        }
        break;
    }
    vpid
}

/// The child side of a fork: joins the computation and starts its checkpoint thread.
/// Returns the vpid (0 if the coordinator could not be reached).
fn child_join() -> u64 {
    let old = COORD_FD.swap(-1, Ordering::AcqRel);
    if old >= 0 {
        // SAFETY: the parent's coordinator socket, inherited; the parent's TcpStream object is
        // never used (nor dropped) in the child.
        unsafe { libc::close(old) };
    }
    MANAGED.store(false, Ordering::Release);
    let parent = VPID.swap(0, Ordering::AcqRel);
    // A child of the launched process is not the launched process: nor is what it execs
    // (else a restart could take a child for the root whose status ckpt-restart returns).
    // SAFETY: the child is single-threaded here; nothing else reads CONFIG yet.
    if let Some(c) = unsafe { CONFIG.get() }.as_mut() {
        c.root = false;
    }
    let c = config();
    let mut w = ckpt::Worker::new(
        c.addr,
        c.dir.clone(),
        c.level,
        c.program.clone(),
        c.argv.clone(),
        ckpt_plugins::all(),
    );
    w.parent = (parent != 0).then_some(parent);
    w.root = false;
    if let Err(e) = w.join(wire::JoinKind::Forked) {
        ckpt::log(&format!("{e}; this child runs without checkpoints"));
        return 0;
    }
    let vpid = w.vpid;
    // A vpid other than our pid: our pid was already some process's vpid (after a restart
    // with new pids); the pids plugin answers getpid() etc. with the vpid.
    ckpt_plugins::pids::add_pair(vpid, sys::getpid());
    crate::start_ckpt_thread(w);
    vpid
}

/// `fork` for every flavour: the child joins before either side returns.
///
/// # Safety
/// Same contract as `fork(2)`.
unsafe fn fork_impl(real: Option<ForkFn>, run_atfork_by_hand: bool) -> pid_t {
    let Some(real) = real else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    if !MANAGED.load(Ordering::Acquire) {
        // SAFETY: the real fork.
        return unsafe { real() };
    }
    let ticket = gate_enter();
    let mut rep = [0i32; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(rep.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return -1;
    }
    if run_atfork_by_hand {
        atfork_prepare();
    }
    // SAFETY: the real fork.
    let pid = unsafe { real() };
    if pid == 0 {
        if run_atfork_by_hand {
            atfork_child();
        }
        std::mem::forget(ticket);
        GATE.store(0, Ordering::Release);
        // SAFETY: our own pipe.
        unsafe { libc::close(rep[0]) };
        let vpid = child_join();
        // SAFETY: writing 8 bytes to our pipe, then closing it.
        unsafe {
            libc::write(rep[1], (&vpid as *const u64).cast(), 8);
            libc::close(rep[1]);
        }
        return 0;
    }
    let e = errno();
    if run_atfork_by_hand {
        atfork_parent();
    }
    // SAFETY: our own pipe.
    unsafe { libc::close(rep[1]) };
    let mut ret = pid;
    if pid > 0 {
        ret = known_as(pid, wait_child_vpid(pid, rep[0]));
    }
    // SAFETY: our own pipe.
    unsafe { libc::close(rep[0]) };
    drop(ticket);
    set_errno(e);
    ret
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork() -> pid_t {
    // SAFETY: forwarding the caller's contract.
    unsafe { fork_impl(real_fork(), false) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn __fork() -> pid_t {
    // SAFETY: forwarding the caller's contract.
    unsafe { fork_impl(real_fork(), false) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn vfork() -> pid_t {
    // SAFETY: fork semantics are a valid implementation of vfork.
    unsafe { fork_impl(real_fork(), false) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn __vfork() -> pid_t {
    // SAFETY: as vfork.
    unsafe { fork_impl(real_fork(), false) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn _Fork() -> pid_t {
    // SAFETY: _Fork runs no atfork handlers; ours are run by hand around it.
    unsafe { fork_impl(real_underscore_fork(), true) }
}

// ---- exec ---------------------------------------------------------------------------------

unsafe extern "C" {
    static mut environ: *const *const c_char;
}

/// Builds the environment of an exec'd program: the caller's entries minus `CKPT_*`, with our
/// library first in `LD_PRELOAD` and this process's `CKPT_*` settings and identity.
///
/// # Safety
/// `envp` is NULL or a NULL-terminated array of C strings.
unsafe fn patch_env(envp: *const *const c_char) -> Vec<CString> {
    let c = config();
    let mut out: Vec<CString> = Vec::new();
    let mut have_preload = false;
    let mut p = envp;
    while !p.is_null() {
        // SAFETY: p points into a NULL-terminated array.
        let e = unsafe { *p };
        if e.is_null() {
            break;
        }
        // SAFETY: each entry is a C string.
        let b = unsafe { CStr::from_ptr(e) }.to_bytes();
        if b.starts_with(b"CKPT_") {
        } else if let Some(v) = b.strip_prefix(b"LD_PRELOAD=") {
            have_preload = true;
            let vs = String::from_utf8_lossy(v);
            let has_ours = vs
                .split([':', ' '])
                .any(|x| x == c.lib || x.ends_with("/libckpt.so"));
            let val = if has_ours || c.lib.is_empty() {
                vs.into_owned()
            } else if vs.is_empty() {
                c.lib.clone()
            } else {
                format!("{}:{vs}", c.lib)
            };
            out.push(CString::new(format!("LD_PRELOAD={val}")).unwrap_or_default());
        } else {
            out.push(CString::new(b).unwrap_or_default());
        }
        // SAFETY: next entry of the array.
        p = unsafe { p.add(1) };
    }
    if !have_preload && !c.lib.is_empty() {
        out.push(CString::new(format!("LD_PRELOAD={}", c.lib)).unwrap_or_default());
    }
    for (k, v) in &c.ckpt_env {
        if let Ok(s) = CString::new(format!("{k}={v}")) {
            out.push(s);
        }
    }
    out.push(
        CString::new(format!("CKPT_VPID={}", VPID.load(Ordering::Acquire))).unwrap_or_default(),
    );
    if c.root {
        out.push(c"CKPT_ROOT=1".to_owned());
    }
    let outer_proc = ckpt_plugins::pids::outer_proc();
    if outer_proc >= 0 {
        out.push(CString::new(format!("CKPT_OUTER_PROC={outer_proc}")).unwrap_or_default());
    }
    // The pid translation table (after a restart with new pids), which exec would lose.
    let pidmap = ckpt_plugins::pids::map_env();
    if !pidmap.is_empty() {
        out.push(CString::new(format!("CKPT_PIDMAP={pidmap}")).unwrap_or_default());
    }
    let outside = ckpt_plugins::files::outside_env();
    if !outside.is_empty() {
        out.push(CString::new(format!("CKPT_OUTSIDE={outside}")).unwrap_or_default());
    }
    let shmids = ckpt_plugins::sysv_ids::to_env();
    if !shmids.is_empty() {
        out.push(CString::new(format!("CKPT_SHMIDS={shmids}")).unwrap_or_default());
    }
    out
}

/// Sends one frame on the coordinator connection from a user thread. Safe against the
/// checkpoint thread: it writes only while the gate is closed, and the caller holds a ticket.
fn send_coord(m: &Msg) {
    let fd = COORD_FD.load(Ordering::Acquire);
    if fd >= 0 {
        sys::write_all(fd, &wire::encode(m));
    }
}

enum Target {
    Path(*const c_char),
    Search(*const c_char),
    Fd(c_int),
    At(c_int, *const c_char, c_int),
}

/// Every exec funnels here.
///
/// # Safety
/// Arguments as for `execve(2)`.
unsafe fn exec_common(
    target: Target,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    if !MANAGED.load(Ordering::Acquire) {
        // SAFETY: forwarding to the real functions with the caller's arguments.
        return unsafe { exec_real(&target, argv, envp) };
    }
    let ticket = gate_enter();
    // SAFETY: envp is the caller's environment array.
    let env = unsafe { patch_env(envp) };
    let mut envv: Vec<*const c_char> = env.iter().map(|s| s.as_ptr()).collect();
    envv.push(std::ptr::null());
    send_coord(&Msg::Exec);
    let outer_proc = ckpt_plugins::pids::outer_proc();
    if outer_proc >= 0 {
        // SAFETY: the next program's preload takes this fd over (CKPT_OUTER_PROC).
        unsafe { libc::fcntl(outer_proc, libc::F_SETFD, 0) };
    }
    // SAFETY: the caller's arguments with our environment.
    let r = unsafe { exec_real(&target, argv, envv.as_ptr()) };
    let e = errno();
    if outer_proc >= 0 {
        // SAFETY: the exec failed: the fd is ours again.
        unsafe { libc::fcntl(outer_proc, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    send_coord(&Msg::ExecFailed);
    drop(ticket);
    set_errno(e);
    r
}

/// # Safety
/// Arguments as for `execve(2)`.
unsafe fn exec_real(
    target: &Target,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: the real functions with the caller's arguments.
    unsafe {
        match *target {
            Target::Path(p) => match real_execve() {
                Some(f) => f(p, argv, envp),
                None => -1,
            },
            Target::Search(p) => match real_execvpe() {
                Some(f) => f(p, argv, envp),
                None => -1,
            },
            Target::Fd(fd) => match real_fexecve() {
                Some(f) => f(fd, argv, envp),
                None => -1,
            },
            Target::At(dirfd, p, flags) => match real_execveat() {
                Some(f) => f(dirfd, p, argv, envp, flags),
                None => -1,
            },
        }
    }
}

fn cur_environ() -> *const *const c_char {
    // SAFETY: reading glibc's environ pointer.
    unsafe { *std::ptr::addr_of!(environ) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: caller's contract.
    unsafe { exec_common(Target::Path(path), argv, envp) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: caller's contract.
    unsafe { exec_common(Target::Path(path), argv, cur_environ()) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: caller's contract.
    unsafe { exec_common(Target::Search(file), argv, cur_environ()) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: caller's contract.
    unsafe { exec_common(Target::Search(file), argv, envp) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fexecve(
    fd: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: caller's contract.
    unsafe { exec_common(Target::Fd(fd), argv, envp) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn execveat(
    dirfd: c_int,
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    flags: c_int,
) -> c_int {
    // SAFETY: caller's contract.
    unsafe { exec_common(Target::At(dirfd, path, flags), argv, envp) }
}

/// `execl`, `execlp`, `execle`: the variadic argument list is collected by a naked trampoline
/// (x86_64 SysV: arguments 2..6 in rsi, rdx, rcx, r8, r9, the rest on the stack) and turned
/// into an array here.
///
/// # Safety
/// `regs` points at the five saved argument registers, `stack` at the caller's stack arguments;
/// the list is NULL-terminated as `execl(3)` requires.
unsafe extern "C" fn execl_impl(
    path: *const c_char,
    regs: *const usize,
    stack: *const usize,
    mode: usize,
) -> c_int {
    let arg = |i: usize| -> usize {
        // SAFETY: the caller's argument list, read up to its NULL terminator (and the envp
        // after it for execle).
        unsafe {
            if i < 5 {
                *regs.add(i)
            } else {
                *stack.add(i - 5)
            }
        }
    };
    let mut argv: Vec<*const c_char> = Vec::new();
    let mut i = 0;
    loop {
        let a = arg(i);
        argv.push(a as *const c_char);
        i += 1;
        if a == 0 {
            break;
        }
    }
    let envp = if mode == 2 {
        arg(i) as *const *const c_char
    } else {
        cur_environ()
    };
    let target = if mode == 1 {
        Target::Search(path)
    } else {
        Target::Path(path)
    };
    // SAFETY: a NULL-terminated argv built from the caller's list.
    unsafe { exec_common(target, argv.as_ptr(), envp) }
}

macro_rules! execl_trampoline {
    ($name:ident, $mode:literal) => {
        /// Variadic exec: see [`execl_impl`].
        #[unsafe(naked)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name() {
            core::arch::naked_asm!(
                "push r9",
                "push r8",
                "push rcx",
                "push rdx",
                "push rsi",
                "mov rsi, rsp",
                "lea rdx, [rsp + 48]",
                concat!("mov ecx, ", $mode),
                "call {f}",
                "add rsp, 40",
                "ret",
                f = sym execl_impl,
            )
        }
    };
}

execl_trampoline!(execl, 0);
execl_trampoline!(execlp, 1);
execl_trampoline!(execle, 2);

// ---- posix_spawn --------------------------------------------------------------------------

/// glibc's `struct __spawn_action` (posix/spawn_int.h, unchanged since 2.29): an `int` tag,
/// then a union aligned to 8 (close/fchdir/closefrom/tcsetpgrp: `int fd`; dup2: `int fd,
/// newfd`; open: `int fd; char *path; int oflag; mode_t mode`; chdir: `char *path`).
const SPAWN_ACTION_SIZE: usize = 32;

/// # Safety
/// `p` points at a live action.
unsafe fn act_i32(p: *const u8, off: usize) -> c_int {
    // SAFETY: caller's contract; the field is an aligned int.
    unsafe { *(p.add(off) as *const c_int) }
}

/// # Safety
/// `p` points at a live action.
unsafe fn act_ptr(p: *const u8, off: usize) -> *const c_char {
    // SAFETY: caller's contract; the field is an aligned pointer.
    unsafe { *(p.add(off) as *const *const c_char) }
}

const SPAWN_DO_CLOSE: c_int = 0;
const SPAWN_DO_DUP2: c_int = 1;
const SPAWN_DO_OPEN: c_int = 2;
const SPAWN_DO_CHDIR: c_int = 3;
const SPAWN_DO_FCHDIR: c_int = 4;
const SPAWN_DO_CLOSEFROM: c_int = 5;
const SPAWN_DO_TCSETPGRP: c_int = 6;

/// Applies attributes and file actions in the child, in glibc's order. Errno on failure.
///
/// # Safety
/// `fa`/`attr` are NULL or initialised by the caller.
unsafe fn spawn_child_setup(
    fa: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
) -> Result<(), c_int> {
    let fail = || Err(errno());
    // SAFETY: public accessors on an initialised attribute object; plain syscalls.
    unsafe {
        if !attr.is_null() {
            let mut flags: libc::c_short = 0;
            libc::posix_spawnattr_getflags(attr, &mut flags);
            let flags = flags as c_int;
            if flags & libc::POSIX_SPAWN_SETSIGMASK != 0 {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::posix_spawnattr_getsigmask(attr, &mut set);
                libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            }
            if flags & libc::POSIX_SPAWN_SETSIGDEF != 0 {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::posix_spawnattr_getsigdefault(attr, &mut set);
                for s in 1..libc::SIGRTMAX() {
                    if libc::sigismember(&set, s) == 1 {
                        libc::signal(s, libc::SIG_DFL);
                    }
                }
            }
            if flags & 0x80 != 0 && libc::setsid() < 0 {
                // POSIX_SPAWN_SETSID
                return fail();
            }
            if flags & libc::POSIX_SPAWN_SETPGROUP != 0 {
                let mut g: pid_t = 0;
                libc::posix_spawnattr_getpgroup(attr, &mut g);
                if libc::setpgid(0, g) != 0 {
                    return fail();
                }
            }
            if flags & libc::POSIX_SPAWN_SETSCHEDULER != 0 {
                let mut pol = 0;
                let mut p: libc::sched_param = std::mem::zeroed();
                libc::posix_spawnattr_getschedpolicy(attr, &mut pol);
                libc::posix_spawnattr_getschedparam(attr, &mut p);
                if libc::sched_setscheduler(0, pol, &p) < 0 {
                    return fail();
                }
            } else if flags & libc::POSIX_SPAWN_SETSCHEDPARAM != 0 {
                let mut p: libc::sched_param = std::mem::zeroed();
                libc::posix_spawnattr_getschedparam(attr, &mut p);
                if libc::sched_setparam(0, &p) < 0 {
                    return fail();
                }
            }
            if flags & libc::POSIX_SPAWN_RESETIDS != 0
                && (libc::setgid(libc::getgid()) != 0 || libc::setuid(libc::getuid()) != 0)
            {
                return fail();
            }
        }
        if fa.is_null() {
            return Ok(());
        }
        // glibc: struct { int __allocated; int __used; struct __spawn_action *__actions; ... }
        let raw = fa as *const u8;
        let used = (*(raw.add(4) as *const c_int)).max(0) as usize;
        let acts = *(raw.add(8) as *const *const u8);
        for i in 0..used {
            let a = acts.add(i * SPAWN_ACTION_SIZE);
            match act_i32(a, 0) {
                SPAWN_DO_CLOSE => {
                    if libc::close(act_i32(a, 8)) != 0 && errno() != libc::EBADF {
                        return fail();
                    }
                }
                SPAWN_DO_DUP2 => {
                    let (fd, newfd) = (act_i32(a, 8), act_i32(a, 12));
                    if fd == newfd {
                        let fl = libc::fcntl(fd, libc::F_GETFD);
                        if fl < 0 || libc::fcntl(fd, libc::F_SETFD, fl & !libc::FD_CLOEXEC) < 0 {
                            return fail();
                        }
                    } else if libc::dup2(fd, newfd) < 0 {
                        return fail();
                    }
                }
                SPAWN_DO_OPEN => {
                    let (fd, path, oflag, mode) = (
                        act_i32(a, 8),
                        act_ptr(a, 16),
                        act_i32(a, 24),
                        act_i32(a, 28),
                    );
                    let nfd = libc::open(path, oflag, mode as libc::c_uint);
                    if nfd < 0 {
                        return fail();
                    }
                    if nfd != fd {
                        if libc::dup2(nfd, fd) < 0 {
                            return fail();
                        }
                        libc::close(nfd);
                    }
                }
                SPAWN_DO_CHDIR => {
                    if libc::chdir(act_ptr(a, 8)) != 0 {
                        return fail();
                    }
                }
                SPAWN_DO_FCHDIR => {
                    if libc::fchdir(act_i32(a, 8)) != 0 {
                        return fail();
                    }
                }
                SPAWN_DO_CLOSEFROM => {
                    libc::syscall(libc::SYS_close_range, act_i32(a, 8) as u32, u32::MAX, 0u32);
                }
                SPAWN_DO_TCSETPGRP => {
                    if libc::tcsetpgrp(act_i32(a, 8), libc::getpgrp()) != 0 {
                        return fail();
                    }
                }
                _ => return Err(libc::EINVAL),
            }
        }
    }
    Ok(())
}

/// # Safety
/// Arguments as for `posix_spawn(3)`.
unsafe fn spawn_common(
    pid: *mut pid_t,
    path: *const c_char,
    fa: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
    search: bool,
) -> c_int {
    if !MANAGED.load(Ordering::Acquire) {
        let real = if search {
            real_posix_spawnp()
        } else {
            real_posix_spawn()
        };
        // SAFETY: forwarding.
        return match real {
            Some(f) => unsafe { f(pid, path, fa, attr, argv, envp) },
            None => libc::ENOSYS,
        };
    }
    let mut ep = [0i32; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(ep.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return errno();
    }
    // SAFETY: our fork.
    let child = unsafe { fork_impl(real_fork(), false) };
    if child < 0 {
        let e = errno();
        // SAFETY: closing our pipe.
        unsafe {
            libc::close(ep[0]);
            libc::close(ep[1]);
        }
        return e;
    }
    if child == 0 {
        // SAFETY: child side: setup, then our exec; errors go to the parent through the pipe.
        unsafe {
            libc::close(ep[0]);
            let mut e = match spawn_child_setup(fa, attr) {
                Ok(()) => {
                    let t = if search {
                        Target::Search(path)
                    } else {
                        Target::Path(path)
                    };
                    let envp = if envp.is_null() {
                        cur_environ()
                    } else {
                        envp as *const *const c_char
                    };
                    exec_common(t, argv as *const *const c_char, envp);
                    errno()
                }
                Err(e) => e,
            };
            if e == 0 {
                e = libc::ENOEXEC;
            }
            libc::write(ep[1], (&e as *const c_int).cast(), 4);
            libc::_exit(127);
        }
    }
    // SAFETY: parent: read the child's errno (EOF = exec succeeded).
    unsafe {
        libc::close(ep[1]);
        let mut e: c_int = 0;
        let n = loop {
            let n = libc::read(ep[0], (&mut e as *mut c_int).cast(), 4);
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            break n;
        };
        libc::close(ep[0]);
        if n == 4 {
            libc::waitpid(child, std::ptr::null_mut(), 0);
            return e;
        }
        if !pid.is_null() {
            *pid = child;
        }
    }
    0
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut pid_t,
    path: *const c_char,
    fa: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: caller's contract.
    unsafe { spawn_common(pid, path, fa, attr, argv, envp, false) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut pid_t,
    file: *const c_char,
    fa: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: caller's contract.
    unsafe { spawn_common(pid, file, fa, attr, argv, envp, true) }
}

// ---- system, popen, daemon ----------------------------------------------------------------

/// `sh -c CMD` through our exec (child side; never returns).
///
/// # Safety
/// `cmd` is a C string.
unsafe fn exec_shell(cmd: *const c_char) -> ! {
    let argv = [
        c"sh".as_ptr(),
        c"-c".as_ptr(),
        cmd,
        std::ptr::null::<c_char>(),
    ];
    // SAFETY: NULL-terminated argv; then _exit.
    unsafe {
        exec_common(
            Target::Path(c"/bin/sh".as_ptr()),
            argv.as_ptr(),
            cur_environ(),
        );
        libc::_exit(127)
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn system(cmd: *const c_char) -> c_int {
    if !MANAGED.load(Ordering::Acquire) {
        // SAFETY: forwarding.
        return match real_system() {
            Some(f) => unsafe { f(cmd) },
            None => -1,
        };
    }
    if cmd.is_null() {
        return 1;
    }
    // SAFETY: POSIX system(): ignore SIGINT/SIGQUIT and block SIGCHLD in the caller while the
    // child runs; the child gets the original dispositions and mask back.
    unsafe {
        let mut ign: libc::sigaction = std::mem::zeroed();
        ign.sa_sigaction = libc::SIG_IGN;
        let (mut old_int, mut old_quit): (libc::sigaction, libc::sigaction) =
            (std::mem::zeroed(), std::mem::zeroed());
        libc::sigaction(libc::SIGINT, &ign, &mut old_int);
        libc::sigaction(libc::SIGQUIT, &ign, &mut old_quit);
        let mut chld: libc::sigset_t = std::mem::zeroed();
        let mut old_mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &chld, &mut old_mask);
        let pid = fork_impl(real_fork(), false);
        if pid == 0 {
            libc::sigaction(libc::SIGINT, &old_int, std::ptr::null_mut());
            libc::sigaction(libc::SIGQUIT, &old_quit, std::ptr::null_mut());
            libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut());
            exec_shell(cmd);
        }
        let mut status: c_int = -1;
        if pid > 0 {
            while libc::waitpid(pid, &mut status, 0) < 0 {
                if errno() != libc::EINTR {
                    status = -1;
                    break;
                }
            }
        }
        let e = errno();
        libc::sigaction(libc::SIGINT, &old_int, std::ptr::null_mut());
        libc::sigaction(libc::SIGQUIT, &old_quit, std::ptr::null_mut());
        libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut());
        set_errno(e);
        status
    }
}

/// Streams opened by our `popen`: (FILE*, pid). Spin-locked; no allocation.
const MAX_POPEN: usize = 256;
static POPEN_FP: [AtomicUsize; MAX_POPEN] = [const { AtomicUsize::new(0) }; MAX_POPEN];
static POPEN_PID: [AtomicI32; MAX_POPEN] = [const { AtomicI32::new(0) }; MAX_POPEN];

#[unsafe(no_mangle)]
pub unsafe extern "C" fn popen(cmd: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    if !MANAGED.load(Ordering::Acquire) || cmd.is_null() || mode.is_null() {
        // SAFETY: forwarding.
        return match real_popen() {
            Some(f) => unsafe { f(cmd, mode) },
            None => std::ptr::null_mut(),
        };
    }
    // SAFETY: mode is a C string.
    let m = unsafe { CStr::from_ptr(mode) }.to_bytes();
    let reading = match m.first() {
        Some(b'r') => true,
        Some(b'w') => false,
        _ => {
            set_errno(libc::EINVAL);
            return std::ptr::null_mut();
        }
    };
    let cloexec = m.contains(&b'e');
    let mut p = [0i32; 2];
    // SAFETY: pipe2, our fork, dup2 and exec in the child, fdopen in the parent.
    unsafe {
        if libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return std::ptr::null_mut();
        }
        let (ours, theirs, target) = if reading {
            (p[0], p[1], 1)
        } else {
            (p[1], p[0], 0)
        };
        let pid = fork_impl(real_fork(), false);
        if pid == 0 {
            // POSIX: streams from earlier popen calls are closed in the child.
            for slot in POPEN_FP.iter() {
                let fp = slot.load(Ordering::Acquire);
                if fp != 0 {
                    libc::close(libc::fileno(fp as *mut libc::FILE));
                }
            }
            if theirs == target {
                libc::fcntl(theirs, libc::F_SETFD, 0);
            } else {
                libc::dup2(theirs, target);
            }
            exec_shell(cmd);
        }
        libc::close(theirs);
        if pid < 0 {
            libc::close(ours);
            return std::ptr::null_mut();
        }
        if !cloexec {
            libc::fcntl(ours, libc::F_SETFD, 0);
        }
        let fp = libc::fdopen(ours, if reading { c"r" } else { c"w" }.as_ptr());
        if fp.is_null() {
            libc::close(ours);
            return fp;
        }
        for (i, slot) in POPEN_FP.iter().enumerate() {
            if slot
                .compare_exchange(0, fp as usize, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                POPEN_PID[i].store(pid, Ordering::Release);
                return fp;
            }
        }
        ckpt::log("more than 256 popen streams open; pclose will not wait for this one");
        fp
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn pclose(fp: *mut libc::FILE) -> c_int {
    for (i, slot) in POPEN_FP.iter().enumerate() {
        if fp.is_null() || slot.load(Ordering::Acquire) != fp as usize {
            continue;
        }
        let pid = POPEN_PID[i].load(Ordering::Acquire);
        slot.store(0, Ordering::Release);
        // SAFETY: our fdopen'ed stream and our child.
        unsafe {
            libc::fclose(fp);
            let mut st: c_int = 0;
            loop {
                if libc::waitpid(pid, &mut st, 0) >= 0 {
                    return st;
                }
                if errno() != libc::EINTR {
                    return -1;
                }
            }
        }
    }
    // SAFETY: forwarding streams glibc's popen made.
    match real_pclose() {
        Some(f) => unsafe { f(fp) },
        None => -1,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn daemon(nochdir: c_int, noclose: c_int) -> c_int {
    if !MANAGED.load(Ordering::Acquire) {
        // SAFETY: forwarding.
        return match real_daemon() {
            Some(f) => unsafe { f(nochdir, noclose) },
            None => -1,
        };
    }
    // SAFETY: glibc's daemon() on our fork.
    unsafe {
        match fork_impl(real_fork(), false) {
            -1 => return -1,
            0 => {}
            _ => libc::_exit(0),
        }
        if libc::setsid() < 0 {
            return -1;
        }
        if nochdir == 0 {
            libc::chdir(c"/".as_ptr());
        }
        if noclose == 0 {
            let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if fd >= 0 {
                for t in 0..3 {
                    libc::dup2(fd, t);
                }
                if fd > 2 {
                    libc::close(fd);
                }
            }
        }
    }
    0
}
