//! Restarts in parts (`ckpt-restart --part`, one command per host): the TCP connections
//! between processes that different parts bring back, rebuilt through the coordinator's name
//! service, with the bytes each end had received put back.
//!
//! Owns the names this restart publishes and looks up (all under
//! `restart/<computation>/<generation>/`), and the protocol on a connection before the
//! program gets it:
//!
//! 1. Every part publishes `ends/<vpid>` for each process it restarts: the (local, peer)
//!    addresses of every connected TCP socket it has no other end for, and the addresses of
//!    its listeners. Then it looks up `ends/<vpid>` of every other process of the checkpoint
//!    (waiting for the parts that have not started yet: the one place a missing part shows).
//! 2. A connection whose two ends are in different parts is accepted by the end whose local
//!    address sorts first: its part listens on a scratch port and publishes it as
//!    `conn/<lower address>|<higher address>`; the other part looks that up, connects (from its
//!    old local address when it is free) and sends `CKPTCONN`, a 2-byte length and the name.
//! 3. Both ends then send each other the bytes they had received (8-byte length, bytes), read
//!    the other's, and write them back: they land in the receive queue of the end that had
//!    them. Nothing else is ever in the stream, so the program reads exactly what it would
//!    have.
//!
//! A part's own pending connections to a listener in another part connect to it as soon as
//! that part published (its listeners exist then). Every wait is bounded and names what did
//! not arrive. This module must never touch a connection between two processes of the same
//! part (`sockets.rs` makes those directly) and never print.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use ckpt_format::wire::Msg;

use crate::CommandConn;

/// How long a part waits for the others (to publish, connect, exchange), unless
/// `CKPT_PART_TIMEOUT` (seconds) says otherwise.
pub const PART_TIMEOUT: Duration = Duration::from_secs(60);

fn part_timeout() -> Duration {
    std::env::var("CKPT_PART_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map_or(PART_TIMEOUT, Duration::from_secs)
}

const HELLO: &[u8; 8] = b"CKPTCONN";

/// The name service, as one part of a restart sees it.
pub struct Names<'a> {
    conn: &'a mut CommandConn,
    prefix: String,
    /// vpids this part restarts.
    pub own: Vec<u64>,
    /// The other processes of the checkpoint: (vpid, program).
    pub others: Vec<(u64, String)>,
    /// This host's address (port 0) as the coordinator sees it.
    host_ip: Vec<u8>,
}

