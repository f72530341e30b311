//! The fallback restart path (no user namespaces: new pids and tids, glibc's cached tid set to
//! the new kernel tid) through the standard cycle, for a single-threaded and a multi-threaded
//! program. `CKPT_NO_NAMESPACES=1` makes ckpt-restart take it, as where user namespaces are off.

use ckpt_tests::Prog;
use ckpt_tests::scenario::scenario;

fn without_namespaces() {
    // SAFETY: set before any process is started; the harness reads no environment concurrently.
    unsafe { std::env::set_var("CKPT_NO_NAMESPACES", "1") };
}

#[test]
fn counter_with_new_ids() {
    without_namespaces();
    scenario(Prog::counter_c());
}

#[test]
fn threads_with_new_ids() {
    without_namespaces();
    scenario(Prog {
        name: "threads_new_ids".into(),
        program: env!("CKPT_PROG_THREADS").into(),
        args: vec![],
        lines: 301,
    });
}

/// A child forked after a restart without namespaces gets a kernel pid that is a live
/// process's vpid (set up with `ns_last_pid` inside an unprivileged user+pid namespace that
/// holds the whole run): the coordinator gives it another vpid, and `fork`'s return value,
/// its `getpid()`, `kill` and `waitpid` must all name *it*, not the process whose vpid its
/// kernel pid is. Skipped where unprivileged user namespaces are off.
#[test]
fn fork_colliding_with_a_vpid() {
    use ckpt_tests::{Session, bin};
    use std::time::Duration;
    without_namespaces();
    let probe = std::process::Command::new("unshare")
        .args(["-Urpf", "--mount-proc", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: unshare -Urpf does not work here");
        return;
    }
    let s = Session::new("pid_collide");
    let dir = s.path("run");
    std::fs::create_dir_all(&dir).unwrap();
    let out = s.path("prog.out");
    let script = format!(
        r#"set -u
launch={launch}; restart={restart}; command={command}; prog={prog}
coord="--coord-host 127.0.0.1 --coord-port {port}"
dir={dir}; out={out}; ckdir={ckdir}
waitfor() {{ for i in $(seq 1 600); do grep -q "$1" "$2" 2>/dev/null && return 0; sleep 0.05; done; echo "timeout waiting for $1 in $2" >&2; exit 70; }}
$launch $coord --ckpt-dir "$ckdir" "$prog" "$dir" > "$out" &
p=$!
waitfor '^A ' "$out"
a=$(sed -n 's/^A //p' "$out")
imgs=$(timeout 30 $command $coord --checkpoint) || {{ echo "checkpoint failed" >&2; exit 71; }}
kill -9 "$p" "$a"; wait "$p" 2>/dev/null
CKPT_NO_NAMESPACES=1 $restart $coord --ckpt-dir "$ckdir" "$ckdir"/*.img >> "$out" &
r=$!
for i in $(seq 1 600); do
  n=$(timeout 10 $command $coord --list 2>/dev/null | grep -c pid_collide)
  [ "$n" -ge 2 ] && break; sleep 0.05
done
# The next process created in this namespace gets A's vpid as its kernel pid; bash builtins
# only from here (no fork) until the program forks B.
echo $((a - 1)) > /proc/sys/kernel/ns_last_pid
: > "$dir/go"
wait "$r"; echo "restart status $?" >> "$out"
echo "a $a" >> "$out"
"#,
        launch = bin("ckpt-launch").display(),
        restart = bin("ckpt-restart").display(),
        command = bin("ckpt-command").display(),
        prog = env!("CKPT_PROG_PID_COLLIDE"),
        port = s.port(),
        dir = dir.display(),
        out = out.display(),
        ckdir = s.ckpt_dir().display(),
    );
    let script_path = s.path("collide.sh");
    std::fs::write(&script_path, script).unwrap();
    let mut cmd = s.command("unshare");
    cmd.args(["-Urpf", "--mount-proc", "bash"])
        .arg(&script_path);
    let mut p = s.spawn_to(cmd, "collide", &s.path("script.stdout"));
    let st = p.wait_exit(Duration::from_secs(120));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        st.success(),
        "script ended with {st:?}; stderr:\n{}\noutput:\n{text}\n{}",
        p.stderr_tail(),
        s.diagnostics()
    );
    let a = text
        .lines()
        .find_map(|l| l.strip_prefix("a "))
        .unwrap_or_else(|| panic!("no A pid in {text:?}"));
    let got: Vec<&str> = text
        .lines()
        .filter(|l| {
            let a_line = |p: &str| l.strip_prefix(p).is_some_and(|v| v.parse::<i32>().is_ok());
            !a_line("A ") && !a_line("a ")
        })
        .collect();
    assert_eq!(
        got,
        [
            format!("B kernel {a}").as_str(),
            "B fork==getpid 1",
            "B waited 1 status 4",
            "A waited 1 status 3",
            "restart status 0",
        ],
        "output:\n{text}\n{}",
        s.diagnostics()
    );
}
