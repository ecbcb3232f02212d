//! Packet mode: the body framing a backend selects with `X-Swiftiply-Close`.
//!
//! ```text
//! body       = *packet terminator
//! packet     = length payload        ; length: 8 ASCII decimal digits
//! terminator = "--------"            ; 8 hyphens where a length would stand
//! ```
//!
//! The decoder yields payload ranges of the slice it is shown; the reactor
//! turns each into an HTTP/1.1 chunk (or raw bytes for HTTP/1.0 clients). Any
//! field may be split across reads: a partial length field is kept in the
//! decoder (8 bytes at most), never in the caller's buffer.

use std::fmt;
use std::ops::Range;

const FIELD: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketError;

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("packet length is neither 8 decimal digits nor the \"--------\" terminator")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketEvent {
    /// Payload bytes at this range of the slice passed to `decode`.
    Payload(Range<usize>),
    /// The terminator: the body is complete.
    End,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Length { field: [u8; FIELD], seen: u8 },
    Payload { left: u64 },
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketDecoder {
    state: State,
}

impl Default for PacketDecoder {
    fn default() -> Self {
        PacketDecoder {
            state: State::Length {
                field: [0; FIELD],
                seen: 0,
            },
        }
    }
}

impl PacketDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the start of `input`. Returns how many bytes were consumed
    /// and at most one event; call again with the rest while bytes remain.
    /// Consumes nothing once done.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<PacketEvent>), PacketError> {
        match &mut self.state {
            State::Done => Ok((0, None)),
            State::Payload { left } => {
                let n = (*left).min(input.len() as u64) as usize;
                *left -= n as u64;
                if *left == 0 {
                    self.state = State::Length {
                        field: [0; FIELD],
                        seen: 0,
                    };
                }
                Ok((n, (n > 0).then_some(PacketEvent::Payload(0..n))))
            }
            State::Length { field, seen } => {
                let take = (FIELD - usize::from(*seen)).min(input.len());
                let start = usize::from(*seen);
                field[start..start + take].copy_from_slice(&input[..take]);
                *seen += take as u8;
                let filled = &field[..usize::from(*seen)];
                let digits = filled.iter().all(u8::is_ascii_digit);
                let hyphens = filled.iter().all(|&b| b == b'-');
                if !digits && !hyphens {
                    return Err(PacketError);
                }
                if usize::from(*seen) < FIELD {
                    return Ok((take, None));
                }
                if hyphens {
                    self.state = State::Done;
                    return Ok((take, Some(PacketEvent::End)));
                }
                let len = field
                    .iter()
                    .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
                self.state = if len == 0 {
                    State::Length {
                        field: [0; FIELD],
                        seen: 0,
                    }
                } else {
                    State::Payload { left: len }
                };
                Ok((take, None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `parts` in order; returns the payload bytes and whether it ended.
    fn run(parts: &[&[u8]]) -> Result<(Vec<u8>, bool, usize), PacketError> {
        let mut d = PacketDecoder::new();
        let mut out = Vec::new();
        let mut ended = false;
        let mut leftover = 0;
        for part in parts {
            let mut pos = 0;
            while pos < part.len() {
                let (n, ev) = d.decode(&part[pos..])?;
                match ev {
                    Some(PacketEvent::Payload(r)) => {
                        out.extend_from_slice(&part[pos + r.start..pos + r.end])
                    }
                    Some(PacketEvent::End) => ended = true,
                    None => {}
                }
                if n == 0 {
                    leftover += part.len() - pos;
                    break;
                }
                pos += n;
            }
        }
        Ok((out, ended, leftover))
    }

    #[test]
    fn packets_decode_identically_at_every_split() {
        let body = b"00000005hello0000000000000003abc--------";
        for a in 0..=body.len() {
            for b in a..=body.len() {
                let (out, ended, left) = run(&[&body[..a], &body[a..b], &body[b..]]).unwrap();
                assert_eq!(out, b"helloabc", "split {a}/{b}");
                assert!(ended);
                assert_eq!(left, 0);
            }
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let body = b"00000003xyz00000000--------";
        let parts: Vec<&[u8]> = body.chunks(1).collect();
        let (out, ended, _) = run(&parts).unwrap();
        assert_eq!(out, b"xyz");
        assert!(ended);
    }

    #[test]
    fn an_empty_body_is_just_the_terminator() {
        assert_eq!(run(&[b"--------"]).unwrap(), (vec![], true, 0));
        assert_eq!(run(&[b"00000000--------"]).unwrap(), (vec![], true, 0));
    }

    #[test]
    fn bytes_after_the_terminator_are_not_consumed() {
        let (_, ended, left) = run(&[b"--------junk"]).unwrap();
        assert!(ended);
        assert_eq!(left, 4);
    }

    #[test]
    fn anything_else_in_a_length_field_is_an_error() {
        for bad in [
            &b"0000000x"[..],
            b"----0000",
            b"0-",
            b"HTTP/1.1",
            b" 0000001",
        ] {
            assert_eq!(run(&[bad]), Err(PacketError), "{bad:?}");
        }
        // Detected as soon as the bad byte arrives, not only when 8 are in.
        assert_eq!(PacketDecoder::new().decode(b"x"), Err(PacketError));
    }

    #[test]
    fn large_lengths_are_exact() {
        let mut d = PacketDecoder::new();
        assert_eq!(d.decode(b"99999999").unwrap(), (8, None));
        let chunk = vec![b'a'; 1000];
        let (n, ev) = d.decode(&chunk).unwrap();
        assert_eq!((n, ev), (1000, Some(PacketEvent::Payload(0..1000))));
        assert!(!d.is_done());
    }
}
