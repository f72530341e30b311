//! The restart script written after every committed checkpoint.
//!
//! Owns the script's location (`--ckpt-dir`, else the first image's directory), its text and
//! its atomic replacement (temporary name, fsync, rename, mode 0700). It must never write
//! anything but `ckpt_restart_script.sh` (and its temporary) and never touch the images.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::state::ScriptJob;

/// File name of the restart script.
pub const SCRIPT_NAME: &str = "ckpt_restart_script.sh";

/// What the script needs besides the checkpoint itself.
#[derive(Debug, Clone)]
pub struct ScriptCtx {
    /// Absolute path of `ckpt-restart` (next to the coordinator's executable).
    pub restart_bin: PathBuf,
    /// Coordinator host and port the restarted computation should use by default.
    pub host: String,
    pub port: u16,
    /// `--ckpt-dir` (absolute), if given.
    pub ckpt_dir: Option<PathBuf>,
}

/// Quote `s` for a POSIX shell (single quotes; `'` becomes `'\''`).
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script's text.
pub fn render(job: &ScriptJob, ctx: &ScriptCtx, date: &str) -> String {
    let mut s = String::new();
    s.push_str("#!/bin/sh\n");
    s.push_str("# ckpt restart script: restarts every process of the computation.\n");
    s.push_str(&format!("# computation: {:016x}\n", job.comp_id));
    s.push_str(&format!("# generation: {}\n", job.generation));
    s.push_str(&format!("# written: {date}\n"));
    s.push_str(&format!("# processes: {}\n", job.images.len()));
    s.push_str(
        "# CKPT_COORD_HOST / CKPT_COORD_PORT in the environment override the coordinator below.\n",
    );
    s.push_str(&format!(
        "exec {} --coord-host \"${{CKPT_COORD_HOST:-{}}}\" --coord-port \"${{CKPT_COORD_PORT:-{}}}\"",
        sh_quote(&ctx.restart_bin.to_string_lossy()),
        ctx.host.replace(['"', '$', '`', '\\'], ""),
        ctx.port
    ));
    for img in &job.images {
        s.push_str(" \\\n    ");
        s.push_str(&sh_quote(img));
    }
    s.push('\n');
    s
}

/// Directory the script goes to.
pub fn script_dir(job: &ScriptJob, ctx: &ScriptCtx) -> Option<PathBuf> {
    if let Some(d) = &ctx.ckpt_dir {
        return Some(d.clone());
    }
    let first = job.images.first()?;
    Path::new(first)
        .parent()
        .map(|p| p.to_path_buf())
        .filter(|p| !p.as_os_str().is_empty())
}

/// Write the script atomically; returns its path.
pub fn write(job: &ScriptJob, ctx: &ScriptCtx, date: &str) -> Result<String, String> {
    let dir = script_dir(job, ctx).ok_or("no directory for the restart script")?;
    let path = dir.join(SCRIPT_NAME);
    let tmp = dir.join(format!(".{SCRIPT_NAME}.tmp.{}", std::process::id()));
    let text = render(job, ctx, date);
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o700)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        // The umask may have removed bits: the script must be 0700 exactly.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    match res {
        Ok(()) => Ok(path.to_string_lossy().into_owned()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(format!("{}: {e}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(images: &[&str]) -> ScriptJob {
        ScriptJob {
            generation: 4,
            comp_id: 0xab,
            images: images.iter().map(|s| s.to_string()).collect(),
            warnings: vec![],
            reply_to: None,
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn renders_and_writes_0700() {
        let dir = std::env::temp_dir().join(format!("ckpt-script-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("ckpt_a b_1.img");
        let ctx = ScriptCtx {
            restart_bin: "/opt/ckpt/ckpt-restart".into(),
            host: "127.0.0.1".into(),
            port: 7779,
            ckpt_dir: None,
        };
        let j = job(&[img.to_str().unwrap()]);
        let text = render(&j, &ctx, "DATE");
        assert!(text.starts_with("#!/bin/sh\n"));
        assert!(text.contains("# computation: 00000000000000ab\n# generation: 4\n# written: DATE"));
        assert!(text.contains(
            "exec '/opt/ckpt/ckpt-restart' --coord-host \"${CKPT_COORD_HOST:-127.0.0.1}\" --coord-port \"${CKPT_COORD_PORT:-7779}\""
        ));
        assert!(text.contains(&format!("'{}'", img.display())));
        let path = write(&j, &ctx, "DATE").unwrap();
        assert_eq!(Path::new(&path), dir.join(SCRIPT_NAME));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // sh -n: the script parses.
        let st = std::process::Command::new("sh")
            .arg("-n")
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
