//! Reads and parses `/proc/self/maps` without allocating: the whole file is read into a caller
//! buffer (zone scratch), then iterated line by line. Also names the kernel's special mappings.
//!
//! Runs with no libc, no TLS, no allocator; never changes a mapping itself.

use crate::msg::{Msg, fatal};
use crate::raw::{SPECIAL_VDSO, SPECIAL_VVAR, SPECIAL_VVAR_VCLOCK};
use crate::sys;

/// One line of `/proc/self/maps`.
#[derive(Clone, Copy)]
pub struct Mapping<'a> {
    pub start: u64,
    pub end: u64,
    /// `rwxp`-style permissions.
    pub perms: &'a [u8],
    /// Path or `[label]`, possibly empty.
    pub name: &'a [u8],
}

/// Read all of `/proc/self/maps` into `buf`; returns the filled prefix.
pub fn read_self_maps(buf: &mut [u8]) -> &[u8] {
    let fd = sys::open(b"/proc/self/maps\0", sys::O_RDONLY | sys::O_CLOEXEC);
    if fd < 0 {
        Msg::new()
            .s(b"cannot open /proc/self/maps")
            .errno(fd)
            .fail();
    }
    let fd = fd as i32;
    let mut len = 0;
    loop {
        if len == buf.len() {
            fatal(b"/proc/self/maps does not fit the scratch buffer");
        }
        let n = sys::read(fd, &mut buf[len..]);
        if n == -sys::EINTR {
            continue;
        }
        if n < 0 {
            Msg::new().s(b"cannot read /proc/self/maps").errno(n).fail();
        }
        if n == 0 {
            break;
        }
        len += n as usize;
    }
    sys::close(fd);
    &buf[..len]
}

/// Iterator over the lines of a maps text.
pub struct Lines<'a> {
    rest: &'a [u8],
}

pub fn lines(text: &[u8]) -> Lines<'_> {
    Lines { rest: text }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Mapping<'a>;

    fn next(&mut self) -> Option<Mapping<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let nl = self
            .rest
            .iter()
            .position(|&c| c == b'\n')
            .unwrap_or(self.rest.len());
        let line = &self.rest[..nl];
        self.rest = if nl < self.rest.len() {
            &self.rest[nl + 1..]
        } else {
            &[]
        };
        Some(parse_line(line).unwrap_or_else(|| fatal(b"cannot parse /proc/self/maps")))
    }
}

/// `start-end perms offset dev inode   name`
fn parse_line(line: &[u8]) -> Option<Mapping<'_>> {
    let (start, rest) = hex(line)?;
    let rest = rest.strip_prefix(b"-")?;
    let (end, mut rest) = hex(rest)?;
    // perms, offset, dev, inode
    let mut perms: &[u8] = &[];
    for i in 0..4 {
        rest = skip_spaces(rest);
        let w = rest.iter().position(|&c| c == b' ').unwrap_or(rest.len());
        if w == 0 {
            return None;
        }
        if i == 0 {
            perms = &rest[..w];
        }
        rest = &rest[w..];
    }
    Some(Mapping {
        start,
        end,
        perms,
        name: skip_spaces(rest),
    })
}

fn skip_spaces(s: &[u8]) -> &[u8] {
    let n = s.iter().position(|&c| c != b' ').unwrap_or(s.len());
    &s[n..]
}

fn hex(s: &[u8]) -> Option<(u64, &[u8])> {
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => break,
        };
        if n == 16 {
            return None;
        }
        v = (v << 4) | d as u64;
        n += 1;
    }
    if n == 0 { None } else { Some((v, &s[n..])) }
}

/// `SPECIAL_*` kind of a mapping name, 0 if it is not one of the kernel's special mappings.
pub fn special_kind(name: &[u8]) -> u64 {
    match name {
        b"[vvar]" => SPECIAL_VVAR,
        b"[vvar_vclock]" => SPECIAL_VVAR_VCLOCK,
        b"[vdso]" => SPECIAL_VDSO,
        _ => 0,
    }
}

/// Label used in messages for a `SPECIAL_*` kind.
pub fn special_name(kind: u64) -> &'static [u8] {
    match kind {
        SPECIAL_VVAR => b"[vvar]",
        SPECIAL_VVAR_VCLOCK => b"[vvar_vclock]",
        SPECIAL_VDSO => b"[vdso]",
        _ => b"[?]",
    }
}
