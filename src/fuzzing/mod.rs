//! Invariant checks over arbitrary bytes, one per sans-I/O parser: the fuzz
//! targets in `fuzz/` call them, and `tests/fuzz_regressions.rs` replays
//! the committed corpora through them with stable cargo. Each `check_*`
//! panics, saying which invariant broke, when the parser misbehaves;
//! "no panic" alone is never the whole check.
//!
//! Splits: a parser fed over several reads must answer as if it had the
//! bytes at once. Head parsers are handed growing prefixes of one buffer;
//! streaming decoders are handed pieces. Short inputs are split at every
//! point; longer ones at points drawn from a hash of the input, so the
//! fuzzer picks the splits by picking the bytes, and a replay is exact.
//!
//! - `check_request_head` (`proto::request`): every prefix is "incomplete",
//!   the same head, or (only if the whole is refused) refused; trailing
//!   bytes change nothing; an accepted head's ranges lie inside it and
//!   agree with `find_header` about framing; the head as forwarded to a
//!   backend (origin-form target, X-Forwarded-For appended) parses again
//!   to the same method, version, keep-alive, framing and path.
//! - `check_body` (`proto::body`): chunked scanning and decoding give the
//!   same end, payload and error for every split, agree with each other,
//!   never claim a byte after the end, and always make progress; a decoded
//!   payload re-chunked decodes to itself; Content-Length framing claims
//!   exactly its length however the bytes arrive.
//! - `check_packets` (`proto::packet`): the same payload, end and error for
//!   every split; nothing after the terminator is consumed; any bytes,
//!   packetized at any sizes, decode back to themselves.
//! - `check_response_head` (`proto::response`): the prefix and trailing-byte
//!   rules of requests; a HEAD request changes only the framing (to none,
//!   or to a refusal of both Content-Length and Transfer-Encoding, which
//!   packet mode excuses only where it re-frames a body);
//!   for every client (1.0/1.1, keep-alive or not) the head the client
//!   receives parses to the framing the proxy uses for the body, says
//!   `Connection: close` exactly when the proxy closes, and a body that ends
//!   at close always closes.
//! - `check_handshake` (`proto::handshake`): accepted only with the key it
//!   carries, refused with any other (longer, shorter, one bit off);
//!   prefixes are "need more" or already the final error; trailing bytes
//!   are not consumed.
//! - `check_static_path` (`static_files`): over a fixed tree with symlinks
//!   out of the root, a FIFO, a masked file and a page cache, a file found
//!   for a request path or an X-Sendfile value is a regular file whose
//!   canonical path lies inside the root, never the masked file; a path
//!   percent-encoded byte by byte finds the same file.
//! - `check_config` (`config`): loading never panics; errors start with the
//!   origin; a config that loads, printed with `to_yaml`, loads again to an
//!   equal `Config` and prints the same. Inputs that would make loading
//!   resolve a host name (DNS) are skipped, so a replay needs no network.

mod config;
mod proto;
mod static_path;

pub use config::check_config;
pub use proto::{
    check_body, check_handshake, check_packets, check_request_head, check_response_head,
};
pub use static_path::check_static_path;

/// Prefix lengths to try: all of them for short inputs, else a sample.
fn cut_points(data: &[u8]) -> Vec<usize> {
    let n = data.len();
    if n <= 64 {
        return (0..n).collect();
    }
    let mut rng = Rng::new(data);
    let mut cuts: Vec<usize> = (0..32).map(|_| rng.below(n)).collect();
    cuts.extend([0, 1, n - 1]);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Ways to split `data` into pieces, as sorted cut lists: each single cut
/// (short inputs), byte by byte, and a few drawn multi-cut splits (a
/// repeated cut feeds an empty piece).
fn splits(data: &[u8]) -> Vec<Vec<usize>> {
    let n = data.len();
    let mut out = Vec::new();
    if n <= 128 {
        out.extend((1..n).map(|c| vec![c]));
    }
    out.push((1..n).collect());
    let mut rng = Rng::new(data);
    for _ in 0..8 {
        let mut cuts: Vec<usize> = (0..=rng.below(8)).map(|_| rng.below(n + 1)).collect();
        cuts.sort_unstable();
        out.push(cuts);
    }
    out
}

fn pieces<'a>(data: &'a [u8], cuts: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let bounds = || {
        std::iter::once(0)
            .chain(cuts.iter().copied())
            .chain([data.len()])
    };
    bounds()
        .zip(bounds().skip(1))
        .map(move |(a, b)| &data[a..b])
}

/// xorshift64, seeded from the input's FNV-1a hash: the same input always
/// gets the same splits.
struct Rng(u64);

impl Rng {
    fn new(data: &[u8]) -> Rng {
        let h = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Rng(h | 1)
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        if n == 0 {
            0
        } else {
            (self.0 % n as u64) as usize
        }
    }
}
