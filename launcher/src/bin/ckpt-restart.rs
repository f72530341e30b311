//! `ckpt-restart [--coord-host H] [--coord-port P] [--ckpt-dir D] IMAGE...`
//!
//! Owns the restart of one checkpoint generation: checks every image before touching anything
//! (format, architecture, kernel and glibc, the files it maps, the kernel's vDSO layout), plans
//! the process tree (`tree.rs`: every image of the generation present, same computation),
//! creates the shared kernel objects once (`objects.rs`), makes sure a coordinator runs and
//! adopts the computation, then forks C, which rebuilds the tree with the old pids
//! (`pidns.rs`), and streams each decompressed image into its restorer through a pipe, one
//! feeder thread per image. The root (the process `ckpt-launch` started) runs in the
//! foreground of this process; its exit status becomes ours. A corrupt member found while
//! streaming kills the whole half-restored tree and is reported as one line.

use anyhow::{Context, Result, anyhow, bail};
use ckpt_format::image::{self, ImageError, ImageHeader};
use ckpt_format::wire::Msg;
use ckpt_launcher::objects::{self, Made};
use ckpt_launcher::pidns::{Ctl, IdMaps, NodeRt, TreeSpec, abort_tree};
use ckpt_launcher::tree::{Plan, Source};
use clap::Parser;
use flate2::read::MultiGzDecoder;
use std::ffi::CString;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicI32};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "ckpt-restart",
    version,
    about = "Restart a computation from its checkpoint images"
)]
struct Args {
    /// Coordinator host (env CKPT_COORD_HOST; default 127.0.0.1).
    #[arg(long)]
    coord_host: Option<String>,
    /// Coordinator port (env CKPT_COORD_PORT; default 7779).
    #[arg(long)]
    coord_port: Option<u16>,
    /// Directory for the next checkpoints (env CKPT_DIR; default: the image's directory).
    #[arg(long, env = "CKPT_DIR")]
    ckpt_dir: Option<PathBuf>,
    /// Restart even if the image was made under another kernel release.
    #[arg(long)]
    ignore_kernel_mismatch: bool,
    /// These images are part of the checkpoint: the other processes are restarted by other
    /// `ckpt-restart --part` commands (one per host) using the same coordinator. Connections
    /// between the parts are rebuilt through the coordinator's name service.
    #[arg(long)]
    part: bool,
    /// Checkpoint images (ckpt_*.img).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// Time namespace offsets that make `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` of the restored
/// processes go on from their values at checkpoint time (the time the computation was down,
/// and a reboot or another host in between, do not show); None if the images do not say or
/// `CKPT_HOST_CLOCKS` is set (then the clocks are the host's: the downtime shows).
fn clock_offsets(headers: &[ImageHeader]) -> Option<[i64; 2]> {
    let mono = headers.iter().map(|h| h.monotonic_ns).max().unwrap_or(0);
    let boot = headers.iter().map(|h| h.boottime_ns).max().unwrap_or(0);
    if mono <= 0 || boot <= 0 || std::env::var_os("CKPT_HOST_CLOCKS").is_some() {
        return None;
    }
    let off = [
        mono - ckpt_format::image::clock_ns(libc::CLOCK_MONOTONIC),
        boot - ckpt_format::image::clock_ns(libc::CLOCK_BOOTTIME),
    ];
    if std::env::var_os("CKPT_DEBUG").is_some() {
        eprintln!(
            "ckpt-restart: clock offsets: monotonic {} ms, boottime {} ms",
            off[0] / 1_000_000,
            off[1] / 1_000_000
        );
    }
    Some(off)
}

fn main() {
    let args = Args::parse();
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("ckpt-restart: {e:#}");
            std::process::exit(1);
        }
    }
}

fn open_stream(path: &Path) -> Result<MultiGzDecoder<BufReader<File>>> {
    let f = File::open(path).with_context(|| format!("{}", path.display()))?;
    Ok(MultiGzDecoder::new(BufReader::with_capacity(1 << 20, f)))
}

fn describe(e: ImageError) -> String {
    match e {
        ImageError::Corrupt(m) if m.contains("header") && m.contains("gzip") => {
            "not a ckpt image (not gzip data)".into()
        }
        ImageError::Corrupt(m) => format!("image is corrupt ({m})"),
        ImageError::Io(io) if io.kind() == std::io::ErrorKind::InvalidInput => {
            "not a ckpt image (not gzip data)".into()
        }
        other => other.to_string(),
    }
}

