//! `ckpt-launch`: run a program under checkpoint control.
//!
//! Owns: finding `libckpt.so` next to this executable, making sure a coordinator answers
//! (starting a local one on demand), the checkpoint directory, and the environment the
//! preload reads (`LD_PRELOAD`, `CKPT_COORD_HOST`, `CKPT_COORD_PORT`, `CKPT_DIR`,
//! `CKPT_BIN_DIR`, `CKPT_GZIP`, `CKPT_PLUGINS`); then it replaces itself with the program
//! (execvp). It must never fork the program as a child (the program must keep our pid and
//! our parent) and never leave a coordinator it started without a client for long (the
//! coordinator runs with `--exit-on-last`).
//!
//! Test-only: `CKPT_LAUNCH_NO_PRELOAD=1` skips the `libckpt.so` check and leaves
//! `LD_PRELOAD` alone, so the launcher can be tested before the preload works.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, bail};
use ckpt_format::wire::Msg;
use ckpt_launcher::{
    PRELOAD_NAME, bin_dir, coord_addr, ensure_coordinator, preload_value, prepare_ckpt_dir, probe,
    request,
};
use clap::Parser;

/// Run PROGRAM with checkpointing: `ckpt-command --checkpoint` can then freeze it to disk
/// and `ckpt-restart` bring it back.
#[derive(Parser, Debug)]
#[command(name = "ckpt-launch", version)]
struct Cli {
    /// Coordinator host [env: CKPT_COORD_HOST, default 127.0.0.1]
    #[arg(long, value_name = "H")]
    coord_host: Option<String>,
    /// Coordinator port [env: CKPT_COORD_PORT, default 7779]
    #[arg(long, value_name = "P")]
    coord_port: Option<u16>,
    /// Directory for the images [env: CKPT_DIR, default: current directory]
    #[arg(long, value_name = "D")]
    ckpt_dir: Option<PathBuf>,
    /// Checkpoint every SECS seconds.
    #[arg(long, value_name = "SECS")]
    interval: Option<u64>,
    /// Fail if a coordinator already runs at the address (start a fresh one).
    #[arg(long)]
    new_coordinator: bool,
    /// Write uncompressed images.
    #[arg(long)]
    no_gzip: bool,
    /// Load this plugin library too (repeatable).
    #[arg(long, value_name = "PATH")]
    with_plugin: Vec<PathBuf>,
    /// The program and its arguments (options after PROGRAM belong to it).
    #[arg(
        value_name = "PROGRAM",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = false,
        num_args = 1..
    )]
    command: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ckpt-launch: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let no_preload = std::env::var_os("CKPT_LAUNCH_NO_PRELOAD").is_some_and(|v| v == "1");
    let bin = bin_dir()?;
    let lib = bin.join(PRELOAD_NAME);
    if !no_preload && !lib.is_file() {
        bail!(
            "{} not found; build with cargo build --release",
            lib.display()
        );
    }
    let (host, port) = coord_addr(cli.coord_host.clone(), cli.coord_port);

    if cli.new_coordinator && probe(&host, port).is_ok() {
        bail!("a coordinator already runs at {host}:{port}");
    }
    let extra: Vec<String> = match cli.interval {
        Some(s) => vec!["--interval".into(), s.to_string()],
        None => vec![],
    };
    let started = ensure_coordinator(&bin, &host, port, &extra)?;
    if !started && let Some(seconds) = cli.interval {
        match request(
            &host,
            port,
            &Msg::CmdInterval { seconds },
            Duration::from_secs(10),
        )
        .context("cannot set the checkpoint interval")?
        {
            Msg::Ok => {}
            Msg::Error { message } => bail!("cannot set the checkpoint interval: {message}"),
            other => bail!("unexpected reply to CmdInterval: {other:?}"),
        }
    }

    let ckpt_dir = prepare_ckpt_dir(
        cli.ckpt_dir
            .clone()
            .or_else(|| {
                std::env::var_os("CKPT_DIR")
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
            })
            .as_deref(),
    )?;

    let prog = &cli.command[0];
    let mut cmd = Command::new(prog);
    cmd.args(&cli.command[1..]);
    if !no_preload {
        cmd.env(
            "LD_PRELOAD",
            preload_value(&lib, std::env::var_os("LD_PRELOAD").as_deref()),
        );
    }
    cmd.env("CKPT_COORD_HOST", &host)
        .env("CKPT_COORD_PORT", port.to_string())
        .env("CKPT_DIR", &ckpt_dir)
        .env("CKPT_BIN_DIR", &bin)
        // The launched process is the root of the tree (its exit status is ckpt-restart's);
        // the preload removes this variable so its children do not inherit it.
        .env("CKPT_ROOT", "1");
    if cli.no_gzip {
        cmd.env("CKPT_GZIP", "0");
    } else {
        cmd.env_remove("CKPT_GZIP");
    }
    if cli.with_plugin.is_empty() {
        cmd.env_remove("CKPT_PLUGINS");
    } else {
        let mut plugins = OsString::new();
        for (i, p) in cli.with_plugin.iter().enumerate() {
            if i > 0 {
                plugins.push(":");
            }
            let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            plugins.push(p.as_os_str());
        }
        cmd.env("CKPT_PLUGINS", plugins);
    }
    let err = cmd.exec();
    eprintln!(
        "ckpt-launch: cannot execute '{}': {}",
        prog.to_string_lossy(),
        ckpt_launcher::io_msg(&err)
    );
    Ok(ExitCode::from(127))
}
