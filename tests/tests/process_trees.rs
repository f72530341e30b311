//! Process trees (docs/design-process-trees.md §11): programs that fork, exec, talk through
//! pipes, share file descriptions and shared memory, through the tree cycle of
//! `ckpt_tests::tree` (launch; checkpoint; checkpoint + SIGKILL of every process; restart of
//! all images with one `ckpt-restart`; checkpoint + kill; restart; compare with a native
//! run), plus checkpoints in a loop while processes come and go, and a forked child being in
//! `--list` before its user code runs. Sources: `tests/progs/` (each file says what it
//! does and prints). `tree_programs_run_natively` checks the programs themselves, without
//! ckpt: if it fails, the test program is broken, not ckpt.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ckpt_tests::tree::{
    Compare, RunInfo, TreeSpec, checkpoint_loop_scenario, compare, tree_scenario,
};
use ckpt_tests::util::find_in_path;
use ckpt_tests::{ListEntry, Prog, Session, count_lines, describe_status, procs};

fn progs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("progs")
}

fn prog(name: &str, program: impl Into<PathBuf>, args: &[&str], lines: usize) -> Prog {
    Prog {
        name: name.into(),
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        lines,
    }
}

fn script(name: &str) -> String {
    progs_dir().join(name).to_string_lossy().into_owned()
}

// ---- the programs -------------------------------------------------------------------

/// Parent, child1, child2 in a ring of pipes (+ a zombie child3): 3 images, always.
fn tree_pipeline_prog() -> (Prog, TreeSpec) {
    (
        prog("tree_pipeline", env!("CKPT_PROG_TREE_PIPELINE"), &[], 302),
        TreeSpec {
            procs: 3..=3,
            stable: true,
            ..TreeSpec::default()
        },
    )
}

/// Parent and child checking every view of a pid (si_pid, gettid, tgkill, /proc paths,
/// F_GETOWN, SO_PEERCRED, sigqueue/sigtimedwait, ids after exec); every 10th step a short
/// third process (fork + exec of the program as a probe).
fn pid_views_prog() -> (Prog, TreeSpec) {
    (
        prog("pid_views", env!("CKPT_PROG_PID_VIEWS"), &[], 301),
        TreeSpec {
            procs: 2..=3,
            ..TreeSpec::default()
        },
    )
}

/// bash with a background job, a pipeline into awk, sort; children come and go.
fn bash_pipeline_prog() -> (Prog, TreeSpec) {
    (
        prog(
            "bash_pipeline",
            find_in_path("bash"),
            &[&script("pipeline.sh")],
            301,
        ),
        TreeSpec {
            procs: 1..=64,
            ..TreeSpec::default()
        },
    )
}

fn copy_mkproj(run: &RunInfo) {
    let src = progs_dir().join("mkproj");
    for e in std::fs::read_dir(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
        let e = e.unwrap();
        let to = run.dir.join(e.file_name());
        std::fs::copy(e.path(), &to)
            .unwrap_or_else(|err| panic!("copy {} -> {}: {err}", e.path().display(), to.display()));
    }
}

/// `make -j2 -O` of `progs/mkproj` (copied into the run's dir): 6 compiles of ~1 s, a link,
/// 16 runs of the result. Checkpoints start during the compiles.
fn make_j2_prog() -> (Prog, TreeSpec) {
    let env = [
        "MAKEFLAGS",
        "MFLAGS",
        "MAKELEVEL",
        "MAKEFILES",
        "GNUMAKEFLAGS",
    ]
    .iter()
    .map(|k| (k.to_string(), None))
    .collect();
    (
        prog("make_j2", find_in_path("make"), &["-j2", "-O"], 119),
        TreeSpec {
            compare: Compare::SortedLines,
            env,
            setup: Some(copy_mkproj),
            procs: 1..=64,
            first_checkpoint_at: Some(2),
            step: Some(2),
            ..TreeSpec::default()
        },
    )
}

/// multiprocessing.Pool(4): the parent and 4 workers for the whole run.
fn mp_pool_prog() -> (Prog, TreeSpec) {
    (
        prog(
            "mp_pool",
            find_in_path("python3"),
            &[&script("mp_pool.py")],
            401,
        ),
        TreeSpec {
            procs: 5..=5,
            stable: true,
            ..TreeSpec::default()
        },
    )
}

