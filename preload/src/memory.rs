//! Memory: reads `/proc/self/maps`, decides for every mapping how it comes back at restart
//! (a [`RegionDesc`]) and which of its pages go into the image, and streams those pages.
//!
//! Rules (docs/image-format.md): private anonymous memory, heap and stacks → the pages the kernel
//! says exist (`/proc/self/pagemap` present or swapped) minus all-zero pages; private file
//! mappings → mapped from the file at restart, only their copied-on-write pages are saved;
//! shared file mappings → the file is the truth (`msync` first), no pages; deleted or replaced
//! files and shared anonymous memory → every non-zero page, restored as private memory;
//! `PROT_NONE` → nothing; `[vsyscall]` never; `[vvar]`/`[vvar_vclock]`/`[vdso]` → recorded, not saved.
//!
//! Runs on the checkpoint thread with user threads frozen; allocations come from the scratch
//! arena; no glibc malloc.

use ckpt_format::image::FileDep;
use ckpt_format::raw::{self, RegionDesc, RunHeader, SpecialArea};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};

/// One line of /proc/self/maps.
#[derive(Debug, Clone, PartialEq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
    pub shared: bool,
    pub offset: u64,
    pub inode: u64,
    pub path: String,
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

/// Parses the text of /proc/PID/maps.
pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(off), Some(_dev), Some(ino)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        let path = it.next().unwrap_or("").trim_start().to_string();
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Some(start), Some(end), Some(offset)) = (hex(a), hex(b), hex(off)) else {
            continue;
        };
        let p = perms.as_bytes();
        if p.len() < 4 {
            continue;
        }
        let mut prot = 0;
        if p[0] == b'r' {
            prot |= libc::PROT_READ as u32;
        }
        if p[1] == b'w' {
            prot |= libc::PROT_WRITE as u32;
        }
        if p[2] == b'x' {
            prot |= libc::PROT_EXEC as u32;
        }
        out.push(MapEntry {
            start,
            end,
            prot,
            shared: p[3] == b's',
            offset,
            inode: ino.parse().unwrap_or(0),
            path,
        });
    }
    out
}

pub fn read_maps() -> io::Result<Vec<MapEntry>> {
    let text = std::fs::read("/proc/self/maps")?;
    Ok(parse_maps(&String::from_utf8_lossy(&text)))
}

/// Which pages of a region go into the image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pages {
    /// None (file is the truth, PROT_NONE, scratch arena).
    None,
    /// Present or swapped, non-zero pages (private anonymous memory).
    Anon,
    /// Copied-on-write pages of a private file mapping.
    Cow,
    /// Every non-zero page (deleted files, shared anonymous memory).
    All,
}

/// The plan for one mapping.
pub struct Planned {
    pub desc: RegionDesc,
    pub pages: Pages,
    pub path: String,
}

/// The whole memory plan of the process.
pub struct Plan {
    pub regions: Vec<Planned>,
    pub special: [SpecialArea; raw::MAX_SPECIAL],
    pub special_names: Vec<(String, u64)>,
    pub files: Vec<FileDep>,
    pub warnings: Vec<String>,
}

