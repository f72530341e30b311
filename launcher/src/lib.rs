//! Client side of the coordinator protocol, shared by `ckpt-launch`, `ckpt-command` and
//! `ckpt-restart`.
//!
//! Owns: where the coordinator is ([`coord_addr`]: flags, then `CKPT_COORD_HOST` /
//! `CKPT_COORD_PORT`, then 127.0.0.1:7779), connecting with a timeout ([`connect`]), one-shot commands
//! ([`request`]), long-lived command connections ([`CommandConn`], which `ckpt-restart` holds
//! open for its whole life so an `--exit-on-last` coordinator stays up), starting a coordinator
//! on demand ([`ensure_coordinator`]), and the launch environment ([`preload_value`],
//! [`prepare_ckpt_dir`], [`bin_dir`]).
//!
//! It must never print (callers decide what the user sees; the one exception is the warning
//! about an unparsable `CKPT_COORD_PORT`), never exit the process, and never wait without a
//! timeout. Errors that callers need to tell apart are [`ClientError`]s (downcast them from
//! `anyhow::Error`).

pub mod objects;
pub mod parts;
pub mod pidns;
pub mod ptys;
pub mod sockets;
pub mod tree;

use std::ffi::{OsStr, OsString};
use std::io;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use ckpt_format::wire::{self, DEFAULT_PORT, Msg, WireError};

/// Coordinator host when neither a flag nor `CKPT_COORD_HOST` says otherwise.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Timeout of a TCP connect to the coordinator.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`ensure_coordinator`] waits for a coordinator it started.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Name of the preload library in the binary directory.
pub const PRELOAD_NAME: &str = "libckpt.so";

/// Errors of talking to a coordinator that callers handle differently (e.g. `ckpt-command`
/// exits 2 on [`ClientError::NoCoordinator`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing accepted the connection.
    #[error("no coordinator at {addr} ({reason})")]
    NoCoordinator { addr: String, reason: String },
    /// The coordinator did not answer in time.
    #[error("no reply from the coordinator at {addr} within {secs} s")]
    Timeout { addr: String, secs: u64 },
    /// The coordinator closed the connection before answering.
    #[error("the coordinator at {addr} closed the connection")]
    Closed { addr: String },
    /// Something answered that does not speak our protocol, or the connection broke.
    #[error("talking to the coordinator at {addr}: {err}")]
    Protocol { addr: String, err: String },
}

