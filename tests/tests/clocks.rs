//! Clocks across a restart (docs/time.md): in a namespace restart `CLOCK_MONOTONIC` and
//! `CLOCK_BOOTTIME` go on from their checkpoint values (a time namespace), so an event loop
//! that measures time with them sees no jump however long the computation was down.

use std::path::PathBuf;
use std::time::Duration;

use ckpt_tests::{Prog, Session, assert_same_output, describe_status};

#[test]
fn monotonic_and_boottime_do_not_jump_over_the_downtime() {
    let prog = Prog {
        name: "clock_gap".into(),
        program: PathBuf::from(env!("CKPT_PROG_CLOCK_GAP")),
        args: vec!["40".into()],
        lines: 40,
    };
    let s = Session::new("clock_gap");
    let out = s.path("ckpt.out");
    let mut app = s.launch(&prog, &out);
    s.wait_lines(&out, 8, Duration::from_secs(30), &mut app);
    let imgs = s.checkpoint();
    s.kill_computation(&mut app);
    // (Started after the kill, which takes every process of the session.)
    let native_out = s.path("native.out");
    let mut native = s.run_native(&prog, &native_out);
    // The computation is down for 2.5 s.
    std::thread::sleep(Duration::from_millis(2500));
    let mut r = s.restart(&imgs, &s.path("restart.stdout"));
    let st = r.wait_exit(Duration::from_secs(60));
    assert!(
        st.success(),
        "restart: {}\n{}",
        describe_status(&st),
        r.stderr_tail()
    );
    assert!(native.wait_exit(Duration::from_secs(60)).success());
    assert_same_output(&native_out, &out);
}
