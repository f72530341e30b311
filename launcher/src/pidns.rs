//! Restart with the *same* pids and tids: the restored process runs in its own user + pid +
//! mount namespace, where it is created with `clone3(set_tid = [its old pid])` and its threads
//! later get their old tids the same way. glibc's cached tids, mutex owner fields, robust and PI
//! futexes then stay right across any number of restarts, and `getpid()` does not change.
//!
//! Process chain for one image:
//!
//! ```text
//! ckpt-restart ── C (creates the namespaces, mirrors E's exit status)
//!                  └── D  pid 1 of the new pid ns: mounts its /proc, creates E, reaps
//!                       └── E  pid = old pid: execs ckpt-restorer … OUTER_PID
//! ```
//!
//! E learns its pid as seen from outside (what `ckpt-command --list` shows and what users
//! signal) from C through a pipe and passes it to the restorer. Works unprivileged wherever
//! unprivileged user namespaces do; [`usable`] probes once and the caller falls back to a plain
//! child (new pids and tids) when they don't, or when `CKPT_NO_NAMESPACES` is set.
//!
//! Runs in forked children of a single-threaded process: only async-signal-safe calls and
//! no allocation after `fork`.

use std::ffi::CStr;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_CHECKPOINT_RESTORE: u32 = 40;

fn write_file(path: &CStr, data: &[u8]) -> bool {
    // SAFETY: NUL-terminated path; plain open/write/close.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let ok = libc::write(fd, data.as_ptr().cast(), data.len()) == data.len() as isize;
        libc::close(fd);
        ok
    }
}

/// Formats "ID ID 1\n" into `buf`: our own id maps to itself. (A process inside the new
/// namespace may only map its own id; other owners' files then show as nobody/nogroup.)
fn id_map(id: u32, buf: &mut [u8; 64]) -> usize {
    let s = format!("{id} {id} 1\n");
    buf[..s.len()].copy_from_slice(s.as_bytes());
    s.len()
}

/// Enters new user + pid + mount namespaces with our uid/gid mapped to themselves.
/// Only for a single-threaded process. False if the kernel refuses.
fn enter(uid_map: &[u8], gid_map: &[u8]) -> bool {
    // SAFETY: unshare on a single-threaded process.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNS) } != 0 {
        return false;
    }
    write_file(c"/proc/self/setgroups", b"deny")
        && write_file(c"/proc/self/uid_map", uid_map)
        && write_file(c"/proc/self/gid_map", gid_map)
}

/// In the new pid ns: make our mounts private and mount a /proc that shows this namespace.
fn mount_proc() -> bool {
    // SAFETY: mount(2) with NUL-terminated strings, in our own mount namespace.
    unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        );
        libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ) == 0
    }
}

/// Forks like `fork()` but the child gets pid `pid` in our (new) pid namespace.
fn fork_with_pid(pid: i32) -> libc::pid_t {
    let set_tid: i32 = pid;
    // struct clone_args v2: flags, pidfd, child_tid, parent_tid, exit_signal, stack,
    // stack_size, tls, set_tid, set_tid_size, cgroup.
    let args: [u64; 11] = [
        0,
        0,
        0,
        0,
        libc::SIGCHLD as u64,
        0,
        0,
        0,
        &set_tid as *const i32 as u64,
        1,
        0,
    ];
    // SAFETY: clone3 without CLONE_VM behaves like fork.
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args.as_ptr(),
            std::mem::size_of_val(&args),
        ) as libc::pid_t
    }
}

/// Keeps CAP_SYS_ADMIN and CAP_CHECKPOINT_RESTORE (over our own user namespace only) across the
/// exec of the restorer, so the restored process can give its threads their old tids. The
/// restored threads drop back to the capabilities the program had.
fn keep_caps_across_exec() {
    let hdr: [u32; 2] = [0x2008_0522, 0];
    let mut data = [0u32; 6];
    // SAFETY: capget/capset v3 with valid buffers; prctl on ourselves.
    unsafe {
        libc::syscall(libc::SYS_capget, hdr.as_ptr(), data.as_mut_ptr());
        for cap in [CAP_SYS_ADMIN, CAP_CHECKPOINT_RESTORE] {
            let (w, b) = ((cap / 32) as usize, cap % 32);
            data[w * 3 + 2] |= data[w * 3 + 1] & (1 << b); // inheritable |= permitted
        }
        libc::syscall(libc::SYS_capset, hdr.as_ptr(), data.as_ptr());
        for cap in [CAP_SYS_ADMIN, CAP_CHECKPOINT_RESTORE] {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                cap as libc::c_ulong,
                0,
                0,
            );
        }
    }
}

/// Whether namespaces can be used here (probed once in a throw-away child).
pub fn usable() -> bool {
    if std::env::var_os("CKPT_NO_NAMESPACES").is_some() {
        return false;
    }
    let (mut um, mut gm) = ([0u8; 64], [0u8; 64]);
    // SAFETY: getuid/getgid cannot fail.
    let (un, gn) = unsafe {
        (
            id_map(libc::getuid(), &mut um),
            id_map(libc::getgid(), &mut gm),
        )
    };
    // SAFETY: fork of a single-threaded process; the child only makes syscalls and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = enter(&um[..un], &gm[..gn]) && {
            // SAFETY: fork inside the new namespaces; the grandchild is its pid 1.
            let g = unsafe { libc::fork() };
            if g == 0 {
                // SAFETY: _exit in the child.
                unsafe {
                    libc::_exit(if mount_proc() && fork_with_pid(4242) >= 0 {
                        0
                    } else {
                        1
                    })
                };
            }
            let mut st = 0;
            // SAFETY: waiting for our own child.
            g > 0
                && unsafe { libc::waitpid(g, &mut st, 0) } == g
                && libc::WIFEXITED(st)
                && libc::WEXITSTATUS(st) == 0
        };
        // SAFETY: _exit in the child.
        unsafe { libc::_exit(i32::from(!ok)) };
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    pid > 0
        && unsafe { libc::waitpid(pid, &mut st, 0) } == pid
        && libc::WIFEXITED(st)
        && libc::WEXITSTATUS(st) == 0
}

