//! Message body framing: finding where a Content-Length or chunked body ends.
//!
//! Bodies are forwarded exactly as they were framed, so the scanner does not
//! decode: it reports how many of the bytes it is shown belong to the body and
//! whether the body is complete. Bytes after the end (a pipelined request, or
//! junk from a backend) are never claimed. The same scanner serves requests
//! (client → backend) and responses (backend → client).

use std::fmt;
use std::ops::Range;

/// Longest chunk-size line (size + extensions) or trailer line we accept.
const MAX_LINE: u32 = 4096;
/// Longest trailer section we accept.
const MAX_TRAILERS: u32 = 16384;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// A chunk size that is not hex, too large, or badly terminated.
    BadChunkSize,
    /// Chunk data not followed by CRLF.
    BadChunkEnd,
    /// A chunk extension or trailer section over the limits.
    LineTooLong,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BodyError::BadChunkSize => "malformed chunk size",
            BodyError::BadChunkEnd => "chunk data not followed by CRLF",
            BodyError::LineTooLong => "chunk extension or trailers too long",
        })
    }
}

/// Where a body ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyScanner {
    /// Exactly this many bytes remain.
    Length(u64),
    Chunked(ChunkedScanner),
    /// Runs until the sender closes (responses only).
    UntilClose,
}

impl BodyScanner {
    /// Claims the prefix of `input` that belongs to the body; returns its length.
    pub fn scan(&mut self, input: &[u8]) -> Result<usize, BodyError> {
        match self {
            BodyScanner::Length(left) => {
                let n = (*left).min(input.len() as u64);
                *left -= n;
                Ok(n as usize)
            }
            BodyScanner::Chunked(c) => c.scan(input),
            BodyScanner::UntilClose => Ok(input.len()),
        }
    }

    pub fn is_done(&self) -> bool {
        match self {
            BodyScanner::Length(left) => *left == 0,
            BodyScanner::Chunked(c) => c.is_done(),
            BodyScanner::UntilClose => false,
        }
    }

    /// Payload bytes seen so far are not tracked for Length; chunked counts them.
    pub fn chunked_payload(&self) -> u64 {
        match self {
            BodyScanner::Chunked(c) => c.payload,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading hex digits of a size (`digits` seen so far).
    Size {
        digits: u8,
    },
    /// In `;ext` after the size, up to CR.
    Ext,
    /// Saw CR after the size line; want LF.
    SizeLf,
    /// Inside chunk data, this many bytes left.
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    /// Saw CR of the final empty line.
    EndLf,
    Done,
}

/// Scans a chunked body (RFC 9112 §7.1) to its last chunk and trailers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedScanner {
    state: Chunk,
    size: u64,
    line: u32,
    trailers: u32,
    payload: u64,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        ChunkedScanner {
            state: Chunk::Size { digits: 0 },
            size: 0,
            line: 0,
            trailers: 0,
            payload: 0,
        }
    }
}

impl ChunkedScanner {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Claims the prefix of `input` that belongs to the body (framing included).
    pub fn scan(&mut self, input: &[u8]) -> Result<usize, BodyError> {
        self.run(input, false)
    }

