//! Coordinator wire protocol: length-prefixed, versioned msgpack frames.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of msgpack encoding a
//! [`Frame`] (`version` + [`Msg`]). Frames larger than [`MAX_FRAME`] are refused. A peer that
//! sends a frame that does not decode gets [`Msg::Error`] and is disconnected.
//! See `docs/protocol.md` for the conversation sequences.

use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// Protocol version; a frame with another version is answered with an error.
pub const PROTOCOL_VERSION: u16 = 2;
/// Largest frame accepted (bytes of msgpack).
pub const MAX_FRAME: usize = 16 << 20;
/// Default coordinator port.
pub const DEFAULT_PORT: u16 = 7779;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("undecodable frame: {0}")]
    Decode(String),
    #[error("protocol version {0} (this side speaks {PROTOCOL_VERSION})")]
    Version(u16),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Frame {
    pub version: u16,
    pub msg: Msg,
}

/// One process of the computation as the coordinator sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerInfo {
    pub vpid: u64,
    pub pid: i32,
    pub host: String,
    pub program: String,
    /// "running", "checkpointing", "restarting", "exec", ...
    pub state: String,
    /// vpid of the parent process when the parent is in the computation.
    #[serde(default)]
    pub parent: Option<u64>,
}

/// How a worker came to join (sent in `HelloWorker`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum JoinKind {
    /// Started by `ckpt-launch` (or anything else that preloads us with the settings).
    #[default]
    Fresh,
    /// A child forked by a process of the computation (`parent` says which).
    Forked,
    /// The new program of a process that called exec: same vpid as before the exec.
    Exec,
    /// A process restarted from its image.
    Restart,
}

/// One arrival's contribution to an all-gather barrier.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerData {
    pub vpid: u64,
    #[serde(with = "bytes")]
    pub data: Vec<u8>,
}

