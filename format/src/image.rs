//! The image file: a gzip stream (valid from its first byte to its last) whose decompressed
//! content is laid out as described in [`crate::raw`], starting with a msgpack [`ImageHeader`].
//!
//! The gzip stream is a sequence of independent members (RFC 1952 allows concatenation).
//! Every member carries an extra field `CK` with its own compressed length and its
//! uncompressed length, so a reader can find member boundaries without inflating (BGZF-style)
//! and inflate members in parallel. Incompressible chunks are emitted as deflate *stored*
//! blocks. `gzip -t` and `gzip -dc` accept the file.

use crate::raw;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// Uncompressed bytes per gzip member written by [`MemberWriter`].
pub const MEMBER_CHUNK: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("not a ckpt image (bad magic)")]
    BadMagic,
    #[error("image format version {found}, this ckpt reads version {expected}")]
    Version { found: u32, expected: u32 },
    #[error("image is truncated ({0})")]
    Truncated(String),
    #[error("image is corrupt ({0})")]
    Corrupt(String),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// Per-thread state recorded for information (`ckpt-restart` prints it); the values the restart
/// path uses live in the restored memory of `libckpt.so` itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ThreadInfo {
    pub tid: i32,
    pub fs_base: u64,
    pub is_main: bool,
    pub is_ckpt_thread: bool,
}

/// What kind of object an fd refers to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum FdKind {
    Regular,
    Directory,
    CharDevice,
    Pipe,
    Socket,
    #[default]
    Other,
}

/// The flags to reopen a saved description with: its `F_GETFL` flags without the ones that
/// act only at creation (`O_CREAT`, `O_TRUNC`, `O_EXCL`, and `O_TMPFILE`, which the kernel
/// keeps in `F_GETFL` of an `O_TMPFILE` file and which would make a reopen fail with ENOTDIR
/// or make a new file), with `O_DIRECTORY` exactly when it is a directory, and `O_CLOEXEC`.
pub fn reopen_flags(flags: i32, directory: bool) -> i32 {
    let mut f = flags
        & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_TMPFILE | libc::O_DIRECTORY);
    if directory {
        f |= libc::O_DIRECTORY;
    }
    f | libc::O_CLOEXEC
}

/// One open fd at checkpoint time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct FdInfo {
    pub fd: i32,
    pub kind: FdKind,
    /// What `/proc/self/fd/N` pointed to (" (deleted)" stripped).
    pub path: String,
    pub deleted: bool,
    /// `fcntl(F_GETFL)`.
    pub flags: i32,
    /// `FD_CLOEXEC` set.
    pub cloexec: bool,
    pub offset: i64,
    /// Size of the file at checkpoint time (regular files).
    pub size: u64,
    /// Found open when the computation started (inherited from outside).
    pub preexisting: bool,
    /// `st_dev` / `st_ino` of the object (fstat).
    #[serde(default)]
    pub dev: u64,
    #[serde(default)]
    pub ino: u64,
    /// The object came from outside the computation (it was open when the computation was
    /// launched, on this fd number of the launched process): at restart the fd is whatever
    /// `ckpt-restart` has on that number (its terminal, its pipes), or `/dev/null`.
    #[serde(default)]
    pub reinherit_from: Option<i32>,
    /// The fd refers to an object of [`ImageHeader::objects`], which `ckpt-restart` creates
    /// once for the whole computation and installs on this fd number before the restorer runs.
    #[serde(default)]
    pub object: Option<ObjRef>,
}

/// Reference from an fd to a shared object.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjRef {
    pub key: u64,
    /// Pipes and FIFOs: 0 = read end, 1 = write end. Files: 0.
    pub end: u8,
}

