//! Helpers for integration tests that run the real `ckpt-coordinator` binary: start it on an
//! ephemeral port (`--port 0 --port-file`), speak the wire protocol over raw TCP (fake
//! workers and command connections), and wait with timeouts that say what they saw.
//!
//! Shared by `coordinator/tests` and `launcher/tests` (included with `#[path]`). Never sleeps
//! and hopes: every wait polls a condition with a deadline and panics with context.

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ckpt_format::wire::{self, Msg, WireError};

/// Default wait for anything in these tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "ckpt-it-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Poll `f` every 20 ms until it returns Some or `timeout` passes (then panic with `what`
/// and the last value `describe` gives).
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}; saw: {}",
                describe()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running coordinator (killed on drop).
pub struct Coord {
    pub child: Child,
    pub port: u16,
    pub dir: TempDir,
    pub log: PathBuf,
}

impl Coord {
    /// Start `bin --port 0 --port-file DIR/port --log DIR/coord.log EXTRA...` and wait for
    /// the port file.
    pub fn start(bin: &Path, extra: &[&str]) -> Coord {
        let dir = TempDir::new("coord");
        let port_file = dir.path().join("port");
        let log = dir.path().join("coord.log");
        let child = Command::new(bin)
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .arg("--log")
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let mut c = Coord {
            child,
            port: 0,
            dir,
            log,
        };
        let log2 = c.log.clone();
        let pf = port_file.clone();
        c.port = wait_for(
            "the coordinator's --port-file",
            WAIT,
            || {
                if let Ok(Some(st)) = c.child.try_wait() {
                    panic!(
                        "coordinator exited early ({st}); log:\n{}",
                        std::fs::read_to_string(&log2).unwrap_or_default()
                    );
                }
                std::fs::read_to_string(&pf)
                    .ok()
                    .and_then(|s| s.strip_suffix('\n').and_then(|s| s.parse().ok()))
            },
            || format!("port file {:?}", std::fs::read_to_string(&port_file)),
        );
        c
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for the process to exit; returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let log = self.log.clone();
        let child = &mut self.child;
        wait_for(
            "the coordinator to exit",
            timeout,
            || child.try_wait().unwrap(),
            || std::fs::read_to_string(&log).unwrap_or_default(),
        )
    }
}

impl Drop for Coord {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw protocol connection.
pub struct Conn {
    pub stream: TcpStream,
    /// Every frame received so far (for failure messages).
    pub seen: Vec<Msg>,
}

impl Conn {
    pub fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        Conn {
            stream,
            seen: Vec::new(),
        }
    }

    /// A command connection (HelloCommand sent).
    pub fn command(port: u16) -> Conn {
        let mut c = Conn::open(port);
        c.send(&Msg::HelloCommand);
        c
    }

