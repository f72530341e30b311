//! Plugins of libckpt.so: one module per kind of kernel object, each with its save and restore
//! side by side, all built on [`api`]. The core (the `ckpt-preload` crate) calls [`all`] once at
//! startup and then runs every plugin's hooks in order at each checkpoint and restart.
//!
//! - [`files`]: regular files, directories, devices, and fds inherited from outside.
//! - [`pids`]: virtual pids (translation after a restart without pid namespaces).
//! - [`pipes`]: pipes the program made, with their buffered bytes.
//! - [`terminals`]: the terminal the computation runs in (attributes, window size,
//!   foreground group) and pty pairs the program made.
//! - [`sockets`]: sockets with the bytes in their receive queues (rebuilt by ckpt-restart);
//!   [`accept_queue`] keeps connections not accepted yet, with their bytes;
//!   [`tcp_backlog`] takes out the bytes a TCP sender could not push (full window).
//! - [`shm`]: shared memory mappings shared again between processes after restart.
//! - [`sysv_ids`]: SysV shared memory ids kept valid across restarts (wrappers).
//! - [`timerfd`]: timer fds with their clock, interval and remaining time.
//! - [`eventfd`], [`signalfd`], [`inotify`], [`epoll`]: the other event fds (docs/event-fds.md);
//!   [`fdinfo`] holds their shared helpers.
//! - [`timers`]: sleeps made invisible to checkpoints (EINTR retry with remaining time).
//! - [`eintr`]: poll/select/epoll/semaphore/socket waits retried after a checkpoint.
//! - [`signals`]: the checkpoint signal kept out of the program's hands; itimers; pending
//!   process-directed signals.
//! - [`posix_timers`]: `timer_create` timers, including `SIGEV_THREAD`.
//! - [`external`]: plugin libraries loaded with `ckpt-launch --with-plugin` and their hooks.

pub mod accept_queue;
pub mod api;
pub mod eintr;
pub mod epoll;
pub mod eventfd;
pub mod external;
pub mod fdinfo;
pub mod files;
pub mod inotify;
pub mod pids;
pub mod pipes;
pub mod posix_timers;
pub mod rawdir;
pub mod shm;
pub mod signalfd;
pub mod signals;
pub mod sockets;
pub mod sysv_ids;
pub mod tcp_backlog;
pub mod terminals;
pub mod timerfd;
pub mod timers;

/// Every built-in plugin, in hook order.
pub fn all() -> Vec<Box<dyn api::Plugin>> {
    vec![
        // First: the libraries it loads may hook what the others restore.
        Box::new(external::External),
        Box::new(files::Files::default()),
        Box::new(pipes::Pipes),
        Box::new(terminals::Terminals::default()),
        Box::new(sockets::Sockets::default()),
        Box::new(shm::Shm::default()),
        Box::new(timerfd::TimerFds::default()),
        Box::new(eventfd::EventFds::default()),
        Box::new(signalfd::SignalFds::default()),
        Box::new(inotify::InotifyFds::default()),
        Box::new(timers::Timers),
        Box::new(signals::P::default()),
        Box::new(posix_timers::P::default()),
        Box::new(eintr::P),
        // Last: it registers target fds that every plugin above has put back.
        Box::new(epoll::EpollFds::default()),
    ]
}

/// Whether an fd belongs to one of the event-fd plugins (timerfd, eventfd, signalfd, inotify,
/// epoll), which save and recreate it: the files plugin leaves it alone.
pub fn is_event_fd(f: &ckpt_format::image::FdInfo) -> bool {
    timerfd::is_timerfd(f)
        || eventfd::is_eventfd(f)
        || signalfd::is_signalfd(f)
        || inotify::is_inotify(f)
        || epoll::is_epoll(f)
}
