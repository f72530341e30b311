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
    let job = a
        .iter()
        .find_map(|a| match a {
            Action::WriteScript(j) => Some(j.clone()),
            _ => None,
        })
        .expect("WriteScript");
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

#[test]
fn disconnect_mid_checkpoint_releases_barrier_and_warns() {
    let mut t = T::new();
    t.worker(1);
    t.worker(2);
    t.worker(3);
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    t.barrier(1, "suspend");
    t.barrier(2, "suspend");
    // Worker 3 dies: the barrier is re-evaluated and released to the others.
    let a = t.gone(3);
    assert!(released(&a, 1, "suspend") && released(&a, 2, "suspend"));
    // A worker that arrived at a barrier and then dies is removed from it: the barrier is
    // released when the survivor arrives, and only to the survivor.
    let a = t.barrier(2, "suspended");
    assert!(!released(&a, 2, "suspended"));
    let a = t.gone(2);
    assert!(to(&a, 1).is_empty());
    let a = t.barrier(1, "suspended");
    assert!(released(&a, 1, "suspended"));
    assert!(to(&a, 2).is_empty());
    t.image(1, 1, None);
    let a = t.msg(1, Msg::Resumed { generation: 1 });
    let job = a
        .iter()
        .find_map(|a| match a {
            Action::WriteScript(j) => Some(j.clone()),
            _ => None,
        })
        .expect("commit with the survivors");
    assert_eq!(job.images, vec!["/ckpt/img_1"]);
    assert!(job.warnings[0].starts_with("vpid 3 (pid 3, prog3) disconnected during checkpoint 1"));
    assert!(job.warnings[1].starts_with("vpid 2 (pid 2, prog2) disconnected"));
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
fn workers_joining_during_a_checkpoint_are_not_participants() {
    let mut t = T::new();
    t.worker(1);
    t.command(9);
    t.msg(9, Msg::CmdCheckpoint);
    let (_, v, _) = t.worker(2);
    assert_eq!(v, 2);
    let a = t.barrier(1, "suspend");
    assert!(released(&a, 1, "suspend"));
    t.image(1, 1, None);
    let a = t.msg(1, Msg::Resumed { generation: 1 });
    assert!(a.iter().any(|a| matches!(a, Action::WriteScript(_))));
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
    let job = a
        .iter()
        .find_map(|a| match a {
            Action::WriteScript(j) => Some(j.clone()),
            _ => None,
        })
        .unwrap();
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
                    generation: 3
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
    let job = a
        .iter()
        .find_map(|a| match a {
            Action::WriteScript(j) => Some(j.clone()),
            _ => None,
        })
        .expect("still committed");
    // Answering a requester that is gone is a no-op for the server.
    let a = t.s.script_written(job, Ok("/ckpt/s.sh".into()));
    assert_eq!(to(&a, 9).len(), 1);
    assert_eq!(t.state(), "running");
}

#[test]
fn a_checkpoint_after_restart_ends_the_restart_state() {
    let mut t = T::new();
    t.s.connect(1, t.now);
    t.msg(1, restart_hello(7, 1, 1, 2));
    assert!(released(&t.barrier(1, "restart"), 1, "restart"));
    assert_eq!(t.state(), "restarting");
    t.command(9);
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
        },
    );
    assert_eq!(to(&a, 9), vec![Msg::Ok]);
    assert!(released(&t.barrier(1, "restart"), 1, "restart"));
}
