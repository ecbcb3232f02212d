//! Per-core workers: `workers: N` runs N reactors in one process, each on
//! its own thread with its own poll, connections, pools and counters.
//!
//! Every socket is bound here, on the starting thread, before any worker
//! runs, so a bind error stops the start with the usual `BindError`
//! message and nothing half-started:
//! - clients: each worker has its own listener for every client address,
//!   all bound with SO_REUSEPORT, and the kernel spreads new client
//!   connections among them (by a hash of the connection's addresses). With
//!   port 0, the first worker's listener gets a free port and the others bind
//!   that same port.
//! - backends: ONE listener per `outgoing` address, duplicated into every
//!   worker; `balance.rs` decides which worker accepts each connection, so
//!   every worker gets its share of each section's backends.
//!
//! With `cpu_affinity: true`, worker i pins itself to the i-th CPU of the
//! set the process may run on (wrapping around when there are more workers
//! than CPUs); a CPU that cannot be used is a warning, not a failed start.
//!
//! A worker whose event loop fails (or that panics) is reported through
//! `Workers::wait`, and the process exits with it: a proxy that silently
//! serves only some of its connections would be worse than none.

use std::cell::Cell;
use std::error::Error;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;

use log::warn;
use mio::{Poll, Token, Waker};

use super::balance::BackendShare;
use super::listener::{listen, BindError, Listener, ListenerKind};
use super::{Reactor, WAKE_TOKEN};
use crate::config::Config;

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The worker the calling thread runs, when the process has more than one
/// (for log lines); `None` otherwise.
pub fn current_worker() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// The running workers of this process.
pub struct Workers {
    count: usize,
    client_addrs: Vec<SocketAddr>,
    backend_addrs: Vec<(usize, SocketAddr)>,
    exits: Receiver<WorkerExit>,
}

/// Why a worker stopped (its loop never ends otherwise).
#[derive(Debug)]
pub struct WorkerExit {
    /// The worker's index; `None` when the process has only one.
    pub worker: Option<usize>,
    pub why: String,
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.worker {
            Some(w) => write!(f, "worker {w}: {}", self.why),
            None => f.write_str(&self.why),
        }
    }
}

impl Workers {
    /// Binds every listener of `cfg`, starts `cfg.workers` reactors, each
    /// on its own thread, and returns once all of them are ready to accept
    /// (connections that arrive meanwhile wait in the kernel's backlog).
    pub fn start(cfg: &Config) -> Result<Workers, Box<dyn Error>> {
        let count = cfg.workers.max(1);
        let per_worker = bind_listeners(cfg, count)?;
        let client_addrs = per_worker[0]
            .iter()
            .filter(|l| matches!(l.kind, ListenerKind::Client))
            .map(|l| l.addr)
            .collect();
        let backend_addrs = per_worker[0]
            .iter()
            .filter_map(|l| match l.kind {
                ListenerKind::Backend { section } => Some((section, l.addr)),
                ListenerKind::Client => None,
            })
            .collect();
        let polls = (0..count)
            .map(|_| Poll::new())
            .collect::<io::Result<Vec<_>>>()?;
        let share = if count > 1 {
            let wakers = polls
                .iter()
                .map(|p| Waker::new(p.registry(), Token(WAKE_TOKEN)))
                .collect::<io::Result<Vec<_>>>()?;
            Some(Arc::new(BackendShare::new(cfg.sections.len(), wakers)))
        } else {
            None
        };
        let cpus = if cfg.cpu_affinity {
            cpus_for(count)
        } else {
            None
        };

        let cfg = Arc::new(cfg.clone());
        let (ready_tx, ready_rx) = mpsc::channel();
        let (exit_tx, exits) = mpsc::channel();
        for (i, (poll, listeners)) in polls.into_iter().zip(per_worker).enumerate() {
            let start = WorkerStart {
                worker: i,
                tag: (count > 1).then_some(i),
                cpu: cpus.as_ref().map(|c| c[i % c.len()]),
                cfg: cfg.clone(),
                poll,
                listeners,
                share: share.clone(),
            };
            let (ready, exit) = (ready_tx.clone(), exit_tx.clone());
            thread::Builder::new()
                .name(format!("swiftiply-w{i}"))
                .spawn(move || start.run(ready, exit))
                .map_err(|e| format!("cannot start worker {i}: {e}"))?;
        }
        drop(ready_tx);
        for _ in 0..count {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err("a worker stopped while starting (see above)".into()),
            }
        }
        Ok(Workers {
            count,
            client_addrs,
            backend_addrs,
            exits,
        })
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Addresses clients connect to, in config order (the same for every
    /// worker).
    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.client_addrs
    }

    /// (section index, address) for every backend listener, in config order.
    pub fn backend_addrs(&self) -> &[(usize, SocketAddr)] {
        &self.backend_addrs
    }

    /// Blocks until a worker stops, and says which and why. The caller
    /// should end the process: the others keep running until then.
    pub fn wait(self) -> WorkerExit {
        self.exits.recv().unwrap_or_else(|_| WorkerExit {
            worker: None,
            why: "every worker stopped".into(),
        })
    }
}

