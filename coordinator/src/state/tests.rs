//! Unit tests of the coordinator state machine: no sockets, no clock (time is passed in).

use super::*;

fn cfg() -> Config {
    Config {
        timeout: Duration::from_secs(10),
        ckpt_dir: Some("/ckpt".into()),
        exit_on_last: false,
        interval: None,
        addr: "127.0.0.1:7779".into(),
    }
}

fn hello(pid: i32) -> Msg {
    Msg::HelloWorker {
        comp_id: None,
        vpid: None,
        restarting: false,
        num_peers: 0,
        generation: 0,
        pid,
        host: "h".into(),
        program: format!("prog{pid}"),
        join: Default::default(),
        parent: None,
    }
}

fn restart_hello(comp: u64, vpid: u64, peers: u32, generation: u64) -> Msg {
    Msg::HelloWorker {
        comp_id: Some(comp),
        vpid: Some(vpid),
        restarting: true,
        num_peers: peers,
        generation,
        pid: 1000 + vpid as i32,
        host: "h".into(),
        program: format!("r{vpid}"),
        join: Default::default(),
        parent: None,
    }
}

fn join_hello(pid: i32, join: JoinKind, vpid: Option<u64>, parent: Option<u64>) -> Msg {
    Msg::HelloWorker {
        comp_id: None,
        vpid,
        restarting: false,
        num_peers: 0,
        generation: 0,
        pid,
        host: "h".into(),
        program: format!("prog{pid}"),
        join,
        parent,
    }
}

fn tree_restart_hello(comp: u64, vpid: u64, peers: u32, parent: Option<u64>) -> Msg {
    Msg::HelloWorker {
        comp_id: Some(comp),
        vpid: Some(vpid),
        restarting: true,
        num_peers: peers,
        generation: 4,
        pid: vpid as i32,
        host: "h".into(),
        program: format!("r{vpid}"),
        join: JoinKind::Restart,
        parent,
    }
}

fn worker_info(t: &T, vpid: u64) -> WorkerInfo {
    match t.s.status() {
        Msg::Status { workers, .. } => workers
            .into_iter()
            .find(|w| w.vpid == vpid)
            .unwrap_or_else(|| panic!("vpid {vpid} not in status")),
        _ => unreachable!(),
    }
}

fn vpids(t: &T) -> Vec<u64> {
    match t.s.status() {
        Msg::Status { workers, .. } => workers.iter().map(|w| w.vpid).collect(),
        _ => unreachable!(),
    }
}

