//! Timestamped log lines and UTC time formatting.
//!
//! Owns the log sink (stderr by default, or the `--log` file) and the RFC 3339 formatting of
//! wall-clock times used in log lines and in the restart script. It must never panic when a
//! write fails (a full disk or a closed stderr must not take the coordinator down).

use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

static SINK: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// Send log lines to `file` instead of stderr.
pub fn set_file(file: std::fs::File) {
    if let Ok(mut s) = SINK.lock() {
        *s = Some(file);
    }
}

/// Write one timestamped line.
pub fn line(msg: &str) {
    let text = format!(
        "{} ckpt-coordinator[{}]: {msg}\n",
        utc_now(true),
        std::process::id()
    );
    let mut guard = match SINK.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    match guard.as_mut() {
        Some(f) => {
            let _ = f.write_all(text.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
}

/// `log!("fmt", args)` = [`line`] with `format!`.
#[macro_export]
macro_rules! log {
    ($($t:tt)*) => { $crate::log::line(&format!($($t)*)) };
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SS[.mmm]Z`.
pub fn utc_now(millis: bool) -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_utc(d.as_secs(), d.subsec_millis(), millis)
}

/// Format seconds since the epoch (UTC).
pub fn format_utc(secs: u64, ms: u32, millis: bool) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    if millis {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_dates() {
        assert_eq!(super::format_utc(0, 0, false), "1970-01-01T00:00:00Z");
        assert_eq!(
            super::format_utc(951_782_400, 5, true),
            "2000-02-29T00:00:00.005Z"
        );
        assert_eq!(
            super::format_utc(1_767_225_599, 0, false),
            "2025-12-31T23:59:59Z"
        );
    }
}
