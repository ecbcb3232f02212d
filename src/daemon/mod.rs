//! What turns a bound proxy into a system service: leaving the terminal
//! (`daemonize`), the pid file (`pidfile`) and dropping root (`user`,
//! `group`). Each runs between `Workers::bind` and `Bound::start`, while
//! the process still has one thread, in this order:
//!
//! 1. `detach()` (daemon mode only): fork twice; the original process waits
//!    for the daemon's report and exits with it.
//! 2. `PidFile::create` (with `pidfile`): after detaching, so the file names
//!    the daemon; before dropping root, so it may live in a directory only
//!    root can write.
//! 3. `drop_privileges` (with `user`/`group`): after every listener is bound
//!    (ports below 1024 need root) and before any thread exists.
//!
//! Then `Bound::start` starts the threads, and the daemon tells the waiting
//! process `Detached::ready` (or `Detached::failed` at any step before).
//!
//! - `detach.rs`: the double fork and the report pipe.
//! - `pidfile.rs`: writing the pid file atomically, refusing a live one,
//!   replacing a stale one, removing ours at exit.
//! - `privileges.rs`: resolving the user and group, `setgroups` → `setgid`
//!   → `setuid`, and checking the result.
//!
//! The working directory is kept (no `chdir("/")`): config paths such as
//! `docroot`, `sendfileroot`, `access_log` and `pidfile` are stored as
//! written and resolved against it, at start and again on a reload.

mod detach;
mod pidfile;
mod privileges;

pub use detach::{detach, Detached};
pub use pidfile::PidFile;
pub use privileges::drop_privileges;