/// What a shared object is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ObjKind {
    /// An anonymous pipe; `size` = `F_GETPIPE_SZ`.
    Pipe { size: i32 },
    /// A named pipe at `path`.
    Fifo { path: String, size: i32 },
    /// One open file description of a regular file or directory (shared by `dup`/fork, or
    /// a deleted file whose contents are in `data`).
    File {
        path: String,
        directory: bool,
        deleted: bool,
        /// Size at checkpoint time.
        size: u64,
        mode: u32,
    },
    /// A socket (one open description); `data` holds the bytes in its receive queue (for
    /// datagram and seqpacket sockets: each message as a little-endian u32 length and the
    /// bytes), peeked, not consumed.
    Socket(SocketObj),
    /// A pseudo-terminal pair the program made (`/dev/ptmx`): `ObjRef::end` 0 is the master,
    /// 1 the slave. `data` holds what the slave side wrote and the master has not read yet.
    Pty(PtyObj),
}

/// Terminal attributes (`struct termios` without the speed copies, which Linux keeps in
/// `c_cflag`) and window size (`struct winsize`: rows, cols, xpixel, ypixel).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct TermAttrs {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub line: u8,
    #[serde(with = "crate::wire::bytes")]
    pub cc: Vec<u8>,
    pub winsize: [u16; 4],
}

/// A saved pseudo-terminal pair (see [`ObjKind::Pty`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PtyObj {
    /// Its number at checkpoint time (`/dev/pts/N`).
    pub index: u32,
    /// Attributes and window size of the slave side.
    pub attrs: TermAttrs,
    /// Bytes the master wrote that the slave side has not read yet.
    #[serde(with = "crate::wire::bytes")]
    pub to_slave: Vec<u8>,
    /// EOFs (^D) queued in canonical mode among `to_slave`: each is the number of bytes of
    /// `to_slave` before it (n_tty keeps an EOF as a line end without a character).
    #[serde(default)]
    pub eofs: Vec<u32>,
    /// The pty is the controlling terminal of the session led by this pid (0: none).
    pub ctty_sid: i32,
    /// Its foreground process group (0: none or unknown).
    pub fg_pgrp: i32,
    /// The slave was still locked (`unlockpt` not called yet): nothing could be queued.
    #[serde(default)]
    pub locked: bool,
    /// The master was in packet mode (`TIOCPKT`).
    #[serde(default)]
    pub packet: bool,
}

/// A terminal fd of a process that is not a pty the computation made (the terminal
/// `ckpt-launch` ran in, re-inherited at restart from `ckpt-restart`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct TermFd {
    pub fd: i32,
    /// Attributes and window size at checkpoint time.
    pub attrs: TermAttrs,
    /// Attributes and window size the terminal had when the computation started (or the
    /// last restart began): the restart applies `attrs` only where they differ.
    pub launch: Option<TermAttrs>,
    /// It was the process's controlling terminal.
    pub ctty: bool,
    /// The process's group was the terminal's foreground group.
    pub foreground: bool,
    /// Input typed on the terminal and not read yet, when this process was the one that saved
    /// it (see docs/terminals.md), and the EOFs queued among it (as [`PtyObj::eofs`]): put
    /// into the new terminal at restart.
    #[serde(default, with = "crate::wire::bytes")]
    pub input: Vec<u8>,
    #[serde(default)]
    pub eofs: Vec<u32>,
}

/// Where a socket stands (what `ckpt-restart` must rebuild).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum SockState {
    /// Created, maybe bound, neither listening nor connected.
    Unconnected,
    /// Listening, with its backlog.
    Listening { backlog: i32 },
    /// Connected to a peer (stream, seqpacket; or a datagram socket with a default peer).
    Connected,
}

/// A saved socket. Addresses are raw `sockaddr` bytes as `getsockname`/`getpeername` gave them
/// (empty: none).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SocketObj {
    pub family: i32,
    /// `SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_SEQPACKET` (without the creation flags).
    pub stype: i32,
    pub protocol: i32,
    pub state: SockState,
    #[serde(with = "crate::wire::bytes")]
    pub local: Vec<u8>,
    #[serde(with = "crate::wire::bytes")]
    pub peer: Vec<u8>,
    /// Socket inode (unique on the host while the socket lives).
    pub ino: u64,
    /// AF_UNIX: inode of the peer socket (0: none or unknown).
    pub peer_ino: u64,
    /// Options to set again: (level, name, value bytes), in order (`IPV6_V6ONLY` before bind).
    pub options: Vec<(i32, i32, Vec<u8>)>,
    /// AF_UNIX with a relative path: the directory it is relative to (the working directory
    /// at checkpoint time).
    #[serde(default)]
    pub cwd: String,
    /// A connected stream or seqpacket socket whose sending side was shut down
    /// (`shutdown(SHUT_WR)`; TCP: its FIN was sent): the restart shuts it down again once
    /// its peer's bytes are back, so the peer reads them and then end of file.
    #[serde(default)]
    pub shut_wr: bool,
}

