//! timerfd: a timer file descriptor comes back on its fd number with its clock, its
//! `O_NONBLOCK`/close-on-exec flags, its interval and its remaining time (the time the program
//! was down does not count, as for every other timer). Expirations that were counted but not
//! yet read at checkpoint time come back as one expiration that is due at once (the count
//! itself cannot be set from user space).
//!
//! Runs with user threads frozen: syscalls and /proc reads only.

use crate::api::{CkptContext, Plugin, RestartContext};
use ckpt_format::image::{FdInfo, FdKind};

/// What `/proc/self/fd/N` shows for a timerfd.
pub const TIMERFD_LINK: &str = "anon_inode:[timerfd]";

pub fn is_timerfd(f: &FdInfo) -> bool {
    f.kind == FdKind::Other && f.path == TIMERFD_LINK
}

struct Saved {
    fd: i32,
    clock: i32,
    flags: i32,
    cloexec: bool,
    value: libc::itimerspec,
    ticks: u64,
}

#[derive(Default)]
pub struct TimerFds {
    saved: Vec<Saved>,
}

/// `clockid:` and `ticks:` from /proc/self/fdinfo/N.
fn fdinfo(fd: i32) -> (i32, u64) {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    (
        field("clockid:").unwrap_or(libc::CLOCK_MONOTONIC as u64) as i32,
        field("ticks:").unwrap_or(0),
    )
}

impl Plugin for TimerFds {
    fn name(&self) -> &'static str {
        "timerfd"
    }

    fn checkpoint(&mut self, ctx: &mut CkptContext) -> Result<(), String> {
        self.saved.clear();
        for f in ctx.header.fds.iter().filter(|f| is_timerfd(f)) {
            // SAFETY: a zeroed itimerspec is valid; timerfd_gettime fills it.
            let mut value: libc::itimerspec = unsafe { std::mem::zeroed() };
            // SAFETY: querying a timerfd we own.
            if unsafe { libc::timerfd_gettime(f.fd, &mut value) } != 0 {
                return Err(format!(
                    "fd {}: timerfd_gettime: {}",
                    f.fd,
                    std::io::Error::last_os_error()
                ));
            }
            let (clock, ticks) = fdinfo(f.fd);
            self.saved.push(Saved {
                fd: f.fd,
                clock,
                flags: f.flags,
                cloexec: f.cloexec,
                value,
                ticks,
            });
        }
        Ok(())
    }

    fn restart(&mut self, _ctx: &mut RestartContext) -> Result<(), String> {
        for s in &self.saved {
            let mut tflags = libc::TFD_CLOEXEC;
            if s.flags & libc::O_NONBLOCK != 0 {
                tflags |= libc::TFD_NONBLOCK;
            }
            // SAFETY: creating a new timerfd.
            let nfd = unsafe { libc::timerfd_create(s.clock, tflags) };
            if nfd < 0 {
                return Err(format!(
                    "fd {}: timerfd_create: {}",
                    s.fd,
                    std::io::Error::last_os_error()
                ));
            }
            let mut value = s.value;
            if s.ticks > 0 {
                // Unread expirations: due now.
                value.it_value = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 1,
                };
            }
            // SAFETY: arming our new timerfd with a relative time.
            if unsafe { libc::timerfd_settime(nfd, 0, &value, std::ptr::null_mut()) } != 0 {
                return Err(format!(
                    "fd {}: timerfd_settime: {}",
                    s.fd,
                    std::io::Error::last_os_error()
                ));
            }
            if nfd != s.fd {
                let fl = if s.cloexec { libc::O_CLOEXEC } else { 0 };
                // SAFETY: the target number is free (the files plugin skipped it).
                if unsafe { libc::dup3(nfd, s.fd, fl) } < 0 {
                    return Err(format!(
                        "fd {}: dup3: {}",
                        s.fd,
                        std::io::Error::last_os_error()
                    ));
                }
                // SAFETY: closing the temporary fd.
                unsafe { libc::close(nfd) };
            } else if !s.cloexec {
                // SAFETY: clearing FD_CLOEXEC on our fd.
                unsafe { libc::fcntl(s.fd, libc::F_SETFD, 0) };
            }
        }
        Ok(())
    }
}
