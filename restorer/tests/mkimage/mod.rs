//! Synthetic image generator for the restorer tests: builds the *decompressed* image stream
//! exactly as `format/src/raw.rs` lays it out (Preamble, fake header, RestoreBlock, RegionDescs,
//! path pool, runs, end marker, Trailer), a position-independent machine-code blob to restore
//! as the "program", and helpers to spawn `ckpt-restorer` on a pipe.
//!
//! Test-only (std). Never depends on the preload; the stream it writes is the contract.
#![allow(dead_code)]

#[path = "../../../format/src/raw.rs"]
pub mod raw;

use raw::*;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// One region of a synthetic image; `path` goes to the pool for RF_FILE regions.
#[derive(Clone)]
pub struct Region {
    pub desc: RegionDesc,
    pub path: Option<String>,
}

/// A synthetic image, editable field by field before encoding.
#[derive(Clone)]
pub struct Image {
    pub magic: [u8; 8],
    pub version: u32,
    pub header: Vec<u8>,
    pub block: RestoreBlock,
    pub regions: Vec<Region>,
    pub runs: Vec<(u64, Vec<u8>)>,
    pub trailer_magic: [u8; 8],
    /// `None` = the true number of runs.
    pub trailer_nruns: Option<u64>,
}

impl Image {
    pub fn new() -> Image {
        Image {
            magic: IMAGE_MAGIC,
            version: FORMAT_VERSION,
            header: b"\x84fake msgpack header, skipped by the restorer".to_vec(),
            block: RestoreBlock::default(),
            regions: Vec::new(),
            runs: Vec::new(),
            trailer_magic: TRAILER_MAGIC,
            trailer_nruns: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let pre = Preamble {
            magic: self.magic,
            version: self.version,
            header_len: self.header.len() as u32,
        };
        // SAFETY (all as_bytes calls): raw.rs structs are plain integers and arrays.
        out.extend_from_slice(unsafe { as_bytes(&pre) });
        out.extend_from_slice(&self.header);
        let mut pool = Vec::new();
        let mut descs = Vec::new();
        for r in &self.regions {
            let mut d = r.desc;
            if let Some(p) = &r.path {
                d.path_off = pool.len() as u32;
                d.path_len = p.len() as u32;
                pool.extend_from_slice(p.as_bytes());
            }
            descs.push(d);
        }
        let mut block = self.block;
        block.nregions = descs.len() as u64;
        block.pool_len = pool.len() as u64;
        out.extend_from_slice(unsafe { as_bytes(&block) });
        for d in &descs {
            out.extend_from_slice(unsafe { as_bytes(d) });
        }
        out.extend_from_slice(&pool);
        for (addr, data) in &self.runs {
            let h = RunHeader {
                addr: *addr,
                len: data.len() as u64,
            };
            out.extend_from_slice(unsafe { as_bytes(&h) });
            out.extend_from_slice(data);
        }
        let end = RunHeader::default();
        out.extend_from_slice(unsafe { as_bytes(&end) });
        let t = Trailer {
            magic: self.trailer_magic,
            nruns: self.trailer_nruns.unwrap_or(self.runs.len() as u64),
        };
        out.extend_from_slice(unsafe { as_bytes(&t) });
        out
    }

    /// Offset of the first run header in the encoded stream.
    pub fn runs_offset(&self) -> usize {
        let pool: usize = self
            .regions
            .iter()
            .filter_map(|r| r.path.as_ref())
            .map(|p| p.len())
            .sum();
        size_of::<Preamble>()
            + self.header.len()
            + size_of::<RestoreBlock>()
            + self.regions.len() * size_of::<RegionDesc>()
            + pool
    }
}

pub fn anon(start: u64, end: u64, prot: u32, flags: u32) -> Region {
    Region {
        desc: RegionDesc {
            start,
            end,
            prot,
            flags,
            ..Default::default()
        },
        path: None,
    }
}

/// An RF_FILE region describing `path` as it is now (size, mtime, inode).
pub fn file(start: u64, end: u64, prot: u32, flags: u32, path: &str, offset: u64) -> Region {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Region {
        desc: RegionDesc {
            start,
            end,
            prot,
            flags: flags | RF_FILE,
            file_offset: offset,
            file_size: md.size(),
            file_mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            file_ino: md.ino(),
            ..Default::default()
        },
        path: Some(path.to_string()),
    }
}

/// Mapping of the running process: (start, end, perms, offset, name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapLine {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub name: String,
}

