//! Sockets the program made: TCP and UDP over IPv4 and IPv6, UNIX stream, seqpacket and
//! datagram sockets (named, abstract, socketpair). Saved here, rebuilt by `ckpt-restart`
//! (`launcher/src/sockets.rs`), which owns the restart side.
//!
//! At checkpoint every process records, for each socket fd, a reference to a shared object
//! keyed by the socket's inode (the same in every process that shares it through fork or
//! `SCM_RIGHTS`): family, type, state (unconnected, listening, connected), local and peer
//! address, the peer socket's inode for UNIX sockets (from `NETLINK_SOCK_DIAG`), the options
//! worth setting again, and the bytes in its receive queue — *peeked*, not consumed, so the
//! running program finds them on resume and nothing needs refilling after a checkpoint. Every
//! process is frozen, so nothing moves meanwhile. What a TCP sender still holds in its send
//! queue (not yet in the receiver's queue: the receiver's window was full) cannot be read
//! without the receiver consuming: [`crate::tcp_backlog`] has the receiver take it out at
//! `settle` time and puts it back on resume (see docs/sockets.md, "Backlog").
//!
//! Connections waiting in a listener's accept queue are held by no process; so that their
//! bytes are saved too, the `settle` hook (every process frozen, nothing recorded yet) has
//! [`crate::accept_queue`] accept them onto hidden fds and queue placeholder connections in
//! their place; the `accept` wrappers swap the hidden ends back in (see that module).
//!
//! After a restart a connection may not get its old addresses back: the connecting end's old
//! port is still in `TIME_WAIT` from the killed run (a socket without `SO_REUSEADDR` blocks a
//! rebind for a minute), or a connected UNIX socket became a `socketpair`. Then `getsockname`
//! and `getpeername` (wrapped here) answer with the saved addresses: the restart hook fills a
//! small static table (socket inode → saved local and peer address) for the sockets whose
//! kernel addresses differ; the wrappers look it up only when it is not empty.
//!
//! Never used here: glibc malloc at checkpoint/restart (runs with user threads frozen:
//! syscalls only); locks or allocation in the wrappers (user threads).

use crate::api::{CkptContext, Plugin, RestartContext, real_fns};
use ckpt_format::image::{FdKind, ObjKind, ObjRef, PeerInfo, SharedObject, SockState, SocketObj};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What this process saved at its last checkpoint (restored with memory): (socket object key,
/// the socket).
#[derive(Default)]
pub struct Sockets {
    saved: Vec<(u64, SocketObj)>,
    /// Set by `drain`: this process holds a listener (its queue is hidden at `settle`).
    listens: bool,
    /// Set by `drain`: this process's TCP ends whose bytes could not be pushed.
    stuck: Vec<crate::tcp_backlog::Stuck>,
    /// Set by `settle`: what `resume` owes the connections whose bytes were taken out.
    backlog: Vec<crate::tcp_backlog::Pending>,
}

// ---- address table -----------------------------------------------------------------------

const NAMES: usize = 256;
const ADDR: usize = 128;
/// One entry: the socket's inode now (0 = free), saved local and peer address.
struct Name {
    ino: AtomicU64,
    local: [AtomicU64; ADDR / 8 + 1],
    peer: [AtomicU64; ADDR / 8 + 1],
}
static TABLE: [Name; NAMES] = [const {
    Name {
        ino: AtomicU64::new(0),
        local: [const { AtomicU64::new(0) }; ADDR / 8 + 1],
        peer: [const { AtomicU64::new(0) }; ADDR / 8 + 1],
    }
}; NAMES];
static USED: AtomicUsize = AtomicUsize::new(0);

/// Stores `a` (at most ADDR bytes) as a length word and 8-byte words.
fn put(slot: &[AtomicU64; ADDR / 8 + 1], a: &[u8]) {
    let a = &a[..a.len().min(ADDR)];
    slot[0].store(a.len() as u64, Ordering::Relaxed);
    for (i, chunk) in a.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        slot[i + 1].store(u64::from_ne_bytes(w), Ordering::Relaxed);
    }
}

