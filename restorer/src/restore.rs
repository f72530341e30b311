//! The destructive half, running on the zone stack: park the kernel's vDSO in the zone, unmap
//! everything else, map the image's regions, read the memory runs into them, set protections,
//! move the vDSO to the image's addresses, restore `mm` fields, and jump to the restart entry.
//!
//! Runs with no libc, no TLS, no allocator; must never touch memory outside the zone except the
//! image regions it maps, and from the unmapping on every failure exits with code 4.

use crate::check::{self, maps_file, receives_runs, region_at};
use crate::maps;
use crate::msg::{self, Msg, fatal};
use crate::raw::*;
use crate::stream;
use crate::sys;
use crate::zone::{self, Ctx, PARK_ADDR, STACK_TOP, ZONE_END};

/// Continuation after the stack switch (step 4). `arg` is the [`Ctx`].
///
/// # Safety
/// Must be entered through `sys::run_on_stack` onto the zone stack with `arg` = the zone Ctx.
pub unsafe extern "C" fn on_zone_stack(arg: *mut u8) -> ! {
    // SAFETY: `arg` is the Ctx mapped at CTX_ADDR; nothing else references it now.
    let ctx = unsafe { &mut *(arg as *mut Ctx) };
    park_special(ctx);
    msg::point_of_no_return();
    unmap_all_but_zone(ctx);
    map_regions(ctx);
    read_runs(ctx);
    protect_regions(ctx);
    place_special(ctx);
    detach_from_own_file(ctx);
    set_mm(ctx);
    sys::close(ctx.fd);
    ctx.args.zone_start = ZONE_BASE;
    ctx.args.zone_len = ZONE_LEN;
    // SAFETY: the entry was checked to lie in an executable image region, which is now mapped
    // with the image's contents; args live in the zone, which the entry unmaps only when done.
    unsafe {
        sys::jump_to_entry(
            ctx.block.entry_arg,
            &ctx.args as *const RestartArgs as *const u8,
            ctx.block.entry,
            STACK_TOP,
        )
    }
}

/// Step 5: move the kernel's special mappings, whole and keeping their spacing, into the zone.
fn park_special(ctx: &mut Ctx) {
    let base = check::base(&ctx.kernel_special);
    for (k, a) in ctx.kernel_special.iter_mut().enumerate() {
        if !a.present() {
            continue;
        }
        let to = PARK_ADDR + (a.start - base);
        // SAFETY: the destination is unused zone space reserved for parking.
        let r = unsafe { sys::mremap_fixed(a.start, a.len(), to) };
        if r < 0 || r as u64 != to {
            Msg::new()
                .s(b"cannot park ")
                .s(maps::special_name(k as u64 + 1))
                .s(b" in the zone")
                .errno(r.min(0))
                .fail();
        }
        a.end = to + a.len();
        a.start = to;
    }
}

/// Step 6: unmap every mapping outside the zone except [vsyscall], then verify.
fn unmap_all_but_zone(ctx: &mut Ctx) {
    let text = maps::read_self_maps(&mut ctx.maps);
    for m in maps::lines(text) {
        if m.name == b"[vsyscall]" {
            continue;
        }
        let cut = |s: u64, e: u64| {
            if s < e {
                // SAFETY: outside the zone nothing is in use any more: we run on the zone stack,
                // our code, data and state are in the zone, argv was copied.
                let r = unsafe { sys::munmap(s, e - s) };
                if r < 0 {
                    Msg::new().s(b"cannot unmap ").range(s, e).errno(r).fail();
                }
            }
        };
        cut(m.start, m.end.min(ZONE_BASE));
        cut(m.start.max(ZONE_END), m.end);
    }
    let text = maps::read_self_maps(&mut ctx.maps);
    for m in maps::lines(text) {
        if m.name != b"[vsyscall]" && (m.start < ZONE_BASE || m.end > ZONE_END) {
            Msg::new()
                .s(b"mapping ")
                .range(m.start, m.end)
                .s(b" ")
                .s(m.name)
                .s(b" survived unmapping")
                .fail();
        }
    }
}