impl<'a> Names<'a> {
    pub fn new(
        conn: &'a mut CommandConn,
        comp_id: u64,
        generation: u64,
        own: Vec<u64>,
        others: Vec<(u64, String)>,
    ) -> Names<'a> {
        let host_ip = local_name(conn.stream().as_raw_fd()).unwrap_or_default();
        Names {
            host_ip,
            conn,
            prefix: format!("restart/{comp_id:016x}/{generation}/"),
            own,
            others,
        }
    }

    fn publish(&mut self, key: &str, value: Vec<u8>) -> Result<()> {
        let key = format!("{}{key}", self.prefix);
        match self
            .conn
            .request(&Msg::Publish { key, value }, Duration::from_secs(10))?
        {
            Msg::Ok => Ok(()),
            Msg::Error { message } => bail!("coordinator at {}: {message}", self.conn.addr()),
            other => bail!(
                "coordinator at {}: unexpected answer {other:?}",
                self.conn.addr()
            ),
        }
    }

    /// Waits (until `deadline`) for `key`; `what` says who should have published it.
    fn lookup(&mut self, key: &str, what: &str, deadline: Instant) -> Result<Vec<u8>> {
        let full = format!("{}{key}", self.prefix);
        self.conn.send(&Msg::Lookup { key: full.clone() })?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "{what} did not arrive within {} s (waiting for {full:?} in the coordinator's name service)",
                    part_timeout().as_secs()
                );
            }
            match self.conn.recv(Some(left)) {
                Ok(Msg::Value { key, value }) if key == full => return Ok(value),
                Ok(Msg::Error { message }) => {
                    bail!("coordinator at {}: {message}", self.conn.addr())
                }
                Ok(_) => {}
                Err(crate::ClientError::Timeout { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// One end of a connection this part holds: index in the caller's list, addresses, and the
/// bytes it had received.
pub struct End<'d> {
    pub index: usize,
    pub local: Vec<u8>,
    pub peer: Vec<u8>,
    pub data: &'d [u8],
}

/// What the other parts hold.
#[derive(Default)]
pub struct Remote {
    /// (local, peer) of their connection ends.
    pub ends: Vec<(Vec<u8>, Vec<u8>)>,
    /// Their listeners' addresses.
    pub listeners: Vec<Vec<u8>>,
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

fn take_bytes(inp: &mut &[u8]) -> Option<Vec<u8>> {
    if inp.len() < 2 {
        return None;
    }
    let n = u16::from_le_bytes([inp[0], inp[1]]) as usize;
    let b = inp.get(2..2 + n)?.to_vec();
    *inp = &inp[2 + n..];
    Some(b)
}

fn encode(ends: &[(&[u8], &[u8])], listeners: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(ends.len() as u32).to_le_bytes());
    for (l, p) in ends {
        put_bytes(&mut out, l);
        put_bytes(&mut out, p);
    }
    out.extend_from_slice(&(listeners.len() as u32).to_le_bytes());
    for l in listeners {
        put_bytes(&mut out, l);
    }
    out
}

fn decode(mut inp: &[u8], into: &mut Remote) -> Option<()> {
    let count = |inp: &mut &[u8]| -> Option<usize> {
        let n = u32::from_le_bytes(inp.get(..4)?.try_into().ok()?) as usize;
        *inp = &inp[4..];
        Some(n)
    };
    for _ in 0..count(&mut inp)? {
        let l = take_bytes(&mut inp)?;
        let p = take_bytes(&mut inp)?;
        into.ends.push((l, p));
    }
    for _ in 0..count(&mut inp)? {
        into.listeners.push(take_bytes(&mut inp)?);
    }
    Some(())
}

/// Step 1: publishes this part's unmatched connection ends and listeners, and learns the
/// other parts'.
pub fn exchange_ends(
    names: &mut Names,
    ends: &[(&[u8], &[u8])],
    listeners: &[&[u8]],
) -> Result<Remote> {
    let value = encode(ends, listeners);
    for v in names.own.clone() {
        names.publish(&format!("ends/{v}"), value.clone())?;
    }
    let deadline = Instant::now() + part_timeout();
    let mut remote = Remote::default();
    for (v, prog) in names.others.clone() {
        let what = format!(
            "vpid {v} ({prog}): no `ckpt-restart --part` with its image joined this restart; it"
        );
        let value = names.lookup(&format!("ends/{v}"), &what, deadline)?;
        decode(&value, &mut remote)
            .ok_or_else(|| anyhow!("vpid {v}: the coordinator's name service holds garbage"))?;
    }
    Ok(remote)
}

use crate::sockets::{last_err, owned};

fn conn_name(e: &End) -> String {
    let (a, b) = if e.local <= e.peer {
        (&e.local, &e.peer)
    } else {
        (&e.peer, &e.local)
    };
    format!(
        "conn/{}|{}",
        crate::sockets::show(a),
        crate::sockets::show(b)
    )
}

fn family(addr: &[u8]) -> i32 {
    if addr.len() >= 2 {
        i32::from(u16::from_ne_bytes([addr[0], addr[1]]))
    } else {
        libc::AF_UNSPEC
    }
}

/// `addr` with port 0 (same family and IP).
fn any_port(addr: &[u8]) -> Vec<u8> {
    let mut a = addr.to_vec();
    if a.len() >= 4 {
        a[2] = 0;
        a[3] = 0;
    }
    a
}

fn local_name(fd: RawFd) -> std::io::Result<Vec<u8>> {
    let mut buf = [0u8; 128];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockname into a buffer of `len` bytes.
    if unsafe { libc::getsockname(fd, buf.as_mut_ptr().cast(), &mut len) } != 0 {
        return Err(last_err());
    }
    Ok(buf[..len as usize].to_vec())
}

/// A scratch listener for the connections this part accepts, on `like`'s IP if this host
/// has it, else on every address (published with the IP this host reaches the coordinator
/// from).
fn scratch_listener(like: &[u8], host_ip: &[u8]) -> Result<(OwnedFd, Vec<u8>)> {
    let fam = family(like);
    // SAFETY: socket(2).
    let fd = owned(unsafe { libc::socket(fam, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    let want = any_port(like);
    let bound = crate::sockets::bind_to(fd.as_raw_fd(), &want).is_ok();
    if !bound {
        let mut wild = vec![0u8; want.len()];
        wild[..2].copy_from_slice(&want[..2]);
        crate::sockets::bind_to(fd.as_raw_fd(), &wild)
            .map_err(|e| anyhow!("a scratch port to rebuild connections: {e}"))?;
    }
    // SAFETY: listen on our socket.
    if unsafe { libc::listen(fd.as_raw_fd(), 128) } != 0 {
        bail!("listen on a scratch port: {}", last_err());
    }
    let mut addr = local_name(fd.as_raw_fd())?;
    if !bound {
        if family(host_ip) == fam && host_ip.len() == addr.len() {
            // Same layout: copy the IP, keep our port.
            let (from, to) = if fam == libc::AF_INET {
                (4, 8)
            } else {
                (8, 24)
            };
            addr[from..to].copy_from_slice(&host_ip[from..to]);
        } else {
            bail!(
                "cannot rebuild a connection from {}: this host has no such address",
                crate::sockets::show(like)
            );
        }
    }
    Ok((fd, addr))
}

fn wait_fd(fd: RawFd, events: i16, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(60_000) as i32) };
    r == 1
}

/// One non-blocking `recv` into `buf`: `Ok(Some(n))` bytes, `Ok(None)` nothing yet; end of
/// file is an error (the other part never closes before the program has the connection).
fn recv_some(fd: RawFd, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
    // SAFETY: recv into `buf`, at most its length.
    let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if r == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the other part closed the connection",
        ));
    }
    if r < 0 {
        let e = last_err();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(r as usize))
}

