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

mod backend;
mod buffer;
mod client;
mod outq;
mod timer;

use std::fmt;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::config::Config;
use crate::proto::body::{BodyError, BodyScanner};
use crate::proto::local;
use crate::proto::request::{self, RequestBody, RequestHead};
use crate::router::Router;
use crate::section::Section;
use backend::{BackendConn, BackendState, Unpaired};
use client::{ClientConn, ForwardError, IoPool, Phase, ReadOutcome, RespState};
use timer::Timers;

/// Listener tokens live above every slab key.
const LISTENER_BASE: usize = usize::MAX / 2;
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
}

/// The limits and timeouts the data path consults, copied out of `Config`.
struct Limits {
    timeout: Duration,
    header_timeout: Duration,
    keepalive_timeout: Duration,
    backend_timeout: Duration,
    handshake_timeout: Duration,
    max_header_bytes: usize,
    max_body_bytes: Option<u64>,
    health_uri: String,
}

enum ListenerKind {
    Client,
    Backend { section: usize },
}

struct Listener {
    sock: TcpListener,
    kind: ListenerKind,
    addr: SocketAddr,
    paused: bool,
}

enum Conn {
    Client(ClientConn),
    Backend(BackendConn),
}

struct Entry {
    /// Tells apart successive connections that reuse one slab key.
    gen: u64,
    conn: Conn,
}

/// A listener that could not be opened.
#[derive(Debug)]
pub struct BindError {
    pub addr: SocketAddr,
    pub what: &'static str,
    pub error: io::Error,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot listen on {} for {}: {}",
            self.addr, self.what, self.error
        )?;
        match self.error.kind() {
            io::ErrorKind::AddrInUse => write!(
                f,
                " (is another swiftiply or another server already using that port?)"
            ),
            io::ErrorKind::PermissionDenied => {
                write!(f, " (ports below 1024 need root or CAP_NET_BIND_SERVICE)")
            }
            io::ErrorKind::AddrNotAvailable => {
                write!(f, " (that address is not one of this machine's)")
            }
            _ => Ok(()),
        }
    }
}

impl std::error::Error for BindError {}

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
    Progress {
        backend_side: bool,
    },
    Wait,
    Finished,
    ClientGone,
    BackendFailed(String),
    BadRequest(u16, &'static str),
}

pub struct Reactor {
    poll: Poll,
    conns: Slab<Entry>,
    next_gen: u64,
    listeners: Vec<Listener>,
    sections: Vec<Section>,
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
    now: Instant,
    pub stats: Stats,
}

