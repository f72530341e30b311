//! A terminal for end-to-end tests: a pty pair whose slave becomes the controlling terminal
//! and stdin/stdout/stderr of a command (as if a user ran it in a terminal window), and whose
//! master the test reads (a background thread collects everything) and writes (keys, ^C).
//!
//! Every wait has a deadline and panics with what the terminal showed.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::procs::{POLL, Proc, spawn};

/// One terminal. Dropping it stops the reader thread and closes the master.
pub struct Term {
    master: Arc<OwnedFd>,
    slave: Option<OwnedFd>,
    seen: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Term {
    /// A new pty pair with window size `rows` x `cols`.
    pub fn new(rows: u16, cols: u16) -> Term {
        let (mut m, mut s) = (-1, -1);
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty fills two fds; name and termios may be null.
        let r =
            unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: fresh fds we own; close-on-exec so other children do not inherit them.
        let (master, slave) = unsafe {
            libc::fcntl(m, libc::F_SETFD, libc::FD_CLOEXEC);
            libc::fcntl(s, libc::F_SETFD, libc::FD_CLOEXEC);
            (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s))
        };
        let master = Arc::new(master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (master, seen, stop) = (master.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let mut p = libc::pollfd {
                        fd: master.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: poll on one valid pollfd, 100 ms.
                    if unsafe { libc::poll(&mut p, 1, 100) } <= 0 {
                        continue;
                    }
                    // SAFETY: reading into a local buffer.
                    let n = unsafe {
                        libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                    };
                    if n > 0 {
                        seen.lock().unwrap().extend_from_slice(&buf[..n as usize]);
                    } else {
                        // EIO: no slave open any more; wait for a new one or the stop.
                        std::thread::sleep(POLL);
                    }
                }
            })
        };
        Term {
            master,
            slave: Some(slave),
            seen,
            stop,
            reader: Some(reader),
        }
    }

    /// Clears `lflag` bits of the terminal's attributes (as a user's `stty -echo` would).
    pub fn clear_lflag(&self, bits: libc::tcflag_t) {
        // SAFETY: tcgetattr/tcsetattr on our master (they act on the pair's attributes).
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(
                libc::tcgetattr(self.master.as_raw_fd(), &mut t),
                0,
                "tcgetattr"
            );
            t.c_lflag &= !bits;
            assert_eq!(
                libc::tcsetattr(self.master.as_raw_fd(), libc::TCSANOW, &t),
                0,
                "tcsetattr"
            );
        }
    }

    /// Starts `cmd` in a new session whose controlling terminal is this pty, with the slave
    /// as its stdin, stdout and stderr. The test's copy of the slave is closed afterwards.
    pub fn spawn(&mut self, mut cmd: Command, label: &str) -> Proc {
        let slave = self.slave.take().expect("one command per terminal");
        let dup = |f: &OwnedFd| Stdio::from(f.try_clone().expect("dup slave"));
        cmd.stdin(dup(&slave))
            .stdout(dup(&slave))
            .stderr(dup(&slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let p = spawn(&mut cmd, label, None);
        drop(slave);
        p
    }

    /// Everything the terminal showed so far, `\r` removed.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap())
            .replace('\r', "")
            .to_string()
    }

    /// Types `bytes` on the keyboard.
    pub fn write(&self, bytes: &[u8]) {
        // SAFETY: writing from a valid slice to our master.
        let n = unsafe { libc::write(self.master.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        assert_eq!(n, bytes.len() as isize, "write to the pty master");
    }

    /// Waits until `pred` holds for the text shown (at most `timeout`); returns the text.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.text();
            if pred(&t) {
                return t;
            }
            if Instant::now() > deadline {
                let tail: Vec<&str> = t.lines().rev().take(15).collect();
                panic!(
                    "terminal: timed out after {timeout:?} waiting for {what}; last lines:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
