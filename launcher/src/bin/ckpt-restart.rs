//! `ckpt-restart [--coord-host H] [--coord-port P] [--ckpt-dir D] IMAGE...`
//!
//! Checks every image before touching anything (format, architecture, kernel and glibc, the
//! files it maps, the kernel's vDSO layout), makes sure a coordinator runs and adopts the
//! computation, then for each image forks a child that execs `ckpt-restorer` and streams the
//! decompressed image into it through a pipe. The restored program runs in the foreground of
//! this process; its exit status becomes ours. A corrupt member found while streaming kills
//! the half-restored child and is reported as one line.

use anyhow::{Context, Result, anyhow, bail};
use ckpt_format::image::{self, ImageError, ImageHeader};
use ckpt_format::wire::Msg;
use clap::Parser;
use flate2::read::MultiGzDecoder;
use std::ffi::CString;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
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
    /// Checkpoint images (ckpt_*.img).
    #[arg(required = true)]
    images: Vec<PathBuf>,
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
    if args.images.len() > 1 {
        bail!(
            "restarting {} processes at once is not supported yet (one image per ckpt-restart)",
            args.images.len()
        );
    }
    let h = &headers[0];
    let image = &args.images[0];

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
    ckpt_launcher::ensure_coordinator(&bin, &host, port, &[])?;
    // This connection stays open while the program runs, so an on-demand coordinator stays up.
    let mut conn = ckpt_launcher::CommandConn::open(&host, port)?;
    let adopt = Msg::CmdRestart {
        comp_id: h.computation_id,
        num_peers: args.images.len() as u32,
        generation: h.generation,
    };
    match conn.request(&adopt, Duration::from_secs(10))? {
        Msg::Ok => {}
        Msg::Error { message } => bail!("coordinator at {host}:{port}: {message}"),
        other => bail!("coordinator at {host}:{port}: unexpected answer {other:?}"),
    }

    let ckpt_dir = match &args.ckpt_dir {
        Some(d) => std::path::absolute(d)?,
        None => std::path::absolute(image)?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    let code = restore_one(
        image,
        h.pid,
        tables.swap_remove(0),
        &restorer,
        &ip,
        port,
        &ckpt_dir,
    );
    drop(conn);
    code
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

/// Forks the restorer, feeds it, waits for the restored program. Returns its exit code.
fn restore_one(
    image: &Path,
    orig_pid: i32,
    members: Option<Vec<(u64, usize)>>,
    restorer: &Path,
    ip: &str,
    port: u16,
    ckpt_dir: &Path,
) -> Result<i32> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh fds that we now own.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let cstr = |s: &str| CString::new(s).map_err(|_| anyhow!("NUL byte in {s:?}"));
    let prog = cstr(&restorer.to_string_lossy())?;
    let argv_s = [
        prog.clone(),
        cstr(&rd.as_raw_fd().to_string())?,
        cstr(ip)?,
        cstr(&port.to_string())?,
        cstr(&ckpt_dir.to_string_lossy())?,
    ];
    // argv[5], OUTER_PID, is written in place by the child (no allocation after fork).
    let mut outer_buf = [0u8; 16];
    let mut argv: Vec<*const libc::c_char> = argv_s.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    argv.push(std::ptr::null());
    let use_ns = orig_pid > 1 && ckpt_launcher::pidns::usable();
    if std::env::var_os("CKPT_DEBUG").is_some() {
        eprintln!("ckpt-restart: pid {orig_pid}, namespaces {use_ns}");
    }
    let (rd_fd, wr_fd) = (rd.as_raw_fd(), wr.as_raw_fd());
    let argv_ptr = argv.as_mut_ptr();
    let outer_ptr = outer_buf.as_mut_ptr();
    let exec = |outer: u32| {
        // SAFETY: async-signal-safe calls only, in the child; argv outlives the exec.
        unsafe {
            if outer != 0 {
                let mut digits = [0u8; 10];
                let mut n = outer;
                let mut i = digits.len();
                while n > 0 || i == digits.len() {
                    i -= 1;
                    digits[i] = b'0' + (n % 10) as u8;
                    n /= 10;
                }
                let len = digits.len() - i;
                std::ptr::copy_nonoverlapping(digits[i..].as_ptr(), outer_ptr, len);
                *outer_ptr.add(len) = 0;
                *argv_ptr.add(5) = outer_ptr as *const libc::c_char;
            }
            libc::fcntl(rd_fd, libc::F_SETFD, 0);
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::execv(prog.as_ptr(), argv_ptr as *const *const libc::c_char);
            let msg = b"ckpt-restart: cannot execute ckpt-restorer\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(127);
        }
    };

    // SAFETY: fork of this single-threaded process; the child only makes syscalls.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        if use_ns {
            ckpt_launcher::pidns::run_chain(orig_pid, &[rd_fd, wr_fd], &exec);
        }
        exec(0);
        // SAFETY: exec returns only after reporting its failure.
        unsafe { libc::_exit(127) };
    }
    drop(rd);
    // The restored program owns the terminal's signals; we just wait for it.
    // SAFETY: ignoring job-control interrupts in this (parent) process only.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let mut pipe = File::from(wr);
    let fed = match members {
        Some(m) => feed_members(image, &m, &mut pipe),
        None => open_stream(image)
            .map_err(std::io::Error::other)
            .and_then(|mut s| feed(&mut s, &mut pipe).map(|_| ())),
    };
    drop(pipe);
    // A broken pipe means the restorer refused the image and said why: its exit code tells.
    if let Err(e) = fed.or_else(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(e)
        }
    }) {
        // The image is bad: the child may be half-restored; it must not run.
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        bail!(
            "{}: {} — restart aborted",
            image.display(),
            describe(image::classify_io(e))
        );
    }
    wait_child(pid)
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
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    let f = File::open(image)?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
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

/// Waits for the child; its exit code is ours, a fatal signal is re-raised on ourselves.
fn wait_child(pid: libc::pid_t) -> Result<i32> {
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            bail!("waitpid: {e}");
        }
        if libc::WIFEXITED(status) {
            return Ok(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            // SAFETY: restore default action and die of the same signal, like a shell would see.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
            }
            return Ok(128 + sig);
        }
    }
}
