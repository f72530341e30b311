//! The deterministic test programs (sources in `tests/progs/`, `src/bin/rust_counter.rs`)
//! and how to run them. Each prints one line per step with a running checksum, flushes
//! every line, and prints the same bytes on every run.

use std::path::PathBuf;
use std::process::Command;

/// A test program: what to execute and how many stdout lines a full run prints.
#[derive(Debug, Clone)]
pub struct Prog {
    /// Short name, used for session and file names.
    pub name: String,
    /// Absolute path of the executable (an interpreter for scripts).
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Lines a complete run prints on stdout.
    pub lines: usize,
}

fn progs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("progs")
}

impl Prog {
    /// `progs/counter.c`: heap, mmap, stack and TLS mutation; 300 steps in ~4.7 s.
    pub fn counter_c() -> Prog {
        Prog {
            name: "counter_c".into(),
            program: env!("CKPT_PROG_COUNTER").into(),
            args: vec![],
            lines: 300,
        }
    }

    /// `progs/sleeper.c`: nanosleep/sleep/usleep must never return early; 30 steps, ~12 s.
    pub fn sleeper_c() -> Prog {
        Prog {
            name: "sleeper_c".into(),
            program: env!("CKPT_PROG_SLEEPER").into(),
            args: vec![],
            lines: 30,
        }
    }

    /// `src/bin/rust_counter.rs`; pass `env!("CARGO_BIN_EXE_rust_counter")` (only
    /// integration tests of this crate see that variable).
    pub fn rust_counter(exe: &str) -> Prog {
        Prog {
            name: "rust_counter".into(),
            program: exe.into(),
            args: vec![],
            lines: 300,
        }
    }

    /// `progs/counter.py` under `python3`.
    pub fn python_counter() -> Prog {
        Prog {
            name: "python_counter".into(),
            program: crate::util::find_in_path("python3"),
            args: vec![progs_dir().join("counter.py").to_string_lossy().into()],
            lines: 300,
        }
    }

    /// `progs/counter.sh` under `bash` (builtins only, no child processes).
    pub fn bash_counter() -> Prog {
        Prog {
            name: "bash_counter".into(),
            program: crate::util::find_in_path("bash"),
            args: vec![progs_dir().join("counter.sh").to_string_lossy().into()],
            lines: 300,
        }
    }

    /// Every program, for tests that loop over them (the Rust one needs its path).
    pub fn all(rust_exe: &str) -> Vec<Prog> {
        vec![
            Prog::counter_c(),
            Prog::rust_counter(rust_exe),
            Prog::python_counter(),
            Prog::bash_counter(),
            Prog::sleeper_c(),
        ]
    }

    /// A native (no ckpt) command line for it.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        c
    }
}
