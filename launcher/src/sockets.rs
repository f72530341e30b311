//! The restart side of sockets (the checkpoint side is `plugins/src/sockets.rs`): `ckpt-restart`
//! rebuilds every socket of the images before it forks the tree, the way it makes pipes, and
//! the processes inherit them on their fd numbers.
//!
//! Order: listening sockets first (bound again to their address with `SO_REUSEADDR`; a taken
//! address is an error naming it); then every connection with both ends in the images — a TCP
//! connection is made again through the program's own listener when the accepted end's address
//! is one (else through a temporary listener on that address), with the connecting end bound
//! to its old address first, so both ends see the same addresses as before; a UNIX connection
//! accepted from a listener of the images likewise, other UNIX connections (socketpair) with
//! `socketpair`; then connections whose accepting end was not yet accepted (connected again,
//! left in the listener's queue: since the sockets plugin hides accept queues at checkpoint
//! time, these are mostly its placeholders, whose hidden ends were rebuilt in the step
//! before); then unconnected and datagram sockets. Last, each end's saved
//! receive queue is written into its peer so the bytes wait in the same queue as before.
//! A connection whose peer is outside the computation comes back as a *dead socket*: a socket
//! whose receive queue holds the saved bytes, then end of file; writes fail with `EPIPE`.
//!
//! Both ends of a connection between processes of this restart are made here. In a restart in
//! parts (`--part`, one per host), a TCP connection to a process of another part is rebuilt
//! with that part through the coordinator's name service (`parts.rs`, between the two steps
//! above), and ends that had shut down their sending side do so again after the refill.

use anyhow::{Result, anyhow, bail};
use ckpt_format::image::{SharedObject, SockState, SocketObj};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub(crate) fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

pub(crate) fn owned(fd: RawFd) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: a fresh fd the kernel just returned; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A printable address (for messages).
pub fn show(addr: &[u8]) -> String {
    if addr.len() < 2 {
        return "(no address)".into();
    }
    let family = u16::from_ne_bytes([addr[0], addr[1]]) as i32;
    match family {
        libc::AF_INET if addr.len() >= 8 => format!(
            "{}.{}.{}.{}:{}",
            addr[4],
            addr[5],
            addr[6],
            addr[7],
            u16::from_be_bytes([addr[2], addr[3]])
        ),
        libc::AF_INET6 if addr.len() >= 24 => {
            let ip: [u8; 16] = addr[8..24].try_into().unwrap();
            format!(
                "[{}]:{}",
                std::net::Ipv6Addr::from(ip),
                u16::from_be_bytes([addr[2], addr[3]])
            )
        }
        libc::AF_UNIX => {
            let path = &addr[2..];
            if path.is_empty() {
                "(unnamed UNIX socket)".into()
            } else if path[0] == 0 {
                format!("@{}", String::from_utf8_lossy(&path[1..]))
            } else {
                let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
                String::from_utf8_lossy(&path[..end]).into_owned()
            }
        }
        f => format!("(family {f})"),
    }
}

fn port(addr: &[u8]) -> u16 {
    if addr.len() >= 4 {
        u16::from_be_bytes([addr[2], addr[3]])
    } else {
        0
    }
}

fn inet_ip(addr: &[u8]) -> &[u8] {
    let family = if addr.len() >= 2 {
        u16::from_ne_bytes([addr[0], addr[1]]) as i32
    } else {
        0
    };
    match family {
        libc::AF_INET if addr.len() >= 8 => &addr[4..8],
        libc::AF_INET6 if addr.len() >= 24 => &addr[8..24],
        _ => &[],
    }
}

/// Whether an address is worth binding again (a name or a port, not "nothing").
fn bindable(s: &SocketObj) -> bool {
    match s.family {
        libc::AF_UNIX => s.local.len() > 2,
        _ => port(&s.local) != 0,
    }
}