/// Step 7: map every region at its address; those receiving runs read-write for now.
fn map_regions(ctx: &mut Ctx) {
    let regions = zone::regions(ctx);
    let pool = zone::pool(ctx);
    for r in regions {
        let len = r.end - r.start;
        let fixed = sys::MAP_FIXED_NOREPLACE;
        let (prot, flags, fd) = if r.flags & RF_NO_DATA != 0 {
            (
                sys::PROT_NONE,
                sys::MAP_PRIVATE | sys::MAP_ANONYMOUS | sys::MAP_NORESERVE | fixed,
                -1,
            )
        } else if maps_file(r) {
            let fd = check::open_region_file(&mut ctx.path, r, pool);
            if r.flags & RF_SHARED != 0 {
                (r.prot, sys::MAP_SHARED | fixed, fd)
            } else {
                (
                    r.prot | sys::PROT_READ | sys::PROT_WRITE,
                    sys::MAP_PRIVATE | fixed,
                    fd,
                )
            }
        } else {
            // Shared anonymous memory stays shared with future children (sharing with other
            // restored processes is lost: that is a plugin's business).
            let share = if r.flags & RF_SHARED != 0 {
                sys::MAP_SHARED
            } else {
                sys::MAP_PRIVATE
            };
            let mut f = share | sys::MAP_ANONYMOUS | fixed;
            if r.flags & RF_GROWSDOWN != 0 {
                f |= sys::MAP_GROWSDOWN;
            }
            if len >= 1 << 30 {
                f |= sys::MAP_NORESERVE;
            }
            (r.prot | sys::PROT_READ | sys::PROT_WRITE, f, -1)
        };
        let off = if fd >= 0 { r.file_offset } else { 0 };
        // SAFETY: MAP_FIXED_NOREPLACE never replaces anything; the range is outside the zone.
        let got = unsafe { sys::mmap(r.start, len, prot, flags, fd, off) };
        if fd >= 0 {
            sys::close(fd);
        }
        if got < 0 || got as u64 != r.start {
            Msg::new()
                .s(b"cannot map region ")
                .range(r.start, r.end)
                .errno(got.min(0))
                .fail();
        }
    }
}

/// Step 8: read each run straight to its address; check the trailer.
fn read_runs(ctx: &mut Ctx) {
    let regions = zone::regions(ctx);
    let fd = ctx.fd;
    let mut nruns: u64 = 0;
    loop {
        let mut h = RunHeader::default();
        stream::read_pod(fd, &mut h, b"memory run header");
        if h.addr == 0 && h.len == 0 {
            break;
        }
        let end = h.addr.checked_add(h.len);
        let inside = match (region_at(regions, h.addr), end) {
            (Some(i), Some(end)) => {
                h.len > 0 && end <= regions[i].end && receives_runs(&regions[i])
            }
            _ => false,
        };
        if !inside {
            Msg::new()
                .s(b"memory run ")
                .x(h.addr)
                .s(b" + ")
                .u(h.len)
                .s(b" is not inside a region that takes data (corrupt image)")
                .fail();
        }
        // SAFETY: the run lies inside an image region just mapped writable, which nothing of
        // the restorer references.
        unsafe { stream::read_exact_raw(fd, h.addr as *mut u8, h.len as usize, b"memory run") };
        nruns += 1;
    }
    let mut t = Trailer::default();
    stream::read_pod(fd, &mut t, b"trailer");
    if t.magic != TRAILER_MAGIC {
        fatal(b"bad trailer magic (corrupt image)");
    }
    if t.nruns != nruns {
        Msg::new()
            .s(b"trailer counts ")
            .u(t.nruns)
            .s(b" memory runs, the stream had ")
            .u(nruns)
            .fail();
    }
}

/// Step 9: give every region its saved protection.
fn protect_regions(ctx: &mut Ctx) {
    for r in zone::regions(ctx) {
        let prot = if r.flags & RF_NO_DATA != 0 {
            sys::PROT_NONE
        } else {
            r.prot
        };
        // SAFETY: image regions hold no restorer code or data.
        let e = unsafe { sys::mprotect(r.start, r.end - r.start, prot) };
        if e < 0 {
            Msg::new()
                .s(b"cannot mprotect region ")
                .range(r.start, r.end)
                .errno(e)
                .fail();
        }
    }
}

/// Step 10: move the parked special mappings to the image's addresses.
fn place_special(ctx: &mut Ctx) {
    for k in 0..3 {
        let (from, to) = (ctx.kernel_special[k], ctx.image_special[k]);
        if !from.present() {
            continue;
        }
        // SAFETY: the destination was checked to overlap neither the zone nor any region.
        let r = unsafe { sys::mremap_fixed(from.start, from.len(), to.start) };
        if r < 0 || r as u64 != to.start {
            Msg::new()
                .s(b"cannot move ")
                .s(maps::special_name(k as u64 + 1))
                .s(b" to ")
                .range(to.start, to.end)
                .errno(r.min(0))
                .fail();
        }
    }
}

