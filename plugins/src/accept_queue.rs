//! Connections waiting in a listener's accept queue, kept with their bytes across checkpoints:
//! the "hidden accept queue" of the sockets plugin (docs/sockets.md).
//!
//! A connection the server has not accepted yet has its server end in the listener's queue,
//! where no process holds it: the checkpoint could not peek the bytes the client already sent.
//! So at each checkpoint, once every process is frozen and before any records its fds (the
//! `settle` hook), each listener of this process with connections waiting has them accepted
//! here, non-blocking, onto high fds ("hidden" ends, kept in accept order), and for each one a
//! *placeholder* client socket ("dummy") connects to the same listener, so its queue holds as
//! many connections as before: `poll`/`epoll`/`select` readiness and blocking `accept` behave
//! as if nothing happened. Both kinds are ordinary fds from then on: the socket checkpoint
//! records a hidden end as a connection (its peer is the client; its receive queue is peeked
//! like any other) and a dummy as a connection not accepted yet, which `ckpt-restart` rebuilds
//! waiting in the listener's queue.
//!
//! When the program accepts a connection whose peer is one of the dummies (the `accept` and
//! `accept4` wrappers ask [`accepted`] when the table is not empty: one atomic load
//! otherwise), the oldest hidden end of that listener takes its place on the returned fd
//! (`dup3`, with the caller's `SOCK_CLOEXEC`/`SOCK_NONBLOCK`), the dummy is closed, and the
//! caller's address is the client's. Dummies are recognised by address, asked live from the
//! kernel (after a restart a dummy may have another port than before).
//!
//! Listeners held by another process of the computation too (a pre-forked server) are left
//! alone: another process could accept a dummy whose hidden end lives here. So are listeners
//! inherited from outside the computation. At most [`MAX`] hidden connections per process; the
//! rest stay in the queue (their bytes are then lost at restart, warned once).
//!
//! Never used here: glibc malloc, locks (the wrappers run on user threads, `settle` with them
//! frozen); the tables are static atomics.

use crate::sockets::{address, getopt_int, socket_ino};
use ckpt_format::image::PeerInfo;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

/// Most hidden connections (and dummies) per process.
pub const MAX: usize = 64;

/// A hidden end: accepted at checkpoint time, waiting for the program's `accept`.
struct Hidden {
    /// -1 = free.
    fd: AtomicI32,
    /// The socket's inode (refreshed at restart): an fd the program closed and reused is not ours.
    ino: AtomicU64,
    /// The listener's inode (refreshed at restart from `lfd`).
    group: AtomicU64,
    /// An fd number of the listener at the last checkpoint.
    lfd: AtomicI32,
    /// Accept order.
    seq: AtomicU64,
}

/// A placeholder connection waiting in a listener's queue in place of a hidden one.
struct Dummy {
    fd: AtomicI32,
    ino: AtomicU64,
    group: AtomicU64,
    lfd: AtomicI32,
}

static HIDDEN: [Hidden; MAX] = [const {
    Hidden {
        fd: AtomicI32::new(-1),
        ino: AtomicU64::new(0),
        group: AtomicU64::new(0),
        lfd: AtomicI32::new(-1),
        seq: AtomicU64::new(0),
    }
}; MAX];
static DUMMIES: [Dummy; MAX] = [const {
    Dummy {
        fd: AtomicI32::new(-1),
        ino: AtomicU64::new(0),
        group: AtomicU64::new(0),
        lfd: AtomicI32::new(-1),
    }
}; MAX];
/// Live dummies: the wrappers' fast path (0 = nothing to do).
static LIVE: AtomicUsize = AtomicUsize::new(0);
static SEQ: AtomicU64 = AtomicU64::new(1);
static WARNED_FULL: AtomicBool = AtomicBool::new(false);

const ADDR: usize = std::mem::size_of::<libc::sockaddr_storage>();