pub fn parse_maps(text: &str) -> Vec<MapLine> {
    text.lines()
        .map(|l| {
            let mut f = l.splitn(6, ' ');
            let range = f.next().unwrap();
            let perms = f.next().unwrap().to_string();
            let offset = u64::from_str_radix(f.next().unwrap(), 16).unwrap();
            let _dev = f.next();
            let _ino = f.next();
            let name = f.next().unwrap_or("").trim_start().to_string();
            let (s, e) = range.split_once('-').unwrap();
            MapLine {
                start: u64::from_str_radix(s, 16).unwrap(),
                end: u64::from_str_radix(e, 16).unwrap(),
                perms,
                offset,
                name,
            }
        })
        .collect()
}

/// This process's [vvar], [vvar_vclock], [vdso] as SpecialAreas (kind, start, end).
pub fn own_special() -> Vec<SpecialArea> {
    let maps = parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap());
    maps.iter()
        .filter_map(|m| {
            let kind = match m.name.as_str() {
                "[vvar]" => SPECIAL_VVAR,
                "[vvar_vclock]" => SPECIAL_VVAR_VCLOCK,
                "[vdso]" => SPECIAL_VDSO,
                _ => return None,
            };
            Some(SpecialArea {
                kind,
                start: m.start,
                end: m.end,
            })
        })
        .collect()
}

// ---- the restored "program" ------------------------------------------------------------------
//
// Entered as `entry(rdi = data region address D, rsi = &RestartArgs)`. Position-independent.
// With D laid out by `DataPage`:
//   0. if D[0x7f0] != 0: call it as the vDSO's clock_gettime(CLOCK_MONOTONIC, D+0x7e0) (the
//      only use of the stack the restorer handed over);
//   1. write(1, addr, len) for every (addr, len) in the table at D+0x800 (u64 count first);
//   2. write(1, args, D[0x7f8]) — the raw RestartArgs;
//   3. munmap(args.zone_start, args.zone_len) — what the real entry does;
//   4. for every NUL-terminated path pointer in the table at D+0xa00: read the whole file into
//      D+0x1008 (at most 64 KiB) and write(1, u64 length + bytes);
//   5. exit_group(42).
core::arch::global_asm!(
    ".pushsection .text.ckpt_test_blob,\"ax\",@progbits",
    ".globl ckpt_test_blob_start",
    ".globl ckpt_test_blob_end",
    "ckpt_test_blob_start:",
    "mov r12, rdi",
    "mov r13, rsi",
    "mov rax, qword ptr [r12 + 0x7f0]",
    "test rax, rax",
    "jz 7f",
    "sub rsp, 8",
    "mov edi, 1",
    "lea rsi, [r12 + 0x7e0]",
    "call rax",
    "add rsp, 8",
    "7:",
    "lea r14, [r12 + 0x800]",
    "mov r15, qword ptr [r14]",
    "add r14, 8",
    "2:",
    "test r15, r15",
    "jz 3f",
    "mov eax, 1",
    "mov edi, 1",
    "mov rsi, qword ptr [r14]",
    "mov rdx, qword ptr [r14 + 8]",
    "syscall",
    "add r14, 16",
    "dec r15",
    "jmp 2b",
    "3:",
    "mov eax, 1",
    "mov edi, 1",
    "mov rsi, r13",
    "mov rdx, qword ptr [r12 + 0x7f8]",
    "syscall",
    "mov eax, 11",
    "mov rdi, qword ptr [r13]",
    "mov rsi, qword ptr [r13 + 8]",
    "syscall",
    "lea r14, [r12 + 0xa00]",
    "mov r15, qword ptr [r14]",
    "add r14, 8",
    "4:",
    "test r15, r15",
    "jz 9f",
    "mov eax, 257",
    "mov rdi, -100",
    "mov rsi, qword ptr [r14]",
    "xor edx, edx",
    "xor r10d, r10d",
    "syscall",
    "mov rbx, rax",
    "xor ebp, ebp",
    "5:",
    "xor eax, eax",
    "mov rdi, rbx",
    "lea rsi, [r12 + 0x1008]",
    "add rsi, rbp",
    "mov edx, 0x10000",
    "sub rdx, rbp",
    "syscall",
    "test rax, rax",
    "jle 6f",
    "add rbp, rax",
    "jmp 5b",
    "6:",
    "mov qword ptr [r12 + 0x1000], rbp",
    "mov eax, 3",
    "mov rdi, rbx",
    "syscall",
    "mov eax, 1",
    "mov edi, 1",
    "lea rsi, [r12 + 0x1000]",
    "lea rdx, [rbp + 8]",
    "syscall",
    "add r14, 8",
    "dec r15",
    "jmp 4b",
    "9:",
    "mov eax, 231",
    "mov edi, 42",
    "syscall",
    "ud2",
    "ckpt_test_blob_end:",
    ".popsection",
);

