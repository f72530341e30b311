//! End-to-end tests of `ckpt-restorer` on synthetic images (see `mkimage`): a real process
//! restores a small machine-code program plus data, file, heap, stack and reservation regions,
//! and every refusal path is checked for its exit code and one-line message.

mod mkimage;

use mkimage::raw::*;
use mkimage::*;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

const PROT_R: u32 = 1;
const PROT_W: u32 = 2;
const PROT_X: u32 = 4;

const CODE: u64 = 0x1000_0000;
const DATA: u64 = 0x1010_0000;
const FPRIV: u64 = 0x1020_0000;
const FSHARED: u64 = 0x1030_0000;
const SHANON: u64 = 0x1040_0000;
const SPECIAL_BASE: u64 = 0x2000_0000;
const GSTACK: u64 = 0x7ff0_0000_0000;
const GSTACK_LEN: u64 = 0x8000;
const HEAP_RUN: usize = 0x40000;

const MESSAGE: &[u8] = b"restored: hello from a restored image\n";
const CMDLINE: &[u8] = b"restored-program\0--flag\0";
const ENVIRON: &[u8] = b"CKPT_TEST=1\0";

/// Where a restorer started without randomization keeps its stack and special mappings: the
/// test image puts regions exactly there, so a restorer that did not park its vDSO or unmap its
/// stack fails with EEXIST.
struct Hot {
    stack: (u64, u64),
    special: (u64, u64),
}

fn hot() -> &'static Hot {
    static HOT: OnceLock<Hot> = OnceLock::new();
    HOT.get_or_init(|| {
        let maps = probe_layout(&std_args());
        let stack = maps
            .iter()
            .find(|m| m.name == "[stack]")
            .expect("probe has a [stack]");
        let sp: Vec<_> = maps
            .iter()
            .filter(|m| m.name.starts_with("[v") && m.name != "[vsyscall]")
            .collect();
        assert!(!sp.is_empty(), "probe has no vDSO");
        Hot {
            stack: (stack.start, stack.end),
            special: (
                sp.iter().map(|m| m.start).min().unwrap(),
                sp.iter().map(|m| m.end).max().unwrap(),
            ),
        }
    })
}

