//! `ckpt-coordinator`: command line, listening socket, daemonization.
//!
//! Owns the CLI, the bind (with a one-line error naming the address), the `--port-file`, the
//! `--log` sink and `--daemon` (fork + setsid, the parent exits only once the child listens).
//! It must never fork after the tokio runtime exists (threads do not survive fork) and never
//! keep the caller's stdout/stderr open in daemon mode. The protocol lives in `state.rs`, the
//! sockets in `server.rs`, the restart script in `script.rs`.

mod log;
mod script;
mod server;
mod state;

use std::io::{Read, Write};
use std::net::ToSocketAddrs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use ckpt_format::wire::DEFAULT_PORT;
use clap::Parser;

/// Coordinator of a ckpt computation: membership, virtual pids, named barriers, checkpoint
/// scheduling and the restart script. Keeps no state on disk: after a restart it adopts the
/// computation from the restarted processes.
#[derive(Parser, Debug)]
#[command(name = "ckpt-coordinator", version)]
struct Cli {
    /// TCP port (0 = any free port; see --port-file).
    #[arg(long, env = "CKPT_COORD_PORT", default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    bind: String,
    /// Detach from the terminal; exit once the coordinator listens.
    #[arg(long)]
    daemon: bool,
    /// Checkpoint every SECS seconds (0 = never).
    #[arg(long, value_name = "SECS")]
    interval: Option<u64>,
    /// Directory every process writes its image to (default: each process's own).
    #[arg(long, value_name = "DIR")]
    ckpt_dir: Option<PathBuf>,
    /// Exit 2 s after the last connection closed (or after 30 s if nobody ever connects).
    #[arg(long)]
    exit_on_last: bool,
    /// Write the port actually listened on to FILE (decimal + newline, atomically).
    #[arg(long, value_name = "FILE")]
    port_file: Option<PathBuf>,
    /// Seconds a checkpoint phase (or the restart barrier) may take before it is aborted.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    timeout: u64,
    /// Log to FILE (appending) instead of stderr.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
}

/// An `io::Error` without the "(os error N)" suffix.
fn io_msg(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot make {} absolute", p.display()))
}

/// Everything prepared before listening (and before any fork).
struct Prepared {
    cli: Cli,
    ckpt_dir: Option<PathBuf>,
    port_file: Option<PathBuf>,
    log: Option<PathBuf>,
    restart_bin: PathBuf,
}

fn prepare(cli: Cli) -> anyhow::Result<Prepared> {
    let ckpt_dir = match &cli.ckpt_dir {
        Some(d) => {
            let d = absolute(d)?;
            if !d.is_dir() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&d)
                    .map_err(|e| {
                        anyhow!("cannot create --ckpt-dir {}: {}", d.display(), io_msg(&e))
                    })?;
            }
            Some(d)
        }
        None => None,
    };
    let port_file = cli.port_file.as_deref().map(absolute).transpose()?;
    let log = cli.log.as_deref().map(absolute).transpose()?;
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    let restart_bin = exe
        .parent()
        .map(|d| d.join("ckpt-restart"))
        .ok_or_else(|| anyhow!("executable {} has no directory", exe.display()))?;
    Ok(Prepared {
        cli,
        ckpt_dir,
        port_file,
        log,
        restart_bin,
    })
}

fn bind(p: &Prepared) -> anyhow::Result<std::net::TcpListener> {
    let (host, port) = (p.cli.bind.as_str(), p.cli.port);
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| anyhow!("cannot listen on {host}:{port}: {}", io_msg(&e)))?
        .collect();
    let mut last = None;
    for a in &addrs {
        match std::net::TcpListener::bind(a) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => anyhow!("cannot listen on {host}:{port}: {}", io_msg(&e)),
        None => anyhow!("cannot listen on {host}:{port}: no address"),
    })
}

fn write_port_file(path: &Path, port: u16) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.unwrap_or_else(|| "port".into()),
        std::process::id()
    ));
    std::fs::write(&tmp, format!("{port}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow!(
                "cannot write --port-file {}: {}",
                path.display(),
                io_msg(&e)
            )
        })
}

fn open_log(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| anyhow!("cannot open --log {}: {}", path.display(), io_msg(&e)))
}

