//! External plugins: shared libraries named by `ckpt-launch --with-plugin PATH` (the
//! `CKPT_PLUGINS` variable, `:`-separated, passed on across exec), loaded into every process
//! of the computation at startup, and the C hooks they may export (docs/plugins.md).
//!
//! One hook so far: `ckpt_plugin_reconnect`, asked at restart for each connection to a peer
//! outside the computation that came back closed (the sockets plugin calls [`reconnect`]).
//! The libraries stay mapped like any other, so after a restart the hook addresses saved
//! here are valid again (the library file must still exist, as every mapped file must).
//!
//! Loading runs in the library constructor (no other thread yet). [`reconnect`] runs in the
//! restart hooks, before any user thread runs again: no locks; the table is static atomics.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::api::{CkptContext, Plugin, RestartContext};

/// Most external plugins loaded.
const MAX: usize = 8;

/// `int ckpt_plugin_reconnect(int fd, const struct sockaddr *local, socklen_t local_len,
/// const struct sockaddr *peer, socklen_t peer_len, size_t unread)`: returns a new connected
/// fd to put in place of `fd`, or -1 to leave it closed.
type ReconnectFn = unsafe extern "C" fn(
    libc::c_int,
    *const libc::sockaddr,
    libc::socklen_t,
    *const libc::sockaddr,
    libc::socklen_t,
    libc::size_t,
) -> libc::c_int;

static RECONNECT: [AtomicPtr<libc::c_void>; MAX] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX];
static LOADED: AtomicUsize = AtomicUsize::new(0);

fn say(msg: &str) {
    let line = format!("ckpt[{}]: {msg}\n", std::process::id());
    // SAFETY: write(2) of our buffer to stderr.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// Loads every library of `CKPT_PLUGINS`; one line on stderr for each that cannot be.
fn load() {
    let Ok(list) = std::env::var("CKPT_PLUGINS") else {
        return;
    };
    for path in list.split(':').filter(|p| !p.is_empty()) {
        let n = LOADED.load(Ordering::Relaxed);
        if n == MAX {
            say(&format!(
                "plugin {path}: more than {MAX} plugins; not loaded"
            ));
            continue;
        }
        let Ok(c) = std::ffi::CString::new(path) else {
            continue;
        };
        // SAFETY: dlopen with a NUL-terminated path; the constructor runs single-threaded.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            // SAFETY: dlerror returns a NUL-terminated message (or null) after a failure.
            let why = unsafe {
                let e = libc::dlerror();
                if e.is_null() {
                    "unknown error".to_string()
                } else {
                    std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned()
                }
            };
            say(&format!("cannot load plugin {path}: {why}"));
            continue;
        }
        // SAFETY: dlsym on the handle just opened, NUL-terminated name.
        let f = unsafe { libc::dlsym(h, c"ckpt_plugin_reconnect".as_ptr()) };
        RECONNECT[n].store(f, Ordering::Relaxed);
        LOADED.store(n + 1, Ordering::Release);
    }
}

/// Whether any external plugin is loaded.
pub fn any_loaded() -> bool {
    LOADED.load(Ordering::Acquire) > 0
}

/// Asks the loaded plugins, in order, for a new connection in place of the closed one on
/// `fd` (saved addresses `local` and `peer`; `unread`: bytes it had received and the program
/// had not read). The first fd a hook returns wins.
pub fn reconnect(fd: i32, local: &[u8], peer: &[u8], unread: usize) -> Option<i32> {
    for slot in &RECONNECT[..LOADED.load(Ordering::Acquire)] {
        let p = slot.load(Ordering::Relaxed);
        if p.is_null() {
            continue;
        }
        // SAFETY: `p` is the address dlsym gave for `ckpt_plugin_reconnect`, whose contract
        // (docs/plugins.md) is `ReconnectFn`; the slices outlive the call.
        let r = unsafe {
            let f: ReconnectFn = std::mem::transmute(p);
            f(
                fd,
                local.as_ptr().cast(),
                local.len() as libc::socklen_t,
                peer.as_ptr().cast(),
                peer.len() as libc::socklen_t,
                unread,
            )
        };
        if r >= 0 {
            return Some(r);
        }
    }
    None
}

/// The plugin entry that loads the libraries at startup.
#[derive(Default)]
pub struct External;

impl Plugin for External {
    fn name(&self) -> &'static str {
        "external"
    }

    fn init(&mut self) {
        load();
    }

    fn checkpoint(&mut self, _ctx: &mut CkptContext) -> Result<(), String> {
        Ok(())
    }

    fn restart(&mut self, _ctx: &mut RestartContext) -> Result<(), String> {
        Ok(())
    }
}
