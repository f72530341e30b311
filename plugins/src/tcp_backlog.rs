//! TCP bytes a sender could not push to its receiver at checkpoint time because the
//! receiver's window was full (a fast producer, a slow consumer): they sit in the sender's
//! send queue, which nothing can read back without `TCP_REPAIR`. Part of the sockets plugin
//! (docs/sockets.md, "Backlog").
//!
//! 1. `drain` (threads frozen, before barrier `suspended`): [`push`] turns Nagle and cork off
//!    for a moment; an end whose unsent bytes make no progress is *stuck* and goes into this
//!    process's note for the others, with how many bytes the program has written on it in
//!    all (`tcpi_bytes_sent` − `tcpi_bytes_retrans` + `SIOCOUTQNSD`).
//! 2. `settle` (every process frozen, nothing recorded yet; every process's notes known): the
//!    other end of a stuck connection, if this process holds it, **consumes** its receive
//!    queue into memory and goes on reading as the window opens, until its
//!    `tcpi_bytes_received` reaches the sender's count (exact: the sender is frozen). The
//!    sender meanwhile has Nagle and cork off. Now the sender's bytes are all in the
//!    receiver's memory.
//! 3. The checkpoint records the consumed bytes as that end's receive queue (`sockets.rs`),
//!    so a restart refills them like any other.
//! 4. `resume` (the same run goes on): the bytes go back into the receiver's queue over the
//!    connection itself, before the programs run. The receiver sends a frame (a magic, a
//!    length, the bytes); the sender, which knows how many unread bytes its own queue held,
//!    finds the frame right after them, takes both out, and sends back a frame with its own
//!    unread bytes followed by the receiver's bytes; the receiver takes that frame out and
//!    writes the sender's bytes back. Each queue then holds what it held before. A
//!    connection stuck both ways is swapped the same way from both ends. All connections of
//!    a process go through one poll loop (the other ends do the same at the same time: every
//!    process resumes after the same commit). A sender whose receiver is outside the
//!    computation gets no frame: it gives up after a short wait, its queue untouched, and
//!    its stuck bytes stay where they are (a restart loses them, with a warning).
//!
//! Runs with user threads frozen (settle, checkpoint) or not yet running (resume): no glibc
//! malloc (our allocator serves Rust's), no locks, every wait bounded.

use std::time::{Duration, Instant};

use crate::api::ppoll;
use crate::sockets::{address, getopt_int, socket_ino};

/// A connection end whose unsent bytes did not move at `drain` time.
#[derive(Debug, Clone, PartialEq)]
pub struct Stuck {
    pub local: Vec<u8>,
    pub peer: Vec<u8>,
    /// Bytes the program has written on it in all.
    pub written: u64,
}

/// What `resume` owes a connection.
#[derive(Debug)]
pub enum Pending {
    /// This end consumed its receive queue at settle time (`data`): send it back through the
    /// other end (which answers with its own unread bytes, or, when it consumed too because
    /// the connection was stuck both ways, with the bytes it consumed).
    Consumed { fd: i32, ino: u64, data: Vec<u8> },
    /// This end was stuck and its bytes left during settle: the other end (if it is in the
    /// computation) consumed them and sends them back after the `unread` bytes of this end's
    /// own queue.
    Sender { fd: i32, ino: u64, unread: usize },
}

/// How long settle waits for a stuck sender's bytes, and resume for the other end.
const SETTLE_WAIT: Duration = Duration::from_secs(5);
const RESUME_WAIT: Duration = Duration::from_secs(10);
/// How long a sender waits at resume for a frame that may never come (receiver outside).
const SENDER_WAIT: Duration = Duration::from_secs(2);
/// Starts every frame of the resume exchange.
const MAGIC: &[u8; 16] = b"ckpt-tcp-backlog";

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn ioctl_int(fd: i32, req: libc::c_ulong) -> i64 {
    let mut n: libc::c_int = 0;
    // SAFETY: these ioctls write an int.
    if unsafe { libc::ioctl(fd, req, &mut n) } != 0 {
        return 0;
    }
    i64::from(n.max(0))
}

/// TCP: bytes in the send queue not sent yet (`SIOCOUTQNSD`).
pub fn unsent(fd: i32) -> i64 {
    ioctl_int(fd, 0x894B)
}

