//! eventfd: an event fd comes back on its fd number with its counter, its `EFD_SEMAPHORE`
//! mode, its `O_NONBLOCK` status flag and its close-on-exec flag.
//!
//! At checkpoint the counter is read from `/proc/self/fdinfo/N` (`eventfd-count:`), never with
//! `read(2)`, which would consume it (and wake or starve a writer of the running program).
//! Semaphore mode comes from `eventfd-semaphore:` (recent kernels; it is not in `F_GETFL`); a
//! kernel that does not show it gets the fd back as a plain eventfd (documented in
//! docs/event-fds.md). At restart: `eventfd2(0, flags)`, then one `write(2)` of the saved
//! counter, then the fd is moved to its number. Waiters blocked in `read` at checkpoint time
//! are user threads; they retry after restart like any interrupted read.
//!
//! An eventfd shared by several processes (fork) becomes one eventfd per process after
//! restart (each with the saved counter): sharing is not recreated.
//!
//! Runs with user threads frozen: syscalls, /proc reads and Rust allocation only; no glibc
//! malloc, no stdio, no locks. Must never consume or change the counter at checkpoint.

use crate::api::{CkptContext, Plugin, RestartContext};
use crate::fdinfo;
use ckpt_format::image::{FdInfo, FdKind};

/// What `/proc/self/fd/N` shows for an eventfd.
pub const EVENTFD_LINK: &str = "anon_inode:[eventfd]";

pub fn is_eventfd(f: &FdInfo) -> bool {
    f.kind == FdKind::Other && f.path == EVENTFD_LINK
}

struct Saved {
    fd: i32,
    count: u64,
    semaphore: bool,
    nonblock: bool,
    cloexec: bool,
}

#[derive(Default)]
pub struct EventFds {
    saved: Vec<Saved>,
}

impl Plugin for EventFds {
    fn name(&self) -> &'static str {
        "eventfd"
    }

    fn checkpoint(&mut self, ctx: &mut CkptContext) -> Result<(), String> {
        self.saved.clear();
        for f in ctx.header.fds.iter().filter(|f| is_eventfd(f)) {
            let text = fdinfo::read(f.fd);
            // The kernel prints the count in hexadecimal ("%16llx").
            let count = fdinfo::field(&text, "eventfd-count:").and_then(fdinfo::hex);
            if count.is_none() {
                ctx.warnings.push(format!(
                    "eventfd fd {}: no eventfd-count in /proc/self/fdinfo; it comes back with \
                     a counter of 0",
                    f.fd
                ));
            }
            let count = count.unwrap_or(0);
            let semaphore = fdinfo::field(&text, "eventfd-semaphore:").is_some_and(|v| v == "1");
            self.saved.push(Saved {
                fd: f.fd,
                count,
                semaphore,
                nonblock: f.flags & libc::O_NONBLOCK != 0,
                cloexec: f.cloexec,
            });
        }
        Ok(())
    }

    fn restart(&mut self, ctx: &mut RestartContext) -> Result<(), String> {
        for s in &self.saved {
            if let Err(e) = restore(s) {
                ctx.warnings
                    .push(format!("eventfd: {e}; fd {} is /dev/null now", s.fd));
                fdinfo::dev_null_on(s.fd, s.cloexec)?;
            }
        }
        Ok(())
    }
}

fn restore(s: &Saved) -> Result<(), String> {
    let mut flags = libc::EFD_CLOEXEC;
    if s.semaphore {
        flags |= libc::EFD_SEMAPHORE;
    }
    if s.nonblock {
        flags |= libc::EFD_NONBLOCK;
    }
    // SAFETY: creating a new eventfd.
    let nfd = unsafe { libc::eventfd(0, flags) };
    if nfd < 0 {
        return Err(format!("fd {}: eventfd2: {}", s.fd, fdinfo::errno()));
    }
    if s.count > 0 {
        let v = s.count.to_ne_bytes();
        // SAFETY: writing 8 bytes from a local buffer; a fresh counter of 0 cannot overflow
        // with a value the kernel accepted before, so this never blocks.
        let r = unsafe { libc::write(nfd, v.as_ptr().cast(), v.len()) };
        if r != 8 {
            let e = fdinfo::errno();
            // SAFETY: closing the fd we created.
            unsafe { libc::close(nfd) };
            return Err(format!("fd {}: writing the counter {}: {e}", s.fd, s.count));
        }
    }
    fdinfo::put_on(nfd, s.fd, s.cloexec)
}
