//! The coordinator's pure, synchronous state machine.
//!
//! Owns everything the coordinator knows: the computation id, the generation counter, the
//! virtual-pid allocator, the connected clients (workers and commands), named barriers, the
//! checkpoint in progress (phases, commit/abort decision, timeouts), the restart group
//! (adoption rules, the `restart` barrier), periodic checkpoints and the `--exit-on-last` rule.
//!
//! Inputs are events (`connect`, `message`, `disconnect`, `tick`, `script_written`) stamped
//! with an [`Instant`] supplied by the caller; outputs are [`Action`]s for the server to carry
//! out. This module must never do I/O, read the clock, spawn tasks or panic on peer input:
//! everything a peer can send is answered with an [`Action`] (usually `Msg::Error`).

use ckpt_format::wire::{Msg, WorkerInfo};
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
}

impl Worker {
    fn name(&self) -> String {
        format!("vpid {} (pid {}, {})", self.vpid, self.pid, self.program)
    }
}

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
    barriers: BTreeMap<String, BTreeSet<ClientId>>,
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
    arrived: BTreeSet<ClientId>,
    released: bool,
    command: Option<ClientId>,
    started: Instant,
}

/// The whole coordinator state. See the module documentation.
#[derive(Debug)]
pub struct State {
    cfg: Config,
    comp_id: Option<u64>,
    generation: u64,
    next_vpid: u64,
    clients: BTreeMap<ClientId, Client>,
    /// Barriers outside a checkpoint (participants: every live worker not in the checkpoint).
    barriers: HashMap<String, BTreeSet<ClientId>>,
    ckpt: Option<Checkpoint>,
    restart: Option<RestartGroup>,
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
            clients: BTreeMap::new(),
            barriers: HashMap::new(),
            ckpt: None,
            restart: None,
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

    fn name_of(&self, id: ClientId) -> String {
        match self.worker(id) {
            Some(w) => w.name(),
            None => format!("client {id}"),
        }
    }

