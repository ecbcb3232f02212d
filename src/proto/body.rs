//! Message body framing: finding where a Content-Length or chunked body ends.
//!
//! Bodies are forwarded exactly as they were framed, so the scanner does not
//! decode: it reports how many of the bytes it is shown belong to the body and
//! whether the body is complete. Bytes after the end (a pipelined request, or
//! junk from a backend) are never claimed. The same scanner serves requests
//! (client → backend) and responses (backend → client).

use std::fmt;
use std::ops::Range;

/// Longest chunk extension or trailer line we accept.
const MAX_LINE: u32 = 4096;
/// Longest trailer section we accept.
const MAX_TRAILERS: u32 = 16384;
/// Most hex digits a chunk size may have, leading zeros included
/// (RFC 9112 §7.1 puts no bound on them; we do, without refusing zeros).
const MAX_SIZE_DIGITS: u8 = 32;
/// Most significant hex digits: sizes stay below 2^60.
const MAX_SIZE_SIGNIFICANT: u8 = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// A chunk size that is not hex, too large, or badly terminated.
    BadChunkSize,
    /// A chunk extension that is not `*( BWS ";" BWS name [ BWS "=" BWS value ] )`.
    BadChunkExt,
    /// Chunk data not followed by CRLF.
    BadChunkEnd,
    /// A trailer line that is not a field line ending in CRLF, or a
    /// trailer field that may not be one (Content-Length,
    /// Transfer-Encoding, Host).
    BadTrailer,
    /// A chunk extension or trailer section over the limits.
    LineTooLong,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BodyError::BadChunkSize => "malformed chunk size",
            BodyError::BadChunkExt => "malformed chunk extension",
            BodyError::BadChunkEnd => "chunk data not followed by CRLF",
            BodyError::BadTrailer => "malformed or forbidden trailer field",
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

/// Where the scanner stands in RFC 9112 §7.1's grammar:
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// chunk-ext    = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
/// ext-val      = token / quoted-string
/// trailer-section = *( field-line CRLF )
/// field-line   = field-name ":" OWS field-value OWS
/// ```
///
/// Every line ends in CRLF; a bare CR or LF, a control byte, or a line
/// starting with whitespace is an error, so every parser downstream, however
/// lenient, finds the same line boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading hex digits of a size: `digits` seen, `significant` of them
    /// after leading zeros.
    Size {
        digits: u8,
        significant: u8,
    },
    /// Whitespace after the size: only `;` may follow.
    SizeBws,
    /// After `;`: optional whitespace, then an extension name.
    ExtNameStart,
    ExtName,
    /// Whitespace after a name: `=` or `;` may follow.
    ExtAfterName,
    /// After `=`: optional whitespace, then a token or a quoted string.
    ExtValStart,
    ExtToken,
    ExtQuoted,
    ExtQuotedPair,
    /// After a closing quote.
    ExtAfterQuote,
    /// Whitespace after a value: only `;` may follow.
    ExtAfterVal,
    /// Saw CR after the size line; want LF.
    SizeLf,
    /// Inside chunk data, this many bytes left.
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    /// Saw CR of the final empty line.
    EndLf,
    Done,
}

/// A trailer name that could change how a lenient recipient frames or
/// routes the message if it merged trailers into the header section.
const FORBIDDEN_TRAILERS: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"host"];
/// Longest forbidden trailer name.
const NAME_KEEP: usize = 17;

/// Scans a chunked body (RFC 9112 §7.1) to its last chunk and trailers,
/// validating every framing byte on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedScanner {
    state: Chunk,
    size: u64,
    line: u32,
    trailers: u32,
    payload: u64,
    /// The current trailer name, lower-cased, while it is short enough to
    /// be a forbidden one (`name_len` counts every byte of it).
    name: [u8; NAME_KEEP],
    name_len: u32,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        ChunkedScanner {
            state: Chunk::Size {
                digits: 0,
                significant: 0,
            },
            size: 0,
            line: 0,
            trailers: 0,
            payload: 0,
            name: [0; NAME_KEEP],
            name_len: 0,
        }
    }
}

