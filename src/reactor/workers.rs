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
//!
//! The thread that started the workers supervises them (`Workers::wait`):
//! signals arrive there only (`signals.rs`) and become commands to every
//! worker (`control.rs`), each sent on the worker's channel with a wake-up
//! of its poll. A reload is prepared here, where it can still fail as a
//! whole: the file is parsed, the sections' directories opened and the new
//! listeners bound before any worker sees it.

use std::cell::Cell;
use std::error::Error;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::{Poll, Token, Waker};

use super::balance::BackendShare;
use super::control::{Command, ReloadPlan};
use super::listener::{listen, BindError, Listener, ListenerKind};
use super::metrics::Board;
use super::signals;
use super::{Reactor, WAKE_TOKEN};
use crate::config::Config;
use crate::section::Section;

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The worker the calling thread runs, when the process has more than one
/// (for log lines); `None` otherwise.
pub fn current_worker() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// Every socket of a config, bound, with no thread started yet (so the
/// process may still fork to become a daemon, and drop its privileges,
/// between `Workers::bind` and `Bound::start`).
pub struct Bound {
    cfg: Config,
    per_worker: Vec<Vec<Listener>>,
    doors: Vec<Door>,
}

/// Listeners, one list per worker.
type PerWorker = Vec<Vec<Listener>>;

/// A reload ready to hand to the workers.
struct Prepared {
    cfg: Config,
    /// New listeners, one list per worker.
    added: PerWorker,
    /// The new sections, one set per worker (their directories opened).
    sections: Vec<Vec<Section>>,
    /// The listeners that stay, by bound address, with their new role.
    keep: Vec<(SocketAddr, Option<usize>)>,
}

/// One listening address of the running config, as the supervising thread
/// remembers it to tell, on a reload, which listeners stay.
#[derive(Clone, Debug)]
struct Door {
    /// As configured (port 0 stays 0).
    configured: SocketAddr,
    /// As bound (the port the kernel chose, for port 0).
    bound: SocketAddr,
    /// `Some(section)` for a backend listener.
    backend: Option<usize>,
}

/// The running workers of this process, and the thread that supervises
/// them: it turns signals into commands (`control.rs`) and reports how the
/// process should end.
pub struct Workers {
    count: usize,
    cfg: Config,
    doors: Vec<Door>,
    events: Receiver<Event>,
    commands: Vec<Sender<Command>>,
    wakers: Arc<[Waker]>,
}

/// What the supervising thread waits for.
enum Event {
    Signal(libc::c_int),
    Exit(WorkerExit),
}

/// Why a worker stopped.
#[derive(Debug)]
pub struct WorkerExit {
    /// The worker's index; `None` when the process has only one.
    pub worker: Option<usize>,
    /// It finished a graceful stop (rather than failed).
    pub clean: bool,
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

/// How the process ends (`Workers::wait`).
#[derive(Debug)]
pub enum Ended {
    /// SIGTERM/SIGINT: every request in flight finished (or
    /// `shutdown_timeout` passed); exit 0.
    Stopped,
    /// A second SIGTERM/SIGINT during a graceful stop; exit 0 at once.
    StoppedNow,
    /// A worker failed; the process must exit non-zero.
    Failed(WorkerExit),
}

impl Workers {
    /// Binds every listener of `cfg` and starts `cfg.workers` reactors.
    pub fn start(cfg: &Config) -> Result<Workers, Box<dyn Error>> {
        Workers::bind(cfg)?.start()
    }