/// Copies the stored address into `out` (up to `cap` bytes); returns its full length.
fn get(slot: &[AtomicU64; ADDR / 8 + 1], out: *mut u8, cap: usize) -> usize {
    let len = slot[0].load(Ordering::Relaxed) as usize;
    let mut w = [0u8; ADDR];
    for i in 0..len.div_ceil(8) {
        w[i * 8..i * 8 + 8].copy_from_slice(&slot[i + 1].load(Ordering::Relaxed).to_ne_bytes());
    }
    let n = len.min(cap);
    // SAFETY: the caller's buffer holds `cap` bytes; n <= cap.
    unsafe { std::ptr::copy_nonoverlapping(w.as_ptr(), out, n) };
    len
}

/// The addresses the program sees for the socket with inode `ino`, if the table has them.
fn virtual_names(ino: u64) -> Option<(Vec<u8>, Vec<u8>)> {
    let used = USED.load(Ordering::Acquire);
    let e = TABLE[..used]
        .iter()
        .find(|e| ino != 0 && e.ino.load(Ordering::Relaxed) == ino)?;
    let mut l = [0u8; ADDR];
    let mut p = [0u8; ADDR];
    let ll = get(&e.local, l.as_mut_ptr(), ADDR).min(ADDR);
    let pl = get(&e.peer, p.as_mut_ptr(), ADDR).min(ADDR);
    Some((l[..ll].to_vec(), p[..pl].to_vec()))
}

pub(crate) fn socket_ino(fd: i32) -> u64 {
    // SAFETY: fstat into a zeroed buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return 0;
    }
    st.st_ino
}

type NameFn = unsafe extern "C" fn(i32, *mut libc::sockaddr, *mut libc::socklen_t) -> i32;
real_fns! {
    real_getsockname, GETSOCKNAME, c"getsockname", NameFn;
    real_getpeername, GETPEERNAME, c"getpeername", NameFn;
}

/// The wrappers' common part: the saved address if `fd`'s socket is in the table.
///
/// # Safety
/// `addr`/`len` as for getsockname(2).
unsafe fn name(
    fd: i32,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
    peer: bool,
    real: Option<NameFn>,
) -> i32 {
    let used = USED.load(Ordering::Acquire);
    if used > 0 && !addr.is_null() && !len.is_null() {
        let ino = socket_ino(fd);
        if let Some(e) = TABLE[..used]
            .iter()
            .find(|e| ino != 0 && e.ino.load(Ordering::Relaxed) == ino)
        {
            let slot = if peer { &e.peer } else { &e.local };
            // SAFETY: the caller's len points to the buffer size.
            let cap = unsafe { *len } as usize;
            let full = get(slot, addr.cast(), cap);
            if peer && full == 0 {
                // SAFETY: glibc's errno.
                unsafe { *libc::__errno_location() = libc::ENOTCONN };
                return -1;
            }
            // SAFETY: as above.
            unsafe { *len = full as libc::socklen_t };
            return 0;
        }
    }
    match real {
        // SAFETY: glibc's function with the caller's arguments.
        Some(f) => unsafe { f(fd, addr, len) },
        None => {
            // SAFETY: glibc's errno.
            unsafe { *libc::__errno_location() = libc::ENOSYS };
            -1
        }
    }
}

/// # Safety
/// As getsockname(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getsockname(
    fd: i32,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { name(fd, addr, len, false, real_getsockname()) }
}

/// # Safety
/// As getpeername(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getpeername(
    fd: i32,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { name(fd, addr, len, true, real_getpeername()) }
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn getopt_raw(fd: i32, level: i32, name: i32, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut l = len as libc::socklen_t;
    // SAFETY: getsockopt into a buffer of `len` bytes.
    let r = unsafe { libc::getsockopt(fd, level, name, buf.as_mut_ptr().cast(), &mut l) };
    if r != 0 {
        return None;
    }
    buf.truncate(l as usize);
    Some(buf)
}

/// Whether `fd` is a TCP stream socket.
pub(crate) fn is_tcp(fd: i32) -> bool {
    getopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL) == Some(libc::IPPROTO_TCP)
        && getopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) == Some(libc::SOCK_STREAM)
}

pub(crate) fn getopt_int(fd: i32, level: i32, name: i32) -> Option<i32> {
    let b = getopt_raw(fd, level, name, 4)?;
    (b.len() == 4).then(|| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// `getsockname` (`peer` false) or `getpeername` (true); empty if there is none.
pub(crate) fn address(fd: i32, peer: bool) -> Vec<u8> {
    // SAFETY: sockaddr_storage is plain data.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = (&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr>();
    // SAFETY: valid out-pointers of the declared size.
    let r = unsafe {
        libc::syscall(
            if peer {
                libc::SYS_getpeername
            } else {
                libc::SYS_getsockname
            },
            fd,
            p,
            &mut len,
        )
    };
    if r != 0 {
        return Vec::new();
    }
    // SAFETY: the kernel wrote `len` bytes (capped at the storage size).
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&ss as *const libc::sockaddr_storage).cast::<u8>(),
            (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>()),
        )
    };
    bytes.to_vec()
}

