//! The event loop: one mio `Poll`, a slab of connections, timers.
//!
//! The reactor moves bytes and applies the decisions that involve more than
//! one connection: routing a parsed request to a section, pairing a client
//! with an idle backend (or queueing it), returning a backend to its pool,
//! redeploying, timeouts. Everything about bytes on the wire is in `proto`;
//! everything about one connection's buffers is in `client.rs`/`backend.rs`.
//!
//! Sockets are registered once, edge-triggered, for reading and writing; each
//! connection remembers whether it is readable/writable until an operation
//! answers `WouldBlock`. No locks, no reference counting: connections name
//! each other by slab key, and every cross-reference is removed when either
//! side closes.
//!
//! One request's path through the files here:
//! `listener.rs` accepts → `requests.rs` reads the head into the client's
//! pooled buffers (`client.rs`), `proto::request` parses it, `router` picks
//! the section → `exchange.rs` asks `dispatch` for an idle backend
//! (`backend.rs`) or queues it, then pumps the request to the backend and
//! the response back (`proto::response`, `outq.rs` for `writev`) → the backend
//! returns to its pool and the client goes on to its next request or idles
//! without a buffer. `timer.rs` holds every connection's deadline.
//!
//! A process runs one reactor per worker (`workers: N`), each on its own
//! thread with its own connections, pools and counters; they share nothing
//! on the data path. `workers.rs` binds the sockets and starts them;
//! `balance.rs` decides which worker takes a new backend connection.

mod backend;
mod balance;
mod buffer;
mod client;
mod control;
mod exchange;
mod filesend;
mod listener;
mod metrics;
mod outq;
mod reload;
mod requests;
mod signals;
mod splice;
mod spool;
mod tally;
mod timer;
mod workers;

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::dispatch::Dispatch;
use crate::pace::PaceRule;
use crate::router::Router;
use crate::section::Section;
use crate::status::StatusClasses;
use backend::{BackendConn, BackendState};
use balance::BackendSlot;
use client::{ClientConn, IoPool};
use control::Command;
use spool::Spool;
use timer::Timers;

pub use listener::BindError;
use listener::{Admission, Listener, ListenerKind};
pub use workers::{current_worker, Bound, Ended, WorkerExit, Workers};

/// Listener tokens live above every slab key.
const LISTENER_BASE: usize = usize::MAX / 2;
/// The supervisor has commands (`control.rs`), or another worker (or this
/// one) asks for a look at the backend listeners (`balance.rs`).
const WAKE_TOKEN: usize = usize::MAX;
/// How long a closing client may take to stop sending, after an error.
const LINGER: Duration = Duration::from_secs(2);
/// Reads of discarded input per turn while lingering (others go first).
const LINGER_READS: usize = 16;
/// Pause before retrying `accept` after running out of descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Steps taken for one connection per wake-up before others get a turn; a
/// connection that still has work is driven again after the next poll.
const STEP_BUDGET: usize = 64;

/// Counters shown by the health check (and logs).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub requests: u64,
    pub status_400: u64,
    pub status_404: u64,
    pub status_503: u64,
    pub status_502: u64,
    pub status_504: u64,
    pub backends_joined: u64,
    pub backends_left: u64,
    pub handshakes_refused: u64,
    pub redeploys: u64,
    pub static_files: u64,
    pub reloads: u64,
}

/// The limits and timeouts the data path consults, copied out of `Config`.
struct Limits {
    header_timeout: Duration,
    keepalive_timeout: Duration,
    backend_timeout: Duration,
    handshake_timeout: Duration,
    max_header_bytes: usize,
    max_body_bytes: Option<u64>,
    /// `request_buffer`: bodies read whole before a backend is taken.
    request_buffer: usize,
    /// `min_body_rate`, its grace and `body_timeout`.
    body_pace: PaceRule,
    /// `max_connections`: open client connections at which this worker
    /// stops accepting (`listener.rs`).
    max_connections: Option<usize>,
    health_uri: String,
    /// `status_uri`: metrics and the status page (`metrics.rs`).
    status_uri: Option<String>,
}

