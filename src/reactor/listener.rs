//! Listening sockets: clients' and backends' doors into the proxy.
//!
//! Every `cluster_address` x `cluster_port` pair is a client listener; every
//! `outgoing` address of a section is a backend listener for that section.
//! Accepting drains the backlog until it would block. Running out of file
//! descriptors pauses accepting for a moment (the kernel backlog holds the
//! waiting connections) instead of spinning; a shortage is one warning, and
//! its end one info line, not a line per retry.
//!
//! `max_connections`: a worker with that many open client connections stops
//! accepting clients (backends are not counted or limited). New clients wait
//! in the kernel's backlog, and once it is full the kernel pushes back on
//! them. Listeners are edge-triggered, so one not drained is not reported
//! again until another connection arrives: when a client connection closes
//! and the count drops below the limit, the loop (`mod.rs`) accepts again
//! itself (`resume_clients_if_room`). A listener event while full costs one
//! comparison, never a spin. Reaching the limit is a warning at most once
//! a minute (with how often it was reached meanwhile), not once per
//! connection.
//!
//! With several workers (`workers.rs`) each has its own client listeners
//! (SO_REUSEPORT: the kernel spreads client connections) and a copy of each
//! one shared backend listener; a worker accepts a backend connection only
//! while `balance.rs` says it is its turn.

use std::fmt;
use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};

use super::backend::BackendConn;
use super::balance::{BackendShare, BackendSlot};
use super::client::ClientConn;
use super::{Conn, Entry, Reactor, ACCEPT_RETRY};

/// The shortest time between two "max_connections reached" warnings.
const LIMIT_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Connections the kernel queues on a listener before the proxy accepts
/// them (capped by `net.core.somaxconn`); the value mio and nginx-class
/// servers use.
const BACKLOG: libc::c_int = 1024;

pub(super) enum ListenerKind {
    Client,
    Backend { section: usize },
}

pub(super) struct Listener {
    pub(super) sock: TcpListener,
    pub(super) kind: ListenerKind,
    /// The address it is bound to (the port chosen, for port 0): what a
    /// reload matches to keep a listener (`reload.rs`).
    pub(super) addr: SocketAddr,
    pub(super) paused: bool,
    /// A backend listener's counts, shared with the other workers' copies
    /// of it (`balance.rs`); `None` with one worker and for clients.
    pub(super) share: Option<Arc<BackendShare>>,
}

impl Listener {
    pub(super) fn new(sock: std::net::TcpListener, kind: ListenerKind) -> io::Result<Listener> {
        Ok(Listener {
            addr: sock.local_addr()?,
            sock: TcpListener::from_std(sock),
            kind,
            paused: false,
            share: None,
        })
    }
}

/// Whether a worker takes new client connections, and what it has said
/// about it.
///
/// Invariant: `full` only while `max_connections` is set and was reached;
/// it is cleared (and the client listeners accepted from) by
/// `resume_clients_if_room` as soon as the count is below the limit.
#[derive(Default)]
pub(super) struct Admission {
    /// At `max_connections`: client listeners are left undrained.
    full: bool,
    /// This stop was warned about, so its end is logged too.
    warned: bool,
    /// The last warning, and the stops not warned about since.
    last_warning: Option<Instant>,
    unwarned: u64,
    /// `accept` failed for lack of descriptors (or memory) and has not
    /// succeeded since: warned once, not at every retry.
    exhausted: bool,
}

/// Where an accepted backend connection came in, for `add_conn`.
pub(super) struct BackendDoor {
    pub(super) section: usize,
    pub(super) outgoing: SocketAddr,
    pub(super) share: Option<Arc<BackendShare>>,
}