/// The options set again at restart, in the order they must be set.
fn options(fd: i32, family: i32, stype: i32) -> Vec<(i32, i32, Vec<u8>)> {
    let mut out = Vec::new();
    let int = |out: &mut Vec<(i32, i32, Vec<u8>)>, level: i32, name: i32| {
        if let Some(v) = getopt_int(fd, level, name) {
            out.push((level, name, v.to_ne_bytes().to_vec()));
        }
    };
    if family == libc::AF_INET6 {
        int(&mut out, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY);
    }
    for name in [
        libc::SO_REUSEADDR,
        libc::SO_REUSEPORT,
        libc::SO_KEEPALIVE,
        libc::SO_BROADCAST,
        libc::SO_OOBINLINE,
        libc::SO_PASSCRED,
        libc::SO_RCVLOWAT,
    ] {
        int(&mut out, libc::SOL_SOCKET, name);
    }
    // The kernel reports twice what was asked for; ask for half to get the same back.
    for name in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        if let Some(v) = getopt_int(fd, libc::SOL_SOCKET, name) {
            out.push((libc::SOL_SOCKET, name, (v / 2).to_ne_bytes().to_vec()));
        }
    }
    if let Some(l) = getopt_raw(fd, libc::SOL_SOCKET, libc::SO_LINGER, 8) {
        out.push((libc::SOL_SOCKET, libc::SO_LINGER, l));
    }
    if matches!(family, libc::AF_INET | libc::AF_INET6) && stype == libc::SOCK_STREAM {
        for name in [
            libc::TCP_NODELAY,
            libc::TCP_KEEPIDLE,
            libc::TCP_KEEPINTVL,
            libc::TCP_KEEPCNT,
        ] {
            int(&mut out, libc::IPPROTO_TCP, name);
        }
    }
    out
}

/// Bytes waiting in a stream socket's receive queue, peeked (not consumed).
fn peek_stream(fd: i32) -> Result<Vec<u8>, String> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes an int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } != 0 || n <= 0 {
        return Ok(Vec::new());
    }
    let mut buf = vec![0u8; n as usize];
    let mut got = 0usize;
    while got < buf.len() {
        // A peek starts at the head of the queue each time: ask for everything so far + more.
        // SAFETY: recv into our buffer.
        let r = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            let e = errno();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if e.raw_os_error() == Some(libc::EAGAIN) {
                break;
            }
            return Err(format!("cannot peek fd {fd}: {e}"));
        }
        if r as usize <= got {
            break;
        }
        got = r as usize;
    }
    buf.truncate(got);
    Ok(buf)
}

/// Messages waiting in a datagram or seqpacket socket's receive queue, each as a u32 length
/// and its bytes, peeked one after the other with `SO_PEEK_OFF`.
fn peek_messages(fd: i32) -> Result<Vec<u8>, String> {
    let old = getopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap_or(-1);
    let set = |v: i32| {
        // SAFETY: setsockopt with an int.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEEK_OFF,
                (&v as *const i32).cast(),
                4,
            )
        }
    };
    if set(0) != 0 {
        return Err(format!("fd {fd}: SO_PEEK_OFF: {}", errno()));
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut result = Ok(());
    for _ in 0..100_000 {
        // SAFETY: recv into our buffer; MSG_TRUNC makes it return the real length.
        let r = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if r < 0 {
            let e = errno();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if e.raw_os_error() != Some(libc::EAGAIN) {
                result = Err(format!("cannot peek fd {fd}: {e}"));
            }
            break;
        }
        let len = r as usize;
        if len > buf.len() {
            result = Err(format!(
                "fd {fd}: a queued message of {len} bytes is larger than {} bytes",
                buf.len()
            ));
            break;
        }
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&buf[..len]);
        if len == 0 {
            // A zero-length message does not move the peek offset: stop rather than loop.
            break;
        }
    }
    set(old);
    result.map(|()| out)
}