impl Limits {
    fn of(cfg: &Config) -> Limits {
        Limits {
            header_timeout: cfg.header_timeout,
            keepalive_timeout: cfg.keepalive_timeout,
            backend_timeout: cfg.backend_timeout,
            handshake_timeout: cfg.handshake_timeout,
            max_header_bytes: cfg.max_header_bytes,
            max_body_bytes: cfg.max_body_bytes,
            request_buffer: cfg.request_buffer,
            body_pace: PaceRule {
                min_rate: cfg.min_body_rate,
                grace: cfg.min_body_rate_grace,
                timeout: cfg.body_timeout,
            },
            max_connections: cfg.max_connections,
            health_uri: cfg.health_check_uri.clone(),
            status_uri: cfg.status_uri.clone(),
        }
    }
}

/// The size of every pooled buffer: a whole request head, and a whole
/// request that may have to be replayed to another backend.
fn buffer_size(cfg: &Config) -> usize {
    let largest_replay = cfg
        .sections
        .iter()
        .filter(|s| s.redeployable)
        .map(|s| s.redeployment_sizelimit)
        .max()
        .unwrap_or(0);
    // A body of `request_buffer` bytes fits beside a head of 8 KiB.
    16384
        .max(cfg.max_header_bytes)
        .max(largest_replay)
        .max(cfg.request_buffer + 8192)
}

enum Conn {
    Client(ClientConn),
    Backend(BackendConn),
}

struct Entry {
    /// Tells apart successive connections that reuse one slab key.
    gen: u64,
    conn: Conn,
    /// A backend connection's place in its worker's count, with several
    /// workers (`balance.rs`); dropped with the entry.
    _backend_share: Option<BackendSlot>,
}

/// What one step of a client's state machine leads to.
enum Step {
    /// State changed: take another step.
    Again,
    /// Nothing to do until an event or a timer.
    Wait,
    /// The client connection is closed.
    Gone,
}

/// How a paired exchange went this round (decided while both connections
/// are borrowed; acted on afterwards).
enum Pump {
    /// Bytes moved. `backend_side`: to or from the backend, or to the client
    /// (what `backend_timeout` watches); client read-ahead alone does not
    /// keep a silent backend alive.
    /// `paced`: a body is still awaited, or was: the exchange's timer
    /// follows the body's pace (`arm_exchange_timer`).
    Progress {
        backend_side: bool,
        paced: bool,
    },
    Wait {
        paced: bool,
    },
    Finished,
    ClientGone,
    BackendFailed(String),
    BadRequest(u16, &'static str),
}

pub struct Reactor {
    /// Large bodies go backend → pipe → client (splice.rs) until the kernel
    /// says it cannot.
    splice: bool,
    poll: Poll,
    conns: Slab<Entry>,
    next_gen: u64,
    listeners: Vec<Listener>,
    /// The config's sections, in order (what `router` names), then the
    /// sections a reload removed while some of their connections were
    /// still busy (`reload.rs`).
    sections: Vec<Section>,
    /// How many of `sections` are the config's.
    live_sections: usize,
    /// Each section's idle backends and waiting requests (same indices as
    /// `sections`), and the decisions that pair them.
    dispatch: Dispatch,
    router: Router,
    limits: Limits,
    pool: IoPool,
    timers: Timers,
    /// Clients to drive after the current event (a backend became free).
    pending: Vec<usize>,
    /// Clients that used up their step budget; driven after the next poll.
    deferred: Vec<usize>,
    /// The list being worked through (kept to reuse its allocation).
    deferring: Vec<usize>,
    accept_retry: Option<Instant>,
    /// Whether client listeners are accepted from (`max_connections`, out
    /// of descriptors), and what was logged about it.
    admission: Admission,
    now: Instant,
    /// This reactor's index among the process's workers (0 with one).
    worker: usize,
    /// Open client connections (for the graceful stop and the metrics).
    open_clients: usize,
    /// Commands from the supervisor; `None` for a reactor run on its own.
    commands: Option<Receiver<Command>>,
    /// A graceful stop is under way; the loop ends at this deadline.
    stopping: Option<Instant>,
    /// `access_log`: one line per request, written once per loop turn.
    access_log: Option<AccessLog>,
    /// The `access_log` setting it was opened from.
    access_log_spec: Option<String>,
    /// Responses given before a section was chosen (`tally.rs`).
    unrouted: StatusClasses,
    /// Bytes read from / written to clients, for finished requests.
    bytes_in: u64,
    bytes_out: u64,
    /// Open backend connections (any state).
    open_backends: usize,
    /// How many workers the process runs (for the status page).
    workers: usize,
    /// With several workers and `status_uri`: where each worker publishes
    /// its figures for the others' status pages, and when next.
    board: Option<Arc<metrics::Board>>,
    next_publish: Option<Instant>,
    /// This worker's own counters (each worker answers the health check
    /// with its own).
    pub stats: Stats,
}

impl Reactor {
    /// Opens every listener of `cfg` for one reactor, on the calling thread
    /// (whatever `cfg.workers` says; `Workers::start` runs several). Nothing
    /// is accepted until `run`.
    pub fn bind(cfg: &Config) -> Result<Reactor, Box<dyn std::error::Error>> {
        let listeners = workers::bind_one(cfg)?;
        Reactor::assemble(cfg, Poll::new()?, listeners, 0)
    }

