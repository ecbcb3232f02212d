//! Zero-copy relaying of large response bodies: backend socket → pipe →
//! client socket with `splice(2)`, so the bytes never pass through the
//! proxy's buffers (nor cost two copies each).
//!
//! Used only for a body relayed as it is (`RespState::Body` with a
//! Content-Length) of at least `SPLICE_MIN` bytes still to come, and only
//! once everything read into `resp` has been written to the client, so the
//! head always goes first. The pipe belongs to the client's `ClientIo`: when
//! the backend has sent its last byte the exchange may end while the pipe
//! still holds bytes, and the client's own output path (`flush_out`)
//! drains them, as it does for a file.
//!
//! Invariant: `held` is the number of body bytes in the pipe; they are
//! counted out of the response's Content-Length when they enter it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Bodies shorter than this are copied through `resp` as usual: for them a
/// pipe's set-up costs more than the copies it saves.
pub const SPLICE_MIN: u64 = 64 * 1024;

/// What the pipe is asked to hold; the kernel may give less.
const PIPE_SIZE: libc::c_int = 256 * 1024;

/// Bytes moved per call before letting other connections run (a fast pair
/// of peers must not hold up the event loop).
const TURN_BYTES: usize = 4 << 20;

pub struct Pipe {
    rd: OwnedFd,
    wr: OwnedFd,
    cap: usize,
    /// Body bytes in the pipe, not yet written to the client.
    pub held: usize,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A larger pipe means fewer calls per body; the system's limit
        // (/proc/sys/fs/pipe-max-size) may refuse it, and the default will do.
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        // SAFETY: as above.
        let cap = unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_GETPIPE_SZ) };
        Ok(Pipe {
            rd,
            wr,
            cap: usize::try_from(cap).unwrap_or(0).max(4096),
            held: 0,
        })
    }

    /// Moves up to `max` bytes from the socket `from` into the pipe.
    /// Ok(0) means the socket reached EOF.
    fn fill(&mut self, from: RawFd, max: usize) -> io::Result<usize> {
        let n = splice(from, self.wr.as_raw_fd(), max.min(self.cap - self.held), 0)?;
        self.held += n;
        Ok(n)
    }

    /// Writes what the pipe holds to the socket `to`.
    /// `more`: more body is about to follow (SPLICE_F_MORE: let the kernel
    /// fill whole segments).
    pub fn drain(&mut self, to: RawFd, more: bool) -> io::Result<usize> {
        let flags = if more { libc::SPLICE_F_MORE } else { 0 };
        let n = splice(self.rd.as_raw_fd(), to, self.held, flags)?;
        self.held -= n;
        Ok(n)
    }
}

