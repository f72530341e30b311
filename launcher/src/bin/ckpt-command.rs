//! `ckpt-command`: send one command to a coordinator and print the answer.
//!
//! Owns the command-line surface and the output format (images on stdout, everything else on
//! stderr) and the exit codes: 0 success, 1 failure (checkpoint failed, error reply, timeout),
//! 2 no coordinator. It must never retry a command (a checkpoint is not idempotent) and never
//! wait longer than `--timeout`.

use std::process::ExitCode;
use std::time::Duration;

use ckpt_format::wire::Msg;
use ckpt_launcher::{ClientError, coord_addr, request};
use clap::{ArgGroup, Parser};

/// Control a running computation through its coordinator.
#[derive(Parser, Debug)]
#[command(name = "ckpt-command", version)]
#[command(group(ArgGroup::new("action").required(true)
    .args(["checkpoint", "status", "list", "kill", "quit", "interval"])))]
struct Cli {
    /// Coordinator host [env: CKPT_COORD_HOST, default 127.0.0.1]
    #[arg(long, value_name = "H")]
    coord_host: Option<String>,
    /// Coordinator port [env: CKPT_COORD_PORT, default 7779]
    #[arg(long, value_name = "P")]
    coord_port: Option<u16>,
    /// Checkpoint every process; prints the image paths when all are on disk.
    #[arg(short = 'c', long)]
    checkpoint: bool,
    /// Computation id, generation, state and number of processes.
    #[arg(short = 's', long)]
    status: bool,
    /// One line per process: vpid, pid, host, program, state.
    #[arg(short = 'l', long)]
    list: bool,
    /// Kill every process of the computation (the coordinator stays).
    #[arg(short = 'k', long)]
    kill: bool,
    /// Kill every process and stop the coordinator.
    #[arg(short = 'q', long)]
    quit: bool,
    /// Checkpoint every N seconds (0 = stop periodic checkpoints).
    #[arg(short = 'i', long, value_name = "N")]
    interval: Option<u64>,
    /// Seconds to wait for the coordinator's answer.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    timeout: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (host, port) = coord_addr(cli.coord_host.clone(), cli.coord_port);
    let msg = if cli.checkpoint {
        Msg::CmdCheckpoint
    } else if cli.status {
        Msg::CmdStatus
    } else if cli.list {
        Msg::CmdList
    } else if cli.kill {
        Msg::CmdKill
    } else if cli.quit {
        Msg::CmdQuit
    } else {
        Msg::CmdInterval {
            seconds: cli.interval.unwrap_or(0),
        }
    };
    let reply = match request(&host, port, &msg, Duration::from_secs(cli.timeout)) {
        Ok(r) => r,
        Err(e) => {
            let code = match e.downcast_ref::<ClientError>() {
                Some(ClientError::NoCoordinator { .. }) => 2,
                _ => 1,
            };
            let what = if cli.checkpoint {
                "checkpoint failed: "
            } else {
                ""
            };
            eprintln!("ckpt-command: {what}{e:#}");
            return ExitCode::from(code);
        }
    };
    match (msg, reply) {
        (
            Msg::CmdCheckpoint,
            Msg::CheckpointDone {
                generation,
                images,
                script,
                warnings,
            },
        ) => {
            for img in &images {
                println!("{img}");
            }
            for w in &warnings {
                eprintln!("ckpt-command: warning: {w}");
            }
            match script {
                Some(s) => eprintln!("restart script: {s}"),
                None => eprintln!("ckpt-command: checkpoint {generation}: no restart script"),
            }
            ExitCode::SUCCESS
        }
        (Msg::CmdCheckpoint, Msg::Error { message }) => {
            eprintln!(
                "ckpt-command: checkpoint failed: {}",
                strip_ckpt_prefix(&message)
            );
            ExitCode::from(1)
        }
        (
            Msg::CmdStatus,
            Msg::Status {
                comp_id,
                generation,
                state,
                workers,
            },
        ) => {
            match comp_id {
                Some(c) => println!("computation: {c:016x}"),
                None => println!("computation: none"),
            }
            println!("generation: {generation}");
            println!("state: {state}");
            println!("processes: {}", workers.len());
            println!("coordinator: {host}:{port}");
            ExitCode::SUCCESS
        }
        (Msg::CmdList, Msg::Status { workers, .. }) => {
            for w in workers {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    w.vpid, w.pid, w.host, w.program, w.state
                );
            }
            ExitCode::SUCCESS
        }
        (Msg::CmdKill | Msg::CmdQuit | Msg::CmdInterval { .. }, Msg::Ok) => ExitCode::SUCCESS,
        (_, Msg::Error { message }) => {
            eprintln!("ckpt-command: {}", one_line(&message));
            ExitCode::from(1)
        }
        (_, other) => {
            eprintln!("ckpt-command: unexpected reply from the coordinator: {other:?}");
            ExitCode::from(1)
        }
    }
}

fn one_line(s: &str) -> String {
    s.lines().collect::<Vec<_>>().join("; ")
}

/// "checkpoint 3 failed: REASON" -> "REASON".
fn strip_ckpt_prefix(message: &str) -> String {
    let m = one_line(message);
    if let Some(rest) = m.strip_prefix("checkpoint ")
        && let Some((n, reason)) = rest.split_once(" failed: ")
        && n.chars().all(|c| c.is_ascii_digit())
    {
        return reason.to_string();
    }
    m
}
