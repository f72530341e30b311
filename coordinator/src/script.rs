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

/// Escape `s` for the inside of a double-quoted shell word.
fn dq_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '$' | '`' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The images grouped by the host their process ran on, in order of first appearance (an
/// image of unknown host goes with the first host).
fn by_host(job: &ScriptJob) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (i, img) in job.images.iter().enumerate() {
        let host = job.hosts.get(i).cloned().unwrap_or_default();
        let at = if host.is_empty() {
            (!groups.is_empty()).then_some(0)
        } else {
            groups.iter().position(|(h, _)| *h == host)
        };
        match at {
            Some(g) => groups[g].1.push(img.clone()),
            None => groups.push((host, vec![img.clone()])),
        }
    }
    if groups.len() > 1 && groups[0].0.is_empty() {
        // Unknown hosts first: they join the first known one.
        let (_, imgs) = groups.remove(0);
        groups[0].1.splice(0..0, imgs);
    }
    groups
}

/// The script's text.
pub fn render(job: &ScriptJob, ctx: &ScriptCtx, date: &str) -> String {
    let groups = by_host(job);
    if groups.len() > 1 {
        return render_hosts(job, ctx, date, &groups);
    }
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

/// A computation on several hosts: one `ckpt-restart --part` per host, run there with ssh
/// (or directly on the host running the script), all at once; the script fails if one does.
fn render_hosts(
    job: &ScriptJob,
    ctx: &ScriptCtx,
    date: &str,
    groups: &[(String, Vec<String>)],
) -> String {
    let clean = |h: &str| h.replace(['"', '$', '`', '\\', '\'', ' '], "");
    // A loopback coordinator address cannot be reached from other hosts: use this host's name.
    let coord = if ctx.host.starts_with("127.") || ctx.host == "::1" || ctx.host == "localhost" {
        this_host()
    } else {
        ctx.host.clone()
    };
    let bin = sh_quote(&ctx.restart_bin.to_string_lossy());
    let mut s = String::new();
    s.push_str("#!/bin/sh\n");
    s.push_str("# ckpt restart script: restarts every process of the computation, one\n");
    s.push_str(
        "# `ckpt-restart --part` per host (ssh to the others), all joining one coordinator.\n",
    );
    s.push_str(&format!("# computation: {:016x}\n", job.comp_id));
    s.push_str(&format!("# generation: {}\n", job.generation));
    s.push_str(&format!("# written: {date}\n"));
    s.push_str(&format!(
        "# processes: {} on {} hosts\n",
        job.images.len(),
        groups.len()
    ));
    s.push_str(
        "# CKPT_COORD_HOST / CKPT_COORD_PORT in the environment override the coordinator below.\n",
    );
    s.push_str(&format!(
        "coord_host=\"${{CKPT_COORD_HOST:-{}}}\"\ncoord_port=\"${{CKPT_COORD_PORT:-{}}}\"\n",
        clean(&coord),
        ctx.port
    ));
    s.push_str("here=$(hostname)\npids=\"\"\n");
    for (host, imgs) in groups {
        let h = clean(host);
        let mut local =
            format!("{bin} --part --coord-host \"$coord_host\" --coord-port \"$coord_port\"");
        let mut remote = format!(
            "{} --part --coord-host '$coord_host' --coord-port '$coord_port'",
            dq_escape(&bin)
        );
        for img in imgs {
            local.push_str(" \\\n        ");
            local.push_str(&sh_quote(img));
            remote.push(' ');
            remote.push_str(&dq_escape(&sh_quote(img)));
        }
        s.push_str(&format!(
            "if [ \"$here\" = \"{h}\" ]; then\n    {local} &\nelse\n    ssh \"{h}\" \"{remote}\" &\nfi\npids=\"$pids $!\"\n"
        ));
    }
    s.push_str(
        "status=0\nfor p in $pids; do\n    wait \"$p\" || status=$?\ndone\nexit \"$status\"\n",
    );
    s
}

/// This machine's host name ("localhost" if it has none).
fn this_host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
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
            hosts: images.iter().map(|_| "h".to_string()).collect(),
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

    #[test]
    fn several_hosts_get_one_part_each() {
        let mut j = job(&["/c/a.img", "/c/b.img", "/c/c$.img"]);
        j.hosts = vec!["n1".into(), "n2".into(), "n1".into()];
        let ctx = ScriptCtx {
            restart_bin: "/opt/ckpt/ckpt-restart".into(),
            host: "head".into(),
            port: 7779,
            ckpt_dir: None,
        };
        assert_eq!(
            by_host(&j),
            vec![
                (
                    "n1".to_string(),
                    vec!["/c/a.img".to_string(), "/c/c$.img".to_string()]
                ),
                ("n2".to_string(), vec!["/c/b.img".to_string()]),
            ]
        );
        let text = render(&j, &ctx, "DATE");
        assert!(
            text.contains("coord_host=\"${CKPT_COORD_HOST:-head}\""),
            "{text}"
        );
        assert!(text.contains("ssh \"n2\" \"'/opt/ckpt/ckpt-restart' --part --coord-host '$coord_host' --coord-port '$coord_port' '/c/b.img'\" &"), "{text}");
        assert!(text.contains("'/c/c\\$.img'"), "{text}");
        // It parses, and run here (as neither n1 nor n2) it runs ssh: check with a fake ssh
        // that prints its arguments.
        let dir = std::env::temp_dir().join(format!("ckpt-script-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("s.sh");
        std::fs::write(&script, &text).unwrap();
        std::fs::write(dir.join("ssh"), "#!/bin/sh\necho \"ssh[$1] $2\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("ssh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = std::process::Command::new("sh")
            .arg(&script)
            .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
            .env("CKPT_COORD_PORT", "9")
            .output()
            .unwrap();
        assert!(out.status.success());
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        assert_eq!(
            lines,
            vec![
                "ssh[n1] '/opt/ckpt/ckpt-restart' --part --coord-host 'head' --coord-port '9' '/c/a.img' '/c/c$.img'",
                "ssh[n2] '/opt/ckpt/ckpt-restart' --part --coord-host 'head' --coord-port '9' '/c/b.img'",
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