/// Whether a listener bound at `l` accepts connections made to `addr`.
fn listener_covers(l: &SocketObj, addr: &[u8]) -> bool {
    covers(l.family, &l.local, addr)
}

/// Whether a listener of `family` bound at `local` accepts connections made to `addr`.
fn covers(family: i32, local: &[u8], addr: &[u8]) -> bool {
    if family != libc::AF_UNIX {
        if local.len() != addr.len() || port(local) != port(addr) || port(addr) == 0 {
            return false;
        }
        let ip = inet_ip(local);
        return ip.iter().all(|&b| b == 0) || ip == inet_ip(addr);
    }
    local.len() > 2 && local == addr
}

fn is_tcp(s: &SocketObj) -> bool {
    matches!(s.family, libc::AF_INET | libc::AF_INET6) && s.stype == libc::SOCK_STREAM
}

fn setopt(fd: RawFd, level: i32, name: i32, v: &[u8]) -> i32 {
    // SAFETY: setsockopt with a buffer of the given length.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            v.as_ptr().cast(),
            v.len() as libc::socklen_t,
        )
    }
}

pub(crate) fn reuse(fd: RawFd) {
    setopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        &1i32.to_ne_bytes(),
    );
}

/// A new socket like `s` with its options set (not bound).
fn new_socket(s: &SocketObj) -> Result<OwnedFd> {
    // SAFETY: socket(2).
    let fd = owned(unsafe { libc::socket(s.family, s.stype | libc::SOCK_CLOEXEC, s.protocol) })
        .map_err(|e| anyhow!("socket({}, {}): {e}", s.family, s.stype))?;
    for (level, name, v) in &s.options {
        // Best effort: an option the kernel refuses now changes nothing essential.
        setopt(fd.as_raw_fd(), *level, *name, v);
    }
    if s.family != libc::AF_UNIX && s.stype == libc::SOCK_STREAM {
        // As the checkpoint does (plugins/src/sockets.rs): the ports stay rebindable when
        // this run is killed in turn.
        reuse(fd.as_raw_fd());
    }
    Ok(fd)
}

/// Runs `op` with the working directory at `dir` when `addr` is a relative UNIX path (which
/// the kernel resolves against the caller's working directory); ckpt-restart is
/// single-threaded while it makes objects.
fn in_dir<T>(
    dir: &str,
    addr: &[u8],
    op: impl FnOnce() -> std::io::Result<T>,
) -> std::io::Result<T> {
    let relative = addr.len() > 2
        && u16::from_ne_bytes([addr[0], addr[1]]) as i32 == libc::AF_UNIX
        && addr[2] != 0
        && addr[2] != b'/';
    if !relative || dir.is_empty() {
        return op();
    }
    let here = std::fs::File::open(".")?;
    std::env::set_current_dir(dir)?;
    let r = op();
    // SAFETY: fchdir back to the directory we came from.
    unsafe { libc::fchdir(std::os::fd::AsRawFd::as_raw_fd(&here)) };
    r
}

pub(crate) fn bind_to(fd: RawFd, addr: &[u8]) -> std::io::Result<()> {
    if addr.len() > 2
        && u16::from_ne_bytes([addr[0], addr[1]]) as i32 == libc::AF_UNIX
        && addr[2] != 0
    {
        // A path left by the killed run: remove it if it is a socket.
        let end = addr[2..]
            .iter()
            .position(|&c| c == 0)
            .map_or(addr.len(), |p| p + 2);
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::FileTypeExt;
        let p = std::ffi::OsStr::from_bytes(&addr[2..end]);
        if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(p);
        }
    }
    // SAFETY: bind with a sockaddr of the given length.
    let r = unsafe { libc::bind(fd, addr.as_ptr().cast(), addr.len() as libc::socklen_t) };
    if r != 0 { Err(last_err()) } else { Ok(()) }
}