/// An `io::Error` without the "(os error N)" suffix.
pub fn io_msg(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn fmt_addr(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Coordinator address: the flag values if given, else `CKPT_COORD_HOST` / `CKPT_COORD_PORT`,
/// else `127.0.0.1` / `7779`. An unparsable `CKPT_COORD_PORT` is ignored with a warning on
/// stderr.
pub fn coord_addr(host: Option<String>, port: Option<u16>) -> (String, u16) {
    let host = host
        .or_else(|| std::env::var("CKPT_COORD_HOST").ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_HOST.to_string());
    let port = port.unwrap_or_else(|| match std::env::var("CKPT_COORD_PORT") {
        Ok(p) if !p.is_empty() => p.trim().parse().unwrap_or_else(|_| {
            eprintln!("ckpt: ignoring CKPT_COORD_PORT={p:?} (not a port number)");
            DEFAULT_PORT
        }),
        _ => DEFAULT_PORT,
    });
    (host, port)
}

/// TCP connection to `host:port`, trying every address `host` resolves to, each with
/// `timeout`. `TCP_NODELAY` is set.
pub fn connect(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let addrs: Vec<_> = (host, port).to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host has no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// An open command connection (`HelloCommand` already sent).
///
/// `ckpt-restart` keeps one for its whole lifetime: as long as it is open, a coordinator
/// started with `--exit-on-last` stays up. Replies arrive in the order of the requests; the
/// coordinator may also send an unsolicited `Msg::Error` on it (e.g. "restart failed: ...").
#[derive(Debug)]
pub struct CommandConn {
    stream: TcpStream,
    addr: String,
}

impl CommandConn {
    /// Connect (with [`CONNECT_TIMEOUT`]) and say hello.
    pub fn open(host: &str, port: u16) -> Result<CommandConn, ClientError> {
        let addr = fmt_addr(host, port);
        let stream =
            connect(host, port, CONNECT_TIMEOUT).map_err(|e| ClientError::NoCoordinator {
                addr: addr.clone(),
                reason: io_msg(&e),
            })?;
        let mut c = CommandConn { stream, addr };
        c.send(&Msg::HelloCommand)?;
        Ok(c)
    }

    /// "host:port" of the coordinator.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The underlying socket (e.g. to poll it next to child processes).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Send one frame.
    pub fn send(&mut self, msg: &Msg) -> Result<(), ClientError> {
        wire::send(&mut self.stream, msg).map_err(|e| self.wire_err(e))
    }

    /// Wait for one frame; `None` waits forever.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Msg, ClientError> {
        // A zero timeout is an error for set_read_timeout: use the smallest real one.
        let t = timeout.map(|t| t.max(Duration::from_millis(1)));
        self.stream
            .set_read_timeout(t)
            .map_err(|e| self.wire_err(WireError::Io(e)))?;
        wire::recv(&mut self.stream).map_err(|e| match e {
            WireError::Io(ref io)
                if matches!(
                    io.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                ClientError::Timeout {
                    addr: self.addr.clone(),
                    secs: timeout.map(|t| t.as_secs()).unwrap_or(0),
                }
            }
            e => self.wire_err(e),
        })
    }

    /// Send `msg` and wait up to `timeout` for the reply (a `Msg::Error` reply is returned
    /// as `Ok`).
    pub fn request(&mut self, msg: &Msg, timeout: Duration) -> Result<Msg, ClientError> {
        self.send(msg)?;
        self.recv(Some(timeout))
    }

    fn wire_err(&self, e: WireError) -> ClientError {
        match e {
            WireError::Closed => ClientError::Closed {
                addr: self.addr.clone(),
            },
            WireError::Io(ref io)
                if matches!(
                    io.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::UnexpectedEof
                ) =>
            {
                ClientError::Closed {
                    addr: self.addr.clone(),
                }
            }
            WireError::Io(io) => ClientError::Protocol {
                addr: self.addr.clone(),
                err: io_msg(&io),
            },
            e => ClientError::Protocol {
                addr: self.addr.clone(),
                err: e.to_string(),
            },
        }
    }
}

/// One command: connect (5 s), `HelloCommand`, `msg`, and the reply within `timeout`.
/// A `Msg::Error` reply is returned as `Ok` (the caller decides what it means); failures to
/// talk are `Err` holding a [`ClientError`].
pub fn request(host: &str, port: u16, msg: &Msg, timeout: Duration) -> anyhow::Result<Msg> {
    let mut c = CommandConn::open(host, port)?;
    Ok(c.request(msg, timeout)?)
}

/// Whether `host` names this machine: `localhost`, a loopback address, this host's name, or
/// an address some local interface has.
pub fn is_local_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.is_empty() || h.eq_ignore_ascii_case("localhost") || h == hostname() {
        return true;
    }
    match (h, 0u16).to_socket_addrs() {
        Ok(addrs) => addrs.into_iter().any(|a| {
            a.ip().is_loopback() || a.ip().is_unspecified() || UdpSocket::bind((a.ip(), 0)).is_ok()
        }),
        Err(_) => false,
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for writes of buf.len() bytes.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Ask the coordinator at `host:port` for its status (short timeouts). `Err` holds a
/// [`ClientError`]; `NoCoordinator` means nothing listens there.
pub fn probe(host: &str, port: u16) -> Result<Msg, ClientError> {
    let mut c = CommandConn::open(host, port)?;
    match c.request(&Msg::CmdStatus, CONNECT_TIMEOUT)? {
        m @ Msg::Status { .. } => Ok(m),
        other => Err(ClientError::Protocol {
            addr: c.addr.clone(),
            err: format!("unexpected reply {other:?} to CmdStatus"),
        }),
    }
}

/// Make sure a coordinator answers at `host:port`; returns whether this call started one.
///
/// If none answers and `host` is this machine, runs
/// `BIN_DIR/ckpt-coordinator --daemon --exit-on-last --port PORT --bind HOST EXTRA_ARGS...`
/// (the daemon's parent exits once it listens) and waits up to [`START_TIMEOUT`] until it
/// answers. A remote host that does not answer is an error. If another launcher started a
/// coordinator at the same moment, that one is used (`Ok(false)`).
pub fn ensure_coordinator(
    bin_dir: &Path,
    host: &str,
    port: u16,
    extra_args: &[String],
) -> anyhow::Result<bool> {
    let addr = fmt_addr(host, port);
    match probe(host, port) {
        Ok(_) => return Ok(false),
        Err(ClientError::NoCoordinator { reason, .. }) => {
            if !is_local_host(host) {
                bail!(
                    "no coordinator at {addr} ({reason}), and {host} is not this machine: \
                     start one there with `ckpt-coordinator --port {port} --bind ADDR`"
                );
            }
        }
        Err(e) => return Err(e.into()),
    }
    let exe = bin_dir.join("ckpt-coordinator");
    if !exe.is_file() {
        bail!(
            "no coordinator at {addr} and {} not found; build with cargo build --release",
            exe.display()
        );
    }
    let out = Command::new(&exe)
        .args(["--daemon", "--exit-on-last", "--port"])
        .arg(port.to_string())
        .arg("--bind")
        .arg(host)
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    if !out.status.success() {
        // Somebody else may have started one at the same moment.
        if probe(host, port).is_ok() {
            return Ok(false);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim();
        bail!(
            "cannot start a coordinator at {addr}: {}",
            if err.is_empty() {
                format!("{} exited with {}", exe.display(), out.status)
            } else {
                err.trim_start_matches("ckpt-coordinator: ").to_string()
            }
        );
    }
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match probe(host, port) {
            Ok(_) => return Ok(true),
            Err(e) if Instant::now() >= deadline => {
                bail!(
                    "started {} but it does not answer at {addr} after {} s: {e}",
                    exe.display(),
                    START_TIMEOUT.as_secs()
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Directory of the running executable (symlinks resolved): where `libckpt.so`,
/// `ckpt-coordinator`, `ckpt-restart` and `ckpt-restorer` are installed side by side.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("executable {} has no directory", exe.display()))
}

/// `LD_PRELOAD` value with `lib` first, followed by the entries of `existing` (':' or
/// space separated, as ld.so accepts) minus any copy of `lib`.
pub fn preload_value(lib: &Path, existing: Option<&OsStr>) -> OsString {
    let mut out = OsString::from(lib.as_os_str());
    if let Some(existing) = existing {
        let existing = existing.to_string_lossy();
        for entry in existing.split([':', ' ']).filter(|e| !e.is_empty()) {
            if Path::new(entry) != lib {
                out.push(":");
                out.push(entry);
            }
        }
    }
    out
}

/// The checkpoint directory (`dir`, else the current directory) made absolute and created
/// with mode 0700 if missing.
pub fn prepare_ckpt_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let d = match dir {
        Some(d) => std::path::absolute(d)
            .with_context(|| format!("cannot make {} absolute", d.display()))?,
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    if !d.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .map_err(|e| {
                anyhow!(
                    "cannot create checkpoint directory {}: {}",
                    d.display(),
                    io_msg(&e)
                )
            })?;
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_is_prepended_once() {
        let lib = Path::new("/opt/ckpt/libckpt.so");
        assert_eq!(preload_value(lib, None), "/opt/ckpt/libckpt.so");
        assert_eq!(
            preload_value(lib, Some(OsStr::new("/a.so:/opt/ckpt/libckpt.so: /b.so"))),
            "/opt/ckpt/libckpt.so:/a.so:/b.so"
        );
    }

    #[test]
    fn flags_win_over_env() {
        // Only flags here: the environment of a test process is shared between threads.
        assert_eq!(coord_addr(Some("h".into()), Some(1)), ("h".to_string(), 1));
    }

    #[test]
    fn local_hosts() {
        assert!(is_local_host("127.0.0.1"));
        assert!(is_local_host("localhost"));
        assert!(is_local_host("::1"));
        assert!(is_local_host(&hostname()));
        assert!(!is_local_host("192.0.2.1")); // TEST-NET-1
    }

    #[test]
    fn no_coordinator_error() {
        // Port 1 on loopback: nothing listens there.
        match probe("127.0.0.1", 1) {
            Err(ClientError::NoCoordinator { addr, reason }) => {
                assert_eq!(addr, "127.0.0.1:1");
                assert_eq!(reason, "Connection refused");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fmt_addr("::1", 5), "[::1]:5");
    }

    #[test]
    fn ckpt_dir_is_created_0700() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("ckpt-dir-test-{}/a/b", std::process::id()));
        let got = prepare_ckpt_dir(Some(&d)).unwrap();
        assert_eq!(got, d);
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::remove_dir_all(d.parent().unwrap().parent().unwrap()).unwrap();
    }
}
