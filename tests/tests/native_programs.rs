//! The test programs themselves, without ckpt: each runs to completion, prints the
//! expected number of lines, is deterministic (two concurrent runs print the same bytes)
//! and is paced so a test can checkpoint it mid-run. A failure here is a broken test
//! program, not a ckpt bug.

use std::time::{Duration, Instant};

use ckpt_tests::{Prog, assert_same_output, count_lines, describe_status, procs};

fn check(prog: Prog, min: Duration, max: Duration) {
    let dir = std::env::temp_dir().join(format!(
        "ckpt-tests-native-{}-{}",
        prog.name,
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let start = Instant::now();
    let mut runs: Vec<_> = (0..2)
        .map(|i| {
            let out = dir.join(format!("run{i}.out"));
            let mut cmd = prog.command();
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::fs::File::create(&out).unwrap());
            (procs::spawn(&mut cmd, &prog.name, None), out)
        })
        .collect();
    for (p, _) in &mut runs {
        let st = p.wait_exit(Duration::from_secs(120));
        assert!(
            st.success(),
            "{} failed: {}",
            prog.name,
            describe_status(&st)
        );
    }
    let took = start.elapsed();
    let (a, b) = (&runs[0].1, &runs[1].1);
    assert_eq!(count_lines(a), prog.lines, "{} line count", prog.name);
    assert_same_output(a, b);
    let text = std::fs::read_to_string(a).unwrap();
    for (i, line) in text.lines().enumerate() {
        assert!(
            line.starts_with(&format!("step {} ", i + 1)),
            "{} line {}: {line:?}",
            prog.name,
            i + 1
        );
    }
    if prog.name == "sleeper_c" {
        assert!(
            text.lines().all(|l| l.ends_with(" ok")),
            "sleeper reported a short sleep natively:\n{text}"
        );
    }
    assert!(
        took >= min && took <= max,
        "{} took {took:?}, want {min:?}..{max:?}",
        prog.name
    );
    eprintln!("{}: {} lines in {took:?}", prog.name, prog.lines);
    std::fs::remove_dir_all(&dir).unwrap();
}

// Loose: CPU-paced programs run faster on an idle machine; 1 s still leaves room to
// checkpoint mid-run.
const MIN: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(20);

#[test]
fn c_counter() {
    check(Prog::counter_c(), MIN, MAX);
}

#[test]
fn rust_counter() {
    check(
        Prog::rust_counter(env!("CARGO_BIN_EXE_rust_counter")),
        MIN,
        MAX,
    );
}

#[test]
fn python_counter() {
    check(Prog::python_counter(), MIN, MAX);
}

#[test]
fn bash_counter() {
    check(Prog::bash_counter(), MIN, MAX);
}

#[test]
fn c_sleeper() {
    check(
        Prog::sleeper_c(),
        Duration::from_secs(10),
        Duration::from_secs(30),
    );
}