fn read_header(path: &Path) -> Result<ImageHeader> {
    let mut magic = [0u8; 2];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut magic))
        .with_context(|| format!("{}", path.display()))?;
    if n < 2 || magic != [0x1f, 0x8b] {
        bail!("{}: not a ckpt image (not gzip data)", path.display());
    }
    let mut s = open_stream(path)?;
    image::read_header(&mut s).map_err(|e| anyhow!("{}: {}", path.display(), describe(e)))
}

/// Member boundaries of an image written by ckpt (the `CK` extra field of every member), or
/// `None` for a gzip stream without them (then it is decoded sequentially). A member that runs
/// past the end of the file means the image is truncated.
fn member_table(path: &Path) -> Result<Option<Vec<(u64, usize)>>> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut off = 0u64;
    let mut out = Vec::new();
    let mut head = [0u8; 24];
    while off < len {
        f.seek(SeekFrom::Start(off))?;
        let got = f.read(&mut head)?;
        let Some((total, _ulen)) = image::member_sizes(&head[..got]) else {
            if off == 0 {
                return Ok(None);
            }
            bail!(
                "{}: image is corrupt (no gzip member at byte {off})",
                path.display()
            );
        };
        if off + total as u64 > len {
            bail!(
                "{}: image is truncated (member at byte {off} needs {total} bytes, the file ends at {len})",
                path.display()
            );
        }
        out.push((off, total));
        off += total as u64;
    }
    Ok(Some(out))
}

/// Inflates one complete member and checks its CRC.
fn inflate_member(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(ckpt_format::image::MEMBER_CHUNK);
    flate2::read::GzDecoder::new(raw).read_to_end(&mut out)?;
    Ok(out)
}

/// Checks that the last member ends with the image trailer (a cut exactly at a member
/// boundary would otherwise go unnoticed until the restorer runs).
fn check_trailer(path: &Path, members: &[(u64, usize)]) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    let Some(&(off, total)) = members.last() else {
        bail!("{}: image is empty", path.display())
    };
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(off))?;
    let mut raw = vec![0u8; total];
    f.read_exact(&mut raw)?;
    let data = inflate_member(&raw)
        .map_err(|e| anyhow!("{}: {}", path.display(), describe(image::classify_io(e))))?;
    let t = std::mem::size_of::<ckpt_format::raw::Trailer>();
    if data.len() < t || data[data.len() - t..data.len() - t + 8] != ckpt_format::raw::TRAILER_MAGIC
    {
        bail!("{}: image is truncated (no end marker)", path.display());
    }
    Ok(())
}

/// (name, size) of this process's [vvar]/[vvar_vclock]/[vdso]: the restorer gets the same.
fn own_special() -> Vec<(String, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|l| {
            let name = l.split_whitespace().nth(5)?;
            if !matches!(name, "[vvar]" | "[vvar_vclock]" | "[vdso]") {
                return None;
            }
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            let size = u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?;
            Some((name.to_string(), size))
        })
        .collect()
}

/// Everything that can be checked before the address space is replaced.
fn validate(path: &Path, h: &ImageHeader, ignore_kernel: bool) -> Result<()> {
    let p = path.display();
    if h.arch != image::current_arch() {
        bail!(
            "{p}: image is for {} but this machine is {}",
            h.arch,
            image::current_arch()
        );
    }
    let rel = image::host::kernel_release();
    if h.kernel_release != rel && !ignore_kernel {
        bail!(
            "{p}: image was made under kernel {} but this is {rel} (use --ignore-kernel-mismatch to try anyway)",
            h.kernel_release
        );
    }
    let g = image::host::glibc_version();
    if h.glibc_version != g {
        bail!(
            "{p}: image was made with glibc {} but this machine has {g}",
            h.glibc_version
        );
    }
    let special = own_special();
    if h.special != special {
        bail!(
            "{p}: the kernel's vDSO layout differs (image {:?}, here {:?})",
            h.special,
            special
        );
    }
    for f in &h.files {
        let md = std::fs::metadata(&f.path)
            .map_err(|e| anyhow!("{p}: file {} needed by the image: {e}", f.path))?;
        let mtime = md.mtime() * 1_000_000_000 + md.mtime_nsec();
        if md.size() != f.size || md.ino() != f.ino || mtime != f.mtime_ns {
            bail!(
                "{p}: file {} changed since the checkpoint (size, inode or mtime differ)",
                f.path
            );
        }
    }
    for fd in &h.fds {
        if matches!(fd.kind, image::FdKind::Regular | image::FdKind::Directory) && !fd.deleted {
            std::fs::metadata(&fd.path).map_err(|e| {
                anyhow!(
                    "{p}: file {} (fd {}) needed by the image: {e}",
                    fd.path,
                    fd.fd
                )
            })?;
        }
    }
    Ok(())
}