fn logs(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(l) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

fn gathered(actions: &[Action], id: ClientId, name: &str) -> Option<Vec<PeerData>> {
    to(actions, id).into_iter().find_map(|m| match m {
        Msg::BarrierReleased { name: n, data } if n == name => Some(data),
        _ => None,
    })
}

fn pd(vpid: u64, data: &[u8]) -> PeerData {
    PeerData {
        vpid,
        data: data.to_vec(),
    }
}

/// Frames sent to `id` by `actions`.
fn to(actions: &[Action], id: ClientId) -> Vec<Msg> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(c, m) if *c == id => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn closed(actions: &[Action], id: ClientId) -> bool {
    actions.contains(&Action::Close(id))
}

fn error_text(actions: &[Action], id: ClientId) -> String {
    to(actions, id)
        .into_iter()
        .find_map(|m| match m {
            Msg::Error { message } => Some(message),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Error to {id} in {actions:?}"))
}

struct T {
    s: State,
    now: Instant,
}

impl T {
    fn new() -> T {
        T::with(cfg())
    }
    fn with(c: Config) -> T {
        let now = Instant::now();
        T {
            s: State::new(c, now, 42),
            now,
        }
    }
    fn advance(&mut self, secs: u64) -> Vec<Action> {
        self.now += Duration::from_secs(secs);
        self.s.tick(self.now)
    }
    fn msg(&mut self, id: ClientId, m: Msg) -> Vec<Action> {
        self.s.message(id, m, self.now)
    }
    fn command(&mut self, id: ClientId) {
        self.s.connect(id, self.now);
        assert!(
            self.msg(id, Msg::HelloCommand)
                .iter()
                .all(|a| matches!(a, Action::Log(_)))
        );
    }
    /// Connect a fresh worker; returns its Welcome.
    fn worker(&mut self, id: ClientId) -> (u64, u64, u64) {
        self.s.connect(id, self.now);
        let a = self.msg(id, hello(id as i32));
        match to(&a, id).as_slice() {
            [
                Msg::Welcome {
                    comp_id,
                    vpid,
                    generation,
                },
            ] => (*comp_id, *vpid, *generation),
            other => panic!("expected Welcome, got {other:?}"),
        }
    }
    fn gone(&mut self, id: ClientId) -> Vec<Action> {
        self.s.disconnect(id, self.now)
    }
    /// Connect a worker with `hello`; returns its vpid (panics unless it got a Welcome).
    fn join(&mut self, id: ClientId, hello: Msg) -> u64 {
        self.s.connect(id, self.now);
        let a = self.msg(id, hello);
        match to(&a, id).first() {
            Some(Msg::Welcome { vpid, .. }) => *vpid,
            other => panic!("expected Welcome, got {other:?} in {a:?}"),
        }
    }
    fn barrier_data(&mut self, id: ClientId, name: &str, data: &[u8]) -> Vec<Action> {
        self.msg(
            id,
            Msg::Barrier {
                name: name.into(),
                data: Some(PeerData {
                    vpid: 12345,
                    data: data.to_vec(),
                }),
            },
        )
    }
    fn barrier(&mut self, id: ClientId, name: &str) -> Vec<Action> {
        self.msg(
            id,
            Msg::Barrier {
                name: name.into(),
                data: None,
            },
        )
    }
    fn image(&mut self, id: ClientId, generation: u64, error: Option<&str>) -> Vec<Action> {
        self.msg(
            id,
            Msg::ImageWritten {
                generation,
                path: Some(format!("/ckpt/img_{id}")),
                bytes: 10,
                error: error.map(String::from),
                warnings: vec![format!("warn{id}")],
            },
        )
    }
    fn state(&self) -> String {
        match self.s.status() {
            Msg::Status { state, .. } => state,
            _ => unreachable!(),
        }
    }
}

fn released(actions: &[Action], id: ClientId, name: &str) -> bool {
    to(actions, id).contains(&Msg::BarrierReleased {
        name: name.into(),
        data: Vec::new(),
    })
}

#[test]
fn vpids_are_allocated_from_one_and_comp_id_is_created() {
    let mut t = T::new();
    assert_eq!(t.state(), "idle");
    let (c1, v1, g1) = t.worker(1);
    let (c2, v2, _) = t.worker(2);
    assert_ne!(c1, 0);
    assert_eq!(c1, c2);
    assert_eq!((v1, v2, g1), (1, 2, 0));
    assert_eq!(t.state(), "running");
    // A vpid is never reused while its holder lives, and keeps counting after departures.
    t.gone(1);
    let (_, v3, _) = t.worker(3);
    assert_eq!(v3, 3);
}

#[test]
fn first_frame_must_be_a_hello() {
    let mut t = T::new();
    t.s.connect(1, t.now);
    let a = t.msg(1, Msg::CmdStatus);
    assert!(error_text(&a, 1).contains("HelloWorker or HelloCommand"));
    assert!(closed(&a, 1));
    t.s.connect(2, t.now);
    let a = t.s.hello_timeout(2);
    assert!(closed(&a, 2));
    // Once it said hello, the hello timeout does nothing.
    t.command(3);
    assert!(t.s.hello_timeout(3).is_empty());
}

#[test]
fn checkpoint_commits_and_writes_script() {
    let mut t = T::new();
    t.worker(1);
    t.worker(2);
    t.command(9);
    let a = t.msg(9, Msg::CmdCheckpoint);
    for w in [1, 2] {
        assert_eq!(
            to(&a, w),
            vec![Msg::DoCheckpoint {
                generation: 1,
                ckpt_dir: Some("/ckpt".into())
            }]
        );
    }
    assert_eq!(t.state(), "checkpointing 1");
    // A second request while it runs is refused.
    let a = t.msg(9, Msg::CmdCheckpoint);
    assert_eq!(error_text(&a, 9), "checkpoint 1 already in progress");

    for name in ["suspend", "suspended", "plugin:drain"] {
        let a = t.barrier(1, name);
        assert!(!released(&a, 1, name), "released with one of two arrived");
        let a = t.barrier(2, name);
        assert!(released(&a, 1, name) && released(&a, 2, name));
    }
    let a = t.image(2, 1, None);
    assert!(to(&a, 2).is_empty());
    let a = t.image(1, 1, None);
    for w in [1, 2] {
        assert_eq!(
            to(&a, w),
            vec![Msg::Commit {
                generation: 1,
                commit: true,
                reason: None
            }]
        );
    }
    let a = t.msg(1, Msg::Resumed { generation: 1 });
    assert!(
        to(&a, 9).is_empty(),
        "answered before every process resumed"
    );
    let a = t.msg(2, Msg::Resumed { generation: 1 });
    let job = script_job(&a).expect("WriteScript");
    assert_eq!(job.images, vec!["/ckpt/img_1", "/ckpt/img_2"]);
    assert_eq!(job.warnings, vec!["vpid 1: warn1", "vpid 2: warn2"]);
    assert_eq!(job.reply_to, Some(9));
    let a =
        t.s.script_written(job, Ok("/ckpt/ckpt_restart_script.sh".into()));
    assert_eq!(
        to(&a, 9),
        vec![Msg::CheckpointDone {
            generation: 1,
            images: vec!["/ckpt/img_1".into(), "/ckpt/img_2".into()],
            script: Some("/ckpt/ckpt_restart_script.sh".into()),
            warnings: vec!["vpid 1: warn1".into(), "vpid 2: warn2".into()],
        }]
    );
    assert_eq!(t.state(), "running");
    assert_eq!(t.s.generation(), 1);
}

#[test]
fn checkpoint_without_workers_is_refused() {
    let mut t = T::new();
    t.command(9);
    let a = t.msg(9, Msg::CmdCheckpoint);
    assert_eq!(
        error_text(&a, 9),
        "no processes connected to this coordinator"
    );
}

#[test]
fn one_image_error_aborts_for_everyone() {
    let mut t = T::new();
    t.worker(1);
    t.worker(2);
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    t.image(1, 1, None);
    let a = t.image(2, 1, Some("disk full"));
    let reason = "vpid 2 (pid 2, prog2): disk full".to_string();
    for w in [1, 2] {
        assert_eq!(
            to(&a, w),
            vec![Msg::Commit {
                generation: 1,
                commit: false,
                reason: Some(reason.clone())
            }]
        );
    }
    t.msg(1, Msg::Resumed { generation: 1 });
    let a = t.msg(2, Msg::Resumed { generation: 1 });
    assert_eq!(error_text(&a, 9), format!("checkpoint 1 failed: {reason}"));
    assert!(!a.iter().any(|a| matches!(a, Action::WriteScript(_))));
    assert_eq!(t.state(), "running");
}

fn script_job(actions: &[Action]) -> Option<ScriptJob> {
    actions.iter().find_map(|a| match a {
        Action::WriteScript(j) => Some(j.clone()),
        _ => None,
    })
}

#[test]
fn exit_before_suspended_is_a_normal_exit() {
    let mut t = T::new();
    t.worker(1);
    t.worker(2);
    t.worker(3);
    t.worker(4);
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    t.barrier(1, "suspend");
    t.barrier(2, "suspend");
    // Worker 3 exits: the barrier is re-evaluated, released to the others once 4 is there.
    let a = t.gone(3);
    assert!(!released(&a, 1, "suspend"));
    let a = t.barrier(4, "suspend");
    assert!(released(&a, 1, "suspend") && released(&a, 2, "suspend"));
    assert!(to(&a, 3).is_empty());
    // A worker that arrived at a barrier (not 'suspended') and then exits is removed from
    // it: the barrier is released when the survivor arrives, and only to the survivor.
    let a = t.barrier(2, "plugin:x");
    assert!(!released(&a, 2, "plugin:x"));
    t.gone(2);
    let a = t.gone(4);
    // Log only: nothing to the requester, and no Commit.
    assert!(to(&a, 9).is_empty() && to(&a, 1).is_empty());
    let a = t.barrier(1, "plugin:x");
    assert!(released(&a, 1, "plugin:x"));
    assert!(to(&a, 2).is_empty());
    // Every participant but one exited: the checkpoint still completes.
    t.barrier(1, "suspended");
    t.image(1, 1, None);
    let job = script_job(&t.msg(1, Msg::Resumed { generation: 1 })).expect("commit");
    assert_eq!(job.images, vec!["/ckpt/img_1"]);
    // An exit is no warning (its image is simply not there).
    assert_eq!(job.warnings, vec!["vpid 1: warn1"]);
}

#[test]
fn death_after_suspended_aborts_the_checkpoint() {
    let mut t = T::new();
    t.worker(1);
    t.worker(2);
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    for w in [1, 2] {
        t.barrier(w, "suspend");
    }
    t.barrier(2, "suspended");
    // Worker 2 is frozen: only a kill from outside makes it disconnect.
    let a = t.gone(2);
    let reason = "vpid 2 (pid 2, prog2) died while frozen";
    assert_eq!(error_text(&a, 9), format!("checkpoint 1 failed: {reason}"));
    assert_eq!(
        to(&a, 1),
        vec![Msg::Commit {
            generation: 1,
            commit: false,
            reason: Some(reason.into())
        }]
    );
    assert!(to(&a, 2).is_empty());
    assert_eq!(t.state(), "running");
    // Also after 'suspended' was released.
    t.worker(3);
    t.msg(9, Msg::CmdCheckpoint);
    for name in ["suspend", "suspended"] {
        t.barrier(1, name);
        t.barrier(3, name);
    }
    t.image(1, 2, None);
    let a = t.gone(3);
    assert_eq!(
        error_text(&a, 9),
        "checkpoint 2 failed: vpid 3 (pid 3, prog3) died while frozen"
    );
}

#[test]
fn exit_after_the_commit_keeps_the_image() {
    let mut t = T::new();
    t.worker(1);
    t.worker(2);
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    for name in ["suspend", "suspended"] {
        t.barrier(1, name);
        t.barrier(2, name);
    }
    t.image(1, 1, None);
    t.image(2, 1, None);
    // Worker 2 resumes and exits at once (a `sleep` whose time ran out while frozen): its
    // committed image stays in the generation, with its warnings.
    t.gone(2);
    let job = script_job(&t.msg(1, Msg::Resumed { generation: 1 })).expect("commit");
    assert_eq!(job.images, vec!["/ckpt/img_1", "/ckpt/img_2"]);
    let mut w = job.warnings.clone();
    w.sort();
    assert_eq!(w, vec!["vpid 1: warn1", "vpid 2: warn2"]);
}

#[test]
fn everyone_disconnecting_fails_the_checkpoint() {
    let mut t = T::new();
    t.worker(1);
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    let a = t.gone(1);
    assert_eq!(
        error_text(&a, 9),
        "checkpoint 1 failed: every process disconnected"
    );
    assert_eq!(t.state(), "idle");
}

#[test]
fn phase_timeout_aborts_and_names_the_laggard() {
    let mut t = T::new();
    t.worker(1);
    t.worker(2);
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    t.advance(5);
    t.barrier(2, "suspend");
    t.advance(4);
    assert_eq!(t.state(), "checkpointing 1");
    let a = t.advance(1);
    let expected = "checkpoint 1 failed: timed out after 10 s waiting for vpid 1 (pid 1, prog1) at barrier 'suspend'";
    assert_eq!(error_text(&a, 9), expected);
    for w in [1, 2] {
        assert!(matches!(
            to(&a, w).as_slice(),
            [Msg::Commit {
                generation: 1,
                commit: false,
                ..
            }]
        ));
    }
    assert_eq!(t.state(), "running");
    // Late messages of the aborted checkpoint are ignored, not answered.
    let a = t.image(1, 1, None);
    assert!(to(&a, 1).is_empty());
    let a = t.msg(2, Msg::Resumed { generation: 1 });
    assert!(to(&a, 2).is_empty());
    // The next checkpoint gets a new generation.
    let a = t.msg(9, Msg::CmdCheckpoint);
    assert!(matches!(
        to(&a, 1).as_slice(),
        [Msg::DoCheckpoint { generation: 2, .. }]
    ));
}

#[test]
fn timeout_is_per_phase() {
    let mut t = T::new();
    t.worker(1);
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    t.advance(9);
    t.barrier(1, "suspend");
    t.advance(9);
    t.barrier(1, "suspended");
    t.advance(9);
    let a = t.advance(1);
    assert_eq!(
        error_text(&a, 9),
        "checkpoint 1 failed: timed out after 10 s waiting for vpid 1 (pid 1, prog1) at image writing"
    );
}

#[test]
fn timeout_waiting_for_resume() {
    let mut t = T::new();
    t.worker(1);
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    t.image(1, 1, None);
    let a = t.advance(10);
    assert!(error_text(&a, 9).ends_with("waiting for vpid 1 (pid 1, prog1) at resume"));
    // The commit was already sent: no second Commit.
    assert!(to(&a, 1).is_empty());
}

#[test]
fn joins_before_suspend_take_part_joins_after_do_not() {
    let mut t = T::new();
    t.worker(1);
    t.worker(2);
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    t.barrier(1, "suspend");
    // A child forked before 'suspend' is released: Welcome, then DoCheckpoint of the
    // running generation with the same directory as the others.
    t.s.connect(3, t.now);
    let a = t.msg(3, join_hello(300, JoinKind::Forked, Some(300), Some(1)));
    assert_eq!(
        to(&a, 3),
        vec![
            Msg::Welcome {
                comp_id: t.s.comp_id().unwrap(),
                vpid: 300,
                generation: 1
            },
            Msg::DoCheckpoint {
                generation: 1,
                ckpt_dir: Some("/ckpt".into())
            }
        ]
    );
    assert_eq!(worker_info(&t, 300).state, "checkpointing");
    // The barrier now waits for it too.
    let a = t.barrier(2, "suspend");
    assert!(!released(&a, 1, "suspend"));
    let a = t.barrier(3, "suspend");
    assert!(released(&a, 1, "suspend") && released(&a, 3, "suspend"));
    // After 'suspend' was released, a join is not a participant.
    t.s.connect(4, t.now);
    let a = t.msg(4, join_hello(400, JoinKind::Fresh, Some(400), None));
    assert!(matches!(
        to(&a, 4).as_slice(),
        [Msg::Welcome { vpid: 400, .. }]
    ));
    for w in [1, 2, 3] {
        t.barrier(w, "suspended");
        t.image(w, 1, None);
    }
    let a = t.msg(1, Msg::Resumed { generation: 1 });
    assert!(script_job(&a).is_none());
    t.msg(2, Msg::Resumed { generation: 1 });
    let job = script_job(&t.msg(3, Msg::Resumed { generation: 1 })).expect("commit");
    assert_eq!(
        job.images,
        vec!["/ckpt/img_1", "/ckpt/img_2", "/ckpt/img_3"]
    );
}

#[test]
fn generic_barrier_outside_checkpoint_and_disconnect() {
    let mut t = T::new();
    t.worker(1);
    t.worker(2);
    let a = t.barrier(1, "x");
    assert!(!released(&a, 1, "x"));
    let a = t.gone(2);
    assert!(released(&a, 1, "x"));
}

#[test]
fn periodic_checkpoints() {
    let mut c = cfg();
    c.interval = Some(Duration::from_secs(60));
    let mut t = T::with(c);
    // No worker: nothing happens.
    t.advance(60);
    t.worker(1);
    let a = t.advance(59);
    assert!(to(&a, 1).is_empty());
    let a = t.advance(1);
    assert!(matches!(
        to(&a, 1).as_slice(),
        [Msg::DoCheckpoint { generation: 1, .. }]
    ));
    // CmdInterval 0 stops them.
    t.image(1, 1, None);
    let a = t.msg(1, Msg::Resumed { generation: 1 });
    let job = script_job(&a).unwrap();
    assert_eq!(job.reply_to, None);
    t.command(9);
    t.msg(9, Msg::CmdInterval { seconds: 0 });
    let a = t.advance(600);
    assert!(to(&a, 1).is_empty());
}

#[test]
fn kill_and_quit() {
    let mut t = T::new();
    t.worker(1);
    t.worker(2);
    t.command(9);
    let a = t.msg(9, Msg::CmdKill);
    assert_eq!(to(&a, 1), vec![Msg::Kill]);
    assert_eq!(to(&a, 2), vec![Msg::Kill]);
    assert_eq!(to(&a, 9), vec![Msg::Ok]);
    assert!(!a.contains(&Action::Exit));
    let a = t.msg(9, Msg::CmdQuit);
    assert_eq!(to(&a, 9), vec![Msg::Ok]);
    assert!(a.contains(&Action::Exit));
}

#[test]
fn restart_adopts_and_releases_when_all_peers_arrived() {
    let mut t = T::new();
    let comp = 0xabcdef;
    t.s.connect(1, t.now);
    let a = t.msg(1, restart_hello(comp, 3, 2, 7));
    assert_eq!(
        to(&a, 1),
        vec![Msg::Welcome {
            comp_id: comp,
            vpid: 3,
            generation: 7
        }]
    );
    assert_eq!(t.state(), "restarting");
    let a = t.barrier(1, "restart");
    assert!(!released(&a, 1, "restart"));
    // Checkpoints are refused until everyone is back.
    t.command(9);
    assert!(error_text(&t.msg(9, Msg::CmdCheckpoint), 9).starts_with("restart in progress"));
    // A fresh process cannot join in the middle of a restart.
    t.s.connect(5, t.now);
    let a = t.msg(5, hello(5));
    assert!(closed(&a, 5));
    t.s.connect(2, t.now);
    t.msg(2, restart_hello(comp, 1, 2, 7));
    let a = t.barrier(2, "restart");
    assert!(released(&a, 1, "restart") && released(&a, 2, "restart"));
    // New processes get vpids above every restored one.
    let (c, v, g) = t.worker(6);
    assert_eq!((c, v, g), (comp, 4, 7));
    t.msg(1, Msg::Resumed { generation: 7 });
    assert_eq!(t.state(), "restarting");
    t.msg(2, Msg::Resumed { generation: 7 });
    assert_eq!(t.state(), "running");
    // The next checkpoint is generation 8.
    let a = t.msg(9, Msg::CmdCheckpoint);
    assert!(matches!(
        to(&a, 1).as_slice(),
        [Msg::DoCheckpoint { generation: 8, .. }]
    ));
}

#[test]
fn restart_rejects_other_computations_and_taken_vpids() {
    let mut t = T::new();
    let (comp, v, _) = t.worker(1);
    assert_eq!(v, 1);
    t.s.connect(2, t.now);
    let a = t.msg(2, restart_hello(comp + 1, 5, 1, 0));
    assert_eq!(
        error_text(&a, 2),
        format!(
            "coordinator serves computation {comp:016x}; start another coordinator with --coord-port"
        )
    );
    assert!(closed(&a, 2));
    t.s.connect(3, t.now);
    let a = t.msg(3, restart_hello(comp, 1, 1, 0));
    assert!(error_text(&a, 3).starts_with("vpid 1 is already held"));
    assert!(closed(&a, 3));
}

#[test]
fn restart_peer_count_mismatch_is_refused() {
    let mut t = T::new();
    t.s.connect(1, t.now);
    t.msg(1, restart_hello(7, 1, 2, 0));
    t.s.connect(2, t.now);
    let a = t.msg(2, restart_hello(7, 2, 3, 0));
    assert!(error_text(&a, 2).contains("announces 3 processes but this restart expects 2"));
}

#[test]
fn restart_member_dying_fails_the_restart_instead_of_hanging() {
    let mut t = T::new();
    t.command(9);
    assert_eq!(
        to(
            &t.msg(
                9,
                Msg::CmdRestart {
                    comp_id: 7,
                    num_peers: 2,
                    generation: 3,
                    part_of: None,
                }
            ),
            9
        ),
        vec![Msg::Ok]
    );
    assert_eq!(t.s.comp_id(), Some(7));
    t.s.connect(1, t.now);
    t.msg(1, restart_hello(7, 1, 2, 3));
    t.barrier(1, "restart");
    t.s.connect(2, t.now);
    t.msg(2, restart_hello(7, 2, 2, 3));
    let a = t.gone(2);
    assert!(error_text(&a, 1).starts_with("restart failed: vpid 2 (pid 1002, r2) disconnected"));
    assert!(closed(&a, 1));
    assert!(error_text(&a, 9).starts_with("restart failed"));
}

#[test]
fn restart_barrier_times_out() {
    let mut t = T::new();
    t.command(9);
    t.msg(
        9,
        Msg::CmdRestart {
            comp_id: 7,
            num_peers: 2,
            generation: 3,
            part_of: None,
        },
    );
    t.s.connect(1, t.now);
    t.msg(1, restart_hello(7, 1, 2, 3));
    t.barrier(1, "restart");
    let a = t.advance(10);
    assert_eq!(
        error_text(&a, 1),
        "restart failed: timed out after 10 s: 1 of 2 processes joined, 1 at barrier 'restart'"
    );
    t.gone(1);
    // Everything is forgotten: another computation may be restarted now.
    let a = t.msg(
        9,
        Msg::CmdRestart {
            comp_id: 8,
            num_peers: 1,
            generation: 0,
            part_of: None,
        },
    );
    assert_eq!(to(&a, 9), vec![Msg::Ok]);
}

#[test]
fn cmd_restart_adoption_rules() {
    let mut t = T::new();
    t.command(9);
    let a = t.msg(
        9,
        Msg::CmdRestart {
            comp_id: 7,
            num_peers: 1,
            generation: 2,
            part_of: None,
        },
    );
    assert_eq!(to(&a, 9), vec![Msg::Ok]);
    // Same computation, nobody live yet: Ok again (e.g. a retried ckpt-restart).
    let a = t.msg(
        9,
        Msg::CmdRestart {
            comp_id: 7,
            num_peers: 1,
            generation: 2,
            part_of: None,
        },
    );
    assert_eq!(to(&a, 9), vec![Msg::Ok]);
    // Another computation: refused.
    let a = t.msg(
        9,
        Msg::CmdRestart {
            comp_id: 8,
            num_peers: 1,
            generation: 0,
            part_of: None,
        },
    );
    assert!(error_text(&a, 9).starts_with("coordinator at 127.0.0.1:7779 serves computation"));
    // A coordinator running live processes refuses even the same id.
    let mut t = T::new();
    let (comp, _, _) = t.worker(1);
    t.command(9);
    let a = t.msg(
        9,
        Msg::CmdRestart {
            comp_id: comp,
            num_peers: 1,
            generation: 0,
            part_of: None,
        },
    );
    assert_eq!(
        error_text(&a, 9),
        format!(
            "coordinator at 127.0.0.1:7779 serves computation {comp:016x} with 1 processes; use another --coord-port"
        )
    );
}

#[test]
fn computation_is_forgotten_when_the_last_worker_leaves() {
    let mut t = T::new();
    let (c1, _, _) = t.worker(1);
    t.gone(1);
    assert_eq!(t.s.comp_id(), None);
    let (c2, v, _) = t.worker(2);
    assert_ne!(c1, c2);
    assert_eq!(v, 1);
}

#[test]
fn exit_on_last() {
    let mut c = cfg();
    c.exit_on_last = true;
    let mut t = T::with(c.clone());
    t.command(1);
    assert!(!t.advance(100).contains(&Action::Exit));
    t.gone(1);
    assert!(!t.advance(1).contains(&Action::Exit));
    // A connection that comes and goes restarts the grace period.
    t.command(2);
    t.gone(2);
    assert!(!t.advance(1).contains(&Action::Exit));
    assert!(t.advance(1).contains(&Action::Exit));
    // Nobody ever connects: exit after 30 s.
    let mut t = T::with(c);
    assert!(!t.advance(29).contains(&Action::Exit));
    assert!(t.advance(1).contains(&Action::Exit));
}

#[test]
fn unexpected_messages_are_answered_not_fatal() {
    let mut t = T::new();
    t.command(9);
    let a = t.msg(
        9,
        Msg::Barrier {
            name: "x".into(),
            data: None,
        },
    );
    assert_eq!(error_text(&a, 9), "unexpected message Barrier");
    assert!(!closed(&a, 9));
    let a = t.msg(
        9,
        Msg::Welcome {
            comp_id: 1,
            vpid: 1,
            generation: 1,
        },
    );
    assert!(!closed(&a, 9));
    t.worker(1);
    let a = t.image(1, 5, None);
    assert_eq!(error_text(&a, 1), "no checkpoint 5 in progress");
    let a = t.msg(1, Msg::HelloCommand);
    assert_eq!(error_text(&a, 1), "duplicate hello");
}

#[test]
fn status_lists_workers_by_vpid() {
    let mut t = T::new();
    t.worker(5);
    t.worker(3);
    match t.s.status() {
        Msg::Status {
            workers,
            state,
            generation,
            comp_id,
        } => {
            assert!(comp_id.is_some());
            assert_eq!((state.as_str(), generation), ("running", 0));
            let v: Vec<(u64, i32)> = workers.iter().map(|w| (w.vpid, w.pid)).collect();
            assert_eq!(v, vec![(1, 5), (2, 3)]);
            assert_eq!(workers[0].state, "running");
        }
        _ => unreachable!(),
    }
}

#[test]
fn requester_leaving_early_does_not_stop_the_checkpoint() {
    let mut t = T::new();
    t.worker(1);
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    t.gone(9);
    t.image(1, 1, None);
    let a = t.msg(1, Msg::Resumed { generation: 1 });
    let job = script_job(&a).expect("still committed");
    // Answering a requester that is gone is a no-op for the server.
    let a = t.s.script_written(job, Ok("/ckpt/s.sh".into()));
    assert_eq!(to(&a, 9).len(), 1);
    assert_eq!(t.state(), "running");
}

#[test]
fn no_checkpoint_until_every_restarted_process_resumed() {
    let mut t = T::new();
    t.s.connect(1, t.now);
    t.msg(1, restart_hello(7, 1, 1, 2));
    assert!(released(&t.barrier(1, "restart"), 1, "restart"));
    assert_eq!(t.state(), "restarting");
    t.command(9);
    let a = t.msg(9, Msg::CmdCheckpoint);
    assert_eq!(
        error_text(&a, 9),
        "restart in progress (1 of 1 restarted processes have not resumed yet); try again once they run"
    );
    assert!(to(&a, 1).is_empty());
    t.msg(1, Msg::Resumed { generation: 2 });
    assert_eq!(t.state(), "running");
    let a = t.msg(9, Msg::CmdCheckpoint);
    assert!(matches!(
        to(&a, 1).as_slice(),
        [Msg::DoCheckpoint { generation: 3, .. }]
    ));
    t.image(1, 3, None);
    t.msg(1, Msg::Resumed { generation: 3 });
    assert_eq!(t.state(), "running");
    // A late Resumed for the restart generation is harmless.
    let a = t.msg(1, Msg::Resumed { generation: 2 });
    assert!(to(&a, 1).is_empty());
}

#[test]
fn cmd_restart_count_wins_over_the_announced_one() {
    // Images may carry a wrong num_peers; ckpt-restart knows how many images it restarts.
    let mut t = T::new();
    t.command(9);
    t.msg(
        9,
        Msg::CmdRestart {
            comp_id: 7,
            num_peers: 2,
            generation: 1,
            part_of: None,
        },
    );
    for (id, vpid) in [(1, 1), (2, 2)] {
        t.s.connect(id, t.now);
        let a = t.msg(id, restart_hello(7, vpid, 1, 1));
        assert!(
            matches!(to(&a, id).as_slice(), [Msg::Welcome { .. }]),
            "{a:?}"
        );
    }
    let a = t.barrier(1, "restart");
    assert!(!released(&a, 1, "restart"));
    let a = t.barrier(2, "restart");
    assert!(released(&a, 1, "restart") && released(&a, 2, "restart"));
}

#[test]
fn cmd_restart_after_the_first_process_joined() {
    let mut t = T::new();
    t.s.connect(1, t.now);
    t.msg(1, restart_hello(7, 1, 1, 1));
    t.command(9);
    let a = t.msg(
        9,
        Msg::CmdRestart {
            comp_id: 7,
            num_peers: 1,
            generation: 1,
            part_of: None,
        },
    );
    assert_eq!(to(&a, 9), vec![Msg::Ok]);
    assert!(released(&t.barrier(1, "restart"), 1, "restart"));
}

// ---- process trees ------------------------------------------------------------------------

#[test]
fn fresh_and_forked_workers_get_their_pid_as_vpid_unless_it_is_taken() {
    let mut t = T::new();
    assert_eq!(
        t.join(1, join_hello(500, JoinKind::Fresh, Some(500), None)),
        500
    );
    assert_eq!(
        t.join(2, join_hello(501, JoinKind::Forked, Some(501), Some(500))),
        501
    );
    // Taken by a live worker: allocated from VPID_HIGH up.
    assert_eq!(
        t.join(3, join_hello(502, JoinKind::Forked, Some(500), Some(500))),
        VPID_HIGH
    );
    assert_eq!(
        t.join(4, join_hello(503, JoinKind::Fresh, Some(501), None)),
        VPID_HIGH + 1
    );
    // The parent is recorded and shown in status.
    assert_eq!(worker_info(&t, 500).parent, None);
    assert_eq!(worker_info(&t, 501).parent, Some(500));
    assert_eq!(worker_info(&t, VPID_HIGH).parent, Some(500));
    // Once its holder is gone, a vpid can be had again.
    t.gone(2);
    assert_eq!(
        t.join(5, join_hello(501, JoinKind::Forked, Some(501), None)),
        501
    );
    // vpid: None keeps counting from 1.
    assert_eq!(t.join(6, hello(6)), 502);
}

#[test]
fn an_exec_ghost_reserves_its_vpid() {
    let mut t = T::new();
    t.join(1, join_hello(70, JoinKind::Fresh, Some(70), None));
    t.join(2, join_hello(71, JoinKind::Forked, Some(71), Some(70)));
    t.msg(2, Msg::Exec);
    assert_eq!(worker_info(&t, 71).state, "exec");
    t.gone(2);
    // The ghost is listed (state exec) and holds vpid 71.
    let info = worker_info(&t, 71);
    assert_eq!((info.state.as_str(), info.parent), ("exec", Some(70)));
    assert_eq!(
        t.join(3, join_hello(71, JoinKind::Forked, Some(71), Some(70))),
        VPID_HIGH
    );
}

#[test]
fn a_restart_drops_the_ghosts_of_the_dead_run() {
    for by_command in [true, false] {
        let mut t = T::new();
        t.join(1, join_hello(70, JoinKind::Fresh, Some(70), None));
        t.join(2, join_hello(71, JoinKind::Forked, Some(71), Some(70)));
        t.msg(2, Msg::Exec);
        t.gone(2);
        // The run is SIGKILLed while 71 is exec'ing: its ghost outlives it.
        t.gone(1);
        let comp = t.s.comp_id().unwrap();
        if by_command {
            t.command(9);
            let a = t.msg(
                9,
                Msg::CmdRestart {
                    comp_id: comp,
                    num_peers: 2,
                    generation: 4,
                    part_of: None,
                },
            );
            assert_eq!(to(&a, 9), vec![Msg::Ok]);
            assert!(
                logs(&a).iter().any(|l| l.contains("place is dropped")),
                "{a:?}"
            );
        }
        // The restarted 71 takes its vpid back, and no checkpoint waits for the ghost.
        t.join(3, tree_restart_hello(comp, 70, 2, None));
        t.join(4, tree_restart_hello(comp, 71, 2, Some(70)));
        assert_eq!(vpids(&t), vec![70, 71], "by_command {by_command}");
    }
}

#[test]
fn exec_ghost_is_replaced_by_the_new_image() {
    let mut t = T::new();
    t.join(1, join_hello(10, JoinKind::Fresh, Some(10), None));
    t.join(2, join_hello(11, JoinKind::Forked, Some(11), Some(10)));
    t.msg(2, Msg::Exec);
    let a = t.gone(2);
    assert!(to(&a, 1).is_empty());
    assert_eq!(t.state(), "running");
    // The new image: same vpid, same parent (even if it does not say), running again.
    t.s.connect(3, t.now);
    let a = t.msg(3, join_hello(11, JoinKind::Exec, Some(11), None));
    assert!(matches!(
        to(&a, 3).as_slice(),
        [Msg::Welcome { vpid: 11, .. }]
    ));
    let info = worker_info(&t, 11);
    assert_eq!((info.state.as_str(), info.parent), ("running", Some(10)));
    assert_eq!(vpids(&t), vec![10, 11]);
    // No ghost is left: expiry does nothing, and its exit is an ordinary one.
    let a = t.advance(20);
    assert!(
        logs(&a).iter().all(|l| !l.contains("without ckpt")),
        "{a:?}"
    );
    t.gone(3);
    assert_eq!(vpids(&t), vec![10]);
}

#[test]
fn exec_replaces_a_still_connected_old_client_silently() {
    let mut t = T::new();
    t.join(1, join_hello(10, JoinKind::Fresh, Some(10), None));
    t.join(2, join_hello(11, JoinKind::Forked, Some(11), Some(10)));
    t.msg(2, Msg::Exec);
    // The new image is faster than the kernel closing the old socket.
    t.s.connect(3, t.now);
    let a = t.msg(3, join_hello(11, JoinKind::Exec, Some(11), Some(10)));
    assert!(matches!(
        to(&a, 3).as_slice(),
        [Msg::Welcome { vpid: 11, .. }]
    ));
    // The old connection is dropped without an Error.
    assert!(to(&a, 2).is_empty());
    assert!(closed(&a, 2));
    assert_eq!(vpids(&t), vec![10, 11]);
    // Its late frames and its disconnect do not touch the new worker.
    assert!(t.msg(2, Msg::ExecFailed).is_empty());
    t.gone(2);
    assert_eq!(vpids(&t), vec![10, 11]);
    assert_eq!(worker_info(&t, 11).state, "running");
    // Even without an Exec frame (it may be read after the new hello): same pid, same host.
    t.s.connect(4, t.now);
    let a = t.msg(4, join_hello(11, JoinKind::Exec, Some(11), Some(10)));
    assert!(matches!(
        to(&a, 4).as_slice(),
        [Msg::Welcome { vpid: 11, .. }]
    ));
    assert!(closed(&a, 3));
    assert_eq!(vpids(&t), vec![10, 11]);
    // An Exec join for a vpid held by an unrelated process is a new process.
    t.s.connect(5, t.now);
    let a = t.msg(5, join_hello(99, JoinKind::Exec, Some(10), None));
    assert!(matches!(to(&a, 5).as_slice(), [Msg::Welcome { vpid, .. }] if *vpid == VPID_HIGH));
    assert!(!closed(&a, 1));
}

#[test]
fn exec_failed_clears_the_deadline() {
    let mut t = T::new();
    t.join(1, join_hello(10, JoinKind::Fresh, Some(10), None));
    t.join(2, join_hello(11, JoinKind::Fresh, Some(11), None));
    t.msg(2, Msg::Exec);
    assert_eq!(worker_info(&t, 11).state, "exec");
    t.msg(2, Msg::ExecFailed);
    assert_eq!(worker_info(&t, 11).state, "running");
    // Its disconnect is now an ordinary exit: no ghost.
    t.gone(2);
    assert_eq!(vpids(&t), vec![10]);
    // Exec from a command connection makes no sense.
    t.command(9);
    assert_eq!(
        error_text(&t.msg(9, Msg::Exec), 9),
        "unexpected message Exec"
    );
}

#[test]
fn exec_during_a_checkpoint_keeps_the_participant_slot() {
    let mut t = T::new();
    t.join(1, join_hello(10, JoinKind::Fresh, Some(10), None));
    t.join(2, join_hello(11, JoinKind::Forked, Some(11), Some(10)));
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    t.msg(2, Msg::Exec);
    t.gone(2);
    // The barrier cannot be released without the ghost.
    let a = t.barrier(1, "suspend");
    assert!(!released(&a, 1, "suspend"));
    // The new image takes over: Welcome, then DoCheckpoint of the running generation.
    t.s.connect(3, t.now);
    let a = t.msg(3, join_hello(11, JoinKind::Exec, Some(11), Some(10)));
    assert!(matches!(
        to(&a, 3).as_slice(),
        [
            Msg::Welcome { vpid: 11, .. },
            Msg::DoCheckpoint {
                generation: 1,
                ckpt_dir: Some(_)
            }
        ]
    ));
    assert_eq!(worker_info(&t, 11).state, "checkpointing");
    let a = t.barrier(3, "suspend");
    assert!(released(&a, 1, "suspend") && released(&a, 3, "suspend"));
    for w in [1, 3] {
        t.barrier(w, "suspended");
        t.image(w, 1, None);
    }
    t.msg(1, Msg::Resumed { generation: 1 });
    let job = script_job(&t.msg(3, Msg::Resumed { generation: 1 })).expect("commit");
    assert_eq!(job.images, vec!["/ckpt/img_1", "/ckpt/img_3"]);
}

#[test]
fn exec_of_an_arrived_participant_must_arrive_again() {
    // The old image arrived at 'suspend', then exec'd (its gate should prevent that, but the
    // coordinator does not rely on it): the new image must arrive itself.
    let mut t = T::new();
    t.join(1, join_hello(10, JoinKind::Fresh, Some(10), None));
    t.join(2, join_hello(11, JoinKind::Fresh, Some(11), None));
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    t.barrier(2, "suspend");
    t.msg(2, Msg::Exec);
    t.gone(2);
    let a = t.barrier(1, "suspend");
    assert!(!released(&a, 1, "suspend"));
    t.join(3, join_hello(11, JoinKind::Exec, Some(11), None));
    let a = t.barrier(3, "suspend");
    assert!(released(&a, 1, "suspend") && released(&a, 3, "suspend"));
}

#[test]
fn a_ghost_past_its_deadline_is_an_exit_with_a_warning() {
    let mut t = T::new();
    t.join(1, join_hello(10, JoinKind::Fresh, Some(10), None));
    t.join(2, join_hello(11, JoinKind::Forked, Some(11), Some(10)));
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    t.barrier(1, "suspend");
    t.msg(2, Msg::Exec);
    t.gone(2);
    assert!(t.advance(9).iter().all(|a| !matches!(a, Action::Send(..))));
    // 10 s after Exec: a static or setuid program ignored LD_PRELOAD.
    let a = t.advance(1);
    let warning = "vpid 11 exec'd prog11, which runs without ckpt (statically linked or setuid?)";
    assert!(
        logs(&a).iter().any(|l| l.contains(warning)),
        "{:?}",
        logs(&a)
    );
    // Barriers are re-evaluated: the survivor goes on, the checkpoint succeeds.
    assert!(released(&a, 1, "suspend"));
    assert_eq!(vpids(&t), vec![10]);
    t.barrier(1, "suspended");
    t.image(1, 1, None);
    let job = script_job(&t.msg(1, Msg::Resumed { generation: 1 })).expect("commit");
    assert_eq!(job.images, vec!["/ckpt/img_1"]);
    assert!(job.warnings.contains(&warning.to_string()), "{job:?}");
}

#[test]
fn the_computation_is_forgotten_only_when_no_ghost_remains() {
    let mut t = T::new();
    t.join(1, join_hello(10, JoinKind::Fresh, Some(10), None));
    let comp = t.s.comp_id();
    t.msg(1, Msg::Exec);
    t.gone(1);
    assert_eq!(t.s.comp_id(), comp);
    assert_eq!(t.state(), "running");
    // The exec'd image comes back into the same computation with the same vpid.
    t.s.connect(2, t.now);
    let a = t.msg(2, join_hello(10, JoinKind::Exec, Some(10), None));
    let (c, v, _) = match to(&a, 2).as_slice() {
        [
            Msg::Welcome {
                comp_id,
                vpid,
                generation,
            },
        ] => (*comp_id, *vpid, *generation),
        other => panic!("{other:?}"),
    };
    assert_eq!((Some(c), v), (comp, 10));
    // Exec again, and this time nothing comes back.
    t.msg(2, Msg::Exec);
    t.gone(2);
    t.advance(5);
    assert_eq!(t.s.comp_id(), comp);
    let a = t.advance(5);
    assert!(logs(&a).iter().any(|l| l.contains("forgotten")), "{a:?}");
    assert_eq!(t.s.comp_id(), None);
    assert_eq!(t.state(), "idle");
}

#[test]
fn a_checkpoint_started_while_a_process_execs_waits_for_its_new_image() {
    let mut t = T::new();
    t.join(1, join_hello(10, JoinKind::Fresh, Some(10), None));
    t.join(2, join_hello(11, JoinKind::Fresh, Some(11), None));
    t.msg(2, Msg::Exec);
    t.gone(2);
    t.command(9);
    let a = t.msg(9, Msg::CmdCheckpoint);
    assert!(matches!(
        to(&a, 1).as_slice(),
        [Msg::DoCheckpoint { generation: 1, .. }]
    ));
    let a = t.barrier(1, "suspend");
    assert!(!released(&a, 1, "suspend"));
    t.s.connect(3, t.now);
    let a = t.msg(3, join_hello(11, JoinKind::Exec, Some(11), None));
    assert!(matches!(
        to(&a, 3).as_slice(),
        [Msg::Welcome { .. }, Msg::DoCheckpoint { generation: 1, .. }]
    ));
    assert!(released(&t.barrier(3, "suspend"), 1, "suspend"));
}

#[test]
fn checkpoint_barriers_gather_data_sorted_by_vpid() {
    let mut t = T::new();
    t.join(1, join_hello(30, JoinKind::Fresh, Some(30), None));
    t.join(2, join_hello(20, JoinKind::Fresh, Some(20), None));
    t.join(3, join_hello(40, JoinKind::Fresh, Some(40), None));
    t.join(4, join_hello(50, JoinKind::Fresh, Some(50), None));
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    // Nobody sends data: an empty vec.
    for w in [1, 2, 3, 4] {
        t.barrier(w, "suspend");
    }
    // The vpid in PeerData is overridden with the sender's vpid; 3 sends nothing; 4 sends
    // data and exits before release: its contribution leaves with it.
    t.barrier_data(1, "suspended", b"thirty");
    t.barrier(3, "suspended");
    t.barrier_data(4, "plugin:y", b"fifty");
    t.gone(4);
    let a = t.barrier_data(2, "suspended", b"twenty");
    let expected = vec![pd(20, b"twenty"), pd(30, b"thirty")];
    for w in [1, 2, 3] {
        assert_eq!(
            gathered(&a, w, "suspended"),
            Some(expected.clone()),
            "{a:?}"
        );
    }
    // Barrier released with no data at all: an empty vec.
    let a = t.barrier(1, "plugin:z");
    assert!(!released(&a, 1, "plugin:z"));
    t.barrier(2, "plugin:z");
    let a = t.barrier(3, "plugin:z");
    assert_eq!(gathered(&a, 3, "plugin:z"), Some(vec![]));
}

#[test]
fn global_and_restart_barriers_gather_data() {
    // Global barrier (outside a checkpoint).
    let mut t = T::new();
    t.join(1, join_hello(8, JoinKind::Fresh, Some(8), None));
    t.join(2, join_hello(7, JoinKind::Fresh, Some(7), None));
    t.join(3, join_hello(9, JoinKind::Fresh, Some(9), None));
    t.barrier_data(1, "g", b"eight");
    t.barrier_data(3, "g", b"nine");
    t.gone(3);
    let a = t.barrier_data(2, "g", b"seven");
    let expected = vec![pd(7, b"seven"), pd(8, b"eight")];
    assert_eq!(gathered(&a, 1, "g"), Some(expected.clone()));
    assert_eq!(gathered(&a, 2, "g"), Some(expected));
    // The restart barrier.
    let mut t = T::new();
    t.command(9);
    t.msg(
        9,
        Msg::CmdRestart {
            comp_id: 5,
            num_peers: 2,
            generation: 4,
            part_of: None,
        },
    );
    t.join(1, tree_restart_hello(5, 300, 2, None));
    t.join(2, tree_restart_hello(5, 200, 2, Some(300)));
    t.barrier_data(1, "restart", b"a");
    let a = t.barrier(2, "restart");
    assert_eq!(gathered(&a, 1, "restart"), Some(vec![pd(300, b"a")]));
    assert_eq!(gathered(&a, 2, "restart"), Some(vec![pd(300, b"a")]));
    // Restart-time plugin barriers among all live workers, with data.
    t.barrier_data(2, "files:restart", b"b");
    let a = t.barrier_data(1, "files:restart", b"a");
    assert_eq!(
        gathered(&a, 2, "files:restart"),
        Some(vec![pd(200, b"b"), pd(300, b"a")])
    );
}

#[test]
fn restart_of_a_tree_of_three() {
    let mut c = cfg();
    c.interval = Some(Duration::from_secs(60));
    let mut t = T::with(c);
    let comp = 0x77;
    t.command(9);
    let a = t.msg(
        9,
        Msg::CmdRestart {
            comp_id: comp,
            num_peers: 3,
            generation: 4,
            part_of: None,
        },
    );
    assert_eq!(to(&a, 9), vec![Msg::Ok]);
    // Arbitrary vpids (one of them allocated high in the first life).
    for (id, vpid, parent) in [
        (1, 1000, None),
        (2, VPID_HIGH + 5, Some(1000)),
        (3, 1002, Some(VPID_HIGH + 5)),
    ] {
        let a = {
            t.s.connect(id, t.now);
            t.msg(id, tree_restart_hello(comp, vpid, 3, parent))
        };
        assert_eq!(
            to(&a, id),
            vec![Msg::Welcome {
                comp_id: comp,
                vpid,
                generation: 4
            }]
        );
    }
    assert_eq!(worker_info(&t, 1000).parent, None);
    assert_eq!(worker_info(&t, VPID_HIGH + 5).parent, Some(1000));
    assert_eq!(worker_info(&t, 1002).parent, Some(VPID_HIGH + 5));
    assert_eq!(worker_info(&t, 1002).state, "restarting");
    for id in [1, 2] {
        assert!(!released(&t.barrier(id, "restart"), id, "restart"));
    }
    let a = t.barrier(3, "restart");
    for id in [1, 2, 3] {
        assert!(released(&a, id, "restart"));
    }
    // Refused until every member resumed: commands and periodic checkpoints alike.
    let a = t.msg(9, Msg::CmdCheckpoint);
    assert_eq!(
        error_text(&a, 9),
        "restart in progress (3 of 3 restarted processes have not resumed yet); try again once they run"
    );
    t.msg(1, Msg::Resumed { generation: 4 });
    t.msg(2, Msg::Resumed { generation: 4 });
    let a = t.advance(60);
    assert!(to(&a, 1).is_empty());
    assert!(
        logs(&a).contains(&"periodic checkpoint skipped: restart in progress (1 of 3 restarted processes have not resumed yet); try again once they run".to_string()),
        "{a:?}"
    );
    assert!(error_text(&t.msg(9, Msg::CmdCheckpoint), 9).starts_with("restart in progress"));
    // Children forked by restarted processes get their pid as vpid...
    assert_eq!(
        t.join(
            4,
            join_hello(1001, JoinKind::Forked, Some(1001), Some(1000))
        ),
        1001
    );
    // ... unless a restored process holds it: then above every vpid in use.
    assert_eq!(
        t.join(
            5,
            join_hello(1002, JoinKind::Forked, Some(1002), Some(1000))
        ),
        VPID_HIGH + 6
    );
    assert_eq!(worker_info(&t, 1001).parent, Some(1000));
    t.msg(3, Msg::Resumed { generation: 4 });
    assert_eq!(t.state(), "running");
    let a = t.msg(9, Msg::CmdCheckpoint);
    for id in [1, 2, 3, 4, 5] {
        assert!(matches!(
            to(&a, id).as_slice(),
            [Msg::DoCheckpoint { generation: 5, .. }]
        ));
    }
}

#[test]
fn exec_during_a_checkpoint_with_the_old_connection_still_open() {
    let mut t = T::new();
    t.join(1, join_hello(10, JoinKind::Fresh, Some(10), None));
    t.join(2, join_hello(11, JoinKind::Forked, Some(11), Some(10)));
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    t.msg(2, Msg::Exec);
    t.barrier(1, "suspend");
    t.s.connect(3, t.now);
    let a = t.msg(3, join_hello(11, JoinKind::Exec, Some(11), Some(10)));
    assert!(matches!(
        to(&a, 3).as_slice(),
        [
            Msg::Welcome { vpid: 11, .. },
            Msg::DoCheckpoint { generation: 1, .. }
        ]
    ));
    assert!(closed(&a, 2) && to(&a, 2).is_empty());
    // The old connection's disconnect is not an exit of vpid 11.
    let a = t.gone(2);
    assert!(!released(&a, 1, "suspend"));
    assert_eq!(worker_info(&t, 11).state, "checkpointing");
    let a = t.barrier(3, "suspend");
    assert!(released(&a, 1, "suspend") && released(&a, 3, "suspend"));
    // A checkpoint never hangs on a process that does not come back: the phase timeout.
    let a = t.advance(10);
    assert!(error_text(&a, 9).starts_with("checkpoint 1 failed: timed out after 10 s"));
}

#[test]
fn name_service_answers_now_or_when_published() {
    let mut t = T::new();
    t.command(8);
    t.command(9);
    // Asked before it exists: no answer yet.
    assert!(t.msg(9, Msg::Lookup { key: "k".into() }).is_empty());
    let a = t.msg(
        8,
        Msg::Publish {
            key: "k".into(),
            value: b"v1".to_vec(),
        },
    );
    assert_eq!(to(&a, 8), vec![Msg::Ok]);
    assert_eq!(
        to(&a, 9),
        vec![Msg::Value {
            key: "k".into(),
            value: b"v1".to_vec()
        }]
    );
    // Asked after: answered at once; a new value replaces the old one.
    t.msg(
        8,
        Msg::Publish {
            key: "k".into(),
            value: b"v2".to_vec(),
        },
    );
    let a = t.msg(9, Msg::Lookup { key: "k".into() });
    assert_eq!(
        to(&a, 9),
        vec![Msg::Value {
            key: "k".into(),
            value: b"v2".to_vec()
        }]
    );
    // A waiter that went away is not answered.
    t.msg(9, Msg::Lookup { key: "j".into() });
    t.gone(9);
    let a = t.msg(
        8,
        Msg::Publish {
            key: "j".into(),
            value: vec![],
        },
    );
    assert_eq!(to(&a, 9), vec![]);
    // Too big.
    let a = t.msg(
        8,
        Msg::Publish {
            key: "x".repeat(NAME_MAX_KEY + 1),
            value: vec![],
        },
    );
    assert!(error_text(&a, 8).contains("longer than"));
}

#[test]
fn restart_in_parts_waits_for_every_part() {
    let mut t = T::new();
    t.command(8);
    t.command(9);
    let part = |n: u32| Msg::CmdRestart {
        comp_id: 7,
        num_peers: n,
        generation: 3,
        part_of: Some(3),
    };
    assert_eq!(to(&t.msg(8, part(2)), 8), vec![Msg::Ok]);
    t.msg(
        8,
        Msg::Publish {
            key: "a".into(),
            value: vec![1],
        },
    );
    for v in [1, 2] {
        t.s.connect(v, t.now);
        t.msg(v, restart_hello(7, v, 3, 3));
        assert!(to(&t.barrier(v, "restart"), v).is_empty());
    }
    // A part that would bring back too many is refused; the right one joins.
    t.command(10);
    assert!(error_text(&t.msg(10, part(2)), 10).contains("would bring back 4 processes"));
    assert_eq!(to(&t.msg(9, part(1)), 9), vec![Msg::Ok]);
    // The first part's names are still there for the second part.
    assert_eq!(
        to(&t.msg(9, Msg::Lookup { key: "a".into() }), 9),
        vec![Msg::Value {
            key: "a".into(),
            value: vec![1]
        }]
    );
    t.s.connect(3, t.now);
    t.msg(3, restart_hello(7, 3, 3, 3));
    let a = t.barrier(3, "restart");
    for v in [1, 2, 3] {
        assert!(
            to(&a, v)
                .iter()
                .any(|m| matches!(m, Msg::BarrierReleased { name, .. } if name == "restart")),
            "vpid {v} released"
        );
    }
}

#[test]
fn a_failed_part_restart_tells_every_part() {
    let mut t = T::new();
    t.command(8);
    t.command(9);
    let part = |n: u32| Msg::CmdRestart {
        comp_id: 7,
        num_peers: n,
        generation: 3,
        part_of: Some(2),
    };
    t.msg(8, part(1));
    t.msg(9, part(1));
    t.s.connect(1, t.now);
    t.msg(1, restart_hello(7, 1, 2, 3));
    t.barrier(1, "restart");
    let a = t.advance(10);
    assert!(error_text(&a, 8).starts_with("restart failed: timed out"));
    assert!(error_text(&a, 9).starts_with("restart failed: timed out"));
}

#[test]
fn a_part_that_dies_fails_the_restart_for_the_others() {
    let mut t = T::new();
    t.command(8);
    t.command(9);
    let part = Msg::CmdRestart {
        comp_id: 7,
        num_peers: 1,
        generation: 3,
        part_of: Some(2),
    };
    t.msg(8, part.clone());
    t.msg(9, part);
    t.msg(9, Msg::Lookup { key: "x".into() });
    let a = t.gone(8);
    assert_eq!(
        error_text(&a, 9),
        "restart failed: a `ckpt-restart --part` exited before every process was back"
    );
}

/// A process whose image was committed resumes and execs before its `Resumed` arrives: its
/// image stays in the generation (the other images list it among their peers).
#[test]
fn exec_right_after_commit_keeps_the_image() {
    let mut t = T::new();
    t.join(1, join_hello(10, JoinKind::Fresh, Some(10), None));
    t.join(2, join_hello(11, JoinKind::Forked, Some(11), Some(10)));
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    for name in ["suspend", "suspended"] {
        t.barrier(1, name);
        t.barrier(2, name);
    }
    t.image(1, 1, None);
    t.image(2, 1, None);
    // vpid 11 resumed and exec'd at once: Exec, disconnect, the new image joins.
    t.msg(2, Msg::Exec);
    t.gone(2);
    t.s.connect(3, t.now);
    let a = t.msg(3, join_hello(11, JoinKind::Exec, Some(11), None));
    assert!(
        logs(&a).iter().any(|l| l.contains("its image stays")),
        "{:?}",
        logs(&a)
    );
    let a = t.msg(1, Msg::Resumed { generation: 1 });
    let job = script_job(&a).expect("WriteScript");
    assert_eq!(job.images, vec!["/ckpt/img_1", "/ckpt/img_2"]);
    let mut w = job.warnings.clone();
    w.sort();
    assert_eq!(w, vec!["vpid 10: warn1", "vpid 11: warn2"]);
}