/// RFC 9110 §5.6.2 tchar.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A field-value byte (RFC 9110 §5.5): VCHAR, obs-text, SP, HTAB.
pub(crate) fn is_field_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// quoted-string's qdtext (RFC 9110 §5.6.4).
fn is_qdtext(b: u8) -> bool {
    b == b'\t'
        || b == b' '
        || b == 0x21
        || (0x23..=0x5b).contains(&b)
        || (0x5d..=0x7e).contains(&b)
        || b >= 0x80
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
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
            if self.state == Chunk::Data {
                let n = self.size.min((input.len() - i) as u64);
                self.size -= n;
                self.payload += n;
                i += n as usize;
                if self.size == 0 {
                    self.state = Chunk::DataCr;
                }
                continue;
            }
            if self.state == Chunk::Done {
                break;
            }
            self.step(b)?;
            i += 1;
            if self.state == Chunk::Done {
                return Ok(i);
            }
        }
        Ok(i)
    }

    /// One framing byte.
    fn step(&mut self, b: u8) -> Result<(), BodyError> {
        use Chunk::*;
        if matches!(
            self.state,
            SizeBws
                | ExtNameStart
                | ExtName
                | ExtAfterName
                | ExtValStart
                | ExtToken
                | ExtQuoted
                | ExtQuotedPair
                | ExtAfterQuote
                | ExtAfterVal
                | TrailerName
                | TrailerValue
        ) {
            self.line += 1;
            if self.line > MAX_LINE {
                return Err(BodyError::LineTooLong);
            }
        }
        if matches!(
            self.state,
            TrailerStart | TrailerName | TrailerValue | TrailerLf | EndLf
        ) {
            self.trailers += 1;
            if self.trailers > MAX_TRAILERS {
                return Err(BodyError::LineTooLong);
            }
        }
        let ext = BodyError::BadChunkExt;
        let trailer = BodyError::BadTrailer;
        self.state = match (self.state, b) {
            (
                Size {
                    digits,
                    significant,
                },
                _,
            ) if b.is_ascii_hexdigit() => {
                let significant = significant + u8::from(significant > 0 || b != b'0');
                if digits >= MAX_SIZE_DIGITS || significant > MAX_SIZE_SIGNIFICANT {
                    return Err(BodyError::BadChunkSize);
                }
                let v = (b as char).to_digit(16).unwrap_or(0);
                self.size = self.size * 16 + u64::from(v);
                Size {
                    digits: digits + 1,
                    significant,
                }
            }
            (Size { digits: 0, .. }, _) => return Err(BodyError::BadChunkSize),
            (Size { .. }, b'\r') => SizeLf,
            (Size { .. } | SizeBws, b';') => {
                self.line = 0;
                ExtNameStart
            }
            (Size { .. } | SizeBws, _) if is_ws(b) => {
                self.line = 0;
                SizeBws
            }
            (Size { .. }, _) => return Err(BodyError::BadChunkSize),
            (SizeBws, _) => return Err(ext),
            (ExtNameStart, _) if is_ws(b) => ExtNameStart,
            (ExtNameStart | ExtName, _) if is_tchar(b) => ExtName,
            (ExtName | ExtAfterName, _) if is_ws(b) => ExtAfterName,
            (ExtName | ExtAfterName, b'=') => ExtValStart,
            (ExtName | ExtAfterName | ExtToken | ExtAfterQuote | ExtAfterVal, b';') => ExtNameStart,
            (ExtName | ExtToken | ExtAfterQuote, b'\r') => SizeLf,
            (ExtValStart, _) if is_ws(b) => ExtValStart,
            (ExtValStart, b'"') => ExtQuoted,
            (ExtValStart | ExtToken, _) if is_tchar(b) => ExtToken,
            (ExtToken | ExtAfterQuote | ExtAfterVal, _) if is_ws(b) => ExtAfterVal,
            (ExtQuoted, b'"') => ExtAfterQuote,
            (ExtQuoted, b'\\') => ExtQuotedPair,
            (ExtQuoted, _) if is_qdtext(b) => ExtQuoted,
            (ExtQuotedPair, _) if is_field_byte(b) => ExtQuoted,
            (
                ExtNameStart | ExtName | ExtAfterName | ExtValStart | ExtToken | ExtQuoted
                | ExtQuotedPair | ExtAfterQuote | ExtAfterVal,
                _,
            ) => return Err(ext),
            (SizeLf, b'\n') if self.size == 0 => TrailerStart,
            (SizeLf, b'\n') => Data,
            (SizeLf, _) => return Err(BodyError::BadChunkSize),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => {
                self.size = 0;
                Size {
                    digits: 0,
                    significant: 0,
                }
            }
            (DataCr | DataLf, _) => return Err(BodyError::BadChunkEnd),
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart, _) if is_tchar(b) => {
                self.line = 1;
                self.name_len = 0;
                self.keep_name_byte(b);
                TrailerName
            }
            (TrailerName, _) if is_tchar(b) => {
                self.keep_name_byte(b);
                TrailerName
            }
            (TrailerName, b':') => {
                if self.name_is_forbidden() {
                    return Err(trailer);
                }
                TrailerValue
            }
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, _) if is_field_byte(b) => TrailerValue,
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            (TrailerStart | TrailerName | TrailerValue | TrailerLf | EndLf, _) => {
                return Err(trailer)
            }
            (s @ (Data | Done), _) => {
                debug_assert!(false, "`run` handles chunk data and the end");
                s
            }
        };
        Ok(())
    }

    fn keep_name_byte(&mut self, b: u8) {
        if let Some(slot) = self.name.get_mut(self.name_len as usize) {
            *slot = b.to_ascii_lowercase();
        }
        self.name_len = self.name_len.saturating_add(1);
    }

    fn name_is_forbidden(&self) -> bool {
        let len = self.name_len as usize;
        len <= NAME_KEEP && FORBIDDEN_TRAILERS.contains(&&self.name[..len])
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
            b"5\n",
            b"5\r5",
            b"5;a\rb\r\n",
            b"1234567890abcdef0\r\n",
            b"0x5\r\n",
            b"5\x00\r\n",
            b"000000000000000000000000000000005\r\n",
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
    fn leading_zeros_and_bws_before_an_extension_are_accepted() {
        for ok in [
            &b"0000000000000005\r\nhello\r\n0\r\n\r\n"[..],
            b"5 ;foo=bar\r\nhello\r\n0\r\n\r\n",
            b"5\t; foo = bar ;baz\r\nhello\r\n0 ;x\r\n\r\n",
            b"5;q=\"a \\\" ;b\"\r\nhello\r\n0\r\n\r\n",
            b"00000000000000000000000000000005\r\nhello\r\n0\r\n\r\n",
            b"fffffffffffffff\r\n",
        ] {
            let n = scan_all_splits(ok).unwrap();
            assert_eq!(n, ok.len(), "{:?}", String::from_utf8_lossy(ok));
        }
    }

    #[test]
    fn malformed_extensions_are_errors() {
        for bad in [
            &b"5 \r\n"[..],
            b"5;a\n",
            b"5;\r\n",
            b"5;;a\r\n",
            b"5;a\x00b\r\n",
            b"5;a=\r\n",
            b"5;a=b c\r\n",
            b"5;a=\"b\r\n",
            b"5;a=\"b\x01\"\r\n",
            b"5;a=\"b\" c\r\n",
            b"5;a \r\n",
            b"5;a=b \r\n",
            b"5 x\r\n",
            b"5;a(\r\n",
        ] {
            assert_eq!(
                scan_all_splits(bad),
                Err(BodyError::BadChunkExt),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn trailer_lines_must_be_field_lines() {
        for bad in [
            // A bare LF ends no line: no lenient parser may see an end here.
            &b"0\r\n\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"0\r\n \r\nGET /slow HTTP/1.1\r\n\r\n",
            b"0\r\n\t\r\n\r\n",
            b"0\r\nnot a field\r\n\r\n",
            b"0\r\nX: a\nY: b\r\n\r\n",
            b"0\r\nX: a\rY: b\r\n\r\n",
            b"0\r\nX : a\r\n\r\n",
            b"0\r\nX: a\r\n folded\r\n\r\n",
            b"0\r\n: a\r\n\r\n",
            b"0\r\nX: a\x00\r\n\r\n",
            b"0\r\nX: a\r\n\rX",
            b"0\r\nContent-Length: 5\r\n\r\n",
            b"0\r\ntransfer-encoding: chunked\r\n\r\n",
            b"0\r\nHOST: a\r\n\r\n",
        ] {
            assert_eq!(
                scan_all_splits(bad),
                Err(BodyError::BadTrailer),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let ok = b"0\r\nX-Sum: 1\r\nContent-Lengthy: 2\r\nY:\r\nZ:\t v \t\r\n\r\n";
        assert_eq!(scan_all_splits(ok), Ok(ok.len()));
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
