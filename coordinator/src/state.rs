//! The coordinator's pure, synchronous state machine.
//!
//! Owns everything the coordinator knows: the computation id, the generation counter, the
//! virtual-pid allocator, the connected clients (workers and commands) and the places kept for
//! processes that are exec'ing (*ghosts*), named (all-gather) barriers, the checkpoint in
//! progress (participants, joins and exits during it, phases, commit/abort decision,
//! timeouts), the restart group (adoption rules, the `restart` barrier), periodic checkpoints
//! and the `--exit-on-last` rule.
//!
//! Inputs are events (`connect`, `message`, `disconnect`, `tick`, `script_written`) stamped
//! with an [`Instant`] supplied by the caller; outputs are [`Action`]s for the server to carry
//! out. This module must never do I/O, read the clock, spawn tasks or panic on peer input:
//! everything a peer can send is answered with an [`Action`] (usually `Msg::Error`).

use ckpt_format::wire::{JoinKind, Msg, PeerData, WorkerInfo};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Identifies one connection for its whole life (never reused).
pub type ClientId = u64;

/// How long a pending connection may stay silent before it must have sent its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// `--exit-on-last`: exit after this long without any connection (after the last one closed).
pub const EXIT_ON_LAST_GRACE: Duration = Duration::from_secs(2);
/// `--exit-on-last`: exit if nobody connected at all within this long after start.
pub const EXIT_IF_NOBODY: Duration = Duration::from_secs(30);
/// The barrier restarted workers meet at before any of them continues.
pub const RESTART_BARRIER: &str = "restart";
/// Checkpoint barrier before the threads are stopped: a process that joins before it is
/// released takes part in the checkpoint.
pub const SUSPEND_BARRIER: &str = "suspend";
/// Checkpoint barrier reached once the process is frozen: a participant that disconnects after
/// arriving here was killed from outside and aborts the checkpoint.
pub const SUSPENDED_BARRIER: &str = "suspended";
/// First vpid handed out when the pid a process asks for is taken (above `PID_MAX_LIMIT`, so
/// it can never be mistaken for a real pid).
pub const VPID_HIGH: u64 = 1 << 22;
/// How long the place of a process that announced `Exec` is kept for its new image.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings the state machine needs (from the command line).
#[derive(Debug, Clone)]
pub struct Config {
    /// Per-phase timeout of a checkpoint (and of the `restart` barrier).
    pub timeout: Duration,
    /// Checkpoint directory sent to workers in `DoCheckpoint` (absolute), if any.
    pub ckpt_dir: Option<String>,
    /// Exit once no connection exists any more (see [`EXIT_ON_LAST_GRACE`]).
    pub exit_on_last: bool,
    /// Periodic checkpoint interval.
    pub interval: Option<Duration>,
    /// "host:port" this coordinator listens on, used in messages.
    pub addr: String,
}

/// What the server must do as a consequence of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send a frame to a client (no-op if it is gone).
    Send(ClientId, Msg),
    /// Drop the connection after the frames already queued for it.
    Close(ClientId),
    /// Write the restart script for a committed checkpoint, then call
    /// [`State::script_written`] with the result.
    WriteScript(ScriptJob),
    /// Write one line to the log.
    Log(String),
    /// Flush every connection and exit with status 0.
    Exit,
}

/// A committed checkpoint whose restart script must be written.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptJob {
    pub generation: u64,
    pub comp_id: u64,
    /// Image paths as reported by the workers, sorted.
    pub images: Vec<String>,
    /// The host each image's process ran on (same order as `images`).
    pub hosts: Vec<String>,
    /// Warnings to hand back to the requester (already prefixed with the vpid).
    pub warnings: Vec<String>,
    /// Command connection waiting for `CheckpointDone` (None: periodic checkpoint).
    pub reply_to: Option<ClientId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WState {
    Running,
    Checkpointing,
    Restarting,
}

impl WState {
    fn as_str(self) -> &'static str {
        match self {
            WState::Running => "running",
            WState::Checkpointing => "checkpointing",
            WState::Restarting => "restarting",
        }
    }
}

#[derive(Debug, Clone)]
struct Worker {
    vpid: u64,
    pid: i32,
    host: String,
    program: String,
    state: WState,
    /// vpid of the parent process when it is in the computation.
    parent: Option<u64>,
    /// Set by `Exec`, cleared by `ExecFailed`: until then a disconnect leaves a [`Ghost`].
    exec_deadline: Option<Instant>,
}

impl Worker {
    fn name(&self) -> String {
        format!("vpid {} (pid {}, {})", self.vpid, self.pid, self.program)
    }

    fn state_str(&self) -> &'static str {
        if self.exec_deadline.is_some() {
            "exec"
        } else {
            self.state.as_str()
        }
    }
}

/// The place of a process that exec'd (announced `Exec`, then its connection closed) until its
/// new image joins with `JoinKind::Exec` or the deadline passes. Keyed by the old connection's
/// id, which stays in the checkpoint's participants meanwhile.
#[derive(Debug)]
struct Ghost {
    worker: Worker,
    deadline: Instant,
}

/// Arrivals at one barrier: who arrived, with its all-gather contribution if it sent one.
type Arrivals = BTreeMap<ClientId, Option<Vec<u8>>>;

#[derive(Debug)]
enum Role {
    Pending,
    Command,
    Worker(Worker),
}

#[derive(Debug)]
struct Client {
    role: Role,
}

#[derive(Debug, Clone)]
struct ImageReport {
    path: Option<String>,
    error: Option<String>,
    warnings: Vec<String>,
}

#[derive(Debug)]
struct Checkpoint {
    generation: u64,
    requester: Option<ClientId>,
    participants: BTreeSet<ClientId>,
    /// Named barriers among the participants: name -> who arrived.
    barriers: BTreeMap<String, Arrivals>,
    /// Barrier `suspend` was released: later joins are not participants.
    suspend_released: bool,
    /// Participants that arrived at barrier `suspended` (frozen).
    frozen: BTreeSet<ClientId>,
    /// Last barrier released in this checkpoint (for phase names in messages).
    last_released: Option<String>,
    images: BTreeMap<ClientId, ImageReport>,
    /// Some(Ok) = commit sent, Some(Err(reason)) = abort sent.
    decision: Option<Result<(), String>>,
    resumed: BTreeSet<ClientId>,
    warnings: Vec<String>,
    phase_started: Instant,
}

#[derive(Debug)]
struct RestartGroup {
    expected: u32,
    /// The count came from `CmdRestart` (ckpt-restart knows exactly which images it
    /// restarts): it wins over the `num_peers` the processes announce.
    from_command: bool,
    members: BTreeSet<ClientId>,
    arrived: Arrivals,
    released: bool,
    /// The `ckpt-restart` commands of this restart (several with `--part`, one per host).
    commands: BTreeSet<ClientId>,
    /// `--part` restarts: the checkpoint's process count, and how many of them the parts
    /// that joined so far restart.
    parts: Option<(u32, u32)>,
    started: Instant,
}

/// Longest key and value, and most keys, the name service keeps.
pub const NAME_MAX_KEY: usize = 1024;
pub const NAME_MAX_VALUE: usize = 1 << 20;
pub const NAME_MAX_KEYS: usize = 1 << 16;

impl Checkpoint {
    /// The committed image of participant `id` (vpid `vpid`), which is gone (exited or
    /// exec'd right after the commit), stays in the generation; its warnings move to the
    /// checkpoint's, named by vpid (its connection can no longer name them).
    fn keep_image_of_gone(&mut self, id: ClientId, vpid: u64) {
        if let Some(r) = self.images.get_mut(&id) {
            let moved: Vec<String> = r
                .warnings
                .drain(..)
                .map(|x| format!("vpid {vpid}: {x}"))
                .collect();
            self.warnings.extend(moved);
        }
    }
}

