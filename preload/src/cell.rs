//! [`Owned`]: a static that one thread owns at a time (the checkpoint thread, or the restart
//! entry before any other thread exists). Replaces `static mut` without references to it.

use core::cell::UnsafeCell;

pub struct Owned<T>(UnsafeCell<T>);

// SAFETY: access is serialized by the protocol documented at each use (a single owner thread).
unsafe impl<T> Sync for Owned<T> {}

impl<T> Owned<T> {
    pub const fn new(v: T) -> Owned<T> {
        Owned(UnsafeCell::new(v))
    }

    /// # Safety
    /// The caller is the only thread touching this value for the lifetime of the reference.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self) -> &mut T {
        // SAFETY: exclusivity is the caller's contract.
        unsafe { &mut *self.0.get() }
    }

    pub fn as_ptr(&self) -> *mut T {
        self.0.get()
    }
}
