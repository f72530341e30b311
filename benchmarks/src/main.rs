//! `ckpt-bench`: prints the figures anyone can rerun — checkpoint time (command to image on
//! disk), image size, restart time (command to the program running again) for a program with
//! N MiB touched (half random, half zero), and the per-call cost of running under libckpt.so.
//!
//! It drives the real binaries (`ckpt-coordinator`, `ckpt-launch`, `ckpt-command`,
//! `ckpt-restart`) from the directory it lives in, on a private coordinator and temp dir.
//! Every wait has a deadline.

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "ckpt-bench",
    about = "Measure ckpt: checkpoint/restart time, image size, wrapper overhead"
)]
struct Args {
    /// MiB of memory the subject touches (half random, half zero).
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Checkpoint/restart rounds (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Calls per wrapper-overhead loop.
    #[arg(long, default_value_t = 1_000_000)]
    calls: u64,
}

struct Env {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    coord: Child,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.command(&["--quit"]);
        let _ = self.coord.kill();
        let _ = self.coord.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > end {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl Env {
    fn new() -> Result<Env> {
        let bin = std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .to_path_buf();
        let dir = std::env::temp_dir().join(format!("ckpt-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let pf = dir.join("port");
        let coord = Command::new(bin.join("ckpt-coordinator"))
            .args(["--port", "0", "--port-file"])
            .arg(&pf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ckpt-coordinator")?;
        let port = wait_for(
            "the coordinator's port file",
            Duration::from_secs(10),
            || {
                std::fs::read_to_string(&pf)
                    .ok()
                    .and_then(|s| s.trim().parse::<u16>().ok())
            },
        )?;
        Ok(Env {
            bin,
            dir,
            port,
            coord,
        })
    }

    fn command(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(self.bin.join("ckpt-command"))
            .args(["--coord-port", &self.port.to_string()])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "ckpt-command {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn program_pid(&self) -> Result<i32> {
        let l = self.command(&["--list"])?;
        l.lines()
            .filter_map(|x| x.split_whitespace().nth(1)?.parse().ok())
            .next()
            .context("no process listed")
    }

    fn compile(&self, src: &str, name: &str) -> Result<PathBuf> {
        let srcp = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("progs")
            .join(src);
        let out = self.dir.join(name);
        let st = Command::new("cc")
            .args(["-O2", "-pthread", "-o"])
            .arg(&out)
            .arg(&srcp)
            .status()?;
        if !st.success() {
            bail!("compiling {}", srcp.display());
        }
        Ok(out)
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// SIGKILLs the subject and reaps `parent` (the process whose exit follows the subject's:
/// ckpt-launch exec'ed into it, or the ckpt-restart it runs under).
fn kill9(pid: i32, parent: &mut Child) -> Result<()> {
    // SAFETY: SIGKILL to the benchmark subject.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for("the subject to die", Duration::from_secs(30), || {
        parent.try_wait().ok().flatten()
    })?;
    Ok(())
}

fn ckpt_restart_round(env: &Env, mib: u64, runs: usize, gzip: bool) -> Result<()> {
    let prog = env.compile("bigmem.c", "bigmem")?;
    let ck = env.dir.join(if gzip { "ck-gz" } else { "ck-raw" });
    let out = env.dir.join("out.txt");
    let mut launch = Command::new(env.bin.join("ckpt-launch"));
    launch
        .args(["--coord-port", &env.port.to_string(), "--ckpt-dir"])
        .arg(&ck);
    if !gzip {
        launch.arg("--no-gzip");
    }
    let mut child = launch
        .arg(&prog)
        .arg(mib.to_string())
        .stdout(std::fs::File::create(&out)?)
        .spawn()
        .context("ckpt-launch")?;
    wait_for(
        "the subject to touch its memory",
        Duration::from_secs(300),
        || {
            std::fs::read_to_string(&out)
                .ok()
                .filter(|s| s.starts_with("ready"))
                .map(|_| ())
        },
    )?;
    let (mut ck_ms, mut rs_ms) = (Vec::new(), Vec::new());
    let mut size = 0;
    let mut restart_child: Option<Child> = None;
    for _ in 0..runs {
        let t = Instant::now();
        let imgs = env.command(&["--checkpoint"])?;
        ck_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let img = PathBuf::from(imgs.lines().next().context("no image printed")?);
        size = file_len(&img);
        let pid = env.program_pid()?;
        match restart_child.as_mut() {
            Some(c) => kill9(pid, c)?,
            None => kill9(pid, &mut child)?,
        }
        std::fs::File::create(&out)?; // truncate: the first write after restart makes it grow
        let t = Instant::now();
        let c = Command::new(env.bin.join("ckpt-restart"))
            .args(["--coord-port", &env.port.to_string()])
            .arg(&img)
            .spawn()
            .context("ckpt-restart")?;
        wait_for(
            "the restarted subject to write",
            Duration::from_secs(300),
            || (file_len(&out) > 0).then_some(()),
        )?;
        rs_ms.push(t.elapsed().as_secs_f64() * 1e3);
        restart_child = Some(c);
    }
    if let Some(mut c) = restart_child {
        kill9(env.program_pid()?, &mut c)?;
    }
    let mem = (mib << 20) as f64;
    println!(
        "{:<28} {:>10.0} {:>12.1} {:>8.3} {:>10.0} {:>12.0}",
        format!(
            "{mib} MiB, {}",
            if gzip { "gzip level 1" } else { "--no-gzip" }
        ),
        median(&mut ck_ms),
        size as f64 / (1 << 20) as f64,
        size as f64 / mem,
        median(&mut rs_ms),
        mem / (1 << 20) as f64 / (median(&mut ck_ms) / 1e3),
    );
    Ok(())
}

/// Suspend latency (checkpoint request → every thread parked), from libckpt's `CKPT_STATS` log.
fn suspend_latency(env: &Env, threads: &[u32]) -> Result<()> {
    let prog = env.compile("nthreads.c", "nthreads")?;
    println!(
        "\n{:<22} {:>14} {:>14}",
        "threads (incl. main)", "median us", "max us"
    );
    for &n in threads {
        let out = env.dir.join(format!("nthreads-{n}.out"));
        let err = env.dir.join(format!("nthreads-{n}.err"));
        let mut child = Command::new(env.bin.join("ckpt-launch"))
            .args(["--coord-port", &env.port.to_string(), "--ckpt-dir"])
            .arg(env.dir.join("ck-threads"))
            .arg(&prog)
            .arg(n.to_string())
            .env("CKPT_STATS", "1")
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?)
            .spawn()?;
        wait_for(
            "the subject to start its threads",
            Duration::from_secs(30),
            || {
                std::fs::read_to_string(&out)
                    .ok()
                    .filter(|s| s.starts_with("ready"))
                    .map(|_| ())
            },
        )?;
        for _ in 0..7 {
            env.command(&["--checkpoint"])?;
        }
        let log = std::fs::read_to_string(&err)?;
        let mut us: Vec<f64> = log
            .lines()
            .filter_map(|l| {
                l.split("suspended ")
                    .nth(1)?
                    .split(" in ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        kill9(env.program_pid()?, &mut child)?;
        if us.is_empty() {
            bail!("no suspend figures in {}", err.display());
        }
        let max = us.iter().cloned().fold(0.0, f64::max);
        println!("{n:<22} {:>14.0} {max:>14.0}", median(&mut us));
    }
    Ok(())
}

fn parse_calls(s: &str) -> Vec<(String, f64)> {
    s.lines()
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn overhead(env: &Env, calls: u64) -> Result<()> {
    let prog = env.compile("calls.c", "calls")?;
    let run = |launch: bool| -> Result<Vec<(String, f64)>> {
        let mut best: Vec<(String, f64)> = Vec::new();
        for _ in 0..5 {
            let out = if launch {
                Command::new(env.bin.join("ckpt-launch"))
                    .args(["--coord-port", &env.port.to_string(), "--ckpt-dir"])
                    .arg(&env.dir)
                    .arg(&prog)
                    .arg(calls.to_string())
                    .output()?
            } else {
                Command::new(&prog).arg(calls.to_string()).output()?
            };
            let v = parse_calls(&String::from_utf8_lossy(&out.stdout));
            if best.is_empty() {
                best = v;
            } else {
                for (b, n) in best.iter_mut().zip(v) {
                    b.1 = b.1.min(n.1);
                }
            }
        }
        Ok(best)
    };
    let native = run(false)?;
    let under = run(true)?;
    println!(
        "\n{:<22} {:>12} {:>12} {:>10}",
        "call (best of 5)", "native ns", "ckpt ns", "delta ns"
    );
    for ((name, a), (_, b)) in native.iter().zip(under.iter()) {
        println!("{name:<22} {a:>12.1} {b:>12.1} {:>10.1}", b - a);
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let env = Env::new()?;
    println!(
        "ckpt-bench on {} cores; subject touches {} MiB (half random, half zero)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        args.mib
    );
    println!(
        "{:<28} {:>10} {:>12} {:>8} {:>10} {:>12}",
        "configuration", "ckpt ms", "image MiB", "ratio", "restart ms", "ckpt MiB/s"
    );
    ckpt_restart_round(&env, args.mib, args.runs, true)?;
    ckpt_restart_round(&env, args.mib, args.runs, false)?;
    suspend_latency(&env, &[1, 8, 64])?;
    overhead(&env, args.calls)?;
    Ok(())
}