/// A kernel object that `ckpt-restart` recreates once and hands to every fd of every process
/// that referred to it: pipes (with the bytes in flight), FIFOs, file descriptions shared
/// between fds or processes, deleted-but-open files (with their contents).
/// Every process holding the object records it; `key` identifies it across images.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SharedObject {
    pub key: u64,
    pub kind: ObjKind,
    /// `F_GETFL` status flags: pipes/FIFOs `[read end, write end]` (0 = unknown), files
    /// `[description]`.
    pub flags: Vec<i32>,
    /// File offset of the description.
    pub offset: i64,
    /// `data` is the object's contents (the holder could read them: a pipe's read end, a
    /// deleted file); when several images have it, they agree (everybody was frozen).
    pub has_data: bool,
    #[serde(with = "crate::wire::bytes")]
    pub data: Vec<u8>,
}

/// A child of this process that had exited but was not reaped (a zombie) at checkpoint time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ZombieChild {
    pub pid: i32,
    /// Wait status (as `waitpid` reports it).
    pub status: i32,
}

/// A process of the computation, as every image records them all.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerInfo {
    pub vpid: u64,
    pub pid: i32,
    pub program: String,
}

/// A `MAP_SHARED` mapping of shared memory (anonymous shared, memfd, `/dev/shm`, deleted file)
/// that must stay shared with the other processes mapping the same object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShmMapping {
    /// Object key (shared by every process that maps it).
    pub key: u64,
    pub start: u64,
    pub end: u64,
    /// Offset of `start` in the object.
    pub obj_off: u64,
    /// Object size at checkpoint time.
    pub size: u64,
    /// `/dev/shm/NAME` if the object is a live POSIX shm file; else recreated anonymous.
    pub path: Option<String>,
    /// fd number on which `ckpt-restart` installs the object for this process (free in the
    /// process at checkpoint time; closed again by the restart). For a SysV segment the
    /// installed fd is a small memfd holding the segment's new id (see [`SysvSeg`]).
    pub fd_hint: i32,
    /// Set when the object is a SysV shared memory segment (`shmget`/`shmat`).
    #[serde(default)]
    pub sysv: Option<SysvSeg>,
}

/// What a SysV segment was at checkpoint time (from `shmctl(IPC_STAT)`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct SysvSeg {
    /// The id the program knows (its first id; translated by the shm plugin's wrappers).
    pub shmid: i32,
    /// The kernel's id at checkpoint time (`ckpt-restart` reuses that segment when it is
    /// still there unused and unchanged).
    pub real_id: i32,
    /// `IPC_PRIVATE` (0) or the key it was created with.
    pub key: i32,
    /// Permission bits.
    pub mode: u32,
    /// `shm_segsz`: the size the program asked for (not rounded to pages).
    pub segsz: u64,
    /// `shm_ctime` (identifies the segment together with `real_id`, `key` and `segsz`).
    pub ctime: i64,
    /// Marked destroyed (`IPC_RMID`) while still attached: marked again after the restart.
    pub removed: bool,
}