/// AF_UNIX: the inode of the socket's peer, asked from `NETLINK_SOCK_DIAG` (0 if none).
pub fn unix_peer_ino(ino: u64) -> (u64, u8) {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_PEER: u32 = 4;
    const UNIX_DIAG_PEER: u16 = 2;
    const UNIX_DIAG_SHUTDOWN: u16 = 6;
    // SAFETY: socket(2).
    let s = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if s < 0 {
        return (0, 0);
    }
    // nlmsghdr (16 bytes) + unix_diag_req (24 bytes).
    let mut req = [0u8; 40];
    req[0..4].copy_from_slice(&40u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_UNIX as u8;
    req[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req[24..28].copy_from_slice(&(ino as u32).to_ne_bytes());
    req[28..32].copy_from_slice(&UDIAG_SHOW_PEER.to_ne_bytes());
    req[32..40].copy_from_slice(&[0xff; 8]); // no cookie
    let mut peer = 0u64;
    let mut shutdown = 0u8;
    // SAFETY: send/recv on our netlink socket with valid buffers.
    unsafe {
        if libc::send(s, req.as_ptr().cast(), req.len(), 0) == req.len() as isize {
            let mut buf = [0u8; 1024];
            let n = libc::recv(s, buf.as_mut_ptr().cast(), buf.len(), 0);
            if n >= 32 {
                let n = n as usize;
                let ty = u16::from_ne_bytes([buf[4], buf[5]]);
                if ty == SOCK_DIAG_BY_FAMILY {
                    // Attributes follow nlmsghdr (16) + unix_diag_msg (16).
                    let mut at = 32;
                    while at + 4 <= n {
                        let len = u16::from_ne_bytes([buf[at], buf[at + 1]]) as usize;
                        let t = u16::from_ne_bytes([buf[at + 2], buf[at + 3]]);
                        if len < 4 || at + len > n {
                            break;
                        }
                        if t == UNIX_DIAG_PEER && len >= 8 {
                            peer = u32::from_ne_bytes([
                                buf[at + 4],
                                buf[at + 5],
                                buf[at + 6],
                                buf[at + 7],
                            ]) as u64;
                        }
                        if t == UNIX_DIAG_SHUTDOWN && len >= 5 {
                            shutdown = buf[at + 4];
                        }
                        at += (len + 3) & !3;
                    }
                }
            }
        }
        libc::close(s);
    }
    (peer, shutdown)
}

/// Whether the socket on `fd` (family `family`; `unix_shutdown`: its `sk_shutdown` bits from
/// sock_diag) can no longer send: `shutdown(SHUT_WR)` (or `SHUT_RDWR`) was called on it.
/// TCP: it sent its FIN (FIN_WAIT1/2, CLOSING, LAST_ACK).
fn write_shut(fd: i32, family: i32, unix_shutdown: u8) -> bool {
    const SEND_SHUTDOWN: u8 = 2;
    if family == libc::AF_UNIX {
        return unix_shutdown & SEND_SHUTDOWN != 0;
    }
    // The state is the first byte of struct tcp_info.
    let Some(info) = getopt_raw(fd, libc::IPPROTO_TCP, libc::TCP_INFO, 8) else {
        return false;
    };
    // FIN_WAIT1, FIN_WAIT2, LAST_ACK, CLOSING (include/net/tcp_states.h).
    matches!(info.first(), Some(4 | 5 | 9 | 11))
}

/// Describes the socket on `fd`; None for kinds this plugin does not restore.
fn describe(fd: i32, ino: u64, warnings: &mut Vec<String>) -> Result<Option<SocketObj>, String> {
    let family = getopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).unwrap_or(-1);
    let stype = getopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).unwrap_or(-1);
    let protocol = getopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).unwrap_or(0);
    let known_family = matches!(family, libc::AF_INET | libc::AF_INET6 | libc::AF_UNIX);
    let known_type = matches!(
        stype,
        libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET
    );
    if !known_family || !known_type {
        warnings.push(format!(
            "fd {fd}: socket of family {family} type {stype} is not checkpointed: it will be /dev/null after restart"
        ));
        return Ok(None);
    }
    let listening = getopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).unwrap_or(0) != 0;
    // What the program sees: a socket restored with other kernel addresses keeps the ones it
    // had (the next restart binds and pairs by those).
    let (local, peer) =
        virtual_names(ino).unwrap_or_else(|| (address(fd, false), address(fd, true)));
    let state = if listening {
        SockState::Listening {
            backlog: libc::SOMAXCONN,
        }
    } else if !peer.is_empty() {
        SockState::Connected
    } else {
        SockState::Unconnected
    };
    let (peer_ino, unix_shutdown) = if family == libc::AF_UNIX {
        unix_peer_ino(ino)
    } else {
        (0, 0)
    };
    let shut_wr = state == SockState::Connected
        && stype != libc::SOCK_DGRAM
        && write_shut(fd, family, unix_shutdown);
    let options = options(fd, family, stype);
    if family != libc::AF_UNIX && stype == libc::SOCK_STREAM {
        // When this run is killed, its TCP ports linger in TIME_WAIT for a minute, and a port
        // whose socket had no SO_REUSEADDR cannot be bound again meanwhile: the restart could
        // neither listen on it nor rebuild a connection from it. SO_REUSEADDR on a bound or
        // connected socket changes nothing else. (The saved options keep the program's value;
        // ckpt-restart sets it again on the sockets it makes, for the next restart.)
        let one: i32 = 1;
        // SAFETY: setsockopt with an int.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const i32).cast(),
                4,
            )
        };
    }
    let relative_unix = family == libc::AF_UNIX
        && [&local, &peer]
            .iter()
            .any(|a| a.len() > 2 && a[2] != 0 && a[2] != b'/');
    let cwd = if relative_unix {
        std::fs::read_link("/proc/self/cwd")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Some(SocketObj {
        family,
        stype,
        protocol,
        state,
        local,
        peer,
        ino,
        peer_ino,
        options,
        cwd,
        shut_wr,
    }))
}

