//! Plugins of libckpt.so: one module per kind of kernel object, each with its save and restore
//! side by side, all built on [`api`]. The core (the `ckpt-preload` crate) calls [`all`] once at
//! startup and then runs every plugin's hooks in order at each checkpoint and restart.
//!
//! - [`files`]: regular files, directories, devices, and fds inherited from outside.
//! - [`timers`]: sleeps made invisible to checkpoints (EINTR retry with remaining time).

pub mod api;
pub mod files;
pub mod rawdir;
pub mod timers;

/// Every built-in plugin, in hook order.
pub fn all() -> Vec<Box<dyn api::Plugin>> {
    vec![Box::new(files::Files::default()), Box::new(timers::Timers)]
}