pub(crate) fn connect_to(fd: RawFd, addr: &[u8]) -> std::io::Result<()> {
    loop {
        // SAFETY: connect with a sockaddr of the given length.
        let r = unsafe { libc::connect(fd, addr.as_ptr().cast(), addr.len() as libc::socklen_t) };
        if r == 0 {
            return Ok(());
        }
        let e = last_err();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn accept_one(l: RawFd) -> Result<OwnedFd> {
    let mut pfd = libc::pollfd {
        fd: l,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd, 5 s.
    if unsafe { libc::poll(&mut pfd, 1, 5000) } != 1 {
        bail!("no connection arrived within 5 s");
    }
    // SAFETY: accept4 without an address.
    owned(unsafe {
        libc::accept4(
            l,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    })
    .map_err(|e| anyhow!("accept: {e}"))
}

/// Writes `data` into `fd` (a stream: the bytes; otherwise u32-length-prefixed messages).
pub(crate) fn refill(fd: RawFd, stream: bool, data: &[u8]) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let send = |mut buf: &[u8], whole: bool| -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !buf.is_empty() {
            // SAFETY: send from a valid slice, never blocking.
            let n = unsafe {
                libc::send(
                    fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                if whole {
                    return Ok(());
                }
                buf = &buf[n as usize..];
                continue;
            }
            let e = last_err();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                _ => bail!("cannot put back {} bytes: {e}", buf.len()),
            }
        }
        Ok(())
    };
    if stream {
        return send(data, false);
    }
    let mut at = 0;
    while at + 4 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        let end = (at + 4 + len).min(data.len());
        send(&data[at + 4..end], true)?;
        at = end;
    }
    Ok(())
}

/// Raises the buffers of a fresh end so the saved bytes fit.
pub(crate) fn roomy(fd: RawFd, bytes: usize) {
    let want = (bytes as i32).saturating_mul(2).max(1 << 16);
    for name in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        let mut cur: i32 = 0;
        let mut l = 4 as libc::socklen_t;
        // SAFETY: getsockopt into an int.
        unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&mut cur as *mut i32).cast(),
                &mut l,
            )
        };
        if cur < want {
            setopt(fd, libc::SOL_SOCKET, name, &want.to_ne_bytes());
        }
    }
}

/// A socket whose reads give `data` and then end of file, and whose writes fail.
fn dead_socket(s: &SocketObj, data: &[u8]) -> Result<OwnedFd> {
    let stype = if s.stype == libc::SOCK_STREAM {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_SEQPACKET
    };
    let mut sv = [0i32; 2];
    // SAFETY: socketpair fills two fds.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            stype | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    } != 0
    {
        bail!("socketpair: {}", last_err());
    }
    let (mine, other) = (owned(sv[0])?, owned(sv[1])?);
    roomy(other.as_raw_fd(), data.len());
    roomy(mine.as_raw_fd(), data.len());
    refill(other.as_raw_fd(), stype == libc::SOCK_STREAM, data)?;
    drop(other);
    Ok(mine)
}

/// Whether `CKPT_RECONNECT` (comma-separated `HOST:PORT` as [`show`] prints them, or `*`)
/// names this outside peer: its connection is made anew instead of coming back closed.
fn reconnect_wanted(peer: &[u8]) -> bool {
    let Ok(list) = std::env::var("CKPT_RECONNECT") else {
        return false;
    };
    let me = show(peer);
    list.split(',').map(str::trim).any(|x| x == "*" || x == me)
}

