//! Pipes created by the program (not inherited from outside: those are re-inherited by the
//! files plugin). A pipe stays a pipe after restart: same fd numbers for every end, same
//! buffer size (`F_GETPIPE_SZ`), same `O_NONBLOCK`/close-on-exec flags, and the bytes that
//! were in flight, in order, nothing lost or duplicated.
//!
//! At checkpoint the buffered bytes are *peeked* with `tee(2)` into a scratch pipe and read
//! from there, so the running program (on resume) still finds them in its pipe. At restart a
//! new pipe is made, sized, filled with those bytes and put on every saved fd number.
//!
//! This version handles pipes whose read end is in this process (a pipe between threads, or a
//! pipe whose other end another process closed). A pipe shared with another process of the
//! computation needs the process-tree plugin: until then its missing end is closed at restart
//! (readers see the saved bytes then EOF, writers get EPIPE), and the checkpoint says so.
//!
//! Runs with user threads frozen: syscalls only, no glibc malloc.

use crate::api::{CkptContext, Plugin, RestartContext};
use ckpt_format::image::FdKind;

/// One end of a pipe as the program had it.
#[derive(Clone, Debug)]
struct End {
    fd: i32,
    read: bool,
    flags: i32,
    cloexec: bool,
}

#[derive(Clone, Debug)]
struct SavedPipe {
    ino: u64,
    size: i32,
    data: Vec<u8>,
    ends: Vec<End>,
}

#[derive(Default)]
pub struct Pipes {
    saved: Vec<SavedPipe>,
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Copies (without consuming) the bytes buffered in the pipe whose read end is `fd`.
fn peek(fd: i32, size: i32) -> Result<Vec<u8>, String> {
    let mut tmp = [0i32; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(tmp.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(format!("pipe2: {}", errno()));
    }
    let mut out = Vec::new();
    // SAFETY: resizing our own scratch pipe so it can hold a copy of the whole buffer.
    unsafe { libc::fcntl(tmp[1], libc::F_SETPIPE_SZ, size) };
    // SAFETY: tee duplicates up to `size` bytes from fd into tmp[1] without consuming them.
    let n = unsafe { libc::tee(fd, tmp[1], size as usize, libc::SPLICE_F_NONBLOCK) };
    let result = if n < 0 && errno().raw_os_error() != Some(libc::EAGAIN) {
        Err(format!("tee from fd {fd}: {}", errno()))
    } else {
        out.resize(n.max(0) as usize, 0);
        let mut got = 0;
        while got < out.len() {
            // SAFETY: reading into the unfilled tail of `out`.
            let r = unsafe { libc::read(tmp[0], out[got..].as_mut_ptr().cast(), out.len() - got) };
            if r <= 0 {
                break;
            }
            got += r as usize;
        }
        out.truncate(got);
        Ok(out)
    };
    // SAFETY: closing our scratch pipe.
    unsafe {
        libc::close(tmp[0]);
        libc::close(tmp[1]);
    }
    result
}

impl Plugin for Pipes {
    fn name(&self) -> &'static str {
        "pipes"
    }

    fn checkpoint(&mut self, ctx: &mut CkptContext) -> Result<(), String> {
        let mut saved: Vec<SavedPipe> = Vec::new();
        for f in ctx.header.fds.iter() {
            if f.kind != FdKind::Pipe || crate::files::reinherited(f) {
                continue;
            }
            // SAFETY: fstat into a zeroed buffer.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: valid out-pointer.
            if unsafe { libc::fstat(f.fd, &mut st) } != 0 {
                continue;
            }
            let end = End {
                fd: f.fd,
                read: f.flags & libc::O_ACCMODE == libc::O_RDONLY,
                flags: f.flags,
                cloexec: f.cloexec,
            };
            match saved.iter_mut().find(|p| p.ino == st.st_ino) {
                Some(p) => p.ends.push(end),
                None => {
                    // SAFETY: querying the pipe's buffer size.
                    let size = unsafe { libc::fcntl(f.fd, libc::F_GETPIPE_SZ) };
                    saved.push(SavedPipe {
                        ino: st.st_ino,
                        size,
                        data: Vec::new(),
                        ends: vec![end],
                    })
                }
            }
        }
        for p in saved.iter_mut() {
            match p.ends.iter().find(|e| e.read) {
                Some(r) => p.data = peek(r.fd, p.size)?,
                None => ctx.warnings.push(format!(
                    "pipe:[{}] (fd {}): its read end is in another process; the write end will get EPIPE after restart",
                    p.ino, p.ends[0].fd
                )),
            }
            if p.ends.iter().all(|e| e.read) {
                ctx.warnings.push(format!(
                    "pipe:[{}] (fd {}): its write end is in another process; readers will see the saved {} bytes, then EOF, after restart",
                    p.ino,
                    p.ends[0].fd,
                    p.data.len()
                ));
            }
        }
        self.saved = saved;
        Ok(())
    }

    fn restart(&mut self, ctx: &mut RestartContext) -> Result<(), String> {
        // New pipes are made on numbers above every fd the program will have, then moved
        // down, so no temporary fd can land on a number another pipe end still needs.
        let floor = ctx
            .fds
            .iter()
            .map(|f| f.fd)
            .chain(ctx.core_fds.iter().copied())
            .max()
            .unwrap_or(2)
            + 1;
        let mut made: Vec<[i32; 2]> = Vec::new();
        for p in &self.saved {
            let mut fds = [0i32; 2];
            // SAFETY: pipe2 fills two fds.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                return Err(format!("pipe2: {}", errno()));
            }
            let mut high = [0i32; 2];
            for i in 0..2 {
                // SAFETY: duplicating our new fd above `floor`, then closing the original.
                high[i] = unsafe { libc::fcntl(fds[i], libc::F_DUPFD_CLOEXEC, floor) };
                // SAFETY: closing the fd we just duplicated.
                unsafe { libc::close(fds[i]) };
                if high[i] < 0 {
                    return Err(format!("F_DUPFD: {}", errno()));
                }
            }
            // SAFETY: sizing and filling our own new pipe.
            unsafe { libc::fcntl(high[1], libc::F_SETPIPE_SZ, p.size) };
            let mut off = 0;
            while off < p.data.len() {
                // SAFETY: writing from the saved bytes into the pipe's write end.
                let r = unsafe {
                    libc::write(high[1], p.data[off..].as_ptr().cast(), p.data.len() - off)
                };
                if r <= 0 {
                    return Err(format!("refilling pipe:[{}]: {}", p.ino, errno()));
                }
                off += r as usize;
            }
            made.push(high);
        }
        for (p, high) in self.saved.iter().zip(&made) {
            for e in &p.ends {
                let src = if e.read { high[0] } else { high[1] };
                let fl = if e.cloexec { libc::O_CLOEXEC } else { 0 };
                // SAFETY: dup3 onto the program's fd number (free: the files plugin closed it).
                if unsafe { libc::dup3(src, e.fd, fl) } < 0 {
                    return Err(format!("fd {}: dup3: {}", e.fd, errno()));
                }
                // SAFETY: restoring the status flags (O_NONBLOCK) on that fd.
                unsafe { libc::fcntl(e.fd, libc::F_SETFL, e.flags) };
            }
        }
        for high in made {
            // SAFETY: closing the temporary high fds.
            unsafe {
                libc::close(high[0]);
                libc::close(high[1]);
            }
        }
        Ok(())
    }
}