/// `getsockname`/`getpeername` from the kernel into `buf` (no wrapper, no allocation).
fn raw_name(fd: i32, peer: bool, buf: &mut [u8; ADDR]) -> Option<usize> {
    let mut len = ADDR as libc::socklen_t;
    let nr = if peer {
        libc::SYS_getpeername
    } else {
        libc::SYS_getsockname
    };
    // SAFETY: the kernel writes at most `len` bytes into buf.
    let r = unsafe { libc::syscall(nr, fd, buf.as_mut_ptr(), &mut len) };
    (r == 0).then_some((len as usize).min(ADDR))
}

fn close(fd: i32) {
    // SAFETY: closing an fd this module owns.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

/// Closes a socket of ours with a reset (`SO_LINGER` 0) so that no `TIME_WAIT` is left on the
/// listener's port: a restart must be able to bind it again.
fn close_reset(fd: i32) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a linger struct (harmless on a UNIX socket).
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    close(fd);
}

/// Moves `fd` to a number out of the program's way (close-on-exec), closing the original.
fn move_high(fd: i32) -> i32 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    // Below the core's own fds (the top 64 under min(limit, 1024)), above what programs use.
    let base = (lim.rlim_cur.min(1024) as i32 - 64 - 2 * MAX as i32).max(10);
    // SAFETY: duplicating our own fd.
    let h = unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, base) } as i32;
    if h < 0 {
        return fd;
    }
    close(fd);
    h
}

/// The live dummy whose address is `peer` (the peer address of a connection just accepted).
fn dummy_with_address(peer: &[u8]) -> Option<usize> {
    let mut buf = [0u8; ADDR];
    (0..MAX).find(|&i| {
        let d = &DUMMIES[i];
        let fd = d.fd.load(Ordering::Acquire);
        fd >= 0
            && socket_ino(fd) == d.ino.load(Ordering::Relaxed)
            && raw_name(fd, false, &mut buf).is_some_and(|n| &buf[..n] == peer)
    })
}

/// Frees slots whose fd the program closed (or reused for something else).
fn collect_garbage() {
    for h in &HIDDEN {
        let fd = h.fd.load(Ordering::Relaxed);
        if fd >= 0 && socket_ino(fd) != h.ino.load(Ordering::Relaxed) {
            h.fd.store(-1, Ordering::Relaxed);
        }
    }
    for d in &DUMMIES {
        let fd = d.fd.load(Ordering::Relaxed);
        if fd >= 0 && socket_ino(fd) != d.ino.load(Ordering::Relaxed) {
            d.fd.store(-1, Ordering::Relaxed);
        }
    }
    recount();
}

fn recount() {
    let n = DUMMIES
        .iter()
        .filter(|d| d.fd.load(Ordering::Relaxed) >= 0)
        .count();
    LIVE.store(n, Ordering::Release);
}

fn free_slot<T>(table: &[T; MAX], fd: impl Fn(&T) -> &AtomicI32) -> Option<&T> {
    table.iter().find(|e| fd(e).load(Ordering::Relaxed) < 0)
}

/// Whether the listener `(dev, ino)` is open in another process of the computation.
fn shared(dev: u64, ino: u64, peers: &[PeerInfo]) -> bool {
    let me = crate::api::real_pid();
    peers.iter().filter(|p| p.pid != me).any(|p| {
        crate::files::peer_fds(p.pid)
            .iter()
            .any(|&(_, d, i)| d == dev && i == ino)
    })
}

/// Waits up to `secs` seconds for `events` on `fd`; the events that came (0: none).
fn poll_one(fd: i32, events: i16, secs: u64) -> i16 {
    let mut pfd = [libc::pollfd {
        fd,
        events,
        revents: 0,
    }];
    if crate::api::ppoll(&mut pfd, std::time::Duration::from_secs(secs)) == 1 {
        pfd[0].revents
    } else {
        0
    }
}

