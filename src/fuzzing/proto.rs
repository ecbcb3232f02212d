//! Invariants of the sans-I/O protocol parsers (`crate::proto`): request
//! and response heads, chunked and Content-Length bodies, packet mode, the
//! backend handshake. The list is in `fuzzing/mod.rs`.

use crate::proto::body::{BodyError, BodyScanner, ChunkedScanner};
use crate::proto::packet::{PacketDecoder, PacketError, PacketEvent};
use crate::proto::request::{self, find_header, RequestBody, RequestHead};
use crate::proto::response::{self, ResponseBody, ResponseError, ResponseHead};
use crate::proto::{handshake, parse_length};

use super::{cut_points, pieces, splits, Rng};

/// The head limit the request target runs with: small enough that the
/// fuzzer reaches the 414/431 paths with modest inputs.
const MAX_HEAD: usize = 2048;
/// Bytes appended to check that what follows a head changes nothing.
const TRAILER: &[u8] = b"\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n";

// ---------------------------------------------------------------- requests

pub fn check_request_head(data: &[u8]) {
    let whole = request::parse(data, MAX_HEAD);
    for cut in cut_points(data) {
        match (request::parse(&data[..cut], MAX_HEAD), &whole) {
            (Ok(None), _) | (Err(_), Err(_)) => {}
            (Ok(Some(p)), Ok(Some(w))) if p == *w => {}
            (p, _) => panic!("request prefix of {cut} bytes gave {p:?}, the whole gave {whole:?}"),
        }
    }
    let later = request::parse(&[data, TRAILER].concat(), MAX_HEAD);
    match (&whole, &later) {
        (Ok(Some(w)), Ok(Some(l))) => assert_eq!(w, l, "trailing bytes changed the head"),
        (Ok(None), _) | (Err(_), Err(_)) => {}
        _ => panic!("trailing bytes turned {whole:?} into {later:?}"),
    }
    // `parse_mut` differs from `parse` only by a higher HTTP/1 minor
    // version, rewritten to 1.1 in place: one byte, a digit, becomes `1`.
    let mut copy = data.to_vec();
    let mutated = request::parse_mut(&mut copy, MAX_HEAD);
    let changed: Vec<usize> = (0..data.len()).filter(|&i| copy[i] != data[i]).collect();
    match (&whole, &mutated) {
        (Ok(Some(w)), m) => assert_eq!(Ok(Some(w.clone())), *m, "parse_mut changed a valid head"),
        _ if changed.is_empty() => assert_eq!(whole, mutated, "parse_mut without a rewrite"),
        _ => {
            assert_eq!(changed.len(), 1, "parse_mut rewrote more than a digit");
            let i = changed[0];
            assert!(matches!(data[i], b'2'..=b'9') && copy[i] == b'1');
            assert!(
                data[..i].ends_with(b"HTTP/1."),
                "rewrote something else than a version"
            );
            if let Ok(Some(m)) = &mutated {
                assert_eq!(m.minor, 1);
            }
        }
    }
    let Ok(Some(h)) = whole else { return };
    assert_eq!(
        request::parse(&data[..h.len], MAX_HEAD),
        Ok(Some(h.clone())),
        "the head alone parses differently"
    );
    request_facts_hold(&data[..h.len], &h);
    forwarded_request_means_the_same(&data[..h.len], &h);
}