/// Binds the listeners of `workers` reactors: one list per worker, client
/// listeners first, then backend listeners, each in config order.
pub(super) fn bind_listeners(
    cfg: &Config,
    workers: usize,
) -> Result<Vec<Vec<Listener>>, Box<dyn Error>> {
    let mut lists: Vec<Vec<Listener>> = (0..workers).map(|_| Vec::new()).collect();
    // Several workers share each client port through SO_REUSEPORT, whether
    // or not other processes may join them.
    let share_clients = cfg.reuseport || workers > 1;
    for addr in cfg.client_addrs()? {
        let bind = |addr: SocketAddr| {
            listen(addr, share_clients).map_err(|error| BindError {
                addr,
                what: "clients",
                error,
            })
        };
        let first = bind(addr)?;
        // Port 0: the others take the port the first one got.
        let chosen = first.local_addr()?;
        lists[0].push(Listener::new(first, ListenerKind::Client)?);
        for list in &mut lists[1..] {
            list.push(Listener::new(bind(chosen)?, ListenerKind::Client)?);
        }
    }
    for (section, s) in cfg.sections.iter().enumerate() {
        for &addr in &s.outgoing {
            let sock = listen(addr, cfg.reuseport).map_err(|error| BindError {
                addr,
                what: "backends",
                error,
            })?;
            for list in &mut lists[1..] {
                let copy = sock.try_clone()?;
                list.push(Listener::new(copy, ListenerKind::Backend { section })?);
            }
            lists[0].push(Listener::new(sock, ListenerKind::Backend { section })?);
        }
    }
    Ok(lists)
}

/// What one worker thread needs to build and run its reactor.
struct WorkerStart {
    worker: usize,
    /// `Some(worker)` when the process has several (log lines say which).
    tag: Option<usize>,
    cpu: Option<usize>,
    cfg: Arc<Config>,
    poll: Poll,
    listeners: Vec<Listener>,
    share: Option<Arc<BackendShare>>,
}

impl WorkerStart {
    /// The worker thread: pin, build the reactor (on this thread, so its
    /// memory is first touched from its CPU), report ready, run.
    fn run(self, ready: Sender<Result<(), String>>, exit: Sender<WorkerExit>) {
        WORKER.with(|w| w.set(self.tag));
        let mut report = ExitReport {
            worker: self.tag,
            tx: Some(exit),
        };
        if let Some(cpu) = self.cpu {
            if let Err(e) = pin_to(cpu) {
                warn!(
                    "cpu_affinity: cannot pin worker {} to CPU {cpu}: {e}; it runs unpinned",
                    self.worker
                );
            }
        }
        let built = Reactor::assemble(
            &self.cfg,
            self.poll,
            self.listeners,
            self.worker,
            self.share,
        );
        let mut reactor = match built {
            Ok(r) => r,
            Err(e) => {
                // The start fails as a whole; no exit report.
                report.tx = None;
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        drop(ready);
        let why = match reactor.run() {
            Ok(()) => "its event loop stopped".to_string(),
            Err(e) => format!("event loop failed: {e}"),
        };
        report.send(why);
    }
}

/// Sends a worker's exit to `Workers::wait`, also when the worker panics.
struct ExitReport {
    worker: Option<usize>,
    tx: Option<Sender<WorkerExit>>,
}

impl ExitReport {
    fn send(&mut self, why: String) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(WorkerExit {
                worker: self.worker,
                why,
            });
        }
    }
}

impl Drop for ExitReport {
    fn drop(&mut self) {
        self.send("panicked (the panic message is above)".into());
    }
}

/// The CPUs `count` workers are pinned to, in order (worker i takes
/// `cpus[i % len]`); `None`, with a warning, when they cannot be known.
fn cpus_for(count: usize) -> Option<Vec<usize>> {
    match allowed_cpus() {
        Ok(cpus) if !cpus.is_empty() => {
            if count > cpus.len() {
                warn!(
                    "cpu_affinity: {count} workers but this process may run on only {} CPUs; \
                     some CPUs get two workers (use `workers: {}`)",
                    cpus.len(),
                    cpus.len()
                );
            }
            Some(cpus)
        }
        Ok(_) => {
            warn!("cpu_affinity: this process may run on no CPU it can name; workers run unpinned");
            None
        }
        Err(e) => {
            warn!("cpu_affinity: cannot read the CPUs this process may run on: {e}; workers run unpinned");
            None
        }
    }
}

#[cfg(target_os = "linux")]
fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; the size passed is its own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect())
    }
}

/// Pins the calling thread to `cpu`.
#[cfg(target_os = "linux")]
fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: as above; `cpu` < CPU_SETSIZE since it came from `allowed_cpus`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn allowed_cpus() -> io::Result<Vec<usize>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "CPU pinning is only supported on Linux",
    ))
}

#[cfg(not(target_os = "linux"))]
fn pin_to(_cpu: usize) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "CPU pinning is only supported on Linux",
    ))
}
