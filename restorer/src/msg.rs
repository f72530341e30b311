//! Diagnostics and exit codes: builds one `ckpt-restorer: <what>` line in a fixed buffer on the
//! stack and exits with the code for the current phase (3 while nothing has been destroyed yet,
//! 4 once the address space is being replaced).
//!
//! Runs with no libc, no TLS, no allocator; must never format with `core::fmt` (size, and it may
//! call into code we cannot vouch for) and never write more than one line per failure.

use crate::sys;
use core::sync::atomic::{AtomicI32, Ordering};

/// Exit code for a refused image: the caller's process is still intact.
pub const EXIT_REFUSED: i32 = 3;
/// Exit code once the old address space is gone: nothing can be recovered.
pub const EXIT_BROKEN: i32 = 4;

/// Not thread-local: a plain `.bss` word (the restorer has exactly one thread).
static EXIT_CODE: AtomicI32 = AtomicI32::new(EXIT_REFUSED);

/// From here on every failure exits with [`EXIT_BROKEN`].
pub fn point_of_no_return() {
    EXIT_CODE.store(EXIT_BROKEN, Ordering::Relaxed);
}

pub fn exit_code() -> i32 {
    EXIT_CODE.load(Ordering::Relaxed)
}

const PREFIX: &[u8] = b"ckpt-restorer: ";
const CAP: usize = 4608;

/// One diagnostic line under construction (truncated if it would not fit).
pub struct Msg {
    buf: [u8; CAP],
    len: usize,
}

impl Msg {
    pub fn new() -> Msg {
        let mut m = Msg {
            buf: [0; CAP],
            len: 0,
        };
        m.s(PREFIX);
        m
    }

    /// Append bytes.
    pub fn s(&mut self, b: &[u8]) -> &mut Msg {
        for &c in b {
            if self.len + 1 >= CAP {
                break; // keep one byte for the newline
            }
            self.buf[self.len] = c;
            self.len += 1;
        }
        self
    }

    /// Append an unsigned decimal.
    pub fn u(&mut self, mut v: u64) -> &mut Msg {
        let mut d = [0u8; 20];
        let mut i = d.len();
        loop {
            i -= 1;
            d[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.s(&d[i..])
    }

    /// Append a signed decimal.
    pub fn i(&mut self, v: i64) -> &mut Msg {
        if v < 0 {
            self.s(b"-");
        }
        self.u(v.unsigned_abs())
    }

    /// Append `0x` and lowercase hex.
    pub fn x(&mut self, mut v: u64) -> &mut Msg {
        let mut d = [0u8; 16];
        let mut i = d.len();
        loop {
            i -= 1;
            d[i] = b"0123456789abcdef"[(v & 0xf) as usize];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.s(b"0x").s(&d[i..])
    }

    /// Append `start-end` in hex.
    pub fn range(&mut self, start: u64, end: u64) -> &mut Msg {
        self.x(start).s(b"-").x(end)
    }

    /// Append ": errno N" for a negative syscall return.
    pub fn errno(&mut self, ret: isize) -> &mut Msg {
        self.s(b": errno ").u(ret.unsigned_abs() as u64)
    }

    /// Print the line to stderr (one write) and exit with the phase's code.
    pub fn fail(&mut self) -> ! {
        self.buf[self.len] = b'\n';
        sys::write(2, &self.buf[..self.len + 1]);
        sys::exit_group(exit_code())
    }
}

/// Fail with a fixed text.
pub fn fatal(text: &[u8]) -> ! {
    Msg::new().s(text).fail()
}
