//! Sending a file to a client with `sendfile(2)`, and keeping the request
//! headers a file response depends on.
//!
//! A file body never passes through a buffer of ours: the kernel copies it
//! from the page cache to the socket, as much as the socket takes, and the
//! reactor resumes when the socket is writable again. So a 1 GiB file to a
//! slow client costs no memory and never blocks the loop.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use crate::proto::request::find_header;
use crate::static_files::Conditions;

/// Most bytes handed to one `sendfile` call.
const SENDFILE_CHUNK: usize = 1 << 20;
/// Most bytes sent for one connection per turn: a fast reader of a large
/// file must not keep the others waiting.
const SEND_PER_TURN: u64 = 8 << 20;

/// A file (or a range of it) still to be sent.
pub struct FileSend {
    pub file: File,
    pub offset: u64,
    pub left: u64,
}

pub enum Sent {
    /// All of it went.
    Done,
    /// The socket is full; wait until it is writable.
    Blocked,
    /// This turn's share went; the socket may take more after others ran.
    Yielded,
}

impl FileSend {
    /// Sends until done, the socket would block, or this turn's share went.
    pub fn send(&mut self, sock: &impl AsRawFd) -> io::Result<Sent> {
        let mut turn = 0u64;
        while self.left > 0 {
            if turn >= SEND_PER_TURN {
                return Ok(Sent::Yielded);
            }
            let mut off = self.offset as libc::off_t;
            let count = (self.left as usize).min(SENDFILE_CHUNK);
            // SAFETY: both descriptors are open for the duration of the call
            // and `off` is a valid pointer to a local.
            let n =
                unsafe { libc::sendfile(sock.as_raw_fd(), self.file.as_raw_fd(), &mut off, count) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(Sent::Blocked),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
            if n == 0 {
                // The file shrank under us: the announced length cannot be met.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file truncated while being sent",
                ));
            }
            self.offset += n as u64;
            self.left -= n as u64;
            turn += n as u64;
        }
        Ok(Sent::Done)
    }
}

/// Writes with `MSG_MORE`: the kernel holds a short write (a response head)
/// to join the file data that `sendfile` sends next, so the head does not
/// travel in a packet of its own.
pub struct MoreFollows<'a, S: AsRawFd>(pub &'a S);

impl<S: AsRawFd> io::Write for MoreFollows<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: msghdr is plain data; the iovecs point at live slices for
        // the duration of the call (IoSlice is ABI-compatible with iovec).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len() as _;
        let n = unsafe {
            libc::sendmsg(
                self.0.as_raw_fd(),
                &msg,
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copies of the request headers that decide a file response, kept because
/// the request's own bytes may be gone by the time a backend answers with
/// X-Sendfile. If they do not all fit, none is kept: the answer is then a
/// plain 200, which is always correct (dropping only some could change the
/// meaning of the others, e.g. turn If-Modified-Since into a wrong 304).
pub struct SavedConditions {
    buf: [u8; 256],
    len: usize,
    /// (start, end) in `buf` of If-None-Match, If-Modified-Since, Range, If-Range.
    spans: [Option<(u16, u16)>; 4],
}

impl Default for SavedConditions {
    fn default() -> Self {
        SavedConditions {
            buf: [0; 256],
            len: 0,
            spans: [None; 4],
        }
    }
}

const NAMES: [&str; 4] = ["if-none-match", "if-modified-since", "range", "if-range"];

impl SavedConditions {
    pub fn capture(head: &[u8]) -> Self {
        let mut s = SavedConditions::default();
        for (i, name) in NAMES.iter().enumerate() {
            if let Some(v) = find_header(head, name) {
                if s.len + v.len() > s.buf.len() {
                    return SavedConditions::default();
                }
                s.buf[s.len..s.len + v.len()].copy_from_slice(v);
                s.spans[i] = Some((s.len as u16, (s.len + v.len()) as u16));
                s.len += v.len();
            }
        }
        s
    }

    pub fn conditions(&self) -> Conditions<'_> {
        let get = |i: usize| self.spans[i].map(|(a, b)| &self.buf[usize::from(a)..usize::from(b)]);
        Conditions {
            if_none_match: get(0),
            if_modified_since: get(1),
            range: get(2),
            if_range: get(3),
        }
    }
}

/// The conditions straight from a request head still in the buffer.
pub fn conditions_of(head: &[u8]) -> Conditions<'_> {
    Conditions {
        if_none_match: find_header(head, NAMES[0]),
        if_modified_since: find_header(head, NAMES[1]),
        range: find_header(head, NAMES[2]),
        if_range: find_header(head, NAMES[3]),
    }
}
