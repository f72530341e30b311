//! [`Session`]: one private coordinator, checkpoint directory and scratch directory per
//! test, with the ckpt CLI (launch, checkpoint, list, kill, restart) wrapped so that every
//! wait has a deadline and every failure shows what was seen. Dropping a session cleans
//! up everything it started, even when the test panicked.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::procs::{self, Output, POLL, Proc, describe_status, is_alive, proc_stat, spawn};
use crate::progs::Prog;
use crate::util::{count_lines, tail};

/// Longest a `ckpt-command --checkpoint` may take.
pub const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest any other `ckpt-command` may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the coordinator may take to write its port file.
pub const COORD_START_TIMEOUT: Duration = Duration::from_secs(20);

/// Environment variable carrying a session's unique tag into every process it starts (and
/// their descendants, restored or not), so cleanup can find them all in `/proc/*/environ`.
pub const TAG_VAR: &str = "CKPT_TEST_TAG";

/// Directory holding `ckpt-coordinator`, `ckpt-launch`, `ckpt-command`, `ckpt-restart`
/// and `libckpt.so`: `$CKPT_BIN_DIR` if set; else the profile directory of the running
/// test binary (`<target>/<profile>`, so a custom `CARGO_TARGET_DIR` works) if it holds
/// both `ckpt-coordinator` and `libckpt.so`; else `<workspace>/target/release`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CKPT_BIN_DIR") {
        return d.into();
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let dir = if dir.ends_with("deps") {
            dir.parent().unwrap_or(dir)
        } else {
            dir
        };
        if dir.join("ckpt-coordinator").is_file() && dir.join("libckpt.so").is_file() {
            return dir.to_path_buf();
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("release")
}

/// Path of one of the ckpt binaries; panics with a hint if it is missing.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} not found: run `cargo build --release --workspace` or set CKPT_BIN_DIR",
        p.display()
    );
    p
}

/// One line of `ckpt-command --list`: `vpid pid host program state [parent]` (tab-separated;
/// `parent`, the parent's vpid or `-`, is the trailing column process trees add).
#[derive(Debug, Clone)]
pub struct ListEntry {
    pub vpid: String,
    /// The pid as seen from outside (the test's pid namespace); -1 when the coordinator
    /// shows `-` (not known, e.g. forked inside a restored namespace).
    pub pid: i32,
    pub host: String,
    pub program: String,
    pub state: String,
    /// The trailing `parent` column: `Some("-")` for a process whose parent is outside the
    /// computation, `None` if the line has no such column.
    pub parent: Option<String>,
}

impl ListEntry {
    /// The parent's vpid, if the line has a parent column naming one.
    pub fn parent_vpid(&self) -> Option<&str> {
        self.parent
            .as_deref()
            .filter(|p| *p != "-" && !p.is_empty())
    }

    /// True if the pid is known and that process is alive (not a zombie).
    pub fn alive(&self) -> bool {
        self.pid > 0 && is_alive(self.pid)
    }
}

/// Parses `--list` output leniently. Tab-separated lines (what `ckpt-command` prints) are
/// split on tabs: `vpid pid host program state [parent]`, a line needing a numeric vpid and a
/// pid that is a positive integer or `-`. Other lines are split on whitespace as before: any
/// line whose second column is a positive integer (the state being the rest of the line).
pub fn parse_list(stdout: &str) -> Vec<ListEntry> {
    stdout
        .lines()
        .filter_map(|l| {
            if l.contains('\t') {
                let c: Vec<&str> = l.split('\t').map(str::trim).collect();
                if c.len() < 5 || c[0].parse::<u64>().is_err() {
                    return None;
                }
                let pid: i32 = match c[1] {
                    "-" => -1,
                    p => p.parse().ok().filter(|&p| p > 0)?,
                };
                return Some(ListEntry {
                    vpid: c[0].to_string(),
                    pid,
                    host: c[2].to_string(),
                    program: c[3].to_string(),
                    state: c[4].to_string(),
                    parent: c.get(5).map(|s| s.to_string()),
                });
            }
            let c: Vec<&str> = l.split_whitespace().collect();
            let pid: i32 = c.get(1)?.parse().ok()?;
            (pid > 0).then(|| ListEntry {
                vpid: c[0].to_string(),
                pid,
                host: c.get(2).unwrap_or(&"").to_string(),
                program: c.get(3).unwrap_or(&"").to_string(),
                state: c.get(4..).map(|s| s.join(" ")).unwrap_or_default(),
                parent: None,
            })
        })
        .collect()
}

