//! What a socket still has to write, as a short list of segments.
//!
//! Forwarded bytes are never copied: a segment names a range of a buffer the
//! connection already holds (`Buf`), a static string the proxy adds (header
//! lines, chunk trailers), or a few bytes in the queue's own scratch space
//! (a chunk-size line, an X-Forwarded-For value, the health body). `flush`
//! hands them all to one `writev`.
//!
//! Invariant: segments are kept in order; `Buf` segments are increasing,
//! non-overlapping ranges of the one buffer the queue is paired with.

use std::io::{self, IoSlice, Write};
use std::ops::Range;

const SEGS: usize = 24;
/// Room for the largest scratch users: the health check's tail, or the
/// entity headers of an X-Sendfile answer.
const SCRATCH: usize = 384;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seg {
    Buf(u32, u32),
    Static(&'static [u8]),
    Scratch(u16, u16),
}

pub struct OutQueue {
    segs: [Seg; SEGS],
    head: usize,
    len: usize,
    scratch: [u8; SCRATCH],
    scratch_len: usize,
}

impl Default for OutQueue {
    fn default() -> Self {
        OutQueue {
            segs: [Seg::Static(b""); SEGS],
            head: 0,
            len: 0,
            scratch: [0; SCRATCH],
            scratch_len: 0,
        }
    }
}

pub enum Flushed {
    /// Everything queued was written.
    All,
    /// The socket would block; the rest stays queued.
    Blocked,
}

impl OutQueue {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room for `segs` more segments and `scratch` more scratch bytes?
    pub fn has_room(&self, segs: usize, scratch: usize) -> bool {
        self.len + segs <= SEGS && self.scratch_len + scratch <= SCRATCH
    }

    fn push(&mut self, seg: Seg) {
        debug_assert!(self.len < SEGS);
        let i = (self.head + self.len) % SEGS;
        self.segs[i] = seg;
        self.len += 1;
    }

    fn last_mut(&mut self) -> Option<&mut Seg> {
        if self.len == 0 {
            return None;
        }
        Some(&mut self.segs[(self.head + self.len - 1) % SEGS])
    }

    /// Queues a range of the paired buffer, merging with an adjacent range.
    pub fn push_buf(&mut self, r: Range<usize>) {
        if r.is_empty() {
            return;
        }
        if let Some(Seg::Buf(_, end)) = self.last_mut() {
            if *end as usize == r.start {
                *end = r.end as u32;
                return;
            }
        }
        self.push(Seg::Buf(r.start as u32, r.end as u32));
    }

    pub fn push_static(&mut self, s: &'static [u8]) {
        if !s.is_empty() {
            self.push(Seg::Static(s));
        }
    }

    pub fn push_scratch(&mut self, bytes: &[u8]) {
        let a = self.scratch_len;
        self.scratch[a..a + bytes.len()].copy_from_slice(bytes);
        self.scratch_len += bytes.len();
        self.push(Seg::Scratch(a as u16, self.scratch_len as u16));
    }

    /// Scratch space to fill in place, then commit with `commit_scratch`.
    pub fn scratch_space(&mut self) -> &mut [u8] {
        &mut self.scratch[self.scratch_len..]
    }

    pub fn commit_scratch(&mut self, n: usize) {
        let a = self.scratch_len;
        self.scratch_len += n;
        self.push(Seg::Scratch(a as u16, self.scratch_len as u16));
    }

    /// Start of the first queued buffer range: the paired buffer must keep
    /// everything from here on.
    pub fn first_buf_start(&self) -> Option<usize> {
        (0..self.len).find_map(|k| match self.segs[(self.head + k) % SEGS] {
            Seg::Buf(a, _) => Some(a as usize),
            _ => None,
        })
    }

    pub fn has_buf_segments(&self) -> bool {
        self.first_buf_start().is_some()
    }

    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
        self.scratch_len = 0;
    }

    /// Writes as much as the socket takes with one `writev` per round.
    /// Returns the bytes written and whether everything went.
    pub fn flush<W: Write>(&mut self, mut w: W, buf: &[u8]) -> io::Result<(usize, Flushed)> {
        let mut total = 0;
        while self.len > 0 {
            let mut slices = [IoSlice::new(&[]); SEGS];
            for (k, slot) in slices.iter_mut().enumerate().take(self.len) {
                *slot = IoSlice::new(match self.segs[(self.head + k) % SEGS] {
                    Seg::Buf(a, b) => &buf[a as usize..b as usize],
                    Seg::Static(s) => s,
                    Seg::Scratch(a, b) => &self.scratch[usize::from(a)..usize::from(b)],
                });
            }
            match w.write_vectored(&slices[..self.len]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    total += n;
                    self.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((total, Flushed::Blocked))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.scratch_len = 0;
        Ok((total, Flushed::All))
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 && self.len > 0 {
            let seg = &mut self.segs[self.head];
            let seg_len = match *seg {
                Seg::Buf(a, b) => (b - a) as usize,
                Seg::Static(s) => s.len(),
                Seg::Scratch(a, b) => usize::from(b - a),
            };
            if n >= seg_len {
                n -= seg_len;
                self.head = (self.head + 1) % SEGS;
                self.len -= 1;
            } else {
                *seg = match *seg {
                    Seg::Buf(a, b) => Seg::Buf(a + n as u32, b),
                    Seg::Static(s) => Seg::Static(&s[n..]),
                    Seg::Scratch(a, b) => Seg::Scratch(a + n as u16, b),
                };
                n = 0;
            }
        }
        if self.len == 0 {
            self.head = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `max` bytes per call.
    struct Trickle {
        out: Vec<u8>,
        max: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let n = b.len().min(self.max);
            if n == 0 && !b.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.out.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn segments_are_written_in_order_whatever_the_write_sizes() {
        let buf = b"0123456789";
        for max in 1..12 {
            let mut q = OutQueue::default();
            q.push_buf(0..3);
            q.push_buf(3..5); // merges
            q.push_static(b"-S-");
            q.push_scratch(b"xy");
            q.push_buf(7..10);
            let mut w = Trickle { out: vec![], max };
            let (n, _) = q.flush(&mut w, buf).unwrap();
            assert_eq!(w.out, b"01234-S-xy789", "max {max}");
            assert_eq!(n, 13);
            assert!(q.is_empty());
        }
    }

    #[test]
    fn the_first_buffer_range_is_reported_after_partial_writes() {
        let mut q = OutQueue::default();
        q.push_static(b"ab");
        q.push_buf(4..8);
        assert_eq!(q.first_buf_start(), Some(4));
        let mut w = Trickle {
            out: vec![],
            max: 3,
        };
        q.advance(3);
        assert_eq!(q.first_buf_start(), Some(5));
        let _ = q.flush(&mut w, b"........").unwrap();
        assert_eq!(q.first_buf_start(), None);
    }
}
