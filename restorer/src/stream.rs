//! Reading the decompressed image stream from the pipe: exact reads (short reads, EINTR and a
//! non-blocking descriptor are all normal on a pipe), skipping, and reading plain-data structs.
//!
//! Runs with no libc, no TLS, no allocator; never reads ahead (the stream is consumed strictly
//! in order, memory runs go straight to their final address).

use crate::msg::Msg;
use crate::sys;

/// Read exactly `len` bytes to `dst`, or fail naming `what` ("truncated image stream (what)").
///
/// # Safety
/// `dst..dst+len` must be writable and not otherwise referenced.
pub unsafe fn read_exact_raw(fd: i32, dst: *mut u8, len: usize, what: &[u8]) {
    let mut done = 0;
    while done < len {
        // SAFETY: the caller guarantees the whole destination is writable.
        let n = unsafe { sys::read_raw(fd, dst.add(done), len - done) };
        if n == -sys::EINTR {
            continue;
        }
        if n == -sys::EAGAIN {
            sys::poll_in(fd);
            continue;
        }
        if n < 0 {
            Msg::new()
                .s(b"cannot read the image stream (")
                .s(what)
                .s(b")")
                .errno(n)
                .fail();
        }
        if n == 0 {
            Msg::new()
                .s(b"truncated image stream (")
                .s(what)
                .s(b")")
                .fail();
        }
        done += n as usize;
    }
}

/// Read a plain-data struct.
pub fn read_pod<T: Copy>(fd: i32, v: &mut T, what: &[u8]) {
    // SAFETY: `v` is valid writable memory of size_of::<T>(); callers use only raw.rs structs
    // made of integers, for which every byte pattern is valid.
    unsafe { read_exact_raw(fd, v as *mut T as *mut u8, core::mem::size_of::<T>(), what) }
}

/// Read and discard `n` bytes using `scratch`.
pub fn skip(fd: i32, mut n: u64, scratch: &mut [u8], what: &[u8]) {
    while n > 0 {
        let chunk = n.min(scratch.len() as u64) as usize;
        // SAFETY: the chunk lies inside `scratch`.
        unsafe { read_exact_raw(fd, scratch.as_mut_ptr(), chunk, what) };
        n -= chunk as u64;
    }
}