/// Pids of live processes whose environment holds `TAG_VAR=tag`, and their live descendants
/// (a program may overwrite its environment area: redis-server does, for its process title).
pub fn tagged_pids(tag: &str) -> Vec<i32> {
    let needle = format!("{TAG_VAR}={tag}");
    let me = std::process::id() as i32;
    let live: Vec<(i32, i32)> = procs::all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let st = procs::proc_stat(pid)?;
            (st.state != 'Z' && st.state != 'X').then_some((pid, st.ppid))
        })
        .collect();
    let mut out: Vec<i32> = live
        .iter()
        .map(|&(pid, _)| pid)
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|e| e == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect();
    loop {
        let more: Vec<i32> = live
            .iter()
            .filter(|&&(pid, ppid)| out.contains(&ppid) && !out.contains(&pid))
            .map(|&(pid, _)| pid)
            .collect();
        if more.is_empty() {
            return out;
        }
        out.extend(more);
    }
}

/// A test's private ckpt world: a coordinator on its own port, a checkpoint directory and
/// a scratch directory (under `$TMPDIR`, removed on success, kept on failure or when
/// `CKPT_TEST_KEEP` is set). Dropping it kills the computation (`--kill`), then every
/// process carrying the session's tag, then quits the coordinator.
pub struct Session {
    name: String,
    tag: String,
    dir: PathBuf,
    ckpt_dir: PathBuf,
    port: u16,
    coord: Option<Proc>,
    coord_log: PathBuf,
    seq: AtomicU64,
    started: Instant,
}

