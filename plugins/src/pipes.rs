//! Pipes and FIFOs made inside the computation (those inherited from outside are re-inherited
//! by the files plugin). A pipe stays a pipe after restart: same fd numbers for every end in
//! every process, same buffer size (`F_GETPIPE_SZ`), same status flags, and the bytes that
//! were in flight, in order, nothing lost or duplicated.
//!
//! At checkpoint every process records, for each pipe fd, a reference to a shared object keyed
//! by the pipe's (dev, ino) — the same key in every image. A process holding a read end
//! *peeks* the buffered bytes with `tee(2)` into a scratch pipe (the running program still
//! finds them on resume); every process is frozen, so all copies agree. At restart
//! `ckpt-restart` makes one pipe per key, sizes and fills it, and installs its ends on the
//! saved fd numbers of every process before the restorers run; this plugin has nothing left
//! to do then. A FIFO (a pipe with a path) is reopened by path the same way.
//!
//! Runs with user threads frozen: syscalls only, no glibc malloc.

use crate::api::{CkptContext, Plugin, RestartContext};
use ckpt_format::image::{FdKind, ObjKind, ObjRef, SharedObject};

#[derive(Default)]
pub struct Pipes;

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
        let mut objects: Vec<SharedObject> = Vec::new();
        let mut read_fd: Vec<(u64, i32)> = Vec::new();
        for f in ctx.header.fds.iter_mut() {
            if f.kind != FdKind::Pipe || crate::files::reinherited(f) {
                continue;
            }
            let read = f.flags & libc::O_ACCMODE == libc::O_RDONLY;
            let fifo = f.path.starts_with('/');
            let key = crate::files::obj_key("pipe", &[f.dev, f.ino]);
            f.object = Some(ObjRef {
                key,
                end: if read { 0 } else { 1 },
            });
            let end = usize::from(!read);
            match objects.iter_mut().find(|o| o.key == key) {
                Some(o) => o.flags[end] = f.flags,
                None => {
                    // SAFETY: querying the pipe's buffer size.
                    let size = unsafe { libc::fcntl(f.fd, libc::F_GETPIPE_SZ) };
                    let mut flags = vec![0, 0];
                    flags[end] = f.flags;
                    objects.push(SharedObject {
                        key,
                        kind: if fifo {
                            ObjKind::Fifo {
                                path: f.path.clone(),
                                size,
                            }
                        } else {
                            ObjKind::Pipe { size }
                        },
                        flags,
                        offset: 0,
                        has_data: false,
                        data: Vec::new(),
                    });
                }
            }
            if read && !read_fd.iter().any(|&(k, _)| k == key) {
                read_fd.push((key, f.fd));
            }
        }
        for o in objects.iter_mut() {
            if let Some(&(_, fd)) = read_fd.iter().find(|&&(k, _)| k == o.key) {
                let size = match o.kind {
                    ObjKind::Pipe { size } | ObjKind::Fifo { size, .. } => size,
                    _ => 0,
                };
                o.data = peek(fd, size)?;
                o.has_data = true;
            }
        }
        ctx.header.objects.extend(objects);
        Ok(())
    }

    fn restart(&mut self, _ctx: &mut RestartContext) -> Result<(), String> {
        // ckpt-restart made the pipes and installed them before the restorer ran.
        Ok(())
    }
}