unsafe extern "C" {
    static ckpt_test_blob_start: u8;
    static ckpt_test_blob_end: u8;
}

/// The machine code of the restored program (see the comment above the asm).
pub fn blob() -> Vec<u8> {
    let (s, e) = (
        &raw const ckpt_test_blob_start,
        &raw const ckpt_test_blob_end,
    );
    // SAFETY: both labels delimit the blob inside this binary's mapped, readable text.
    unsafe { std::slice::from_raw_parts(s, e as usize - s as usize) }.to_vec()
}

/// Builder for the first page of the data region the blob reads its instructions from.
pub struct DataPage {
    pub base: u64,
    pub page: Vec<u8>,
    writes: Vec<(u64, u64)>,
    files: Vec<u64>,
    strings_at: usize,
    timespec: bool,
}

/// Offset inside the data region of the blob's file read buffer (u64 length + 64 KiB).
pub const DATA_BUF: u64 = 0x1000;
pub const DATA_LEN: u64 = 0x1000 + 0x11000;

impl DataPage {
    pub fn new(base: u64) -> DataPage {
        let mut page = vec![0u8; 4096];
        page[0x7f8..0x800].copy_from_slice(&(size_of::<RestartArgs>() as u64).to_ne_bytes());
        DataPage {
            base,
            page,
            writes: Vec::new(),
            files: Vec::new(),
            strings_at: 0xc00,
            timespec: false,
        }
    }

    /// Place bytes in the string area; returns their address.
    pub fn put(&mut self, bytes: &[u8]) -> u64 {
        let at = self.strings_at;
        assert!(at + bytes.len() <= 4096, "data page full");
        self.page[at..at + bytes.len()].copy_from_slice(bytes);
        self.strings_at = (at + bytes.len() + 7) & !7;
        self.base + at as u64
    }

    /// Put `msg` at the start of the page and have the blob write it first.
    pub fn message(&mut self, msg: &[u8]) {
        assert!(msg.len() <= 0x7e0);
        self.page[..msg.len()].copy_from_slice(msg);
        self.writes.insert(0, (self.base, msg.len() as u64));
    }

    /// Have the blob write `len` bytes at `addr` (anywhere in the restored process).
    pub fn write(&mut self, addr: u64, len: u64) {
        self.writes.push((addr, len));
    }

    /// Have the blob call `clock_gettime(CLOCK_MONOTONIC)` at `func` first and write the
    /// 16-byte timespec it got after all other [`write`](Self::write)s.
    pub fn clock_gettime(&mut self, func: u64) {
        self.page[0x7f0..0x7f8].copy_from_slice(&func.to_ne_bytes());
        self.timespec = true;
    }

    /// Have the blob dump a file (after unmapping the zone).
    pub fn dump(&mut self, path: &str) {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        let a = self.put(&p);
        self.files.push(a);
    }

    pub fn finish(mut self) -> Vec<u8> {
        if self.timespec {
            self.writes.push((self.base + 0x7e0, 16));
        }
        let mut t = (self.writes.len() as u64).to_ne_bytes().to_vec();
        for (a, l) in &self.writes {
            t.extend_from_slice(&a.to_ne_bytes());
            t.extend_from_slice(&l.to_ne_bytes());
        }
        assert!(t.len() <= 0x200);
        self.page[0x800..0x800 + t.len()].copy_from_slice(&t);
        let mut f = (self.files.len() as u64).to_ne_bytes().to_vec();
        for a in &self.files {
            f.extend_from_slice(&a.to_ne_bytes());
        }
        assert!(f.len() <= 0x200);
        self.page[0xa00..0xa00 + f.len()].copy_from_slice(&f);
        self.page
    }
}

// ---- running the restorer ---------------------------------------------------------------------

pub fn restorer() -> &'static str {
    env!("CARGO_BIN_EXE_ckpt-restorer")
}

/// Descriptor number the child sees the stream on.
pub const CHILD_FD: i32 = 5;