    /// A reactor around listeners that are already bound: registers them
    /// with `poll` and sets up the sections and pools. `worker` places it
    /// among several workers (`workers.rs`).
    fn assemble(
        cfg: &Config,
        poll: Poll,
        mut listeners: Vec<Listener>,
        worker: usize,
    ) -> Result<Reactor, Box<dyn std::error::Error>> {
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(&mut l.sock, Token(LISTENER_BASE + i), Interest::READABLE)?;
        }
        Ok(Reactor {
            poll,
            conns: Slab::with_capacity(1024),
            next_gen: 0,
            listeners,
            live_sections: cfg.sections.len(),
            dispatch: Dispatch::new(cfg.sections.len(), cfg.timeout),
            router: Router::new(&cfg.sections),
            sections: cfg
                .sections
                .iter()
                .cloned()
                .map(Section::new)
                .collect::<Result<_, _>>()?,
            limits: Limits::of(cfg),
            pool: IoPool::new(
                buffer_size(cfg),
                4096,
                Spool::new(
                    cfg.request_spool_directory.as_deref(),
                    cfg.request_spool_limit,
                ),
            ),
            timers: Timers::default(),
            pending: Vec::new(),
            deferred: Vec::new(),
            deferring: Vec::new(),
            accept_retry: None,
            admission: Admission::default(),
            splice: cfg.splice,
            now: Instant::now(),
            worker,
            open_clients: 0,
            commands: None,
            stopping: None,
            access_log: cfg.access_log.as_deref().map(AccessLog::open).transpose()?,
            access_log_spec: cfg.access_log.clone(),
            unrouted: StatusClasses::default(),
            bytes_in: 0,
            bytes_out: 0,
            open_backends: 0,
            workers: cfg.workers.max(1),
            board: None,
            next_publish: None,
            stats: Stats::default(),
        })
    }