fn request_facts_hold(head: &[u8], h: &RequestHead) {
    assert!(h.len <= MAX_HEAD, "head over the limit accepted");
    let ranges = [&h.method, &h.target, &h.path];
    for r in ranges.into_iter().chain(&h.host).chain(&h.absolute_rest) {
        assert!(
            r.start <= r.end && r.end <= h.len,
            "range {r:?} outside the head"
        );
    }
    assert_eq!(h.is_head, &head[h.method.clone()] == b"HEAD");
    assert!(h.minor <= 1);
    let origin = h.absolute_rest.clone().unwrap_or(h.target.clone());
    assert!(origin.start >= h.target.start && origin.end <= h.target.end);
    assert!(h.path.start == origin.start && h.path.end <= origin.end);
    assert!(
        !head[h.path.clone()].contains(&b'?'),
        "path holds the query"
    );
    if let Some(host) = &h.host {
        let host = &head[host.clone()];
        assert!(!host.is_empty());
        let ok = |b: &u8| b.is_ascii_alphanumeric() || b"-._[]:".contains(b);
        assert!(host.iter().all(ok), "routing host {host:?}");
    }
    assert!(h.xff_value_end.is_none_or(|x| x <= h.len));
    // `find_header` (used for Range, If-None-Match and the like) must see
    // the framing httparse saw.
    let cl = find_header(head, "content-length");
    let te = find_header(head, "transfer-encoding");
    match h.body {
        RequestBody::Chunked => {
            assert!(cl.is_none() && te.is_some_and(|v| v.eq_ignore_ascii_case(b"chunked")))
        }
        RequestBody::Length(n) => {
            assert!(te.is_none() && n > 0 && cl.and_then(parse_length) == Some(n))
        }
        RequestBody::None => {
            assert!(te.is_none() && cl.is_none_or(|v| parse_length(v) == Some(0)))
        }
    }
    if h.minor == 1 {
        assert!(find_header(head, "host").is_some());
    }
}

/// docs/protocol.md#requests: the only rewrites are the origin-form target and the
/// X-Forwarded-For value. What the backend receives must mean the same.
fn forwarded_request_means_the_same(head: &[u8], h: &RequestHead) {
    const ADDR: &[u8] = b"192.0.2.7";
    let mut out = head[h.method.start..h.target.start].to_vec();
    let mut path = Vec::new();
    match &h.absolute_rest {
        Some(rest) => {
            if rest.is_empty() || head[rest.start] == b'?' {
                out.push(b'/');
                path.push(b'/');
            }
            out.extend_from_slice(&head[rest.clone()]);
        }
        None => out.extend_from_slice(&head[h.target.clone()]),
    }
    path.extend_from_slice(&head[h.path.clone()]);
    match h.xff_value_end {
        Some(v) => {
            out.extend_from_slice(&head[h.target.end..v]);
            out.extend_from_slice(b", ");
            out.extend_from_slice(ADDR);
            out.extend_from_slice(&head[v..]);
        }
        None => {
            let nl = if head[h.len - 2] == b'\r' { 2 } else { 1 };
            out.extend_from_slice(&head[h.target.end..h.len - nl]);
            out.extend_from_slice(b"X-Forwarded-For: ");
            out.extend_from_slice(ADDR);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&head[h.len - nl..]);
        }
    }
    if let Some(a) = &h.add_host {
        let blank = out.len() - 2;
        let line = [b"Host: ", &head[a.clone()], b"\r\n"].concat();
        out.splice(blank..blank, line);
    }
    // Framed one way only: every line the backend gets ends in CRLF.
    for (i, &b) in out.iter().enumerate() {
        assert!(
            b != b'\n' || (i > 0 && out[i - 1] == b'\r'),
            "a bare LF in the forwarded head {:?}",
            String::from_utf8_lossy(&out)
        );
        assert!(
            b != b'\r' || out.get(i + 1) == Some(&b'\n'),
            "a bare CR forwarded"
        );
    }
    let f = match request::parse(&out, MAX_HEAD + 64) {
        Ok(Some(f)) => f,
        // A request with exactly MAX_HEADERS headers and no X-Forwarded-For
        // would be one header over: the proxy answers it 431 instead of
        // forwarding it (`requests.rs`).
        Err(request::RequestError::HeaderTooLarge) if h.xff_value_end.is_none() => return,
        other => panic!(
            "the forwarded head {:?} gave {other:?}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(f.len, out.len(), "forwarded head length");
    assert_eq!(
        (&out[f.method.clone()], f.minor, f.keep_alive, f.body),
        (&head[h.method.clone()], h.minor, h.keep_alive, h.body),
        "the forwarded head means something else"
    );
    assert_eq!(&out[f.path.clone()], &path[..], "forwarded path");
    assert!(f.absolute_rest.is_none());
    if h.absolute_rest.is_none() {
        let host = |b: &[u8], r: &Option<std::ops::Range<usize>>| r.clone().map(|r| b[r].to_vec());
        assert_eq!(host(&out, &f.host), host(head, &h.host), "forwarded host");
    }
    let xff_end = f
        .xff_value_end
        .expect("the forwarded head has X-Forwarded-For");
    assert!(out[..xff_end].ends_with(ADDR), "client address not last");
}

// -------------------------------------------------------------- bodies

/// Where a chunked scan ended: bytes claimed, done, payload bytes counted.
#[derive(Debug, PartialEq, Eq)]
struct Scanned {
    used: usize,
    done: bool,
    payload: u64,
}

/// A chunked decode: bytes consumed, done, the payload.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    used: usize,
    done: bool,
    payload: Vec<u8>,
}

