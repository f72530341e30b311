//! Plugins of libckpt.so: one module per kind of kernel object, each with its save and restore
//! side by side, all built on [`api`]. The core (the `ckpt-preload` crate) calls [`all`] once at
//! startup and then runs every plugin's hooks in order at each checkpoint and restart.
//!
//! - [`files`]: regular files, directories, devices, and fds inherited from outside.
//! - [`pids`]: virtual pids (translation after a restart without pid namespaces).
//! - [`pipes`]: pipes the program made, with their buffered bytes.
//! - [`terminals`]: the terminal the computation runs in (attributes, window size,
//!   foreground group) and pty pairs the program made.
//! - [`sockets`]: sockets with the bytes in their receive queues (rebuilt by ckpt-restart).
//! - [`shm`]: shared memory mappings shared again between processes after restart.
//! - [`timerfd`]: timer fds with their clock, interval and remaining time.
//! - [`timers`]: sleeps made invisible to checkpoints (EINTR retry with remaining time).
//! - [`eintr`]: poll/select/epoll/semaphore/socket waits retried after a checkpoint.
//! - [`signals`]: the checkpoint signal kept out of the program's hands; itimers; pending
//!   process-directed signals.
//! - [`posix_timers`]: `timer_create` timers, including `SIGEV_THREAD`.

pub mod api;
pub mod eintr;
pub mod files;
pub mod pids;
pub mod pipes;
pub mod posix_timers;
pub mod rawdir;
pub mod shm;
pub mod signals;
pub mod sockets;
pub mod terminals;
pub mod timerfd;
pub mod timers;

/// Every built-in plugin, in hook order.
pub fn all() -> Vec<Box<dyn api::Plugin>> {
    vec![
        Box::new(files::Files::default()),
        Box::new(pipes::Pipes),
        Box::new(terminals::Terminals::default()),
        Box::new(sockets::Sockets::default()),
        Box::new(shm::Shm::default()),
        Box::new(timerfd::TimerFds::default()),
        Box::new(timers::Timers),
        Box::new(signals::P::default()),
        Box::new(posix_timers::P::default()),
        Box::new(eintr::P),
    ]
}
