//! The checkpoint/kill/restart cycle for a whole process tree ([`tree_scenario`]), and the
//! checkpoint-in-a-loop variant ([`checkpoint_loop_scenario`]).
//!
//! The native run and the run under ckpt each get their own working directory
//! (`<scratch>/native-run`, `<scratch>/ckpt-run`), because tree programs write files next to
//! them (bash's `bg.txt`, make's objects). In a [`Prog`]'s arguments `{dir}` is replaced by
//! that directory and `{uniq}` by a token unique to the run (for names in global namespaces,
//! such as POSIX shared memory). The native run carries its own tag (`<session tag>-native`),
//! so that [`Session::kill_computation`], which kills every process carrying the session's
//! tag, never touches it.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::procs::{POLL, proc_stat};
use crate::session::TAG_VAR;
use crate::util::tail;
use crate::{
    ListEntry, Proc, Prog, Session, assert_same_output, check_images, count_lines, describe_status,
    tagged_pids,
};

/// Deadline for a wait for a few more output lines (or a restarted tree to show up).
pub const LINES: Duration = Duration::from_secs(60);
/// Deadline for a program to run to its end.
pub const FINISH: Duration = Duration::from_secs(180);
/// Deadline for the rest of a computation to exit after its root did.
pub const LEFTOVERS: Duration = Duration::from_secs(20);

/// How the output of the run under ckpt is compared with the native run's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Byte for byte.
    Exact,
    /// Same lines, in any order (programs whose processes print in a nondeterministic order,
    /// such as `make -j2 -O`).
    SortedLines,
}

/// One of the two runs of a scenario (native or under ckpt), as hooks see it.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// "native" or "ckpt".
    pub kind: &'static str,
    /// Its working directory (what `{dir}` stands for).
    pub dir: PathBuf,
    /// What `{uniq}` stands for.
    pub uniq: String,
}

/// A hook run once the restarted tree is running again: the session, the run under ckpt,
/// and `--list` (the live entries) at that moment.
pub type AfterRestart = Box<dyn Fn(&Session, &RunInfo, &[ListEntry])>;

/// What a tree scenario needs to know besides the program.
pub struct TreeSpec {
    pub compare: Compare,
    /// Environment for both runs: `(name, Some(value))` sets, `(name, None)` removes.
    pub env: Vec<(String, Option<String>)>,
    /// Environment for every `ckpt-restart` of the scenario, as `env` (e.g.
    /// `CKPT_NO_NAMESPACES=1` for the fallback restart with new pids).
    pub restart_env: Vec<(String, Option<String>)>,
    /// Called with each run's directory (created empty) before the run starts.
    pub setup: Option<fn(&RunInfo)>,
    /// Called for each run when the scenario ends, even after a failure (remove files the
    /// program leaves outside the scratch dir, such as `/dev/shm` objects).
    pub cleanup: Option<fn(&RunInfo)>,
    /// Number of processes a checkpoint may have images of (checked at every checkpoint).
    pub procs: std::ops::RangeInclusive<usize>,
    /// The tree has the same processes from the first checkpoint to the last (nobody born or
    /// dead in between): after each restart `--list` must show the same (vpid, parent,
    /// program) set as at the checkpoint.
    pub stable: bool,
    /// Lines before the first checkpoint (default: a fifth of the run).
    pub first_checkpoint_at: Option<usize>,
    /// Lines to wait for between the later steps (default: a tenth of the run, at least 2).
    pub step: Option<usize>,
    /// See [`AfterRestart`].
    pub after_restart: Option<AfterRestart>,
    /// Called with the ckpt run after each kill, before the restart (e.g. to remove what a
    /// reboot would have removed).
    pub after_kill: Option<fn(&RunInfo)>,
}

impl Default for TreeSpec {
    fn default() -> Self {
        TreeSpec {
            compare: Compare::Exact,
            env: Vec::new(),
            restart_env: Vec::new(),
            setup: None,
            cleanup: None,
            procs: 1..=10_000,
            stable: false,
            first_checkpoint_at: None,
            step: None,
            after_restart: None,
            after_kill: None,
        }
    }
}

