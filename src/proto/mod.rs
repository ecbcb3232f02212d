//! Sans-I/O protocol code: byte slices in, facts and events out.
//!
//! Nothing in here touches a socket or a clock, so every parser can be unit
//! tested (and fuzzed) with plain byte slices, including every split of the
//! input across reads. The reactor (`crate::reactor`) only moves bytes.

pub mod body;
pub mod handshake;
pub mod local;
pub mod packet;
pub mod request;
pub mod response;

/// Offset of `part` inside `whole`. Both must come from the same buffer
/// (httparse hands out sub-slices of the buffer it parsed).
pub(crate) fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    let off = part.as_ptr() as usize - whole.as_ptr() as usize;
    debug_assert!(off + part.len() <= whole.len());
    off
}

/// Index just past the `\n` that ends the line containing `from`.
pub(crate) fn line_end(buf: &[u8], from: usize) -> usize {
    match buf[from..].iter().position(|&b| b == b'\n') {
        Some(i) => from + i + 1,
        None => buf.len(),
    }
}

/// Does a comma-separated header value contain `token` (ASCII case-insensitive)?
pub(crate) fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parse a Content-Length value: ASCII digits only, no sign, no spaces inside.
pub(crate) fn parse_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}
