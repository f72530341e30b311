//! Validation of everything that can be checked before the old address space is destroyed:
//! preamble, restore block, region table, special mappings against this kernel's, backing files,
//! restart entry. Also opens region files (with the identity check) for the mapping step.
//!
//! Runs with no libc, no TLS, no allocator; never changes a mapping. A failure prints one line
//! and exits with the current phase's code.

use crate::maps::{self, special_name};
use crate::msg::{Msg, fatal};
use crate::raw::*;
use crate::sys;
use crate::zone::{self, Area, Ctx, PARK_MAX, TABLE_MAX, ZONE_END};

/// Highest user address any x86_64 kernel hands out (5-level paging); the kernel rejects what
/// this machine cannot map, the check only keeps arithmetic sane.
const USER_END: u64 = 1 << 56;

const KNOWN_FLAGS: u32 = RF_SHARED | RF_FILE | RF_GROWSDOWN | RF_HEAP | RF_NO_DATA;

pub fn preamble(p: &Preamble) {
    if p.magic != IMAGE_MAGIC {
        fatal(b"not a checkpoint image (bad magic)");
    }
    if p.version != FORMAT_VERSION {
        Msg::new()
            .s(b"image format version ")
            .u(p.version as u64)
            .s(b", this restorer reads version ")
            .u(FORMAT_VERSION as u64)
            .fail();
    }
}

/// Checks the fixed part of the restore block; returns (nregions, pool_len).
pub fn block(b: &RestoreBlock) -> (usize, usize) {
    if b.magic != RESTORE_MAGIC {
        fatal(b"bad restore block magic (corrupt image)");
    }
    if b.auxv_words > MAX_AUXV_WORDS as u64 {
        Msg::new()
            .s(b"image auxv has ")
            .u(b.auxv_words)
            .s(b" words (max ")
            .u(MAX_AUXV_WORDS as u64)
            .s(b")")
            .fail();
    }
    let table = b
        .nregions
        .checked_mul(core::mem::size_of::<RegionDesc>() as u64)
        .and_then(|t| t.checked_add(b.pool_len));
    match table {
        Some(t) if t <= TABLE_MAX => {}
        _ => Msg::new()
            .s(b"image too large for the restorer: ")
            .u(b.nregions)
            .s(b" regions, ")
            .u(b.pool_len)
            .s(b" bytes of paths")
            .fail(),
    }
    (b.nregions as usize, b.pool_len as usize)
}

fn region_msg(r: &RegionDesc) -> Msg {
    let mut m = Msg::new();
    m.s(b"region ").range(r.start, r.end);
    m
}

/// Shape of every region: aligned, sorted, disjoint, clear of the zone, paths inside the pool.
pub fn regions(regions: &[RegionDesc], pool: &[u8]) {
    let mut prev_end = 0;
    for r in regions {
        if r.start >= r.end || r.start % PAGE != 0 || r.end % PAGE != 0 || r.end > USER_END {
            region_msg(r).s(b" is malformed").fail();
        }
        if zone::overlaps_zone(r.start, r.end) {
            region_msg(r)
                .s(b" overlaps the restorer zone ")
                .range(ZONE_BASE, ZONE_END)
                .fail();
        }
        if r.start < prev_end {
            region_msg(r)
                .s(b" overlaps the previous region or is out of order")
                .fail();
        }
        prev_end = r.end;
        if r.prot & !(sys::PROT_READ | sys::PROT_WRITE | sys::PROT_EXEC) != 0 {
            region_msg(r).s(b" has bad prot ").x(r.prot as u64).fail();
        }
        if r.flags & !KNOWN_FLAGS != 0 {
            region_msg(r)
                .s(b" has unknown flags ")
                .x(r.flags as u64)
                .fail();
        }
        if r.flags & RF_FILE != 0 {
            let end = r.path_off as u64 + r.path_len as u64;
            if r.path_len == 0 || r.path_len as usize >= 4097 || end > pool.len() as u64 {
                region_msg(r)
                    .s(b" has its path outside the path pool")
                    .fail();
            }
            if pool[r.path_off as usize..end as usize].contains(&0) {
                region_msg(r).s(b" has a NUL byte in its path").fail();
            }
            if r.file_offset % PAGE != 0 {
                region_msg(r)
                    .s(b" has an unaligned file offset ")
                    .x(r.file_offset)
                    .fail();
            }
        }
    }
}

