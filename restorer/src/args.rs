//! Command line: `ckpt-restorer FD HOST PORT CKPT_DIR [OUTER_PID [OUTER_PROC_FD]]`, read from the kernel-made initial stack
//! and copied into the zone's [`RestartArgs`] (the initial stack is unmapped later).
//!
//! Runs with no libc, no TLS, no allocator; never keeps a pointer into the initial stack.

use crate::msg::{Msg, fatal};
use crate::raw::RestartArgs;

const USAGE: &[u8] = b"usage: ckpt-restorer FD HOST PORT CKPT_DIR [OUTER_PID [OUTER_PROC_FD]]";

/// Parse argv at `sp` (pointer to argc) into `out`; returns the image fd.
///
/// # Safety
/// `sp` must be the initial stack pointer the kernel handed to `_start`.
pub unsafe fn parse(sp: *const u64, out: &mut RestartArgs) -> i32 {
    // SAFETY: the kernel's initial stack starts with argc followed by argc argv pointers.
    let argc = unsafe { *sp } as usize;
    if !(5..=7).contains(&argc) {
        fatal(USAGE);
    }
    // SAFETY: argv[1..5] are NUL-terminated strings placed by the kernel.
    let arg = |i: usize| unsafe { cstr(*sp.add(1 + i) as *const u8) };

    let fd = number(arg(1), b"FD", i32::MAX as u64) as i32;

    let host = arg(2);
    if host.is_empty() || host.len() >= out.coord_host.len() {
        Msg::new()
            .s(b"HOST must be 1 to ")
            .u(out.coord_host.len() as u64 - 1)
            .s(b" bytes")
            .fail();
    }
    out.coord_host[..host.len()].copy_from_slice(host);

    out.coord_port = number(arg(3), b"PORT", u16::MAX as u64) as u16;

    let dir = arg(4);
    if dir.len() >= out.ckpt_dir.len() {
        Msg::new()
            .s(b"CKPT_DIR longer than ")
            .u(out.ckpt_dir.len() as u64 - 1)
            .s(b" bytes")
            .fail();
    }
    out.ckpt_dir[..dir.len()].copy_from_slice(dir);
    if argc >= 6 {
        out.outer_pid = number(arg(5), b"OUTER_PID", i32::MAX as u64) as u32;
    }
    if argc == 7 {
        out.outer_proc = number(arg(6), b"OUTER_PROC_FD", i32::MAX as u64) as u32;
    }
    fd
}

/// # Safety
/// `p` must point to a NUL-terminated string that outlives the returned slice's use.
unsafe fn cstr<'a>(p: *const u8) -> &'a [u8] {
    // SAFETY: the caller guarantees termination.
    unsafe { core::slice::from_raw_parts(p, crate::sys::strlen(p)) }
}

fn number(s: &[u8], what: &[u8], max: u64) -> u64 {
    let mut v: u64 = 0;
    if s.is_empty() || s.len() > 10 {
        Msg::new()
            .s(b"bad ")
            .s(what)
            .s(b" '")
            .s(s)
            .s(b"'; ")
            .s(USAGE)
            .fail();
    }
    for &c in s {
        if !c.is_ascii_digit() {
            Msg::new()
                .s(b"bad ")
                .s(what)
                .s(b" '")
                .s(s)
                .s(b"'; ")
                .s(USAGE)
                .fail();
        }
        v = v * 10 + (c - b'0') as u64;
    }
    if v > max {
        Msg::new().s(what).s(b" out of range: ").s(s).fail();
    }
    v
}