/// Called in C (a fresh child of ckpt-restart): builds the chain and never returns. `exec`
/// runs in E with its outer pid and execs the restorer (returning means it failed);
/// `close_in_helpers` are fds C and D must not keep (both ends of the image pipe: the
/// restorer must be its only reader, and must see EOF if ckpt-restart stops feeding it).
pub fn run_chain(pid: i32, close_in_helpers: &[i32], exec: &dyn Fn(u32)) -> ! {
    let (mut um, mut gm) = ([0u8; 64], [0u8; 64]);
    // SAFETY: getuid/getgid cannot fail.
    let (un, gn) = unsafe {
        (
            id_map(libc::getuid(), &mut um),
            id_map(libc::getgid(), &mut gm),
        )
    };
    if !enter(&um[..un], &gm[..gn]) {
        exec(0);
        // SAFETY: exec only returns on failure (it reported why).
        unsafe { libc::_exit(127) };
    }
    // SAFETY: everything below is plain syscalls in single-threaded processes.
    unsafe {
        let outer_proc = libc::open(
            c"/proc".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        let (mut st_pipe, mut go_pipe) = ([0i32; 2], [0i32; 2]);
        libc::pipe2(st_pipe.as_mut_ptr(), libc::O_CLOEXEC);
        libc::pipe2(go_pipe.as_mut_ptr(), libc::O_CLOEXEC);
        for s in [
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
        ] {
            libc::signal(s, libc::SIG_IGN);
        }
        let d = libc::fork();
        if d == 0 {
            // D: pid 1 of the new namespace.
            libc::close(st_pipe[0]);
            libc::close(go_pipe[1]);
            mount_proc();
            let e = fork_with_pid(pid);
            if e == 0 {
                // E: the process to restore.
                libc::close(st_pipe[1]);
                let mut outer = [0u8; 4];
                libc::read(go_pipe[0], outer.as_mut_ptr().cast(), 4);
                libc::close(go_pipe[0]);
                for s in [
                    libc::SIGINT,
                    libc::SIGQUIT,
                    libc::SIGTSTP,
                    libc::SIGTTIN,
                    libc::SIGTTOU,
                ] {
                    libc::signal(s, libc::SIG_DFL);
                }
                keep_caps_across_exec();
                exec(u32::from_ne_bytes(outer));
                libc::_exit(127);
            }
            libc::close(go_pipe[0]);
            for &fd in close_in_helpers {
                libc::close(fd);
            }
            if e < 0 {
                let msg = b"ckpt-restart: cannot create the process with its old pid (clone3)\n";
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::_exit(1);
            }
            // Reap everything; report E's status to C.
            loop {
                let mut st = 0;
                let r = libc::waitpid(-1, &mut st, 0);
                if r == e {
                    libc::write(st_pipe[1], (&st as *const i32).cast(), 4);
                } else if r < 0 && *libc::__errno_location() != libc::EINTR {
                    libc::_exit(0);
                }
            }
        }
        // C.
        libc::close(st_pipe[1]);
        libc::close(go_pipe[0]);
        for &fd in close_in_helpers {
            libc::close(fd);
        }
        let outer = find_child(outer_proc, d);
        libc::write(go_pipe[1], (&outer as *const u32).cast(), 4);
        libc::close(go_pipe[1]);
        let mut st = 0i32;
        let got = libc::read(st_pipe[0], (&mut st as *mut i32).cast(), 4) == 4;
        libc::waitpid(d, std::ptr::null_mut(), 0);
        if !got {
            let msg = b"ckpt-restart: the restored process vanished without a status\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(1);
        }
        if libc::WIFSIGNALED(st) {
            let sig = libc::WTERMSIG(st);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
        }
        libc::_exit(libc::WEXITSTATUS(st))
    }
}

/// E's pid outside the namespace: the child listed in `/proc/<d>/task/<d>/children` of the
/// outer /proc (D has exactly one child, E). Waits up to 5 s for it to appear.
fn find_child(outer_proc: i32, d: libc::pid_t) -> u32 {
    let mut path = [0u8; 64];
    let p = format!("{d}/task/{d}/children\0");
    path[..p.len()].copy_from_slice(p.as_bytes());
    for _ in 0..5000 {
        // SAFETY: openat relative to the outer /proc with a NUL-terminated path.
        let fd = unsafe {
            libc::openat(
                outer_proc,
                path.as_ptr().cast(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            let mut buf = [0u8; 64];
            // SAFETY: reading into a stack buffer.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            // SAFETY: closing our fd.
            unsafe { libc::close(fd) };
            let v = buf[..n.max(0) as usize]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .fold(0u32, |v, &c| v * 10 + (c - b'0') as u32);
            if v != 0 {
                return v;
            }
        }
        // SAFETY: plain sleep.
        unsafe { libc::usleep(1000) };
    }
    0
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_answers() {
        // Environment-dependent: only prints. The e2e tests show whether ids are kept.
        eprintln!("namespaces usable: {}", super::usable());
    }
}