/// Per-test scratch directory with two backing files.
struct Fixture {
    dir: PathBuf,
    file_a: String,
    file_b: String,
    a: Vec<u8>,
    b: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ckpt-restorer-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let a: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = b"shared file page"
            .iter()
            .copied()
            .cycle()
            .take(4096)
            .collect();
        let file_a = dir.join("file-a").to_str().unwrap().to_string();
        let file_b = dir.join("file-b").to_str().unwrap().to_string();
        std::fs::write(&file_a, &a).unwrap();
        std::fs::write(&file_b, &b).unwrap();
        Fixture {
            dir,
            file_a,
            file_b,
            a,
            b,
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a successful restore must print.
struct Expect {
    writes: Vec<Vec<u8>>,
    maps: Vec<(u64, u64, String, u64, String)>,
    auxv: Vec<u64>,
}

fn pseudo_random(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn perms(prot: u32, shared: bool) -> String {
    format!(
        "{}{}{}{}",
        if prot & PROT_R != 0 { 'r' } else { '-' },
        if prot & PROT_W != 0 { 'w' } else { '-' },
        if prot & PROT_X != 0 { 'x' } else { '-' },
        if shared { 's' } else { 'p' }
    )
}

/// The full test image: code, data, private and shared file mappings, heap (over the probe's
/// vDSO), a growsdown stack, a PROT_NONE reservation (over the probe's stack), the generator's
/// own special-mapping layout moved to SPECIAL_BASE, mm fields and auxv.
fn good_image(fx: &Fixture) -> (Image, Expect) {
    let hot = hot();
    let heap = (hot.special.0 - 0x10_0000, hot.special.1 + 0x1000);
    let nodata = hot.stack;

    let mut img = Image::new();
    let code = blob();
    assert!(code.len() < 4096);

    // Special mappings: this kernel's layout, moved.
    let own = own_special();
    let own_base = own.iter().map(|s| s.start).min().unwrap();
    let mut maps_expect = Vec::new();
    let own_maps = parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap());
    for (i, s) in own.iter().enumerate() {
        let start = SPECIAL_BASE + (s.start - own_base);
        let end = start + (s.end - s.start);
        img.block.special[i] = SpecialArea {
            kind: s.kind,
            start,
            end,
        };
        let m = own_maps.iter().find(|m| m.start == s.start).unwrap();
        maps_expect.push((start, end, m.perms.clone(), 0, m.name.clone()));
    }
    let vdso_img = img
        .block
        .special
        .iter()
        .find(|s| s.kind == SPECIAL_VDSO)
        .unwrap()
        .start;

    // Data page: what the blob prints.
    let mut dp = DataPage::new(DATA);
    dp.message(MESSAGE);
    let mut writes = vec![MESSAGE.to_vec()];
    dp.write(FPRIV, 16);
    writes.push(fx.a[0x1000..0x1010].to_vec());
    let priv_run: Vec<u8> = b"private page overwritten by a run"
        .iter()
        .copied()
        .cycle()
        .take(4096)
        .collect();
    dp.write(FPRIV + 0x1000, 16);
    writes.push(priv_run[..16].to_vec());
    dp.write(FSHARED, 16);
    writes.push(fx.b[..16].to_vec());
    let heap_run = pseudo_random(HEAP_RUN, 0x1234_5678);
    dp.write(heap.0, HEAP_RUN as u64);
    writes.push(heap_run.clone());
    let stack_run: Vec<u8> = b"top of the stack"
        .iter()
        .copied()
        .cycle()
        .take(4096)
        .collect();
    dp.write(GSTACK + GSTACK_LEN - 16, 16);
    writes.push(stack_run[4096 - 16..].to_vec());
    dp.write(DATA + 0x11ff0, 16);
    writes.push(vec![0; 16]); // never in a run: must read as zero
    let shanon_run: Vec<u8> = b"shared anonymous"
        .iter()
        .copied()
        .cycle()
        .take(4096)
        .collect();
    dp.write(SHANON, 16);
    writes.push(shanon_run[..16].to_vec());
    // The moved vDSO must work: its code finds [vvar] at the same relative place.
    dp.clock_gettime(vdso_img + vdso_clock_gettime_offset());
    let arg_start = dp.put(CMDLINE);
    assert_eq!(
        dp.put(ENVIRON),
        arg_start + ((CMDLINE.len() as u64 + 7) & !7)
    );
    let env_start = arg_start + ((CMDLINE.len() as u64 + 7) & !7);
    dp.dump("/proc/self/maps");
    dp.dump("/proc/self/auxv");
    dp.dump("/proc/self/cmdline");
    dp.dump("/proc/self/environ");
    let data_page = dp.finish();

    img.regions = vec![
        anon(CODE, CODE + 0x1000, PROT_R | PROT_X, 0),
        anon(DATA, DATA + DATA_LEN, PROT_R | PROT_W, 0),
        file(FPRIV, FPRIV + 0x2000, PROT_R, 0, &fx.file_a, 0x1000),
        file(
            FSHARED,
            FSHARED + 0x1000,
            PROT_R | PROT_W,
            RF_SHARED,
            &fx.file_b,
            0,
        ),
        anon(GSTACK, GSTACK + GSTACK_LEN, PROT_R | PROT_W, RF_GROWSDOWN),
        anon(heap.0, heap.1, PROT_R | PROT_W, RF_HEAP),
        anon(nodata.0, nodata.1, 0, RF_NO_DATA),
        anon(SHANON, SHANON + 0x1000, PROT_R | PROT_W, RF_SHARED),
    ];
    img.regions.sort_by_key(|r| r.desc.start);
    for w in img.regions.windows(2) {
        assert!(
            w[0].desc.end < w[1].desc.start,
            "test layout collides with the probe's"
        );
    }
    img.runs = vec![
        (CODE, code),
        (DATA, data_page),
        (FPRIV + 0x1000, priv_run),
        (heap.0, heap_run),
        (GSTACK + GSTACK_LEN - 4096, stack_run),
        (SHANON, shanon_run),
    ];
    img.runs.sort_by_key(|r| r.0);

    img.block.entry = CODE;
    img.block.entry_arg = DATA;
    img.block.mm = MmFields {
        start_code: CODE,
        end_code: CODE + 0x1000,
        start_data: DATA,
        end_data: DATA + DATA_LEN,
        start_brk: heap.0,
        brk: heap.1,
        start_stack: GSTACK + GSTACK_LEN - 0x100,
        arg_start,
        arg_end: arg_start + CMDLINE.len() as u64,
        env_start,
        env_end: env_start + ENVIRON.len() as u64,
    };
    let auxv = vec![33, vdso_img, 6, 4096, 9, CODE, 0, 0];
    img.block.auxv[..auxv.len()].copy_from_slice(&auxv);
    img.block.auxv_words = auxv.len() as u64;

    for r in &img.regions {
        let d = r.desc;
        let (name, off) = if let Some(p) = &r.path {
            (p.clone(), d.file_offset)
        } else if d.flags & RF_HEAP != 0 {
            ("[heap]".to_string(), 0)
        } else if d.flags & RF_GROWSDOWN != 0 {
            ("[stack]".to_string(), 0)
        } else if d.flags & RF_SHARED != 0 {
            ("/dev/zero (deleted)".to_string(), 0)
        } else {
            (String::new(), 0)
        };
        maps_expect.push((
            d.start,
            d.end,
            perms(d.prot, d.flags & RF_SHARED != 0),
            off,
            name,
        ));
    }
    maps_expect.push((
        0xffff_ffff_ff60_0000,
        0xffff_ffff_ff60_1000,
        "--xp".into(),
        0,
        "[vsyscall]".into(),
    ));
    maps_expect.sort();
    (
        img,
        Expect {
            writes,
            maps: maps_expect,
            auxv,
        },
    )
}

/// Split the blob's output and check every part.
fn check_success(out: &Outcome, exp: &Expect, mm_restored: bool) {
    assert_eq!(out.code, Some(42), "restorer stderr: {}", out.stderr);
    assert_eq!(out.stderr, "");
    let mut rest = &out.stdout[..];
    for (i, w) in exp.writes.iter().enumerate() {
        assert!(rest.len() >= w.len(), "output too short at write #{i}");
        assert!(
            rest[..w.len()] == w[..],
            "write #{i} differs: got {:?}",
            String::from_utf8_lossy(&rest[..w.len().min(64)])
        );
        rest = &rest[w.len()..];
    }
    // clock_gettime(CLOCK_MONOTONIC) through the moved vDSO: same clock as ours.
    let sec = i64::from_ne_bytes(rest[..8].try_into().unwrap());
    let nsec = i64::from_ne_bytes(rest[8..16].try_into().unwrap());
    rest = &rest[16..];
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    assert!(
        sec > 0 && (0..1_000_000_000).contains(&nsec),
        "vDSO clock_gettime gave {sec}.{nsec}"
    );
    assert!(
        (now.tv_sec - sec).abs() < 60,
        "vDSO clock_gettime gave {sec}, now {}",
        now.tv_sec
    );
    let n = size_of::<RestartArgs>();
    // SAFETY: RestartArgs is plain data; read_unaligned copies it out of the byte buffer.
    let args: RestartArgs =
        unsafe { std::ptr::read_unaligned(rest[..n].as_ptr() as *const RestartArgs) };
    rest = &rest[n..];
    assert_eq!(args.zone_start, ZONE_BASE);
    assert_eq!(args.zone_len, ZONE_LEN);
    assert_eq!(&args.coord_host[..10], b"127.0.0.1\0");
    assert_eq!(args.coord_port, 7779);
    assert_eq!(&args.ckpt_dir[..5], b"/tmp\0");
    assert_eq!(args.flags, if mm_restored { 0 } else { RA_MM_NOT_RESTORED });

    let mut dumps = Vec::new();
    while !rest.is_empty() {
        let len = u64::from_ne_bytes(rest[..8].try_into().unwrap()) as usize;
        dumps.push(rest[8..8 + len].to_vec());
        rest = &rest[8 + len..];
    }
    assert_eq!(dumps.len(), 4);
    let maps = parse_maps(std::str::from_utf8(&dumps[0]).unwrap());
    let got: Vec<_> = maps
        .into_iter()
        .map(|m| (m.start, m.end, m.perms, m.offset, m.name))
        .collect();
    let mut want = exp.maps.clone();
    if !mm_restored {
        for w in want.iter_mut() {
            if w.4 == "[heap]" || w.4 == "[stack]" {
                w.4.clear();
            }
        }
    }
    assert_eq!(
        got,
        want,
        "restored /proc/self/maps:\n{}",
        String::from_utf8_lossy(&dumps[0])
    );
    if mm_restored {
        let auxv: Vec<u64> = dumps[1]
            .chunks(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(auxv, exp.auxv, "/proc/self/auxv");
        assert_eq!(dumps[2], CMDLINE, "/proc/self/cmdline");
        assert_eq!(dumps[3], ENVIRON, "/proc/self/environ");
    }
}

#[test]
fn restores_program_without_aslr() {
    let fx = Fixture::new();
    let (img, exp) = good_image(&fx);
    let out = run(img.encode(), &std_args(), true);
    check_success(&out, &exp, true);
}

#[test]
fn restores_program_with_aslr() {
    let fx = Fixture::new();
    let (img, exp) = good_image(&fx);
    for _ in 0..3 {
        let out = run(img.encode(), &std_args(), false);
        check_success(&out, &exp, true);
    }
}

#[test]
fn mm_failure_is_reported_not_fatal() {
    let fx = Fixture::new();
    let (mut img, exp) = good_image(&fx);
    img.block.mm = MmFields::default(); // start_code == end_code: the kernel says EINVAL
    let out = run(img.encode(), &std_args(), false);
    check_success(&out, &exp, false);
}

/// Run and expect a refusal: exit code and exactly one line on stderr.
fn expect_fail(stream: Vec<u8>, args: &[String], code: i32, line: &str) {
    let out = run(stream, args, false);
    assert_eq!(out.stderr, format!("ckpt-restorer: {line}\n"));
    assert_eq!(out.code, Some(code), "stderr: {}", out.stderr);
    assert!(out.stdout.is_empty());
}

#[test]
fn refuses_bad_arguments() {
    let usage = "usage: ckpt-restorer FD HOST PORT CKPT_DIR [OUTER_PID [OUTER_PROC_FD]]";
    expect_fail(vec![], &["5".into(), "h".into(), "1".into()], 3, usage);
    let args =
        |fd: &str, port: &str| vec![fd.to_string(), "h".into(), port.to_string(), "/tmp".into()];
    expect_fail(
        vec![],
        &args("x5", "1"),
        3,
        &format!("bad FD 'x5'; {usage}"),
    );
    expect_fail(vec![], &args("5", "70000"), 3, "PORT out of range: 70000");
    let long_host = vec!["5".into(), "h".repeat(256), "1".into(), "/tmp".into()];
    expect_fail(vec![], &long_host, 3, "HOST must be 1 to 255 bytes");
}

#[test]
fn refuses_truncated_stream() {
    let fx = Fixture::new();
    let (img, _) = good_image(&fx);
    let s = img.encode();
    expect_fail(vec![], &std_args(), 3, "truncated image stream (preamble)");
    expect_fail(
        s[..10].to_vec(),
        &std_args(),
        3,
        "truncated image stream (preamble)",
    );
    expect_fail(
        s[..20].to_vec(),
        &std_args(),
        3,
        "truncated image stream (header)",
    );
    let in_block = 16 + img.header.len() + 100;
    expect_fail(
        s[..in_block].to_vec(),
        &std_args(),
        3,
        "truncated image stream (restore block)",
    );
    let in_table = img.runs_offset() - 10;
    expect_fail(
        s[..in_table].to_vec(),
        &std_args(),
        3,
        "truncated image stream (region table)",
    );
}

#[test]
fn refuses_bad_magic_and_version() {
    let fx = Fixture::new();
    let (img, _) = good_image(&fx);
    let mut bad = img.clone();
    bad.magic = *b"GZIP\x1f\x8b\0\0";
    expect_fail(
        bad.encode(),
        &std_args(),
        3,
        "not a checkpoint image (bad magic)",
    );
    let mut bad = img.clone();
    bad.version = 99;
    expect_fail(
        bad.encode(),
        &std_args(),
        3,
        "image format version 99, this restorer reads version 1",
    );
    let mut bad = img.clone();
    bad.block.magic ^= 1;
    expect_fail(
        bad.encode(),
        &std_args(),
        3,
        "bad restore block magic (corrupt image)",
    );
}

#[test]
fn refuses_region_in_zone() {
    let fx = Fixture::new();
    let (mut img, _) = good_image(&fx);
    let at = ZONE_BASE + 0x100_0000;
    img.regions.push(anon(at, at + 0x1000, PROT_R, 0));
    img.regions.sort_by_key(|r| r.desc.start);
    expect_fail(
        img.encode(),
        &std_args(),
        3,
        "region 0x300001000000-0x300001001000 overlaps the restorer zone 0x300000000000-0x300010000000",
    );
    // Straddling the zone's start counts too.
    let (mut img, _) = good_image(&fx);
    img.regions
        .push(anon(ZONE_BASE - 0x1000, ZONE_BASE + 0x1000, PROT_R, 0));
    img.regions.sort_by_key(|r| r.desc.start);
    expect_fail(
        img.encode(),
        &std_args(),
        3,
        "region 0x2ffffffff000-0x300000001000 overlaps the restorer zone 0x300000000000-0x300010000000",
    );
}

#[test]
fn refuses_overlapping_or_unsorted_regions() {
    let fx = Fixture::new();
    let (mut img, _) = good_image(&fx);
    img.regions
        .insert(2, anon(DATA + 0x1000, DATA + 0x3000, PROT_R, 0));
    expect_fail(
        img.encode(),
        &std_args(),
        3,
        "region 0x10101000-0x10103000 overlaps the previous region or is out of order",
    );
    let (mut img, _) = good_image(&fx);
    img.regions.swap(0, 1);
    expect_fail(
        img.encode(),
        &std_args(),
        3,
        "region 0x10000000-0x10001000 overlaps the previous region or is out of order",
    );
}

#[test]
fn refuses_vdso_layout_mismatch() {
    let fx = Fixture::new();
    let (img, _) = good_image(&fx);
    let own = own_special();
    let size = |k: u64| {
        own.iter()
            .find(|s| s.kind == k)
            .map(|s| s.end - s.start)
            .unwrap_or(0)
    };

    let mut bad = img.clone();
    let vdso = bad
        .block
        .special
        .iter_mut()
        .find(|s| s.kind == SPECIAL_VDSO)
        .unwrap();
    vdso.end += 4096;
    let line = format!(
        "vDSO layout differs: image has [vdso] {} bytes, this kernel {}",
        size(SPECIAL_VDSO) + 4096,
        size(SPECIAL_VDSO)
    );
    expect_fail(bad.encode(), &std_args(), 3, &line);

    if size(SPECIAL_VVAR_VCLOCK) != 0 {
        // An image from a kernel before the [vvar_vclock] split.
        let mut bad = img.clone();
        bad.block
            .special
            .iter_mut()
            .find(|s| s.kind == SPECIAL_VVAR_VCLOCK)
            .unwrap()
            .kind = 0;
        let line = format!(
            "vDSO layout differs: image has [vvar_vclock] 0 bytes, this kernel {}",
            size(SPECIAL_VVAR_VCLOCK)
        );
        expect_fail(bad.encode(), &std_args(), 3, &line);
    }

    // Same sizes, different spacing: the vDSO code would read the wrong vvar page.
    let mut bad = img.clone();
    let vdso = bad
        .block
        .special
        .iter_mut()
        .find(|s| s.kind == SPECIAL_VDSO)
        .unwrap();
    let base = img
        .block
        .special
        .iter()
        .filter(|s| s.kind != 0)
        .map(|s| s.start)
        .min()
        .unwrap();
    let off = vdso.start - base;
    vdso.start += 0x10000;
    vdso.end += 0x10000;
    let line = format!(
        "vDSO layout differs: [vdso] is at offset {} in the image, {} on this kernel",
        off + 0x10000,
        off
    );
    expect_fail(bad.encode(), &std_args(), 3, &line);

    // A special slot on top of a region.
    let mut bad = img.clone();
    let s = bad
        .block
        .special
        .iter_mut()
        .find(|s| s.kind == SPECIAL_VDSO)
        .unwrap();
    let len = s.end - s.start;
    s.start = CODE;
    s.end = CODE + len;
    let line = format!(
        "image [vdso] at {:#x}-{:#x} overlaps region 0x10000000-0x10001000",
        CODE,
        CODE + len
    );
    expect_fail(bad.encode(), &std_args(), 3, &line);
}

#[test]
fn refuses_changed_or_missing_file() {
    let fx = Fixture::new();
    let (img, _) = good_image(&fx);
    let n = fx.a.len();

    // The descriptor says another size.
    let mut bad = img.clone();
    let r = bad
        .regions
        .iter_mut()
        .find(|r| r.path.as_deref() == Some(&fx.file_a))
        .unwrap();
    r.desc.file_size += 1;
    let line = format!(
        "file {} changed since the checkpoint (size {}, now {})",
        fx.file_a,
        n + 1,
        n
    );
    expect_fail(bad.encode(), &std_args(), 3, &line);

    // Another inode.
    let mut bad = img.clone();
    let r = bad
        .regions
        .iter_mut()
        .find(|r| r.path.as_deref() == Some(&fx.file_a))
        .unwrap();
    let ino = r.desc.file_ino;
    r.desc.file_ino += 1000;
    let line = format!(
        "file {} changed since the checkpoint (inode {}, now {})",
        fx.file_a,
        ino + 1000,
        ino
    );
    expect_fail(bad.encode(), &std_args(), 3, &line);

    // Missing file.
    let mut bad = img.clone();
    let r = bad
        .regions
        .iter_mut()
        .find(|r| r.path.as_deref() == Some(&fx.file_b))
        .unwrap();
    r.path = Some("/nonexistent/ckpt-restorer-test".into());
    expect_fail(
        bad.encode(),
        &std_args(),
        3,
        "cannot open /nonexistent/ckpt-restorer-test read-write: errno 2",
    );

    // The file really changes after the checkpoint: new mtime, then new contents.
    let f = std::fs::File::options()
        .write(true)
        .open(&fx.file_a)
        .unwrap();
    let old = img
        .regions
        .iter()
        .find(|r| r.path.as_deref() == Some(&fx.file_a))
        .unwrap()
        .desc
        .file_mtime_ns;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(1_000_000_000_123);
    f.set_modified(t).unwrap();
    let line = format!(
        "file {} changed since the checkpoint (mtime_ns {}, now 1000000000123)",
        fx.file_a, old
    );
    expect_fail(img.encode(), &std_args(), 3, &line);
    std::fs::write(&fx.file_a, b"shorter").unwrap();
    let line = format!(
        "file {} changed since the checkpoint (size {}, now 7)",
        fx.file_a, n
    );
    expect_fail(img.encode(), &std_args(), 3, &line);
}

#[test]
fn refuses_entry_outside_code() {
    let fx = Fixture::new();
    let (mut img, _) = good_image(&fx);
    img.block.entry = DATA;
    expect_fail(
        img.encode(),
        &std_args(),
        3,
        "restart entry 0x10100000 is not inside an executable region",
    );
}

#[test]
fn fails_after_point_of_no_return() {
    let fx = Fixture::new();
    let (img, _) = good_image(&fx);

    // Stream ends inside a memory run.
    let s = img.encode();
    let cut = img.runs_offset() + 16 + img.runs[0].1.len() + 16 + 100;
    expect_fail(
        s[..cut].to_vec(),
        &std_args(),
        4,
        "truncated image stream (memory run)",
    );

    let mut bad = img.clone();
    bad.trailer_nruns = Some(99);
    expect_fail(
        bad.encode(),
        &std_args(),
        4,
        &format!(
            "trailer counts 99 memory runs, the stream had {}",
            img.runs.len()
        ),
    );

    let mut bad = img.clone();
    bad.trailer_magic = *b"CKPTEND\x02";
    expect_fail(
        bad.encode(),
        &std_args(),
        4,
        "bad trailer magic (corrupt image)",
    );

    // A run into the PROT_NONE reservation, and one past a region's end.
    let mut bad = img.clone();
    let nodata = hot().stack.0;
    bad.runs.push((nodata, vec![1; 4096]));
    bad.runs.sort_by_key(|r| r.0);
    expect_fail(
        bad.encode(),
        &std_args(),
        4,
        &format!(
            "memory run {nodata:#x} + 4096 is not inside a region that takes data (corrupt image)"
        ),
    );
    let mut bad = img.clone();
    bad.runs[0].1 = vec![0x90; 0x1001];
    expect_fail(
        bad.encode(),
        &std_args(),
        4,
        "memory run 0x10000000 + 4097 is not inside a region that takes data (corrupt image)",
    );
}