/// A file the restart maps from disk; its identity is checked before restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileDep {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub ino: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rlimit {
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// msgpack header at the start of every image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ImageHeader {
    pub format_version: u32,
    pub arch: String,
    pub kernel_release: String,
    pub glibc_version: String,
    pub computation_id: u64,
    pub generation: u64,
    pub vpid: u64,
    pub num_peers: u32,
    pub program: String,
    pub argv: Vec<String>,
    pub cwd: String,
    pub hostname: String,
    /// Real pid at checkpoint time.
    pub pid: i32,
    pub created_unix_ns: u64,
    pub umask: u32,
    pub rlimits: Vec<Rlimit>,
    pub threads: Vec<ThreadInfo>,
    pub fds: Vec<FdInfo>,
    pub files: Vec<FileDep>,
    /// (name, bytes) of the kernel's special mappings, in address order.
    pub special: Vec<(String, u64)>,
    /// Bytes of memory content stored in the image (before compression).
    pub memory_bytes: u64,
    pub nregions: u64,
    /// vpid of the parent process when it is in the computation.
    #[serde(default)]
    pub parent: Option<u64>,
    /// Process group and session ids at checkpoint time.
    #[serde(default)]
    pub pgid: i32,
    #[serde(default)]
    pub sid: i32,
    /// This process is the one `ckpt-launch` started (its exit status is `ckpt-restart`'s).
    #[serde(default)]
    pub root: bool,
    #[serde(default)]
    pub zombies: Vec<ZombieChild>,
    /// Every process of the computation at this checkpoint.
    #[serde(default)]
    pub peers: Vec<PeerInfo>,
    #[serde(default)]
    pub objects: Vec<SharedObject>,
    #[serde(default)]
    pub shm: Vec<ShmMapping>,
    /// `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` at checkpoint time (ns; 0 = not recorded): a
    /// namespace restart starts the clocks from there again (time namespace offsets).
    #[serde(default)]
    pub monotonic_ns: i64,
    #[serde(default)]
    pub boottime_ns: i64,
    /// Terminal fds from outside the computation (see [`TermFd`]).
    #[serde(default)]
    pub terminals: Vec<TermFd>,
}

/// Reads a clock in nanoseconds (0 if it cannot).
pub fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

pub fn current_arch() -> &'static str {
    std::env::consts::ARCH
}

/// Writes the preamble and header (uncompressed bytes; the caller compresses).
pub fn encode_header(h: &ImageHeader) -> Vec<u8> {
    let body = rmp_serde::to_vec_named(h).expect("header encoding cannot fail");
    let pre = raw::Preamble {
        magic: raw::IMAGE_MAGIC,
        version: raw::FORMAT_VERSION,
        header_len: body.len() as u32,
    };
    // SAFETY: Preamble is repr(C) plain data without padding.
    let mut out = unsafe { raw::as_bytes(&pre) }.to_vec();
    out.extend_from_slice(&body);
    out
}

/// Reads and checks the preamble and header from a decompressed stream.
pub fn read_header<R: Read>(r: &mut R) -> Result<ImageHeader, ImageError> {
    let mut pre = raw::Preamble::default();
    // SAFETY: any byte pattern is a valid Preamble.
    read_full(r, unsafe { raw::as_bytes_mut(&mut pre) }, "preamble")?;
    if pre.magic != raw::IMAGE_MAGIC {
        return Err(ImageError::BadMagic);
    }
    if pre.version != raw::FORMAT_VERSION {
        return Err(ImageError::Version {
            found: pre.version,
            expected: raw::FORMAT_VERSION,
        });
    }
    if pre.header_len as usize > (64 << 20) {
        return Err(ImageError::Corrupt(format!(
            "header length {}",
            pre.header_len
        )));
    }
    let mut body = vec![0u8; pre.header_len as usize];
    read_full(r, &mut body, "header")?;
    rmp_serde::from_slice(&body).map_err(|e| ImageError::Corrupt(format!("header: {e}")))
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8], what: &str) -> Result<(), ImageError> {
    match r.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ImageError::Truncated(format!(
            "stream ends inside the {what}"
        ))),
        Err(e) => Err(classify_io(e)),
    }
}

/// flate2 reports CRC and deflate errors as `InvalidInput`/`InvalidData`; name them.
pub fn classify_io(e: io::Error) -> ImageError {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
            ImageError::Corrupt(e.to_string())
        }
        io::ErrorKind::UnexpectedEof => ImageError::Truncated(e.to_string()),
        _ => ImageError::Io(e),
    }
}