impl Reactor {
    /// Opens every listener of `cfg`. Nothing is accepted until `run`.
    pub fn bind(cfg: &Config) -> Result<Reactor, Box<dyn std::error::Error>> {
        let poll = Poll::new()?;
        let mut listeners = Vec::new();
        for addr in cfg.client_addrs()? {
            let sock = TcpListener::bind(addr).map_err(|error| BindError {
                addr,
                what: "clients",
                error,
            })?;
            listeners.push(Listener {
                addr: sock.local_addr()?,
                sock,
                kind: ListenerKind::Client,
                paused: false,
            });
        }
        for (i, s) in cfg.sections.iter().enumerate() {
            for &addr in &s.outgoing {
                let sock = TcpListener::bind(addr).map_err(|error| BindError {
                    addr,
                    what: "backends",
                    error,
                })?;
                listeners.push(Listener {
                    addr: sock.local_addr()?,
                    sock,
                    kind: ListenerKind::Backend { section: i },
                    paused: false,
                });
            }
        }
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(&mut l.sock, Token(LISTENER_BASE + i), Interest::READABLE)?;
        }
        let largest_replay = cfg
            .sections
            .iter()
            .filter(|s| s.redeployable)
            .map(|s| s.redeployment_sizelimit)
            .max()
            .unwrap_or(0);
        let buffer_size = 16384.max(cfg.max_header_bytes).max(largest_replay);
        Ok(Reactor {
            poll,
            conns: Slab::with_capacity(1024),
            next_gen: 0,
            listeners,
            router: Router::new(&cfg.sections),
            sections: cfg.sections.iter().cloned().map(Section::new).collect(),
            limits: Limits {
                timeout: cfg.timeout,
                header_timeout: cfg.header_timeout,
                keepalive_timeout: cfg.keepalive_timeout,
                backend_timeout: cfg.backend_timeout,
                handshake_timeout: cfg.handshake_timeout,
                max_header_bytes: cfg.max_header_bytes,
                max_body_bytes: cfg.max_body_bytes,
                health_uri: cfg.health_check_uri.clone(),
            },
            pool: IoPool::new(buffer_size, 4096),
            timers: Timers::default(),
            pending: Vec::new(),
            deferred: Vec::new(),
            deferring: Vec::new(),
            accept_retry: None,
            now: Instant::now(),
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
            let wake = [self.timers.next_wake(), self.accept_retry]
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
            for event in events.iter() {
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                self.on_event(event.token().0, readable, writable);
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
        }
    }

    fn on_event(&mut self, token: usize, readable: bool, writable: bool) {
        if token >= LISTENER_BASE {
            self.accept(token - LISTENER_BASE);
            return;
        }
        match self.conns.get_mut(token).map(|e| &mut e.conn) {
            Some(Conn::Client(c)) => {
                c.readable |= readable;
                c.writable |= writable;
                self.drive_client(token);
            }
            Some(Conn::Backend(b)) => {
                b.readable |= readable;
                b.writable |= writable;
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

    // ----- accepting -----

    /// Accepts on listener `li` until it would block.
    fn accept(&mut self, li: usize) {
        if li >= self.listeners.len() {
            return;
        }
        loop {
            let res = self.listeners[li].sock.accept();
            match res {
                Ok((sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    let kind = match self.listeners[li].kind {
                        ListenerKind::Client => None,
                        ListenerKind::Backend { section } => Some(section),
                    };
                    if let Err(e) = self.add_conn(sock, peer, kind) {
                        warn!("could not register a new connection from {peer}: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_resource_exhaustion(&e) => {
                    warn!(
                        "accept on {} failed: {e}; retrying shortly",
                        self.listeners[li].addr
                    );
                    self.listeners[li].paused = true;
                    self.accept_retry = Some(self.now + ACCEPT_RETRY);
                    return;
                }
                Err(e)
                    if e.kind() == io::ErrorKind::ConnectionAborted
                        || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("accept on {}: {e}", self.listeners[li].addr);
                    return;
                }
            }
        }
    }

    fn add_conn(
        &mut self,
        mut sock: TcpStream,
        peer: SocketAddr,
        backend_section: Option<usize>,
    ) -> io::Result<()> {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.poll.registry().register(
            &mut sock,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.next_gen += 1;
        let gen = self.next_gen;
        let (conn, deadline) = match backend_section {
            None => (
                Conn::Client(ClientConn::new(sock, peer)),
                self.limits.header_timeout,
            ),
            Some(s) => (
                Conn::Backend(BackendConn::new(sock, peer, s)),
                self.limits.handshake_timeout,
            ),
        };
        let e = entry.insert(Entry { gen, conn });
        let at = self.now + deadline;
        match &mut e.conn {
            Conn::Client(c) => self.timers.set(&mut c.timer, key, gen, at),
            Conn::Backend(b) => self.timers.set(&mut b.timer, key, gen, at),
        }
        Ok(())
    }

    // ----- small accessors -----

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

    fn clear_deadline(&mut self, key: usize) {
        match self.conns.get_mut(key).map(|e| &mut e.conn) {
            Some(Conn::Client(c)) => c.timer.deadline = None,
            Some(Conn::Backend(b)) => b.timer.deadline = None,
            None => {}
        }
    }

    // ----- backends that are not serving a request -----

    fn drive_backend(&mut self, b: usize) {
        let Some(be) = backend_in(&mut self.conns, b) else {
            return;
        };
        let section = be.section;
        match be.read_unpaired(self.sections[section].cfg.key.as_bytes()) {
            Unpaired::Wait => {}
            Unpaired::Joined => {
                self.stats.backends_joined += 1;
                let (id, peer) = (be.label().to_string(), be.peer);
                info!(
                    "backend {id} joined section {} from {peer}",
                    self.sections[section].name
                );
                self.clear_deadline(b);
                self.backend_ready(b);
            }
            Unpaired::Refused(why) => {
                self.stats.handshakes_refused += 1;
                let peer = be.peer;
                info!(
                    "refused a backend handshake from {peer} for section {}: {why}",
                    self.sections[section].name
                );
                self.close_backend(b, None);
            }
            Unpaired::Close(why) => self.close_backend(b, Some(why)),
        }
    }

    /// The backend is free: it takes the oldest waiting request, or joins
    /// the idle pool.
    fn backend_ready(&mut self, b: usize) {
        let Some(be) = backend_in(&mut self.conns, b) else {
            return;
        };
        be.state = BackendState::Idle;
        let section = be.section;
        // A backend that closed (or sent bytes) after its response must not
        // be handed the next request.
        if be.readable {
            if let Unpaired::Close(why) = be.read_unpaired(b"") {
                self.close_backend(b, Some(why));
                return;
            }
        }
        loop {
            match self.sections[section].take_waiting() {
                Some(c) if client_in(&mut self.conns, c).is_some() => {
                    self.pair(c, b, section);
                    self.pending.push(c);
                    return;
                }
                Some(_) => continue, // cannot happen: closed clients leave the queue
                None => break,
            }
        }
        self.sections[section].add_idle_backend(b);
    }

    fn close_backend(&mut self, b: usize, why: Option<&str>) {
        let Some(e) = self.conns.try_remove(b) else {
            return;
        };
        let Conn::Backend(be) = e.conn else {
            debug_assert!(false, "close_backend on a client");
            return;
        };
        let section = &mut self.sections[be.section];
        if let BackendState::Idle = be.state {
            section.remove_idle_backend(b);
        }
        if be.id.is_some() {
            self.stats.backends_left += 1;
            info!(
                "backend {} left section {} ({})",
                be.label(),
                section.name,
                why.unwrap_or("closed by the proxy")
            );
        } else if let Some(why) = why {
            debug!("backend connection from {} {why}", be.peer);
        }
        // Dropping the socket closes it and removes it from the poll set.
    }

    // ----- clients -----

    fn drive_client(&mut self, c: usize) {
        for _ in 0..STEP_BUDGET {
            let step = match client_in(&mut self.conns, c).map(|cl| &cl.phase) {
                None => return,
                Some(Phase::Head) => self.step_head(c),
                Some(Phase::Queued { section }) => {
                    let s = *section;
                    self.step_queued(c, s)
                }
                Some(Phase::Proxying { section, backend }) => {
                    let (s, b) = (*section, *backend);
                    self.step_proxy(c, s, b)
                }
                Some(Phase::Local { close }) => {
                    let close = *close;
                    self.step_local(c, close)
                }
                Some(Phase::Lingering) => self.step_linger(c),
            };
            match step {
                Step::Again => continue,
                Step::Wait | Step::Gone => return,
            }
        }
        // Out of budget with work left: let other connections run first.
        self.deferred.push(c);
    }

    /// Enters `Head` for the next request on a kept-alive connection.
    fn enter_head(&mut self, c: usize) -> Step {
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        cl.phase = Phase::Head;
        let buffered = cl.io.as_ref().is_some_and(|io| !io.inbuf.is_empty());
        cl.release_io_if_idle(&mut self.pool);
        let after = if buffered {
            self.limits.header_timeout
        } else {
            self.limits.keepalive_timeout
        };
        self.set_deadline(c, after);
        Step::Again
    }

    fn step_head(&mut self, c: usize) -> Step {
        let max_head = self.limits.max_header_bytes;
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        if let Some(io) = cl.io.as_ref() {
            if !io.inbuf.is_empty() {
                match request::parse(io.inbuf.live(), max_head) {
                    Ok(Some(head)) => return self.on_request(c, head),
                    Ok(None) => {}
                    Err(e) => return self.fail_request(c, e.status(), &e.to_string()),
                }
            }
        }
        let was_empty = cl.io.as_ref().is_none_or(|io| io.inbuf.is_empty());
        match cl.read_in(&mut self.pool) {
            ReadOutcome::Data => {
                if was_empty {
                    self.set_deadline(c, self.limits.header_timeout);
                }
                Step::Again
            }
            ReadOutcome::WouldBlock => {
                cl.release_io_if_idle(&mut self.pool);
                Step::Wait
            }
            ReadOutcome::Full => self.fail_request(c, 431, "request head does not fit the buffer"),
            ReadOutcome::Eof | ReadOutcome::Error => {
                self.close_client(c);
                Step::Gone
            }
        }
    }

    fn on_request(&mut self, c: usize, head: RequestHead) -> Step {
        self.stats.requests += 1;
        let max_body = self.limits.max_body_bytes;
        let health = self.limits.health_uri.as_bytes();
        let router = &self.router;
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        let Some(io) = cl.io.as_mut() else {
            return Step::Gone;
        };
        let start = io.inbuf.start;
        let buf = io.inbuf.bytes();
        if &buf[start + head.path.start..start + head.path.end] == health {
            let close = !head.keep_alive || head.body != RequestBody::None;
            io.inbuf.start = start + head.len;
            let st = &self.stats;
            let counts = [
                ("400", st.status_400),
                ("404", st.status_404),
                ("503", st.status_503),
                ("502", st.status_502),
                ("504", st.status_504),
                ("refused_handshakes", st.handshakes_refused),
            ];
            io.to_client.push_static(local::HEALTH_HEAD);
            let n = local::health_tail(
                io.to_client.scratch_space(),
                &counts,
                close,
                head.minor == 0 && !close,
            );
            io.to_client.commit_scratch(n);
            cl.phase = Phase::Local { close };
            return Step::Again;
        }
        if let RequestBody::Length(n) = head.body {
            if max_body.is_some_and(|max| n > max) {
                return self.fail_request(c, 413, "request body larger than max_body_bytes");
            }
        }
        let host = head
            .host
            .as_ref()
            .map(|r| &buf[start + r.start..start + r.end]);
        let Some(section) = router.route(host) else {
            let host = String::from_utf8_lossy(host.unwrap_or(b"(none)")).into_owned();
            return self.fail_request(c, 404, &format!("no section serves host {host:?}"));
        };
        let cfg = &self.sections[section].cfg;
        let retain = cfg.redeployable
            && match head.body {
                RequestBody::None => head.len <= cfg.redeployment_sizelimit,
                RequestBody::Length(n) => {
                    (head.len as u64).saturating_add(n) <= cfg.redeployment_sizelimit as u64
                }
                RequestBody::Chunked => true,
            };
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        let Some(io) = cl.io.as_mut() else {
            return Step::Gone;
        };
        io.ex.begin(head, start, retain);
        self.dispatch(c, section, false)
    }

    /// Pairs the client with an idle backend of `section`, or queues it.
    fn dispatch(&mut self, c: usize, section: usize, front: bool) -> Step {
        if let Some(b) = self.sections[section].take_idle_backend() {
            self.pair(c, b, section);
            return Step::Again;
        }
        let s = &mut self.sections[section];
        if front {
            s.enqueue_front(c);
        } else {
            s.enqueue(c);
        }
        if let Some(cl) = client_in(&mut self.conns, c) {
            cl.phase = Phase::Queued { section };
        }
        self.set_deadline(c, self.limits.timeout);
        Step::Again
    }

    fn pair(&mut self, c: usize, b: usize, section: usize) {
        if let Some(be) = backend_in(&mut self.conns, b) {
            be.state = BackendState::Busy { client: c };
        }
        if let Some(cl) = client_in(&mut self.conns, c) {
            cl.phase = Phase::Proxying {
                section,
                backend: b,
            };
        }
        self.set_deadline(c, self.limits.backend_timeout);
    }

    fn step_queued(&mut self, c: usize, section: usize) -> Step {
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        match cl.read_in(&mut self.pool) {
            ReadOutcome::Data => Step::Again,
            ReadOutcome::WouldBlock | ReadOutcome::Full => Step::Wait,
            ReadOutcome::Eof | ReadOutcome::Error => {
                debug!(
                    "client {} left the queue of section {}",
                    cl.peer, self.sections[section].name
                );
                self.close_client(c);
                Step::Gone
            }
        }
    }

    fn step_proxy(&mut self, c: usize, section: usize, b: usize) -> Step {
        let pump = self.pump(c, section, b);
        match pump {
            Pump::Progress { backend_side } => {
                if backend_side {
                    self.set_deadline(c, self.limits.backend_timeout);
                }
                Step::Again
            }
            Pump::Wait => Step::Wait,
            Pump::Finished => self.finish_exchange(c, section, b),
            Pump::ClientGone => {
                self.close_client(c);
                Step::Gone
            }
            Pump::BackendFailed(why) => self.backend_failed(c, section, b, &why),
            Pump::BadRequest(status, why) => {
                self.close_backend(b, Some("its request was refused mid-way"));
                let started = client_in(&mut self.conns, c)
                    .and_then(|cl| cl.io.as_ref())
                    .is_some_and(|io| io.ex.started);
                if started {
                    self.close_client(c);
                    return Step::Gone;
                }
                self.fail_request(c, status, why)
            }
        }
    }

    /// Moves bytes both ways between a client and its backend.
    fn pump(&mut self, c: usize, section: usize, b: usize) -> Pump {
        let cfg = &self.sections[section].cfg;
        let (xff, sizelimit) = (cfg.xforwardedfor, cfg.redeployment_sizelimit);
        let max_body = self.limits.max_body_bytes;
        let Some((ce, be)) = self.conns.get2_mut(c, b) else {
            return Pump::BackendFailed("backend connection vanished".into());
        };
        let (Conn::Client(cl), Conn::Backend(be)) = (&mut ce.conn, &mut be.conn) else {
            return Pump::BackendFailed("backend connection vanished".into());
        };
        let mut read_ahead = false;
        let mut progress = false;

        // Client → proxy.
        match cl.read_in(&mut self.pool) {
            ReadOutcome::Data => read_ahead = true,
            ReadOutcome::Eof => {
                // A client that half-closes after a complete request still
                // gets its response (judged below, once what it sent is
                // forwarded); one that leaves mid-request is gone.
                cl.read_closed = true;
                read_ahead = true;
            }
            ReadOutcome::Error => return Pump::ClientGone,
            ReadOutcome::WouldBlock | ReadOutcome::Full => {}
        }
        let peer = cl.peer;
        let Some(io) = cl.io.as_mut() else {
            return Pump::ClientGone;
        };

        // Proxy → backend.
        match io.forward_request(&peer, xff, sizelimit, max_body) {
            Ok(()) => {}
            Err(ForwardError::Body(e)) => return Pump::BadRequest(400, body_error_text(e)),
            Err(ForwardError::TooLarge) => {
                return Pump::BadRequest(413, "request body larger than max_body_bytes")
            }
        }
        if cl.read_closed {
            if !io.ex.req_done() && io.ex.fwd == io.inbuf.end {
                return Pump::ClientGone; // the rest of the request will never come
            }
            io.ex.close_after = true;
        }
        if be.writable && !io.to_backend.is_empty() {
            match io.to_backend.flush(&be.sock, io.inbuf.bytes()) {
                Ok((n, state)) => {
                    progress |= n > 0;
                    if let outq::Flushed::Blocked = state {
                        be.writable = false;
                    }
                }
                Err(e) => return Pump::BackendFailed(format!("write failed: {e}")),
            }
        }
        io.release_forwarded();

        // Backend → proxy.
        if be.readable && !io.ex.resp_done() && !io.ex.backend_eof && io.resp_room() {
            match client::read_into(&be.sock, &mut io.resp) {
                ReadOutcome::Data => progress = true,
                ReadOutcome::WouldBlock => be.readable = false,
                ReadOutcome::Eof | ReadOutcome::Error => {
                    io.ex.backend_eof = true;
                    progress = true;
                }
                ReadOutcome::Full => {}
            }
        }
        if let Err(e) = io.relay_response() {
            return Pump::BackendFailed(format!("bad response: {e}"));
        }
        // Proxy → client.
        match cl.flush_out() {
            Ok(n) => progress |= n > 0,
            Err(_) => return Pump::ClientGone,
        }
        let Some(io) = cl.io.as_mut() else {
            return Pump::ClientGone;
        };
        if io.ex.backend_eof && !io.ex.resp_done() {
            let until_close = matches!(io.ex.resp, RespState::Body(BodyScanner::UntilClose));
            if until_close && io.ex.resp_parse == io.resp.end {
                io.ex.resp = RespState::Done;
                progress = true;
            } else if !until_close && !progress && io.to_client.is_empty() {
                // Nothing is waiting for room, yet the response is not complete
                // and no more bytes will come.
                return Pump::BackendFailed("closed before its response was complete".into());
            }
        }
        if io.ex.resp_done() && io.to_client.is_empty() {
            return Pump::Finished;
        }
        if progress || read_ahead {
            Pump::Progress {
                backend_side: progress,
            }
        } else {
            Pump::Wait
        }
    }

    fn finish_exchange(&mut self, c: usize, _section: usize, b: usize) -> Step {
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        let Some(io) = cl.io.as_mut() else {
            return Step::Gone;
        };
        // The whole request must have reached the backend, or its stream is
        // out of step with ours.
        let req_done = io.ex.req_done() && io.to_backend.is_empty();
        let backend_ok = req_done && !io.ex.backend_extra && !io.ex.backend_eof;
        let backend_why = if io.ex.backend_eof {
            "closed after its response"
        } else if io.ex.backend_extra {
            "sent bytes after its response"
        } else {
            "answered before its request was complete"
        };
        let close = io.ex.close_after || !req_done;
        io.finish();
        if backend_ok {
            self.backend_ready(b);
        } else {
            self.close_backend(b, Some(backend_why));
        }
        if close {
            return self.shut_client(c);
        }
        self.enter_head(c)
    }

    /// The backend failed mid-exchange: redeploy, 502, or cut the client.
    fn backend_failed(&mut self, c: usize, section: usize, b: usize, why: &str) -> Step {
        self.close_backend(b, Some(why));
        let redeployable = self.sections[section].cfg.redeployable;
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        let Some(io) = cl.io.as_mut() else {
            return Step::Gone;
        };
        if io.ex.started {
            // Response bytes already went out: the client must see a cut.
            let _ = cl.flush_out();
            self.close_client(c);
            return Step::Gone;
        }
        if redeployable && io.ex.retained {
            io.ex.rewind();
            io.to_backend.clear();
            io.to_client.clear();
            io.resp.start = 0;
            io.resp.end = 0;
            self.stats.redeploys += 1;
            info!(
                "redeploying a request of section {} to another backend",
                self.sections[section].name
            );
            return self.dispatch(c, section, true);
        }
        self.fail_request(c, 502, &format!("backend failed: {why}"))
    }

    /// Answers with an error and closes (after lingering).
    fn fail_request(&mut self, c: usize, status: u16, why: &str) -> Step {
        match status {
            400 => self.stats.status_400 += 1,
            404 => self.stats.status_404 += 1,
            502 => self.stats.status_502 += 1,
            503 => self.stats.status_503 += 1,
            504 => self.stats.status_504 += 1,
            _ => {}
        }
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        info!("{} {status}: {why}", cl.peer);
        if let Phase::Queued { section } = cl.phase {
            self.sections[section].remove_waiting(c);
        }
        let io = cl.io(&mut self.pool);
        io.to_backend.clear();
        io.to_client.clear();
        io.to_client.push_static(local::error_response(status));
        cl.phase = Phase::Local { close: true };
        self.set_deadline(c, self.limits.header_timeout);
        Step::Again
    }

    fn step_local(&mut self, c: usize, close: bool) -> Step {
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        if cl.flush_out().is_err() {
            self.close_client(c);
            return Step::Gone;
        }
        if cl.has_output() {
            return Step::Wait;
        }
        if close {
            return self.shut_client(c);
        }
        self.enter_head(c)
    }

    /// Closes the client's write side, then reads until it closes too.
    fn shut_client(&mut self, c: usize) -> Step {
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        let _ = cl.sock.shutdown(Shutdown::Write);
        cl.phase = Phase::Lingering;
        if let Some(io) = cl.io.take() {
            self.pool.put(io);
        }
        self.set_deadline(c, LINGER);
        Step::Again
    }

    fn step_linger(&mut self, c: usize) -> Step {
        let Some(cl) = client_in(&mut self.conns, c) else {
            return Step::Gone;
        };
        let mut sink = [0u8; 4096];
        for _ in 0..LINGER_READS {
            if !cl.readable {
                return Step::Wait;
            }
            match (&cl.sock).read(&mut sink) {
                Ok(0) => {
                    self.close_client(c);
                    return Step::Gone;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    cl.readable = false;
                    return Step::Wait;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close_client(c);
                    return Step::Gone;
                }
            }
        }
        // Still sending: come back after others had their turn.
        self.deferred.push(c);
        Step::Wait
    }

    fn close_client(&mut self, c: usize) {
        let Some(e) = self.conns.try_remove(c) else {
            return;
        };
        let Conn::Client(cl) = e.conn else {
            debug_assert!(false, "close_client on a backend");
            return;
        };
        match cl.phase {
            Phase::Queued { section } => {
                self.sections[section].remove_waiting(c);
            }
            Phase::Proxying { backend, .. } => {
                // The backend is mid-request for a client that is gone; the
                // only way to resynchronise its stream is to close it.
                self.close_backend(backend, Some("its client went away mid-request"));
            }
            _ => {}
        }
        if let Some(io) = cl.io {
            self.pool.put(io);
        }
    }

    // ----- timers -----

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

    fn client_timeout(&mut self, c: usize) {
        let Some(cl) = client_in(&mut self.conns, c) else {
            return;
        };
        let step = match cl.phase {
            Phase::Head => {
                if cl.io.as_ref().is_some_and(|io| !io.inbuf.is_empty()) {
                    self.fail_request(c, 408, "request head not complete within header_timeout")
                } else {
                    self.close_client(c);
                    Step::Gone
                }
            }
            Phase::Queued { section } => {
                let name = &self.sections[section].name;
                let why = format!("no backend of section {name} became free within timeout");
                self.fail_request(c, 503, &why)
            }
            Phase::Proxying { section, backend } => {
                let started = cl.io.as_ref().is_some_and(|io| io.ex.started);
                self.close_backend(backend, Some("no progress within backend_timeout"));
                if let Some(cl) = client_in(&mut self.conns, c) {
                    cl.phase = Phase::Head; // detached from the closed backend
                }
                let _ = section;
                if started {
                    self.close_client(c);
                    Step::Gone
                } else {
                    self.fail_request(c, 504, "backend sent no response within backend_timeout")
                }
            }
            Phase::Local { .. } | Phase::Lingering => {
                self.close_client(c);
                Step::Gone
            }
        };
        if let Step::Again = step {
            self.drive_client(c);
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

fn body_error_text(e: BodyError) -> &'static str {
    match e {
        BodyError::BadChunkSize => "malformed chunk size in the request body",
        BodyError::BadChunkEnd => "chunk data not followed by CRLF in the request body",
        BodyError::LineTooLong => "chunk extension or trailers too long in the request body",
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}