/// Parent and child sharing a read offset, an O_APPEND log and a deleted temp file.
fn shared_fd_prog() -> (Prog, TreeSpec) {
    (
        prog("shared_fd", env!("CKPT_PROG_SHARED_FD"), &["{dir}"], 802),
        TreeSpec {
            procs: 2..=2,
            stable: true,
            ..TreeSpec::default()
        },
    )
}

fn shm_paths(run: &RunInfo) -> [PathBuf; 2] {
    [
        PathBuf::from(format!("/dev/shm/ckpt-{}", run.uniq)),
        PathBuf::from(format!("/dev/shm/ckpt-{}-gone", run.uniq)),
    ]
}

fn remove_shm(run: &RunInfo) {
    for p in shm_paths(run) {
        let _ = std::fs::remove_file(p);
    }
}

/// `/proc/PID/maps` lines of shared mappings whose path is exactly `path` (not deleted):
/// (start address, inode).
fn shared_maps_of(pid: i32, path: &Path) -> Vec<(String, String)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let want = path.to_string_lossy();
    maps.lines()
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            (c.len() == 6 && c[5] == want && c[1].ends_with('s')).then(|| {
                let start = c[0].split('-').next().unwrap_or("").to_string();
                (start, c[4].to_string())
            })
        })
        .collect()
}

/// After a restart both processes of shm_counter map the kept segment at the same address,
/// and it is the file now in /dev/shm (same inode).
fn shm_same_object(s: &Session, run: &RunInfo, live: &[ListEntry]) {
    let [kept, _] = shm_paths(run);
    let pids: Vec<i32> = live.iter().filter(|e| e.pid > 0).map(|e| e.pid).collect();
    if pids.len() != 2 {
        s.log(format!(
            "shm check skipped: {} live processes with known pids ({live:?})",
            pids.len()
        ));
        return;
    }
    let ino = std::fs::metadata(&kept)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m).to_string())
        .unwrap_or_else(|e| panic!("{} after restart: {e}", kept.display()));
    let a = shared_maps_of(pids[0], &kept);
    let b = shared_maps_of(pids[1], &kept);
    if pids.iter().any(|&p| !procs::is_alive(p)) {
        s.log("shm check skipped: a process ended meanwhile");
        return;
    }
    assert!(
        a.len() == 1 && a == b && a[0].1 == ino,
        "after restart {} should be mapped shared once, at one address, by both processes, \
         with inode {ino}: pid {} has {a:?}, pid {} has {b:?}\n{}",
        kept.display(),
        pids[0],
        pids[1],
        s.diagnostics()
    );
    s.log(format!(
        "shm: both map {} at {} (inode {ino})",
        kept.display(),
        a[0].0
    ));
}

/// Parent and child taking turns under a process-shared mutex, in three shared segments.
fn shm_counter_prog() -> (Prog, TreeSpec) {
    (
        prog(
            "shm_counter",
            env!("CKPT_PROG_SHM_COUNTER"),
            &["{uniq}"],
            502,
        ),
        TreeSpec {
            procs: 2..=2,
            stable: true,
            cleanup: Some(remove_shm),
            after_restart: Some(Box::new(shm_same_object)),
            ..TreeSpec::default()
        },
    )
}

/// Removes the keyed segment of sysv_counter (its key is in `sysv.key` in the run's
/// directory), if there is one.
fn remove_sysv(run: &RunInfo) {
    let Some(key) = std::fs::read_to_string(run.dir.join("sysv.key"))
        .ok()
        .and_then(|k| k.trim().parse::<libc::key_t>().ok())
    else {
        return;
    };
    // SAFETY: shmget/shmctl without buffers.
    unsafe {
        let id = libc::shmget(key, 0, 0);
        if id >= 0 {
            libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        }
    }
}

/// `/proc/PID/maps` SysV attaches: (start address, shmid).
fn sysv_maps_of(pid: i32) -> Vec<(String, String)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            (c.len() >= 6 && c[5].starts_with("/SYSV") && c[1].ends_with('s')).then(|| {
                let start = c[0].split('-').next().unwrap_or("").to_string();
                (start, c[4].to_string())
            })
        })
        .collect()
}

