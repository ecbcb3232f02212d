//! Commands from the supervising thread (`workers.rs`) to a worker, and
//! the graceful stop.
//!
//! Commands come on a channel; the sender wakes the worker's poll with its
//! `Waker` (`WAKE_TOKEN`), and the worker takes every command waiting at
//! that wake-up. Between wake-ups the channel is never looked at, so the
//! data path pays nothing for it.
//!
//! A graceful stop (`Command::Stop`): the worker closes its listeners
//! (new connections are refused by the kernel, or go to another process
//! sharing the port), closes its idle keep-alive clients, and answers every
//! request already received with `Connection: close`. A connection that has
//! not sent its first request yet is left open (its client may be sending
//! it) until it does, or until `header_timeout`. Queued requests are
//! still served by the backends, which stay connected until then. The
//! worker's loop ends when its last client connection has closed, or at
//! the deadline (`shutdown_timeout`), when whatever is left is closed.

use std::net::SocketAddr;
use std::sync::mpsc::{Sender, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use log::{info, warn};

use super::listener::Listener;
use super::{Conn, Reactor};
use crate::access_log::{AccessLog, Termination};
use crate::config::Config;
use crate::section::Section;

pub(super) enum Command {
    Reload(Box<ReloadPlan>),
    Stop { deadline: Instant },
    ReopenLog,
}

/// A new config for one worker, prepared by the supervisor (`workers.rs`).
pub(super) struct ReloadPlan {
    pub(super) cfg: Arc<Config>,
    /// The worker's listeners that stay, by bound address, with their role
    /// in the new config (`Some(section)` for a backend listener).
    pub(super) keep: Vec<(SocketAddr, Option<usize>)>,
    /// Listeners bound for this worker for addresses new in the config.
    pub(super) added: Vec<Listener>,
    /// The config's sections, built for this worker.
    pub(super) sections: Vec<Section>,
    /// Told once the worker runs on the new config.
    pub(super) applied: Sender<()>,
}

impl Reactor {
    /// Takes every command waiting on the channel.
    pub(super) fn take_commands(&mut self) {
        loop {
            let Some(rx) = &self.commands else {
                return;
            };
            let command = match rx.try_recv() {
                Ok(c) => c,
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.commands = None;
                    return;
                }
            };
            match command {
                Command::Reload(plan) => self.reload(*plan),
                Command::Stop { deadline } => self.stop(deadline),
                Command::ReopenLog => self.reopen_access_log(),
            }
        }
    }

    /// Starts the graceful stop: no new connections, idle clients closed,
    /// requests in flight finish (see the module comment).
    fn stop(&mut self, deadline: Instant) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(deadline);
        for mut l in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut l.sock);
        }
        // Responses not begun yet will say `Connection: close`.
        for (_, e) in self.conns.iter_mut() {
            if let Conn::Client(cl) = &mut e.conn {
                if let Some(io) = cl.io.as_mut() {
                    if !io.ex.started {
                        if let Some(head) = io.ex.head.as_mut() {
                            head.keep_alive = false;
                            io.ex.close_after = true;
                        }
                    }
                }
            }
        }
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter_map(|(key, e)| match &e.conn {
                Conn::Client(c) if c.is_idle() && !c.fresh => Some(key),
                _ => None,
            })
            .collect();
        for c in idle {
            // A request may have arrived unread: look before closing.
            if let Some(Conn::Client(cl)) = self.conns.get_mut(c).map(|e| &mut e.conn) {
                cl.readable = true;
            }
            self.drive_client(c);
            self.run_pending();
            if matches!(self.conns.get(c).map(|e| &e.conn), Some(Conn::Client(cl)) if cl.is_idle())
            {
                self.close_client(c);
            }
        }
        info!(
            "stopping: {} client connections with requests in flight",
            self.open_clients
        );
    }

    /// During a stop: whether the loop is done (no client left, or the
    /// deadline passed; what is left is then closed with the reactor).
    pub(super) fn stop_done(&mut self) -> bool {
        let Some(deadline) = self.stopping else {
            return false;
        };
        if self.open_clients == 0 {
            if let Some(log) = self.access_log.as_mut() {
                log.flush();
            }
            info!("stopped: every request finished");
            return true;
        }
        if self.now >= deadline {
            let queued = self.dispatch.waiting_total();
            warn!(
                "shutdown_timeout passed: closing {} client connections ({queued} still queued)",
                self.open_clients
            );
            let clients: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, e)| matches!(e.conn, Conn::Client(_)))
                .map(|(k, _)| k)
                .collect();
            for c in clients {
                self.close_tally(c, Termination::Shutdown, false);
            }
            if let Some(log) = self.access_log.as_mut() {
                log.flush();
            }
            return true;
        }
        false
    }

    fn reopen_access_log(&mut self) {
        if let Some(log) = self.access_log.as_mut() {
            if let Err(e) = log.reopen() {
                warn!("SIGUSR1: {e}; still writing to the old file");
            }
        }
    }

    /// A reload changed `access_log`: open the new one (keeping the old one
    /// if it cannot be opened) or stop logging.
    pub(super) fn switch_access_log(&mut self, spec: Option<&str>, old: Option<&str>) {
        if spec == old {
            return;
        }
        match spec {
            None => self.access_log = None,
            Some(s) => match AccessLog::open(s) {
                Ok(log) => self.access_log = Some(log),
                Err(e) => warn!("reload: {e}; the access log stays as it was"),
            },
        }
    }
}
