//! Connections: moves frames between TCP sockets and the [`State`] machine.
//!
//! Owns the tokio side: the accept loop, one reader task and one writer task per connection,
//! the 100 ms tick that drives timeouts, SIGTERM/SIGINT, and the orderly shutdown that flushes
//! every queued frame before the process exits. It holds the state behind a plain mutex that
//! is never held across an `.await`. It must never decide anything about the protocol itself
//! (that is `state.rs`), never block the runtime on a peer, and never panic on peer input.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ckpt_format::wire::{self, MAX_FRAME, Msg, WireError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc};

use crate::log;
use crate::script::{self, ScriptCtx};
use crate::state::{Action, ClientId, Config, HELLO_TIMEOUT, State};

/// How often the state machine is ticked (timeout and interval resolution).
const TICK: Duration = Duration::from_millis(100);
/// After we close a connection, how long we keep reading (and discarding) so the peer gets
/// our last frames before the socket goes away.
const LINGER: Duration = Duration::from_secs(1);
/// On exit, how long we wait for queued frames to reach every peer.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

enum Out {
    Frame(Vec<u8>),
    Close,
}

struct Shared {
    state: State,
    conns: HashMap<ClientId, mpsc::UnboundedSender<Out>>,
    /// Connections we decided to drop: their further frames are ignored.
    closing: HashSet<ClientId>,
    next_id: ClientId,
}

struct Server {
    shared: Mutex<Shared>,
    exit: Notify,
    script: ScriptCtx,
}

impl Server {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Carry out actions (and the actions they cause) with the lock held.
    fn apply(&self, sh: &mut Shared, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Send(id, m) => {
                    if let Some(tx) = sh.conns.get(&id) {
                        let _ = tx.send(Out::Frame(wire::encode(&m)));
                    }
                }
                Action::Close(id) => {
                    if let Some(tx) = sh.conns.get(&id) {
                        let _ = tx.send(Out::Close);
                    }
                    sh.closing.insert(id);
                }
                Action::WriteScript(job) => {
                    let r = script::write(&job, &self.script, &log::utc_now(false));
                    queue.extend(sh.state.script_written(job, r));
                }
                Action::Log(s) => log::line(&s),
                Action::Exit => self.exit.notify_one(),
            }
        }
    }

    fn with<F: FnOnce(&mut State) -> Vec<Action>>(&self, f: F) {
        let mut sh = self.lock();
        let a = f(&mut sh.state);
        self.apply(&mut sh, a);
    }

    fn accept(self: &Arc<Self>, sock: TcpStream, peer: SocketAddr) {
        let _ = sock.set_nodelay(true);
        let (tx, rx) = mpsc::unbounded_channel();
        let id = {
            let mut sh = self.lock();
            sh.next_id += 1;
            let id = sh.next_id;
            sh.state.connect(id, Instant::now());
            sh.conns.insert(id, tx);
            id
        };
        log!("client {id}: connection from {peer}");
        let (rd, wr) = sock.into_split();
        tokio::spawn(self.clone().connection(id, rd, wr, rx));
    }

    /// Writer side of a connection; owns the reader task and the disconnect.
    async fn connection(
        self: Arc<Self>,
        id: ClientId,
        rd: OwnedReadHalf,
        mut wr: OwnedWriteHalf,
        mut rx: mpsc::UnboundedReceiver<Out>,
    ) {
        let mut reader = tokio::spawn(self.clone().reader(id, rd));
        while let Some(out) = rx.recv().await {
            match out {
                Out::Frame(bytes) => {
                    if wr.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Out::Close => break,
            }
        }
        let _ = wr.shutdown().await;
        if tokio::time::timeout(LINGER, &mut reader).await.is_err() {
            reader.abort();
        }
        let mut sh = self.lock();
        sh.conns.remove(&id);
        sh.closing.remove(&id);
        let a = sh.state.disconnect(id, Instant::now());
        self.apply(&mut sh, a);
    }

    async fn reader(self: Arc<Self>, id: ClientId, mut rd: OwnedReadHalf) {
        let mut first = true;
        loop {
            let r = if first {
                first = false;
                match tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut rd)).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.with(|s| s.hello_timeout(id));
                        return drain(rd).await;
                    }
                }
            } else {
                read_frame(&mut rd).await
            };
            match r {
                Ok(msg) => {
                    let mut sh = self.lock();
                    if sh.closing.contains(&id) {
                        continue;
                    }
                    let a = sh.state.message(id, msg, Instant::now());
                    self.apply(&mut sh, a);
                }
                Err(WireError::Closed) | Err(WireError::Io(_)) => {
                    if let Some(tx) = self.lock().conns.get(&id) {
                        let _ = tx.send(Out::Close);
                    }
                    return;
                }
                Err(e) => {
                    self.with(|s| s.bad_frame(id, &e.to_string()));
                    return drain(rd).await;
                }
            }
        }
    }
}

/// Read and discard until the peer closes (bounded by [`LINGER`] in the writer).
async fn drain(mut rd: OwnedReadHalf) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = rd.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Read one frame (async twin of [`wire::recv`]).
async fn read_frame(rd: &mut OwnedReadHalf) -> Result<Msg, WireError> {
    fn eof(e: std::io::Error) -> WireError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::Closed
        } else {
            WireError::Io(e)
        }
    }
    let mut len = [0u8; 4];
    rd.read_exact(&mut len).await.map_err(eof)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    rd.read_exact(&mut body).await.map_err(eof)?;
    wire::decode(&body)
}

/// Serve until `CmdQuit`, `--exit-on-last` or SIGTERM/SIGINT.
pub async fn run(
    listener: std::net::TcpListener,
    cfg: Config,
    script: ScriptCtx,
    id_seed: u64,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let server = Arc::new(Server {
        shared: Mutex::new(Shared {
            state: State::new(cfg, Instant::now(), id_seed),
            conns: HashMap::new(),
            closing: HashSet::new(),
            next_id: 0,
        }),
        exit: Notify::new(),
        script,
    });
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, peer)) => server.accept(sock, peer),
                Err(e) => {
                    // EMFILE and friends: log, back off, keep serving.
                    log!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = tick.tick() => server.with(|s| s.tick(Instant::now())),
            _ = server.exit.notified() => break,
            _ = sigterm.recv() => { log!("SIGTERM: exiting"); break; }
            _ = sigint.recv() => { log!("SIGINT: exiting"); break; }
        }
    }
    drop(listener);
    {
        let sh = server.lock();
        for tx in sh.conns.values() {
            let _ = tx.send(Out::Close);
        }
    }
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while !server.lock().conns.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log!("exit");
    Ok(())
}