/// The whole coordinator state. See the module documentation.
#[derive(Debug)]
pub struct State {
    cfg: Config,
    comp_id: Option<u64>,
    generation: u64,
    next_vpid: u64,
    /// Next vpid to try when the one a process asks for is taken (from [`VPID_HIGH`]).
    next_high: u64,
    clients: BTreeMap<ClientId, Client>,
    /// Processes that exec'd and whose new image has not joined yet, by old connection.
    ghosts: BTreeMap<ClientId, Ghost>,
    /// Barriers outside a checkpoint (participants: every live worker not in the checkpoint).
    barriers: HashMap<String, Arrivals>,
    ckpt: Option<Checkpoint>,
    restart: Option<RestartGroup>,
    /// The name service: published values, and the clients waiting for a key.
    names: BTreeMap<String, Vec<u8>>,
    lookups: BTreeMap<String, Vec<ClientId>>,
    next_periodic: Option<Instant>,
    started: Instant,
    last_close: Option<Instant>,
    id_seed: u64,
}

fn fmt_comp(c: u64) -> String {
    format!("{c:016x}")
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl State {
    /// `id_seed` feeds new computation ids (the server mixes the time and its pid into it).
    pub fn new(cfg: Config, now: Instant, id_seed: u64) -> State {
        let next_periodic = cfg.interval.map(|i| now + i);
        State {
            cfg,
            comp_id: None,
            generation: 0,
            next_vpid: 1,
            next_high: VPID_HIGH,
            clients: BTreeMap::new(),
            ghosts: BTreeMap::new(),
            barriers: HashMap::new(),
            ckpt: None,
            restart: None,
            names: BTreeMap::new(),
            lookups: BTreeMap::new(),
            next_periodic,
            started: now,
            last_close: None,
            id_seed,
        }
    }

    /// Current computation id, if any.
    #[cfg(test)]
    pub fn comp_id(&self) -> Option<u64> {
        self.comp_id
    }

    /// Current generation.
    #[cfg(test)]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A new connection was accepted.
    pub fn connect(&mut self, id: ClientId, _now: Instant) {
        self.clients.insert(
            id,
            Client {
                role: Role::Pending,
            },
        );
    }

    /// Whether the client has not sent its hello yet.
    pub fn is_pending(&self, id: ClientId) -> bool {
        matches!(
            self.clients.get(&id),
            Some(Client {
                role: Role::Pending
            })
        )
    }

    fn worker(&self, id: ClientId) -> Option<&Worker> {
        match self.clients.get(&id) {
            Some(Client {
                role: Role::Worker(w),
            }) => Some(w),
            _ => None,
        }
    }

    fn worker_mut(&mut self, id: ClientId) -> Option<&mut Worker> {
        match self.clients.get_mut(&id) {
            Some(Client {
                role: Role::Worker(w),
            }) => Some(w),
            _ => None,
        }
    }

    fn worker_ids(&self) -> Vec<ClientId> {
        self.clients
            .iter()
            .filter(|(_, c)| matches!(c.role, Role::Worker(_)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// A live worker or the ghost of one that exec'd.
    fn member(&self, id: ClientId) -> Option<&Worker> {
        self.worker(id)
            .or_else(|| self.ghosts.get(&id).map(|g| &g.worker))
    }

    fn name_of(&self, id: ClientId) -> String {
        match self.member(id) {
            Some(w) => w.name(),
            None => format!("client {id}"),
        }
    }

    fn vpid_of(&self, id: ClientId) -> u64 {
        self.member(id).map(|w| w.vpid).unwrap_or(u64::MAX)
    }

    /// vpids of live workers and ghosts.
    fn held_vpids(&self) -> BTreeSet<u64> {
        self.clients
            .values()
            .filter_map(|c| match &c.role {
                Role::Worker(w) => Some(w.vpid),
                _ => None,
            })
            .chain(self.ghosts.values().map(|g| g.worker.vpid))
            .collect()
    }

    /// Keep the allocators above a vpid that is now in use.
    fn note_vpid(&mut self, v: u64) {
        if v >= VPID_HIGH {
            self.next_high = self.next_high.max(v + 1);
        } else {
            self.next_vpid = self.next_vpid.max(v + 1);
        }
    }

    /// vpid for a fresh/forked/exec'd process: the one it asks for if nobody holds it, else
    /// one from [`VPID_HIGH`] up; `None` (no wish) counts up from 1.
    fn allocate_vpid(&mut self, want: Option<u64>) -> u64 {
        let held = self.held_vpids();
        let mut v = match want {
            Some(v) if v != 0 && !held.contains(&v) => v,
            Some(_) => self.next_high,
            None => self.next_vpid,
        };
        while held.contains(&v) {
            v += 1;
        }
        self.note_vpid(v);
        v
    }

    /// All-gather contributions of `arrivals`, sorted by vpid (the worker's vpid wins over
    /// the one it put in its `PeerData`).
    fn gather(&self, arrivals: &Arrivals) -> Vec<PeerData> {
        let mut data: Vec<PeerData> = arrivals
            .iter()
            .filter_map(|(id, d)| {
                d.as_ref().map(|d| PeerData {
                    vpid: self.vpid_of(*id),
                    data: d.clone(),
                })
            })
            .collect();
        data.sort_by_key(|d| d.vpid);
        data
    }

    /// `BarrierReleased{name, data}` to every arrival.
    fn release(&self, name: &str, arrivals: &Arrivals) -> Vec<Action> {
        let data = self.gather(arrivals);
        arrivals
            .keys()
            .map(|w| {
                Action::Send(
                    *w,
                    Msg::BarrierReleased {
                        name: name.to_string(),
                        data: data.clone(),
                    },
                )
            })
            .collect()
    }

    /// Participants sorted by vpid (for deterministic messages).
    fn by_vpid(&self, ids: impl IntoIterator<Item = ClientId>) -> Vec<ClientId> {
        let mut v: Vec<ClientId> = ids.into_iter().collect();
        v.sort_by_key(|id| (self.vpid_of(*id), *id));
        v
    }

    fn new_comp_id(&mut self) -> u64 {
        loop {
            self.id_seed = splitmix64(self.id_seed);
            if self.id_seed != 0 {
                return self.id_seed;
            }
        }
    }

    fn error_and_close(id: ClientId, message: String) -> Vec<Action> {
        vec![
            Action::Log(format!("client {id}: {message}")),
            Action::Send(id, Msg::Error { message }),
            Action::Close(id),
        ]
    }

    /// The connection sent a frame that does not decode (or has the wrong version).
    pub fn bad_frame(&mut self, id: ClientId, why: &str) -> Vec<Action> {
        Self::error_and_close(id, format!("bad frame: {why}"))
    }

    /// A pending connection did not send its hello in time.
    pub fn hello_timeout(&mut self, id: ClientId) -> Vec<Action> {
        if !self.is_pending(id) {
            return vec![];
        }
        Self::error_and_close(
            id,
            format!(
                "no HelloWorker or HelloCommand within {} s",
                HELLO_TIMEOUT.as_secs()
            ),
        )
    }

    // ------------------------------------------------------------------------------------
    // messages
    // ------------------------------------------------------------------------------------

    /// A decoded frame arrived from `id`.
    pub fn message(&mut self, id: ClientId, msg: Msg, now: Instant) -> Vec<Action> {
        let Some(client) = self.clients.get(&id) else {
            return vec![];
        };
        if matches!(client.role, Role::Pending) {
            return match msg {
                Msg::HelloCommand => {
                    self.clients.get_mut(&id).unwrap().role = Role::Command;
                    vec![Action::Log(format!("client {id}: command connection"))]
                }
                Msg::HelloWorker {
                    comp_id,
                    vpid,
                    restarting,
                    num_peers,
                    generation,
                    pid,
                    host,
                    program,
                    join,
                    parent,
                } => {
                    let hello = Hello {
                        comp_id,
                        vpid,
                        restarting: restarting || join == JoinKind::Restart,
                        num_peers,
                        generation,
                        pid,
                        host,
                        program,
                        join,
                        parent,
                    };
                    match self.hello_worker(id, hello, now) {
                        Ok(actions) => actions,
                        Err(message) => Self::error_and_close(id, message),
                    }
                }
                other => Self::error_and_close(
                    id,
                    format!(
                        "first frame must be HelloWorker or HelloCommand, got {}",
                        msg_name(&other)
                    ),
                ),
            };
        }
        match msg {
            Msg::CmdCheckpoint => match self.start_checkpoint(Some(id), now) {
                Ok(a) => a,
                Err(message) => vec![
                    Action::Log(format!("checkpoint refused: {message}")),
                    Action::Send(id, Msg::Error { message }),
                ],
            },
            Msg::CmdStatus | Msg::CmdList => vec![Action::Send(id, self.status())],
            Msg::CmdKill => {
                let mut a = self.kill_all("kill requested");
                a.push(Action::Send(id, Msg::Ok));
                a
            }
            Msg::CmdQuit => {
                let mut a = self.kill_all("quit requested");
                a.push(Action::Send(id, Msg::Ok));
                a.push(Action::Exit);
                a
            }
            Msg::CmdInterval { seconds } => {
                if seconds == 0 {
                    self.cfg.interval = None;
                    self.next_periodic = None;
                } else {
                    let i = Duration::from_secs(seconds);
                    self.cfg.interval = Some(i);
                    self.next_periodic = Some(now + i);
                }
                vec![
                    Action::Log(format!("checkpoint interval set to {seconds} s (0 = off)")),
                    Action::Send(id, Msg::Ok),
                ]
            }
            Msg::CmdRestart {
                comp_id,
                num_peers,
                generation,
                part_of,
            } => self.cmd_restart(id, comp_id, (num_peers, part_of), generation, now),
            Msg::Publish { key, value } => self.publish(id, key, value),
            Msg::Lookup { key } => self.lookup(id, key),
            Msg::Barrier { name, data } if self.worker(id).is_some() => {
                self.barrier(id, name, data.map(|d| d.data), now)
            }
            Msg::Exec if self.worker(id).is_some() => {
                let w = self.worker_mut(id).unwrap();
                w.exec_deadline = Some(now + EXEC_TIMEOUT);
                vec![Action::Log(format!(
                    "{} is exec'ing: its place is kept {} s for the new program",
                    w.name(),
                    EXEC_TIMEOUT.as_secs()
                ))]
            }
            Msg::ExecFailed if self.worker(id).is_some() => {
                let w = self.worker_mut(id).unwrap();
                w.exec_deadline = None;
                vec![Action::Log(format!(
                    "{}: exec failed, it goes on",
                    w.name()
                ))]
            }
            Msg::ImageWritten {
                generation,
                path,
                bytes,
                error,
                warnings,
            } if self.worker(id).is_some() => self.image_written(
                id,
                generation,
                ImageReport {
                    path,
                    error,
                    warnings,
                },
                bytes,
                now,
            ),
            Msg::Resumed { generation } if self.worker(id).is_some() => {
                self.resumed(id, generation, now)
            }
            Msg::HelloWorker { .. } | Msg::HelloCommand => vec![Action::Send(
                id,
                Msg::Error {
                    message: "duplicate hello".into(),
                },
            )],
            other => vec![
                Action::Log(format!(
                    "client {id}: unexpected {} ignored",
                    msg_name(&other)
                )),
                Action::Send(
                    id,
                    Msg::Error {
                        message: format!("unexpected message {}", msg_name(&other)),
                    },
                ),
            ],
        }
    }

    fn hello_worker(
        &mut self,
        id: ClientId,
        h: Hello,
        now: Instant,
    ) -> Result<Vec<Action>, String> {
        let mut actions = Vec::new();
        let restart_open = self.restart.as_ref().is_some_and(|g| !g.released);
        let vpid;
        let generation;
        let mut parent = h.parent;
        // The place of the process before its exec (ghost or old connection) this one takes.
        let mut inherited: Option<ClientId> = None;
        if h.restarting {
            let (Some(c), Some(v)) = (h.comp_id, h.vpid) else {
                return Err("restarting HelloWorker needs comp_id and vpid".into());
            };
            match self.comp_id {
                None => {
                    self.comp_id = Some(c);
                    self.generation = h.generation;
                    actions.push(Action::Log(format!(
                        "adopted computation {} generation {} from restarting vpid {v}",
                        fmt_comp(c),
                        h.generation
                    )));
                }
                Some(cur) if cur != c => {
                    return Err(format!(
                        "coordinator serves computation {}; start another coordinator with --coord-port",
                        fmt_comp(cur)
                    ));
                }
                Some(_) => {}
            }
            if !restart_open && self.worker_ids().is_empty() {
                actions.extend(self.drop_ghosts_of_dead_run());
            }
            if let Some(other) = self
                .worker_ids()
                .into_iter()
                .chain(self.ghosts.keys().copied())
                .find(|w| self.vpid_of(*w) == v)
            {
                return Err(format!(
                    "vpid {v} is already held by a live process ({})",
                    self.name_of(other)
                ));
            }
            if !restart_open {
                self.restart = Some(RestartGroup {
                    expected: h.num_peers,
                    from_command: false,
                    members: BTreeSet::new(),
                    arrived: Arrivals::new(),
                    released: false,
                    commands: BTreeSet::new(),
                    parts: None,
                    started: now,
                });
            }
            let g = self.restart.as_mut().unwrap();
            if g.expected != h.num_peers {
                if !g.from_command {
                    return Err(format!(
                        "restarting process announces {} processes but this restart expects {}",
                        h.num_peers, g.expected
                    ));
                }
                actions.push(Action::Log(format!(
                    "restarting vpid {v} announces {} processes; ckpt-restart said {}: using {}",
                    h.num_peers, g.expected, g.expected
                )));
            }
            if g.members.len() as u64 >= u64::from(g.expected) {
                return Err(format!(
                    "restart of computation {} already has all {} processes",
                    fmt_comp(c),
                    g.expected
                ));
            }
            g.members.insert(id);
            self.generation = self.generation.max(h.generation);
            self.note_vpid(v);
            vpid = v;
            generation = self.generation;
        } else {
            if restart_open {
                let g = self.restart.as_ref().unwrap();
                return Err(format!(
                    "restart in progress ({} of {} processes joined); a new process cannot join now",
                    g.members.len(),
                    g.expected
                ));
            }
            match (self.comp_id, h.comp_id) {
                (None, None) => {
                    let c = self.new_comp_id();
                    self.comp_id = Some(c);
                    self.generation = 0;
                    actions.push(Action::Log(format!("new computation {}", fmt_comp(c))));
                }
                (None, Some(c)) => {
                    self.comp_id = Some(c);
                    self.generation = self.generation.max(h.generation);
                }
                (Some(cur), Some(c)) if cur != c => {
                    return Err(format!(
                        "coordinator serves computation {}; start another coordinator with --coord-port",
                        fmt_comp(cur)
                    ));
                }
                _ => {}
            }
            let old = match (h.join, h.vpid) {
                (JoinKind::Exec, Some(v)) => self.take_exec_place(v, &h, &mut actions),
                _ => None,
            };
            if let Some((old_id, _)) = &old {
                for arrived in self.barriers.values_mut() {
                    arrived.remove(old_id);
                }
                self.barriers.retain(|_, a| !a.is_empty());
            }
            vpid = match &old {
                Some((old_id, w)) => {
                    inherited = Some(*old_id);
                    parent = w.parent.or(h.parent);
                    w.vpid
                }
                None => self.allocate_vpid(h.vpid),
            };
            generation = self.generation;
        }
        let comp_id = self.comp_id.unwrap();
        let mut w = Worker {
            vpid,
            pid: h.pid,
            host: h.host,
            program: h.program,
            state: if h.restarting {
                WState::Restarting
            } else {
                WState::Running
            },
            parent,
            exec_deadline: None,
        };
        // A join before barrier 'suspend' of a running checkpoint is released takes part in it
        // (and so does an exec'd image whose old self was a participant).
        let mut take_part = None;
        let mut eval = false;
        if let Some(c) = self.ckpt.as_mut().filter(|_| !h.restarting) {
            let open = !c.suspend_released && c.decision.is_none();
            let was_participant = inherited.is_some_and(|old| c.participants.remove(&old));
            // Its old image was committed and it went on at once (resumed and exec'd before
            // its `Resumed` came): that image belongs to the generation like any other.
            let committed = was_participant && matches!(c.decision, Some(Ok(())));
            if let Some(old) = inherited {
                for arrived in c.barriers.values_mut() {
                    arrived.remove(&old);
                }
                if committed {
                    c.keep_image_of_gone(old, vpid);
                } else {
                    c.images.remove(&old);
                }
                c.resumed.remove(&old);
                c.frozen.remove(&old);
            }
            if open {
                c.participants.insert(id);
                take_part = Some(c.generation);
            } else if committed {
                actions.push(Action::Log(format!(
                    "vpid {vpid} exec'd right after checkpoint {} was committed; its image stays in the generation",
                    c.generation
                )));
                eval = true;
            } else if was_participant {
                // Cannot happen with a well-behaved worker (its fork/exec gate is closed
                // before 'suspend'): treat it as an exit of the old image.
                actions.push(Action::Log(format!(
                    "vpid {vpid} exec'd after barrier '{SUSPEND_BARRIER}' of checkpoint {}; it has no image in this generation",
                    c.generation
                )));
                eval = true;
            }
        }
        if take_part.is_some() {
            w.state = WState::Checkpointing;
        }
        actions.push(Action::Log(format!(
            "client {id}: worker {} on {}{}{} joined{}",
            w.name(),
            w.host,
            match h.join {
                JoinKind::Fresh => "",
                JoinKind::Forked => " (forked)",
                JoinKind::Exec => " (exec'd)",
                JoinKind::Restart => "",
            },
            if h.restarting { " (restarting)" } else { "" },
            match take_part {
                Some(g) => format!(", takes part in checkpoint {g}"),
                None => String::new(),
            }
        )));
        self.clients.get_mut(&id).unwrap().role = Role::Worker(w);
        actions.push(Action::Send(
            id,
            Msg::Welcome {
                comp_id,
                vpid,
                generation,
            },
        ));
        if let Some(generation) = take_part {
            actions.push(Action::Send(
                id,
                Msg::DoCheckpoint {
                    generation,
                    ckpt_dir: self.cfg.ckpt_dir.clone(),
                },
            ));
        }
        if eval {
            actions.extend(self.eval_ckpt(now));
        }
        Ok(actions)
    }

    /// An exec'd image (`JoinKind::Exec`, vpid `v`) takes the place of its old self: the ghost
    /// of `v`, or the old connection if it is still open (exec closes it asynchronously; it
    /// is dropped silently, so its later disconnect concerns nobody). Returns the old
    /// connection's id and worker; None if `v` is nobody's (a new process then).
    fn take_exec_place(
        &mut self,
        v: u64,
        h: &Hello,
        actions: &mut Vec<Action>,
    ) -> Option<(ClientId, Worker)> {
        if let Some(old) = self
            .ghosts
            .iter()
            .find(|(_, g)| g.worker.vpid == v)
            .map(|(id, _)| *id)
        {
            let g = self.ghosts.remove(&old).unwrap();
            return Some((old, g.worker));
        }
        let old = self.worker_ids().into_iter().find(|id| {
            self.worker(*id).is_some_and(|w| {
                w.vpid == v && (w.exec_deadline.is_some() || (w.pid == h.pid && w.host == h.host))
            })
        })?;
        let Some(Client {
            role: Role::Worker(w),
        }) = self.clients.remove(&old)
        else {
            return None;
        };
        actions.push(Action::Log(format!(
            "client {old}: replaced by the exec'd image of {}",
            w.name()
        )));
        actions.push(Action::Close(old));
        Some((old, w))
    }

    /// `ckpt-restart` announces a restart of `num_peers` images (`part_of`: of a checkpoint
    /// of that many processes; other parts join the same restart).
    fn cmd_restart(
        &mut self,
        id: ClientId,
        comp_id: u64,
        (num_peers, part_of): (u32, Option<u32>),
        generation: u64,
        now: Instant,
    ) -> Vec<Action> {
        let live = self.worker_ids().len();
        // Live workers that are restarting members of this very restart do not count.
        let joined_restart = match &self.restart {
            Some(g) if !g.released => self
                .worker_ids()
                .iter()
                .filter(|w| g.members.contains(w))
                .count(),
            _ => 0,
        };
        let ok = match self.comp_id {
            None => live == 0,
            Some(c) => c == comp_id && live == joined_restart,
        };
        if !ok {
            let message = match self.comp_id {
                Some(c) => format!(
                    "coordinator at {} serves computation {} with {} processes; use another --coord-port",
                    self.cfg.addr,
                    fmt_comp(c),
                    live
                ),
                None => format!(
                    "coordinator at {} has {} processes; use another --coord-port",
                    self.cfg.addr, live
                ),
            };
            return vec![
                Action::Log(format!("restart refused: {message}")),
                Action::Send(id, Msg::Error { message }),
            ];
        }
        // Another part of a `--part` restart whose first part is already here.
        let joins = match (&self.restart, part_of) {
            (Some(g), Some(_)) if !g.released && !g.commands.is_empty() => g.parts,
            _ => None,
        };
        if let Some((total, claimed)) = joins {
            let refuse = if part_of != Some(total) {
                Some(format!(
                    "these images are of a checkpoint of {} processes but the restart in progress expects {total}",
                    part_of.unwrap_or(0)
                ))
            } else if generation != self.generation {
                Some(format!(
                    "these images are of generation {generation} but the restart in progress is of generation {}",
                    self.generation
                ))
            } else if claimed + num_peers > total {
                Some(format!(
                    "the parts of this restart would bring back {} processes; the checkpoint had {total}",
                    claimed + num_peers
                ))
            } else {
                None
            };
            if let Some(message) = refuse {
                return vec![
                    Action::Log(format!("restart part refused: {message}")),
                    Action::Send(id, Msg::Error { message }),
                ];
            }
            let g = self.restart.as_mut().unwrap();
            g.parts = Some((total, claimed + num_peers));
            g.commands.insert(id);
            let mut actions = vec![
                Action::Log(format!(
                    "restart of computation {} generation {generation}: a part with {num_peers} processes joined ({} of {total})",
                    fmt_comp(comp_id),
                    claimed + num_peers
                )),
                Action::Send(id, Msg::Ok),
            ];
            actions.extend(self.eval_restart());
            return actions;
        }
        let dropped = self.drop_ghosts_of_dead_run();
        if self.comp_id.is_none() {
            self.generation = generation;
        }
        self.generation = self.generation.max(generation);
        self.comp_id = Some(comp_id);
        // A new restart: names published for an earlier one are stale.
        self.names.clear();
        let expected = part_of.unwrap_or(num_peers);
        let parts = part_of.map(|t| (t, num_peers));
        match &mut self.restart {
            Some(g) if !g.released => {
                g.commands = BTreeSet::from([id]);
                g.expected = expected;
                g.parts = parts;
                g.from_command = true;
            }
            _ => {
                self.restart = Some(RestartGroup {
                    expected,
                    from_command: true,
                    members: BTreeSet::new(),
                    arrived: Arrivals::new(),
                    released: false,
                    commands: BTreeSet::from([id]),
                    parts,
                    started: now,
                })
            }
        }
        let what = match part_of {
            Some(t) => format!("a part with {num_peers} of {t} processes"),
            None => format!("expecting {num_peers} processes"),
        };
        let mut actions = vec![
            Action::Log(format!(
                "restart of computation {} generation {generation}: {what}",
                fmt_comp(comp_id)
            )),
            Action::Send(id, Msg::Ok),
        ];
        actions.extend(dropped);
        actions.extend(self.eval_restart());
        actions
    }

    /// Name service: store a value and hand it to everyone waiting for its key.
    fn publish(&mut self, id: ClientId, key: String, value: Vec<u8>) -> Vec<Action> {
        let refuse = if key.len() > NAME_MAX_KEY {
            Some(format!("name longer than {NAME_MAX_KEY} bytes"))
        } else if value.len() > NAME_MAX_VALUE {
            Some(format!(
                "value of {key:?} is {} bytes (at most {NAME_MAX_VALUE})",
                value.len()
            ))
        } else if self.names.len() >= NAME_MAX_KEYS && !self.names.contains_key(&key) {
            Some(format!(
                "the name service holds {NAME_MAX_KEYS} names already"
            ))
        } else {
            None
        };
        if let Some(message) = refuse {
            return vec![Action::Send(id, Msg::Error { message })];
        }
        let mut actions = vec![Action::Send(id, Msg::Ok)];
        for waiting in self.lookups.remove(&key).unwrap_or_default() {
            actions.push(Action::Send(
                waiting,
                Msg::Value {
                    key: key.clone(),
                    value: value.clone(),
                },
            ));
        }
        self.names.insert(key, value);
        actions
    }

    /// Name service: answer now if the key is published, else when it is.
    fn lookup(&mut self, id: ClientId, key: String) -> Vec<Action> {
        if let Some(value) = self.names.get(&key) {
            let value = value.clone();
            return vec![Action::Send(id, Msg::Value { key, value })];
        }
        if key.len() > NAME_MAX_KEY {
            let message = format!("name longer than {NAME_MAX_KEY} bytes");
            return vec![Action::Send(id, Msg::Error { message })];
        }
        self.lookups.entry(key).or_default().push(id);
        vec![]
    }

    fn kill_all(&mut self, why: &str) -> Vec<Action> {
        let ids = self.worker_ids();
        let mut a = vec![Action::Log(format!(
            "{why}: sending Kill to {} processes",
            ids.len()
        ))];
        a.extend(ids.into_iter().map(|w| Action::Send(w, Msg::Kill)));
        a
    }

    /// The `Status` reply.
    pub fn status(&self) -> Msg {
        let state = if let Some(c) = &self.ckpt {
            format!("checkpointing {}", c.generation)
        } else if self.restart.is_some() {
            "restarting".to_string()
        } else if !self.worker_ids().is_empty() || !self.ghosts.is_empty() {
            "running".to_string()
        } else {
            "idle".to_string()
        };
        let info = |w: &Worker, state: &str| WorkerInfo {
            vpid: w.vpid,
            pid: w.pid,
            host: w.host.clone(),
            program: w.program.clone(),
            state: state.to_string(),
            parent: w.parent,
        };
        let mut workers: Vec<WorkerInfo> = self
            .clients
            .values()
            .filter_map(|c| match &c.role {
                Role::Worker(w) => Some(info(w, w.state_str())),
                _ => None,
            })
            .chain(self.ghosts.values().map(|g| info(&g.worker, "exec")))
            .collect();
        workers.sort_by_key(|w| w.vpid);
        Msg::Status {
            comp_id: self.comp_id,
            generation: self.generation,
            state,
            workers,
        }
    }

    // ------------------------------------------------------------------------------------
    // checkpoint
    // ------------------------------------------------------------------------------------

    /// Start a checkpoint (`requester` = command connection to answer, None = periodic).
    pub fn start_checkpoint(
        &mut self,
        requester: Option<ClientId>,
        now: Instant,
    ) -> Result<Vec<Action>, String> {
        let ids = self.worker_ids();
        if ids.is_empty() && self.ghosts.is_empty() {
            return Err("no processes connected to this coordinator".into());
        }
        if let Some(c) = &self.ckpt {
            return Err(format!("checkpoint {} already in progress", c.generation));
        }
        if let Some(g) = &self.restart {
            if !g.released {
                return Err(format!(
                    "restart in progress ({} of {} processes at barrier '{RESTART_BARRIER}')",
                    g.arrived.len(),
                    g.expected
                ));
            }
            // Restarted processes may still sit in restart-time plugin barriers.
            let waiting = g
                .members
                .iter()
                .filter(|m| {
                    self.worker(**m)
                        .is_some_and(|w| w.state == WState::Restarting)
                })
                .count();
            return Err(format!(
                "restart in progress ({waiting} of {} restarted processes have not resumed yet); try again once they run",
                g.expected
            ));
        }
        self.generation += 1;
        let generation = self.generation;
        // Ghosts take part: their exec'd image gets DoCheckpoint when it joins.
        let ghosts: Vec<ClientId> = self.ghosts.keys().copied().collect();
        let mut actions = vec![Action::Log(format!(
            "checkpoint {generation} started ({} processes, {})",
            ids.len() + ghosts.len(),
            match requester {
                Some(r) => format!("requested by client {r}"),
                None => "periodic".into(),
            }
        ))];
        for id in &ids {
            if let Some(w) = self.worker_mut(*id) {
                w.state = WState::Checkpointing;
            }
            actions.push(Action::Send(
                *id,
                Msg::DoCheckpoint {
                    generation,
                    ckpt_dir: self.cfg.ckpt_dir.clone(),
                },
            ));
        }
        self.ckpt = Some(Checkpoint {
            generation,
            requester,
            participants: ids.into_iter().chain(ghosts).collect(),
            barriers: BTreeMap::new(),
            suspend_released: false,
            frozen: BTreeSet::new(),
            last_released: None,
            images: BTreeMap::new(),
            decision: None,
            resumed: BTreeSet::new(),
            warnings: Vec::new(),
            phase_started: now,
        });
        Ok(actions)
    }

    fn barrier(
        &mut self,
        id: ClientId,
        name: String,
        data: Option<Vec<u8>>,
        now: Instant,
    ) -> Vec<Action> {
        // 1. Checkpoint scope.
        if let Some(c) = self.ckpt.as_mut().filter(|c| c.participants.contains(&id)) {
            if c.decision.is_some() {
                return vec![Action::Send(
                    id,
                    Msg::Error {
                        message: format!(
                            "barrier '{name}' after the commit decision of checkpoint {}",
                            c.generation
                        ),
                    },
                )];
            }
            if name == SUSPENDED_BARRIER {
                c.frozen.insert(id);
            }
            c.barriers.entry(name).or_default().insert(id, data);
            return self.eval_ckpt(now);
        }
        // 2. The restart barrier of restarting workers.
        if name == RESTART_BARRIER
            && let Some(g) = self.restart.as_mut().filter(|g| g.members.contains(&id))
        {
            if g.released {
                return vec![Action::Send(
                    id,
                    Msg::BarrierReleased {
                        name,
                        data: Vec::new(),
                    },
                )];
            }
            g.arrived.insert(id, data);
            return self.eval_restart();
        }
        // 3. Every other barrier: among all live workers outside a checkpoint.
        self.barriers.entry(name).or_default().insert(id, data);
        self.eval_global_barriers()
    }

    fn eval_global_barriers(&mut self) -> Vec<Action> {
        let in_ckpt: BTreeSet<ClientId> = self
            .ckpt
            .as_ref()
            .map(|c| c.participants.clone())
            .unwrap_or_default();
        let expected: BTreeSet<ClientId> = self
            .worker_ids()
            .into_iter()
            .filter(|w| !in_ckpt.contains(w))
            .collect();
        let mut actions = Vec::new();
        let ready: Vec<String> = self
            .barriers
            .iter()
            .filter(|(_, arrived)| expected.iter().all(|w| arrived.contains_key(w)))
            .map(|(n, _)| n.clone())
            .collect();
        for name in ready {
            let arrived = self.barriers.remove(&name).unwrap_or_default();
            actions.push(Action::Log(format!(
                "barrier '{name}' released ({} processes)",
                arrived.len()
            )));
            actions.extend(self.release(&name, &arrived));
        }
        actions
    }

    fn eval_restart(&mut self) -> Vec<Action> {
        let Some(g) = self.restart.as_mut() else {
            return vec![];
        };
        if g.released || g.arrived.len() as u64 != u64::from(g.expected) {
            return vec![];
        }
        g.released = true;
        let arrived = std::mem::take(&mut g.arrived);
        let mut actions = vec![Action::Log(format!(
            "barrier '{RESTART_BARRIER}' released: all {} processes of computation {} are back",
            g.expected,
            fmt_comp(self.comp_id.unwrap_or(0))
        ))];
        actions.extend(self.release(RESTART_BARRIER, &arrived));
        actions.extend(self.maybe_end_restart());
        actions
    }

    /// The restart group ends when it was released and no member is still restarting.
    fn maybe_end_restart(&mut self) -> Vec<Action> {
        let done = match &self.restart {
            Some(g) if g.released => g.members.iter().all(|m| {
                self.worker(*m)
                    .is_none_or(|w| w.state != WState::Restarting)
            }),
            _ => false,
        };
        if done {
            self.restart = None;
            vec![Action::Log("restart complete: every process runs".into())]
        } else {
            vec![]
        }
    }

    fn fail_restart(&mut self, reason: String) -> Vec<Action> {
        let Some(g) = self.restart.take() else {
            return vec![];
        };
        let message = format!("restart failed: {reason}");
        let mut actions = vec![Action::Log(message.clone())];
        for m in &g.members {
            actions.push(Action::Send(
                *m,
                Msg::Error {
                    message: message.clone(),
                },
            ));
            actions.push(Action::Close(*m));
        }
        for c in g.commands {
            actions.push(Action::Send(
                c,
                Msg::Error {
                    message: message.clone(),
                },
            ));
        }
        actions
    }

    fn image_written(
        &mut self,
        id: ClientId,
        generation: u64,
        report: ImageReport,
        bytes: u64,
        now: Instant,
    ) -> Vec<Action> {
        let name = self.name_of(id);
        match self.ckpt.as_mut() {
            Some(c) if c.generation == generation && c.participants.contains(&id) => {
                if c.decision.is_some() || c.images.contains_key(&id) {
                    return vec![Action::Log(format!(
                        "{name}: duplicate ImageWritten for checkpoint {generation} ignored"
                    ))];
                }
                let log = match (&report.error, &report.path) {
                    (Some(e), _) => format!("{name}: image failed: {e}"),
                    (None, Some(p)) => format!("{name}: image {p} ({bytes} bytes)"),
                    (None, None) => format!("{name}: ImageWritten without a path"),
                };
                c.images.insert(id, report);
                let mut a = vec![Action::Log(log)];
                a.extend(self.eval_ckpt(now));
                a
            }
            _ if generation <= self.generation => vec![Action::Log(format!(
                "{name}: stale ImageWritten for checkpoint {generation} ignored"
            ))],
            _ => vec![Action::Send(
                id,
                Msg::Error {
                    message: format!("no checkpoint {generation} in progress"),
                },
            )],
        }
    }

    fn resumed(&mut self, id: ClientId, generation: u64, now: Instant) -> Vec<Action> {
        let name = self.name_of(id);
        if let Some(c) = self
            .ckpt
            .as_mut()
            .filter(|c| c.generation == generation && c.participants.contains(&id))
        {
            if c.decision.is_none() {
                return vec![Action::Send(
                    id,
                    Msg::Error {
                        message: format!(
                            "Resumed before the commit decision of checkpoint {generation}"
                        ),
                    },
                )];
            }
            c.resumed.insert(id);
            if let Some(w) = self.worker_mut(id) {
                w.state = WState::Running;
            }
            return self.eval_ckpt(now);
        }
        // Resumed after a restart, or a late Resumed after an aborted checkpoint.
        let mut actions = Vec::new();
        let current = self.generation;
        if let Some(w) = self.worker_mut(id) {
            if w.state == WState::Restarting {
                w.state = WState::Running;
                actions.push(Action::Log(format!("{name} resumed after restart")));
                actions.extend(self.maybe_end_restart());
                return actions;
            }
            if generation <= current {
                // The worker aborted (timeout) and resumed: nothing to wait for.
                w.state = WState::Running;
                return vec![Action::Log(format!(
                    "{name}: Resumed for finished checkpoint {generation}"
                ))];
            }
        }
        vec![Action::Send(
            id,
            Msg::Error {
                message: format!("no checkpoint {generation} in progress"),
            },
        )]
    }

    /// Re-evaluate the checkpoint: release barriers, decide commit/abort, finish.
    fn eval_ckpt(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(c) = self.ckpt.as_mut() else {
            return actions;
        };
        if c.participants.is_empty() {
            let reason = "every process disconnected".to_string();
            return self.finish_failed(reason);
        }
        // Barriers.
        let ready: Vec<String> = c
            .barriers
            .iter()
            .filter(|(_, arrived)| c.participants.iter().all(|p| arrived.contains_key(p)))
            .map(|(n, _)| n.clone())
            .collect();
        for name in ready {
            let c = self.ckpt.as_mut().unwrap();
            let arrived = c.barriers.remove(&name).unwrap_or_default();
            actions.push(Action::Log(format!(
                "checkpoint {}: barrier '{name}' released ({} processes)",
                c.generation,
                arrived.len()
            )));
            if name == SUSPEND_BARRIER {
                c.suspend_released = true;
            }
            c.last_released = Some(name.clone());
            c.phase_started = now;
            actions.extend(self.release(&name, &arrived));
        }
        let c = self.ckpt.as_mut().unwrap();
        // Commit decision.
        if c.decision.is_none() && c.participants.iter().all(|p| c.images.contains_key(p)) {
            let mut errors = Vec::new();
            let parts: Vec<ClientId> = c.participants.iter().copied().collect();
            let generation = c.generation;
            for p in self.by_vpid(parts) {
                let c = self.ckpt.as_ref().unwrap();
                let r = &c.images[&p];
                let err = match (&r.error, &r.path) {
                    (Some(e), _) => Some(e.clone()),
                    (None, None) => Some("no image path reported".to_string()),
                    _ => None,
                };
                if let Some(e) = err {
                    errors.push(format!("{}: {e}", self.name_of(p)));
                }
            }
            let c = self.ckpt.as_mut().unwrap();
            let (commit, reason) = if errors.is_empty() {
                (true, None)
            } else {
                (false, Some(errors.join("; ")))
            };
            c.decision = Some(match &reason {
                None => Ok(()),
                Some(r) => Err(r.clone()),
            });
            c.phase_started = now;
            actions.push(Action::Log(format!(
                "checkpoint {generation}: {}",
                match &reason {
                    None => "every image written, commit".to_string(),
                    Some(r) => format!("abort: {r}"),
                }
            )));
            for p in &c.participants {
                actions.push(Action::Send(
                    *p,
                    Msg::Commit {
                        generation,
                        commit,
                        reason: reason.clone(),
                    },
                ));
            }
        }
        // Finish.
        let c = self.ckpt.as_ref().unwrap();
        if c.decision.is_some() && c.participants.iter().all(|p| c.resumed.contains(p)) {
            actions.extend(self.finish());
            // Restarted workers that went through a checkpoint are running now.
            actions.extend(self.maybe_end_restart());
        }
        actions
    }

    fn finish(&mut self) -> Vec<Action> {
        let c = self.ckpt.take().expect("finish without a checkpoint");
        match c.decision {
            Some(Ok(())) => {
                let mut placed: Vec<(String, String)> = c
                    .images
                    .iter()
                    .filter_map(|(id, r)| {
                        let host = self.member(*id).map(|w| w.host.clone()).unwrap_or_default();
                        r.path.clone().map(|p| (p, host))
                    })
                    .collect();
                placed.sort();
                let (images, hosts): (Vec<String>, Vec<String>) = placed.into_iter().unzip();
                let mut warnings = c.warnings;
                for p in self.by_vpid(c.images.keys().copied()) {
                    let v = self.vpid_of(p);
                    for w in &c.images[&p].warnings {
                        warnings.push(format!("vpid {v}: {w}"));
                    }
                }
                vec![Action::WriteScript(ScriptJob {
                    generation: c.generation,
                    comp_id: self.comp_id.unwrap_or(0),
                    images,
                    hosts,
                    warnings,
                    reply_to: c.requester,
                })]
            }
            Some(Err(reason)) => {
                let message = format!("checkpoint {} failed: {reason}", c.generation);
                let mut a = vec![Action::Log(message.clone())];
                if let Some(r) = c.requester {
                    a.push(Action::Send(r, Msg::Error { message }));
                }
                a
            }
            None => unreachable!("finish before the decision"),
        }
    }

    /// Fail the checkpoint now: abort participants still waiting for a decision, answer the
    /// requester.
    fn finish_failed(&mut self, reason: String) -> Vec<Action> {
        let Some(c) = self.ckpt.take() else {
            return vec![];
        };
        let message = format!("checkpoint {} failed: {reason}", c.generation);
        let mut a = vec![Action::Log(message.clone())];
        if c.decision.is_none() {
            for p in c
                .participants
                .iter()
                .filter(|p| self.clients.contains_key(p))
            {
                a.push(Action::Send(
                    *p,
                    Msg::Commit {
                        generation: c.generation,
                        commit: false,
                        reason: Some(reason.clone()),
                    },
                ));
            }
        }
        for p in &c.participants {
            if let Some(w) = self.worker_mut(*p) {
                w.state = WState::Running;
            }
        }
        if let Some(r) = c.requester {
            a.push(Action::Send(r, Msg::Error { message }));
        }
        a.extend(self.maybe_end_restart());
        a
    }

    /// The server wrote (or failed to write) the restart script of a committed checkpoint.
    pub fn script_written(
        &mut self,
        job: ScriptJob,
        script: Result<String, String>,
    ) -> Vec<Action> {
        let mut warnings = job.warnings;
        let script = match script {
            Ok(p) => Some(p),
            Err(e) => {
                warnings.push(format!("cannot write the restart script: {e}"));
                None
            }
        };
        let mut a = vec![Action::Log(format!(
            "checkpoint {} done: {} images{}{}",
            job.generation,
            job.images.len(),
            match &script {
                Some(s) => format!(", restart script {s}"),
                None => String::new(),
            },
            if warnings.is_empty() {
                String::new()
            } else {
                format!(", warnings: {}", warnings.join("; "))
            }
        ))];
        if let Some(r) = job.reply_to {
            a.push(Action::Send(
                r,
                Msg::CheckpointDone {
                    generation: job.generation,
                    images: job.images,
                    script,
                    warnings,
                },
            ));
        }
        a
    }

    /// What the current checkpoint waits for: (phase description, first missing client).
    fn waiting_for(&self) -> Option<(String, ClientId)> {
        let c = self.ckpt.as_ref()?;
        let parts = self.by_vpid(c.participants.iter().copied());
        let missing = |have: &dyn Fn(ClientId) -> bool| parts.iter().copied().find(|p| !have(*p));
        if c.decision.is_some() {
            return missing(&|p| c.resumed.contains(&p)).map(|p| ("resume".to_string(), p));
        }
        if let Some((name, arrived)) = c.barriers.iter().next() {
            return missing(&|p| arrived.contains_key(&p))
                .map(|p| (format!("barrier '{name}'"), p));
        }
        let phase = match c.last_released.as_deref() {
            None => "barrier 'suspend'".to_string(),
            Some("suspend") => "barrier 'suspended'".to_string(),
            Some(_) => "image writing".to_string(),
        };
        if phase == "image writing" || !c.images.is_empty() {
            return missing(&|p| c.images.contains_key(&p)).map(|p| ("image writing".into(), p));
        }
        parts.first().map(|p| (phase, *p))
    }

    // ------------------------------------------------------------------------------------
    // disconnect and time
    // ------------------------------------------------------------------------------------

    /// The connection is gone (idempotent).
    pub fn disconnect(&mut self, id: ClientId, now: Instant) -> Vec<Action> {
        let Some(client) = self.clients.remove(&id) else {
            return vec![];
        };
        self.last_close = Some(now);
        let mut actions = Vec::new();
        for waiting in self.lookups.values_mut() {
            waiting.retain(|c| *c != id);
        }
        self.lookups.retain(|_, w| !w.is_empty());
        if let Some(g) = self.restart.as_mut()
            && g.commands.remove(&id)
            && g.parts.is_some()
            && !g.released
        {
            // A part died before its processes were back: the others would wait for it in
            // vain (in the name service, at the restart barrier).
            actions.extend(self.fail_restart(
                "a `ckpt-restart --part` exited before every process was back".into(),
            ));
        }
        let Role::Worker(w) = client.role else {
            actions.push(Action::Log(format!("client {id} disconnected")));
            return actions;
        };
        actions.push(Action::Log(format!("{} disconnected", w.name())));
        let frozen = self
            .ckpt
            .as_ref()
            .is_some_and(|c| c.decision.is_none() && c.frozen.contains(&id));
        if let Some(deadline) = w.exec_deadline.filter(|_| !frozen) {
            // Exec'ing: keep its place (vpid, participant slot) for the new image. It has to
            // arrive at the checkpoint's barriers again.
            if let Some(c) = self.ckpt.as_mut() {
                for arrived in c.barriers.values_mut() {
                    arrived.remove(&id);
                }
                c.barriers.retain(|_, a| !a.is_empty());
            }
            actions.push(Action::Log(format!(
                "{} is exec'ing: its place is kept for the new program",
                w.name()
            )));
            self.ghosts.insert(
                id,
                Ghost {
                    worker: w.clone(),
                    deadline,
                },
            );
        } else if self
            .ckpt
            .as_ref()
            .is_some_and(|c| c.participants.contains(&id))
        {
            actions.extend(self.participant_left(id, &w, now));
        }
        // Restart member.
        if let Some(g) = self.restart.as_mut().filter(|g| g.members.contains(&id)) {
            if g.released {
                g.members.remove(&id);
                actions.extend(self.maybe_end_restart());
            } else {
                g.members.remove(&id);
                g.arrived.remove(&id);
                actions.extend(self.fail_restart(format!(
                    "{} disconnected before barrier '{RESTART_BARRIER}'",
                    w.name()
                )));
            }
        }
        // Global barriers.
        for arrived in self.barriers.values_mut() {
            arrived.remove(&id);
        }
        self.barriers.retain(|_, a| !a.is_empty());
        actions.extend(self.eval_global_barriers());
        actions.extend(self.maybe_forget());
        actions
    }

    /// A participant of the running checkpoint is gone for good (`w`: what it was).
    ///
    /// Before it arrived at barrier `suspended` this is an ordinary exit: it leaves the
    /// participants and the checkpoint goes on without it. After (it was frozen, so it was
    /// killed from outside) the checkpoint is aborted. After the commit decision it is dropped
    /// with a warning.
    fn participant_left(&mut self, id: ClientId, w: &Worker, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(c) = self.ckpt.as_mut().filter(|c| c.participants.contains(&id)) else {
            return actions;
        };
        let frozen = c.frozen.contains(&id);
        c.participants.remove(&id);
        if c.decision == Some(Ok(())) && c.images.get(&id).is_some_and(|r| r.path.is_some()) {
            // Its image is committed: a process that resumed and exited at once (a `sleep`
            // whose time ran out while it was frozen) is in this generation as it was.
            c.keep_image_of_gone(id, w.vpid);
            c.resumed.remove(&id);
            c.frozen.remove(&id);
            for arrived in c.barriers.values_mut() {
                arrived.remove(&id);
            }
            actions.push(Action::Log(format!(
                "{} exited after its image of checkpoint {} was committed; the image stands",
                w.name(),
                c.generation
            )));
            actions.extend(self.eval_ckpt(now));
            return actions;
        }
        c.images.remove(&id);
        c.resumed.remove(&id);
        c.frozen.remove(&id);
        for arrived in c.barriers.values_mut() {
            arrived.remove(&id);
        }
        c.barriers.retain(|_, a| !a.is_empty());
        if c.decision.is_none() && frozen {
            return self.finish_failed(format!("{} died while frozen", w.name()));
        }
        if c.decision.is_some() {
            let warning = format!(
                "{} disconnected during checkpoint {}; it has no image in this generation",
                w.name(),
                c.generation
            );
            actions.push(Action::Log(warning.clone()));
            c.warnings.push(warning);
        } else {
            actions.push(Action::Log(format!(
                "{} exited before it was frozen: checkpoint {} goes on without it",
                w.name(),
                c.generation
            )));
        }
        actions.extend(self.eval_ckpt(now));
        actions
    }

    /// A restart begins while no process of the computation is alive: the places kept for
    /// processes that were exec'ing when the run died are gone with that run (else they would
    /// hold their vpids and make the restarted run's first checkpoint wait for them).
    fn drop_ghosts_of_dead_run(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.ghosts)
            .into_values()
            .map(|g| {
                Action::Log(format!(
                    "{} was exec'ing when its run died: its place is dropped for the restart",
                    g.worker.name()
                ))
            })
            .collect()
    }

    /// With no process left (no worker, no ghost) and nothing in progress, the computation is
    /// forgotten: the next fresh process starts a new one (the coordinator is stateless).
    fn maybe_forget(&mut self) -> Vec<Action> {
        if self.comp_id.is_some()
            && self.worker_ids().is_empty()
            && self.ghosts.is_empty()
            && self.ckpt.is_none()
            && self.restart.is_none()
        {
            let c = self.comp_id.take().unwrap();
            self.generation = 0;
            self.next_vpid = 1;
            self.next_high = VPID_HIGH;
            self.barriers.clear();
            return vec![Action::Log(format!(
                "computation {} has no process left; forgotten",
                fmt_comp(c)
            ))];
        }
        vec![]
    }

    /// Time passed: checkpoint and restart timeouts, periodic checkpoints, `--exit-on-last`.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let timeout = self.cfg.timeout;
        // Exec'd images that never joined: statically linked or setuid programs ignore
        // LD_PRELOAD. They are gone from the computation.
        let expired: Vec<ClientId> = self
            .ghosts
            .iter()
            .filter(|(_, g)| now >= g.deadline)
            .map(|(id, _)| *id)
            .collect();
        let any_expired = !expired.is_empty();
        for id in expired {
            let g = self.ghosts.remove(&id).unwrap();
            let warning = format!(
                "vpid {} exec'd {}, which runs without ckpt (statically linked or setuid?)",
                g.worker.vpid, g.worker.program
            );
            actions.push(Action::Log(format!("warning: {warning}")));
            if let Some(c) = self.ckpt.as_mut().filter(|c| c.participants.contains(&id)) {
                c.warnings.push(warning);
            }
            actions.extend(self.participant_left(id, &g.worker, now));
        }
        if any_expired {
            actions.extend(self.eval_global_barriers());
            actions.extend(self.maybe_forget());
        }
        // Checkpoint phase timeout.
        if let Some(c) = &self.ckpt
            && now.saturating_duration_since(c.phase_started) >= timeout
        {
            let (phase, who) = self
                .waiting_for()
                .map(|(ph, p)| (ph, self.name_of(p)))
                .unwrap_or_else(|| ("?".into(), "?".into()));
            let reason = format!(
                "timed out after {} s waiting for {who} at {phase}",
                timeout.as_secs()
            );
            actions.extend(self.finish_failed(reason));
        }
        // Restart barrier timeout.
        if let Some(g) = self.restart.as_ref().filter(|g| !g.released)
            && now.saturating_duration_since(g.started) >= timeout
        {
            let reason = format!(
                "timed out after {} s: {} of {} processes joined, {} at barrier '{RESTART_BARRIER}'",
                timeout.as_secs(),
                g.members.len(),
                g.expected,
                g.arrived.len()
            );
            actions.extend(self.fail_restart(reason));
            actions.extend(self.maybe_forget());
        }
        // Periodic checkpoints.
        if let (Some(i), Some(next)) = (self.cfg.interval, self.next_periodic)
            && now >= next
        {
            self.next_periodic = Some(now + i);
            if self.ckpt.is_none() && !self.worker_ids().is_empty() {
                match self.start_checkpoint(None, now) {
                    Ok(a) => actions.extend(a),
                    Err(e) => {
                        actions.push(Action::Log(format!("periodic checkpoint skipped: {e}")))
                    }
                }
            }
        }
        // --exit-on-last.
        if self.cfg.exit_on_last && self.clients.is_empty() {
            match self.last_close {
                Some(t) if now.saturating_duration_since(t) >= EXIT_ON_LAST_GRACE => {
                    actions.push(Action::Log(format!(
                        "no connection for {} s: exiting (--exit-on-last)",
                        EXIT_ON_LAST_GRACE.as_secs()
                    )));
                    actions.push(Action::Exit);
                }
                None if now.saturating_duration_since(self.started) >= EXIT_IF_NOBODY => {
                    actions.push(Action::Log(format!(
                        "nobody connected within {} s: exiting (--exit-on-last)",
                        EXIT_IF_NOBODY.as_secs()
                    )));
                    actions.push(Action::Exit);
                }
                _ => {}
            }
        }
        actions
    }
}

struct Hello {
    comp_id: Option<u64>,
    vpid: Option<u64>,
    restarting: bool,
    num_peers: u32,
    generation: u64,
    pid: i32,
    host: String,
    program: String,
    join: JoinKind,
    parent: Option<u64>,
}

/// Short name of a message for error texts.
pub fn msg_name(m: &Msg) -> &'static str {
    match m {
        Msg::HelloWorker { .. } => "HelloWorker",
        Msg::HelloCommand => "HelloCommand",
        Msg::Welcome { .. } => "Welcome",
        Msg::DoCheckpoint { .. } => "DoCheckpoint",
        Msg::Barrier { .. } => "Barrier",
        Msg::BarrierReleased { .. } => "BarrierReleased",
        Msg::Exec => "Exec",
        Msg::ExecFailed => "ExecFailed",
        Msg::ImageWritten { .. } => "ImageWritten",
        Msg::Commit { .. } => "Commit",
        Msg::Resumed { .. } => "Resumed",
        Msg::CmdCheckpoint => "CmdCheckpoint",
        Msg::CmdStatus => "CmdStatus",
        Msg::CmdList => "CmdList",
        Msg::CmdKill => "CmdKill",
        Msg::CmdQuit => "CmdQuit",
        Msg::CmdInterval { .. } => "CmdInterval",
        Msg::CmdRestart { .. } => "CmdRestart",
        Msg::Publish { .. } => "Publish",
        Msg::Lookup { .. } => "Lookup",
        Msg::Value { .. } => "Value",
        Msg::Ok => "Ok",
        Msg::Error { .. } => "Error",
        Msg::CheckpointDone { .. } => "CheckpointDone",
        Msg::Status { .. } => "Status",
        Msg::Kill => "Kill",
    }
}

#[cfg(test)]
mod tests;