// ---- gzip members -------------------------------------------------------------------------

/// Subfield id of the member-size extra field.
pub const EXTRA_ID: [u8; 2] = *b"CK";

/// Deflate state reused across members (a fresh compressor per member costs an allocation of
/// several hundred KiB, which the checkpoint writer cannot afford).
pub struct MemberEncoder {
    level: u32,
    comp: Option<flate2::Compress>,
}

impl MemberEncoder {
    pub fn new(level: u32) -> MemberEncoder {
        let comp =
            (level > 0).then(|| flate2::Compress::new(flate2::Compression::new(level), false));
        MemberEncoder { level, comp }
    }

    /// Compresses `data` into `out` (cleared first; its capacity is reused) as one complete gzip
    /// member with the `CK` extra field. Incompressible data (a 64 KiB sample does not shrink by
    /// 5%) and level 0 are emitted as deflate *stored* blocks.
    pub fn encode(&mut self, data: &[u8], out: &mut Vec<u8>) {
        const HDR: usize = 24;
        out.clear();
        out.extend_from_slice(&[
            0x1f, 0x8b, 8, 0x04, /* FEXTRA */
            0, 0, 0, 0, 0, 3, /* unix */
        ]);
        out.extend_from_slice(&12u16.to_le_bytes());
        out.extend_from_slice(&EXTRA_ID);
        out.extend_from_slice(&8u16.to_le_bytes());
        out.extend_from_slice(&[0; 8]); // member length, uncompressed length: patched below
        let mut stored = self.comp.is_none();
        if let Some(c) = self.comp.as_mut() {
            if data.len() > 128 << 10 {
                let sample = &data[..64 << 10];
                c.reset();
                deflate_into(c, sample, out);
                let shrunk = (out.len() - HDR) * 100 <= sample.len() * 95;
                out.truncate(HDR);
                stored = !shrunk;
            }
            if !stored {
                c.reset();
                deflate_into(c, data, out);
            }
        }
        if stored {
            store_into(data, out);
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(data);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        let total = out.len() as u32;
        out[16..20].copy_from_slice(&total.to_le_bytes());
        out[20..24].copy_from_slice(&(data.len() as u32).to_le_bytes());
    }

    pub fn level(&self) -> u32 {
        self.level
    }
}

fn deflate_into(c: &mut flate2::Compress, data: &[u8], out: &mut Vec<u8>) {
    use flate2::{FlushCompress, Status};
    let start_in = c.total_in();
    loop {
        if out.capacity() - out.len() < (64 << 10) {
            out.reserve(data.len() / 4 + (128 << 10));
        }
        let consumed = (c.total_in() - start_in) as usize;
        match c.compress_vec(&data[consumed..], out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => return,
            Ok(_) => continue,
            Err(e) => panic!("in-memory deflate cannot fail: {e}"),
        }
    }
}

/// Deflate stored blocks (RFC 1951 §3.2.4): no compression, memcpy speed.
fn store_into(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len() + data.len() / 65535 * 5 + 5);
    let mut chunks = data.chunks(65535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(ch) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = ch.len() as u16;
        out.push(u8::from(last));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(ch);
    }
}

/// Compress one chunk into a complete gzip member (convenience for tests and tools).
pub fn gzip_member(data: &[u8], level: u32) -> Vec<u8> {
    let mut out = Vec::new();
    MemberEncoder::new(level).encode(data, &mut out);
    out
}

/// Parses a member header written by [`gzip_member`]; returns (member length, uncompressed
/// length), or `None` if the header is not ours (then decode sequentially).
pub fn member_sizes(head: &[u8]) -> Option<(usize, usize)> {
    if head.len() < 24 || head[0] != 0x1f || head[1] != 0x8b || head[3] & 0x04 == 0 {
        return None;
    }
    if head[12..14] != EXTRA_ID || u16::from_le_bytes([head[14], head[15]]) != 8 {
        return None;
    }
    let total = u32::from_le_bytes(head[16..20].try_into().ok()?) as usize;
    let ulen = u32::from_le_bytes(head[20..24].try_into().ok()?) as usize;
    Some((total, ulen))
}