/// After a restart the parent of sysv_counter has its two segments attached and the child
/// the same two (B twice), the first at the same address in both: real SysV attaches of the
/// same segments, not private copies.
fn sysv_same_segments(s: &Session, _run: &RunInfo, live: &[ListEntry]) {
    let pids: Vec<i32> = live.iter().filter(|e| e.pid > 0).map(|e| e.pid).collect();
    if pids.len() != 2 {
        s.log(format!(
            "sysv check skipped: {} live processes with known pids ({live:?})",
            pids.len()
        ));
        return;
    }
    let a = sysv_maps_of(pids[0]);
    let b = sysv_maps_of(pids[1]);
    if pids.iter().any(|&p| !procs::is_alive(p)) {
        s.log("sysv check skipped: a process ended meanwhile");
        return;
    }
    let (parent, child) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let ids = |v: &[(String, String)]| {
        let mut i: Vec<String> = v.iter().map(|x| x.1.clone()).collect();
        i.sort();
        i.dedup();
        i
    };
    assert!(
        parent.len() == 2
            && child.len() == 3
            && ids(&parent).len() == 2
            && ids(&parent) == ids(&child)
            && child.contains(&parent[0]),
        "after restart both processes should attach the same two SysV segments (the child B \
         twice): pid {} has {:?}, pid {} has {:?}\n{}",
        pids[0],
        sysv_maps_of(pids[0]),
        pids[1],
        sysv_maps_of(pids[1]),
        s.diagnostics()
    );
    s.log(format!("sysv: parent {parent:?}, child {child:?}"));
}

/// Parent and child taking turns under a process-shared mutex in SysV segments (one
/// IPC_PRIVATE and removed while attached, one keyed), using their ids after restarts.
fn sysv_counter_prog() -> (Prog, TreeSpec) {
    (
        prog(
            "sysv_counter",
            env!("CKPT_PROG_SYSV_COUNTER"),
            &["{dir}"],
            419,
        ),
        TreeSpec {
            procs: 2..=2,
            stable: true,
            cleanup: Some(remove_sysv),
            after_restart: Some(Box::new(sysv_same_segments)),
            ..TreeSpec::default()
        },
    )
}

/// sysv_counter, its keyed segment removed after each kill (as by a reboot): the restart
/// makes it again with its key and a new id, which the program's id must follow.
fn sysv_counter_gone_prog() -> (Prog, TreeSpec) {
    let (mut p, mut spec) = sysv_counter_prog();
    p.name = "sysv_counter_gone".into();
    spec.after_kill = Some(remove_sysv);
    (p, spec)
}

/// A child forked every 10 ms (exit, exec /bin/true, sleep, orphan grandchild).
fn proc_churn_prog(rounds: usize) -> (Prog, TreeSpec) {
    let r = rounds.to_string();
    (
        prog(
            "proc_churn",
            env!("CKPT_PROG_PROC_CHURN"),
            &[r.as_str()],
            rounds + 1,
        ),
        TreeSpec {
            procs: 1..=64,
            ..TreeSpec::default()
        },
    )
}

// ---- the tests ----------------------------------------------------------------------

#[test]
fn tree_pipeline() {
    let (p, spec) = tree_pipeline_prog();
    tree_scenario(p, spec);
}

#[test]
fn bash_pipeline() {
    let (p, spec) = bash_pipeline_prog();
    tree_scenario(p, spec);
}

#[test]
fn make_j2() {
    let (p, spec) = make_j2_prog();
    tree_scenario(p, spec);
}

#[test]
fn mp_pool() {
    let (p, spec) = mp_pool_prog();
    tree_scenario(p, spec);
}

#[test]
fn shared_fd() {
    let (p, spec) = shared_fd_prog();
    tree_scenario(p, spec);
}

#[test]
fn shm_counter() {
    let (p, spec) = shm_counter_prog();
    tree_scenario(p, spec);
}

#[test]
fn sysv_shm() {
    let (p, spec) = sysv_counter_prog();
    tree_scenario(p, spec);
}

/// `spec` for the fallback restart: every `ckpt-restart` of the scenario without namespaces
/// (new kernel pids; `plugins/src/pids.rs` translates), the launch and native run as usual.
/// After each restart it also checks that the restored processes really got new kernel pids
/// (some listed process has a pid other than its vpid; those forked after the restart keep
/// theirs).
fn without_namespaces((p, mut spec): (Prog, TreeSpec)) -> (Prog, TreeSpec) {
    spec.restart_env
        .push(("CKPT_NO_NAMESPACES".to_string(), Some("1".to_string())));
    let inner = spec.after_restart.take();
    spec.after_restart = Some(Box::new(move |s, run, live| {
        let known: Vec<&ListEntry> = live.iter().filter(|e| e.pid > 0).collect();
        assert!(
            known.is_empty() || known.iter().any(|e| e.vpid != e.pid.to_string()),
            "restart without namespaces, yet every process kept its old pid (was it a namespace \
             restart?): {known:?}\n{}",
            s.diagnostics()
        );
        if let Some(h) = &inner {
            h(s, run, live);
        }
    }));
    (p, spec)
}