pub fn std_args() -> Vec<String> {
    vec![
        CHILD_FD.to_string(),
        "127.0.0.1".into(),
        "7779".into(),
        "/tmp".into(),
    ]
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut p = [0i32; 2];
    // SAFETY: p is a valid 2-int array.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) }
}

fn command(args: &[String], read_end: &OwnedFd, no_aslr: bool) -> Command {
    use std::os::fd::AsRawFd;
    let rfd = read_end.as_raw_fd();
    let mut cmd = Command::new(restorer());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls (dup2, personality) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself keeps FD_CLOEXEC: clear it by hand in that case.
            let r = if rfd == CHILD_FD {
                libc::fcntl(rfd, libc::F_SETFD, 0)
            } else {
                libc::dup2(rfd, CHILD_FD)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if no_aslr && libc::personality(libc::ADDR_NO_RANDOMIZE as libc::c_ulong) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Run the restorer on `stream` (fed through a pipe in small odd-sized writes, so the restorer
/// sees short reads), with `args`, optionally without address space randomization.
pub fn run(stream: Vec<u8>, args: &[String], no_aslr: bool) -> Outcome {
    let (r, w) = pipe();
    let child = command(args, &r, no_aslr)
        .spawn()
        .expect("spawn ckpt-restorer");
    drop(r);
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::File::from(w);
        for chunk in stream.chunks(4093) {
            if f.write_all(chunk).is_err() {
                break; // the restorer stopped reading (refused the image): fine
            }
        }
    });
    let out = child.wait_with_output().expect("wait ckpt-restorer");
    writer.join().unwrap();
    Outcome {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Layout of a restorer blocked on its first read, started like [`run`] (same argv and
/// environment, no randomization): where its stack and special mappings will be.
pub fn probe_layout(args: &[String]) -> Vec<MapLine> {
    let (r, w) = pipe();
    let child = command(args, &r, true)
        .spawn()
        .expect("spawn ckpt-restorer");
    drop(r);
    let mut text = String::new();
    std::fs::File::open(format!("/proc/{}/maps", child.id()))
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    drop(w); // EOF: the restorer exits 3 (truncated stream)
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_maps(&text)
}

/// Offset of `__vdso_clock_gettime` from the start of this process's `[vdso]` mapping, found
/// through the vDSO's own ELF section headers.
pub fn vdso_clock_gettime_offset() -> u64 {
    // SAFETY: AT_SYSINFO_EHDR is the address of the mapped vDSO ELF image; every read below
    // stays inside that image (offsets come from its own headers).
    unsafe {
        let base = libc::getauxval(libc::AT_SYSINFO_EHDR) as *const u8;
        assert!(!base.is_null(), "no vDSO");
        let rd = |off: usize, n: usize| -> u64 {
            let mut v = [0u8; 8];
            std::ptr::copy_nonoverlapping(base.add(off), v.as_mut_ptr(), n);
            u64::from_le_bytes(v)
        };
        let (phoff, shoff) = (rd(0x20, 8) as usize, rd(0x28, 8) as usize);
        let (phnum, shnum) = (rd(0x38, 2) as usize, rd(0x3c, 2) as usize);
        // Link address of the first PT_LOAD (mapped at `base`).
        let vaddr0 = (0..phnum)
            .map(|i| phoff + i * 56)
            .find(|&ph| rd(ph, 4) == 1)
            .map(|ph| rd(ph + 16, 8))
            .expect("vDSO has a PT_LOAD");
        let sh = |i: usize| shoff + i * 64;
        let dynsym = (0..shnum)
            .find(|&i| rd(sh(i) + 4, 4) == 11)
            .expect("vDSO has .dynsym");
        let strtab = rd(sh(dynsym) + 40, 4) as usize;
        let (sym_off, sym_size) = (
            rd(sh(dynsym) + 24, 8) as usize,
            rd(sh(dynsym) + 32, 8) as usize,
        );
        let str_off = rd(sh(strtab) + 24, 8) as usize;
        for i in 0..sym_size / 24 {
            let sym = sym_off + i * 24;
            let name = std::ffi::CStr::from_ptr(
                base.add(str_off + rd(sym, 4) as usize) as *const libc::c_char
            );
            if name.to_bytes() == b"__vdso_clock_gettime" {
                return rd(sym + 8, 8) - vaddr0;
            }
        }
        panic!("__vdso_clock_gettime not found in the vDSO");
    }
}