fn run(args: Args) -> Result<i32> {
    let mut headers = Vec::new();
    let mut tables = Vec::new();
    for img in &args.images {
        let h = read_header(img)?;
        let table = member_table(img)?;
        if let Some(t) = &table {
            check_trailer(img, t)?;
        }
        validate(img, &h, args.ignore_kernel_mismatch)?;
        headers.push(h);
        tables.push(table);
    }
    let names: Vec<String> = args
        .images
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let pairs: Vec<(&str, &ImageHeader)> = names.iter().map(String::as_str).zip(&headers).collect();
    let plan = Plan::build_part(&pairs, args.part).map_err(|e| anyhow!(e))?;

    // Our own fds: every object the tree needs lives above every number an image needs.
    let soft = objects::raise_nofile();
    let high = plan.high_fd;
    let room = 16 + 3 * plan.objects.len() as u64 + 2 * plan.nodes.len() as u64;
    if high as u64 + room > soft {
        bail!(
            "the images need fd numbers up to {} but RLIMIT_NOFILE allows {soft}",
            high - 1
        );
    }
    truncate_appended(&headers)?;
    let mut made = Made::new(high);
    // Before anything of ours is opened: fd n is still what we were started with.
    made.take_inherited(&plan)?;
    let owner = |key: u64| {
        headers
            .iter()
            .position(|h| h.objects.iter().any(|o| o.key == key))
            .map_or_else(String::new, |i| names[i].clone())
    };
    let bin = ckpt_launcher::bin_dir()?;
    let restorer = bin.join("ckpt-restorer");
    if !restorer.exists() {
        bail!(
            "{} not found; build with cargo build --release",
            restorer.display()
        );
    }
    let (host, port) = ckpt_launcher::coord_addr(args.coord_host.clone(), args.coord_port);
    let ip = resolve(&host)?;
    let join = |conn: &mut ckpt_launcher::CommandConn, part_of: Option<u32>| -> Result<()> {
        let adopt = Msg::CmdRestart {
            comp_id: plan.computation_id,
            num_peers: args.images.len() as u32,
            generation: plan.generation,
            part_of,
        };
        match conn.request(&adopt, Duration::from_secs(10))? {
            Msg::Ok => Ok(()),
            Msg::Error { message } => bail!("coordinator at {host}:{port}: {message}"),
            other => bail!("coordinator at {host}:{port}: unexpected answer {other:?}"),
        }
    };
    // A part joins the restart before it makes its objects: its connections to the other
    // parts go through the coordinator's name service. A whole restart joins after (a bad
    // image or a taken port must not leave the coordinator waiting for it).
    let mut conn = None;
    if args.part {
        ckpt_launcher::ensure_coordinator(&bin, &host, port, &[])?;
        let mut c = ckpt_launcher::CommandConn::open(&host, port)?;
        let mut own: Vec<u64> = headers.iter().map(|h| h.vpid).collect();
        own.sort_unstable();
        let mut others: Vec<(u64, String)> = Vec::new();
        for h in &headers {
            for p in &h.peers {
                if !own.contains(&p.vpid) && !others.iter().any(|(v, _)| *v == p.vpid) {
                    others.push((p.vpid, p.program.clone()));
                }
            }
        }
        others.sort();
        let total = (own.len() + others.len()) as u32;
        join(&mut c, Some(total))?;
        let mut names = ckpt_launcher::parts::Names::new(
            &mut c,
            plan.computation_id,
            plan.generation,
            own,
            others,
        );
        made.create_objects(&plan, &owner, Some(&mut names))?;
        conn = Some(c);
    } else {
        made.create_objects(&plan, &owner, None)?;
    }
    made.create_shm(&plan)?;
    for w in plan.warnings.iter().chain(&made.warnings) {
        eprintln!("ckpt-restart: warning: {w}");
    }
    let conn = match conn {
        Some(c) => c,
        None => {
            ckpt_launcher::ensure_coordinator(&bin, &host, port, &[])?;
            // This connection stays open while the program runs, so an on-demand
            // coordinator stays up.
            let mut c = ckpt_launcher::CommandConn::open(&host, port)?;
            join(&mut c, None)?;
            c
        }
    };

    let mut ckpt_dirs = Vec::new();
    for image in &args.images {
        ckpt_dirs.push(match &args.ckpt_dir {
            Some(d) => std::path::absolute(d)?,
            None => std::path::absolute(image)?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        });
    }
    let sysv_removed = made.sysv_removed.clone();
    let code = restore_tree(
        &args.images,
        &headers,
        tables,
        &plan,
        made,
        &restorer,
        &ip,
        port,
        &ckpt_dirs,
        conn.stream().as_raw_fd(),
    );
    objects::remove_made_sysv(&sysv_removed);
    drop(conn);
    code
}