/// Kills the native run's leftovers and runs `cleanup` on each run when dropped.
struct Guard {
    native_tag: String,
    runs: Vec<RunInfo>,
    cleanup: Option<fn(&RunInfo)>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = tagged_pids(&self.native_tag);
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for p in left {
                // SAFETY: plain kill(2) of a process carrying this scenario's native tag.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(POLL);
        }
        if let Some(c) = self.cleanup {
            for r in &self.runs {
                c(r);
            }
        }
    }
}

/// State shared by the scenarios: the session, both runs, the native process.
struct Tree<'a> {
    s: &'a Session,
    prog: Prog,
    spec: &'a TreeSpec,
    native: Proc,
    native_out: PathBuf,
    ckpt_run: RunInfo,
    out: PathBuf,
    _guard: Guard,
}

fn substitute(prog: &Prog, run: &RunInfo) -> Prog {
    let mut p = prog.clone();
    p.args = prog
        .args
        .iter()
        .map(|a| {
            a.replace("{dir}", &run.dir.to_string_lossy())
                .replace("{uniq}", &run.uniq)
        })
        .collect();
    p
}

fn apply_env(cmd: &mut std::process::Command, env: &[(String, Option<String>)]) {
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
}

impl<'a> Tree<'a> {
    /// Makes both run directories, starts the native run and launches the program under ckpt.
    fn start(s: &'a Session, prog: &Prog, spec: &'a TreeSpec) -> (Tree<'a>, Proc) {
        let native_tag = format!("{}-native", s.tag());
        let mk = |kind: &'static str| {
            let dir = s.path(&format!("{kind}-run"));
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
            let uniq = format!("{}-{kind}", s.tag());
            RunInfo { kind, dir, uniq }
        };
        let native_run = mk("native");
        let ckpt_run = mk("ckpt");
        let guard = Guard {
            native_tag: native_tag.clone(),
            runs: vec![native_run.clone(), ckpt_run.clone()],
            cleanup: spec.cleanup,
        };
        if let Some(setup) = spec.setup {
            setup(&native_run);
            setup(&ckpt_run);
        }

        let native_out = s.path("native.out");
        let np = substitute(prog, &native_run);
        let mut cmd = s.command(&np.program);
        cmd.args(&np.args)
            .current_dir(&native_run.dir)
            .env(TAG_VAR, &native_tag);
        apply_env(&mut cmd, &spec.env);
        let native = s.spawn_to(cmd, &format!("native-{}", prog.name), &native_out);

