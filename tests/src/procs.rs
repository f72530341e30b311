//! Child processes of a test binary: the subreaper set-up, tracked spawning, orphan
//! reaping, [`Proc`] (a child that is always killed and reaped), commands run with a
//! deadline ([`run`]) and small `/proc` helpers.
//!
//! The test binary makes itself a child subreaper, so processes that ckpt detaches
//! (restored programs whose `ckpt-restart` died, daemons) are re-parented to it rather
//! than to the machine's PID 1, which reaps slowly. A background thread reaps those
//! orphans. It must never reap a child that a [`Proc`] or [`run`] is going to wait for,
//! so every spawn goes through [`spawn`], which registers the pid under the same lock the
//! reaper holds while it scans.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

/// How often pollers look again.
pub const POLL: Duration = Duration::from_millis(20);

static INIT: Once = Once::new();
static TRACKED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn tracked() -> MutexGuard<'static, BTreeSet<i32>> {
    TRACKED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes this process a child subreaper and starts the orphan reaper thread (once).
pub fn init() {
    INIT.call_once(|| {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(r, 0, "prctl(PR_SET_CHILD_SUBREAPER) failed");
        std::thread::Builder::new()
            .name("ckpt-tests-reaper".into())
            .spawn(|| {
                loop {
                    reap_orphans();
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
            .expect("spawn reaper thread");
    });
}

/// Reaps every zombie child of this process that nobody is tracking (i.e. orphans that
/// were re-parented to us). Called by the reaper thread; harmless to call directly.
pub fn reap_orphans() {
    let t = tracked();
    let me = std::process::id() as i32;
    for pid in all_pids() {
        if t.contains(&pid) {
            continue;
        }
        if let Some(st) = proc_stat(pid)
            && st.ppid == me
            && st.state == 'Z'
        {
            let mut status = 0;
            // SAFETY: waitpid on a specific zombie child, non-blocking.
            unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        }
    }
}

/// The fields of `/proc/PID/stat` the harness needs.
#[derive(Debug, Clone)]
pub struct ProcStat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
}

/// Parses `/proc/PID/stat`; `None` if the process does not exist.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let mut rest = s[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid,
    })
}

/// Every pid currently in `/proc`.
pub fn all_pids() -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// True if `pid` exists and is neither a zombie nor dead.
pub fn is_alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// Sends SIGKILL to `pid` and waits (up to 10 s) until it is gone or a zombie.
/// Panics if it survives. Use [`crate::Session::kill9`] for a program of a session: it
/// first checks that the pid really belongs to the session.
pub fn kill9(pid: i32) {
    assert!(pid > 0, "refusing to kill pid {pid}");
    // SAFETY: plain kill(2).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_alive(pid) {
        if Instant::now() > deadline {
            panic!(
                "pid {pid} still alive 10 s after SIGKILL: {:?}",
                proc_stat(pid)
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Starts `cmd` as a tracked child. The child gets `PR_SET_PDEATHSIG(SIGKILL)` so that
/// nothing outlives a test thread that dies abruptly. `label` names it in messages;
/// `stderr_path`, if the caller redirected stderr to a file, is shown on failures.
pub fn spawn(cmd: &mut Command, label: &str, stderr_path: Option<&Path>) -> Proc {
    init();
    // SAFETY: only an async-signal-safe prctl runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            Ok(())
        });
    }
    let mut t = tracked();
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {label} ({:?}): {e}", cmd.get_program()));
    t.insert(child.id() as i32);
    drop(t);
    Proc {
        label: label.to_string(),
        child,
        status: None,
        stderr_path: stderr_path.map(Path::to_path_buf),
    }
}

/// A child process of the test that is always reaped: dropping a `Proc` that has not
/// exited kills it (SIGKILL) and waits for it.
pub struct Proc {
    label: String,
    child: Child,
    status: Option<ExitStatus>,
    stderr_path: Option<PathBuf>,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The file its stderr goes to, if known.
    pub fn stderr_path(&self) -> Option<&Path> {
        self.stderr_path.as_deref()
    }