/// Files written with `O_APPEND` that grew after the checkpoint are cut back to their size at
/// checkpoint time: appends after the restart land at the end of the file, so the tail written
/// between the checkpoint and the kill would otherwise appear twice (docs/files.md).
fn truncate_appended(headers: &[ImageHeader]) -> Result<()> {
    use ckpt_format::image::FdKind;
    let mut done: Vec<&str> = Vec::new();
    for h in headers {
        for f in &h.fds {
            let writes = f.flags & libc::O_ACCMODE != libc::O_RDONLY;
            if f.kind != FdKind::Regular
                || f.deleted
                || f.flags & libc::O_APPEND == 0
                || !writes
                || done.contains(&f.path.as_str())
            {
                continue;
            }
            let Ok(md) = std::fs::metadata(&f.path) else {
                continue; // reported as missing when it is reopened
            };
            if md.ino() == f.ino && md.len() > f.size {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&f.path)
                    .with_context(|| format!("{}: cannot open to truncate", f.path))?;
                file.set_len(f.size)
                    .with_context(|| format!("{}: cannot truncate", f.path))?;
                eprintln!(
                    "ckpt-restart: {} grew from {} to {} bytes after the checkpoint; cut back to {} (it is appended to)",
                    f.path,
                    f.size,
                    md.len(),
                    f.size
                );
            }
            done.push(&f.path);
        }
    }
    Ok(())
}

fn resolve(host: &str) -> Result<String> {
    use std::net::ToSocketAddrs;
    let a = (host, 0u16)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve coordinator host {host}"))?
        .next()
        .ok_or_else(|| anyhow!("cannot resolve coordinator host {host}"))?;
    Ok(a.ip().to_string())
}

/// What the feeder threads found.
#[derive(Default)]
struct Outcome {
    /// A corrupt or unreadable image: the one line to print.
    error: Mutex<Option<String>>,
    /// A process other than the root stopped reading its image (its restorer failed).
    broken: Mutex<Option<usize>>,
    /// The root's restorer stopped reading (it said why; its exit status tells).
    root_broken: AtomicBool,
}

