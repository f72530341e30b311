//! Single-process checkpoint/restart of each test program (C, Rust, Python, bash, and a
//! C program that sleeps): launch under ckpt, checkpoint twice while it runs, SIGKILL it,
//! restart from the images, checkpoint the restarted process, SIGKILL it, restart again,
//! let it finish, and require the exact bytes of a native run.

use ckpt_tests::{Prog, scenario::scenario};

#[test]
fn c_counter() {
    scenario(Prog::counter_c());
}

#[test]
fn rust_counter() {
    scenario(Prog::rust_counter(env!("CARGO_BIN_EXE_rust_counter")));
}

#[test]
fn python_counter() {
    scenario(Prog::python_counter());
}

#[test]
fn bash_counter() {
    scenario(Prog::bash_counter());
}

#[test]
fn c_sleeper() {
    scenario(Prog::sleeper_c());
}