    /// Decodes instead of scanning: consumes framing up to the next chunk
    /// data, or consumes chunk data and returns its range of `input`. Call
    /// again with the rest while bytes remain and the body is not done.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<Range<usize>>), BodyError> {
        if self.state == Chunk::Data {
            let n = self.size.min(input.len() as u64);
            self.size -= n;
            self.payload += n;
            if self.size == 0 {
                self.state = Chunk::DataCr;
            }
            let n = n as usize;
            return Ok((n, (n > 0).then_some(0..n)));
        }
        Ok((self.run(input, true)?, None))
    }

    fn run(&mut self, input: &[u8], stop_at_data: bool) -> Result<usize, BodyError> {
        let mut i = 0;
        while i < input.len() {
            if stop_at_data && self.state == Chunk::Data {
                break;
            }
            let b = input[i];
            match self.state {
                Chunk::Done => break,
                Chunk::Data => {
                    let n = self.size.min((input.len() - i) as u64);
                    self.size -= n;
                    self.payload += n;
                    i += n as usize;
                    if self.size == 0 {
                        self.state = Chunk::DataCr;
                    }
                    continue;
                }
                Chunk::Size { digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 15 {
                            return Err(BodyError::BadChunkSize);
                        }
                        let v = (b as char).to_digit(16).unwrap_or(0);
                        self.size = self.size * 16 + u64::from(v);
                        self.state = Chunk::Size { digits: digits + 1 };
                    }
                    b';' if digits > 0 => {
                        self.line = 0;
                        self.state = Chunk::Ext;
                    }
                    b'\r' if digits > 0 => self.state = Chunk::SizeLf,
                    _ => return Err(BodyError::BadChunkSize),
                },
                Chunk::Ext => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err(BodyError::LineTooLong);
                    }
                    match b {
                        b'\r' => self.state = Chunk::SizeLf,
                        b'\n' => return Err(BodyError::BadChunkSize),
                        _ => {}
                    }
                }
                Chunk::SizeLf => {
                    if b != b'\n' {
                        return Err(BodyError::BadChunkSize);
                    }
                    self.state = if self.size == 0 {
                        Chunk::TrailerStart
                    } else {
                        Chunk::Data
                    };
                }
                Chunk::DataCr => {
                    if b != b'\r' {
                        return Err(BodyError::BadChunkEnd);
                    }
                    self.state = Chunk::DataLf;
                }
                Chunk::DataLf => {
                    if b != b'\n' {
                        return Err(BodyError::BadChunkEnd);
                    }
                    self.size = 0;
                    self.state = Chunk::Size { digits: 0 };
                }
                Chunk::TrailerStart => {
                    if b == b'\r' {
                        self.state = Chunk::EndLf;
                    } else {
                        self.line = 1;
                        self.state = Chunk::TrailerLine;
                    }
                    self.count_trailer()?;
                }
                Chunk::TrailerLine => {
                    self.count_trailer()?;
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err(BodyError::LineTooLong);
                    }
                    if b == b'\r' {
                        self.state = Chunk::TrailerLf;
                    }
                }
                Chunk::TrailerLf => {
                    self.count_trailer()?;
                    if b != b'\n' {
                        return Err(BodyError::BadChunkEnd);
                    }
                    self.state = Chunk::TrailerStart;
                }
                Chunk::EndLf => {
                    if b != b'\n' {
                        return Err(BodyError::BadChunkEnd);
                    }
                    self.state = Chunk::Done;
                    return Ok(i + 1);
                }
            }
            i += 1;
        }
        Ok(i)
    }

    fn count_trailer(&mut self) -> Result<(), BodyError> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(BodyError::LineTooLong);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every pair of cut points; all must agree.
    fn scan_all_splits(input: &[u8]) -> Result<usize, BodyError> {
        let whole = {
            let mut s = ChunkedScanner::new();
            s.scan(input).map(|n| (n, s.is_done()))
        };
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let mut s = ChunkedScanner::new();
                let mut used = 0;
                let mut res = Ok(());
                for part in [&input[..a], &input[a..b], &input[b..]] {
                    if s.is_done() {
                        break;
                    }
                    match s.scan(part) {
                        Ok(n) => used += n,
                        Err(e) => {
                            res = Err(e);
                            break;
                        }
                    }
                }
                match (&whole, res) {
                    (Ok((n, done)), Ok(())) => {
                        assert_eq!((used, s.is_done()), (*n, *done), "split {a}/{b}")
                    }
                    (Err(e1), Err(e2)) => assert_eq!(*e1, e2, "split {a}/{b}"),
                    (w, r) => panic!("split {a}/{b}: whole {w:?} vs parts {r:?}"),
                }
            }
        }
        whole.map(|(n, _)| n)
    }

    #[test]
    fn a_chunked_body_ends_after_its_last_chunk_at_every_split() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nGET /next";
        let n = scan_all_splits(body).unwrap();
        assert_eq!(&body[n..], b"GET /next");
    }

    #[test]
    fn trailers_are_part_of_the_body() {
        let body = b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\nrest";
        let n = scan_all_splits(body).unwrap();
        assert_eq!(&body[n..], b"rest");
    }

    #[test]
    fn decoding_yields_the_payload_at_every_split() {
        let body = b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\nNEXT";
        for cut in 0..=body.len() {
            let mut s = ChunkedScanner::new();
            let mut out = Vec::new();
            let mut used = 0;
            for part in [&body[..cut], &body[cut..]] {
                let mut pos = 0;
                while pos < part.len() && !s.is_done() {
                    let (n, data) = s.decode(&part[pos..]).unwrap();
                    if let Some(r) = data {
                        out.extend_from_slice(&part[pos + r.start..pos + r.end]);
                    }
                    pos += n;
                }
                used += pos;
            }
            assert_eq!(out, b"helloabc", "cut {cut}");
            assert!(s.is_done());
            assert_eq!(&body[used..], b"NEXT", "cut {cut}");
        }
    }

    #[test]
    fn payload_bytes_are_counted() {
        let mut s = ChunkedScanner::new();
        s.scan(b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n").unwrap();
        assert!(s.is_done());
        assert_eq!(s.payload, 8);
    }

    #[test]
    fn malformed_chunk_sizes_are_errors() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"-1\r\n",
            b" 5\r\n",
            b"5 \r\n",
            b"5\n",
            b"5;a\n",
            b"1234567890abcdef0\r\n",
            b"+5\r\n",
        ] {
            assert_eq!(
                scan_all_splits(bad),
                Err(BodyError::BadChunkSize),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn chunk_data_must_end_with_crlf() {
        assert_eq!(scan_all_splits(b"3\r\nabcX"), Err(BodyError::BadChunkEnd));
        assert_eq!(scan_all_splits(b"3\r\nabc\rX"), Err(BodyError::BadChunkEnd));
    }

    #[test]
    fn an_endless_extension_is_refused() {
        let mut s = ChunkedScanner::new();
        let mut line = b"5;".to_vec();
        line.extend(std::iter::repeat_n(b'a', 5000));
        assert_eq!(s.scan(&line), Err(BodyError::LineTooLong));
    }

    #[test]
    fn a_length_body_claims_exactly_its_length() {
        let mut b = BodyScanner::Length(5);
        assert_eq!(b.scan(b"abc").unwrap(), 3);
        assert!(!b.is_done());
        assert_eq!(b.scan(b"defgh").unwrap(), 2);
        assert!(b.is_done());
        assert_eq!(b.scan(b"more").unwrap(), 0);
    }
}