/// Builds the tree, feeds every restorer, waits for the root. Returns its exit code.
#[allow(clippy::too_many_arguments)]
fn restore_tree(
    images: &[PathBuf],
    headers: &[ImageHeader],
    tables: Vec<Option<Vec<(u64, usize)>>>,
    plan: &Plan,
    made: Made,
    restorer: &Path,
    ip: &str,
    port: u16,
    ckpt_dirs: &[PathBuf],
    conn_fd: i32,
) -> Result<i32> {
    let high = plan.high_fd;
    // A vpid the coordinator handed out above PID_MAX_LIMIT (a fork whose pid collided with
    // a vpid after a restart without namespaces) cannot be recreated with set_tid.
    let settable = |p: i32| p > 1 && p < (1 << 22);
    let all_pids_free = plan.nodes.iter().all(|n| settable(n.pid))
        && headers
            .iter()
            .all(|h| h.zombies.iter().all(|z| settable(z.pid)));
    let use_ns = all_pids_free && ckpt_launcher::pidns::usable();
    if std::env::var_os("CKPT_DEBUG").is_some() {
        for n in &plan.nodes {
            eprintln!("ckpt-restart: pid {}, namespaces {use_ns}", n.pid);
        }
    }

    // One pipe per image, both ends above every number an image needs.
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for image in images {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 fills two fds.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            bail!("pipe: {}", std::io::Error::last_os_error());
        }
        // SAFETY: pipe2 returned two fresh fds that we now own.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let rd = objects::above(rd.as_raw_fd(), high)
            .with_context(|| format!("{}: pipe", image.display()))?;
        let wr = objects::above(wr.as_raw_fd(), high)
            .with_context(|| format!("{}: pipe", image.display()))?;
        // SAFETY: a bigger pipe means fewer wake-ups; failure keeps the default size.
        unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        readers.push(rd);
        writers.push(wr);
    }
    let outer_proc = if use_ns {
        // SAFETY: open with a NUL-terminated path.
        let fd = unsafe {
            libc::open(
                c"/proc".as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            bail!("/proc: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let low = unsafe { OwnedFd::from_raw_fd(fd) };
        Some(objects::above(low.as_raw_fd(), high)?)
    } else {
        None
    };
    let ctl = Ctl::new(plan.nslots)?;

    // Everything the tree code needs, before fork.
    let cstr = |s: &str| CString::new(s).map_err(|_| anyhow!("NUL byte in {s:?}"));
    let prog = cstr(&restorer.to_string_lossy())?;
    let ip_c = cstr(ip)?;
    let port_c = cstr(&port.to_string())?;
    let mut strings: Vec<[CString; 2]> = Vec::new();
    for (i, _) in plan.nodes.iter().enumerate() {
        strings.push([
            cstr(&readers[i].as_raw_fd().to_string())?,
            cstr(&ckpt_dirs[i].to_string_lossy())?,
        ]);
    }
    let mut nodes = Vec::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        let mut installs = Vec::new();
        for inst in &n.installs {
            let src = made.source(&inst.source).ok_or_else(|| {
                anyhow!(
                    "{}: nothing to install on fd {} ({:?})",
                    images[i].display(),
                    inst.fd,
                    inst.source
                )
            })?;
            installs.push((src, inst.fd));
        }
        let (ctty, fg_pgrp) = match ckpt_launcher::ptys::ctty_of(&plan.objects, n.pid) {
            Some((key, fg)) if n.setsid => (
                made.source(&Source::Object { key, end: 1 }).unwrap_or(-1),
                fg,
            ),
            _ => (-1, 0),
        };
        nodes.push(NodeRt {
            vpid: n.vpid,
            pid: n.pid,
            steps: n.steps.clone(),
            setsid: n.setsid,
            ctty,
            fg_pgrp,
            group: n.group,
            installs,
            stream_fd: readers[i].as_raw_fd(),
            argv: [
                prog.as_ptr(),
                strings[i][0].as_ptr(),
                ip_c.as_ptr(),
                port_c.as_ptr(),
                strings[i][1].as_ptr(),
            ],
        });
    }
    let close_in_c: Vec<i32> = writers.iter().map(|w| w.as_raw_fd()).collect();
    let mut close_in_helpers: Vec<i32> = readers.iter().map(|r| r.as_raw_fd()).collect();
    close_in_helpers.extend(made.fds());
    close_in_helpers.extend(outer_proc.as_ref().map(|f| f.as_raw_fd()));
    close_in_helpers.push(conn_fd);
    let spec = TreeSpec {
        use_ns,
        ids: IdMaps::current(),
        nodes: &nodes,
        top: &plan.top,
        root: plan.root,
        ctl: &ctl,
        outer_proc: outer_proc.as_ref().map_or(-1, |f| f.as_raw_fd()),
        close_in_c: &close_in_c,
        close_in_helpers: &close_in_helpers,
        clock_offsets: clock_offsets(headers),
    };

    // SAFETY: fork of this single-threaded process; the child only makes syscalls.
    let c = unsafe { libc::fork() };
    if c < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if c == 0 {
        ckpt_launcher::pidns::run_tree(&spec);
    }
    // The tree has its copies now.
    drop(readers);
    drop(made);
    drop(outer_proc);
    // The restored program owns the terminal's signals; we just wait for it.
    // SAFETY: ignoring job-control interrupts in this (parent) process only.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }

    let outcome = Outcome::default();
    let c_alive = AtomicI32::new(c);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = (cores / images.len()).clamp(1, 8);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let status = std::thread::scope(|sc| {
        for (i, (wr, members)) in writers.into_iter().zip(tables).enumerate() {
            let (outcome, ctl, c_alive, done_tx) = (&outcome, &ctl, &c_alive, done_tx.clone());
            let image = &images[i];
            let root = i == plan.root;
            sc.spawn(move || {
                let mut pipe = File::from(wr);
                let fed = match members {
                    Some(m) => feed_members(image, &m, &mut pipe, workers),
                    None => open_stream(image)
                        .map_err(std::io::Error::other)
                        .and_then(|mut s| feed(&mut s, &mut pipe).map(|_| ())),
                };
                drop(pipe);
                match fed {
                    Ok(()) => {}
                    // A broken pipe means the restorer refused the image and said why.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        if root {
                            outcome.root_broken.store(true, SeqCst);
                        } else {
                            outcome.broken.lock().unwrap().get_or_insert(i);
                            abort_tree(ctl, c_alive.load(SeqCst));
                        }
                    }
                    Err(e) => {
                        // The image is bad: the tree may be half-restored; it must not run.
                        outcome.error.lock().unwrap().get_or_insert(format!(
                            "{}: {} — restart aborted",
                            image.display(),
                            describe(image::classify_io(e))
                        ));
                        abort_tree(ctl, c_alive.load(SeqCst));
                    }
                }
                let _ = done_tx.send(());
            });
        }
        drop(done_tx);
        let st = wait_exit(c);
        c_alive.store(0, SeqCst);
        // Let the other restorers read the rest of their images (they do not need the root).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match done_rx.recv_timeout(left) {
                Ok(()) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let st = st.map(|s| exit_like(s).unwrap_or(1));
                    std::process::exit(st.unwrap_or(1));
                }
            }
        }
        st
    })?;
    // SAFETY: reaping C, which wait_exit left unreaped.
    unsafe { libc::waitpid(c, std::ptr::null_mut(), 0) };
    if let Some(msg) = outcome.error.lock().unwrap().take() {
        bail!("{msg}");
    }
    if let Some(i) = outcome.broken.lock().unwrap().take() {
        if ctl.head().failed.load(SeqCst) != 0 {
            return Ok(1);
        }
        bail!(
            "{}: vpid {} ({}) stopped reading its image (its restorer failed) — restart aborted",
            images[i].display(),
            headers[i].vpid,
            headers[i].program
        );
    }
    if outcome.root_broken.load(SeqCst) && plan.nodes.len() > 1 {
        // The root never ran: the others must not run without it.
        abort_tree(&ctl, 0);
    }
    exit_like(status)
}