/// Index of the region containing `addr`, if any.
pub fn region_at(regions: &[RegionDesc], addr: u64) -> Option<usize> {
    let i = regions.partition_point(|r| r.end <= addr);
    (i < regions.len() && regions[i].start <= addr).then_some(i)
}

/// First region intersecting `[start, end)`, if any.
fn region_overlapping(regions: &[RegionDesc], start: u64, end: u64) -> Option<&RegionDesc> {
    let i = regions.partition_point(|r| r.end <= start);
    regions.get(i).filter(|r| r.start < end)
}

/// Collect the image's special slots into `ctx.image_special` and check them.
pub fn image_special(ctx: &mut Ctx, regions: &[RegionDesc]) {
    for s in ctx.block.special.iter() {
        if s.kind == 0 {
            continue;
        }
        if !(SPECIAL_VVAR..=SPECIAL_VDSO).contains(&s.kind) {
            Msg::new()
                .s(b"image has special mapping of unknown kind ")
                .u(s.kind)
                .fail();
        }
        let name = special_name(s.kind);
        let slot = &mut ctx.image_special[(s.kind - 1) as usize];
        if slot.present() {
            Msg::new()
                .s(b"image has two ")
                .s(name)
                .s(b" mappings")
                .fail();
        }
        if s.start >= s.end || s.start % PAGE != 0 || s.end % PAGE != 0 || s.end > USER_END {
            Msg::new()
                .s(b"image ")
                .s(name)
                .s(b" at ")
                .range(s.start, s.end)
                .s(b" is malformed")
                .fail();
        }
        if zone::overlaps_zone(s.start, s.end) {
            Msg::new()
                .s(b"image ")
                .s(name)
                .s(b" at ")
                .range(s.start, s.end)
                .s(b" overlaps the restorer zone")
                .fail();
        }
        if let Some(r) = region_overlapping(regions, s.start, s.end) {
            Msg::new()
                .s(b"image ")
                .s(name)
                .s(b" at ")
                .range(s.start, s.end)
                .s(b" overlaps region ")
                .range(r.start, r.end)
                .fail();
        }
        *slot = Area {
            start: s.start,
            end: s.end,
        };
    }
    let sp = ctx.image_special;
    for (i, a) in sp.iter().enumerate() {
        for b in &sp[i + 1..] {
            if a.present() && b.present() && a.start < b.end && b.start < a.end {
                fatal(b"image special mappings overlap each other");
            }
        }
    }
}

/// Find this kernel's special mappings in the restorer's own maps and compare them with the
/// image's, kind by kind: same sizes, same placement relative to each other.
pub fn kernel_special(ctx: &mut Ctx) {
    let text = maps::read_self_maps(&mut ctx.maps);
    let mut found = [Area::default(); 3];
    for m in maps::lines(text) {
        let kind = maps::special_kind(m.name);
        if kind == 0 {
            continue;
        }
        let slot = &mut found[(kind - 1) as usize];
        if slot.present() {
            Msg::new()
                .s(b"this kernel shows two ")
                .s(m.name)
                .s(b" mappings")
                .fail();
        }
        *slot = Area {
            start: m.start,
            end: m.end,
        };
    }
    ctx.kernel_special = found;

    let img = ctx.image_special;
    for k in 0..3 {
        let (il, kl) = (len_or_0(&img[k]), len_or_0(&found[k]));
        if il != kl {
            Msg::new()
                .s(b"vDSO layout differs: image has ")
                .s(special_name(k as u64 + 1))
                .s(b" ")
                .u(il)
                .s(b" bytes, this kernel ")
                .u(kl)
                .fail();
        }
    }
    let (ib, kb) = (base(&img), base(&found));
    for k in 0..3 {
        if !found[k].present() {
            continue;
        }
        let (io, ko) = (img[k].start - ib, found[k].start - kb);
        if io != ko {
            Msg::new()
                .s(b"vDSO layout differs: ")
                .s(special_name(k as u64 + 1))
                .s(b" is at offset ")
                .u(io)
                .s(b" in the image, ")
                .u(ko)
                .s(b" on this kernel")
                .fail();
        }
    }
    if span(&found) > PARK_MAX {
        fatal(b"this kernel's vDSO area is too large to park");
    }
}

