//! Shared definitions: the coordinator wire protocol ([`wire`]) and the checkpoint image
//! format ([`image`] for the msgpack header, [`raw`] for the binary part the restorer reads),
//! and the pty helpers both sides of a terminal's checkpoint use ([`tty`]).
//!
//! Used by the preload, the coordinator and the launcher. The restorer includes only
//! `raw.rs` (it is `core`-only). Nothing here does I/O beyond `std::io::{Read, Write}`.

pub mod image;
pub mod raw;
pub mod tty;
pub mod wire;