    fn vpid_of(&self, id: ClientId) -> u64 {
        self.worker(id).map(|w| w.vpid).unwrap_or(u64::MAX)
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
                    ..
                } => {
                    let hello = Hello {
                        comp_id,
                        vpid,
                        restarting,
                        num_peers,
                        generation,
                        pid,
                        host,
                        program,
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
            } => self.cmd_restart(id, comp_id, num_peers, generation, now),
            Msg::Barrier { name, .. } if self.worker(id).is_some() => self.barrier(id, name, now),
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
            if let Some(other) = self
                .worker_ids()
                .into_iter()
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
                    arrived: BTreeSet::new(),
                    released: false,
                    command: None,
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
            self.next_vpid = self.next_vpid.max(v + 1);
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
            let held: BTreeSet<u64> = self
                .worker_ids()
                .into_iter()
                .map(|w| self.vpid_of(w))
                .collect();
            vpid = match h.vpid {
                Some(v) if !held.contains(&v) => v,
                _ => {
                    let mut v = self.next_vpid;
                    while held.contains(&v) {
                        v += 1;
                    }
                    v
                }
            };
            self.next_vpid = self.next_vpid.max(vpid + 1);
            generation = self.generation;
        }
        let comp_id = self.comp_id.unwrap();
        let w = Worker {
            vpid,
            pid: h.pid,
            host: h.host,
            program: h.program,
            state: if h.restarting {
                WState::Restarting
            } else {
                WState::Running
            },
        };
        actions.push(Action::Log(format!(
            "client {id}: worker {} on {}{} joined",
            w.name(),
            w.host,
            if h.restarting { " (restarting)" } else { "" }
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
        Ok(actions)
    }

    fn cmd_restart(
        &mut self,
        id: ClientId,
        comp_id: u64,
        num_peers: u32,
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
        if self.comp_id.is_none() {
            self.generation = generation;
        }
        self.generation = self.generation.max(generation);
        self.comp_id = Some(comp_id);
        match &mut self.restart {
            Some(g) if !g.released => {
                g.command = Some(id);
                g.expected = num_peers;
                g.from_command = true;
            }
            _ => {
                self.restart = Some(RestartGroup {
                    expected: num_peers,
                    from_command: true,
                    members: BTreeSet::new(),
                    arrived: BTreeSet::new(),
                    released: false,
                    command: Some(id),
                    started: now,
                })
            }
        }
        let mut actions = vec![
            Action::Log(format!(
                "restart of computation {} generation {generation}: expecting {num_peers} processes",
                fmt_comp(comp_id)
            )),
            Action::Send(id, Msg::Ok),
        ];
        actions.extend(self.eval_restart());
        actions
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
        } else if !self.worker_ids().is_empty() {
            "running".to_string()
        } else {
            "idle".to_string()
        };
        let mut workers: Vec<WorkerInfo> = self
            .clients
            .values()
            .filter_map(|c| match &c.role {
                Role::Worker(w) => Some(WorkerInfo {
                    vpid: w.vpid,
                    pid: w.pid,
                    host: w.host.clone(),
                    program: w.program.clone(),
                    state: w.state.as_str().to_string(),
                    parent: None,
                }),
                _ => None,
            })
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
        if ids.is_empty() {
            return Err("no processes connected to this coordinator".into());
        }
        if let Some(c) = &self.ckpt {
            return Err(format!("checkpoint {} already in progress", c.generation));
        }
        if let Some(g) = self.restart.as_ref().filter(|g| !g.released) {
            return Err(format!(
                "restart in progress ({} of {} processes at barrier '{RESTART_BARRIER}')",
                g.arrived.len(),
                g.expected
            ));
        }
        self.generation += 1;
        let generation = self.generation;
        let mut actions = vec![Action::Log(format!(
            "checkpoint {generation} started ({} processes, {})",
            ids.len(),
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
            participants: ids.into_iter().collect(),
            barriers: BTreeMap::new(),
            last_released: None,
            images: BTreeMap::new(),
            decision: None,
            resumed: BTreeSet::new(),
            warnings: Vec::new(),
            phase_started: now,
        });
        Ok(actions)
    }

    fn barrier(&mut self, id: ClientId, name: String, now: Instant) -> Vec<Action> {
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
            c.barriers.entry(name).or_default().insert(id);
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
            g.arrived.insert(id);
            return self.eval_restart();
        }
        // 3. Every other barrier: among all live workers outside a checkpoint.
        self.barriers.entry(name).or_default().insert(id);
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
            .filter(|(_, arrived)| expected.is_subset(arrived))
            .map(|(n, _)| n.clone())
            .collect();
        for name in ready {
            let arrived = self.barriers.remove(&name).unwrap_or_default();
            actions.push(Action::Log(format!(
                "barrier '{name}' released ({} processes)",
                arrived.len()
            )));
            for w in arrived {
                actions.push(Action::Send(
                    w,
                    Msg::BarrierReleased {
                        name: name.clone(),
                        data: Vec::new(),
                    },
                ));
            }
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
        for w in arrived {
            actions.push(Action::Send(
                w,
                Msg::BarrierReleased {
                    name: RESTART_BARRIER.into(),
                    data: Vec::new(),
                },
            ));
        }
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
        if let Some(c) = g.command {
            actions.push(Action::Send(c, Msg::Error { message }));
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
            .filter(|(_, arrived)| c.participants.is_subset(arrived))
            .map(|(n, _)| n.clone())
            .collect();
        for name in ready {
            let arrived = c.barriers.remove(&name).unwrap_or_default();
            actions.push(Action::Log(format!(
                "checkpoint {}: barrier '{name}' released ({} processes)",
                c.generation,
                arrived.len()
            )));
            for w in arrived {
                actions.push(Action::Send(
                    w,
                    Msg::BarrierReleased {
                        name: name.clone(),
                        data: Vec::new(),
                    },
                ));
            }
            c.last_released = Some(name);
            c.phase_started = now;
        }
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
                let mut images: Vec<String> =
                    c.images.values().filter_map(|r| r.path.clone()).collect();
                images.sort();
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
            for p in &c.participants {
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
            return missing(&|p| arrived.contains(&p)).map(|p| (format!("barrier '{name}'"), p));
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
        let Role::Worker(w) = client.role else {
            actions.push(Action::Log(format!("client {id} disconnected")));
            return actions;
        };
        actions.push(Action::Log(format!("{} disconnected", w.name())));
        // Checkpoint participant.
        if let Some(c) = self.ckpt.as_mut().filter(|c| c.participants.contains(&id)) {
            c.participants.remove(&id);
            c.images.remove(&id);
            c.resumed.remove(&id);
            for arrived in c.barriers.values_mut() {
                arrived.remove(&id);
            }
            c.barriers.retain(|_, a| !a.is_empty());
            let warning = format!(
                "{} disconnected during checkpoint {}; it has no image in this generation",
                w.name(),
                c.generation
            );
            actions.push(Action::Log(warning.clone()));
            c.warnings.push(warning);
            actions.extend(self.eval_ckpt(now));
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
        if self.restart.as_ref().is_some_and(|g| g.command == Some(id)) {
            self.restart.as_mut().unwrap().command = None;
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

    /// With no process left and nothing in progress, the computation is forgotten: the next
    /// fresh process starts a new one (the coordinator is stateless).
    fn maybe_forget(&mut self) -> Vec<Action> {
        if self.comp_id.is_some()
            && self.worker_ids().is_empty()
            && self.ckpt.is_none()
            && self.restart.is_none()
        {
            let c = self.comp_id.take().unwrap();
            self.generation = 0;
            self.next_vpid = 1;
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
        Msg::Ok => "Ok",
        Msg::Error { .. } => "Error",
        Msg::CheckpointDone { .. } => "CheckpointDone",
        Msg::Status { .. } => "Status",
        Msg::Kill => "Kill",
    }
}

#[cfg(test)]
mod tests;
