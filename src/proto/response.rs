//! Backend response heads: the end-of-response rule and how the response is
//! re-framed for the client.
//!
//! The end of a response (docs/protocol.md#responses-and-how-their-end-is-found), in order of precedence: no body (HEAD
//! request, 1xx, 204, 304); `X-Swiftiply-Close` → packet mode; chunked;
//! Content-Length; otherwise until the backend closes.
//!
//! What the client sees (§2.4) is the backend's head minus the hop-by-hop
//! lines listed in `ResponseHead::drop`, plus the proxy's own lines from
//! `ClientPlan::extra`, then the body (packets re-framed as chunks for
//! HTTP/1.1 clients).

use std::fmt;
use std::ops::Range;

use super::body::BodyError;
use super::packet::PacketError;
use super::{has_token, line_end, offset_in, parse_length};

const MAX_HEADERS: usize = 100;
/// Most hop-by-hop and framing header lines one response may carry; more is
/// refused as hostile (the proxy must be able to remove every one of them).
pub const MAX_SPECIAL_LINES: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    None,
    Length(u64),
    Chunked,
    Packets,
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub len: usize,
    /// Length of the blank line that ends the head: 2 (CRLF) or 1 (bare LF).
    final_nl: usize,
    pub status: u16,
    pub minor: u8,
    pub body: ResponseBody,
    /// The backend said `Connection: close`.
    pub conn_close: bool,
    /// Header lines (name through CRLF) the proxy may remove, in order:
    /// hop-by-hop lines (always removed) and framing lines (Content-Length,
    /// Transfer-Encoding: removed when the proxy re-frames the body).
    special: [(u32, u32, LineKind); MAX_SPECIAL_LINES],
    special_len: u8,
    /// Value of an `X-Sendfile` header, if any.
    pub sendfile: Option<Range<usize>>,
}

impl ResponseHead {
    /// 1xx: an interim response; the final one follows.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status)
    }

    /// The lines removed for the client, in order.
    fn dropped<'a>(&'a self, plan: &'a ClientPlan) -> impl Iterator<Item = Range<usize>> + 'a {
        self.special[..usize::from(self.special_len)]
            .iter()
            .filter(move |(_, _, kind)| match kind {
                LineKind::Hop => true,
                LineKind::Framing => plan.drop_framing,
                LineKind::Sendfile => plan.drop_sendfile,
            })
            .map(|&(a, b, _)| a as usize..b as usize)
    }

    /// The head's byte ranges the client receives, without the final blank
    /// line; the caller appends `ClientPlan::extra` and `\r\n`.
    pub fn kept_ranges<'a>(
        &'a self,
        plan: &'a ClientPlan,
    ) -> impl Iterator<Item = Range<usize>> + 'a {
        let end = self.len - self.final_nl;
        let mut pos = 0;
        let mut drops = self.dropped(plan);
        std::iter::from_fn(move || loop {
            if pos >= end {
                return None;
            }
            match drops.next() {
                Some(d) => {
                    let r = pos..d.start;
                    pos = d.end;
                    if !r.is_empty() {
                        return Some(r);
                    }
                }
                None => {
                    let r = pos..end;
                    pos = end;
                    return Some(r);
                }
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    Hop,
    Framing,
    /// X-Sendfile, and the backend's own validators (ETag, Last-Modified,
    /// Accept-Ranges, Content-Range): replaced by the file's when the proxy
    /// serves the file.
    Sendfile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    Malformed,
    /// The body's chunked framing is broken (after the head was relayed).
    Body(BodyError),
    /// A packet length is not 8 digits nor the terminator.
    Packet(PacketError),
    BadLength,
    LengthAndChunked,
    SwitchingProtocols,
    TooManyHopHeaders,
    TooLarge,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ResponseError::Body(e) => return write!(f, "response body: {e}"),
            ResponseError::Packet(e) => return write!(f, "response packets: {e}"),
            ResponseError::Malformed => "malformed response head",
            ResponseError::BadLength => "invalid or conflicting Content-Length",
            ResponseError::LengthAndChunked => "both Content-Length and Transfer-Encoding",
            ResponseError::SwitchingProtocols => "101 Switching Protocols is not supported",
            ResponseError::TooManyHopHeaders => {
                "too many Connection, Keep-Alive or framing headers"
            }
            ResponseError::TooLarge => "response head larger than the buffer",
        };
        f.write_str(text)
    }
}

