//! Writing a static response head, or just the entity headers that an
//! X-Sendfile response adds to a backend's own head, into a caller's buffer.
//!
//! Layout of a full head (each line CRLF-terminated):
//!
//! ```text
//! HTTP/1.1 <status> <reason>
//! Content-Type: …            (not for 304 or 416)
//! Content-Length: …          (not for 304)
//! Content-Range: …           (206: bytes a-b/len; 416: bytes */len)
//! ETag: "…"
//! Last-Modified: <IMF-fixdate>
//! Accept-Ranges: bytes
//! <connection, verbatim>
//! <blank line>
//! ```
//!
//! Invariants: nothing is allocated; a buffer that is too small yields `None`
//! and its contents are unspecified (never a truncated head reported as
//! complete); [`HEAD_MAX`] bytes always suffice when the connection line is at
//! most [`CONNECTION_MAX`] bytes, and [`ENTITY_HEADERS_MAX`] always suffices
//! for the entity headers alone.

use std::time::SystemTime;

use super::conditional::{unix_time, ETag};
use super::{httpdate, Plan};

/// A buffer this large always holds `write_head`'s output when `connection`
/// is at most [`CONNECTION_MAX`] bytes.
pub const HEAD_MAX: usize = 512;
/// The longest `connection` argument [`HEAD_MAX`] is sized for.
pub const CONNECTION_MAX: usize = 128;
/// A buffer this large always holds `write_entity_headers`'s output.
pub const ENTITY_HEADERS_MAX: usize = 256;

/// What the head describes: the file's type, length and mtime.
pub struct Entity {
    pub content_type: &'static str,
    pub len: u64,
    pub mtime: SystemTime,
}

pub fn write_head(e: &Entity, p: &Plan, connection: &str, out: &mut [u8]) -> Option<usize> {
    let mut w = Writer { buf: out, pos: 0 };
    w.put(b"HTTP/1.1 ")?;
    w.put_u64(u64::from(p.status))?;
    w.put(b" ")?;
    w.put(reason(p.status).as_bytes())?;
    w.put(b"\r\n")?;
    if !matches!(p.status, 304 | 416) {
        w.put(b"Content-Type: ")?;
        w.put(e.content_type.as_bytes())?;
        w.put(b"\r\n")?;
    }
    entity_headers(&mut w, e, p)?;
    w.put(connection.as_bytes())?;
    w.put(b"\r\n")?;
    Some(w.pos)
}

pub fn write_entity_headers(e: &Entity, p: &Plan, out: &mut [u8]) -> Option<usize> {
    let mut w = Writer { buf: out, pos: 0 };
    entity_headers(&mut w, e, p)?;
    Some(w.pos)
}

fn entity_headers(w: &mut Writer<'_>, e: &Entity, p: &Plan) -> Option<()> {
    if p.status != 304 {
        w.put(b"Content-Length: ")?;
        w.put_u64(p.content_length)?;
        w.put(b"\r\n")?;
    }
    if p.status == 416 || p.unsatisfied {
        w.put(b"Content-Range: bytes */")?;
        w.put_u64(e.len)?;
        w.put(b"\r\n")?;
    } else if let (206, Some((offset, n))) = (p.status, p.range) {
        w.put(b"Content-Range: bytes ")?;
        w.put_u64(offset)?;
        w.put(b"-")?;
        w.put_u64(offset.saturating_add(n).saturating_sub(1))?;
        w.put(b"/")?;
        w.put_u64(e.len)?;
        w.put(b"\r\n")?;
    }
    w.put(b"ETag: ")?;
    w.put(ETag::of(e.mtime, e.len).as_bytes())?;
    w.put(b"\r\nLast-Modified: ")?;
    w.put(&httpdate::format(unix_time(e.mtime).0))?;
    w.put(b"\r\nAccept-Ranges: bytes\r\n")
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        416 => "Range Not Satisfiable",
        // Plans never hold anything else; keep the status line well formed
        // for a caller that builds its own.
        _ => "Unknown",
    }
}

