//! Harness for ckpt's end-to-end tests (crate `ckpt-tests`).
//!
//! The tests in `tests/tests/` run real programs (C, Rust, Python, bash; see [`progs`])
//! natively and under `ckpt-launch`, checkpoint them with `ckpt-command`, kill them with
//! SIGKILL, bring them back with `ckpt-restart`, and compare their output byte for byte
//! with the native run.
//!
//! * [`Session`] — a private coordinator (`--port 0 --port-file`), checkpoint dir and
//!   scratch dir per test; `launch`, `checkpoint`, `list_pids`, `kill9`,
//!   `kill_computation`, `restart`, `wait_lines`. Its `Drop` kills everything the test
//!   started and quits the coordinator, so tests can run in parallel and clean up after a
//!   failure.
//! * [`procs`] — tracked children ([`Proc`], killed and reaped on drop), commands with a
//!   deadline ([`run`]), the child-subreaper set-up and the orphan reaper.
//! * [`scenario::scenario`] — the standard launch/checkpoint/kill/restart cycle of one process.
//! * [`tree::tree_scenario`] — the same cycle for a process tree (one image per process,
//!   the whole computation killed, all images restarted with one `ckpt-restart`), and
//!   [`tree::checkpoint_loop_scenario`] (many checkpoints while processes come and go).
//! * [`pty::Term`] — a pty whose slave is the controlling terminal of a command (as in a
//!   terminal window); the test reads and types on the master.
//! * [`util`] — [`wait_for_lines`], output comparison, image checks (0600, `gzip -t`).
//!
//! Rules the harness follows and new tests should too: never sleep-and-hope (poll for an
//! event with a deadline, and on timeout panic with what was seen); never kill a pid that
//! is not verifiably the test's own. The ckpt binaries are looked up in [`bin_dir`]
//! (`$CKPT_BIN_DIR` overrides). Set `CKPT_TEST_KEEP=1` to keep scratch dirs.

pub mod procs;
pub mod progs;
pub mod pty;
pub mod scenario;
pub mod session;
pub mod tree;
pub mod util;

pub use procs::{Output, Proc, describe_status, kill9, run, try_run, wait_exit};
pub use progs::Prog;
pub use session::{ListEntry, Session, bin, bin_dir, parse_list, tagged_pids};
pub use util::{assert_same_output, check_image, check_images, count_lines, wait_for_lines};
