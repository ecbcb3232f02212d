//! Listening sockets: clients' and backends' doors into the proxy.
//!
//! Every `cluster_address` x `cluster_port` pair is a client listener; every
//! `outgoing` address of a section is a backend listener for that section.
//! Accepting drains the backlog until it would block. Running out of file
//! descriptors pauses accepting for a moment (the kernel backlog holds the
//! waiting connections) instead of spinning.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};

use super::backend::BackendConn;
use super::client::ClientConn;
use super::{Conn, Entry, Reactor, ACCEPT_RETRY};

pub(super) enum ListenerKind {
    Client,
    Backend { section: usize },
}

pub(super) struct Listener {
    pub(super) sock: TcpListener,
    pub(super) kind: ListenerKind,
    pub(super) addr: SocketAddr,
    pub(super) paused: bool,
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

impl Reactor {
    /// Accepts on listener `li` until it would block.
    pub(super) fn accept(&mut self, li: usize) {
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

    pub(super) fn add_conn(
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
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}
