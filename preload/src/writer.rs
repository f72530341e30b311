//! The image writer: header, restore block, region table and page runs, streamed through gzip
//! members into `<name>.img.tmp`, fsynced. Renaming into place is the caller's job, after every
//! process of the computation has written its image.
//!
//! Called through `sys::ckpt_point` on the checkpoint thread while user threads are frozen and
//! the allocator is in scratch mode: it must not free heap memory allocated before, call glibc's
//! malloc, or leave anything behind that the restarted process would need.

use crate::cell::Owned;
use crate::{alloc, memory, restart};
use ckpt_format::image::{self, ImageHeader, MemberWriter};
use ckpt_format::raw::{self, RegionDesc, RestoreBlock};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// What to write; set by the checkpoint thread before `ckpt_point`.
pub struct Job {
    pub tmp: PathBuf,
    pub header: ImageHeader,
    pub level: u32,
}

/// Outcome of the last write: compressed bytes, warnings.
pub struct Outcome {
    pub bytes: u64,
    pub warnings: Vec<String>,
}

pub static JOB: Owned<Option<Job>> = Owned::new(None);
/// Written inside scratch memory: read it with [`take_result`] before the scratch is released.
pub static RESULT: Owned<Option<Result<Outcome, String>>> = Owned::new(None);

/// `extern "C"` shim for `ckpt_point`.
pub extern "C" fn write_job() {
    // SAFETY: JOB/RESULT are only touched by the checkpoint thread.
    unsafe {
        let job = JOB.get().as_ref().expect("job set before ckpt_point");
        let r = write(job);
        *RESULT.get() = Some(r);
    }
}

/// Where the decompressed stream goes: the compressor threads, or one member at a time here.
enum Sink {
    Parallel(crate::compress::ParallelWriter<std::fs::File>),
    Single(MemberWriter<std::fs::File>),
}

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Parallel(p) => p.write(b),
            Sink::Single(m) => m.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn stat_fields() -> io::Result<Vec<u64>> {
    let s = std::fs::read_to_string("/proc/self/stat")?;
    let after = s.rfind(')').map(|i| &s[i + 2..]).unwrap_or("");
    // fields[0] is field 3 of proc(5).
    Ok(after
        .split_whitespace()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .collect())
}

fn mm_fields() -> io::Result<raw::MmFields> {
    let f = stat_fields()?;
    let at = |n: usize| f.get(n - 3).copied().unwrap_or(0);
    // SAFETY: brk(0) only queries the current break.
    let brk = unsafe { libc::syscall(libc::SYS_brk, 0) } as u64;
    Ok(raw::MmFields {
        start_code: at(26),
        end_code: at(27),
        start_stack: at(28),
        start_data: at(45),
        end_data: at(46),
        start_brk: at(47),
        brk,
        arg_start: at(48),
        arg_end: at(49),
        env_start: at(50),
        env_end: at(51),
    })
}

fn write(job: &Job) -> Result<Outcome, String> {
    let ctx = |what: &str, e: io::Error| format!("{what} {}: {e}", job.tmp.display());
    let maps = memory::read_maps().map_err(|e| format!("reading /proc/self/maps: {e}"))?;
    let mut skip = vec![alloc::scratch_range()];
    skip.extend(crate::compress::buffer_ranges());
    let plan = memory::plan(&maps, &skip);

    let mut header = job.header.clone();
    header.files = plan.files.clone();
    header.special = plan.special_names.clone();
    header.nregions = plan.regions.len() as u64;

    let mut block = RestoreBlock {
        entry: restart::ckpt_restart_entry as *const () as u64,
        nregions: plan.regions.len() as u64,
        special: plan.special,
        mm: mm_fields().map_err(|e| format!("reading /proc/self/stat: {e}"))?,
        ..Default::default()
    };
    let auxv =
        std::fs::read("/proc/self/auxv").map_err(|e| format!("reading /proc/self/auxv: {e}"))?;
    let words = (auxv.len() / 8).min(raw::MAX_AUXV_WORDS);
    for i in 0..words {
        block.auxv[i] = u64::from_ne_bytes(auxv[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    }
    block.auxv_words = words as u64;

    let mut pool = Vec::new();
    let mut descs: Vec<RegionDesc> = Vec::with_capacity(plan.regions.len());
    for r in &plan.regions {
        let mut d = r.desc;
        if !r.path.is_empty() {
            d.path_off = pool.len() as u32;
            d.path_len = r.path.len() as u32;
            pool.extend_from_slice(r.path.as_bytes());
        }
        descs.push(d);
    }
    block.pool_len = pool.len() as u64;

    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&job.tmp)
        .map_err(|e| ctx("cannot create", e))?;
    let mut w = match crate::compress::ParallelWriter::new(
        file.try_clone().map_err(|e| ctx("cannot write", e))?,
    ) {
        Some(p) => Sink::Parallel(p),
        None => Sink::Single(MemberWriter::new(file, job.level)),
    };
    let werr = |e: io::Error| ctx("cannot write", e);
    w.write_all(&image::encode_header(&header)).map_err(werr)?;
    // SAFETY: RestoreBlock and RegionDesc are repr(C) plain data.
    w.write_all(unsafe { raw::as_bytes(&block) })
        .map_err(werr)?;
    for d in &descs {
        // SAFETY: as above.
        w.write_all(unsafe { raw::as_bytes(d) }).map_err(werr)?;
    }
    w.write_all(&pool).map_err(werr)?;
    let (nruns, _bytes) = memory::write_runs(&plan, &mut w).map_err(werr)?;
    let end = raw::RunHeader { addr: 0, len: 0 };
    let trailer = raw::Trailer {
        magic: raw::TRAILER_MAGIC,
        nruns,
    };
    // SAFETY: plain data structs.
    w.write_all(unsafe { raw::as_bytes(&end) }).map_err(werr)?;
    // SAFETY: plain data struct.
    w.write_all(unsafe { raw::as_bytes(&trailer) })
        .map_err(werr)?;
    let file = match w {
        Sink::Parallel(p) => p.finish(),
        Sink::Single(m) => m.finish(),
    }
    .map_err(werr)?;
    file.sync_all().map_err(|e| ctx("cannot fsync", e))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(Outcome {
        bytes,
        warnings: plan.warnings,
    })
}

/// Moves the last outcome out of scratch memory onto the heap (call after `scratch_off`,
/// before `scratch_release`). Also drops the job.
pub fn take_result() -> Result<Outcome, String> {
    // SAFETY: JOB/RESULT are only used by the checkpoint thread.
    let r = unsafe {
        *JOB.get() = None;
        RESULT.get().take()
    };
    match r {
        Some(Ok(o)) => Ok(Outcome {
            bytes: o.bytes,
            warnings: o.warnings.iter().map(|w| w.as_str().to_owned()).collect(),
        }),
        Some(Err(e)) => Err(e.as_str().to_owned()),
        None => Err("image writer did not run".to_string()),
    }
}