/// tree_pipeline through restarts without namespaces: its getpid/getppid checks, kill of the
/// children, waitid of the zombie and waitpid statuses all go through the pid translation,
/// also in a tree that was itself restarted that way.
#[test]
fn tree_pipeline_no_namespaces() {
    let (p, spec) = without_namespaces(tree_pipeline_prog());
    tree_scenario(p, spec);
}

#[test]
fn sysv_shm_segments_gone() {
    let (p, spec) = sysv_counter_gone_prog();
    tree_scenario(p, spec);
}

#[test]
fn pid_views() {
    let (p, spec) = pid_views_prog();
    tree_scenario(p, spec);
}

/// pid_views through restarts without namespaces: si_pid in SA_SIGINFO handlers and
/// sigtimedwait, gettid/tgkill, /proc/<pid> paths, F_SETOWN/F_GETOWN and SO_PEERCRED are
/// translated.
#[test]
fn pid_views_no_namespaces() {
    let (p, spec) = without_namespaces(pid_views_prog());
    tree_scenario(p, spec);
}

#[test]
fn bash_pipeline_no_namespaces() {
    let (p, spec) = without_namespaces(bash_pipeline_prog());
    tree_scenario(p, spec);
}

#[test]
fn make_j2_no_namespaces() {
    let (p, spec) = without_namespaces(make_j2_prog());
    tree_scenario(p, spec);
}

#[test]
fn mp_pool_no_namespaces() {
    let (p, spec) = without_namespaces(mp_pool_prog());
    tree_scenario(p, spec);
}

#[test]
fn shared_fd_no_namespaces() {
    let (p, spec) = without_namespaces(shared_fd_prog());
    tree_scenario(p, spec);
}

#[test]
fn shm_counter_no_namespaces() {
    let (p, spec) = without_namespaces(shm_counter_prog());
    tree_scenario(p, spec);
}

/// 100 checkpoints back to back while proc_churn forks, execs and reaps (1000 rounds, ~11 s
/// natively: long enough that it still runs after the loop, as frozen time does not count for
/// its sleeps: each checkpoint costs it only the gap between two checkpoints);
/// each must succeed within 10 s; then kill, restart from the last images, compare.
#[test]
fn proc_churn() {
    let (p, spec) = proc_churn_prog(1000);
    checkpoint_loop_scenario(p, spec, 100, Duration::from_secs(10));
}

/// proc_churn's loop, then a restart without namespaces: the restarted parent goes on
/// forking, exec'ing and reaping children with new pids.
#[test]
fn proc_churn_no_namespaces() {
    let (p, spec) = without_namespaces(proc_churn_prog(1000));
    checkpoint_loop_scenario(p, spec, 30, Duration::from_secs(10));
}

