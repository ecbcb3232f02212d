//! Fixed-size I/O buffers.
//!
//! A connection holds buffers only while it has bytes in flight; an idle
//! keep-alive client or an idle backend holds none. Buffers are fixed-size
//! (chosen at start from the config) and recycled with the rest of a
//! client's I/O state through `client::IoPool`, so steady-state traffic
//! allocates nothing.
//!
//! Invariant: `start <= end <= data.len()`; `data[start..end]` are live bytes.

pub struct Buf {
    data: Box<[u8]>,
    pub start: usize,
    pub end: usize,
}

impl Buf {
    pub fn with_capacity(size: usize) -> Self {
        Buf {
            data: vec![0u8; size].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    pub fn live(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn live_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Free space after `end`, where the next read lands.
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.data[self.end..]
    }

    pub fn has_spare(&self) -> bool {
        self.end < self.data.len()
    }

    /// Removes `range` (within the live bytes), moving what follows it down.
    pub fn remove(&mut self, range: std::ops::Range<usize>) {
        debug_assert!(self.start <= range.start && range.end <= self.end);
        self.data.copy_within(range.end..self.end, range.start);
        self.end -= range.len();
    }

    /// Moves the live bytes to the front; returns how far they moved, which
    /// the owner subtracts from every offset it keeps into this buffer.
    pub fn compact(&mut self) -> usize {
        let shift = self.start;
        if shift > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= shift;
            self.start = 0;
        }
        debug_assert!(self.start <= self.end && self.end <= self.data.len());
        shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_moves_live_bytes_to_the_front() {
        let mut b = Buf::with_capacity(8);
        b.spare()[..6].copy_from_slice(b"abcdef");
        b.end = 6;
        b.start = 4;
        assert_eq!(b.compact(), 4);
        assert_eq!(b.live(), b"ef");
        assert_eq!((b.start, b.end), (0, 2));
    }

    #[test]
    fn removing_a_range_closes_the_gap() {
        let mut b = Buf::with_capacity(8);
        b.spare()[..7].copy_from_slice(b"headBDY");
        b.end = 7;
        b.remove(4..6);
        assert_eq!(b.live(), b"headY");
    }
}