fn splice(from: RawFd, to: RawFd, len: usize, flags: libc::c_uint) -> io::Result<usize> {
    loop {
        // SAFETY: plain descriptors and no offsets (both ends are streams).
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK | flags,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The ends of one relay: a socket and its readiness flag.
pub struct End<'a> {
    pub fd: RawFd,
    pub ready: &'a mut bool,
}

pub enum Relayed {
    /// Bytes moved (true) or not (false); `left` is updated.
    Moved(bool),
    /// The backend closed before the body was complete.
    BackendEof,
    BackendError(io::Error),
    ClientGone,
    /// This kernel cannot splice these sockets; nothing was moved.
    Unsupported,
}

/// Moves body bytes backend → pipe → client until one side would block,
/// `left` reaches 0 or a turn's worth has moved.
pub fn relay(pipe: &mut Pipe, left: &mut u64, backend: End<'_>, client: End<'_>) -> Relayed {
    let mut moved = 0;
    // The last write to the client asked the kernel to wait for more.
    let mut corked = false;
    let result = loop {
        let mut step = 0;
        let mut filled = false;
        if *backend.ready && *left > 0 && pipe.held < pipe.cap {
            let max = usize::try_from(*left).unwrap_or(usize::MAX);
            match pipe.fill(backend.fd, max) {
                Ok(0) => break Relayed::BackendEof,
                Ok(n) => {
                    *left -= n as u64;
                    step += n;
                    // The pipe is full: the socket may well hold more.
                    filled = pipe.held == pipe.cap && *left > 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => *backend.ready = false,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && moved == 0 => {
                    break Relayed::Unsupported;
                }
                Err(e) => break Relayed::BackendError(e),
            }
        }
        if *client.ready && pipe.held > 0 {
            match pipe.drain(client.fd, filled) {
                Ok(n) => {
                    step += n;
                    corked = n > 0 && filled;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => *client.ready = false,
                Err(_) => return Relayed::ClientGone,
            }
        }
        moved += step;
        if step == 0 || moved >= TURN_BYTES {
            break Relayed::Moved(moved > 0);
        }
    };
    if corked && !*backend.ready {
        // Nothing more is waiting after all: send what the kernel holds.
        push(client.fd);
    }
    result
}

/// Makes the kernel send what a MSG_MORE / SPLICE_F_MORE write left
/// waiting for more (setting TCP_NODELAY pushes pending frames, and it is
/// already on for every accepted socket).
pub fn push(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    /// One `relay` call with both sockets taken as ready (it clears what
    /// would block).
    fn relay_ready(
        pipe: &mut Pipe,
        left: &mut u64,
        backend: &TcpStream,
        client: &TcpStream,
    ) -> Relayed {
        let (mut backend_ready, mut client_ready) = (true, true);
        relay(
            pipe,
            left,
            End {
                fd: backend.as_raw_fd(),
                ready: &mut backend_ready,
            },
            End {
                fd: client.as_raw_fd(),
                ready: &mut client_ready,
            },
        )
    }

    /// (backend's peer, backend, client, client's peer); the proxy's two
    /// sockets are non-blocking.
    fn proxy_between() -> (TcpStream, TcpStream, TcpStream, TcpStream) {
        let (backend_peer, backend) = pair();
        let (client, client_peer) = pair();
        backend.set_nonblocking(true).unwrap();
        client.set_nonblocking(true).unwrap();
        (backend_peer, backend, client, client_peer)
    }

    #[test]
    fn a_body_crosses_from_one_socket_to_another_and_no_byte_more() {
        let (mut backend_peer, backend, client, mut client_peer) = proxy_between();
        client_peer.set_nonblocking(true).unwrap();
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        backend_peer.write_all(&body).unwrap();
        backend_peer.write_all(b"NEXT").unwrap(); // not part of this body
        let mut pipe = Pipe::new().unwrap();
        let mut left = body.len() as u64;
        let mut got = Vec::new();
        for _ in 0..10_000 {
            let r = relay_ready(&mut pipe, &mut left, &backend, &client);
            assert!(matches!(r, Relayed::Moved(_)), "relay failed");
            let mut buf = [0u8; 65536];
            while let Ok(n @ 1..) = client_peer.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            if left == 0 && pipe.held == 0 && got.len() == body.len() {
                break;
            }
        }
        assert_eq!(left, 0);
        assert_eq!(got, body, "the body arrived changed or incomplete");
        let mut rest = [0u8; 4];
        (&backend).read_exact(&mut rest).unwrap_or_default();
        assert_eq!(&rest, b"NEXT", "splice read past the body");
    }

    #[test]
    fn a_backend_that_closes_early_is_reported() {
        let (mut backend_peer, backend, client, _client_peer) = proxy_between();
        backend_peer.write_all(b"short").unwrap();
        drop(backend_peer);
        let mut pipe = Pipe::new().unwrap();
        let mut left = 100_000;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !matches!(
            relay_ready(&mut pipe, &mut left, &backend, &client),
            Relayed::BackendEof
        ) {
            assert!(std::time::Instant::now() < deadline, "EOF never seen");
        }
        assert_eq!(left, 100_000 - 5);
    }
}
