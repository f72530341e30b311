//! Multi-threaded programs through the standard cycle (launch, checkpoint, checkpoint + kill,
//! restart, checkpoint + kill, restart, compare with a native run): pthreads with a mutex,
//! condvar, barrier, a reader blocked in read() and sched_getcpu() checks; Rust std threads
//! with channels; rayon; Python's ThreadPoolExecutor; OpenMP; and a program that raises,
//! pthread_kills and finally aborts after its restarts.

use ckpt_tests::Prog;
use ckpt_tests::scenario::{scenario, scenario_ending};
use std::path::PathBuf;

fn prog(name: &str, program: &str, args: &[&str], lines: usize) -> Prog {
    Prog {
        name: name.into(),
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        lines,
    }
}

#[test]
fn pthreads_token_ring_barrier_pipe_rseq() {
    scenario(prog("threads_c", env!("CKPT_PROG_THREADS"), &[], 301));
}

#[test]
fn rust_std_threads_and_channels() {
    scenario(prog(
        "rust_threads",
        env!("CARGO_BIN_EXE_rust_threads"),
        &[],
        301,
    ));
}

#[test]
fn rust_rayon() {
    scenario(prog(
        "rust_rayon",
        env!("CARGO_BIN_EXE_rust_rayon"),
        &[],
        301,
    ));
}

#[test]
fn python_thread_pool() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("progs/threadpool.py");
    let python = ckpt_tests::util::find_in_path("python3");
    scenario(Prog {
        name: "python_threadpool".into(),
        program: python,
        args: vec![script.to_string_lossy().into()],
        lines: 301,
    });
}

#[test]
fn openmp_parallel_loop() {
    scenario(prog("omp_loop", env!("CKPT_PROG_OMP_LOOP"), &[], 301));
}

#[test]
fn raise_pthread_kill_and_abort_after_restart() {
    scenario_ending(
        prog("abort_after", env!("CKPT_PROG_ABORT_AFTER"), &[], 202),
        Some(libc::SIGABRT),
    );
}

#[test]
fn mutexes_held_across_restart_unlock_and_ids_stay() {
    scenario(prog("mutex_held", env!("CKPT_PROG_MUTEX_HELD"), &[], 254));
}

#[test]
fn threads_born_and_dying_during_checkpoints() {
    scenario(prog("churn", env!("CKPT_PROG_CHURN"), &[], 300));
}

#[test]
fn timerfd_keeps_clock_interval_remaining_time_and_flags() {
    scenario(prog("timerfd", env!("CKPT_PROG_TIMERFD"), &[], 250));
}