/// Reads exactly `n` bytes (never more: what follows belongs to the program).
fn read_exact(fd: RawFd, n: usize, deadline: Instant) -> std::io::Result<Vec<u8>> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        if !wait_fd(fd, libc::POLLIN, deadline) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the other part sent nothing",
            ));
        }
        got += recv_some(fd, &mut out[got..])?.unwrap_or(0);
    }
    Ok(out)
}

/// Sends `out` while reading the other side's framed bytes (both sides send first, so
/// neither may wait for its send to finish before reading).
fn swap(fd: RawFd, out: &[u8], deadline: Instant) -> std::io::Result<Vec<u8>> {
    let mut sent = 0;
    let mut hdr = Vec::new();
    let mut body: Option<Vec<u8>> = None;
    let mut got = 0;
    loop {
        let done_in = body.as_ref().is_some_and(|b| got == b.len());
        if sent == out.len() && done_in {
            return Ok(body.unwrap());
        }
        let mut pfd = libc::pollfd {
            fd,
            events: if sent < out.len() { libc::POLLOUT } else { 0 }
                | if done_in { 0 } else { libc::POLLIN },
            revents: 0,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        // SAFETY: poll on one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(60_000) as i32) } < 1 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the other part did not send its bytes",
            ));
        }
        if sent < out.len() && pfd.revents & (libc::POLLOUT | libc::POLLERR) != 0 {
            // SAFETY: send from a valid slice, never blocking.
            let r = unsafe {
                libc::send(
                    fd,
                    out[sent..].as_ptr().cast(),
                    out.len() - sent,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if r < 0 {
                let e = last_err();
                if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
                    return Err(e);
                }
            } else {
                sent += r as usize;
            }
        }
        if !done_in && pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            let mut buf = [0u8; 65536];
            let want = match &body {
                None => 8 - hdr.len(),
                Some(b) => (b.len() - got).min(buf.len()),
            };
            let Some(r) = recv_some(fd, &mut buf[..want])? else {
                continue;
            };
            match &mut body {
                None => {
                    hdr.extend_from_slice(&buf[..r]);
                    if hdr.len() == 8 {
                        let n = u64::from_le_bytes(hdr[..8].try_into().unwrap()) as usize;
                        if n > 1 << 30 {
                            return Err(std::io::Error::other("the other part sent garbage"));
                        }
                        body = Some(vec![0u8; n]);
                    }
                }
                Some(b) => {
                    b[got..got + r].copy_from_slice(&buf[..r]);
                    got += r;
                }
            }
        }
    }
}