/// Rebuilds every socket object; returns (key, fd) for each, the fds close-on-exec and at or
/// above `high`. `owner(key)` names the image that lists it, for messages. `parts`: this is
/// one part of a restart in parts; TCP connections to processes of other parts are rebuilt
/// through the coordinator's name service (`parts.rs`).
pub fn rebuild(
    objs: &[&SharedObject],
    high: i32,
    owner: &dyn Fn(u64) -> String,
    warnings: &mut Vec<String>,
    parts: Option<&mut crate::parts::Names>,
) -> Result<Vec<(u64, OwnedFd)>> {
    let sock = |o: &SharedObject| -> Option<SocketObj> {
        match &o.kind {
            ckpt_format::image::ObjKind::Socket(s) => Some(s.clone()),
            _ => None,
        }
    };
    let items: Vec<(&SharedObject, SocketObj)> = objs
        .iter()
        .filter_map(|o| sock(o).map(|s| (*o, s)))
        .collect();
    if std::env::var_os("CKPT_DEBUG").is_some() {
        for (o, s) in &items {
            eprintln!(
                "ckpt-restart: socket {:#x} ({}): family {} type {} {:?} {} -> {} ino {} peer ino {}, {} bytes queued",
                o.key,
                owner(o.key),
                s.family,
                s.stype,
                s.state,
                show(&s.local),
                show(&s.peer),
                s.ino,
                s.peer_ino,
                o.data.len()
            );
        }
    }
    let mut made: Vec<Option<OwnedFd>> = (0..items.len()).map(|_| None).collect();
    // Bytes to put into each made fd (so they land in its peer's receive queue).
    let mut fills: Vec<(usize, bool, Vec<u8>)> = Vec::new();
    let stream_of = |s: &SocketObj| s.stype == libc::SOCK_STREAM;

    // 1. Listeners.
    let mut listeners: Vec<usize> = Vec::new();
    for (i, (o, s)) in items.iter().enumerate() {
        let SockState::Listening { backlog } = s.state else {
            continue;
        };
        let fd = new_socket(s).map_err(|e| anyhow!("{}: {e:#}", owner(o.key)))?;
        reuse(fd.as_raw_fd());
        in_dir(&s.cwd, &s.local, || bind_to(fd.as_raw_fd(), &s.local)).map_err(|e| {
            anyhow!(
                "{}: cannot listen on {} again: {e}",
                owner(o.key),
                show(&s.local)
            )
        })?;
        // SAFETY: listen on our socket.
        if unsafe { libc::listen(fd.as_raw_fd(), backlog) } != 0 {
            bail!(
                "{}: listen on {}: {}",
                owner(o.key),
                show(&s.local),
                last_err()
            );
        }
        made[i] = Some(fd);
        listeners.push(i);
    }
    let listener_for = |addr: &[u8], family: i32| -> Option<usize> {
        listeners
            .iter()
            .copied()
            .find(|&l| items[l].1.family == family && listener_covers(&items[l].1, addr))
    };

    // 2. Connections with both ends in the images.
    let connected: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].1.state == SockState::Connected)
        .collect();
    let mut pending: Vec<usize> = Vec::new();
    for &a in &connected {
        if made[a].is_some() {
            continue;
        }
        let sa = &items[a].1;
        let partner = connected.iter().copied().find(|&b| {
            b != a && made[b].is_none() && {
                let sb = &items[b].1;
                if sa.family == libc::AF_UNIX {
                    sa.peer_ino != 0 && sb.ino == sa.peer_ino && sb.peer_ino == sa.ino
                } else {
                    sb.stype == sa.stype && sb.local == sa.peer && sb.peer == sa.local
                }
            }
        });
        let Some(b) = partner else {
            pending.push(a);
            continue;
        };
        let sb = &items[b].1;
        let who = owner(items[a].0.key);
        // Which end was accepted (its local address is a listener's)?
        let (acc, con) = if sa.stype != libc::SOCK_DGRAM
            && listener_for(&sa.local, sa.family).is_some()
            && (sa.family != libc::AF_UNIX || sb.peer == sa.local)
        {
            (a, b)
        } else if sb.stype != libc::SOCK_DGRAM
            && listener_for(&sb.local, sb.family).is_some()
            && (sb.family != libc::AF_UNIX || sa.peer == sb.local)
        {
            (b, a)
        } else {
            (a, b)
        };
        let (s_acc, s_con) = (&items[acc].1, &items[con].1);
        let (fa, fc) = if s_acc.family == libc::AF_UNIX
            && listener_for(&s_acc.local, libc::AF_UNIX).is_none()
        {
            let mut sv = [0i32; 2];
            // SAFETY: socketpair fills two fds.
            if unsafe {
                libc::socketpair(
                    libc::AF_UNIX,
                    s_acc.stype | libc::SOCK_CLOEXEC,
                    0,
                    sv.as_mut_ptr(),
                )
            } != 0
            {
                bail!("{who}: socketpair: {}", last_err());
            }
            (owned(sv[0])?, owned(sv[1])?)
        } else if s_acc.stype == libc::SOCK_DGRAM {
            // Connected datagram sockets (UDP): bind each to its address, connect each to the
            // other.
            let x = new_socket(s_acc)?;
            let y = new_socket(s_con)?;
            for (f, s) in [(&x, s_acc), (&y, s_con)] {
                reuse(f.as_raw_fd());
                if bindable(s) {
                    in_dir(&s.cwd, &s.local, || bind_to(f.as_raw_fd(), &s.local))
                        .map_err(|e| anyhow!("{who}: cannot bind {} again: {e}", show(&s.local)))?;
                }
            }
            connect_to(x.as_raw_fd(), &s_acc.peer)
                .map_err(|e| anyhow!("{who}: connect to {}: {e}", show(&s_acc.peer)))?;
            connect_to(y.as_raw_fd(), &s_con.peer)
                .map_err(|e| anyhow!("{who}: connect to {}: {e}", show(&s_con.peer)))?;
            (x, y)
        } else {
            // Through the program's listener, or a temporary one on the accepted end's address.
            let temp;
            let lfd = match listener_for(&s_acc.local, s_acc.family) {
                Some(l) => made[l].as_ref().unwrap().as_raw_fd(),
                None => {
                    let t = new_socket(s_acc)?;
                    reuse(t.as_raw_fd());
                    in_dir(&s_acc.cwd, &s_acc.local, || {
                        bind_to(t.as_raw_fd(), &s_acc.local)
                    })
                    .map_err(|e| {
                        anyhow!(
                            "{who}: cannot bind {} again to rebuild a connection: {e}",
                            show(&s_acc.local)
                        )
                    })?;
                    // SAFETY: listen on our socket.
                    if unsafe { libc::listen(t.as_raw_fd(), 1) } != 0 {
                        bail!("{who}: listen on {}: {}", show(&s_acc.local), last_err());
                    }
                    temp = t;
                    temp.as_raw_fd()
                }
            };
            let c = new_socket(s_con)?;
            reuse(c.as_raw_fd());
            if bindable(s_con) {
                // Fails while the old port is in TIME_WAIT: the kernel then picks a port, and
                // the sockets plugin's getsockname/getpeername answer with the saved ones.
                let _ = in_dir(&s_con.cwd, &s_con.local, || {
                    bind_to(c.as_raw_fd(), &s_con.local)
                });
            }
            // A wildcard listener is reached on the address the accepted end had.
            in_dir(&s_acc.cwd, &s_acc.local, || {
                connect_to(c.as_raw_fd(), &s_acc.local)
            })
            .map_err(|e| anyhow!("{who}: connect to {}: {e}", show(&s_acc.local)))?;
            let acc_fd =
                accept_one(lfd).map_err(|e| anyhow!("{who}: {}: {e:#}", show(&s_acc.local)))?;
            (acc_fd, c)
        };
        let (da, dc) = (&items[acc].0.data, &items[con].0.data);
        roomy(fa.as_raw_fd(), dc.len());
        roomy(fc.as_raw_fd(), da.len());
        // What one end had received is written into the other end.
        fills.push((acc, stream_of(s_acc), dc.clone()));
        fills.push((con, stream_of(s_con), da.clone()));
        made[acc] = Some(fa);
        made[con] = Some(fc);
    }

    // 2b. A restart in parts: connections whose other end another part brings back.
    let mut remote_listeners: Vec<Vec<u8>> = Vec::new();
    if let Some(names) = parts {
        let ends: Vec<(&[u8], &[u8])> = pending
            .iter()
            .filter(|&&a| is_tcp(&items[a].1))
            .map(|&a| (&items[a].1.local[..], &items[a].1.peer[..]))
            .collect();
        let mine: Vec<&[u8]> = listeners.iter().map(|&l| &items[l].1.local[..]).collect();
        let remote = crate::parts::exchange_ends(names, &ends, &mine)?;
        let cross: Vec<crate::parts::End> = pending
            .iter()
            .map(|&a| (a, &items[a].1))
            .filter(|(_, s)| {
                is_tcp(s)
                    && remote
                        .ends
                        .iter()
                        .any(|(l, p)| *l == s.peer && *p == s.local)
            })
            .map(|(a, s)| crate::parts::End {
                index: a,
                local: s.local.clone(),
                peer: s.peer.clone(),
                data: &items[a].0.data,
            })
            .collect();
        for (i, fd) in crate::parts::connect_cross(names, &cross)
            .map_err(|e| anyhow!("restart in parts: {e:#}"))?
        {
            made[i] = Some(fd);
        }
        pending.retain(|&a| made[a].is_none());
        remote_listeners = remote.listeners;
    }
    let remote_listener = |s: &SocketObj| {
        remote_listeners
            .iter()
            .any(|l| covers(s.family, l, &s.peer))
    };

    // 3. Connections without their other end: not yet accepted, or to the outside.
    for a in pending {
        let (o, s) = (&items[a].0, &items[a].1);
        if s.stype != libc::SOCK_DGRAM
            && (listener_for(&s.peer, s.family).is_some() || remote_listener(s))
        {
            let c = new_socket(s)?;
            reuse(c.as_raw_fd());
            if bindable(s)
                && in_dir(&s.cwd, &s.local, || bind_to(c.as_raw_fd(), &s.local)).is_err()
                && s.family == libc::AF_UNIX
            {
                // A named connecting UNIX socket (e.g. a placeholder of the sockets plugin's
                // hidden accept queue, recognised by its peer by name) keeps a name, another
                // one: autobind (the getsockname wrapper still answers with the saved one).
                let family = libc::AF_UNIX as libc::sa_family_t;
                // SAFETY: bind with just the family: the kernel picks an abstract name.
                unsafe {
                    libc::bind(
                        c.as_raw_fd(),
                        (&family as *const libc::sa_family_t).cast(),
                        std::mem::size_of::<libc::sa_family_t>() as libc::socklen_t,
                    )
                };
            }
            in_dir(&s.cwd, &s.peer, || connect_to(c.as_raw_fd(), &s.peer))
                .map_err(|e| anyhow!("{}: connect to {}: {e}", owner(o.key), show(&s.peer)))?;
            if !o.data.is_empty() {
                warnings.push(format!(
                    "{}: a connection to {} not yet accepted: its {} received bytes are put back",
                    owner(o.key),
                    show(&s.peer),
                    o.data.len()
                ));
            }
            made[a] = Some(c);
            continue;
        }
        if s.stype == libc::SOCK_DGRAM && s.family != libc::AF_UNIX {
            // UDP with a default peer: bind, connect (no handshake).
            let c = new_socket(s)?;
            reuse(c.as_raw_fd());
            if bindable(s) {
                in_dir(&s.cwd, &s.local, || bind_to(c.as_raw_fd(), &s.local)).map_err(|e| {
                    anyhow!(
                        "{}: cannot bind {} again: {e}",
                        owner(o.key),
                        show(&s.local)
                    )
                })?;
            }
            in_dir(&s.cwd, &s.peer, || connect_to(c.as_raw_fd(), &s.peer))
                .map_err(|e| anyhow!("{}: connect to {}: {e}", owner(o.key), show(&s.peer)))?;
            made[a] = Some(c);
            continue;
        }
        if s.stype == libc::SOCK_STREAM && reconnect_wanted(&s.peer) {
            // The user asked for a new connection to this outside peer (CKPT_RECONNECT).
            let c = new_socket(s)?;
            connect_to(c.as_raw_fd(), &s.peer).map_err(|e| {
                anyhow!(
                    "{}: reconnecting to {} (CKPT_RECONNECT): {e}",
                    owner(o.key),
                    show(&s.peer)
                )
            })?;
            warnings.push(format!(
                "{}: reconnected to {} (CKPT_RECONNECT){}",
                owner(o.key),
                show(&s.peer),
                if o.data.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; the {} bytes it had received and not read are dropped",
                        o.data.len()
                    )
                }
            ));
            made[a] = Some(c);
            continue;
        }
        warnings.push(format!(
            "{}: the connection from {} to {} (outside the computation) comes back closed: {} buffered bytes, then end of file",
            owner(o.key),
            show(&s.local),
            show(&s.peer),
            o.data.len()
        ));
        made[a] = Some(dead_socket(s, &o.data)?);
    }

    // 4. Unconnected sockets (bound or not), datagram receivers.
    for (i, (o, s)) in items.iter().enumerate() {
        if made[i].is_some() {
            continue;
        }
        let fd = new_socket(s).map_err(|e| anyhow!("{}: {e:#}", owner(o.key)))?;
        if bindable(s) {
            in_dir(&s.cwd, &s.local, || bind_to(fd.as_raw_fd(), &s.local)).map_err(|e| {
                anyhow!(
                    "{}: cannot bind {} again: {e}",
                    owner(o.key),
                    show(&s.local)
                )
            })?;
        }
        if !o.data.is_empty() && s.stype != libc::SOCK_STREAM && bindable(s) {
            // Queued datagrams: sent again to its address from a scratch socket.
            let tmp = owned(
                // SAFETY: socket(2).
                unsafe { libc::socket(s.family, s.stype | libc::SOCK_CLOEXEC, 0) },
            )?;
            let mut to = s.local.clone();
            if s.family == libc::AF_INET && inet_ip(&to).iter().all(|&b| b == 0) {
                to[4..8].copy_from_slice(&[127, 0, 0, 1]);
            }
            in_dir(&s.cwd, &to, || connect_to(tmp.as_raw_fd(), &to))
                .map_err(|e| anyhow!("{}: {}: {e}", owner(o.key), show(&to)))?;
            roomy(fd.as_raw_fd(), o.data.len());
            refill(tmp.as_raw_fd(), false, &o.data)
                .map_err(|e| anyhow!("{}: {}: {e:#}", owner(o.key), show(&to)))?;
        }
        made[i] = Some(fd);
    }

    // 5. Refill: each fd in `fills` gets the bytes its peer had received.
    for (i, stream, data) in &fills {
        let fd = made[*i].as_ref().unwrap().as_raw_fd();
        refill(fd, *stream, data).map_err(|e| anyhow!("{}: {e:#}", owner(items[*i].0.key)))?;
    }

    // 6. Ends whose sending side had been shut down: again, now that the bytes they had sent
    //    are back in their peer's queue (which then reads them, then end of file).
    for (i, (_, s)) in items.iter().enumerate() {
        if s.shut_wr
            && let Some(fd) = &made[i]
        {
            // SAFETY: shutdown(2) of our socket.
            unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) };
        }
    }

    let mut out = Vec::new();
    for (i, fd) in made.into_iter().enumerate() {
        let fd = fd.expect("every socket made");
        let (o, _) = &items[i];
        let flags = o.flags.first().copied().unwrap_or(0);
        // SAFETY: F_SETFL on our fd (status flags only).
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & libc::O_NONBLOCK) };
        let hi = crate::objects::above(fd.as_raw_fd(), high)
            .map_err(|e| anyhow!("{}: {e}", owner(o.key)))?;
        out.push((o.key, hi));
    }
    Ok(out)
}