pub fn check_body(data: &[u8]) {
    let scanned = scan_chunked(data, &[]);
    let decoded = decode_chunked(data, &[]);
    for cuts in splits(data) {
        assert_eq!(
            scan_chunked(data, &cuts),
            scanned,
            "chunked scan split at {cuts:?}"
        );
        assert_eq!(
            decode_chunked(data, &cuts),
            decoded,
            "chunked decode split at {cuts:?}"
        );
    }
    match (&scanned, &decoded) {
        (Ok(s), Ok(d)) => {
            assert_eq!(
                (s.used, s.done),
                (d.used, d.done),
                "scan and decode disagree"
            );
            assert_eq!(s.payload, d.payload.len() as u64, "payload count");
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "scan and decode fail differently"),
        _ => panic!("scan gave {scanned:?}, decode gave {decoded:?}"),
    }
    if let Ok(sc) = &scanned {
        if sc.done {
            // Framed one way only: a lenient parser (lines end at LF,
            // sizes are leading hex digits, the trailer section ends at the
            // first blank-looking line) ends the body where the scanner did,
            // and the strict and lenient payloads are the same bytes.
            let lenient = lenient_chunked(&data[..sc.used]);
            assert_eq!(
                lenient.as_ref().map(|(end, _)| *end),
                Some(sc.used),
                "a lenient parser frames an accepted body differently"
            );
            if let (Some((_, payload)), Ok(d)) = (lenient, &decoded) {
                assert_eq!(payload, d.payload, "a lenient parser decodes other bytes");
            }
        }
    }
    if let Ok(d) = &decoded {
        let rechunked = chunk(&d.payload, &mut Rng::new(data));
        let again = decode_chunked(&rechunked, &[]).expect("a re-chunked body decodes");
        assert_eq!((again.used, again.done), (rechunked.len(), true));
        assert_eq!(
            again.payload, d.payload,
            "a re-chunked body decodes to itself"
        );
    }
    let n = data.len() as u64;
    let drawn = splits(data);
    for length in [0, n / 2, n, n + 1] {
        // Byte by byte and the drawn splits (the last ones) suffice here.
        for cuts in drawn.iter().rev().take(9) {
            let mut b = BodyScanner::Length(length);
            let used: usize = pieces(data, cuts)
                .map(|p| b.scan(p).expect("a Length body never fails"))
                .sum();
            assert_eq!(
                used as u64,
                length.min(n),
                "Content-Length {length} claimed"
            );
            assert_eq!(b.is_done(), n >= length);
        }
    }
}

fn scan_chunked(data: &[u8], cuts: &[usize]) -> Result<Scanned, BodyError> {
    let mut s = BodyScanner::Chunked(ChunkedScanner::new());
    let mut used = 0;
    for piece in pieces(data, cuts) {
        if s.is_done() {
            break;
        }
        let n = s.scan(piece)?;
        assert!(
            s.is_done() || n == piece.len(),
            "an unfinished body left bytes"
        );
        used += n;
    }
    if s.is_done() {
        assert_eq!(s.scan(&data[used..]), Ok(0), "claimed bytes after the end");
    }
    Ok(Scanned {
        used,
        done: s.is_done(),
        payload: s.chunked_payload(),
    })
}

fn decode_chunked(data: &[u8], cuts: &[usize]) -> Result<Decoded, BodyError> {
    let mut s = ChunkedScanner::new();
    let mut out = Decoded {
        used: 0,
        done: false,
        payload: Vec::new(),
    };
    for piece in pieces(data, cuts) {
        let mut pos = 0;
        while pos < piece.len() && !s.is_done() {
            let (n, data) = s.decode(&piece[pos..])?;
            assert!(n > 0, "decode made no progress");
            if let Some(r) = data {
                assert!(r.start < r.end && r.end <= n, "payload range {r:?} of {n}");
                out.payload
                    .extend_from_slice(&piece[pos + r.start..pos + r.end]);
            }
            pos += n;
        }
        out.used += pos;
    }
    out.done = s.is_done();
    Ok(out)
}