/// Parse the response head at the start of `buf`. `request_is_head`: the
/// request was HEAD, so the response has no body whatever it says.
pub fn parse(buf: &[u8], request_is_head: bool) -> Result<Option<ResponseHead>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ResponseError::Malformed),
    };
    let status = resp.code.unwrap_or(0);
    if status == 101 {
        return Err(ResponseError::SwitchingProtocols);
    }
    let final_nl = if len >= 2 && buf[len - 2] == b'\r' {
        2
    } else {
        1
    };
    let mut head = ResponseHead {
        len,
        final_nl,
        status,
        minor: resp.version.unwrap_or(1),
        body: ResponseBody::UntilClose,
        conn_close: false,
        special: [(0, 0, LineKind::Hop); MAX_SPECIAL_LINES],
        special_len: 0,
        sendfile: None,
    };
    let mut length = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut packets = false;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        let start = offset_in(buf, name);
        let line = start..line_end(buf, offset_in(buf, h.value) + h.value.len());
        let kind = if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(h.value).ok_or(ResponseError::BadLength)?;
            if length.is_some_and(|old| old != n) {
                return Err(ResponseError::BadLength);
            }
            length = Some(n);
            Some(LineKind::Framing)
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te_seen = true;
            chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            Some(LineKind::Framing)
        } else if name.eq_ignore_ascii_case(b"connection") {
            head.conn_close |= has_token(h.value, "close");
            Some(LineKind::Hop)
        } else if name.eq_ignore_ascii_case(b"keep-alive") {
            Some(LineKind::Hop)
        } else if name.eq_ignore_ascii_case(b"x-swiftiply-close") {
            packets = true;
            Some(LineKind::Hop)
        } else if name.eq_ignore_ascii_case(b"etag")
            || name.eq_ignore_ascii_case(b"last-modified")
            || name.eq_ignore_ascii_case(b"accept-ranges")
            || name.eq_ignore_ascii_case(b"content-range")
        {
            Some(LineKind::Sendfile)
        } else if name.eq_ignore_ascii_case(b"x-sendfile") {
            let v0 = offset_in(buf, h.value);
            let v = h.value.trim_ascii();
            let s = v0 + (v.as_ptr() as usize - h.value.as_ptr() as usize);
            head.sendfile = Some(s..s + v.len());
            Some(LineKind::Sendfile)
        } else {
            None
        };
        if let Some(kind) = kind {
            let i = usize::from(head.special_len);
            if i == MAX_SPECIAL_LINES {
                return Err(ResponseError::TooManyHopHeaders);
            }
            head.special[i] = (line.start as u32, line.end as u32, kind);
            head.special_len += 1;
        }
    }
    let no_body = request_is_head || head.is_interim() || status == 204 || status == 304;
    head.body = if no_body {
        ResponseBody::None
    } else if packets {
        ResponseBody::Packets
    } else if chunked {
        ResponseBody::Chunked
    } else if te_seen {
        ResponseBody::UntilClose
    } else if let Some(n) = length {
        ResponseBody::Length(n)
    } else {
        ResponseBody::UntilClose
    };
    // Both framings at once are refused, except in packet mode, where the
    // proxy removes both lines and frames the body itself. A response
    // without a body keeps its lines, so the exception does not hold there.
    if te_seen && length.is_some() && head.body != ResponseBody::Packets {
        return Err(ResponseError::LengthAndChunked);
    }
    Ok(Some(head))
}