impl Session {
    /// Creates the directories and starts `ckpt-coordinator --port 0 --port-file F
    /// --ckpt-dir D`, waiting (with a deadline) for the port file.
    pub fn new(name: &str) -> Session {
        procs::init();
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let me = std::process::id();
        let dir = std::env::temp_dir().join(format!("ckpt-tests-{name}-{me}-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        let ckpt_dir = dir.join("ckpt");
        std::fs::create_dir_all(&ckpt_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", ckpt_dir.display()));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut s = Session {
            name: name.to_string(),
            tag: format!("{name}-{me}-{n}-{nanos}"),
            coord_log: dir.join("coordinator.log"),
            dir,
            ckpt_dir,
            port: 0,
            coord: None,
            seq: AtomicU64::new(0),
            started: Instant::now(),
        };
        s.start_coordinator();
        s
    }

    fn start_coordinator(&mut self) {
        let port_file = self.dir.join("coordinator.port");
        let log = File::create(&self.coord_log).expect("create coordinator log");
        let mut cmd = self.command(bin("ckpt-coordinator"));
        cmd.arg("--port")
            .arg("0")
            .arg("--port-file")
            .arg(&port_file)
            .arg("--ckpt-dir")
            .arg(&self.ckpt_dir)
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let mut coord = spawn(&mut cmd, "ckpt-coordinator", Some(&self.coord_log));
        let deadline = Instant::now() + COORD_START_TIMEOUT;
        loop {
            if let Ok(s) = std::fs::read_to_string(&port_file)
                && let Ok(port) = s.trim().parse::<u16>()
                && port > 0
            {
                self.port = port;
                break;
            }
            if let Some(st) = coord.try_wait() {
                panic!(
                    "ckpt-coordinator exited ({}) before writing {}; log:\n{}",
                    describe_status(&st),
                    port_file.display(),
                    tail(&self.coord_log, 30)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "ckpt-coordinator wrote no port to {} within {COORD_START_TIMEOUT:?}; log:\n{}",
                    port_file.display(),
                    tail(&self.coord_log, 30)
                );
            }
            std::thread::sleep(POLL);
        }
        self.coord = Some(coord);
    }

    /// Prints a progress line, with the time since the session started, to stderr (shown
    /// by the test runner when the test fails).
    pub fn log(&self, msg: impl std::fmt::Display) {
        eprintln!(
            "[{:7.3}s {}] {msg}",
            self.started.elapsed().as_secs_f64(),
            self.name
        );
    }

    /// The coordinator's TCP port (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The checkpoint directory given to the coordinator, ckpt-launch and ckpt-restart.
    pub fn ckpt_dir(&self) -> &Path {
        &self.ckpt_dir
    }

    /// The scratch directory (outputs, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `dir()/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The tag in the environment of every process this session starts.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Pid of the coordinator.
    pub fn coordinator_pid(&self) -> Option<i32> {
        self.coord.as_ref().map(Proc::pid)
    }

    /// The coordinator's log file (its stdout and stderr).
    pub fn coordinator_log(&self) -> &Path {
        &self.coord_log
    }

    /// A `Command` for `program` carrying the session tag, without inherited `CKPT_*`
    /// settings, run in the scratch dir with stdin from /dev/null.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env(TAG_VAR, &self.tag)
            .env_remove("CKPT_COORD_HOST")
            .env_remove("CKPT_COORD_PORT")
            .env_remove("CKPT_DIR")
            .env_remove("LD_PRELOAD")
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        c
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts `cmd` with stdout to `stdout` and stderr to `<scratch>/<label>-N.stderr`.
    pub fn spawn_to(&self, mut cmd: Command, label: &str, stdout: &Path) -> Proc {
        let err = self.path(&format!("{label}-{}.stderr", self.next_seq()));
        let out_f =
            File::create(stdout).unwrap_or_else(|e| panic!("create {}: {e}", stdout.display()));
        let err_f = File::create(&err).unwrap_or_else(|e| panic!("create {}: {e}", err.display()));
        cmd.stdout(out_f).stderr(err_f);
        spawn(&mut cmd, label, Some(&err))
    }

    /// Runs `prog` natively (no ckpt), stdout to `stdout`. Returns at once.
    pub fn run_native(&self, prog: &Prog, stdout: &Path) -> Proc {
        let mut cmd = self.command(&prog.program);
        cmd.args(&prog.args);
        self.spawn_to(cmd, &format!("native-{}", prog.name), stdout)
    }

    /// `ckpt-launch --coord-host 127.0.0.1 --coord-port P --ckpt-dir D PROGRAM ARGS...`
    /// with the program's stdout redirected to `stdout`. Returns at once.
    pub fn launch(&self, prog: &Prog, stdout: &Path) -> Proc {
        let cmd = self.launch_command(prog);
        self.spawn_to(cmd, &format!("launch-{}", prog.name), stdout)
    }

    /// The `ckpt-launch` command line of [`Session::launch`], to adjust (cwd, environment)
    /// before [`Session::spawn_to`].
    pub fn launch_command(&self, prog: &Prog) -> Command {
        let mut cmd = self.command(bin("ckpt-launch"));
        cmd.args(["--coord-host", "127.0.0.1", "--coord-port"])
            .arg(self.port.to_string())
            .arg("--ckpt-dir")
            .arg(&self.ckpt_dir)
            .arg(&prog.program)
            .args(&prog.args);
        cmd
    }

    /// `ckpt-restart --coord-host 127.0.0.1 --coord-port P --ckpt-dir D IMAGE...`, its
    /// stdout to `stdout`. Returns at once; the restored program is its child.
    pub fn restart(&self, images: &[PathBuf], stdout: &Path) -> Proc {
        self.spawn_to(self.restart_command(images), "restart", stdout)
    }

    /// The `ckpt-restart` command line of [`Session::restart`], to run it another way.
    pub fn restart_command(&self, images: &[PathBuf]) -> Command {
        let mut cmd = self.command(bin("ckpt-restart"));
        cmd.args(["--coord-host", "127.0.0.1", "--coord-port"])
            .arg(self.port.to_string())
            .arg("--ckpt-dir")
            .arg(&self.ckpt_dir)
            .args(images);
        cmd
    }

    /// Runs `ckpt-command --coord-host 127.0.0.1 --coord-port P ARGS...`; `Err` on timeout.
    pub fn try_ckpt_command(&self, args: &[&str], timeout: Duration) -> Result<Output, String> {
        let mut cmd = self.command(bin("ckpt-command"));
        cmd.args(["--coord-host", "127.0.0.1", "--coord-port"])
            .arg(self.port.to_string())
            .args(args);
        procs::try_run(cmd, timeout)
    }

    /// [`Session::try_ckpt_command`], panicking (with diagnostics) on timeout.
    pub fn ckpt_command(&self, args: &[&str], timeout: Duration) -> Output {
        self.try_ckpt_command(args, timeout)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.diagnostics()))
    }