    /// Addresses clients connect to, in config order.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter(|l| matches!(l.kind, ListenerKind::Client))
            .map(|l| l.addr)
            .collect()
    }

    /// (section index, address) for every backend listener, in config order.
    pub fn backend_addrs(&self) -> Vec<(usize, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|l| match l.kind {
                ListenerKind::Backend { section } => Some((section, l.addr)),
                ListenerKind::Client => None,
            })
            .collect()
    }

    /// Runs the event loop until an unrecoverable poll error.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            if self.stop_done() {
                return Ok(());
            }
            if let Some(log) = self.access_log.as_mut() {
                log.flush();
            }
            self.publish_if_due();
            let wake = [
                self.timers.next_wake(),
                self.dispatch.next_deadline(),
                self.accept_retry,
                self.stopping,
                self.next_publish,
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = if self.deferred.is_empty() {
                wake.map(|t| t.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = Instant::now();
            // Before any event can free a backend: a request whose deadline
            // has come gets its 503, not that backend.
            self.expire_waiting();
            for event in events.iter() {
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                let hup = event.is_read_closed() || event.is_error();
                self.on_event(event.token().0, readable, writable, hup);
                self.run_pending();
            }
            std::mem::swap(&mut self.deferred, &mut self.deferring);
            while let Some(c) = self.deferring.pop() {
                self.drive_client(c);
                self.run_pending();
            }
            self.fire_timers();
            self.run_pending();
            if self.accept_retry.is_some_and(|t| t <= self.now) {
                self.accept_retry = None;
                for i in 0..self.listeners.len() {
                    if std::mem::take(&mut self.listeners[i].paused) {
                        self.accept(i);
                    }
                }
            }
            // After every close of this turn, never from `close_client`
            // itself: a slab key must not be reused while its closer may
            // still look it up.
            self.resume_clients_if_room();
        }
    }

    fn on_event(&mut self, token: usize, readable: bool, writable: bool, hup: bool) {
        if token == WAKE_TOKEN {
            self.take_commands();
            self.retry_backend_accepts();
            return;
        }
        if token >= LISTENER_BASE {
            self.accept(token - LISTENER_BASE);
            return;
        }
        match self.conns.get_mut(token).map(|e| &mut e.conn) {
            Some(Conn::Client(c)) => {
                c.readable |= readable;
                c.writable |= writable;
                c.hup |= hup;
                self.drive_client(token);
            }
            Some(Conn::Backend(b)) => {
                b.readable |= readable;
                b.writable |= writable;
                b.hup |= hup;
                match b.state {
                    BackendState::Busy { client } => self.drive_client(client),
                    _ => self.drive_backend(token),
                }
            }
            None => {}
        }
    }

    fn run_pending(&mut self) {
        while let Some(c) = self.pending.pop() {
            self.drive_client(c);
        }
    }

    fn set_deadline(&mut self, key: usize, after: Duration) {
        let at = self.now + after;
        if let Some(e) = self.conns.get_mut(key) {
            let gen = e.gen;
            match &mut e.conn {
                Conn::Client(c) => self.timers.set(&mut c.timer, key, gen, at),
                Conn::Backend(b) => self.timers.set(&mut b.timer, key, gen, at),
            }
        }
    }

    fn set_deadline_at(&mut self, key: usize, at: Instant) {
        if let Some(e) = self.conns.get_mut(key) {
            let gen = e.gen;
            match &mut e.conn {
                Conn::Client(c) => self.timers.set(&mut c.timer, key, gen, at),
                Conn::Backend(b) => self.timers.set(&mut b.timer, key, gen, at),
            }
        }
    }

    fn clear_deadline(&mut self, key: usize) {
        match self.conns.get_mut(key).map(|e| &mut e.conn) {
            Some(Conn::Client(c)) => c.timer.deadline = None,
            Some(Conn::Backend(b)) => b.timer.deadline = None,
            None => {}
        }
    }

    fn fire_timers(&mut self) {
        while let Some((key, gen, armed)) = self.timers.pop_due(self.now) {
            let Some(e) = self.conns.get_mut(key) else {
                continue;
            };
            if e.gen != gen {
                continue;
            }
            let slot = match &mut e.conn {
                Conn::Client(c) => &mut c.timer,
                Conn::Backend(b) => &mut b.timer,
            };
            if !self.timers.check(slot, key, gen, armed, self.now) {
                continue;
            }
            match &e.conn {
                Conn::Client(_) => self.client_timeout(key),
                Conn::Backend(b) => {
                    if let BackendState::Handshake { .. } = b.state {
                        self.stats.handshakes_refused += 1;
                        if let Some(s) = self.sections.get_mut(b.section) {
                            s.stats.handshakes_refused += 1;
                        }
                        info!(
                            "refused a backend handshake from {} for section {}: not complete within handshake_timeout",
                            b.peer, self.sections[b.section].name
                        );
                        self.close_backend(key, None);
                    }
                }
            }
        }
    }
}

fn client_in(conns: &mut Slab<Entry>, c: usize) -> Option<&mut ClientConn> {
    match conns.get_mut(c).map(|e| &mut e.conn) {
        Some(Conn::Client(cl)) => Some(cl),
        _ => None,
    }
}

fn backend_in(conns: &mut Slab<Entry>, b: usize) -> Option<&mut BackendConn> {
    match conns.get_mut(b).map(|e| &mut e.conn) {
        Some(Conn::Backend(be)) => Some(be),
        _ => None,
    }
}