    pub fn send(&mut self, m: &Msg) {
        wire::send(&mut self.stream, m).unwrap_or_else(|e| panic!("send {m:?}: {e}"));
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Next frame within `timeout`, or the wire error (Closed, ...).
    pub fn try_recv(&mut self, timeout: Duration) -> Result<Msg, WireError> {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let r = wire::recv(&mut self.stream);
        if let Ok(m) = &r {
            self.seen.push(m.clone());
        }
        r
    }

    /// Next frame within [`WAIT`] (panics with what was seen otherwise).
    pub fn recv(&mut self) -> Msg {
        match self.try_recv(WAIT) {
            Ok(m) => m,
            Err(e) => panic!("no frame ({e}); frames seen so far: {:?}", self.seen),
        }
    }

    pub fn request(&mut self, m: &Msg) -> Msg {
        self.send(m);
        self.recv()
    }

    /// Expect the peer to close the connection (EOF) within [`WAIT`].
    pub fn expect_closed(&mut self) {
        match self.try_recv(WAIT) {
            Err(WireError::Closed) => {}
            Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("expected EOF, got {other:?}; seen {:?}", self.seen),
        }
    }
}

pub fn hello_worker(pid: i32, program: &str) -> Msg {
    Msg::HelloWorker {
        comp_id: None,
        vpid: None,
        restarting: false,
        num_peers: 0,
        generation: 0,
        pid,
        host: "testhost".into(),
        program: program.into(),
        join: Default::default(),
        parent: None,
    }
}

/// Connect a fresh worker; returns the connection and (comp_id, vpid, generation).
pub fn worker(port: u16, pid: i32, program: &str) -> (Conn, (u64, u64, u64)) {
    let mut c = Conn::open(port);
    match c.request(&hello_worker(pid, program)) {
        Msg::Welcome {
            comp_id,
            vpid,
            generation,
        } => (c, (comp_id, vpid, generation)),
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// How a fake worker behaves during one checkpoint.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Follow the protocol and report this image path and warnings.
    Image { path: String, warnings: Vec<String> },
    /// Follow the protocol but report that writing the image failed.
    Fail(String),
    /// Drop the connection as soon as DoCheckpoint arrives.
    DisconnectOnCheckpoint,
    /// Never answer DoCheckpoint (wait for Commit{false} or EOF).
    Silent,
}

/// Wait for `BarrierReleased{name}`; a `Commit{commit:false}` instead means "abort".
fn await_release(c: &mut Conn, name: &str) -> Result<(), Msg> {
    match c.recv() {
        Msg::BarrierReleased { name: n, .. } if n == name => Ok(()),
        m @ Msg::Commit { commit: false, .. } => Err(m),
        other => panic!("waiting for release of '{name}', got {other:?}"),
    }
}

/// Play the worker side of one checkpoint on an established worker connection. Returns
/// every frame received.
pub fn play_checkpoint(mut c: Conn, behaviour: Behaviour) -> Vec<Msg> {
    let generation = match c.recv() {
        Msg::DoCheckpoint { generation, .. } => generation,
        other => panic!("expected DoCheckpoint, got {other:?}"),
    };
    match &behaviour {
        Behaviour::DisconnectOnCheckpoint => return c.seen,
        Behaviour::Silent => {
            loop {
                match c.try_recv(WAIT) {
                    Ok(Msg::Commit { commit: false, .. }) | Err(WireError::Closed) => break,
                    Ok(_) => {}
                    Err(e) => panic!("silent worker: {e}; seen {:?}", c.seen),
                }
            }
            return c.seen;
        }
        _ => {}
    }
    for name in ["suspend", "suspended"] {
        c.send(&Msg::Barrier {
            name: name.into(),
            data: None,
        });
        if await_release(&mut c, name).is_err() {
            c.send(&Msg::Resumed { generation });
            return c.seen;
        }
    }
    let (path, error, warnings) = match behaviour {
        Behaviour::Image { path, warnings } => (Some(path), None, warnings),
        Behaviour::Fail(e) => (None, Some(e), vec![]),
        _ => unreachable!(),
    };
    c.send(&Msg::ImageWritten {
        generation,
        path,
        bytes: 4096,
        error,
        warnings,
    });
    match c.recv() {
        Msg::Commit { .. } => {}
        other => panic!("expected Commit, got {other:?}"),
    }
    c.send(&Msg::Resumed { generation });
    // Wait for the coordinator to go quiet or close: keep the connection until the test
    // has its answer (the thread is joined after the command returned).
    let _ = c.try_recv(Duration::from_millis(300));
    c.seen
}

/// Connect a fake worker and play one checkpoint on a thread. Returns its vpid and the
/// thread (joining yields every frame it received).
pub fn spawn_worker(
    port: u16,
    pid: i32,
    program: &str,
    behaviour: Behaviour,
) -> (u64, JoinHandle<Vec<Msg>>) {
    let (c, (_, vpid, _)) = worker(port, pid, program);
    (
        vpid,
        std::thread::spawn(move || play_checkpoint(c, behaviour)),
    )
}

/// Does a socket listen on TCP `port` (any address)? Read from /proc/net/tcp{,6}, so the
/// check itself opens no connection (a connection would keep an `--exit-on-last`
/// coordinator alive).
pub fn listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && cols[1].ends_with(&want) && cols[3] == "0A"
            })
    })
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
