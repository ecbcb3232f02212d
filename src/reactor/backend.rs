//! The backend connection: a socket a backend process opened to us.
//!
//! ```text
//!  Handshake ──valid──▶ Idle ──request──▶ Busy ──response done──▶ Idle ...
//!      │                  │                 │
//!      └─bad/slow─▶ closed └─EOF/bytes─▶ closed └─EOF/garbage─▶ closed (client: redeploy/502/cut)
//! ```
//!
//! A backend holds no buffer of its own once its handshake is done: while it
//! is busy, the client it serves owns the exchange's buffers (see
//! `client.rs`). An idle backend is read only to notice that it closed (or
//! misbehaved by sending bytes nobody asked for).

use std::io::{self, Read};
use std::net::SocketAddr;

use mio::net::TcpStream;

use super::timer::TimerSlot;
use crate::proto::handshake::{self, BackendId, HandshakeError};

pub enum BackendState {
    Handshake {
        buf: Box<[u8; handshake::MAX_LEN]>,
        len: usize,
    },
    Idle,
    Busy {
        client: usize,
    },
}

pub struct BackendConn {
    pub sock: TcpStream,
    pub peer: SocketAddr,
    pub section: usize,
    /// The backend listener it came in on (bound address): a reload keeps
    /// the connection where that address is still configured.
    pub outgoing: SocketAddr,
    pub id: Option<BackendId>,
    pub state: BackendState,
    pub readable: bool,
    pub writable: bool,
    /// The kernel reported the backend's FIN or an error (see
    /// `client::read_into`).
    pub hup: bool,
    pub timer: TimerSlot,
    /// Requests it has served (for the status page).
    pub served: u64,
    /// When it connected, Unix seconds.
    pub since: u64,
}

/// What reading a backend that is not busy found.
pub enum Unpaired {
    /// Nothing to do until the next event.
    Wait,
    /// Handshake complete: the backend may join its section's pool.
    Joined,
    /// Close it; the string says why (for the log).
    Close(&'static str),
    Refused(HandshakeError),
}

impl BackendConn {
    pub fn new(sock: TcpStream, peer: SocketAddr, section: usize, outgoing: SocketAddr) -> Self {
        BackendConn {
            sock,
            peer,
            section,
            outgoing,
            id: None,
            state: BackendState::Handshake {
                buf: Box::new([0; handshake::MAX_LEN]),
                len: 0,
            },
            readable: false,
            writable: false,
            hup: false,
            timer: TimerSlot::default(),
            served: 0,
            since: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    pub fn label(&self) -> &str {
        self.id.as_ref().map_or("(no id)", BackendId::as_str)
    }

    /// Reads a backend that is handshaking or idle.
    pub fn read_unpaired(&mut self, key: &[u8]) -> Unpaired {
        loop {
            if !self.readable {
                return Unpaired::Wait;
            }
            match &mut self.state {
                BackendState::Handshake { buf, len } => {
                    let n = match (&self.sock).read(&mut buf[*len..]) {
                        Ok(0) => return Unpaired::Close("closed during the handshake"),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.readable = false;
                            return Unpaired::Wait;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return Unpaired::Close("read error during the handshake"),
                    };
                    *len += n;
                    match handshake::parse(&buf[..*len], key) {
                        Ok(None) if *len == buf.len() => {
                            return Unpaired::Refused(HandshakeError::WrongKey)
                        }
                        Ok(None) => {}
                        Ok(Some((id, used))) => {
                            if used < *len {
                                return Unpaired::Refused(HandshakeError::BytesAfter);
                            }
                            self.id = Some(id);
                            self.state = BackendState::Idle;
                            return Unpaired::Joined;
                        }
                        Err(e) => return Unpaired::Refused(e),
                    }
                }
                BackendState::Idle => {
                    let mut probe = [0u8; 64];
                    match (&self.sock).read(&mut probe) {
                        Ok(0) => return Unpaired::Close("closed"),
                        Ok(_) => return Unpaired::Close("sent bytes while idle"),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.readable = false;
                            return Unpaired::Wait;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return Unpaired::Close("read error"),
                    }
                }
                BackendState::Busy { .. } => return Unpaired::Wait,
            }
        }
    }
}