/// Buffers uncompressed bytes and emits a gzip member every [`MEMBER_CHUNK`] bytes. Its
/// buffers and compressor are allocated once and reused.
pub struct MemberWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    out: Vec<u8>,
    enc: MemberEncoder,
    /// Compressed bytes written so far.
    pub written: u64,
}

impl<W: Write> MemberWriter<W> {
    pub fn new(inner: W, level: u32) -> Self {
        MemberWriter {
            inner,
            buf: Vec::with_capacity(MEMBER_CHUNK),
            out: Vec::with_capacity(MEMBER_CHUNK + MEMBER_CHUNK / 8),
            enc: MemberEncoder::new(level),
            written: 0,
        }
    }

    fn flush_member(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.enc.encode(&self.buf, &mut self.out);
        self.inner.write_all(&self.out)?;
        self.written += self.out.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Flushes the last member and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_member()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for MemberWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let room = MEMBER_CHUNK - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == MEMBER_CHUNK {
                self.flush_member()?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_decode_with_multigz_and_sizes_parse() {
        let mut data = vec![0u8; 9 << 20];
        let mut x = 12345u64;
        for b in data[..3 << 20].iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let mut w = MemberWriter::new(Vec::new(), 1);
        w.write_all(&data).unwrap();
        let out = w.finish().unwrap();
        let (total, ulen) = member_sizes(&out).unwrap();
        assert_eq!(ulen, MEMBER_CHUNK);
        assert!(total < out.len());
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn stored_and_empty_members_are_valid_gzip() {
        for (data, level) in [
            (vec![7u8; 200_000], 0),
            (Vec::new(), 1),
            (Vec::new(), 0),
            (vec![1u8; 10], 1),
        ] {
            let m = gzip_member(&data, level);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&m[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
            assert_eq!(member_sizes(&m), Some((m.len(), data.len())));
        }
    }

    #[test]
    fn header_roundtrip_and_bad_magic() {
        let h = ImageHeader {
            format_version: raw::FORMAT_VERSION,
            arch: "x86_64".into(),
            kernel_release: "6".into(),
            glibc_version: "2.36".into(),
            computation_id: 7,
            generation: 1,
            vpid: 1,
            num_peers: 1,
            program: "p".into(),
            argv: vec![],
            cwd: "/".into(),
            hostname: "h".into(),
            pid: 1,
            created_unix_ns: 0,
            umask: 0o22,
            rlimits: vec![],
            threads: vec![],
            fds: vec![],
            files: vec![],
            special: vec![],
            memory_bytes: 0,
            nregions: 0,
            ..Default::default()
        };
        let b = encode_header(&h);
        assert_eq!(read_header(&mut &b[..]).unwrap(), h);
        let mut bad = b.clone();
        bad[0] ^= 1;
        assert!(matches!(
            read_header(&mut &bad[..]),
            Err(ImageError::BadMagic)
        ));
        assert!(matches!(
            read_header(&mut &b[..20]),
            Err(ImageError::Truncated(_))
        ));
    }
}

/// What identifies this host in an image header and what `ckpt-restart` compares it with.
pub mod host {
    fn uname_field(pick: fn(&libc::utsname) -> &[libc::c_char]) -> String {
        // SAFETY: a zeroed utsname is valid; uname fills it.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointer.
        unsafe { libc::uname(&mut u) };
        let b: Vec<u8> = pick(&u)
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&b).into_owned()
    }

    /// `uname -r`.
    pub fn kernel_release() -> String {
        uname_field(|u| &u.release)
    }

    /// `uname -n`.
    pub fn name() -> String {
        uname_field(|u| &u.nodename)
    }

    unsafe extern "C" {
        fn gnu_get_libc_version() -> *const libc::c_char;
    }

    /// The running glibc's version ("2.36").
    pub fn glibc_version() -> String {
        // SAFETY: returns a static NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) }
            .to_string_lossy()
            .into_owned()
    }
}