/// Whether a connection waits in the listener's queue (no wait).
fn readable(fd: i32) -> bool {
    poll_one(fd, libc::POLLIN, 0) & libc::POLLIN != 0
}

/// The address a placeholder connects to so that it lands in this listener's queue.
fn target(local: &[u8], family: i32) -> Vec<u8> {
    let mut t = local.to_vec();
    match family {
        libc::AF_INET if t.len() >= 8 && t[4..8] == [0; 4] => {
            t[4..8].copy_from_slice(&[127, 0, 0, 1]);
        }
        libc::AF_INET6 if t.len() >= 24 && t[8..24] == [0; 16] => {
            t[8..24].copy_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        }
        _ => {}
    }
    t
}

/// A printable address (for warnings).
pub(crate) fn show(a: &[u8]) -> String {
    let family = if a.len() >= 2 {
        u16::from_ne_bytes([a[0], a[1]]) as i32
    } else {
        0
    };
    let port = if a.len() >= 4 {
        u16::from_be_bytes([a[2], a[3]])
    } else {
        0
    };
    match family {
        libc::AF_INET if a.len() >= 8 => format!("{}.{}.{}.{}:{port}", a[4], a[5], a[6], a[7]),
        libc::AF_INET6 if a.len() >= 24 => {
            let ip: [u8; 16] = a[8..24].try_into().unwrap_or([0; 16]);
            format!("[{}]:{port}", std::net::Ipv6Addr::from(ip))
        }
        libc::AF_UNIX if a.len() > 2 && a[2] == 0 => {
            format!("@{}", String::from_utf8_lossy(&a[3..]))
        }
        libc::AF_UNIX if a.len() > 2 => {
            let p = &a[2..];
            let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
            String::from_utf8_lossy(&p[..end]).into_owned()
        }
        _ => format!("(family {family})"),
    }
}