fn len_or_0(a: &Area) -> u64 {
    if a.present() { a.len() } else { 0 }
}

/// Lowest start among present areas (0 if none).
pub fn base(areas: &[Area; 3]) -> u64 {
    areas
        .iter()
        .filter(|a| a.present())
        .map(|a| a.start)
        .min()
        .unwrap_or(0)
}

/// Distance from the lowest start to the highest end among present areas.
pub fn span(areas: &[Area; 3]) -> u64 {
    let end = areas
        .iter()
        .filter(|a| a.present())
        .map(|a| a.end)
        .max()
        .unwrap_or(0);
    end - base(areas)
}

/// Whether the mapping step gets this region's contents from the stream (and so maps it
/// writable first): everything except PROT_NONE reservations and shared file mappings.
pub fn receives_runs(r: &RegionDesc) -> bool {
    r.flags & RF_NO_DATA == 0 && !(r.flags & RF_FILE != 0 && r.flags & RF_SHARED != 0)
}

/// Whether the region is mapped from its file (and so the file is checked and opened).
pub fn maps_file(r: &RegionDesc) -> bool {
    r.flags & RF_FILE != 0 && r.flags & RF_NO_DATA == 0
}

/// Open a region's file with the access its mapping needs and check it is the same file as at
/// checkpoint time (size, mtime, inode). Returns the descriptor.
pub fn open_region_file(path_buf: &mut [u8; 4097], r: &RegionDesc, pool: &[u8]) -> i32 {
    let (off, len) = (r.path_off as usize, r.path_len as usize);
    let path = &pool[off..off + len];
    path_buf[..path.len()].copy_from_slice(path);
    path_buf[path.len()] = 0;
    let cpath = &path_buf[..path.len() + 1];
    let rw = r.flags & RF_SHARED != 0 && r.prot & sys::PROT_WRITE != 0;
    let mode = if rw { sys::O_RDWR } else { sys::O_RDONLY };
    let fd = sys::open(cpath, mode | sys::O_CLOEXEC);
    if fd < 0 {
        Msg::new()
            .s(b"cannot open ")
            .s(path)
            .s(if rw { b" read-write" } else { b"" })
            .errno(fd)
            .fail();
    }
    let fd = fd as i32;
    let mut st = sys::Stat::default();
    let e = sys::fstat(fd, &mut st);
    if e < 0 {
        Msg::new().s(b"cannot stat ").s(path).errno(e).fail();
    }
    let mtime_ns = st
        .st_mtime
        .wrapping_mul(1_000_000_000)
        .wrapping_add(st.st_mtime_nsec);
    if st.st_size as u64 != r.file_size {
        file_changed(path)
            .s(b"size ")
            .u(r.file_size)
            .s(b", now ")
            .i(st.st_size)
            .s(b")")
            .fail();
    }
    if mtime_ns != r.file_mtime_ns {
        file_changed(path)
            .s(b"mtime_ns ")
            .i(r.file_mtime_ns)
            .s(b", now ")
            .i(mtime_ns)
            .s(b")")
            .fail();
    }
    if st.st_ino != r.file_ino {
        file_changed(path)
            .s(b"inode ")
            .u(r.file_ino)
            .s(b", now ")
            .u(st.st_ino)
            .s(b")")
            .fail();
    }
    fd
}

fn file_changed(path: &[u8]) -> Msg {
    let mut m = Msg::new();
    m.s(b"file ").s(path).s(b" changed since the checkpoint (");
    m
}

/// Every file-backed region's file exists, is accessible as needed, and is unchanged.
pub fn files(ctx: &mut Ctx, regions: &[RegionDesc], pool: &[u8]) {
    for r in regions.iter().filter(|r| maps_file(r)) {
        let fd = open_region_file(&mut ctx.path, r, pool);
        sys::close(fd);
    }
}

/// The restart entry must be inside an executable region.
pub fn entry(b: &RestoreBlock, regions: &[RegionDesc]) {
    match region_at(regions, b.entry) {
        Some(i) if regions[i].prot & sys::PROT_EXEC != 0 => {}
        _ => Msg::new()
            .s(b"restart entry ")
            .x(b.entry)
            .s(b" is not inside an executable region")
            .fail(),
    }
}
