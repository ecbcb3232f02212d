//! The backend handshake: the first bytes a backend sends after connecting.
//!
//! ```text
//! offset 0   11 bytes  "swiftclient"
//! offset 11  12 bytes  backend id, printable ASCII, opaque to the proxy
//! offset 23   2 bytes  key length N as two hex digits
//! offset 25   N bytes  the key
//! ```
//!
//! `parse` is called with everything received so far; it answers "need more",
//! "done, the handshake took this many bytes", or an error as soon as the
//! bytes already seen cannot become a valid handshake (so a wrong magic is
//! refused on its first byte). The key is compared in constant time.

use std::fmt;

pub const MAGIC: &[u8] = b"swiftclient";
pub const ID_LEN: usize = 12;
const FIXED_LEN: usize = 25;
/// The longest possible handshake: fixed part plus a 255-byte key.
pub const MAX_LEN: usize = FIXED_LEN + 255;

/// A backend's 12-character id, as it sent it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BackendId([u8; ID_LEN]);

impl BackendId {
    pub fn as_str(&self) -> &str {
        // Only printable ASCII is ever accepted into an id.
        std::str::from_utf8(&self.0).unwrap_or("????????????")
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackendId({})", self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    BadMagic,
    BadId,
    BadKeyLength,
    WrongKey,
    /// Bytes followed the handshake before any request was sent: the
    /// backend is out of step with the protocol (the reactor decides this;
    /// `parse` never returns it).
    BytesAfter,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeError::BadMagic => "does not start with \"swiftclient\"",
            HandshakeError::BadId => "backend id is not 12 printable ASCII characters",
            HandshakeError::BadKeyLength => "key length is not two hex digits",
            HandshakeError::WrongKey => "wrong key",
            HandshakeError::BytesAfter => "sent bytes after its handshake, before any request",
        })
    }
}

/// Parse a handshake from the bytes received so far.
///
/// `Ok(None)`: not complete yet. `Ok(Some((id, n)))`: valid, it took the first
/// `n` bytes of `buf`.
pub fn parse(buf: &[u8], key: &[u8]) -> Result<Option<(BackendId, usize)>, HandshakeError> {
    let magic_seen = buf.len().min(MAGIC.len());
    if buf[..magic_seen] != MAGIC[..magic_seen] {
        return Err(HandshakeError::BadMagic);
    }
    let id_seen = &buf[magic_seen..buf.len().min(MAGIC.len() + ID_LEN)];
    if !id_seen.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(HandshakeError::BadId);
    }
    let len_seen = &buf[(MAGIC.len() + ID_LEN).min(buf.len())..buf.len().min(FIXED_LEN)];
    if !len_seen.iter().all(u8::is_ascii_hexdigit) {
        return Err(HandshakeError::BadKeyLength);
    }
    if buf.len() < FIXED_LEN {
        return Ok(None);
    }
    let key_len = hex_digit(buf[23]) * 16 + hex_digit(buf[24]);
    let total = FIXED_LEN + key_len;
    if buf.len() < total {
        // A length that differs from the configured key can be refused now:
        // the length itself is no secret, only the key's bytes are.
        if key_len != key.len() {
            return Err(HandshakeError::WrongKey);
        }
        return Ok(None);
    }
    if !constant_time_eq(&buf[FIXED_LEN..total], key) {
        return Err(HandshakeError::WrongKey);
    }
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&buf[MAGIC.len()..MAGIC.len() + ID_LEN]);
    Ok(Some((BackendId(id), total)))
}

fn hex_digit(b: u8) -> usize {
    match b {
        b'0'..=b'9' => usize::from(b - b'0'),
        b'a'..=b'f' => usize::from(b - b'a' + 10),
        b'A'..=b'F' => usize::from(b - b'A' + 10),
        _ => 0, // callers check is_ascii_hexdigit first
    }
}

/// Compares without an early exit, so the time taken does not reveal how
/// many leading bytes of a guessed key were right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(id: &str, key: &str) -> Vec<u8> {
        format!("swiftclient{id}{:02x}{key}", key.len()).into_bytes()
    }

    #[test]
    fn a_valid_handshake_is_accepted_at_every_split() {
        let bytes = hs("7f0000011234", "abcdef1234");
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut], b"abcdef1234"), Ok(None), "cut {cut}");
        }
        let (id, n) = parse(&bytes, b"abcdef1234").unwrap().unwrap();
        assert_eq!(id.as_str(), "7f0000011234");
        assert_eq!(n, bytes.len());
    }

    #[test]
    fn bytes_after_the_handshake_are_not_consumed() {
        let mut bytes = hs("abcdefabcdef", "");
        bytes.extend_from_slice(b"extra");
        let (_, n) = parse(&bytes, b"").unwrap().unwrap();
        assert_eq!(n, 25);
    }

    #[test]
    fn no_key_means_length_00() {
        assert!(parse(b"swiftclientabcdefabcdef00", b"").unwrap().is_some());
        assert_eq!(
            parse(b"swiftclientabcdefabcdef01x", b""),
            Err(HandshakeError::WrongKey)
        );
    }

    #[test]
    fn wrong_magic_is_refused_on_the_first_bad_byte() {
        assert_eq!(parse(b"G", b""), Err(HandshakeError::BadMagic));
        assert_eq!(parse(b"swiftclienT", b""), Err(HandshakeError::BadMagic));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n", b""),
            Err(HandshakeError::BadMagic)
        );
    }

    #[test]
    fn wrong_key_and_wrong_length_are_refused() {
        assert_eq!(
            parse(&hs("abcdefabcdef", "secreT"), b"secret"),
            Err(HandshakeError::WrongKey)
        );
        assert_eq!(
            parse(&hs("abcdefabcdef", "secre"), b"secret"),
            Err(HandshakeError::WrongKey)
        );
    }

    #[test]
    fn bad_id_and_bad_length_digits_are_refused() {
        assert_eq!(
            parse(b"swiftclientabc\x01", b""),
            Err(HandshakeError::BadId)
        );
        assert_eq!(
            parse(b"swiftclientabcdefabcdefzz", b""),
            Err(HandshakeError::BadKeyLength)
        );
    }

    #[test]
    fn uppercase_hex_length_is_accepted() {
        let key = "k".repeat(0xAB);
        let bytes = format!("swiftclientabcdefabcdefAB{key}");
        assert!(parse(bytes.as_bytes(), key.as_bytes()).unwrap().is_some());
    }
}