/// A placeholder connection to `to`, established (in the listener's queue) or an error.
fn connect_dummy(family: i32, stype: i32, to: &[u8]) -> Result<i32, String> {
    // SAFETY: socket(2).
    let s = unsafe { libc::socket(family, stype | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if s < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    let fail = |what: &str| {
        let e = std::io::Error::last_os_error();
        close(s);
        Err(format!("{what}: {e}"))
    };
    if family == libc::AF_UNIX {
        // Autobind: a unique abstract name, by which accept recognises the placeholder (an
        // unnamed peer would look like any other client).
        let a: libc::sa_family_t = libc::AF_UNIX as libc::sa_family_t;
        // SAFETY: a sockaddr of just the family: the kernel picks an abstract name.
        if unsafe {
            libc::bind(
                s,
                (&a as *const libc::sa_family_t).cast(),
                std::mem::size_of::<libc::sa_family_t>() as libc::socklen_t,
            )
        } != 0
        {
            return fail("bind");
        }
    }
    // SAFETY: connect with a sockaddr of the given length.
    let r = unsafe { libc::connect(s, to.as_ptr().cast(), to.len() as libc::socklen_t) };
    if r != 0 {
        let e = std::io::Error::last_os_error().raw_os_error();
        if e != Some(libc::EINPROGRESS) {
            return fail("connect");
        }
        // TCP: the handshake (loopback) completes at once; wait up to 1 s.
        let ready = poll_one(s, libc::POLLOUT, 1) != 0;
        let err = getopt_int(s, libc::SOL_SOCKET, libc::SO_ERROR).unwrap_or(-1);
        if !ready || err != 0 {
            close(s);
            return Err(format!(
                "connect: {}",
                if !ready {
                    "not established within 1 s".to_string()
                } else {
                    std::io::Error::from_raw_os_error(err).to_string()
                }
            ));
        }
    }
    Ok(move_high(s))
}

/// Accepts what waits in listener `lfd` (inode `lino`) onto hidden fds and queues as many
/// placeholders as there are hidden ends of this listener.
fn hide_queue(lfd: i32, lino: u64, family: i32, stype: i32, warnings: &mut Vec<String>) {
    let local = address(lfd, false);
    if family != libc::AF_UNIX {
        // What the socket checkpoint does to every TCP socket (plugins/src/sockets.rs), done
        // before the placeholders connect: the connections they make inherit it, so none of
        // them leaves a TIME_WAIT that would keep a restart from listening on the port.
        let one: i32 = 1;
        // SAFETY: setsockopt with an int.
        unsafe {
            libc::setsockopt(
                lfd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const i32).cast(),
                4,
            )
        };
    }
    let mut peer = [0u8; ADDR];
    // Not blocking: the listener may be a blocking socket (SOCK_NONBLOCK below is the new
    // socket's flag), so each accept waits for a connection to be there.
    while readable(lfd) {
        if free_slot(&HIDDEN, |h| &h.fd).is_none() {
            if !WARNED_FULL.swap(true, Ordering::Relaxed) {
                warnings.push(format!(
                    "fd {lfd}: more than {MAX} connections wait to be accepted; the bytes sent on the others are lost at restart"
                ));
            }
            break;
        }
        // The real accept4 (not the wrapper), non-blocking.
        // SAFETY: accept4 without an address.
        let r = unsafe {
            libc::syscall(
                libc::SYS_accept4,
                lfd,
                std::ptr::null_mut::<libc::sockaddr>(),
                std::ptr::null_mut::<libc::socklen_t>(),
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        } as i32;
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        // One of our placeholders from an earlier checkpoint: made again below.
        if let Some(n) = raw_name(r, true, &mut peer)
            && let Some(i) = dummy_with_address(&peer[..n])
        {
            let fd = DUMMIES[i].fd.swap(-1, Ordering::AcqRel);
            if fd >= 0 {
                close_reset(fd);
            }
            close_reset(r);
            continue;
        }
        let h = move_high(r);
        let slot = free_slot(&HIDDEN, |h| &h.fd).expect("checked above");
        slot.ino.store(socket_ino(h), Ordering::Relaxed);
        slot.group.store(lino, Ordering::Relaxed);
        slot.seq
            .store(SEQ.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        slot.fd.store(h, Ordering::Release);
    }
    for h in &HIDDEN {
        if h.fd.load(Ordering::Relaxed) >= 0 && h.group.load(Ordering::Relaxed) == lino {
            h.lfd.store(lfd, Ordering::Relaxed);
        }
    }
    let in_group = |g: &AtomicU64, fd: &AtomicI32| {
        fd.load(Ordering::Relaxed) >= 0 && g.load(Ordering::Relaxed) == lino
    };
    let hidden = HIDDEN.iter().filter(|h| in_group(&h.group, &h.fd)).count();
    let dummies = DUMMIES.iter().filter(|d| in_group(&d.group, &d.fd)).count();
    let to = target(&local, family);
    for _ in dummies..hidden {
        let Some(slot) = free_slot(&DUMMIES, |d| &d.fd) else {
            break;
        };
        match connect_dummy(family, stype, &to) {
            Ok(d) => {
                slot.ino.store(socket_ino(d), Ordering::Relaxed);
                slot.group.store(lino, Ordering::Relaxed);
                slot.lfd.store(lfd, Ordering::Relaxed);
                slot.fd.store(d, Ordering::Release);
            }
            Err(e) => {
                warnings.push(format!(
                    "fd {lfd}: cannot queue a placeholder connection to {}: {e}; a connection accepted at checkpoint time stays hidden",
                    show(&to)
                ));
                break;
            }
        }
    }
    recount();
}

/// The settle step: every listener of this process (not shared, not from outside) with
/// connections waiting gets them hidden.
pub fn settle(peers: &[PeerInfo], warnings: &mut Vec<String>) {
    collect_garbage();
    let mut seen: Vec<u64> = Vec::new();
    for fd in crate::files::list_fds() {
        // SAFETY: fstat into a zeroed buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointer.
        if unsafe { libc::fstat(fd, &mut st) } != 0
            || st.st_mode & libc::S_IFMT != libc::S_IFSOCK
            || seen.contains(&st.st_ino)
        {
            continue;
        }
        seen.push(st.st_ino);
        let Some((family, stype)) = listener_kind(fd) else {
            continue;
        };
        if crate::files::is_outside(st.st_dev, st.st_ino) || !readable(fd) {
            continue;
        }
        if shared(st.st_dev, st.st_ino, peers) {
            warnings.push(format!(
                "fd {fd}: connections wait on a listener other processes hold too; bytes already sent on them are lost at restart"
            ));
            continue;
        }
        hide_queue(fd, st.st_ino, family, stype, warnings);
    }
}

/// (family, type) of a listening stream or seqpacket socket of a kind restored at restart.
pub fn listener_kind(fd: i32) -> Option<(i32, i32)> {
    if getopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN) != Some(1) {
        return None;
    }
    let family = getopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    let stype = getopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)?;
    (matches!(family, libc::AF_INET | libc::AF_INET6 | libc::AF_UNIX)
        && matches!(stype, libc::SOCK_STREAM | libc::SOCK_SEQPACKET))
    .then_some((family, stype))
}

/// Restarted process, before user threads run: the fds are on their numbers again, as new
/// sockets; record their new inodes and their listeners'.
pub fn after_restart() {
    for h in &HIDDEN {
        if h.fd.load(Ordering::Relaxed) >= 0 {
            h.ino
                .store(socket_ino(h.fd.load(Ordering::Relaxed)), Ordering::Relaxed);
            h.group
                .store(socket_ino(h.lfd.load(Ordering::Relaxed)), Ordering::Relaxed);
        }
    }
    for d in &DUMMIES {
        if d.fd.load(Ordering::Relaxed) >= 0 {
            d.ino
                .store(socket_ino(d.fd.load(Ordering::Relaxed)), Ordering::Relaxed);
            d.group
                .store(socket_ino(d.lfd.load(Ordering::Relaxed)), Ordering::Relaxed);
        }
    }
    collect_garbage();
}

/// A forked child: the hidden ends and dummies stay the parent's (a copy held here would keep
/// a connection open after the parent closed it). Closes this process's copies.
pub fn forget_in_child() {
    if LIVE.load(Ordering::Acquire) == 0 && HIDDEN.iter().all(|h| h.fd.load(Ordering::Relaxed) < 0)
    {
        return;
    }
    for h in &HIDDEN {
        let fd = h.fd.swap(-1, Ordering::Relaxed);
        if fd >= 0 && socket_ino(fd) == h.ino.load(Ordering::Relaxed) {
            close(fd);
        }
    }
    for d in &DUMMIES {
        let fd = d.fd.swap(-1, Ordering::Relaxed);
        if fd >= 0 && socket_ino(fd) == d.ino.load(Ordering::Relaxed) {
            close(fd);
        }
    }
    LIVE.store(0, Ordering::Release);
}

/// `*addrlen` before the real accept overwrites it (0 for a null pointer).
///
/// # Safety
/// `addrlen` as for accept(2): null or pointing to the buffer size.
#[inline]
pub unsafe fn buffer_len(addrlen: *const libc::socklen_t) -> libc::socklen_t {
    // Read even when nothing is hidden: a checkpoint may hide connections while the caller
    // blocks in accept.
    if addrlen.is_null() {
        return 0;
    }
    // SAFETY: accept's contract: a non-null addrlen points to the buffer size.
    unsafe { *addrlen }
}

/// Called by the `accept`/`accept4` wrappers with what the real call returned (`flags`:
/// accept4's; `cap`: what [`buffer_len`] said before the call). When `r` is a placeholder's
/// connection, the oldest hidden end of the same listener takes its place on `r`.
///
/// # Safety
/// `addr`/`addrlen` as for accept(2).
#[inline]
pub unsafe fn accepted(
    r: i32,
    addr: *mut libc::sockaddr,
    addrlen: *mut libc::socklen_t,
    cap: libc::socklen_t,
    flags: i32,
) -> i32 {
    if r < 0 || LIVE.load(Ordering::Acquire) == 0 {
        return r;
    }
    // SAFETY: the caller's contract.
    unsafe { swap(r, addr, addrlen, cap, flags) }
}

/// # Safety
/// As [`accepted`].
#[cold]
#[inline(never)]
unsafe fn swap(
    r: i32,
    addr: *mut libc::sockaddr,
    addrlen: *mut libc::socklen_t,
    cap: libc::socklen_t,
    flags: i32,
) -> i32 {
    // SAFETY: errno is thread-local; the caller sees the value it had after the real accept.
    let saved_errno = unsafe { *libc::__errno_location() };
    let mut peer = [0u8; ADDR];
    let Some(n) = raw_name(r, true, &mut peer) else {
        return r;
    };
    let Some(i) = dummy_with_address(&peer[..n]) else {
        return r;
    };
    let d = &DUMMIES[i];
    let dfd = d.fd.load(Ordering::Acquire);
    if dfd < 0
        || d.fd
            .compare_exchange(dfd, -1, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
    {
        return r;
    }
    LIVE.fetch_sub(1, Ordering::AcqRel);
    let group = d.group.load(Ordering::Relaxed);
    // Reset, not closed: neither end of the placeholder connection lingers in TIME_WAIT.
    close_reset(dfd);
    // The oldest hidden end of this listener (claimed atomically: threads may race here).
    let hfd = loop {
        let oldest = HIDDEN
            .iter()
            .filter(|h| {
                h.fd.load(Ordering::Acquire) >= 0 && h.group.load(Ordering::Relaxed) == group
            })
            .min_by_key(|h| h.seq.load(Ordering::Relaxed));
        let Some(h) = oldest else {
            break -1;
        };
        let fd = h.fd.load(Ordering::Acquire);
        if fd < 0
            || h.fd
                .compare_exchange(fd, -1, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        if socket_ino(fd) == h.ino.load(Ordering::Relaxed) {
            break fd;
        }
        // The program closed it and the number is something else now: not ours.
    };
    if hfd < 0 {
        // No hidden end left (closed by the program): the placeholder's connection, ended.
        return r;
    }
    // The placeholder's accepted end, replaced below: reset as well.
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a linger struct on the fd accept just returned.
    unsafe {
        libc::setsockopt(
            r,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    let cloexec = if flags & libc::SOCK_CLOEXEC != 0 {
        libc::O_CLOEXEC
    } else {
        0
    };
    // SAFETY: both fds are open; dup3 replaces the placeholder's connection on r.
    if unsafe { libc::syscall(libc::SYS_dup3, hfd, r, cloexec) } < 0 {
        close(hfd);
        return r;
    }
    close(hfd);
    // SAFETY: F_GETFL/F_SETFL on our fd (status flags of the hidden end's description).
    unsafe {
        let fl = libc::syscall(libc::SYS_fcntl, r, libc::F_GETFL) as i32;
        let want = if flags & libc::SOCK_NONBLOCK != 0 {
            fl | libc::O_NONBLOCK
        } else {
            fl & !libc::O_NONBLOCK
        };
        libc::syscall(libc::SYS_fcntl, r, libc::F_SETFL, want);
    }
    if !addr.is_null() && !addrlen.is_null() {
        // The client's address, as getpeername tells it (saved one after a restart).
        // SAFETY: the caller's buffers, `cap` bytes.
        unsafe {
            *addrlen = cap;
            crate::sockets::getpeername(r, addr, addrlen)
        };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
    r
}