/// How a lenient HTTP/1 server reads a chunked body (the Mongrel-era kind
/// the proxy stands in front of): the end and the payload, or None where it
/// would give up.
fn lenient_chunked(data: &[u8]) -> Option<(usize, Vec<u8>)> {
    let line_at = |pos: usize| -> Option<(&[u8], usize)> {
        let n = data[pos..].iter().position(|&b| b == b'\n')?;
        Some((&data[pos..pos + n], pos + n + 1))
    };
    let mut pos = 0;
    let mut payload = Vec::new();
    loop {
        let (line, next) = line_at(pos)?;
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let hex = std::str::from_utf8(&line[..digits]).ok()?;
        let size = u64::from_str_radix(hex.trim_start_matches('0'), 16)
            .or_else(|e| if hex.is_empty() { Err(e) } else { Ok(0) })
            .ok()? as usize;
        pos = next;
        if size == 0 {
            loop {
                let (line, next) = line_at(pos)?;
                pos = next;
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    return Some((pos, payload));
                }
            }
        }
        payload.extend_from_slice(data.get(pos..pos.checked_add(size)?)?);
        pos += size;
        let (_, next) = line_at(pos)?;
        pos = next;
    }
}

/// `payload` as a chunked body with chunk sizes drawn from `rng`.
fn chunk(payload: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let (c, r) = rest.split_at(1 + rng.below(rest.len().min(300)));
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
        rest = r;
    }
    out.extend_from_slice(b"0\r\nX-T: 1\r\n\r\n");
    out
}

// ------------------------------------------------------------- packets

/// A packet decode: payload, whether the terminator came, bytes consumed.
#[derive(Debug, PartialEq, Eq)]
struct Unpacked {
    payload: Vec<u8>,
    ended: bool,
    used: usize,
}

pub fn check_packets(data: &[u8]) {
    let whole = decode_packets(data, &[]);
    for cuts in splits(data) {
        let split = decode_packets(data, &cuts);
        match (&whole, &split) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "packets split at {cuts:?}"),
            // Where the error is noticed depends on the split; what was
            // delivered before it does not.
            (Err((a, _)), Err((b, _))) => assert_eq!(a, b, "packets split at {cuts:?}"),
            _ => panic!("packets split at {cuts:?}: {split:?}, whole: {whole:?}"),
        }
    }
    let mut rng = Rng::new(data);
    let mut body = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (p, r) = rest.split_at(rng.below(rest.len().min(300) + 1));
        body.extend_from_slice(format!("{:08}", p.len()).as_bytes());
        body.extend_from_slice(p);
        rest = r;
    }
    body.extend_from_slice(b"--------00000003abc");
    let round = decode_packets(&body, &[]).expect("packetized bytes decode");
    assert_eq!(round.payload, data, "packetized bytes decode to themselves");
    assert!(round.ended && round.used == body.len() - 11);
}

/// Err: the payload delivered before the error, and the error.
fn decode_packets(data: &[u8], cuts: &[usize]) -> Result<Unpacked, (Vec<u8>, PacketError)> {
    let mut d = PacketDecoder::new();
    let mut out = Unpacked {
        payload: Vec::new(),
        ended: false,
        used: 0,
    };
    for piece in pieces(data, cuts) {
        let mut pos = 0;
        while pos < piece.len() {
            let (n, ev) = match d.decode(&piece[pos..]) {
                Ok(r) => r,
                Err(e) => return Err((out.payload, e)),
            };
            let quiet = ev.is_none();
            match ev {
                Some(PacketEvent::Payload(r)) => {
                    assert!(r.start < r.end && r.end <= n, "payload range {r:?} of {n}");
                    out.payload
                        .extend_from_slice(&piece[pos + r.start..pos + r.end]);
                }
                Some(PacketEvent::End) => {
                    assert!(!out.ended, "two terminators");
                    out.ended = true;
                }
                None => {}
            }
            assert_eq!(n == 0, d.is_done() && quiet, "progress");
            if n == 0 {
                break;
            }
            pos += n;
        }
        out.used += pos;
    }
    assert_eq!(out.ended, d.is_done());
    Ok(out)
}