/// Steps 2 and 3 for `cross` (ends whose other end another part holds): returns (index, fd)
/// for each.
pub fn connect_cross(names: &mut Names, cross: &[End]) -> Result<Vec<(usize, OwnedFd)>> {
    let host_ip = names.host_ip.clone();
    let deadline = Instant::now() + part_timeout();
    // Accepting ends: a scratch listener per (family, IP), one name each.
    let mut listeners: BTreeMap<Vec<u8>, (OwnedFd, Vec<u8>)> = BTreeMap::new();
    let mut expected: BTreeMap<String, &End> = BTreeMap::new();
    for e in cross.iter().filter(|e| e.local < e.peer) {
        let ip = any_port(&e.local);
        if !listeners.contains_key(&ip) {
            listeners.insert(ip.clone(), scratch_listener(&e.local, &host_ip)?);
        }
        let addr = listeners[&ip].1.clone();
        let name = conn_name(e);
        names.publish(&name, addr)?;
        expected.insert(name, e);
    }
    // Connecting ends.
    let mut out: Vec<(usize, OwnedFd, &End)> = Vec::new();
    for e in cross.iter().filter(|e| e.local >= e.peer) {
        let name = conn_name(e);
        let what = format!(
            "the other end of the connection {} -> {}",
            crate::sockets::show(&e.local),
            crate::sockets::show(&e.peer)
        );
        let to = names.lookup(&name, &what, deadline)?;
        // SAFETY: socket(2).
        let fd = owned(unsafe {
            libc::socket(family(&e.local), libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
        })?;
        crate::sockets::reuse(fd.as_raw_fd());
        // Its old address when free (else the kernel's; the sockets plugin shows the old).
        let _ = crate::sockets::bind_to(fd.as_raw_fd(), &e.local);
        crate::sockets::connect_to(fd.as_raw_fd(), &to).map_err(|err| {
            anyhow!(
                "rebuilding {} -> {} through {}: {err}",
                crate::sockets::show(&e.local),
                crate::sockets::show(&e.peer),
                crate::sockets::show(&to)
            )
        })?;
        let mut hello = HELLO.to_vec();
        put_bytes(&mut hello, name.as_bytes());
        crate::sockets::refill(fd.as_raw_fd(), true, &hello)
            .map_err(|err| anyhow!("{name}: {err:#}"))?;
        out.push((e.index, fd, e));
    }
    // Accept until every expected connection said who it is.
    while !expected.is_empty() {
        let mut pfds: Vec<libc::pollfd> = listeners
            .values()
            .map(|(fd, _)| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        // SAFETY: poll on our pollfd array.
        let r = unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                left.as_millis().min(60_000) as i32,
            )
        };
        if r < 1 {
            let missing: Vec<&str> = expected.keys().map(|k| &k[5..]).collect();
            bail!(
                "the other part did not reconnect within {} s: {}",
                part_timeout().as_secs(),
                missing.join(", ")
            );
        }
        for p in pfds.iter().filter(|p| p.revents != 0) {
            // SAFETY: accept4 without an address.
            let c = owned(unsafe {
                libc::accept4(
                    p.fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            })
            .map_err(|e| anyhow!("accept on a scratch port: {e}"))?;
            let head = read_exact(c.as_raw_fd(), 10, deadline)?;
            if &head[..8] != HELLO {
                bail!("a stranger connected to a scratch port of this restart");
            }
            let n = u16::from_le_bytes([head[8], head[9]]) as usize;
            let name =
                String::from_utf8_lossy(&read_exact(c.as_raw_fd(), n, deadline)?).into_owned();
            let Some(e) = expected.remove(&name) else {
                bail!("the other part reconnected {name:?}, which this part does not hold");
            };
            out.push((e.index, c, e));
        }
    }
    // Put back what each end had received: both at once (each part does all of its
    // connections in parallel, so no order between parts can deadlock).
    let results: Vec<Result<()>> = std::thread::scope(|sc| {
        let handles: Vec<_> = out
            .iter()
            .map(|(_, fd, e)| {
                let fd = fd.as_raw_fd();
                sc.spawn(move || -> Result<()> {
                    crate::sockets::roomy(fd, e.data.len());
                    let mut msg = (e.data.len() as u64).to_le_bytes().to_vec();
                    msg.extend_from_slice(e.data);
                    let theirs = swap(fd, &msg, deadline).map_err(|err| {
                        anyhow!(
                            "putting back the bytes of {} -> {}: {err}",
                            crate::sockets::show(&e.local),
                            crate::sockets::show(&e.peer)
                        )
                    })?;
                    crate::sockets::refill(fd, true, &theirs)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("thread panicked"))))
            .collect()
    });
    for r in results {
        r?;
    }
    if std::env::var_os("CKPT_DEBUG").is_some() {
        for (_, _, e) in &out {
            eprintln!(
                "ckpt-restart: connection {} -> {} rebuilt with another part, {} received bytes put back",
                crate::sockets::show(&e.local),
                crate::sockets::show(&e.peer),
                e.data.len()
            );
        }
    }
    Ok(out.into_iter().map(|(i, fd, _)| (i, fd)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut a = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&port.to_be_bytes());
        a.extend_from_slice(&ip);
        a.extend_from_slice(&[0; 8]);
        a
    }

    /// An end whose IP this host does not have (another host's, after a migration): the
    /// scratch listener is on every address and published with the IP the coordinator sees.
    #[test]
    fn scratch_listener_on_a_host_without_the_old_address() {
        let (fd, addr) = scratch_listener(&v4([192, 0, 2, 1], 5000), &v4([127, 0, 0, 1], 0))
            .expect("scratch listener");
        assert_eq!(&addr[4..8], &[127, 0, 0, 1]);
        let port = u16::from_be_bytes([addr[2], addr[3]]);
        assert_ne!(port, 0);
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("reachable");
        drop(fd);
        // This host has the end's IP: the listener is on it.
        let (_fd, addr) = scratch_listener(&v4([127, 0, 0, 1], 5000), &v4([10, 9, 9, 9], 0))
            .expect("scratch listener");
        assert_eq!(&addr[4..8], &[127, 0, 0, 1]);
    }

    #[test]
    fn ends_round_trip() {
        let a = [2u8, 0, 1, 2, 127, 0, 0, 1];
        let b = [2u8, 0, 3, 4, 127, 0, 0, 1];
        let v = encode(&[(&a[..], &b[..])], &[&b[..]]);
        let mut r = Remote::default();
        decode(&v, &mut r).unwrap();
        assert_eq!(r.ends, vec![(a.to_vec(), b.to_vec())]);
        assert_eq!(r.listeners, vec![b.to_vec()]);
        assert!(decode(&v[..v.len() - 1], &mut Remote::default()).is_none());
    }
}
