//! The binary part of a checkpoint image: everything the freestanding restorer reads.
//!
//! This file is `core`-only and dependency-free on purpose: the `no_std` restorer includes it
//! with `#[path]` (it cannot depend on this crate, whose `std` feature would be unified in).
//! All integers are native-endian x86_64; images are never moved across architectures
//! (the msgpack header names the architecture and `ckpt-restart` refuses a mismatch).
//!
//! Layout of the *decompressed* image stream (the file itself is gzip, see `docs/image-format.md`):
//!
//! ```text
//! Preamble            16 bytes: IMAGE_MAGIC, FORMAT_VERSION (u32), header_len (u32)
//! header              header_len bytes of msgpack `ImageHeader` (the restorer skips it)
//! RestoreBlock        size_of::<RestoreBlock>() bytes
//! RegionDesc × n      n = RestoreBlock::nregions
//! path pool           RestoreBlock::pool_len bytes (region paths, not NUL-terminated)
//! runs                RunHeader + `len` bytes of memory, repeated; addresses ascending
//! RunHeader {0, 0}    end of runs
//! Trailer             16 bytes: TRAILER_MAGIC, number of runs (u64)
//! ```
#![allow(dead_code)]

/// First 8 bytes of the decompressed stream.
pub const IMAGE_MAGIC: [u8; 8] = *b"CKPTIMG\x01";
/// Bumped whenever any layout in this file or the header changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
/// Marks the end of a complete image; a truncated image lacks it.
pub const TRAILER_MAGIC: [u8; 8] = *b"CKPTEND\x01";
/// `RestoreBlock::magic`.
/// Fallback restart (new pids): ckpt-restart names each recreated zombie child
/// `<ZOMBIE_COMM_PREFIX><old pid>` (its `comm`, which a zombie keeps), so that the restored
/// parent can pair the zombie's old pid with its new one.
pub const ZOMBIE_COMM_PREFIX: &[u8] = b"ckptz:";
pub const RESTORE_MAGIC: u64 = u64::from_le_bytes(*b"RSTBLOCK");

/// Fixed address range owned by the restorer: its own ELF image, scratch, parked vDSO and
/// stack all live here, and no image region may overlap it (checked before anything is unmapped).
pub const ZONE_BASE: u64 = 0x3000_0000_0000;
/// Length of the restorer zone.
pub const ZONE_LEN: u64 = 0x1000_0000; // 256 MiB

pub const PAGE: u64 = 4096;

/// Leading bytes of the stream.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Preamble {
    pub magic: [u8; 8],
    pub version: u32,
    pub header_len: u32,
}

/// One of the kernel's special mappings (`[vvar]`, `[vvar_vclock]`, `[vdso]`) at checkpoint time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SpecialArea {
    /// One of `SPECIAL_*`; 0 = unused slot.
    pub kind: u64,
    pub start: u64,
    pub end: u64,
}

pub const SPECIAL_VVAR: u64 = 1;
pub const SPECIAL_VVAR_VCLOCK: u64 = 2;
pub const SPECIAL_VDSO: u64 = 3;
pub const MAX_SPECIAL: usize = 4;

/// The kernel `mm` fields restored with `prctl(PR_SET_MM, PR_SET_MM_MAP)`.
/// Same field order as the kernel's `struct prctl_mm_map` minus auxv/exe_fd.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MmFields {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

pub const MAX_AUXV_WORDS: usize = 128;

/// Everything the restorer needs besides the region list.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RestoreBlock {
    pub magic: u64,
    /// Address of `ckpt_restart_entry` inside the restored `libckpt.so`.
    pub entry: u64,
    /// Opaque value handed back to the entry as its first argument.
    pub entry_arg: u64,
    pub nregions: u64,
    pub pool_len: u64,
    pub special: [SpecialArea; MAX_SPECIAL],
    pub mm: MmFields,
    /// Number of valid u64 words in `auxv` (pairs, ending with AT_NULL).
    pub auxv_words: u64,
    pub auxv: [u64; MAX_AUXV_WORDS],
}