/// `Vec<u8>` as msgpack bin (not an array of integers).
pub mod bytes {
    use serde::{Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("bytes")
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = a.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(V)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Msg {
    // ---- handshake --------------------------------------------------------------------
    /// First frame of a process of the computation. A fresh, forked or exec'd process sends
    /// `comp_id: None` and `vpid: Some(the vpid it asks for)` (its pid; after exec the vpid it
    /// had), or `vpid: None` to be given one; a restarted one sends the values from its image
    /// and `restarting: true` (`join: Restart`).
    HelloWorker {
        comp_id: Option<u64>,
        vpid: Option<u64>,
        restarting: bool,
        /// Processes in the computation at checkpoint time (restarting workers; 0 otherwise).
        num_peers: u32,
        generation: u64,
        pid: i32,
        host: String,
        program: String,
        #[serde(default)]
        join: JoinKind,
        /// vpid of the parent when it is in the computation.
        #[serde(default)]
        parent: Option<u64>,
    },
    /// Worker -> coordinator: this process is about to exec; its next image joins with
    /// `JoinKind::Exec` and the same vpid (the coordinator keeps its place meanwhile).
    Exec,
    /// Worker -> coordinator: the exec announced with `Exec` failed; the process goes on.
    ExecFailed,
    /// First frame of `ckpt-command` / `ckpt-restart`.
    HelloCommand,
    /// Coordinator's answer to `HelloWorker`.
    Welcome {
        comp_id: u64,
        vpid: u64,
        generation: u64,
    },

    // ---- checkpoint (coordinator <-> worker) --------------------------------------------
    /// Start checkpoint `generation`. `ckpt_dir` overrides the worker's own directory.
    DoCheckpoint {
        generation: u64,
        ckpt_dir: Option<String>,
    },
    /// Worker arrived at a named barrier, optionally contributing `data` (all-gather).
    Barrier {
        name: String,
        #[serde(default)]
        data: Option<PeerData>,
    },
    /// All live workers arrived at `name`. `data`: every arrival's contribution, by vpid.
    BarrierReleased {
        name: String,
        #[serde(default)]
        data: Vec<PeerData>,
    },
    /// Worker finished writing its image to a temporary file (`error` = why it could not).
    ImageWritten {
        generation: u64,
        path: Option<String>,
        bytes: u64,
        error: Option<String>,
        warnings: Vec<String>,
    },
    /// Every worker's image is written (`commit: true`: rename into place) or one failed
    /// (`commit: false`: discard the temporary file, the previous generation stays).
    Commit {
        generation: u64,
        commit: bool,
        reason: Option<String>,
    },
    /// Worker renamed (or discarded) its image and resumed its threads.
    Resumed {
        generation: u64,
    },

    // ---- commands (ckpt-command / ckpt-restart -> coordinator) --------------------------
    CmdCheckpoint,
    CmdStatus,
    CmdList,
    CmdKill,
    CmdQuit,
    /// Checkpoint every `seconds` (0 = stop periodic checkpoints).
    CmdInterval {
        seconds: u64,
    },
    /// `ckpt-restart` announces a restart: the coordinator adopts `comp_id` if it is idle.
    CmdRestart {
        comp_id: u64,
        num_peers: u32,
        generation: u64,
        /// `Some(total)`: this `ckpt-restart` restarts `num_peers` of the checkpoint's `total`
        /// processes (`--part`, one command per host); the others come from other
        /// `ckpt-restart` commands joining the same restart.
        #[serde(default)]
        part_of: Option<u32>,
    },

    // ---- name service (any connection) --------------------------------------------------
    /// Store `value` under `key` (replacing an older value); answered with `Ok`.
    Publish {
        key: String,
        #[serde(with = "bytes")]
        value: Vec<u8>,
    },
    /// Ask for the value of `key`: answered with `Value` as soon as someone published it
    /// (the asker decides how long to wait).
    Lookup {
        key: String,
    },
    /// Answer to `Lookup`.
    Value {
        key: String,
        #[serde(with = "bytes")]
        value: Vec<u8>,
    },

    // ---- replies ------------------------------------------------------------------------
    Ok,
    Error {
        message: String,
    },
    CheckpointDone {
        generation: u64,
        images: Vec<String>,
        script: Option<String>,
        warnings: Vec<String>,
    },
    Status {
        comp_id: Option<u64>,
        generation: u64,
        state: String,
        workers: Vec<WorkerInfo>,
    },
    /// Coordinator -> worker: terminate (ckpt-command --kill).
    Kill,
}

/// Encode `msg` as a complete frame (length prefix included).
pub fn encode(msg: &Msg) -> Vec<u8> {
    let frame = Frame {
        version: PROTOCOL_VERSION,
        msg: msg.clone(),
    };
    let body = rmp_serde::to_vec_named(&frame).expect("msgpack encoding of a Frame cannot fail");
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decode a frame body (without the length prefix).
pub fn decode(body: &[u8]) -> Result<Msg, WireError> {
    let frame: Frame = rmp_serde::from_slice(body).map_err(|e| WireError::Decode(e.to_string()))?;
    if frame.version != PROTOCOL_VERSION {
        return Err(WireError::Version(frame.version));
    }
    Ok(frame.msg)
}

/// Blocking send on any writer.
pub fn send<W: Write>(w: &mut W, msg: &Msg) -> Result<(), WireError> {
    w.write_all(&encode(msg))?;
    w.flush()?;
    Ok(())
}

/// Blocking receive on any reader.
pub fn recv<R: Read>(r: &mut R) -> Result<Msg, WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let m = Msg::ImageWritten {
            generation: 3,
            path: Some("/tmp/x.img".into()),
            bytes: 42,
            error: None,
            warnings: vec!["w".into()],
        };
        let f = encode(&m);
        let mut r = &f[..];
        assert_eq!(recv(&mut r).unwrap(), m);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut bytes = 5u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0xc1, 0xff, 0x00, 0x13, 0x37]);
        assert!(matches!(recv(&mut &bytes[..]), Err(WireError::Decode(_))));
        let huge = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(matches!(recv(&mut &huge[..]), Err(WireError::TooLarge(_))));
        assert!(matches!(recv(&mut &[][..]), Err(WireError::Closed)));
    }

    #[test]
    fn wrong_version_is_refused() {
        let body = rmp_serde::to_vec_named(&Frame {
            version: 99,
            msg: Msg::Ok,
        })
        .unwrap();
        assert!(matches!(decode(&body), Err(WireError::Version(99))));
    }
}
