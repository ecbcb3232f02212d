//! Responses the proxy writes itself: errors and the health check.
//!
//! Error responses are small text bodies with Content-Length and
//! `Connection: close`; 404 and 503 keep the classic wording.

/// The complete error response for `status`, built at compile time.
pub fn error_response(status: u16) -> &'static [u8] {
    // Each entry spells its body length; a unit test checks them.
    match status {
        400 => b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 12\r\n\r\nBad Request\n",
        404 => b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 20\r\n\r\nResource not found.\n",
        408 => b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 16\r\n\r\nRequest Timeout\n",
        413 => b"HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 18\r\n\r\nContent Too Large\n",
        414 => b"HTTP/1.1 414 URI Too Long\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 13\r\n\r\nURI Too Long\n",
        431 => b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 32\r\n\r\nRequest Header Fields Too Large\n",
        501 => b"HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 16\r\n\r\nNot Implemented\n",
        502 => b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 12\r\n\r\nBad Gateway\n",
        503 => b"HTTP/1.1 503 Server Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 19\r\n\r\nServer Unavailable\n",
        504 => b"HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 16\r\n\r\nGateway Timeout\n",
        _ => b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 22\r\n\r\nInternal Server Error\n",
    }
}

/// The health check's head, before its Content-Length value.
pub const HEALTH_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: no-store\r\nContent-Length: ";

/// Longest health tail `health_tail` writes (every counter at u64::MAX).
pub const HEALTH_TAIL_MAX: usize = 256;

/// Writes `<len>\r\n[Connection: ...\r\n]\r\n<body>` for the health check into
/// `out` (at least `HEALTH_TAIL_MAX` bytes), returning the bytes written. The
/// body has one `name:count` line per counter: the classic `400`, `404` and
/// `503` first, then any others (at most six).
pub fn health_tail(
    out: &mut [u8],
    counts: &[(&str, u64)],
    close: bool,
    http10_keep_alive: bool,
) -> usize {
    use std::io::Write;
    let mut body = [0u8; 192];
    let body_len = {
        let mut w = &mut body[..];
        for (name, n) in counts {
            let _ = writeln!(w, "{name}:{n}");
        }
        192 - w.len()
    };
    let mut w = &mut out[..];
    let conn = if close {
        "Connection: close\r\n"
    } else if http10_keep_alive {
        "Connection: keep-alive\r\n"
    } else {
        ""
    };
    let _ = write!(w, "{body_len}\r\n{conn}\r\n");
    let _ = w.write_all(&body[..body_len]);
    let left = w.len();
    out.len() - left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_response_has_a_correct_content_length() {
        for status in [400, 404, 408, 413, 414, 431, 501, 502, 503, 504, 599] {
            let r = std::str::from_utf8(error_response(status)).unwrap();
            let (head, body) = r.split_once("\r\n\r\n").unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, body.len(), "{status}");
            assert!(head.contains("Connection: close"));
            if status != 599 {
                assert!(head.starts_with(&format!("HTTP/1.1 {status} ")));
            }
        }
        assert!(error_response(404).ends_with(b"Resource not found.\n"));
        assert!(error_response(503).ends_with(b"Server Unavailable\n"));
    }

    #[test]
    fn the_health_body_lists_the_counters() {
        let mut out = [0u8; HEALTH_TAIL_MAX];
        let n = health_tail(
            &mut out,
            &[("400", 1), ("404", 22), ("503", 333)],
            false,
            false,
        );
        assert_eq!(
            std::str::from_utf8(&out[..n]).unwrap(),
            "21\r\n\r\n400:1\n404:22\n503:333\n"
        );
        let max = u64::MAX;
        let counts = [
            ("400", max),
            ("404", max),
            ("503", max),
            ("502", max),
            ("504", max),
            ("refused_handshakes", max),
        ];
        let n = health_tail(&mut out, &counts, false, true);
        let text = std::str::from_utf8(&out[..n]).unwrap();
        assert!(
            text.ends_with("refused_handshakes:18446744073709551615\n"),
            "{text}"
        );
    }
}