/// A bounds-checked cursor: every write either fits whole or fails.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(bytes.len())?;
        self.buf.get_mut(self.pos..end)?.copy_from_slice(bytes);
        self.pos = end;
        Some(())
    }

    fn put_u64(&mut self, mut v: u64) -> Option<()> {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.put(&digits[i..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn hello() -> Entity {
        Entity {
            content_type: "text/plain; charset=utf-8",
            len: 5,
            mtime: UNIX_EPOCH + Duration::from_secs(784_111_777),
        }
    }

    fn plan(status: u16, content_length: u64, range: Option<(u64, u64)>) -> Plan {
        Plan {
            status,
            body: None,
            content_length,
            range,
            unsatisfied: status == 416,
        }
    }

    fn head(e: &Entity, p: &Plan, connection: &str) -> String {
        let mut out = [0u8; HEAD_MAX];
        let n = write_head(e, p, connection, &mut out).expect("fits");
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn a_small_file_gets_exactly_this_head() {
        assert_eq!(
            head(&hello(), &plan(200, 5, None), "Connection: keep-alive\r\n"),
            "HTTP/1.1 200 OK\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 5\r\n\
             ETag: \"2ebc98a1-0-5\"\r\n\
             Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Accept-Ranges: bytes\r\n\
             Connection: keep-alive\r\n\
             \r\n"
        );
    }

    #[test]
    fn partial_content_names_its_range() {
        assert_eq!(
            head(&hello(), &plan(206, 3, Some((1, 3))), ""),
            "HTTP/1.1 206 Partial Content\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 3\r\n\
             Content-Range: bytes 1-3/5\r\n\
             ETag: \"2ebc98a1-0-5\"\r\n\
             Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Accept-Ranges: bytes\r\n\
             \r\n"
        );
    }

    #[test]
    fn unsatisfiable_has_an_empty_body_and_the_length() {
        assert_eq!(
            head(&hello(), &plan(416, 0, None), "Connection: close\r\n"),
            "HTTP/1.1 416 Range Not Satisfiable\r\n\
             Content-Length: 0\r\n\
             Content-Range: bytes */5\r\n\
             ETag: \"2ebc98a1-0-5\"\r\n\
             Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Accept-Ranges: bytes\r\n\
             Connection: close\r\n\
             \r\n"
        );
    }

    #[test]
    fn not_modified_has_validators_but_no_type_or_length() {
        assert_eq!(
            head(&hello(), &plan(304, 0, None), ""),
            "HTTP/1.1 304 Not Modified\r\n\
             ETag: \"2ebc98a1-0-5\"\r\n\
             Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Accept-Ranges: bytes\r\n\
             \r\n"
        );
    }

    #[test]
    fn entity_headers_alone_for_x_sendfile() {
        let mut out = [0u8; ENTITY_HEADERS_MAX];
        let n = write_entity_headers(&hello(), &plan(200, 5, None), &mut out).unwrap();
        assert_eq!(
            &out[..n],
            b"Content-Length: 5\r\n\
              ETag: \"2ebc98a1-0-5\"\r\n\
              Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
              Accept-Ranges: bytes\r\n"
        );
    }

    #[test]
    fn the_documented_sizes_hold_for_the_widest_values() {
        let widest = Entity {
            content_type: "application/vnd.openxmlformats-officedocument.longest",
            len: u64::MAX,
            mtime: UNIX_EPOCH - Duration::new(u64::MAX / 4, 1),
        };
        let connection = "x".repeat(CONNECTION_MAX);
        for status in [200, 206, 304, 416, 999, u16::MAX] {
            let p = plan(status, u64::MAX, Some((u64::MAX - 1, u64::MAX)));
            let mut out = [0u8; HEAD_MAX];
            let n = write_head(&widest, &p, &connection, &mut out);
            assert!(n.is_some(), "status {status}");
            let mut out = [0u8; ENTITY_HEADERS_MAX];
            assert!(write_entity_headers(&widest, &p, &mut out).is_some());
        }
    }

    #[test]
    fn a_buffer_too_small_by_one_byte_is_refused() {
        let p = plan(200, 5, None);
        let mut out = [0u8; HEAD_MAX];
        let n = write_head(&hello(), &p, "", &mut out).unwrap();
        for short in 0..n {
            assert_eq!(write_head(&hello(), &p, "", &mut out[..short]), None);
        }
        let n = write_entity_headers(&hello(), &p, &mut out).unwrap();
        assert_eq!(write_entity_headers(&hello(), &p, &mut out[..n - 1]), None);
        assert_eq!(write_entity_headers(&hello(), &p, &mut out[..n]), Some(n));
    }
}
