//! libckpt.so — loaded into every process of a computation with LD_PRELOAD by `ckpt-launch`.
//!
//! The constructor ([`init`]) reserves the private allocator, probes glibc, installs the
//! checkpoint signal handler, lets the plugins look at the process, joins the coordinator and
//! starts the checkpoint thread. Everything after that happens on the checkpoint thread
//! (`ckpt.rs`), in the signal handler (`threads.rs`) or, in a restarted process, in the restart
//! entry (`restart.rs`).
//!
//! Modules: `sys` raw syscalls and all arch-specific code · `alloc` the private allocator ·
//! `glibc` probing of glibc internals · `procs` fork/exec/spawn and the fork gate · `threads` suspension · `memory` maps/pagemap and page
//! runs · `writer` the image file · `ckpt` the checkpoint thread · `restart` the in-process
//! restart. Kernel objects other than memory and threads live in the `ckpt-plugins` crate.
//!
//! Without `CKPT_COORD_PORT` in the environment (the library was preloaded by something other
//! than ckpt-launch) the constructor does nothing.

mod alloc;
mod cell;
mod ckpt;
mod compress;
mod glibc;
mod memory;
mod procs;
mod restart;
mod sys;
mod threads;
mod writer;

use std::path::PathBuf;

#[global_allocator]
static GLOBAL: alloc::CkptAlloc = alloc::CkptAlloc;

#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = init;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn program_and_argv() -> (String, Vec<String>) {
    let raw = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    let argv: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let prog = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "program".to_string());
    (prog, argv)
}

/// Path of this library (for `LD_PRELOAD` of exec'd programs).
fn own_path() -> String {
    // SAFETY: dladdr on an address inside this library; dli_fname is a C string owned by ld.so.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(init as *const libc::c_void, &mut info) != 0 && !info.dli_fname.is_null() {
            let p = std::ffi::CStr::from_ptr(info.dli_fname).to_string_lossy();
            return std::fs::canonicalize(&*p)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| p.into_owned());
        }
    }
    String::new()
}

/// The constructor. Failures are reported on stderr and leave the program running unmanaged.
extern "C" fn init() {
    alloc::init();
    let Some(port) = env("CKPT_COORD_PORT") else {
        return;
    };
    // First, so our allocator lock is taken last before any fork (handlers run LIFO).
    procs::register_atfork();
    procs::resolve_all();
    let host = env("CKPT_COORD_HOST").unwrap_or_else(|| "127.0.0.1".into());
    let Some(port) = port.parse::<u16>().ok() else {
        ckpt::log(&format!(
            "CKPT_COORD_PORT={port:?} is not a port number; not checkpointing"
        ));
        return;
    };
    let Some(addr) = ckpt::parse_addr(&host, port) else {
        ckpt::log(&format!(
            "CKPT_COORD_HOST={host:?} is not an IP address; not checkpointing"
        ));
        return;
    };
    // One-shot variables: who we are in the tree. Removed so our children do not inherit them
    // (our exec wrapper passes them on explicitly).
    let root = env("CKPT_ROOT").is_some();
    let exec_vpid = env("CKPT_VPID").and_then(|v| v.parse::<u64>().ok());
    if let Some(m) = env("CKPT_PIDMAP") {
        ckpt_plugins::pids::set_map_from_env(&m);
    }
    if let Some(fd) = env("CKPT_OUTER_PROC").and_then(|v| v.parse::<i32>().ok()) {
        // SAFETY: fstat/fcntl on a number the exec wrapper of our previous program named.
        let is_dir = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR
        };
        if fd > 2 && is_dir {
            // SAFETY: as above; it stays ours, hidden from the next exec unless handed on.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            ckpt_plugins::pids::set_outer_proc(fd);
        }
    }
    glibc::probe();
    let sig = env("CKPT_SIGNAL")
        .and_then(|s| s.parse::<i32>().ok())
        .unwrap_or(libc::SIGRTMAX() - 2);
    if let Err(e) = threads::install(sig) {
        ckpt::log(&format!(
            "cannot install the checkpoint signal handler: {e}; not checkpointing"
        ));
        return;
    }
    let mut plugins = ckpt_plugins::all();
    for p in plugins.iter_mut() {
        p.init();
    }
    let ckpt_env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("CKPT_")
                && !matches!(
                    k.as_str(),
                    "CKPT_ROOT"
                        | "CKPT_VPID"
                        | "CKPT_OUTSIDE"
                        | "CKPT_OUTER_PROC"
                        | "CKPT_SHMIDS"
                        | "CKPT_PIDMAP"
                )
        })
        .collect();
    // SAFETY: the constructor runs before any other thread of the program exists.
    unsafe {
        std::env::remove_var("CKPT_ROOT");
        std::env::remove_var("CKPT_VPID");
        std::env::remove_var("CKPT_OUTSIDE");
        std::env::remove_var("CKPT_OUTER_PROC");
        std::env::remove_var("CKPT_SHMIDS");
        std::env::remove_var("CKPT_PIDMAP");
    }
    let dir = env("CKPT_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("."));
    let level = if env("CKPT_GZIP").as_deref() == Some("0") {
        0
    } else {
        1
    };
    let (program, argv) = program_and_argv();
    procs::set_config(procs::Config {
        addr,
        dir: dir.clone(),
        level,
        program: program.clone(),
        argv: argv.clone(),
        ckpt_env,
        lib: own_path(),
        root,
    });
    let mut worker = ckpt::Worker::new(addr, dir, level, program, argv, plugins);
    worker.root = root;
    let kind = match exec_vpid {
        Some(v) => {
            worker.vpid = v;
            ckpt_format::wire::JoinKind::Exec
        }
        None => ckpt_format::wire::JoinKind::Fresh,
    };
    if let Err(e) = worker.join(kind) {
        ckpt::log(&format!("{e}; this process runs without checkpoints"));
        return;
    }
    start_ckpt_thread(worker);
}

/// Starts the checkpoint thread for `worker` (constructor, and a forked child).
pub(crate) fn start_ckpt_thread(mut worker: ckpt::Worker) {
    // The thread inherits the mask it is created with: create it with every signal blocked so
    // no program handler can ever run on it, then give it its own mask.
    let old = sys::sigprocmask(sys::SIG_SETMASK, Some(!0));
    let spawned = std::thread::Builder::new()
        .name("ckpt".into())
        .stack_size(1 << 20)
        .spawn(move || {
            restart::record_ckpt_thread();
            ckpt_plugins::pids::kernel_pids_on_this_thread();
            ckpt::block_signals_in_ckpt_thread();
            worker.run();
        });
    sys::sigprocmask(sys::SIG_SETMASK, Some(old));
    match spawned {
        Ok(_) => procs::MANAGED.store(true, std::sync::atomic::Ordering::Release),
        Err(e) => ckpt::log(&format!("cannot start the checkpoint thread: {e}")),
    }
}