    /// `ckpt-command --checkpoint`: `Ok(image paths)` on exit 0, else `Err(output)`.
    /// Relative paths are resolved against the scratch dir, then the checkpoint dir.
    pub fn try_checkpoint(&self) -> Result<Vec<PathBuf>, Output> {
        let out = self.ckpt_command(&["--checkpoint"], CHECKPOINT_TIMEOUT);
        if !out.success() {
            return Err(out);
        }
        Ok(self.image_paths(&out))
    }

    /// `ckpt-command --checkpoint` that must finish within `timeout`: `Ok(image paths)` on
    /// exit 0; `Err` describing the timeout or the failure (with the command's output).
    pub fn try_checkpoint_within(&self, timeout: Duration) -> Result<Vec<PathBuf>, String> {
        match self.try_ckpt_command(&["--checkpoint"], timeout) {
            Err(e) => Err(e),
            Ok(out) if !out.success() => Err(format!("checkpoint failed:\n{out}")),
            Ok(out) => Ok(self.image_paths(&out)),
        }
    }

    /// The image paths a successful `--checkpoint` printed, one a line.
    fn image_paths(&self, out: &Output) -> Vec<PathBuf> {
        out.stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| {
                let p = PathBuf::from(l);
                if p.is_absolute() || self.dir.join(&p).exists() {
                    self.dir.join(p)
                } else {
                    self.ckpt_dir.join(p)
                }
            })
            .collect()
    }

    /// Checkpoints; panics unless it succeeds and every printed image exists.
    pub fn checkpoint(&self) -> Vec<PathBuf> {
        let imgs = self
            .try_checkpoint()
            .unwrap_or_else(|out| panic!("checkpoint failed:\n{out}\n{}", self.diagnostics()));
        assert!(
            !imgs.is_empty(),
            "checkpoint succeeded but printed no image path\n{}",
            self.diagnostics()
        );
        for p in &imgs {
            assert!(
                p.is_file(),
                "checkpoint printed {} which does not exist\n{}",
                p.display(),
                self.diagnostics()
            );
        }
        imgs
    }

    /// `ckpt-command --list`, parsed; panics if the command fails.
    pub fn list(&self) -> Vec<ListEntry> {
        let out = self.ckpt_command(&["--list"], COMMAND_TIMEOUT);
        assert!(
            out.success(),
            "ckpt-command --list failed:\n{out}\n{}",
            self.diagnostics()
        );
        parse_list(&out.stdout)
    }

    /// Pids (column 2) of `--list` (those shown as `-` left out).
    pub fn list_pids(&self) -> Vec<i32> {
        self.list()
            .into_iter()
            .map(|e| e.pid)
            .filter(|&p| p > 0)
            .collect()
    }

    /// Polls `--list` until exactly `n` of the listed pids are alive (stale entries of
    /// dead processes are ignored) and returns them.
    pub fn wait_for_pids(&self, n: usize, timeout: Duration) -> Vec<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let entries = self.list();
            let alive: Vec<i32> = entries
                .iter()
                .map(|e| e.pid)
                .filter(|&p| p > 0 && is_alive(p))
                .collect();
            if alive.len() == n {
                return alive;
            }
            if Instant::now() > deadline {
                panic!(
                    "wanted {n} live processes in --list within {timeout:?}, last saw {entries:?}\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs `pid` and waits until it is gone. Refuses (panics) if `pid` does not
    /// carry this session's tag: a wrong pid from `--list` must not kill a stranger.
    pub fn kill9(&self, pid: i32) {
        assert!(
            tagged_pids(&self.tag).contains(&pid),
            "pid {pid} ({:?}) is not a live process of session {}\n{}",
            proc_stat(pid),
            self.name,
            self.diagnostics()
        );
        procs::kill9(pid);
    }

    /// Waits until `path` has at least `n` lines, failing fast if `writer` (the process
    /// whose descendant writes the file) exits first. Returns the line count.
    pub fn wait_lines(&self, path: &Path, n: usize, timeout: Duration, writer: &mut Proc) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let c = count_lines(path);
            if c >= n {
                return c;
            }
            if let Some(st) = writer.try_wait() {
                // it may have written its last lines just before exiting
                let c = count_lines(path);
                if c >= n {
                    return c;
                }
                panic!(
                    "{} exited ({}) with {c} lines in {}, wanted {n}; its stderr:\n{}\noutput tail:\n{}\n{}",
                    writer.label(),
                    describe_status(&st),
                    path.display(),
                    writer.stderr_tail(),
                    tail(path, 5),
                    self.diagnostics()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} has {c} lines after {timeout:?}, wanted {n}; tail:\n{}stderr of {}:\n{}\n{}",
                    path.display(),
                    tail(path, 5),
                    writer.label(),
                    writer.stderr_tail(),
                    self.diagnostics()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// What to show when something went wrong: live processes of the session and the
    /// coordinator log's tail.
    pub fn diagnostics(&self) -> String {
        let mut s = format!(
            "--- session {} (port {}, dir {}) processes ---\n",
            self.name,
            self.port,
            self.dir.display()
        );
        for pid in tagged_pids(&self.tag) {
            if let Some(st) = proc_stat(pid) {
                s += &format!(
                    "  pid {} ppid {} state {} {}\n",
                    st.pid, st.ppid, st.state, st.comm
                );
            }
        }
        s += &format!(
            "--- coordinator log tail ---\n{}",
            tail(&self.coord_log, 30)
        );
        s
    }

    /// SIGKILLs every live process carrying the session tag except `keep`, repeatedly
    /// until none is left (up to 5 s). Returns how many were killed.
    pub fn kill_tagged(&self, keep: &[i32]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut killed = std::collections::BTreeSet::new();
        loop {
            let left: Vec<i32> = tagged_pids(&self.tag)
                .into_iter()
                .filter(|p| !keep.contains(p))
                .collect();
            if left.is_empty() || Instant::now() > deadline {
                return killed.len();
            }
            for p in left {
                // SAFETY: plain kill(2) of a process verified to carry our tag.
                unsafe { libc::kill(p, libc::SIGKILL) };
                killed.insert(p);
            }
            std::thread::sleep(POLL);
        }
    }
    /// Live processes of the computation: every process carrying the session tag except
    /// the coordinator (and this test process).
    fn computation_pids(&self) -> Vec<i32> {
        let coord = self.coordinator_pid();
        let mut v: Vec<i32> = tagged_pids(&self.tag)
            .into_iter()
            .filter(|&p| Some(p) != coord)
            .collect();
        v.sort_unstable();
        v
    }

    /// SIGKILLs a whole computation: `root` (the `ckpt-launch` or `ckpt-restart` the test
    /// started), every live pid of `--list` and every other process carrying the session
    /// tag except the coordinator (so a native run to compare with must carry another tag:
    /// [`crate::tree`] gives it one). Everything is first stopped with SIGSTOP, rescanning
    /// until no new process shows up, so that no process reacts to another's death (writes
    /// more output, exits early); then everything is SIGKILLed, again until nothing is
    /// left. Reaps `root`. Panics naming the survivors if any process is alive after 10 s,
    /// or if a live pid of `--list` does not carry the session tag (a wrong pid must not
    /// make us kill a stranger). Returns the pids killed.
    pub fn kill_computation(&self, root: &mut Proc) -> Vec<i32> {
        let listed = self.list();
        let tagged = tagged_pids(&self.tag);
        for e in &listed {
            if e.alive() && !tagged.contains(&e.pid) && is_alive(e.pid) {
                panic!(
                    "--list shows pid {} ({:?}) for vpid {}, which is not a process of session {}\n{}",
                    e.pid,
                    proc_stat(e.pid),
                    e.vpid,
                    self.name,
                    self.diagnostics()
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stopped = std::collections::BTreeSet::new();
        let mut quiet_scans = 0;
        while quiet_scans < 2 && Instant::now() < deadline {
            let new: Vec<i32> = self
                .computation_pids()
                .into_iter()
                .filter(|p| !stopped.contains(p))
                .collect();
            if new.is_empty() {
                quiet_scans += 1;
            } else {
                quiet_scans = 0;
            }
            for p in new {
                // SAFETY: plain kill(2) of a process verified to carry our tag.
                unsafe { libc::kill(p, libc::SIGSTOP) };
                stopped.insert(p);
            }
            std::thread::sleep(POLL);
        }
        let mut killed = stopped.clone();
        for &p in &stopped {
            // SAFETY: as above (a stopped process keeps its pid: it cannot have been reused).
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        loop {
            let left = self.computation_pids();
            let root_alive = root.try_wait().is_none();
            if left.is_empty() && !root_alive {
                break;
            }
            if Instant::now() > deadline {
                let mut msg = String::new();
                for p in &left {
                    msg += &format!("  {:?}\n", proc_stat(*p));
                }
                panic!(
                    "still alive 10 s after SIGKILL of the computation{}:\n{msg}{}",
                    if root_alive {
                        format!(" ({} too)", root.label())
                    } else {
                        String::new()
                    },
                    self.diagnostics()
                );
            }
            for p in left {
                // SAFETY: as above.
                unsafe { libc::kill(p, libc::SIGKILL) };
                killed.insert(p);
            }
            if root_alive {
                // SAFETY: our own, not yet reaped child.
                unsafe { libc::kill(root.pid(), libc::SIGKILL) };
            }
            std::thread::sleep(POLL);
        }
        // A process being torn down (its mm already gone, so its environ no longer shows the
        // tag) may still count as alive for a moment: wait for the listed pids, with the
        // same deadline, before calling them survivors.
        let mut survivors: Vec<&ListEntry> = listed.iter().filter(|e| e.alive()).collect();
        while !survivors.is_empty() && Instant::now() < deadline {
            std::thread::sleep(POLL);
            survivors.retain(|e| e.alive());
        }
        assert!(
            survivors.is_empty(),
            "listed processes survived the SIGKILL of the computation: {survivors:?}\n{}",
            self.diagnostics()
        );
        killed.into_iter().collect()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let coord_alive = self.coord.as_mut().is_some_and(|c| c.try_wait().is_none());
        let coord_pid: Vec<i32> = self.coordinator_pid().into_iter().collect();
        if coord_alive {
            let _ = self.try_ckpt_command(&["--kill"], Duration::from_secs(10));
        }
        self.kill_tagged(&coord_pid);
        if coord_alive {
            let _ = self.try_ckpt_command(&["--quit"], Duration::from_secs(5));
        }
        if let Some(mut c) = self.coord.take()
            && c.try_wait_exit(Duration::from_secs(5)).is_err()
        {
            c.kill9();
        }
        self.kill_tagged(&[]);
        if std::thread::panicking() || std::env::var_os("CKPT_TEST_KEEP").is_some() {
            eprintln!(
                "ckpt-tests: session {} kept in {}",
                self.name,
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_list;

    #[test]
    fn list_with_and_without_parent_column() {
        let out = "VPID\tPID\tHOST\tPROGRAM\tSTATE\tPARENT\n\
                   41230\t41230\th1\tbash\trunning\t-\n\
                   41240\t-\th1\tsort\texec\t41230\n\
                   7\t900\th1\tcounter\trunning\n\
                   8 901 h1 old program running\n";
        let l = parse_list(out);
        assert_eq!(l.len(), 4, "{l:?}");
        assert_eq!((l[0].pid, l[0].parent_vpid()), (41230, None));
        assert_eq!(l[0].parent.as_deref(), Some("-"));
        assert_eq!((l[1].pid, l[1].parent_vpid()), (-1, Some("41230")));
        assert_eq!(
            (l[1].program.as_str(), l[1].state.as_str()),
            ("sort", "exec")
        );
        assert_eq!((l[2].pid, l[2].parent.as_deref()), (900, None));
        assert_eq!((l[3].pid, l[3].state.as_str()), (901, "program running"));
    }
}