/// Decides how every mapping is saved. `skip_data` ranges (the scratch arena, the compressor
/// buffers: memory of the writer itself) are recreated empty.
pub fn plan(maps: &[MapEntry], skip_data: &[(u64, u64)]) -> Plan {
    let mut regions = Vec::with_capacity(maps.len());
    let mut special = [SpecialArea::default(); raw::MAX_SPECIAL];
    let mut special_names = Vec::new();
    let mut files: Vec<FileDep> = Vec::new();
    let mut warnings = Vec::new();
    let mut nspecial = 0;
    // The kernel may merge a skipped range with a neighbouring anonymous mapping (names are
    // only kept with CONFIG_ANON_VMA_NAME): cut every mapping at the skipped ranges' bounds.
    let mut pieces: Vec<MapEntry> = Vec::with_capacity(maps.len() + 2 * skip_data.len());
    for m in maps {
        let mut cuts = vec![m.start, m.end];
        for &(a, b) in skip_data {
            cuts.push(a.clamp(m.start, m.end));
            cuts.push(b.clamp(m.start, m.end));
        }
        cuts.sort_unstable();
        cuts.dedup();
        for w in cuts.windows(2) {
            let mut p = m.clone();
            p.offset += w[0] - m.start;
            p.start = w[0];
            p.end = w[1];
            pieces.push(p);
        }
    }
    for m in &pieces {
        let kind = match m.path.as_str() {
            "[vsyscall]" => continue,
            "[vvar]" => raw::SPECIAL_VVAR,
            "[vvar_vclock]" => raw::SPECIAL_VVAR_VCLOCK,
            "[vdso]" => raw::SPECIAL_VDSO,
            _ => 0,
        };
        if kind != 0 {
            if nspecial < raw::MAX_SPECIAL {
                special[nspecial] = SpecialArea {
                    kind,
                    start: m.start,
                    end: m.end,
                };
                nspecial += 1;
            }
            special_names.push((m.path.clone(), m.end - m.start));
            continue;
        }
        let mut d = RegionDesc {
            start: m.start,
            end: m.end,
            prot: m.prot,
            ..Default::default()
        };
        let mut path = String::new();
        let mut pages;
        let is_file = m.path.starts_with('/') && m.inode != 0;
        let deleted = m.path.ends_with(" (deleted)");
        if skip_data.iter().any(|&(a, b)| m.start >= a && m.end <= b) {
            pages = Pages::None;
        } else if m.shared && ckpt_plugins::shm::handles(&m.path) {
            // Shared memory: saved like private memory; the shm plugin makes it shared again
            // with the other processes at restart.
            d.flags |= raw::RF_SHARED;
            pages = Pages::All;
        } else if is_file && !deleted {
            match std::fs::metadata(&m.path) {
                Ok(md) if md.ino() == m.inode => {
                    d.flags |= raw::RF_FILE;
                    d.file_offset = m.offset;
                    d.file_size = md.size();
                    d.file_ino = md.ino();
                    d.file_mtime_ns = md.mtime() * 1_000_000_000 + md.mtime_nsec();
                    path = m.path.clone();
                    if !files.iter().any(|f| f.path == m.path) {
                        files.push(FileDep {
                            path: m.path.clone(),
                            size: d.file_size,
                            mtime_ns: d.file_mtime_ns,
                            ino: d.file_ino,
                        });
                    }
                    if m.shared {
                        d.flags |= raw::RF_SHARED;
                        // The file is the truth: push dirty pages to it now.
                        // SAFETY: msync on a mapping that exists (from maps).
                        unsafe {
                            libc::msync(
                                m.start as *mut libc::c_void,
                                (m.end - m.start) as usize,
                                libc::MS_SYNC,
                            )
                        };
                        pages = Pages::None;
                    } else {
                        pages = Pages::Cow;
                    }
                }
                _ => {
                    // Replaced on disk since it was mapped: keep the contents we have.
                    pages = Pages::All;
                }
            }
        } else if m.shared {
            d.flags |= raw::RF_SHARED;
            warnings.push(format!(
                "shared mapping {:#x}-{:#x} {} is restored with its contents, but not shared with other processes yet",
                m.start, m.end, m.path
            ));
            pages = Pages::All;
        } else if deleted {
            pages = Pages::All;
        } else {
            pages = Pages::Anon;
        }
        if m.path == "[heap]" {
            d.flags |= raw::RF_HEAP;
        }
        if m.path == "[stack]" {
            d.flags |= raw::RF_GROWSDOWN;
        }
        if m.prot == 0 {
            d.flags |= raw::RF_NO_DATA;
            pages = Pages::None;
        }
        regions.push(Planned {
            desc: d,
            pages,
            path,
        });
    }
    Plan {
        regions,
        special,
        special_names,
        files,
        warnings,
    }
}

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;

fn page_is_zero(p: &[u8]) -> bool {
    // SAFETY: page-aligned 4096-byte slice viewed as u64s.
    let (pre, words, post) = unsafe { p.align_to::<u64>() };
    pre.iter().all(|&b| b == 0) && post.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0)
}

