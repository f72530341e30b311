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

/// One line of `ckpt-command --list`: `vpid pid host program state`.
#[derive(Debug, Clone)]
pub struct ListEntry {
    pub vpid: String,
    pub pid: i32,
    pub host: String,
    pub program: String,
    pub state: String,
}

/// Parses `--list` output leniently: any line whose second column is a positive integer.
pub fn parse_list(stdout: &str) -> Vec<ListEntry> {
    stdout
        .lines()
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            let pid: i32 = c.get(1)?.parse().ok()?;
            (pid > 0).then(|| ListEntry {
                vpid: c[0].to_string(),
                pid,
                host: c.get(2).unwrap_or(&"").to_string(),
                program: c.get(3).unwrap_or(&"").to_string(),
                state: c.get(4..).map(|s| s.join(" ")).unwrap_or_default(),
            })
        })
        .collect()
}

/// Pids of live processes whose environment holds `TAG_VAR=tag`.
pub fn tagged_pids(tag: &str) -> Vec<i32> {
    let needle = format!("{TAG_VAR}={tag}");
    let me = std::process::id() as i32;
    procs::all_pids()
        .into_iter()
        .filter(|&pid| pid != me && is_alive(pid))
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|e| e == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
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
        let mut cmd = self.command(bin("ckpt-launch"));
        cmd.args(["--coord-host", "127.0.0.1", "--coord-port"])
            .arg(self.port.to_string())
            .arg("--ckpt-dir")
            .arg(&self.ckpt_dir)
            .arg(&prog.program)
            .args(&prog.args);
        self.spawn_to(cmd, &format!("launch-{}", prog.name), stdout)
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
        Ok(out
            .stdout
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
            .collect())
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

    /// Pids (column 2) of `--list`.
    pub fn list_pids(&self) -> Vec<i32> {
        self.list().into_iter().map(|e| e.pid).collect()
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
                .filter(|&p| is_alive(p))
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