    /// Binds every listener of `cfg` for `cfg.workers` reactors; starts
    /// nothing (see `Bound`).
    pub fn bind(cfg: &Config) -> Result<Bound, Box<dyn Error>> {
        super::metrics::process_start();
        let count = cfg.workers.max(1);
        let (per_worker, doors) = bind_listeners(cfg, count, &[])?;
        Ok(Bound {
            cfg: cfg.clone(),
            per_worker,
            doors,
        })
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Addresses clients connect to, in config order (the same for every
    /// worker).
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        client_addrs(&self.doors)
    }

    /// (section index, address) for every backend listener, in config order.
    pub fn backend_addrs(&self) -> Vec<(usize, SocketAddr)> {
        backend_addrs(&self.doors)
    }

    /// Supervises the workers until the process should end: SIGHUP
    /// reloads `config` (the file the process started with; without one
    /// there is nothing to reload), SIGUSR1 reopens the access logs,
    /// SIGTERM/SIGINT stop gracefully and a second one at once.
    pub fn wait(mut self, config: Option<&Path>) -> Ended {
        let mut stopping: Option<(Instant, usize)> = None;
        loop {
            // A stop waits for the workers' own deadline, plus a margin for
            // closing what is left.
            let event = match stopping {
                Some((deadline, _)) => {
                    let margin = deadline + Duration::from_secs(2);
                    match self
                        .events
                        .recv_timeout(margin.saturating_duration_since(Instant::now()))
                    {
                        Ok(e) => e,
                        Err(RecvTimeoutError::Timeout) => {
                            warn!("workers did not stop within shutdown_timeout; stopping at once");
                            return Ended::StoppedNow;
                        }
                        Err(RecvTimeoutError::Disconnected) => return Ended::Stopped,
                    }
                }
                None => match self.events.recv() {
                    Ok(e) => e,
                    Err(_) => {
                        return Ended::Failed(WorkerExit {
                            worker: None,
                            clean: false,
                            why: "every worker stopped".into(),
                        })
                    }
                },
            };
            match event {
                Event::Signal(libc::SIGHUP) => match (config, stopping) {
                    (_, Some(_)) => warn!("SIGHUP: ignored, the proxy is stopping"),
                    (Some(path), None) => self.reload(path),
                    (None, None) => warn!(
                        "SIGHUP: running on the built-in default config, there is no file to reload"
                    ),
                },
                Event::Signal(libc::SIGUSR1) => {
                    info!("SIGUSR1: reopening the access log");
                    self.send_all(|| Command::ReopenLog);
                }
                Event::Signal(sig) => {
                    let name = if sig == libc::SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    };
                    if stopping.is_some() {
                        warn!("{name} again: stopping at once");
                        return Ended::StoppedNow;
                    }
                    let timeout = self.cfg.shutdown_timeout;
                    let deadline = Instant::now() + timeout;
                    stopping = Some((deadline, 0));
                    self.send_all(|| Command::Stop { deadline });
                    info!(
                        "{name}: stopping; no new connections, requests in flight have {}s to finish",
                        timeout.as_secs()
                    );
                }
                Event::Exit(exit) => match &mut stopping {
                    Some((_, stopped)) if exit.clean => {
                        *stopped += 1;
                        if *stopped == self.count {
                            return Ended::Stopped;
                        }
                    }
                    _ => return Ended::Failed(exit),
                },
            }
        }
    }

    /// Sends a command to every worker and wakes it.
    fn send_all(&self, mut command: impl FnMut() -> Command) {
        for (w, tx) in self.commands.iter().enumerate() {
            if tx.send(command()).is_ok() {
                if let Err(e) = self.wakers[w].wake() {
                    warn!("could not wake worker {w}: {e}");
                }
            }
        }
    }

    /// SIGHUP: loads the config again and, when it is valid and its new
    /// listeners can be bound, hands it to every worker (`reload.rs` says
    /// what changes in place). Otherwise logs why and keeps the old one.
    fn reload(&mut self, path: &Path) {
        match self.prepare_reload(path) {
            Ok(Prepared {
                cfg,
                added,
                sections,
                keep,
            }) => {
                let cfg = Arc::new(cfg);
                let mut per_worker = added.into_iter().zip(sections);
                let (applied, acks) = mpsc::channel();
                self.send_all(|| {
                    let (added, sections) = per_worker.next().unwrap_or_default();
                    Command::Reload(Box::new(ReloadPlan {
                        cfg: cfg.clone(),
                        keep: keep.clone(),
                        added,
                        sections,
                        applied: applied.clone(),
                    }))
                });
                drop(applied);
                // "Reloaded" means every worker runs on the new config.
                let deadline = Instant::now() + RELOAD_WAIT;
                let mut done = 0;
                while done < self.count {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match acks.recv_timeout(left) {
                        Ok(()) => done += 1,
                        Err(_) => break,
                    }
                }
                RELOADS.fetch_add(1, Ordering::Relaxed);
                if done < self.count {
                    warn!(
                        "SIGHUP: {} of {} workers took the new config within {}s; the others will when they next wake",
                        done,
                        self.count,
                        RELOAD_WAIT.as_secs()
                    );
                }
                info!("SIGHUP: reloaded {}", path.display());
            }
            Err(e) => {
                RELOAD_FAILURES.fetch_add(1, Ordering::Relaxed);
                error!("SIGHUP: {e}; still running on the config loaded before");
            }
        }
    }