impl Sockets {
    /// Connections to peers outside the computation came back closed (`ckpt-restart` put an
    /// end of a UNIX socket pair there): an external plugin's `ckpt_plugin_reconnect` may make
    /// a new connection to put in their place (every fd of the same socket gets it).
    fn reconnect_outside(&self, ctx: &mut RestartContext) {
        if !crate::external::any_loaded() {
            return;
        }
        let mut done: Vec<(u64, i32)> = Vec::new();
        for f in ctx.fds {
            let Some(r) = f.object else { continue };
            let Some((_, s)) = self.saved.iter().find(|(k, _)| *k == r.key) else {
                continue;
            };
            let outside = s.family != libc::AF_UNIX
                && s.stype == libc::SOCK_STREAM
                && s.state == SockState::Connected
                && getopt_int(f.fd, libc::SOL_SOCKET, libc::SO_DOMAIN) == Some(libc::AF_UNIX);
            if !outside {
                continue;
            }
            let new = match done.iter().find(|(k, _)| *k == r.key) {
                Some(&(_, fd)) => fd,
                None => {
                    let mut unread: libc::c_int = 0;
                    // SAFETY: FIONREAD writes an int.
                    unsafe { libc::ioctl(f.fd, libc::FIONREAD, &mut unread) };
                    let Some(fd) =
                        crate::external::reconnect(f.fd, &s.local, &s.peer, unread.max(0) as usize)
                    else {
                        continue;
                    };
                    ctx.warnings.push(format!(
                        "fd {}: a plugin made the connection to {} (outside the computation) anew; the {unread} bytes the old one had received and the program had not read are dropped",
                        f.fd,
                        crate::accept_queue::show(&s.peer)
                    ));
                    done.push((r.key, fd));
                    fd
                }
            };
            // SAFETY: fcntl/dup3 on fds of this process: `new` is the plugin's fresh socket,
            // `f.fd` the restored one it replaces (same close-on-exec and status flags).
            unsafe {
                let cloexec = libc::fcntl(f.fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0;
                let fl = libc::fcntl(f.fd, libc::F_GETFL);
                if libc::dup3(new, f.fd, if cloexec { libc::O_CLOEXEC } else { 0 }) >= 0 && fl >= 0
                {
                    libc::fcntl(f.fd, libc::F_SETFL, fl);
                }
            }
        }
        for (_, fd) in done {
            // SAFETY: the plugin's socket, now dup'ed onto every fd it replaces.
            unsafe { libc::close(fd) };
        }
    }
}

impl Plugin for Sockets {
    fn name(&self) -> &'static str {
        "sockets"
    }