/// Streams runs of saved pages for every region; returns (runs, bytes of memory written).
pub fn write_runs<W: Write>(plan: &Plan, out: &mut W) -> io::Result<(u64, u64)> {
    let pagemap = std::fs::File::open("/proc/self/pagemap")?;
    const BATCH: usize = 4096; // pages per pagemap read
    let mut pm = vec![0u64; BATCH];
    let mut bounce = vec![0u8; raw::PAGE as usize];
    let mut nruns = 0u64;
    let mut bytes = 0u64;
    for r in &plan.regions {
        if r.pages == Pages::None {
            continue;
        }
        let d = &r.desc;
        let readable = d.prot & libc::PROT_READ as u32 != 0;
        if !readable {
            // SAFETY: temporarily allow reading a mapping that exists; restored below.
            unsafe {
                libc::mprotect(
                    d.start as *mut libc::c_void,
                    (d.end - d.start) as usize,
                    (d.prot | 1) as i32,
                )
            };
        }
        let npages = ((d.end - d.start) / raw::PAGE) as usize;
        // The current run: (first page address, number of pages); pages of a run are contiguous.
        let mut run: Option<(u64, u64)> = None;
        let mut flush = |run: &mut Option<(u64, u64)>, out: &mut W| -> io::Result<()> {
            if let Some((s, n)) = run.take() {
                let len = n * raw::PAGE;
                let h = RunHeader { addr: s, len };
                // SAFETY: RunHeader is repr(C) plain data.
                out.write_all(unsafe { raw::as_bytes(&h) })?;
                // SAFETY: every page of the run was checked readable just before.
                out.write_all(unsafe { std::slice::from_raw_parts(s as *const u8, len as usize) })?;
                nruns += 1;
                bytes += len;
            }
            Ok(())
        };
        let mut i = 0;
        while i < npages {
            let n = BATCH.min(npages - i);
            let first = d.start / raw::PAGE + i as u64;
            // SAFETY: pm is valid for n u64s.
            let buf = unsafe { std::slice::from_raw_parts_mut(pm.as_mut_ptr() as *mut u8, n * 8) };
            let got = pagemap.read_at(buf, first * 8).unwrap_or(0);
            if got < n * 8 {
                // Cannot read pagemap (should not happen): treat everything as present.
                for e in pm[got / 8..n].iter_mut() {
                    *e = PM_PRESENT;
                }
            }
            for (k, &e) in pm[..n].iter().enumerate() {
                let addr = d.start + (i + k) as u64 * raw::PAGE;
                let want = match r.pages {
                    Pages::Anon => e & (PM_PRESENT | PM_SWAPPED) != 0,
                    Pages::Cow => (e & PM_PRESENT != 0 && e & PM_FILE == 0) || e & PM_SWAPPED != 0,
                    Pages::All => true,
                    Pages::None => false,
                };
                let save = want && {
                    if r.pages == Pages::All {
                        // The page may not be readable (file truncated under a mapping):
                        // probe it with process_vm_readv, which fails instead of SIGBUS.
                        let local = libc::iovec {
                            iov_base: bounce.as_mut_ptr() as *mut libc::c_void,
                            iov_len: bounce.len(),
                        };
                        let remote = libc::iovec {
                            iov_base: addr as *mut libc::c_void,
                            iov_len: raw::PAGE as usize,
                        };
                        // SAFETY: reading our own memory into our own buffer.
                        let n = unsafe {
                            libc::process_vm_readv(crate::sys::getpid(), &local, 1, &remote, 1, 0)
                        };
                        n == raw::PAGE as isize && !page_is_zero(&bounce)
                    } else {
                        // SAFETY: present/swapped anonymous pages are readable.
                        let sl = unsafe {
                            std::slice::from_raw_parts(addr as *const u8, raw::PAGE as usize)
                        };
                        !page_is_zero(sl)
                    }
                };
                if save {
                    match run.as_mut() {
                        Some((_, n)) => *n += 1,
                        None => run = Some((addr, 1)),
                    }
                } else {
                    flush(&mut run, out)?;
                }
            }
            i += n;
        }
        flush(&mut run, out)?;
        if !readable {
            // SAFETY: restoring the original protection.
            unsafe {
                libc::mprotect(
                    d.start as *mut libc::c_void,
                    (d.end - d.start) as usize,
                    d.prot as i32,
                )
            };
        }
    }
    Ok((nruns, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let t = "55d0c0a00000-55d0c0a02000 r--p 00000000 fe:01 1234   /usr/bin/cat\n\
                 7ffd1000-7ffd3000 rw-p 00000000 00:00 0                          [stack]\n\
                 7f00-8f00 rw-s 00001000 00:01 99 /dev/shm/my file (deleted)\n\
                 ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]\n\
                 1000-2000 ---p 00000000 00:00 0\n";
        let m = parse_maps(t);
        assert_eq!(m.len(), 5);
        assert_eq!(m[0].path, "/usr/bin/cat");
        assert_eq!(m[0].inode, 1234);
        assert_eq!(m[1].prot, 3);
        assert!(m[2].shared);
        assert_eq!(m[2].offset, 0x1000);
        assert_eq!(m[2].path, "/dev/shm/my file (deleted)");
        assert_eq!(m[4].prot, 0);
        assert_eq!(m[4].path, "");
    }

    #[test]
    fn plan_classifies() {
        let maps = parse_maps(
            "1000-2000 rw-p 00000000 00:00 0  [heap]\n\
             3000-4000 ---p 00000000 00:00 0\n\
             5000-6000 r--p 00000000 00:00 0  [vvar]\n\
             7000-8000 rw-s 00000000 00:01 5 /dev/zero (deleted)\n\
             9000-a000 rw-p 00000000 00:00 0\n",
        );
        let p = plan(&maps, &[(0x9000, 0xa000)]);
        assert_eq!(p.regions.len(), 4);
        // A mapping the scratch range cuts in three.
        let merged = parse_maps("10000-20000 rw-p 00000000 00:00 0\n");
        let q = plan(&merged, &[(0x12000, 0x14000)]);
        let r: Vec<_> = q
            .regions
            .iter()
            .map(|r| (r.desc.start, r.desc.end, r.pages))
            .collect();
        assert_eq!(
            r,
            vec![
                (0x10000, 0x12000, Pages::Anon),
                (0x12000, 0x14000, Pages::None),
                (0x14000, 0x20000, Pages::Anon)
            ]
        );
        assert_eq!(p.regions[0].pages, Pages::Anon);
        assert!(p.regions[0].desc.flags & raw::RF_HEAP != 0);
        assert_eq!(p.regions[1].pages, Pages::None);
        assert!(p.regions[1].desc.flags & raw::RF_NO_DATA != 0);
        assert_eq!(p.special[0].kind, raw::SPECIAL_VVAR);
        assert_eq!(p.regions[2].pages, Pages::All);
        // Shared anonymous memory is the shm plugin's: saved, no warning.
        assert!(p.warnings.is_empty());
        assert_eq!(p.regions[3].pages, Pages::None);
    }
}