// ------------------------------------------------------------ responses

pub fn check_response_head(data: &[u8]) {
    let whole = response::parse(data, false);
    for cut in cut_points(data) {
        match (response::parse(&data[..cut], false), &whole) {
            (Ok(None), _) | (Err(_), Err(_)) => {}
            (Ok(Some(p)), Ok(Some(w))) if p == *w => {}
            (p, _) => panic!("response prefix of {cut} bytes gave {p:?}, the whole gave {whole:?}"),
        }
    }
    let later = response::parse(&[data, TRAILER].concat(), false);
    match (&whole, &later) {
        (Ok(Some(w)), Ok(Some(l))) => assert_eq!(w, l, "trailing bytes changed the head"),
        (Ok(None), _) | (Err(_), Err(_)) => {}
        _ => panic!("trailing bytes turned {whole:?} into {later:?}"),
    }
    let for_head = response::parse(data, true);
    match (&whole, &for_head) {
        (Ok(Some(w)), Ok(Some(h))) => {
            assert_eq!(h.body, ResponseBody::None, "a response to HEAD has a body");
            let mut same = h.clone();
            same.body = w.body;
            assert_eq!(w, &same, "HEAD changed more than the framing");
        }
        (Ok(None), Ok(None)) => {}
        (Err(a), Err(b)) => assert_eq!(a, b),
        // Packet mode excuses both framings at once only where it re-frames
        // a body; a response to HEAD would relay both lines.
        (Ok(Some(w)), Err(ResponseError::LengthAndChunked)) if w.body == ResponseBody::Packets => {}
        _ => panic!("for GET: {whole:?}, for HEAD: {for_head:?}"),
    }
    let Ok(Some(h)) = whole else { return };
    assert!(h.len <= data.len());
    let bodiless = h.is_interim() || h.status == 204 || h.status == 304;
    assert_eq!(
        bodiless,
        h.body == ResponseBody::None,
        "status {}",
        h.status
    );
    assert!(h.sendfile.as_ref().is_none_or(|r| r.end <= h.len));
    if h.is_interim() {
        return; // relayed as it came, without a plan
    }
    for (minor, keep_alive) in [(0, false), (0, true), (1, false), (1, true)] {
        client_head_frames_the_body(&data[..h.len], &h, minor, keep_alive);
    }
}

/// The head the client receives must tell it where the body ends exactly
/// as the proxy will end it (docs/protocol.md#what-the-client-receives).
fn client_head_frames_the_body(head: &[u8], h: &ResponseHead, minor: u8, keep_alive: bool) {
    let plan = response::plan(h, minor, keep_alive);
    let mut view = Vec::new();
    let mut last = 0;
    for r in h.kept_ranges(&plan) {
        assert!(
            last <= r.start && r.start < r.end && r.end <= h.len,
            "kept {r:?}"
        );
        last = r.end;
        view.extend_from_slice(&head[r]);
    }
    view.extend_from_slice(plan.extra);
    view.extend_from_slice(b"\r\n");
    let v = match response::parse(&view, false) {
        Ok(Some(v)) => v,
        // The proxy's own limit on such lines, not the client's.
        Err(ResponseError::TooManyHopHeaders) => return,
        other => panic!(
            "the client's head {:?} gave {other:?}",
            String::from_utf8_lossy(&view)
        ),
    };
    let what = || format!("client 1.{minor} keep-alive {keep_alive}, head {view:?}");
    assert_eq!(v.len, view.len(), "{}", what());
    assert_eq!((v.status, v.minor), (h.status, h.minor), "{}", what());
    let expected = match h.body {
        ResponseBody::Packets if plan.reframe_chunked => ResponseBody::Chunked,
        ResponseBody::Packets => ResponseBody::UntilClose,
        ResponseBody::Chunked if plan.dechunk => ResponseBody::UntilClose,
        other => other,
    };
    assert_eq!(v.body, expected, "framing the client reads; {}", what());
    assert_eq!(
        v.conn_close,
        plan.close_after,
        "Connection: close; {}",
        what()
    );
    if expected == ResponseBody::UntilClose {
        assert!(
            plan.close_after,
            "a close-delimited body kept open; {}",
            what()
        );
    }
    let value = |b: &[u8], r: &Option<std::ops::Range<usize>>| r.clone().map(|r| b[r].to_vec());
    assert_eq!(value(&view, &v.sendfile), value(head, &h.sendfile));
}