    fn checkpoint(&mut self, ctx: &mut CkptContext) -> Result<(), String> {
        let mut objects: Vec<SharedObject> = Vec::new();
        let mut saved = Vec::new();
        for f in ctx.header.fds.iter_mut() {
            if f.kind != FdKind::Socket || crate::files::reinherited(f) {
                continue;
            }
            let key = crate::files::obj_key("sock", &[f.dev, f.ino]);
            if objects.iter().any(|o| o.key == key) {
                f.object = Some(ObjRef { key, end: 0 });
                continue;
            }
            let Some(s) = describe(f.fd, f.ino, ctx.warnings)? else {
                continue;
            };
            let data = if matches!(s.state, SockState::Listening { .. }) {
                Vec::new()
            } else if let Some(d) =
                crate::tcp_backlog::consumed_data(&mut self.backlog, f.fd, f.ino)
            {
                // Taken out at settle time (its peer's bytes could not be pushed otherwise).
                d
            } else if s.stype == libc::SOCK_STREAM {
                peek_stream(f.fd)?
            } else {
                peek_messages(f.fd)?
            };
            f.object = Some(ObjRef { key, end: 0 });
            saved.push((key, s.clone()));
            objects.push(SharedObject {
                key,
                kind: ObjKind::Socket(s),
                flags: vec![f.flags],
                offset: 0,
                has_data: true,
                data,
            });
        }
        ctx.header.objects.extend(objects);
        self.saved = saved;
        Ok(())
    }

    fn init(&mut self) {
        resolve_all();
    }

    fn drain(&mut self, _warnings: &mut Vec<String>) {
        // The files plugin's listing: raw getdents (opendir would call glibc's malloc with
        // the program's threads frozen).
        self.listens = false;
        self.stuck.clear();
        for fd in crate::files::list_fds() {
            if !self.listens && crate::accept_queue::listener_kind(fd).is_some() {
                self.listens = true;
            }
            if is_tcp(fd) {
                crate::tcp_backlog::push(fd, &mut self.stuck);
            }
        }
    }

    fn wants_settle(&self) -> bool {
        self.listens
    }

    fn settle_note(&self) -> Vec<u8> {
        crate::tcp_backlog::note(&self.stuck)
    }

    fn settle(&mut self, peers: &[PeerInfo], notes: &[Vec<u8>], warnings: &mut Vec<String>) {
        // Every process is frozen, none has recorded its sockets yet: connections waiting in
        // this process's listeners are accepted onto hidden fds (so their bytes are peeked
        // like any connection's), placeholders queued in their place.
        crate::accept_queue::settle(peers, warnings);
        // TCP bytes a sender could not push (the receiver's window was full): the receiver
        // takes them out of the connection, so they are saved.
        let fds = crate::files::list_fds();
        self.backlog = crate::tcp_backlog::settle(notes, &self.stuck, &fds, warnings);
    }

    fn resume(&mut self) {
        for e in crate::tcp_backlog::resume(&mut self.backlog) {
            let line = format!("ckpt[{}]: {e}\n", std::process::id());
            // SAFETY: write(2) of our buffer to stderr.
            unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
        }
    }

    fn restart(&mut self, ctx: &mut RestartContext) -> Result<(), String> {
        // What the last checkpoint took out is in the restored sockets' queues already.
        self.backlog.clear();
        self.stuck.clear();
        crate::accept_queue::after_restart();
        self.reconnect_outside(ctx);
        // ckpt-restart made the sockets and installed them before the restorer ran; record
        // the ones whose kernel addresses are not the saved ones.
        USED.store(0, Ordering::Release);
        let mut n = 0;
        for f in ctx.fds {
            let Some(r) = f.object else { continue };
            let Some((_, s)) = self.saved.iter().find(|(k, _)| *k == r.key) else {
                continue;
            };
            let ino = socket_ino(f.fd);
            if ino == 0
                || TABLE[..n]
                    .iter()
                    .any(|e| e.ino.load(Ordering::Relaxed) == ino)
            {
                continue;
            }
            if address(f.fd, false) == s.local && address(f.fd, true) == s.peer {
                continue;
            }
            if n == NAMES {
                ctx.warnings.push(format!(
                    "more than {NAMES} restored sockets changed address; fd {} shows its new one",
                    f.fd
                ));
                break;
            }
            put(&TABLE[n].local, &s.local);
            put(&TABLE[n].peer, &s.peer);
            TABLE[n].ino.store(ino, Ordering::Relaxed);
            n += 1;
        }
        USED.store(n, Ordering::Release);
        Ok(())
    }
}
