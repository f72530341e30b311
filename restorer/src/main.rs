//! `ckpt-restorer FD HOST PORT CKPT_DIR`: freestanding static program that replaces its own
//! address space with the checkpoint image read (decompressed) from FD, then jumps into the
//! restored `libckpt.so` (`RestoreBlock::entry`).
//!
//! This file owns the order of the steps: the non-destructive half (arguments, reading and
//! validating the image's metadata, switching to the zone stack) is here; the destructive half
//! is in [`restore`]. Exit code 3 = image refused, process untouched; 4 = failure after the old
//! address space was destroyed.
//!
//! Runs with no libc, no TLS, no allocator, no unwinding. All memory it uses is its own ELF
//! image and fixed mappings inside the zone (see [`zone`]); it must never keep a pointer into the
//! kernel-made initial stack past the stack switch.
#![no_std]
#![no_main]

#[path = "../../format/src/raw.rs"]
mod raw;

mod args;
mod check;
mod maps;
mod msg;
mod restore;
mod stream;
mod sys;
mod zone;

use msg::Msg;
use raw::{Preamble, RegionDesc};

/// Called by `_start` with the initial stack pointer.
///
/// # Safety
/// Only `sys::_start` may call this, once, with the kernel's initial stack pointer.
pub unsafe extern "C" fn rust_start(sp: *const u64) -> ! {
    // Step 1: state in the zone, argv copied into it.
    let ctx = zone::create_ctx();
    // SAFETY: `sp` is the kernel's initial stack pointer (argc, argv...).
    ctx.fd = unsafe { args::parse(sp, &mut ctx.args) };
    let fd = ctx.fd;

    // Step 2: preamble, header, restore block, region table, path pool.
    let mut pre = Preamble::default();
    stream::read_pod(fd, &mut pre, b"preamble");
    check::preamble(&pre);
    stream::skip(fd, pre.header_len as u64, &mut ctx.io, b"header");
    stream::read_pod(fd, &mut ctx.block, b"restore block");
    let (nregions, pool_len) = check::block(&ctx.block);
    zone::map_table(nregions, pool_len);
    let table_len = nregions * core::mem::size_of::<RegionDesc>() + pool_len;
    // SAFETY: map_table just mapped at least `table_len` writable bytes at TABLE_ADDR.
    unsafe { stream::read_exact_raw(fd, zone::TABLE_ADDR as *mut u8, table_len, b"region table") };
    ctx.nregions = nregions;
    ctx.pool_len = pool_len;

    // Step 3: validate everything before destroying anything.
    let regions = zone::regions(ctx);
    let pool = zone::pool(ctx);
    check::regions(regions, pool);
    check::image_special(ctx, regions);
    check::kernel_special(ctx);
    check::files(ctx, regions, pool);
    check::entry(&ctx.block, regions);

    // Step 4: own stack inside the zone, a guard page below it.
    zone::map_scratch(zone::STACK_ADDR, zone::STACK_LEN, b"restorer stack");
    zone::map_scratch(zone::STACK_ADDR - raw::PAGE, raw::PAGE, b"stack guard");
    // SAFETY: the guard page was just mapped by us and holds nothing.
    unsafe { sys::mprotect(zone::STACK_ADDR - raw::PAGE, raw::PAGE, sys::PROT_NONE) };
    // SAFETY: the stack is mapped and writable; ctx lives in the zone, not on this stack.
    unsafe {
        sys::run_on_stack(
            ctx as *mut zone::Ctx as *mut u8,
            zone::STACK_TOP,
            restore::on_zone_stack,
        )
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut m = Msg::new();
    m.s(b"internal error");
    if let Some(l) = info.location() {
        m.s(b" at ")
            .s(l.file().as_bytes())
            .s(b":")
            .u(l.line() as u64);
    }
    m.fail()
}