/// Bytes in the send queue not acknowledged yet (`SIOCOUTQ`).
fn unacked(fd: i32) -> i64 {
    ioctl_int(fd, libc::TIOCOUTQ)
}

fn queued(fd: i32) -> usize {
    ioctl_int(fd, libc::FIONREAD) as usize
}

/// Bytes the program has written on `fd` in all, and bytes `fd` has received in all (struct
/// tcp_info). Written = data bytes sent once (`tcpi_bytes_sent` − `tcpi_bytes_retrans`) +
/// not sent yet (`SIOCOUTQNSD`): `tcpi_bytes_acked` would count the SYN of the side that
/// connected, one byte too many.
fn tcp_counts(fd: i32) -> Option<(u64, u64)> {
    let mut buf = [0u8; 216];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockopt into our buffer of `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 || (len as usize) < 216 {
        return None;
    }
    let at = |o: usize| u64::from_ne_bytes(buf[o..o + 8].try_into().unwrap_or([0; 8]));
    let (received, sent, retrans) = (at(128), at(200), at(208));
    Some((sent.saturating_sub(retrans) + unsent(fd) as u64, received))
}

fn set_tcp(fd: i32, name: i32, v: i32) {
    // SAFETY: setsockopt with an int.
    unsafe { libc::setsockopt(fd, libc::IPPROTO_TCP, name, (&v as *const i32).cast(), 4) };
}

/// Nagle and cork off on `fd`; returns the program's settings for [`restore`].
fn push_on(fd: i32) -> (i32, i32) {
    let nodelay = getopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY).unwrap_or(0);
    let cork = getopt_int(fd, libc::IPPROTO_TCP, libc::TCP_CORK).unwrap_or(0);
    if cork != 0 {
        set_tcp(fd, libc::TCP_CORK, 0);
    }
    set_tcp(fd, libc::TCP_NODELAY, 1);
    (nodelay, cork)
}

fn restore(fd: i32, (nodelay, cork): (i32, i32)) {
    set_tcp(fd, libc::TCP_NODELAY, nodelay);
    if cork != 0 {
        set_tcp(fd, libc::TCP_CORK, cork);
    }
}

/// Waits until `count(fd)` is 0, or until it made no progress for `quiet`; returns what is
/// left.
fn wait_zero(fd: i32, count: fn(i32) -> i64, quiet: Duration, until: Instant) -> i64 {
    let mut left = count(fd);
    let mut last_move = Instant::now();
    while left > 0 && Instant::now() < until && last_move.elapsed() < quiet {
        std::thread::sleep(Duration::from_millis(2));
        let now = count(fd);
        if now < left {
            last_move = Instant::now();
        }
        left = now;
    }
    left
}

/// `drain`: pushes what TCP holds back on `fd` (Nagle behind a delayed ACK, cork); an end
/// whose bytes still do not move (the receiver's window is full) is added to `stuck`.
pub fn push(fd: i32, stuck: &mut Vec<Stuck>) {
    if unsent(fd) == 0 {
        return;
    }
    let until = Instant::now() + Duration::from_secs(1);
    let saved = push_on(fd);
    let left = wait_zero(fd, unsent, Duration::from_millis(50), until);
    restore(fd, saved);
    if left > 0
        && let Some((written, _)) = tcp_counts(fd)
    {
        stuck.push(Stuck {
            local: address(fd, false),
            peer: address(fd, true),
            written,
        });
    }
}

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

fn take(inp: &mut &[u8]) -> Option<Vec<u8>> {
    let n = u16::from_le_bytes([*inp.first()?, *inp.get(1)?]) as usize;
    let b = inp.get(2..2 + n)?.to_vec();
    *inp = &inp[2 + n..];
    Some(b)
}

/// The note for the other processes: this process's stuck ends.
pub fn note(stuck: &[Stuck]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in stuck {
        put(&mut out, &s.local);
        put(&mut out, &s.peer);
        out.extend_from_slice(&s.written.to_le_bytes());
    }
    out
}

fn parse(mut inp: &[u8]) -> Vec<Stuck> {
    let mut v = Vec::new();
    while !inp.is_empty() {
        let (Some(local), Some(peer)) = (take(&mut inp), take(&mut inp)) else {
            break;
        };
        let Some(n) = inp.get(..8) else { break };
        let written = u64::from_le_bytes(n.try_into().unwrap_or([0; 8]));
        inp = &inp[8..];
        v.push(Stuck {
            local,
            peer,
            written,
        });
    }
    v
}

/// Reads what `fd` has now into `into` (non-blocking); the number of bytes read.
fn read_now(fd: i32, into: &mut Vec<u8>) -> usize {
    let mut total = 0;
    let mut buf = [0u8; 65536];
    loop {
        // SAFETY: recv into our buffer, never blocking.
        let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if r > 0 {
            into.extend_from_slice(&buf[..r as usize]);
            total += r as usize;
            continue;
        }
        if r < 0 && errno() == libc::EINTR {
            continue;
        }
        return total;
    }
}

/// `settle`: this process's ends of the stuck connections of every process (`notes`; `mine`:
/// this process's own stuck ends). A receiver consumes its queue until the sender's bytes
/// have all come; a stuck sender pushes meanwhile. Returns what `resume` owes.
pub fn settle(
    notes: &[Vec<u8>],
    mine: &[Stuck],
    fds: &[i32],
    warnings: &mut Vec<String>,
) -> Vec<Pending> {
    let mut pending = Vec::new();
    let stuck: Vec<Stuck> = notes.iter().flat_map(|n| parse(n)).collect();
    if stuck.is_empty() {
        return pending;
    }
    let until = Instant::now() + SETTLE_WAIT;
    let ends: Vec<(i32, Vec<u8>, Vec<u8>)> = fds
        .iter()
        .copied()
        .filter(|&fd| crate::sockets::is_tcp(fd))
        .map(|fd| (fd, address(fd, false), address(fd, true)))
        .filter(|(_, _, peer)| !peer.is_empty())
        .collect();
    let sending: Vec<(i32, (i32, i32))> = ends
        .iter()
        .filter(|(_, l, p)| mine.iter().any(|s| s.local == *l && s.peer == *p))
        .map(|(fd, _, _)| (*fd, push_on(*fd)))
        .collect();
    let mut seen: Vec<u64> = Vec::new();
    for (fd, local, peer) in &ends {
        let fd = *fd;
        let ino = socket_ino(fd);
        if seen.contains(&ino) {
            continue;
        }
        seen.push(ino);
        let Some(total) = stuck
            .iter()
            .find(|s| s.local == *peer && s.peer == *local)
            .map(|s| s.written)
        else {
            continue;
        };
        // The other end was stuck: take everything it wrote out of this queue.
        let mut data = Vec::new();
        loop {
            read_now(fd, &mut data);
            let received = tcp_counts(fd).map_or(total, |c| c.1);
            if received >= total && queued(fd) == 0 {
                break;
            }
            if Instant::now() >= until {
                warnings.push(format!(
                    "fd {fd}: {} bytes its peer had written did not arrive within {} s; they are lost at restart",
                    total.saturating_sub(received),
                    SETTLE_WAIT.as_secs()
                ));
                break;
            }
            let mut p = [libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }];
            ppoll(&mut p, Duration::from_millis(20));
        }
        pending.push(Pending::Consumed { fd, ino, data });
    }
    for (fd, saved) in sending {
        // Until every byte is acknowledged: the receiver has them (unless it stops reading).
        let left = wait_zero(fd, unacked, Duration::from_millis(200), until);
        restore(fd, saved);
        if pending
            .iter()
            .any(|p| matches!(p, Pending::Consumed { fd: f, .. } if *f == fd))
        {
            continue;
        }
        if left == 0 {
            // Its bytes were taken: by a process of the computation (which answers at
            // resume), or by an outside receiver that read meanwhile (which does not).
            pending.push(Pending::Sender {
                fd,
                ino: socket_ino(fd),
                unread: queued(fd),
            });
        } else {
            warnings.push(format!(
                "fd {fd}: {left} bytes sent on this TCP connection could not be pushed to the peer (its receive window stays full: a peer outside the computation?); they are lost at restart"
            ));
        }
    }
    pending
}

/// Consumed bytes of the end whose inode is `ino` (checkpoint: they are its receive queue;
/// what is still queued behind them is taken out too, so the queue is empty at resume).
pub fn consumed_data(pending: &mut [Pending], fd: i32, ino: u64) -> Option<Vec<u8>> {
    pending.iter_mut().find_map(|p| match p {
        Pending::Consumed { ino: i, data, .. } if *i == ino => {
            read_now(fd, data);
            Some(data.clone())
        }
        _ => None,
    })
}

fn frame(data: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// One connection's part of the resume exchange.
struct Job {
    fd: i32,
    /// Bytes still to send.
    out: Vec<u8>,
    sent: usize,
    /// Sender: the first `skip` bytes of the queue are its own unread bytes (kept in
    /// `own`), then the receiver's frame.
    skip: usize,
    own: Vec<u8>,
    /// The frame being read: its header, then its body.
    hdr: Vec<u8>,
    body: Option<Vec<u8>>,
    got: usize,
    /// Receiver: write the frame's bytes back once read; sender: answer with a frame of
    /// `own`, then the bytes read.
    receiver: bool,
    /// The frame is known to come (a sender first checks, by peeking, that it follows its
    /// own unread bytes).
    verified: bool,
    deadline: Instant,
    failed: Option<String>,
}

impl Job {
    fn read_done(&self) -> bool {
        self.body.as_ref().is_some_and(|b| self.got == b.len())
    }
    fn done(&self) -> bool {
        self.failed.is_some() || (self.read_done() && self.sent == self.out.len())
    }
}

/// `resume`: puts the consumed bytes back where they were (see the module documentation).
/// Returns one line per connection that could not be finished.
pub fn resume(pending: &mut Vec<Pending>) -> Vec<String> {
    let now = Instant::now();
    let mut jobs: Vec<Job> = Vec::new();
    for p in pending.drain(..) {
        let (fd, ino) = match &p {
            Pending::Consumed { fd, ino, .. } | Pending::Sender { fd, ino, .. } => (*fd, *ino),
        };
        if socket_ino(fd) != ino {
            continue;
        }
        jobs.push(match p {
            Pending::Consumed { data, .. } => Job {
                fd,
                out: frame(&data),
                sent: 0,
                skip: 0,
                own: Vec::new(),
                hdr: Vec::new(),
                body: None,
                got: 0,
                receiver: true,
                verified: true,
                deadline: now + RESUME_WAIT,
                failed: None,
            },
            Pending::Sender { unread, .. } => Job {
                fd,
                out: Vec::new(),
                sent: 0,
                skip: unread,
                own: Vec::new(),
                hdr: Vec::new(),
                body: None,
                got: 0,
                receiver: false,
                verified: false,
                deadline: now + SENDER_WAIT,
                failed: None,
            },
        });
    }
    let mut buf = vec![0u8; 65536];
    while jobs.iter().any(|j| !j.done()) {
        let mut pfds: Vec<libc::pollfd> = jobs
            .iter()
            .filter(|j| !j.done())
            .map(|j| libc::pollfd {
                fd: j.fd,
                events: if j.read_done() { 0 } else { libc::POLLIN }
                    | if j.sent < j.out.len() {
                        libc::POLLOUT
                    } else {
                        0
                    },
                revents: 0,
            })
            .collect();
        ppoll(&mut pfds, Duration::from_millis(50));
        let now = Instant::now();
        for j in jobs.iter_mut().filter(|j| !j.done()) {
            step(j, &mut buf);
            if !j.done() && now >= j.deadline {
                j.failed = Some(if j.receiver {
                    format!(
                        "fd {}: the bytes of this TCP connection taken out at checkpoint time could not all be put back (its other end did not answer within {} s)",
                        j.fd,
                        RESUME_WAIT.as_secs()
                    )
                } else {
                    String::new()
                });
            }
        }
    }
    jobs.into_iter()
        .filter_map(|j| j.failed)
        .filter(|f| !f.is_empty())
        .collect()
}

/// One round of non-blocking I/O on a job: send what is due, read what came, send again.
fn step(j: &mut Job, buf: &mut [u8]) {
    send_due(j);
    receive(j, buf);
    send_due(j);
}

fn send_due(j: &mut Job) {
    if j.failed.is_none() && j.sent < j.out.len() {
        // SAFETY: send from a valid slice, never blocking.
        let r = unsafe {
            libc::send(
                j.fd,
                j.out[j.sent..].as_ptr().cast(),
                j.out.len() - j.sent,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if r > 0 {
            j.sent += r as usize;
        }
    }
}

/// Reads what came for a job (never past its frame).
fn receive(j: &mut Job, buf: &mut [u8]) {
    // Sender: does the receiver's frame follow our own unread bytes? (Peek only: if no frame
    // comes, the queue stays as it was.)
    if !j.verified {
        let want = j.skip + MAGIC.len();
        let mut peek = vec![0u8; want];
        // SAFETY: recv into our buffer, peeking, never blocking.
        let r = unsafe {
            libc::recv(
                j.fd,
                peek.as_mut_ptr().cast(),
                want,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if r < want as isize {
            return;
        }
        if &peek[j.skip..] != MAGIC {
            j.failed = Some(String::new());
            return;
        }
        // It is ours: take out our own bytes (kept to send back) and go on with the frame.
        j.own = peek[..j.skip].to_vec();
        let mut sink = vec![0u8; j.skip];
        let mut got = 0;
        while got < j.skip {
            // SAFETY: recv into `sink`, at most the bytes just peeked.
            let r = unsafe {
                libc::recv(
                    j.fd,
                    sink[got..].as_mut_ptr().cast(),
                    j.skip - got,
                    libc::MSG_DONTWAIT,
                )
            };
            if r <= 0 {
                break;
            }
            got += r as usize;
        }
        j.verified = true;
        j.deadline = Instant::now() + RESUME_WAIT;
    }
    if !j.read_done() && j.body.is_none() && j.hdr.is_empty() {
        // The frame's header, peeked whole first: anything else (the other end did not take
        // part and its program wrote) stays in the queue for the program.
        let mut h = [0u8; 24];
        // SAFETY: recv into our buffer, peeking, never blocking.
        let r = unsafe {
            libc::recv(
                j.fd,
                h.as_mut_ptr().cast(),
                h.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if r < h.len() as isize {
            return;
        }
        if &h[..MAGIC.len()] != MAGIC {
            j.failed = Some(format!(
                "fd {}: the other end of this TCP connection did not take part in putting back the bytes taken out at checkpoint time; they are lost",
                j.fd
            ));
            return;
        }
    }
    if !j.read_done() {
        let want = match &j.body {
            None => MAGIC.len() + 8 - j.hdr.len(),
            Some(b) => (b.len() - j.got).min(buf.len()),
        };
        // SAFETY: recv into `buf`, at most `want` bytes (never past the frame).
        let r = unsafe { libc::recv(j.fd, buf.as_mut_ptr().cast(), want, libc::MSG_DONTWAIT) };
        if r > 0 {
            let r = r as usize;
            match &mut j.body {
                None => {
                    j.hdr.extend_from_slice(&buf[..r]);
                    if j.hdr.len() == MAGIC.len() + 8 {
                        if &j.hdr[..MAGIC.len()] != MAGIC {
                            j.failed = Some(format!(
                                "fd {}: the other end of this TCP connection answered garbage while the bytes taken out at checkpoint time were put back",
                                j.fd
                            ));
                            return;
                        }
                        let n = u64::from_le_bytes(j.hdr[16..24].try_into().unwrap_or([0; 8]));
                        j.body = Some(vec![0u8; n.min(1 << 31) as usize]);
                    }
                }
                Some(b) => {
                    b[j.got..j.got + r].copy_from_slice(&buf[..r]);
                    j.got += r;
                }
            }
        }
        if j.read_done() {
            let body = j.body.as_deref().unwrap_or(&[]);
            if j.receiver {
                // The frame holds the other end's bytes: back into its queue.
                j.out.extend_from_slice(body);
            } else {
                // Our own unread bytes go back to us through the receiver, then its bytes.
                let mut out = frame(&j.own);
                out.extend_from_slice(body);
                j.out = out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip() {
        let s = vec![
            Stuck {
                local: vec![2, 0, 1, 2, 127, 0, 0, 1],
                peer: vec![2, 0, 3, 4, 127, 0, 0, 1],
                written: 70000,
            },
            Stuck {
                local: vec![],
                peer: vec![1],
                written: 1 << 40,
            },
        ];
        assert_eq!(parse(&note(&s)), s);
        assert!(parse(&[1]).is_empty());
    }
}