    /// Everything of a reload that can fail, done before any worker sees
    /// it: the new config, its sections' directories, its new listeners.
    fn prepare_reload(&mut self, path: &Path) -> Result<Prepared, String> {
        let mut cfg = Config::load(path).map_err(|e| e.to_string())?;
        keep_restart_only(&self.cfg, &mut cfg);
        // Built here, one set for each worker, so that nothing of a
        // reload can fail in a worker once it is decided.
        let sections = (0..self.count)
            .map(|_| {
                cfg.sections
                    .iter()
                    .map(|s| Section::new(s.clone()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (mut added, doors) =
            bind_listeners(&cfg, self.count, &self.doors).map_err(|e| e.to_string())?;
        share_backend_listeners(&mut added, &self.wakers);
        // The listeners every worker keeps, with their (new) role.
        let keep = doors
            .iter()
            .filter(|d| self.doors.iter().any(|o| o.bound == d.bound))
            .map(|d| (d.bound, d.backend))
            .collect();
        self.cfg = cfg.clone();
        self.doors = doors;
        Ok(Prepared {
            cfg,
            added,
            sections,
            keep,
        })
    }
}

/// Settings that only a restart can change (they shape the process, not
/// its traffic): a reload keeps the running values and says so.
fn keep_restart_only(old: &Config, new: &mut Config) {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($field:ident),*) => {$(
            if old.$field != new.$field {
                kept.push(stringify!($field));
                new.$field = old.$field.clone();
            }
        )*};
    }
    keep!(
        workers,
        cpu_affinity,
        reuseport,
        pidfile,
        user,
        group,
        ssl,
        log_level
    );
    // The process is detached or not already (`-d` may have said so rather
    // than the file): there is nothing to warn about.
    new.daemonize = old.daemonize;
    for name in kept {
        warn!("SIGHUP: `{name}` changed; it takes effect only when the proxy is restarted");
    }
}

impl Bound {
    /// Addresses clients connect to, in config order.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        client_addrs(&self.doors)
    }

    /// (section index, address) for every backend listener, in config order.
    pub fn backend_addrs(&self) -> Vec<(usize, SocketAddr)> {
        backend_addrs(&self.doors)
    }

    /// Starts the workers, each on its own thread, and the thread that
    /// receives signals; returns once every worker is ready to accept
    /// (connections that arrive meanwhile wait in the kernel's backlog).
    pub fn start(self) -> Result<Workers, Box<dyn Error>> {
        let count = self.per_worker.len();
        let polls = (0..count)
            .map(|_| Poll::new())
            .collect::<io::Result<Vec<_>>>()?;
        let wakers: Arc<[Waker]> = polls
            .iter()
            .map(|p| Waker::new(p.registry(), Token(WAKE_TOKEN)))
            .collect::<io::Result<Vec<_>>>()?
            .into();
        let mut per_worker = self.per_worker;
        share_backend_listeners(&mut per_worker, &wakers);
        let cpus = if self.cfg.cpu_affinity {
            cpus_for(count)
        } else {
            None
        };

        let board = (count > 1).then(|| Arc::new(Board::new(count)));
        let (events_tx, events) = mpsc::channel();
        signals::start(events_tx.clone(), Event::Signal)?;
        let cfg = Arc::new(self.cfg.clone());
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut commands = Vec::with_capacity(count);
        for (i, (poll, listeners)) in polls.into_iter().zip(per_worker).enumerate() {
            let (command_tx, command_rx) = mpsc::channel();
            commands.push(command_tx);
            let start = WorkerStart {
                worker: i,
                tag: (count > 1).then_some(i),
                cpu: cpus.as_ref().map(|c| c[i % c.len()]),
                cfg: cfg.clone(),
                poll,
                listeners,
                commands: command_rx,
                board: board.clone(),
            };
            let (ready, exit) = (ready_tx.clone(), events_tx.clone());
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
            cfg: self.cfg,
            doors: self.doors,
            events,
            commands,
            wakers,
        })
    }
}

/// How long the supervisor waits for every worker to take a reload before
/// it reports it done.
const RELOAD_WAIT: Duration = Duration::from_secs(5);

/// Reloads that succeeded, and those that failed (the config was invalid
/// or a listener could not be bound), for the metrics.
pub(super) static RELOADS: AtomicU64 = AtomicU64::new(0);
pub(super) static RELOAD_FAILURES: AtomicU64 = AtomicU64::new(0);

fn client_addrs(doors: &[Door]) -> Vec<SocketAddr> {
    doors
        .iter()
        .filter(|d| d.backend.is_none())
        .map(|d| d.bound)
        .collect()
}

fn backend_addrs(doors: &[Door]) -> Vec<(usize, SocketAddr)> {
    doors
        .iter()
        .filter_map(|d| d.backend.map(|s| (s, d.bound)))
        .collect()
}

/// With several workers, gives each backend listener (one socket,
/// duplicated into every worker) its shared counts (`balance.rs`).
fn share_backend_listeners(per_worker: &mut [Vec<Listener>], wakers: &Arc<[Waker]>) {
    if per_worker.len() < 2 {
        return;
    }
    let mut shares: Vec<(SocketAddr, Arc<BackendShare>)> = Vec::new();
    for list in per_worker.iter_mut() {
        for l in list.iter_mut() {
            if let ListenerKind::Backend { .. } = l.kind {
                let share = match shares.iter().find(|(a, _)| *a == l.addr) {
                    Some((_, s)) => s.clone(),
                    None => {
                        let s = Arc::new(BackendShare::new(wakers.clone()));
                        shares.push((l.addr, s.clone()));
                        s
                    }
                };
                l.share = Some(share);
            }
        }
    }
}

/// Binds the listeners of `workers` reactors for `cfg`, except those
/// already open in `running` (a reload keeps them): one list per worker,
/// client listeners first, then backend listeners, each in config order.
/// Also returns the doors of the whole config, kept ones included.
fn bind_listeners(
    cfg: &Config,
    workers: usize,
    running: &[Door],
) -> Result<(PerWorker, Vec<Door>), Box<dyn Error>> {
    let mut lists: Vec<Vec<Listener>> = (0..workers).map(|_| Vec::new()).collect();
    let mut doors = Vec::new();
    let mut taken = vec![false; running.len()];
    // A running listener is kept for the same configured address, or for
    // the address it got (a config that first said port 0, then the port).
    let mut reuse = |configured: SocketAddr, backend: bool| {
        let i = running.iter().enumerate().position(|(i, d)| {
            !taken[i]
                && (d.configured == configured || d.bound == configured)
                && d.backend.is_some() == backend
        })?;
        taken[i] = true;
        Some(running[i].bound)
    };
    // Several workers share each client port through SO_REUSEPORT, whether
    // or not other processes may join them.
    let share_clients = cfg.reuseport || workers > 1;
    for addr in cfg.client_addrs()? {
        if let Some(bound) = reuse(addr, false) {
            doors.push(Door {
                configured: addr,
                bound,
                backend: None,
            });
            continue;
        }
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
        doors.push(Door {
            configured: addr,
            bound: chosen,
            backend: None,
        });
    }
    for (section, s) in cfg.sections.iter().enumerate() {
        for &addr in &s.outgoing {
            if let Some(bound) = reuse(addr, true) {
                doors.push(Door {
                    configured: addr,
                    bound,
                    backend: Some(section),
                });
                continue;
            }
            let sock = listen(addr, cfg.reuseport).map_err(|error| BindError {
                addr,
                what: "backends",
                error,
            })?;
            let bound = sock.local_addr()?;
            for list in &mut lists[1..] {
                let copy = sock.try_clone()?;
                list.push(Listener::new(copy, ListenerKind::Backend { section })?);
            }
            lists[0].push(Listener::new(sock, ListenerKind::Backend { section })?);
            doors.push(Door {
                configured: addr,
                bound,
                backend: Some(section),
            });
        }
    }
    Ok((lists, doors))
}

/// The listeners of one reactor started on its own (`Reactor::bind`).
pub(super) fn bind_one(cfg: &Config) -> Result<Vec<Listener>, Box<dyn Error>> {
    Ok(bind_listeners(cfg, 1, &[])?.0.pop().unwrap_or_default())
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
    commands: Receiver<Command>,
    board: Option<Arc<Board>>,
}

impl WorkerStart {
    /// The worker thread: pin, build the reactor (on this thread, so its
    /// memory is first touched from its CPU), report ready, run.
    fn run(self, ready: Sender<Result<(), String>>, exit: Sender<Event>) {
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
        let built = Reactor::assemble(&self.cfg, self.poll, self.listeners, self.worker);
        let mut reactor = match built {
            Ok(r) => r,
            Err(e) => {
                // The start fails as a whole; no exit report.
                report.tx = None;
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        reactor.commands = Some(self.commands);
        if let Some(board) = self.board {
            reactor.join_board(board);
        }
        let _ = ready.send(Ok(()));
        drop(ready);
        match reactor.run() {
            Ok(()) => report.send(true, "stopped".into()),
            Err(e) => report.send(false, format!("event loop failed: {e}")),
        }
    }
}

/// Sends a worker's exit to `Workers::wait`, also when the worker panics.
struct ExitReport {
    worker: Option<usize>,
    tx: Option<Sender<Event>>,
}

impl ExitReport {
    fn send(&mut self, clean: bool, why: String) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Event::Exit(WorkerExit {
                worker: self.worker,
                clean,
                why,
            }));
        }
    }
}

impl Drop for ExitReport {
    fn drop(&mut self) {
        self.send(false, "panicked (the panic message is above)".into());
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
