//! Directory listing of /proc with raw `getdents64`: no `opendir`, hence no glibc malloc, so it
//! is usable while user threads are frozen (possibly holding malloc's locks).

use std::ffi::CStr;

/// Lists the numeric entries of a /proc directory (`/proc/self/task`, `/proc/self/fd`).
/// Returns the errno on failure to open.
pub fn list_numeric_dir(path: &CStr, out: &mut Vec<i32>) -> Result<(), i32> {
    out.clear();
    // SAFETY: NUL-terminated path; open does not allocate.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if n <= 0 {
            break;
        }
        let mut off = 0usize;
        while off < n as usize {
            // struct linux_dirent64 { u64 ino; i64 off; u16 reclen; u8 type; char name[]; }
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let name = &buf[off + 19..off + reclen];
            let len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
            let name = &name[..len];
            if !name.is_empty() && name.iter().all(u8::is_ascii_digit) {
                let v = name.iter().fold(0i64, |v, &c| v * 10 + (c - b'0') as i64);
                out.push(v as i32);
            }
            off += reclen;
        }
    }
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    Ok(())
}