/// How one final response is delivered to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPlan {
    /// Packet payloads become HTTP/1.1 chunks.
    pub reframe_chunked: bool,
    /// A chunked body is decoded (for an HTTP/1.0 client, which cannot read
    /// chunks) and delimited by closing the connection.
    pub dechunk: bool,
    /// Remove the backend's Content-Length/Transfer-Encoding lines.
    pub drop_framing: bool,
    /// Remove the backend's X-Sendfile line (the proxy serves the file).
    pub drop_sendfile: bool,
    /// Close the client connection after this response.
    pub close_after: bool,
    /// Header lines the proxy adds before the blank line.
    pub extra: &'static [u8],
}

/// `client_keep_alive`: the client asked to keep the connection and its
/// request will have been read completely when this response ends.
pub fn plan(head: &ResponseHead, client_minor: u8, client_keep_alive: bool) -> ClientPlan {
    let http10 = client_minor == 0;
    let (reframe_chunked, dechunk, delimited_by_close) = match head.body {
        ResponseBody::Packets => (!http10, false, http10),
        ResponseBody::Chunked if http10 => (false, true, true),
        ResponseBody::UntilClose => (false, false, true),
        _ => (false, false, false),
    };
    let close_after = delimited_by_close || head.conn_close || !client_keep_alive;
    let extra: &'static [u8] = match (reframe_chunked, close_after, http10) {
        (true, true, _) => b"Transfer-Encoding: chunked\r\nConnection: close\r\n",
        (true, false, _) => b"Transfer-Encoding: chunked\r\n",
        (false, true, _) => b"Connection: close\r\n",
        (false, false, true) => b"Connection: keep-alive\r\n",
        (false, false, false) => b"",
    };
    ClientPlan {
        reframe_chunked,
        dechunk,
        drop_framing: head.body == ResponseBody::Packets || dechunk,
        drop_sendfile: false,
        close_after,
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> ResponseHead {
        parse(s.as_bytes(), false).unwrap().expect("complete")
    }

    fn client_view(s: &str, h: &ResponseHead, p: &ClientPlan) -> String {
        let mut out = String::new();
        for r in h.kept_ranges(p) {
            out.push_str(&s[r]);
        }
        out.push_str(std::str::from_utf8(p.extra).unwrap());
        out.push_str("\r\n");
        out
    }

    #[test]
    fn the_end_rule_in_order_of_precedence() {
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n").body,
            ResponseBody::None
        );
        assert_eq!(
            head("HTTP/1.1 304 Not Modified\r\n\r\n").body,
            ResponseBody::None
        );
        assert_eq!(
            head("HTTP/1.1 100 Continue\r\n\r\n").body,
            ResponseBody::None
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
                .unwrap()
                .unwrap()
                .body,
            ResponseBody::None
        );
        assert_eq!(
            head(
                "HTTP/1.1 200 OK\r\nX-Swiftiply-Close: true\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            .body,
            ResponseBody::Packets
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").body,
            ResponseBody::Chunked
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n").body,
            ResponseBody::Length(7)
        );
        assert_eq!(
            head("HTTP/1.0 200 OK\r\n\r\n").body,
            ResponseBody::UntilClose
        );
    }

    #[test]
    fn incomplete_heads_wait_at_every_split() {
        let s = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        for cut in 0..s.len() - 2 {
            assert_eq!(parse(&s[..cut], false), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn hostile_heads_are_errors() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
        ] {
            assert!(
                parse(bad, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn packet_mode_for_http11_becomes_chunked_without_the_marker() {
        let s = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Swiftiply-Close: true\r\nContent-Length: 0\r\nX-A: b\r\n\r\n";
        let h = head(s);
        let p = plan(&h, 1, true);
        assert!(p.reframe_chunked && !p.close_after);
        assert_eq!(
            client_view(s, &h, &p),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: b\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn packet_mode_for_http10_is_close_delimited() {
        let s = "HTTP/1.1 200 OK\r\nX-Swiftiply-Close: 1\r\n\r\n";
        let h = head(s);
        let p = plan(&h, 0, true);
        assert!(!p.reframe_chunked && p.close_after);
        assert_eq!(
            client_view(s, &h, &p),
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn connection_headers_concern_the_client_side() {
        let s = "HTTP/1.1 200 OK\r\nConnection: close\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n";
        let h = head(s);
        assert!(h.conn_close);
        let p = plan(&h, 1, true);
        assert!(p.close_after);
        assert_eq!(
            client_view(s, &h, &p),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let s = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let h = head(s);
        let p = plan(&h, 0, true);
        assert_eq!(p.extra, b"Connection: keep-alive\r\n");
        let p = plan(&h, 1, false);
        assert_eq!(p.extra, b"Connection: close\r\n");
        assert_eq!(plan(&h, 1, true).extra, b"");
    }

    #[test]
    fn chunked_bodies_are_decoded_for_http10_clients() {
        let s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n";
        let h = head(s);
        let p = plan(&h, 0, true);
        assert!(p.dechunk && p.close_after);
        assert_eq!(
            client_view(s, &h, &p),
            "HTTP/1.1 200 OK\r\nX-A: b\r\nConnection: close\r\n\r\n"
        );
        let p = plan(&h, 1, true);
        assert!(!p.dechunk && !p.close_after);
        assert_eq!(client_view(s, &h, &p), s);
    }

    #[test]
    fn every_framing_line_is_removed_in_packet_mode() {
        let mut s = String::from("HTTP/1.1 200 OK\r\nX-Swiftiply-Close: 1\r\n");
        for _ in 0..5 {
            s.push_str("Content-Length: 3\r\n");
        }
        s.push_str("\r\n");
        let h = head(&s);
        let view = client_view(&s, &h, &plan(&h, 1, true)).to_ascii_lowercase();
        assert!(!view.contains("content-length"), "{view}");
        let mut s = String::from("HTTP/1.1 200 OK\r\n");
        for _ in 0..MAX_SPECIAL_LINES + 1 {
            s.push_str("Connection: x\r\n");
        }
        s.push_str("\r\n");
        assert_eq!(
            parse(s.as_bytes(), false),
            Err(ResponseError::TooManyHopHeaders)
        );
    }

    #[test]
    fn until_close_bodies_close_the_client() {
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert!(plan(&h, 1, true).close_after);
    }

    #[test]
    fn bare_lf_heads_keep_their_last_header() {
        let s = "HTTP/1.1 200 OK\nX-A: b\nContent-Length: 0\n\n";
        let h = head(s);
        let p = plan(&h, 1, false);
        assert_eq!(
            client_view(s, &h, &p),
            "HTTP/1.1 200 OK\nX-A: b\nContent-Length: 0\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn both_framings_are_refused_where_packet_mode_does_not_remove_them() {
        // Found by fuzzing: a 204 (or a response to HEAD) keeps its framing
        // lines, so the packet-mode exception relayed both to the client.
        let both =
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\nX-Swiftiply-Close: 1\r\n\r\n";
        for status in ["100 Continue", "204 No Content", "304 Not Modified"] {
            let s = format!("HTTP/1.1 {status}\r\n{both}");
            assert_eq!(
                parse(s.as_bytes(), false),
                Err(ResponseError::LengthAndChunked),
                "{status}"
            );
        }
        let s = format!("HTTP/1.1 200 OK\r\n{both}");
        assert_eq!(
            parse(s.as_bytes(), true),
            Err(ResponseError::LengthAndChunked)
        );
        let h = head(&s);
        assert_eq!(h.body, ResponseBody::Packets);
        let view = client_view(&s, &h, &plan(&h, 1, true)).to_ascii_lowercase();
        assert!(!view.contains("content-length") && view.contains("transfer-encoding: chunked"));
    }

    #[test]
    fn x_sendfile_value_is_found() {
        let s = "HTTP/1.1 200 OK\r\nX-Sendfile:  /a/b.txt \r\nContent-Length: 0\r\n\r\n";
        let h = head(s);
        assert_eq!(&s[h.sendfile.unwrap()], "/a/b.txt");
    }
}
