//! signalfd: a signal fd comes back on its fd number with its signal mask, its `O_NONBLOCK`
//! status flag and its close-on-exec flag.
//!
//! The mask is read from `/proc/self/fdinfo/N` (`sigmask:`), so a mask changed with a second
//! `signalfd(fd, ...)` call is seen too. A signalfd holds no signals itself: the signals it
//! would return are pending in the process or thread, and the core (thread-directed) and the
//! signals plugin (process-directed) save those and queue them again at restart, so the
//! restarted program reads them from the new signalfd as it would have from the old one.
//! Nothing is read from the signalfd at checkpoint (that would dequeue a signal).
//!
//! Runs with user threads frozen: syscalls, /proc reads and Rust allocation only; no glibc
//! malloc, no stdio, no locks.

use crate::api::{CkptContext, Plugin, RestartContext};
use crate::fdinfo;
use ckpt_format::image::{FdInfo, FdKind};

/// What `/proc/self/fd/N` shows for a signalfd.
pub const SIGNALFD_LINK: &str = "anon_inode:[signalfd]";

pub fn is_signalfd(f: &FdInfo) -> bool {
    f.kind == FdKind::Other && f.path == SIGNALFD_LINK
}

struct Saved {
    fd: i32,
    /// Bit `n - 1` for signal `n`, as the kernel prints it (`None`: unknown).
    mask: Option<u64>,
    nonblock: bool,
    cloexec: bool,
}

#[derive(Default)]
pub struct SignalFds {
    saved: Vec<Saved>,
}

impl Plugin for SignalFds {
    fn name(&self) -> &'static str {
        "signalfd"
    }

    fn checkpoint(&mut self, ctx: &mut CkptContext) -> Result<(), String> {
        self.saved.clear();
        for f in ctx.header.fds.iter().filter(|f| is_signalfd(f)) {
            let text = fdinfo::read(f.fd);
            let mask = fdinfo::field(&text, "sigmask:").and_then(fdinfo::hex);
            if mask.is_none() {
                ctx.warnings.push(format!(
                    "signalfd fd {}: no sigmask in /proc/self/fdinfo; it will be /dev/null \
                     after restart",
                    f.fd
                ));
            }
            self.saved.push(Saved {
                fd: f.fd,
                mask,
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
                    .push(format!("signalfd: {e}; fd {} is /dev/null now", s.fd));
                fdinfo::dev_null_on(s.fd, s.cloexec)?;
            }
        }
        Ok(())
    }
}

fn restore(s: &Saved) -> Result<(), String> {
    let mut flags = libc::SFD_CLOEXEC;
    if s.nonblock {
        flags |= libc::SFD_NONBLOCK;
    }
    let Some(mask) = s.mask else {
        return Err(format!("fd {}: its signal mask was not saved", s.fd));
    };
    // The raw syscall takes the kernel's 8-byte sigset (glibc's sigset_t is 128 bytes, and
    // building one with sigaddset would refuse glibc's reserved signal numbers).
    // SAFETY: signalfd4(-1, &mask, sizeof mask, flags) creates a new signalfd from a
    // kernel-sized sigset that lives on our stack for the duration of the call.
    let nfd = unsafe {
        libc::syscall(
            libc::SYS_signalfd4,
            -1,
            &mask as *const u64,
            std::mem::size_of::<u64>(),
            flags,
        )
    } as i32;
    if nfd < 0 {
        return Err(format!("fd {}: signalfd4: {}", s.fd, fdinfo::errno()));
    }
    fdinfo::put_on(nfd, s.fd, s.cloexec)
}