/// Step 10b: the zone's mappings of this restorer's own file (its code and data, linked into
/// the zone) become anonymous copies, so that no mapping of the old executable is left and
/// the kernel lets `/proc/self/exe` name the program again (step 11). Each is copied to a
/// scratch mapping and moved over the original in one `mremap`: the code keeps running from
/// identical bytes at the same address. Failures only leave `/proc/self/exe` as it is.
fn detach_from_own_file(ctx: &mut Ctx) {
    let text = maps::read_self_maps(&mut ctx.maps);
    for m in maps::lines(text) {
        if m.start < ZONE_BASE || m.end > ZONE_END || m.name.first() != Some(&b'/') {
            continue;
        }
        let len = m.end - m.start;
        let mut prot = 0;
        for (c, p) in [
            (b'r', sys::PROT_READ),
            (b'w', sys::PROT_WRITE),
            (b'x', sys::PROT_EXEC),
        ] {
            if m.perms.contains(&c) {
                prot |= p;
            }
        }
        if m.perms.first() != Some(&b'r') {
            continue;
        }
        // SAFETY: a fresh anonymous mapping anywhere (the kernel picks a free range).
        let tmp = unsafe {
            sys::mmap(
                0,
                len,
                sys::PROT_READ | sys::PROT_WRITE,
                sys::MAP_PRIVATE | sys::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if tmp < 0 {
            return;
        }
        let tmp = tmp as u64;
        // SAFETY: both ranges are mapped readable/writable and `len` long; they do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(m.start as *const u8, tmp as *mut u8, len as usize)
        };
        // SAFETY: our scratch mapping.
        if unsafe { sys::mprotect(tmp, len, prot) } < 0
            // SAFETY: replaces the original with an identical anonymous copy (see above).
            || unsafe { sys::mremap_fixed(tmp, len, m.start) } < 0
        {
            // SAFETY: dropping our scratch mapping.
            unsafe { sys::munmap(tmp, len) };
            return;
        }
    }
}

/// The kernel's `struct prctl_mm_map`.
#[repr(C)]
struct PrctlMmMap {
    mm: MmFields,
    auxv: u64,
    auxv_size: u32,
    exe_fd: u32,
}

/// Step 11: restore the kernel's `mm` fields, saved auxv and executable file; failure is
/// reported to the entry.
///
/// The executable (`/proc/self/exe`) is the file mapped at `start_code`; the kernel lets it be
/// replaced only by a process with CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE in its user
/// namespace (the namespace restart has them) and only once the old one (this restorer) is
/// no longer mapped (it is not: everything outside the zone was unmapped). Without it the
/// call is made again without the executable: `/proc/self/exe` then names ckpt-restorer.
/// The kernel refuses the whole call (EINVAL) if the auxv is larger than its `saved_auxv`
/// (possible when the image comes from another kernel); then the fields are applied without the
/// auxv, which only affects `/proc/self/auxv`.
fn set_mm(ctx: &mut Ctx) {
    let b = &ctx.block;
    let code = b.mm.start_code;
    let pool = zone::pool(ctx);
    let exe_fd = zone::regions(ctx)
        .iter()
        .find(|r| r.start <= code && code < r.end && maps_file(r))
        .map(|r| check::open_region_file(&mut ctx.path, r, pool))
        .unwrap_or(-1);
    let b = &ctx.block;
    let mut map = PrctlMmMap {
        mm: b.mm,
        auxv: b.auxv.as_ptr() as u64,
        auxv_size: (b.auxv_words * 8) as u32,
        exe_fd: if exe_fd >= 0 { exe_fd as u32 } else { u32::MAX },
    };
    let mut r = prctl_mm(&map);
    if r < 0 && map.exe_fd != u32::MAX {
        map.exe_fd = u32::MAX;
        r = prctl_mm(&map);
    }
    if exe_fd >= 0 {
        sys::close(exe_fd);
    }
    if r < 0 && map.auxv_size != 0 {
        map.auxv_size = 0;
        r = prctl_mm(&map);
    }
    if r < 0 {
        ctx.args.flags |= RA_MM_NOT_RESTORED;
    }
}

fn prctl_mm(map: &PrctlMmMap) -> isize {
    // SAFETY: `map` is a complete prctl_mm_map; auxv points at auxv_size readable bytes.
    unsafe {
        sys::prctl_set_mm_map(
            map as *const PrctlMmMap as *const u8,
            core::mem::size_of::<PrctlMmMap>(),
        )
    }
}