/// Sequential decoding, for gzip streams without member sizes.
fn feed<R: Read, W: Write>(r: &mut R, w: &mut W) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..k])?;
        n += k as u64;
    }
}

/// Parallel decoding: members are inflated (and CRC-checked) on every core and written to the
/// restorer in order, so no byte of a corrupt member ever reaches it.
fn feed_members<W: Write>(
    image: &Path,
    members: &[(u64, usize)],
    w: &mut W,
    workers: usize,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    let f = File::open(image)?;
    let next = AtomicUsize::new(0);
    // Bounded: at most a few members per worker wait in memory.
    let (tx, rx) = mpsc::sync_channel::<(usize, std::io::Result<Vec<u8>>)>(workers * 2);
    std::thread::scope(|sc| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (f, next) = (&f, &next);
            sc.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= members.len() {
                        break;
                    }
                    let (off, len) = members[i];
                    let mut raw = vec![0u8; len];
                    let r = f
                        .read_exact_at(&mut raw, off)
                        .and_then(|()| inflate_member(&raw));
                    if tx.send((i, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut pending = std::collections::BTreeMap::new();
        let mut want = 0usize;
        let mut result = Ok(());
        for (i, r) in rx.iter() {
            pending.insert(i, r);
            while let Some(r) = pending.remove(&want) {
                if let Err(e) = r.and_then(|data| w.write_all(&data)) {
                    result = Err(e);
                    break;
                }
                want += 1;
            }
            if result.is_err() {
                // Stop the workers: no index is left to take.
                next.store(members.len(), Ordering::Relaxed);
                break;
            }
        }
        // Drain so no worker blocks on a full channel.
        for _ in rx.iter() {}
        result
    })
}

/// Waits until C has exited (leaving it unreaped, so its pid cannot be reused while feeders
/// may still kill it); returns its wait status.
fn wait_exit(pid: libc::pid_t) -> Result<i32> {
    loop {
        // SAFETY: zeroed siginfo is valid; waiting for our own child without reaping it.
        let (r, info) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            );
            (r, info)
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            bail!("waitid: {e}");
        }
        // SAFETY: waitid filled a SIGCHLD siginfo.
        let (code, value) = unsafe { (info.si_code, info.si_status()) };
        return Ok(match code {
            libc::CLD_EXITED => (value & 0xff) << 8,
            _ => value & 0x7f,
        });
    }
}

/// C's exit code is ours; a fatal signal is re-raised on ourselves.
fn exit_like(status: i32) -> Result<i32> {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: restore default action and die of the same signal, like a shell would see.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        return Ok(128 + sig);
    }
    Ok(libc::WEXITSTATUS(status))
}