        let out = s.path("ckpt.out");
        let cp = substitute(prog, &ckpt_run);
        let mut cmd = s.launch_command(&cp);
        cmd.current_dir(&ckpt_run.dir);
        apply_env(&mut cmd, &spec.env);
        let app = s.spawn_to(cmd, &format!("launch-{}", prog.name), &out);
        s.log(format!(
            "launched {} {:?} in {} (pid {})",
            cp.program.display(),
            cp.args,
            ckpt_run.dir.display(),
            app.pid()
        ));
        (
            Tree {
                s,
                prog: prog.clone(),
                spec,
                native,
                native_out,
                ckpt_run,
                out,
                _guard: guard,
            },
            app,
        )
    }

    fn lines(&self) -> usize {
        count_lines(&self.out)
    }

    fn assert_running(&self, p: &mut Proc, when: &str) {
        if let Some(st) = p.try_wait() {
            panic!(
                "{} already exited ({}) {when} with {} lines out: checkpoints too slow for its pace?\n{}",
                p.label(),
                describe_status(&st),
                self.lines(),
                self.s.diagnostics()
            );
        }
    }

    /// Checkpoints and checks the result against `--list` taken just before and just after:
    /// one image per process (a process listed both before and after must have one; if the
    /// two lists agree the images are exactly theirs), images 0600, the image count within
    /// `spec.procs`, parents in `--list` matching the kernel's. With `first`, also: the
    /// checkpoint dir holds exactly these images.
    fn checkpoint(&self, what: &str, first: bool) -> Vec<PathBuf> {
        let s = self.s;
        let before = live(&s.list());
        let n0 = self.lines();
        let t = Instant::now();
        let imgs = s.checkpoint();
        let took = t.elapsed();
        let after = live(&s.list());
        s.log(format!(
            "{what}: {} images in {took:?}, lines {n0} -> {}: {imgs:?}",
            imgs.len(),
            self.lines()
        ));
        for img in &imgs {
            let mode = std::fs::metadata(img).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o600, "image {} has mode {mode:o}", img.display());
        }
        let img_vpids: BTreeSet<String> = imgs
            .iter()
            .map(|p| {
                image_vpid(p).unwrap_or_else(|| {
                    panic!(
                        "cannot tell the vpid from image name {} (expected ckpt_<prog>_<comp>_<vpid>.img)",
                        p.display()
                    )
                })
            })
            .collect();
        assert_eq!(
            img_vpids.len(),
            imgs.len(),
            "{what}: two images of one vpid: {imgs:?}"
        );
        let vp =
            |l: &[ListEntry]| -> BTreeSet<String> { l.iter().map(|e| e.vpid.clone()).collect() };
        let (vb, va) = (vp(&before), vp(&after));
        let missing: Vec<&String> = vb
            .intersection(&va)
            .filter(|v| !img_vpids.contains(*v))
            .collect();
        assert!(
            missing.is_empty(),
            "{what}: vpids {missing:?} were listed before and after the checkpoint but have no image\n\
             images: {img_vpids:?}\nlist before: {before:?}\nlist after: {after:?}\n{}",
            s.diagnostics()
        );
        if vb == va {
            // An image of a vpid in neither list is a process that joined after the first
            // --list and exited right after its image was committed (a `sleep` whose time ran
            // out while it was frozen): fine. One listed then would have to be in both lists.
            let extra: Vec<&String> = img_vpids.difference(&vb).collect();
            let listed_extra: Vec<&&String> = extra.iter().filter(|v| va.contains(**v)).collect();
            assert!(
                listed_extra.is_empty() && vb.is_subset(&img_vpids),
                "{what}: images of {img_vpids:?} but --list (which did not change meanwhile) shows {vb:?}\n\
                 list: {before:?}\n{}",
                s.diagnostics()
            );
        }
        assert!(
            self.spec.procs.contains(&imgs.len()),
            "{what}: {} images, expected {:?} processes: {imgs:?}\n{}",
            imgs.len(),
            self.spec.procs,
            s.diagnostics()
        );
        if first {
            let in_dir = images_in(s.ckpt_dir());
            assert_eq!(
                in_dir.len(),
                imgs.len(),
                "{what}: the checkpoint dir holds {in_dir:?} but the checkpoint printed {imgs:?}"
            );
        }
        check_parents(s, &after, what);
        imgs
    }

    /// The (vpid, parent, program) set of the live `--list` entries.
    fn shape(&self) -> BTreeSet<(String, Option<String>, String)> {
        live(&self.s.list())
            .into_iter()
            .map(|e| (e.vpid, e.parent, e.program))
            .collect()
    }

    /// Kills the computation; returns the line count at that moment.
    fn kill(&self, root: &mut Proc, what: &str) -> usize {
        let killed = self.s.kill_computation(root);
        let n = self.lines();
        self.s.log(format!(
            "{what}: killed {} processes at {n} lines ({})",
            killed.len(),
            describe_status(&root.try_wait().expect("root reaped"))
        ));
        if let Some(f) = self.spec.after_kill {
            f(&self.ckpt_run);
        }
        n
    }

    /// Restarts from `imgs`; waits for `more` lines past `killed_at`; checks the shape for
    /// a stable tree and runs the `after_restart` hook.
    fn restart(
        &self,
        imgs: &[PathBuf],
        stdout: &Path,
        killed_at: usize,
        more: usize,
        shape: Option<&BTreeSet<(String, Option<String>, String)>>,
    ) -> Proc {
        let s = self.s;
        let mut cmd = s.restart_command(imgs);
        apply_env(&mut cmd, &self.spec.restart_env);
        let mut r = s.spawn_to(cmd, "restart", stdout);
        s.log(format!(
            "ckpt-restart of {} images (pid {})",
            imgs.len(),
            r.pid()
        ));
        s.wait_lines(&self.out, killed_at + more, LINES, &mut r);
        if let Some(want) = shape {
            let deadline = Instant::now() + LINES;
            loop {
                let got = self.shape();
                if &got == want {
                    break;
                }
                if Instant::now() > deadline {
                    panic!(
                        "after restart --list shows (vpid, parent, program) {got:?}, at the checkpoint it was {want:?}\n{}",
                        s.diagnostics()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if let Some(hook) = &self.spec.after_restart {
            hook(s, &self.ckpt_run, &live(&s.list()));
        }
        // /proc/PID/exe names the program again, not ckpt-restorer (namespace restarts only:
        // replacing it needs CAP_CHECKPOINT_RESTORE in the process's user namespace).
        let fallback = self
            .spec
            .env
            .iter()
            .chain(self.spec.restart_env.iter())
            .any(|(k, v)| k == "CKPT_NO_NAMESPACES" && v.is_some());
        if !fallback {
            for e in live(&s.list()) {
                if let Ok(exe) = std::fs::read_link(format!("/proc/{}/exe", e.pid)) {
                    assert!(
                        !exe.to_string_lossy().contains("ckpt-restorer"),
                        "restored vpid {} (pid {}, {}): /proc/PID/exe is {}",
                        e.vpid,
                        e.pid,
                        e.program,
                        exe.display()
                    );
                }
            }
        }
        s.log(format!(
            "restarted tree running, {} lines out",
            self.lines()
        ));
        r
    }

    /// Waits for the last `ckpt-restart` and the native run; compares their status and
    /// output; waits for the rest of the computation to exit.
    fn finish(mut self, mut last: Proc, last_stdout: &Path) {
        let s = self.s;
        let st = last.wait_exit(FINISH);
        s.log(format!("last ckpt-restart: {}", describe_status(&st)));
        let nst = self.native.wait_exit(FINISH);
        assert!(
            same_status(&st, &nst),
            "restarted {} ended with {}, the native run with {}; ckpt-restart stderr:\n{}\noutput tail:\n{}\n{}",
            self.prog.name,
            describe_status(&st),
            describe_status(&nst),
            last.stderr_tail(),
            tail(&self.out, 5),
            s.diagnostics()
        );
        assert_empty(last_stdout, "stdout of the last ckpt-restart");
        self.wait_leftovers();
        assert_eq!(
            count_lines(&self.native_out),
            self.prog.lines,
            "native run line count; native stderr:\n{}",
            self.native.stderr_tail()
        );
        compare(&self.native_out, &self.out, self.spec.compare);
    }

    /// Waits until no process of the computation is left (the root may exit before its
    /// children, natively too); panics naming them after [`LEFTOVERS`].
    fn wait_leftovers(&self) {
        let s = self.s;
        let coord = s.coordinator_pid();
        let deadline = Instant::now() + LEFTOVERS;
        loop {
            let left: Vec<i32> = tagged_pids(s.tag())
                .into_iter()
                .filter(|&p| Some(p) != coord)
                .collect();
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let desc: Vec<_> = left.iter().map(|&p| proc_stat(p)).collect();
                panic!(
                    "processes of the computation still alive {LEFTOVERS:?} after the restarted root exited: {desc:?}\n{}",
                    s.diagnostics()
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

/// The standard cycle for a process tree: native run (to `native.out`); launch under ckpt
/// (output to `ckpt.out`); at `first_checkpoint_at` lines (default 1/5 of the run)
/// checkpoint 1 — the tree keeps running; `step` more lines, checkpoint 2, a third of a
/// step more, then SIGKILL the whole computation ([`Session::kill_computation`]); restart
/// *all* images of checkpoint 2 with one `ckpt-restart`; `step` more lines; checkpoint 3 of
/// the restarted tree; kill; restart again; wait for the end. Requires: every checkpoint has
/// one image per process of `--list` (0600, and `gzip -t` once nothing runs), the same
/// processes after each restart for a [`TreeSpec::stable`] tree, `ckpt-restart`'s exit
/// status equal to the native run's, the output equal to the native run's
/// ([`TreeSpec::compare`]) and no process left over after the end.
pub fn tree_scenario(prog: Prog, spec: TreeSpec) {
    let s = Session::new(&prog.name);
    let n = prog.lines;
    let step = spec.step.unwrap_or((n / 10).max(2));
    let first_at = spec.first_checkpoint_at.unwrap_or(n / 5).max(1);
    let (t, mut app) = Tree::start(&s, &prog, &spec);

    s.wait_lines(&t.out, first_at, LINES, &mut app);
    t.checkpoint("checkpoint 1", true);
    let c1 = t.lines();
    s.wait_lines(&t.out, c1 + step, LINES, &mut app);

    let shape0 = spec.stable.then(|| t.shape());
    let imgs = t.checkpoint("checkpoint 2", false);
    let shape = spec.stable.then(|| t.shape());
    if let (Some(a), Some(b)) = (&shape0, &shape) {
        assert_eq!(
            a,
            b,
            "the tree of a stable program changed between two --list calls\n{}",
            s.diagnostics()
        );
    }
    let c2 = t.lines();
    s.wait_lines(&t.out, c2 + (step / 3).max(1), LINES, &mut app);
    t.assert_running(&mut app, "before the first SIGKILL");
    let killed_at = t.kill(&mut app, "first kill");
    check_images(&imgs);

    let r1_out = s.path("restart1.stdout");
    let mut r1 = t.restart(&imgs, &r1_out, killed_at, step, shape.as_ref());

    let shape = spec.stable.then(|| t.shape());
    let imgs = t.checkpoint("checkpoint 3", false);
    t.assert_running(&mut r1, "before the second SIGKILL");
    t.kill(&mut r1, "second kill");
    assert_empty(&r1_out, "stdout of the first ckpt-restart");
    check_images(&imgs);

    let r2_out = s.path("restart2.stdout");
    let killed_at = t.lines();
    // One more line shows it runs again (none if every line was out already).
    let more = usize::from(killed_at < n);
    let r2 = t.restart(&imgs, &r2_out, killed_at, more, shape.as_ref());
    t.finish(r2, &r2_out);
}

/// Checkpoints in a loop while the program runs: `n` `ckpt-command --checkpoint`s back to
/// back, each of which must succeed within `each` (the tree changes all the time, so the
/// image count varies); the coordinator log must not mention a failure; the program must
/// still be running after the last one. Then SIGKILL the computation, restart from the last
/// images, and require the native run's status and output.
pub fn checkpoint_loop_scenario(prog: Prog, spec: TreeSpec, n: usize, each: Duration) {
    let s = Session::new(&prog.name);
    let (t, mut app) = Tree::start(&s, &prog, &spec);
    let first_at = spec.first_checkpoint_at.unwrap_or((prog.lines / 50).max(1));
    s.wait_lines(&t.out, first_at, LINES, &mut app);

    let mut counts = std::collections::BTreeMap::<usize, usize>::new();
    let mut last = Vec::new();
    let started = Instant::now();
    for i in 1..=n {
        t.assert_running(&mut app, &format!("before checkpoint {i} of {n}"));
        let t0 = Instant::now();
        let imgs = s.try_checkpoint_within(each).unwrap_or_else(|e| {
            panic!(
                "checkpoint {i} of {n} (at {} lines) did not succeed within {each:?}:\n{e}\n{}",
                t.lines(),
                s.diagnostics()
            )
        });
        assert!(
            !imgs.is_empty() && imgs.iter().all(|p| p.is_file()),
            "checkpoint {i} printed {imgs:?}, not all of them files"
        );
        assert!(
            spec.procs.contains(&imgs.len()),
            "checkpoint {i}: {} images, expected {:?}",
            imgs.len(),
            spec.procs
        );
        *counts.entry(imgs.len()).or_default() += 1;
        if i % 10 == 0 {
            s.log(format!(
                "checkpoint {i}: {} images in {:?}, {} lines",
                imgs.len(),
                t0.elapsed(),
                t.lines()
            ));
        }
        last = imgs;
    }
    s.log(format!(
        "{n} checkpoints in {:?}; images per checkpoint -> how often: {counts:?}",
        started.elapsed()
    ));
    t.assert_running(&mut app, "after the checkpoint loop (make the run longer?)");
    let log = std::fs::read_to_string(s.coordinator_log()).unwrap_or_default();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("failed"))
        .collect();
    assert!(
        bad.is_empty(),
        "the coordinator log mentions failures:\n{}",
        bad.join("\n")
    );

    let killed_at = t.kill(&mut app, "kill after the loop");
    check_images(&last);
    let r_out = s.path("restart.stdout");
    let more = usize::from(killed_at < prog.lines);
    let r = t.restart(&last, &r_out, killed_at, more, None);
    t.finish(r, &r_out);
}

/// Entries of `--list` that are alive (or whose pid is not shown).
fn live(l: &[ListEntry]) -> Vec<ListEntry> {
    l.iter()
        .filter(|e| e.pid < 0 || e.alive())
        .cloned()
        .collect()
}

/// For each live entry whose parent (by vpid) is a live entry: the kernel's ppid of the
/// entry's pid must be the parent entry's pid. (Read the ppid first, then check that the
/// parent is still alive: a ppid only changes when the parent dies.)
fn check_parents(s: &Session, entries: &[ListEntry], what: &str) {
    for e in entries {
        let Some(pv) = e.parent_vpid() else { continue };
        let Some(parent) = entries.iter().find(|p| p.vpid == pv) else {
            continue;
        };
        if e.pid <= 0 || parent.pid <= 0 {
            continue;
        }
        let Some(st) = proc_stat(e.pid) else { continue };
        if !parent.alive() || !e.alive() {
            continue;
        }
        assert_eq!(
            st.ppid,
            parent.pid,
            "{what}: --list says vpid {} (pid {}) is a child of vpid {} (pid {}), the kernel says its parent is {}\n{}",
            e.vpid,
            e.pid,
            parent.vpid,
            parent.pid,
            st.ppid,
            s.diagnostics()
        );
    }
}

/// `ckpt_<prog>_<comp>_<vpid>.img` -> `<vpid>`.
pub fn image_vpid(p: &Path) -> Option<String> {
    let name = p.file_name()?.to_str()?;
    let stem = name.strip_suffix(".img")?;
    let (_, v) = stem.rsplit_once('_')?;
    v.parse::<u64>().ok().map(|v| v.to_string())
}

/// `*.img` files in `dir`.
pub fn images_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "img"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn same_status(a: &ExitStatus, b: &ExitStatus) -> bool {
    a.code() == b.code() && a.signal() == b.signal()
}

fn assert_empty(path: &Path, what: &str) {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    assert_eq!(
        len,
        0,
        "{what} ({}) should be empty (stdout was a regular file at checkpoint time), has:\n{}",
        path.display(),
        tail(path, 10)
    );
}

/// Compares `actual` with `expected` as `how` says.
pub fn compare(expected: &Path, actual: &Path, how: Compare) {
    match how {
        Compare::Exact => assert_same_output(expected, actual),
        Compare::SortedLines => {
            let sorted = |p: &Path| {
                let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                let mut lines: Vec<&[u8]> = b.split(|&c| c == b'\n').collect();
                if lines.last().is_some_and(|l| l.is_empty()) {
                    lines.pop();
                }
                lines.sort();
                let mut out = Vec::with_capacity(b.len() + 1);
                for l in lines {
                    out.extend_from_slice(l);
                    out.push(b'\n');
                }
                let q = p.with_extension("sorted");
                std::fs::write(&q, out).unwrap_or_else(|e| panic!("{}: {e}", q.display()));
                q
            };
            assert_same_output(&sorted(expected), &sorted(actual));
        }
    }
}