impl Default for RestoreBlock {
    fn default() -> Self {
        RestoreBlock {
            magic: RESTORE_MAGIC,
            entry: 0,
            entry_arg: 0,
            nregions: 0,
            pool_len: 0,
            special: [SpecialArea::default(); MAX_SPECIAL],
            mm: MmFields::default(),
            auxv_words: 0,
            auxv: [0; MAX_AUXV_WORDS],
        }
    }
}

/// Region flags.
pub const RF_SHARED: u32 = 1 << 0;
/// Backed by a file that must be mapped from disk at restart (private: only changed pages are in
/// the image; shared: no pages in the image, the file is the truth).
pub const RF_FILE: u32 = 1 << 1;
/// The main stack: mapped with MAP_GROWSDOWN.
pub const RF_GROWSDOWN: u32 = 1 << 2;
/// `[heap]`.
pub const RF_HEAP: u32 = 1 << 3;
/// Contents are not saved and the mapping is PROT_NONE (reservations, guard pages).
pub const RF_NO_DATA: u32 = 1 << 4;

/// One memory region (VMA) to recreate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RegionDesc {
    pub start: u64,
    pub end: u64,
    /// PROT_* bits of the original mapping.
    pub prot: u32,
    /// RF_* bits.
    pub flags: u32,
    /// File offset of `start` (RF_FILE only).
    pub file_offset: u64,
    /// Path in the pool (RF_FILE only).
    pub path_off: u32,
    pub path_len: u32,
    /// Identity of the file at checkpoint time, checked before restart (RF_FILE only).
    pub file_size: u64,
    pub file_mtime_ns: i64,
    pub file_ino: u64,
}

/// Introduces `len` bytes of memory to be copied to `addr` (page-aligned, inside one region).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RunHeader {
    pub addr: u64,
    pub len: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Trailer {
    pub magic: [u8; 8],
    pub nruns: u64,
}

/// Written by the restorer, read by `ckpt_restart_entry`. Lives in the restorer zone, so the
/// entry must copy what it needs before it unmaps the zone.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RestartArgs {
    pub zone_start: u64,
    pub zone_len: u64,
    /// Coordinator to join after restart.
    pub coord_host: [u8; 256],
    pub coord_port: u16,
    pub _pad: [u8; 2],
    /// The restored process's pid as the coordinator and the user outside see it, when it runs
    /// in its own pid namespace (its `getpid()` is then the pid it had at checkpoint); 0 = same.
    pub outer_pid: u32,
    /// Directory for the next checkpoints (empty = keep the one from the image).
    pub ckpt_dir: [u8; 4096],
    /// Bit 0: the restorer could not apply PR_SET_MM_MAP (brk left as is).
    pub flags: u64,
    /// A directory fd on the `/proc` of the outer pid namespace (namespace restart), from
    /// which the process and its future children read their outer pids; 0 = none (the
    /// launcher never passes fds 0-2).
    pub outer_proc: u32,
    pub _pad2: u32,
}

pub const RA_MM_NOT_RESTORED: u64 = 1;

/// Signature of the restart entry inside libckpt.so.
pub type RestartEntry = unsafe extern "C" fn(entry_arg: u64, args: *const RestartArgs) -> !;

/// View any `repr(C)` plain-old-data value as bytes (for writing).
///
/// # Safety
/// `T` must be a `repr(C)` struct of integers/arrays with no padding that matters.
pub unsafe fn as_bytes<T>(v: &T) -> &[u8] {
    // SAFETY: caller guarantees T is plain data; the slice covers exactly the value.
    unsafe { core::slice::from_raw_parts(v as *const T as *const u8, core::mem::size_of::<T>()) }
}

/// View any `repr(C)` plain-old-data value as mutable bytes (for reading into it).
///
/// # Safety
/// Every bit pattern must be a valid `T`.
pub unsafe fn as_bytes_mut<T>(v: &mut T) -> &mut [u8] {
    // SAFETY: caller guarantees any byte pattern is a valid T.
    unsafe { core::slice::from_raw_parts_mut(v as *mut T as *mut u8, core::mem::size_of::<T>()) }
}
