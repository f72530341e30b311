//! The restorer zone [ZONE_BASE, ZONE_BASE+ZONE_LEN): where the restorer keeps its ELF image,
//! its scratch state ([`Ctx`]), the region table, its own stack and the parked vDSO — the only
//! memory that survives while the image is mapped. Owns the zone's layout and the scratch state.
//!
//! Runs with no libc, no TLS, no allocator: state lives in fixed `mmap`s inside the zone, created
//! with MAP_FIXED_NOREPLACE, and must never be placed or grow outside it.

use crate::msg::Msg;
use crate::raw::{PAGE, RegionDesc, RestartArgs, RestoreBlock, ZONE_BASE, ZONE_LEN};
use crate::sys;

const MIB: u64 = 1 << 20;

/// End of the zone.
pub const ZONE_END: u64 = ZONE_BASE + ZONE_LEN;
/// [`Ctx`] (the ELF image, below, must stay under 16 MiB).
pub const CTX_ADDR: u64 = ZONE_BASE + 16 * MIB;
/// Region descriptors followed by the path pool.
pub const TABLE_ADDR: u64 = ZONE_BASE + 32 * MIB;
pub const TABLE_MAX: u64 = 88 * MIB;
/// The restorer's own stack (below it one PROT_NONE guard page).
pub const STACK_ADDR: u64 = ZONE_BASE + 128 * MIB;
pub const STACK_LEN: u64 = 8 * MIB;
pub const STACK_TOP: u64 = STACK_ADDR + STACK_LEN;
/// Where the kernel's [vvar]/[vvar_vclock]/[vdso] wait while the image is mapped.
pub const PARK_ADDR: u64 = ZONE_BASE + 144 * MIB;
pub const PARK_MAX: u64 = 64 * MIB;

/// Bytes of `/proc/self/maps` the restorer can hold (it has a handful of mappings).
pub const MAPS_BUF: usize = 1 << 20;
/// Scratch for skipping the msgpack header.
pub const IO_BUF: usize = 64 << 10;

/// A `[start, end)` address range; `start == end == 0` means absent.
#[derive(Clone, Copy, Default)]
pub struct Area {
    pub start: u64,
    pub end: u64,
}

impl Area {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn present(&self) -> bool {
        self.end != 0
    }
}

/// All restorer state. Lives at [`CTX_ADDR`]; every field is valid when all-zero (fresh mmap).
#[repr(C)]
pub struct Ctx {
    /// Handed to the restart entry; copied from argv because the kernel's stack is unmapped.
    pub args: RestartArgs,
    /// The image stream.
    pub fd: i32,
    pub block: RestoreBlock,
    /// The kernel's special mappings now (index = SPECIAL_* - 1).
    pub kernel_special: [Area; 3],
    /// The image's special mappings (index = SPECIAL_* - 1).
    pub image_special: [Area; 3],
    pub nregions: usize,
    pub pool_len: usize,
    /// NUL-terminated copy of one region path.
    pub path: [u8; 4097],
    pub io: [u8; IO_BUF],
    pub maps: [u8; MAPS_BUF],
}

pub fn round_up(v: u64) -> u64 {
    (v + PAGE - 1) & !(PAGE - 1)
}

/// True if `[start, end)` intersects the zone.
pub fn overlaps_zone(start: u64, end: u64) -> bool {
    start < ZONE_END && end > ZONE_BASE
}

/// Map fresh read-write anonymous memory at a fixed zone address (never replacing anything).
pub fn map_scratch(addr: u64, len: u64, what: &[u8]) {
    // SAFETY: MAP_FIXED_NOREPLACE cannot replace memory in use; the range is inside the zone.
    let r = unsafe {
        sys::mmap(
            addr,
            len,
            sys::PROT_READ | sys::PROT_WRITE,
            sys::MAP_PRIVATE | sys::MAP_ANONYMOUS | sys::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if r < 0 || r as u64 != addr {
        Msg::new()
            .s(b"cannot map ")
            .s(what)
            .s(b" at ")
            .x(addr)
            .errno(r.min(0))
            .fail();
    }
}

/// Create the zeroed [`Ctx`] and return it.
pub fn create_ctx() -> &'static mut Ctx {
    map_scratch(
        CTX_ADDR,
        round_up(core::mem::size_of::<Ctx>() as u64),
        b"restorer state",
    );
    // SAFETY: freshly mapped, zero-filled, exclusively ours, never unmapped; all-zero is a valid Ctx.
    unsafe { &mut *(CTX_ADDR as *mut Ctx) }
}

/// Map the region table + path pool area (at least one page).
pub fn map_table(nregions: usize, pool_len: usize) {
    let bytes = (nregions * core::mem::size_of::<RegionDesc>() + pool_len) as u64;
    map_scratch(TABLE_ADDR, round_up(bytes.max(1)), b"region table");
}

/// The region descriptors (valid once [`map_table`] ran and they were read).
pub fn regions(ctx: &Ctx) -> &'static [RegionDesc] {
    // SAFETY: the table area is mapped for the life of the process and sized for `nregions`
    // descriptors (any bit pattern is a valid RegionDesc).
    unsafe { core::slice::from_raw_parts(TABLE_ADDR as *const RegionDesc, ctx.nregions) }
}

/// The path pool.
pub fn pool(ctx: &Ctx) -> &'static [u8] {
    let at = TABLE_ADDR + (ctx.nregions * core::mem::size_of::<RegionDesc>()) as u64;
    // SAFETY: as for `regions`; the pool follows the descriptors inside the same mapping.
    unsafe { core::slice::from_raw_parts(at as *const u8, ctx.pool_len) }
}