    /// Last lines of its stderr file (empty if unknown).
    pub fn stderr_tail(&self) -> String {
        self.stderr_path
            .as_deref()
            .map(|p| crate::util::tail(p, 20))
            .unwrap_or_default()
    }

    /// Its exit status if it has exited (non-blocking).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Ok(Some(st)) = self.child.try_wait()
        {
            self.status = Some(st);
            tracked().remove(&self.pid());
        }
        self.status
    }

    /// Waits up to `timeout` for it to exit; `Err` (with what was seen) on timeout.
    pub fn try_wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Ok(st);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} (pid {}) still running after {timeout:?} (state {:?}); stderr tail:\n{}",
                    self.label,
                    self.pid(),
                    proc_stat(self.pid()).map(|s| s.state),
                    self.stderr_tail()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits up to `timeout` for it to exit; panics with its stderr tail on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.try_wait_exit(timeout)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// SIGKILLs it (if still running) and reaps it.
    pub fn kill9(&mut self) -> ExitStatus {
        if self.try_wait().is_none() {
            // SAFETY: our own, not yet reaped child: the pid cannot have been reused.
            unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        }
        self.wait_exit(Duration::from_secs(10))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            // SAFETY: as in kill9.
            unsafe { libc::kill(self.pid(), libc::SIGKILL) };
            if let Err(e) = self.try_wait_exit(Duration::from_secs(10)) {
                eprintln!("ckpt-tests: cannot reap {e}");
            }
        }
    }
}

/// Waits up to `timeout` for `p` to exit; panics on timeout (see [`Proc::wait_exit`]).
pub fn wait_exit(p: &mut Proc, timeout: Duration) -> ExitStatus {
    p.wait_exit(timeout)
}

/// Describes an exit status: "exit code 3" or "killed by signal 9".
pub fn describe_status(st: &ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => format!("{st}"),
    }
}

/// The result of a finished command run by [`run`].
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub label: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Non-empty, trimmed stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` -> {}\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.label,
            describe_status(&self.status),
            printable(&self.stdout),
            printable(&self.stderr)
        )
    }
}

/// `s` with control characters other than newline and tab escaped (`\0`, `\u{1b}`), so
/// that a garbled message stays readable in a test log.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn capture_dir() -> PathBuf {
    let d = std::env::temp_dir().join("ckpt-tests-capture");
    std::fs::create_dir_all(&d).expect("create capture dir");
    d
}

/// Runs `cmd` to completion with stdin from /dev/null and stdout/stderr captured (through
/// files, so a daemon inheriting them cannot make us hang). After `timeout` the command is
/// killed and `Err` describes what it had printed. Never panics on the command's behavior.
pub fn try_run(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = capture_dir();
    let me = std::process::id();
    let out_p = dir.join(format!("{me}-{n}.out"));
    let err_p = dir.join(format!("{me}-{n}.err"));
    let label = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (out_f, err_f) = match (File::create(&out_p), File::create(&err_p)) {
        (Ok(o), Ok(e)) => (o, e),
        _ => return Err(format!("cannot create capture files in {}", dir.display())),
    };
    cmd.stdin(Stdio::null()).stdout(out_f).stderr(err_f);
    let mut p = spawn(&mut cmd, &label, Some(&err_p));
    let res = p.try_wait_exit(timeout);
    let stdout = std::fs::read_to_string(&out_p).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_p).unwrap_or_default();
    let _ = std::fs::remove_file(&out_p);
    let _ = std::fs::remove_file(&err_p);
    match res {
        Ok(status) => Ok(Output {
            label,
            status,
            stdout,
            stderr,
        }),
        Err(_) => {
            p.kill9();
            Err(format!(
                "`{label}` did not finish within {timeout:?} (killed)\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}"
            ))
        }
    }
}

/// [`try_run`], panicking on timeout.
pub fn run(cmd: Command, timeout: Duration) -> Output {
    try_run(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}