/// A child blocked right after fork (on a FIFO the test holds) is already in `--list`, with
/// its parent in the parent column; released, it runs to its end.
#[test]
fn fork_children_listed() {
    const WAIT: Duration = Duration::from_secs(30);
    let s = Session::new("fork_children_listed");
    let fifo = s.path("release.fifo");
    let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let p = prog(
        "fork_block",
        env!("CKPT_PROG_FORK_BLOCK"),
        &[&fifo.to_string_lossy()],
        3,
    );
    let out = s.path("ckpt.out");
    let mut app = s.launch(&p, &out);
    s.wait_lines(&out, 1, WAIT, &mut app);
    let first = std::fs::read_to_string(&out).unwrap();
    let child: i32 = first
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("forked child "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line of fork_block: {first:?}"));

    // fork() returned in the parent, so the child must be listed by now.
    let list = s.list();
    let entry = list.iter().find(|e| e.pid == child).cloned();
    let Some(entry) = entry else {
        let t = Instant::now();
        let late = loop {
            if s.list().iter().any(|e| e.pid == child) {
                break Some(t.elapsed());
            }
            if t.elapsed() > Duration::from_secs(5) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        panic!(
            "child {child} was not in --list when fork() returned in its parent ({}); list: {list:?}\n{}",
            match late {
                Some(d) => format!("it appeared {d:?} later"),
                None => "nor 5 s later".to_string(),
            },
            s.diagnostics()
        );
    };
    let parent = list.iter().find(|e| e.pid == app.pid()).unwrap_or_else(|| {
        panic!(
            "the launched process {} is not in --list: {list:?}",
            app.pid()
        )
    });
    assert_eq!(
        entry.parent_vpid(),
        Some(parent.vpid.as_str()),
        "--list parent column of the child: {entry:?}, parent entry {parent:?}"
    );
    assert_eq!(count_lines(&out), 1, "the child ran before it was released");
    assert!(
        procs::is_alive(child),
        "child {child} is not alive: {:?}",
        procs::proc_stat(child)
    );

    // Release it: it is blocked in open(O_RDONLY), so a non-blocking open for writing
    // succeeds (ENXIO would mean it is not there yet).
    let t = Instant::now();
    let mut f = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
        {
            Ok(f) => break f,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && t.elapsed() < WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("open {} for writing: {e}", fifo.display()),
        }
    };
    std::io::Write::write_all(&mut f, b"x").unwrap();
    drop(f);
    let st = app.wait_exit(WAIT);
    assert!(
        st.success(),
        "fork_block ended with {}; stderr:\n{}",
        describe_status(&st),
        app.stderr_tail()
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        &lines[1..],
        ["child released by x", "child exit 5"],
        "output: {text:?}"
    );
}

/// The tree programs without ckpt: two concurrent runs of each (in their own directories)
/// finish with status 0, print the expected number of lines and the same output (sorted
/// lines for make), within 2..60 s.
#[test]
fn tree_programs_run_natively() {
    let dir = std::env::temp_dir().join(format!("ckpt-tests-native-trees-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let all = [
        tree_pipeline_prog(),
        pid_views_prog(),
        bash_pipeline_prog(),
        make_j2_prog(),
        mp_pool_prog(),
        shared_fd_prog(),
        shm_counter_prog(),
        sysv_counter_prog(),
        proc_churn_prog(400),
    ];
    let start = Instant::now();
    let mut runs = Vec::new();
    for (p, spec) in &all {
        for i in 0..2 {
            let run = RunInfo {
                kind: "native",
                dir: dir.join(format!("{}-{i}", p.name)),
                uniq: format!("native-trees-{}-{}-{i}", std::process::id(), p.name),
            };
            std::fs::create_dir_all(&run.dir).unwrap();
            if let Some(setup) = spec.setup {
                setup(&run);
            }
            let out = dir.join(format!("{}-{i}.out", p.name));
            let args: Vec<String> = p
                .args
                .iter()
                .map(|a| {
                    a.replace("{dir}", &run.dir.to_string_lossy())
                        .replace("{uniq}", &run.uniq)
                })
                .collect();
            let mut cmd = std::process::Command::new(&p.program);
            cmd.args(&args)
                .current_dir(&run.dir)
                .stdin(std::process::Stdio::null())
                .stdout(std::fs::File::create(&out).unwrap());
            for (k, v) in &spec.env {
                match v {
                    Some(v) => cmd.env(k, v),
                    None => cmd.env_remove(k),
                };
            }
            let proc = procs::spawn(&mut cmd, &p.name, None);
            runs.push((p.clone(), spec.compare, spec.cleanup, run, out, proc));
        }
    }
    let mut outs: Vec<(Prog, Compare, PathBuf)> = Vec::new();
    for (p, cmp, cleanup, run, out, mut proc) in runs {
        let st = proc.wait_exit(Duration::from_secs(120));
        let took = start.elapsed();
        if let Some(c) = cleanup {
            c(&run);
        }
        assert!(
            st.success(),
            "{} ended with {}",
            p.name,
            describe_status(&st)
        );
        assert_eq!(
            count_lines(&out),
            p.lines,
            "{} line count ({})",
            p.name,
            out.display()
        );
        assert!(
            took >= Duration::from_secs(2) && took <= Duration::from_secs(60),
            "{} took {took:?}",
            p.name
        );
        if let Some((_, how, first)) = outs.iter().find(|(q, _, _)| q.name == p.name) {
            compare(first, &out, *how);
            eprintln!(
                "{}: {} lines, twice the same, done after {took:?}",
                p.name, p.lines
            );
        } else {
            outs.push((p, cmp, out));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A child made with glibc's `clone()` (no CLONE_VM) joins like a forked one: it is listed,
/// checkpointed and restarted with its pipe to the parent.
#[test]
fn clone_child_joins() {
    tree_scenario(
        prog("clone_proc", env!("CKPT_PROG_CLONE_PROC"), &["150"], 151),
        TreeSpec {
            procs: 2..=2,
            stable: true,
            ..TreeSpec::default()
        },
    );
}