/// Opens a listening socket on `addr`: nonblocking, close-on-exec,
/// SO_REUSEADDR (a restart need not wait for old connections in TIME_WAIT)
/// and, with `reuseport`, SO_REUSEPORT (several sockets, in this process or
/// others of the same user, listen on one port and the kernel spreads new
/// connections among them). mio's own `bind` cannot set SO_REUSEPORT.
pub(super) fn listen(addr: SocketAddr, reuseport: bool) -> io::Result<std::net::TcpListener> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let kind = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: plain system call; the descriptor is owned right away.
    let fd = unsafe { libc::socket(domain, kind, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_flag(&fd, libc::SO_REUSEADDR)?;
    if reuseport {
        set_flag(&fd, libc::SO_REUSEPORT)?;
    }
    // SAFETY: sockaddr_storage is plain data; zeroes are a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any
            // socket address.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: `storage` holds a socket address of `len` bytes.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &storage as *const _ as *const libc::sockaddr,
            len as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain system call on a descriptor we own.
    if unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(std::net::TcpListener::from(fd))
}

fn set_flag(fd: &OwnedFd, option: libc::c_int) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` outlives the call and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            &on as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
                " (is another swiftiply or another server already using that port? \
                 swiftiply processes share a port only when all of them set `reuseport: true`)"
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

impl Reactor {
    /// Accepts on listener `li` until it would block, or, for a backend
    /// listener shared with other workers, until another worker has fewer
    /// of that section's backends (then that worker is woken to go on; see
    /// `balance.rs` for why no connection is left waiting).
    pub(super) fn accept(&mut self, li: usize) {
        if li >= self.listeners.len() {
            return;
        }
        let shared = self.listeners[li].share.clone();
        let client = matches!(self.listeners[li].kind, ListenerKind::Client);
        let mut took = false;
        loop {
            if client && self.at_client_limit() {
                self.stop_accepting_clients();
                return;
            }
            if let Some(share) = &shared {
                if !share.may_accept(self.worker) {
                    if took {
                        share.hand_off(self.worker);
                    }
                    return;
                }
            }
            let res = self.listeners[li].sock.accept();
            match res {
                Ok((sock, peer)) => {
                    if std::mem::take(&mut self.admission.exhausted) {
                        info!("accepting connections again: descriptors are available");
                    }
                    let _ = sock.set_nodelay(true);
                    let l = &self.listeners[li];
                    let kind = match l.kind {
                        ListenerKind::Client => None,
                        ListenerKind::Backend { section } => Some(BackendDoor {
                            section,
                            outgoing: l.addr,
                            share: shared.clone(),
                        }),
                    };
                    took = true;
                    if let Err(e) = self.add_conn(sock, peer, kind) {
                        warn!("could not register a new connection from {peer}: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_resource_exhaustion(&e) => {
                    if std::mem::replace(&mut self.admission.exhausted, true) {
                        debug!("accept on {}: {e}; retrying", self.listeners[li].addr);
                    } else {
                        warn!(
                            "accept on {} failed: {e}; new connections wait in the kernel's \
                             backlog, retried every {} ms until descriptors are free \
                             (raise the limit with `ulimit -n` or LimitNOFILE=)",
                            self.listeners[li].addr,
                            ACCEPT_RETRY.as_millis()
                        );
                    }
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

    /// Whether this worker holds `max_connections` client connections.
    fn at_client_limit(&self) -> bool {
        self.limits
            .max_connections
            .is_some_and(|max| self.open_clients >= max)
    }

    /// The client limit is reached: client listeners are left as they are
    /// until `resume_clients_if_room`.
    fn stop_accepting_clients(&mut self) {
        let a = &mut self.admission;
        if a.full {
            return;
        }
        a.full = true;
        let due = a
            .last_warning
            .is_none_or(|t| self.now.saturating_duration_since(t) >= LIMIT_WARNING_EVERY);
        a.warned = due;
        if !due {
            a.unwarned += 1;
            return;
        }
        let meanwhile = match std::mem::take(&mut a.unwarned) {
            0 => String::new(),
            n => format!(" (and {n} more times since the last warning)"),
        };
        a.last_warning = Some(self.now);
        warn!(
            "max_connections reached: {} open client connections; new clients wait in \
             the kernel's backlog until one closes{meanwhile}",
            self.open_clients
        );
    }

    /// Accepts clients again once the count is below `max_connections` (a
    /// connection closed, or a reload raised or removed the limit): the
    /// listeners will not report the connections already waiting.
    pub(super) fn resume_clients_if_room(&mut self) {
        if !self.admission.full || self.at_client_limit() {
            return;
        }
        self.admission.full = false;
        if std::mem::take(&mut self.admission.warned) {
            info!(
                "below max_connections ({} open client connections): accepting clients again",
                self.open_clients
            );
        }
        for li in 0..self.listeners.len() {
            let l = &self.listeners[li];
            if matches!(l.kind, ListenerKind::Client) && !l.paused {
                self.accept(li);
            }
        }
        debug_assert!(!self.admission.full || self.at_client_limit());
    }

    /// Another worker asked this one to look at its backend listeners
    /// again (`balance.rs`): a connection may be waiting for it.
    pub(super) fn retry_backend_accepts(&mut self) {
        for li in 0..self.listeners.len() {
            let l = &self.listeners[li];
            if matches!(l.kind, ListenerKind::Backend { .. }) && !l.paused {
                self.accept(li);
            }
        }
    }

    pub(super) fn add_conn(
        &mut self,
        mut sock: TcpStream,
        peer: SocketAddr,
        backend: Option<BackendDoor>,
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
        // Counted from the accept on, handshake included, so that a burst of
        // new backends is already spread while they are still handshaking.
        let share = backend
            .as_ref()
            .and_then(|d| d.share.as_ref())
            .map(|share| BackendSlot::new(share, self.worker));
        let (conn, deadline) = match backend {
            None => {
                self.open_clients += 1;
                (
                    Conn::Client(ClientConn::new(sock, peer)),
                    self.limits.header_timeout,
                )
            }
            Some(d) => {
                self.open_backends += 1;
                (
                    Conn::Backend(BackendConn::new(sock, peer, d.section, d.outgoing)),
                    self.limits.handshake_timeout,
                )
            }
        };
        let e = entry.insert(Entry {
            gen,
            conn,
            _backend_share: share,
        });
        let at = self.now + deadline;
        match &mut e.conn {
            Conn::Client(c) => self.timers.set(&mut c.timer, key, gen, at),
            Conn::Backend(b) => self.timers.set(&mut b.timer, key, gen, at),
        }
        Ok(())
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}
