//! `ckpt-command`: send one command to a coordinator and print the answer.
//!
//! Owns the command-line surface and the output format (images on stdout, everything else on
//! stderr) and the exit codes: 0 success, 1 failure (checkpoint failed, error reply, timeout),
//! 2 no coordinator. It must never retry a command (a checkpoint is not idempotent) and never
//! wait longer than `--timeout`.

use std::process::ExitCode;
use std::time::Duration;

use ckpt_format::wire::{Msg, WorkerInfo};
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
    /// Computation id, generation, state, number of processes, then the process tree.
    #[arg(short = 's', long)]
    status: bool,
    /// One line per process: vpid, pid, host, program, state, parent vpid ("-": none).
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
            if !workers.is_empty() {
                print!("{}", tree_table(&workers));
            }
            ExitCode::SUCCESS
        }
        (Msg::CmdList, Msg::Status { workers, .. }) => {
            for w in workers {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    w.vpid,
                    w.pid,
                    w.host,
                    w.program,
                    w.state,
                    parent_str(w.parent)
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

fn parent_str(parent: Option<u64>) -> String {
    parent.map_or_else(|| "-".to_string(), |p| p.to_string())
}

/// The process tree as a table: `VPID PID PARENT HOST STATE PROGRAM`, children (sorted by
/// vpid) indented two spaces per level under their parent. A process whose parent is not
/// listed is a root.
fn tree_table<'a>(workers: &'a [WorkerInfo]) -> String {
    use std::collections::{BTreeMap, BTreeSet};
    let listed: BTreeSet<u64> = workers.iter().map(|w| w.vpid).collect();
    let mut children: BTreeMap<Option<u64>, Vec<&WorkerInfo>> = BTreeMap::new();
    for w in workers {
        let parent = w.parent.filter(|p| listed.contains(p) && *p != w.vpid);
        children.entry(parent).or_default().push(w);
    }
    for v in children.values_mut() {
        v.sort_by_key(|w| w.vpid);
    }
    // Depth-first from the roots; `seen` guards against a parent cycle (bad input).
    let mut rows: Vec<(usize, &WorkerInfo)> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack: Vec<(usize, &WorkerInfo)> = children
        .get(&None)
        .map(|r| r.iter().rev().map(|w| (0, *w)).collect())
        .unwrap_or_default();
    let next = |stack: &mut Vec<(usize, &'a WorkerInfo)>, seen: &BTreeSet<u64>| {
        stack.pop().or_else(|| {
            // Only processes caught in a parent cycle are left: list them as roots.
            workers
                .iter()
                .filter(|w| !seen.contains(&w.vpid))
                .min_by_key(|w| w.vpid)
                .map(|w| (0, w))
        })
    };
    while let Some((depth, w)) = next(&mut stack, &seen) {
        if !seen.insert(w.vpid) {
            continue;
        }
        rows.push((depth, w));
        if let Some(c) = children.get(&Some(w.vpid)) {
            stack.extend(c.iter().rev().map(|c| (depth + 1, *c)));
        }
    }
    let cells: Vec<[String; 6]> = std::iter::once([
        "VPID".to_string(),
        "PID".into(),
        "PARENT".into(),
        "HOST".into(),
        "STATE".into(),
        "PROGRAM".into(),
    ])
    .chain(rows.iter().map(|(depth, w)| {
        [
            format!("{}{}", "  ".repeat(*depth), w.vpid),
            w.pid.to_string(),
            parent_str(w.parent),
            w.host.clone(),
            w.state.clone(),
            w.program.clone(),
        ]
    }))
    .collect();
    let mut width = [0usize; 5];
    for row in &cells {
        for (i, w) in width.iter_mut().enumerate() {
            *w = (*w).max(row[i].chars().count());
        }
    }
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, w) in width.iter().enumerate() {
            line.push_str(&format!("{:<w$}  ", row[i], w = *w));
        }
        line.push_str(&row[5]);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn w(vpid: u64, parent: Option<u64>, program: &str) -> WorkerInfo {
        WorkerInfo {
            vpid,
            pid: vpid as i32 + 1000,
            host: "h".into(),
            program: program.into(),
            state: "running".into(),
            parent,
        }
    }

    #[test]
    fn tree_indents_children_under_their_parent() {
        let t = tree_table(&[
            w(5, None, "bash"),
            w(7, Some(5), "sort"),
            w(6, Some(5), "cat"),
            w(8, Some(6), "grep"),
            w(9, Some(99), "orphan"),
        ]);
        let expected = "\
VPID   PID   PARENT  HOST  STATE    PROGRAM
5      1005  -       h     running  bash
  6    1006  5       h     running  cat
    8  1008  6       h     running  grep
  7    1007  5       h     running  sort
9      1009  99      h     running  orphan
";
        assert_eq!(t, expected);
    }

    #[test]
    fn tree_survives_a_parent_cycle() {
        let t = tree_table(&[w(1, Some(2), "a"), w(2, Some(1), "b")]);
        assert_eq!(t.lines().count(), 3, "{t}");
    }
}