/// Listen, write the port file, open the log. Returns the listener and the log file.
fn setup(p: &Prepared) -> anyhow::Result<(std::net::TcpListener, Option<std::fs::File>)> {
    let listener = bind(p)?;
    let port = listener.local_addr()?.port();
    if let Some(f) = &p.port_file {
        write_port_file(f, port)?;
    }
    let log = p.log.as_deref().map(open_log).transpose()?;
    Ok((listener, log))
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is a valid writable buffer of the given length.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn serve(p: Prepared, listener: std::net::TcpListener) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let host = if local.ip().is_unspecified() {
        hostname()
    } else {
        local.ip().to_string()
    };
    let cfg = state::Config {
        timeout: Duration::from_secs(p.cli.timeout),
        ckpt_dir: p
            .ckpt_dir
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned()),
        exit_on_last: p.cli.exit_on_last,
        interval: p.cli.interval.filter(|s| *s > 0).map(Duration::from_secs),
        addr: local.to_string(),
    };
    let ctx = script::ScriptCtx {
        restart_bin: p.restart_bin.clone(),
        host,
        port: local.port(),
        ckpt_dir: p.ckpt_dir.clone(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed =
        (now.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32) ^ local.port() as u64;
    log!(
        "listening on {local} (timeout {} s{}{}{})",
        p.cli.timeout,
        match cfg.interval {
            Some(i) => format!(", interval {} s", i.as_secs()),
            None => String::new(),
        },
        match &cfg.ckpt_dir {
            Some(d) => format!(", ckpt-dir {d}"),
            None => String::new(),
        },
        if cfg.exit_on_last {
            ", exit-on-last"
        } else {
            ""
        }
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(server::run(listener, cfg, ctx, seed))
}

fn main() {
    let cli = Cli::parse();
    let result = prepare(cli).and_then(|p| {
        if p.cli.daemon {
            daemonize(p)
        } else {
            let (listener, log) = setup(&p)?;
            if let Some(f) = log {
                log::set_file(f);
            }
            serve(p, listener)
        }
    });
    if let Err(e) = result {
        eprintln!("ckpt-coordinator: {e:#}");
        std::process::exit(1);
    }
}

/// Fork; the child becomes the daemon, the parent waits for its "ready" on a pipe.
fn daemonize(p: Prepared) -> anyhow::Result<()> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe");
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet (the runtime is built after this point), so the
    // child may run arbitrary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid > 0 {
        drop(wr);
        let mut buf = String::new();
        let _ = std::fs::File::from(rd).read_to_string(&mut buf);
        if buf.starts_with("OK") {
            std::process::exit(0);
        }
        let mut status = 0;
        // SAFETY: pid is our child; status is a valid pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        match buf.strip_prefix("ERR ") {
            Some(msg) => Err(anyhow!("{}", msg.trim_end())),
            None => Err(anyhow!("the daemon exited before it was ready")),
        }
    } else {
        drop(rd);
        let mut ready = std::fs::File::from(wr);
        // SAFETY: plain syscalls in a single-threaded child.
        unsafe {
            libc::setsid();
        }
        let (listener, log) = match setup(&p) {
            Ok(x) => x,
            Err(e) => {
                let _ = write!(ready, "ERR {e:#}");
                std::process::exit(1);
            }
        };
        if let Err(e) = redirect_stdio(log.as_ref()) {
            let _ = write!(ready, "ERR cannot redirect stdio: {}", io_msg(&e));
            std::process::exit(1);
        }
        let _ = std::env::set_current_dir("/");
        let _ = write!(
            ready,
            "OK {}",
            listener.local_addr().map(|a| a.port()).unwrap_or(0)
        );
        drop(ready);
        if let Err(e) = serve(p, listener) {
            log!("fatal: {e:#}");
            std::process::exit(1);
        }
        Ok(())
    }
}

/// stdin from /dev/null; stdout and stderr to the log file, or /dev/null.
fn redirect_stdio(log: Option<&std::fs::File>) -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let out = log.map(|f| f.as_raw_fd()).unwrap_or(null.as_raw_fd());
    for (src, dst) in [(null.as_raw_fd(), 0), (out, 1), (out, 2)] {
        // SAFETY: both descriptors are open; dup2 onto 0..=2 replaces the caller's stdio.
        if unsafe { libc::dup2(src, dst) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