// ------------------------------------------------------------ handshake

pub fn check_handshake(data: &[u8]) {
    let fixed = handshake::MAGIC.len() + handshake::ID_LEN + 2;
    // The key the bytes carry: what follows the length field, up to the
    // length it declares.
    let declared = data
        .get(fixed - 2..fixed)
        .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
        .and_then(|hex| usize::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
    let carried = match declared {
        Some(n) => &data[fixed..data.len().min(fixed + n)],
        None => b"",
    };
    let mut flipped = carried.to_vec();
    if let Some(b) = flipped.last_mut() {
        *b ^= 1;
    }
    let longer = [carried, b"x"].concat();
    let shorter = &carried[..carried.len().saturating_sub(1)];
    let keys: [&[u8]; 6] = [carried, &flipped, &longer, shorter, b"", b"secret"];
    let mut accepted_with = Vec::new();
    for key in keys {
        let whole = handshake::parse(data, key);
        for cut in cut_points(data) {
            match (handshake::parse(&data[..cut], key), &whole) {
                (Ok(None), _) => {}
                (Ok(Some(p)), Ok(Some(w))) if p == *w => {}
                (Err(p), Err(w)) if p == *w => {}
                (p, _) => panic!("handshake prefix of {cut} gave {p:?}, whole {whole:?}"),
            }
        }
        let later = handshake::parse(&[data, b"GET / HTTP/1.1\r\n"].concat(), key);
        if !whole.is_ok_and(|w| w.is_none()) {
            assert_eq!(later, whole, "trailing bytes changed the answer");
        }
        if let Ok(Some((id, n))) = whole {
            assert_eq!(n, fixed + key.len());
            assert_eq!(
                &data[fixed..n],
                key,
                "accepted with a key it does not carry"
            );
            assert_eq!(
                id.as_str().as_bytes(),
                &data[handshake::MAGIC.len()..fixed - 2]
            );
            accepted_with.push(key);
        }
    }
    // Keys in the list may coincide (the carried key may be "secret").
    assert!(
        accepted_with.iter().all(|k| *k == carried),
        "accepted with {accepted_with:?}"
    );
    let complete = declared == Some(carried.len())
        && data.starts_with(handshake::MAGIC)
        && data[handshake::MAGIC.len()..fixed - 2]
            .iter()
            .all(|b| (0x20..0x7f).contains(b));
    assert_eq!(
        complete,
        !accepted_with.is_empty(),
        "a complete handshake refused"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_hostile_requests_hold_the_invariants() {
        for r in [
            &b"GET /a?b HTTP/1.1\r\nHost: a.example:80\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n"[..],
            b"GET http://h.example HTTP/1.0\n\n",
            b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n",
            b"\r\nHEAD https://b?q#f HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            check_request_head(r);
        }
        check_request_head(&[b'a'; 3000]);
    }

    #[test]
    fn bodies_and_packets_decode_alike_at_every_split() {
        check_body(b"5\r\nhello\r\n1a;x=y\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: 1\r\n\r\nNEXT");
        check_body(b"5\r\nhel");
        check_body(b"5\r\nhelloX");
        check_body(b"");
        check_packets(b"00000005hello00000000--------junk");
        check_packets(b"0000000");
        check_packets(b"00000002ab0x");
    }

    #[test]
    fn responses_frame_the_body_for_every_client() {
        for r in [
            &b"HTTP/1.1 200 OK\r\nX-Swiftiply-Close: 1\r\nContent-Length: 5\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            b"HTTP/1.0 204 No Content\nKeep-Alive: 5\n\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nX-Sendfile: /a\r\n\r\n",
        ] {
            check_response_head(r);
        }
    }

    #[test]
    fn handshakes_are_accepted_only_with_their_key() {
        check_handshake(b"swiftclient7f0000011234");
        check_handshake(b"swiftclient7f000001123406secret");
        check_handshake(b"swiftclient7f000001123406secretGET");
        check_handshake(b"swiftclient7f000001123400");
        check_handshake(b"swiftclient7f0000011234zz");
        check_handshake(b"GET / HTTP/1.1");
    }
}
