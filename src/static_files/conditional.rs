//! Validators and the request headers that use them: ETag, Last-Modified,
//! If-None-Match, If-Modified-Since, Range and If-Range; and from them the
//! [`Plan`] of a GET or HEAD response.
//!
//! Decisions, in the order RFC 9110 §13.2.2 evaluates them:
//! 1. `If-None-Match` present: 304 when any listed tag matches by *weak*
//!    comparison (`W/"x"` matches `"x"`), when it is `*`, or when a classic
//!    unquoted tag (`If-None-Match: x`) equals our opaque tag. When present,
//!    `If-Modified-Since` is not looked at.
//! 2. Otherwise `If-Modified-Since` holding a valid HTTP-date: 304 when the
//!    file's mtime, in whole seconds, is not after it. Garbage is ignored.
//! 3. `Range` (only when no 304): one `bytes=` range (`a-b`, `a-`, `-n`) gives
//!    206; an unsatisfiable one 416. Several ranges, another unit, or a
//!    malformed value are ignored (200 with the whole file). `If-Range` that
//!    does not match the current validator by *strong* comparison (or the
//!    Last-Modified date exactly) also makes the Range ignored.
//!
//! Invariants: every function here is total over arbitrary bytes (no panics,
//! no allocation); a 206 plan's range lies inside the file and is non-empty;
//! the ETag is a pure function of (mtime, length), so it changes when a file
//! is rewritten or replaced.

use std::time::{SystemTime, UNIX_EPOCH};

use super::httpdate;
use super::{Conditions, Plan};

/// Longest ETag with its quotes: `"` 16 hex `-` 8 hex `-` 16 hex `"`.
pub const ETAG_MAX: usize = 1 + 16 + 1 + 8 + 1 + 16 + 1;

/// A strong entity tag, `"<secs hex>-<nanos hex>-<len hex>"`, kept inline.
#[derive(Clone, Copy)]
pub struct ETag {
    buf: [u8; ETAG_MAX],
    len: usize,
}

impl ETag {
    pub fn of(mtime: SystemTime, len: u64) -> ETag {
        let (secs, nanos) = unix_time(mtime);
        let mut tag = ETag {
            buf: [0; ETAG_MAX],
            len: 0,
        };
        tag.push(b'"');
        // Two's complement keeps pre-1970 mtimes distinct without a sign.
        tag.push_hex(secs as u64);
        tag.push(b'-');
        tag.push_hex(u64::from(nanos));
        tag.push(b'-');
        tag.push_hex(len);
        tag.push(b'"');
        tag
    }

    /// The tag as sent in the `ETag` header, quotes included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The tag without its quotes.
    fn opaque(&self) -> &[u8] {
        &self.buf[1..self.len - 1]
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn push_hex(&mut self, v: u64) {
        let digits = (64 - v.leading_zeros()).div_ceil(4).max(1);
        for i in (0..digits).rev() {
            self.push(b"0123456789abcdef"[((v >> (i * 4)) & 0xf) as usize]);
        }
    }
}

/// Whole seconds since the epoch (floored, negative before 1970) and the
/// nanoseconds past them.
pub fn unix_time(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (-secs, 0),
                n => (-secs - 1, 1_000_000_000 - n),
            }
        }
    }
}

/// The plan for a file of `len` bytes last modified at `mtime`.
pub fn plan_for(len: u64, mtime: SystemTime, c: &Conditions<'_>, is_head: bool) -> Plan {
    let etag = ETag::of(mtime, len);
    let (mtime_secs, _) = unix_time(mtime);

    let not_modified = match (c.if_none_match, c.if_modified_since) {
        (Some(inm), _) => none_match_hits(inm, &etag),
        (None, Some(ims)) => httpdate::parse(ims).is_some_and(|date| mtime_secs <= date),
        (None, None) => false,
    };
    if not_modified {
        return Plan {
            status: 304,
            body: None,
            content_length: 0,
            range: None,
            unsatisfied: false,
        };
    }

    let whole = Plan {
        status: 200,
        body: (!is_head && len > 0).then_some((0, len)),
        content_length: len,
        range: None,
        unsatisfied: false,
    };
    let Some(range) = c.range else {
        return whole;
    };
    if let Some(if_range) = c.if_range {
        if !if_range_holds(if_range, &etag, mtime_secs) {
            return whole;
        }
    }
    match parse_range(range, len) {
        RangeSpec::Ignore => whole,
        RangeSpec::Unsatisfiable => Plan {
            status: 416,
            body: None,
            content_length: 0,
            range: None,
            unsatisfied: true,
        },
        RangeSpec::Bytes { offset, len: n } => {
            debug_assert!(n > 0 && offset.checked_add(n).is_some_and(|end| end <= len));
            Plan {
                status: 206,
                body: (!is_head).then_some((offset, n)),
                content_length: n,
                range: Some((offset, n)),
                unsatisfied: false,
            }
        }
    }
}

/// If-None-Match: `*`, or a comma-separated list of `"x"`, `W/"x"` or the
/// classic unquoted `x`; weak comparison against our tag. An unterminated
/// quote ends the list (no match from it).
fn none_match_hits(value: &[u8], etag: &ETag) -> bool {
    let ours = etag.opaque();
    let mut rest = value;
    loop {
        rest = trim_start_list(rest);
        if rest.is_empty() {
            return false;
        }
        let Some((tag, after)) = next_entity_tag(rest) else {
            return false;
        };
        match tag {
            ListTag::Any => return true,
            ListTag::Opaque(t) if t == ours => return true,
            ListTag::Opaque(_) => {}
        }
        rest = after;
    }
}

enum ListTag<'a> {
    /// The bare `*` wildcard.
    Any,
    /// An entity tag's opaque part, weakness and quotes dropped.
    Opaque(&'a [u8]),
}

/// Skips whitespace and empty list elements.
fn trim_start_list(v: &[u8]) -> &[u8] {
    let skip = v
        .iter()
        .position(|&b| !matches!(b, b' ' | b'\t' | b','))
        .unwrap_or(v.len());
    &v[skip..]
}

/// Splits one element off the front of a non-empty list. A quoted tag may
/// contain commas; an unquoted one ends at a comma or whitespace; an
/// unterminated quote is `None`.
fn next_entity_tag(v: &[u8]) -> Option<(ListTag<'_>, &[u8])> {
    let (weak, v) = match v {
        [b'W' | b'w', b'/', rest @ ..] => (true, rest),
        _ => (false, v),
    };
    if let [b'"', inner @ ..] = v {
        let close = inner.iter().position(|&b| b == b'"')?;
        return Some((ListTag::Opaque(&inner[..close]), &inner[close + 1..]));
    }
    let end = v
        .iter()
        .position(|&b| matches!(b, b',' | b' ' | b'\t'))
        .unwrap_or(v.len());
    let tag = match &v[..end] {
        b"*" if !weak => ListTag::Any,
        t => ListTag::Opaque(t),
    };
    Some((tag, &v[end..]))
}

/// If-Range: a strong entity tag equal to ours, an HTTP-date equal to our
/// Last-Modified, or (classic clients) our unquoted tag. A weak tag never
/// matches.
fn if_range_holds(value: &[u8], etag: &ETag, mtime_secs: i64) -> bool {
    let v = value.trim_ascii();
    if v.starts_with(b"W/") || v.starts_with(b"w/") {
        false
    } else if v.starts_with(b"\"") {
        v == etag.as_bytes()
    } else if let Some(date) = httpdate::parse(v) {
        date == mtime_secs
    } else {
        v == etag.opaque()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// Serve the whole file as if there were no Range header.
    Ignore,
    Unsatisfiable,
    Bytes {
        offset: u64,
        len: u64,
    },
}

fn parse_range(value: &[u8], file_len: u64) -> RangeSpec {
    let Some(eq) = value.iter().position(|&b| b == b'=') else {
        return RangeSpec::Ignore;
    };
    if !value[..eq].trim_ascii().eq_ignore_ascii_case(b"bytes") {
        return RangeSpec::Ignore;
    }
    let mut specs = value[eq + 1..]
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return RangeSpec::Ignore; // none, or several
    };
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return RangeSpec::Ignore;
    };
    let first = spec[..dash].trim_ascii();
    let last = spec[dash + 1..].trim_ascii();

    if first.is_empty() {
        // Suffix: the last n bytes.
        let Some(n) = number(last) else {
            return RangeSpec::Ignore;
        };
        if n == 0 || file_len == 0 {
            return RangeSpec::Unsatisfiable;
        }
        let n = n.min(file_len);
        return RangeSpec::Bytes {
            offset: file_len - n,
            len: n,
        };
    }
    let Some(a) = number(first) else {
        return RangeSpec::Ignore;
    };
    let b = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(b) if b >= a => b,
            _ => return RangeSpec::Ignore, // malformed, or last < first
        }
    };
    if a >= file_len {
        return RangeSpec::Unsatisfiable;
    }
    let end = b.min(file_len - 1);
    RangeSpec::Bytes {
        offset: a,
        len: end - a + 1,
    }
}

/// Decimal digits only; values past u64 saturate (they are beyond any file).
fn number(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |acc, &d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LEN: u64 = 1000;

    /// 2021-01-01T00:00:00.5Z
    fn mtime() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_609_459_200, 500_000_000)
    }
    const LAST_MODIFIED: &[u8] = b"Fri, 01 Jan 2021 00:00:00 GMT";
    const TAG: &[u8] = b"\"5fee6600-1dcd6500-3e8\"";

    fn inputs() -> Conditions<'static> {
        Conditions::default()
    }

    fn status(c: Conditions<'_>) -> u16 {
        plan_for(LEN, mtime(), &c, false).status
    }

    fn inm(v: &'static [u8]) -> u16 {
        status(Conditions {
            if_none_match: Some(v),
            ..inputs()
        })
    }

    fn ims(v: &'static [u8]) -> u16 {
        status(Conditions {
            if_modified_since: Some(v),
            ..inputs()
        })
    }

    fn range(v: &'static [u8]) -> Plan {
        plan_for(
            LEN,
            mtime(),
            &Conditions {
                range: Some(v),
                ..inputs()
            },
            false,
        )
    }

    #[test]
    fn etag_is_deterministic_and_changes_with_mtime_or_length() {
        assert_eq!(ETag::of(mtime(), LEN).as_bytes(), TAG);
        assert_eq!(ETag::of(UNIX_EPOCH, 0).as_bytes(), b"\"0-0-0\"");
        assert_ne!(ETag::of(mtime(), LEN + 1).as_bytes(), TAG);
        let a_nanosecond_later = mtime() + Duration::from_nanos(1);
        assert_ne!(ETag::of(a_nanosecond_later, LEN).as_bytes(), TAG);
        let before_1970 = UNIX_EPOCH - Duration::new(1, 1);
        assert_eq!(unix_time(before_1970), (-2, 999_999_999));
        let widest = ETag::of(before_1970, u64::MAX);
        assert_eq!(widest.as_bytes().len(), ETAG_MAX);
    }

    #[test]
    fn no_conditions_serve_the_whole_file() {
        let p = plan_for(LEN, mtime(), &inputs(), false);
        assert_eq!(
            p,
            Plan {
                status: 200,
                body: Some((0, LEN)),
                content_length: LEN,
                range: None,
                unsatisfied: false
            }
        );
    }

    #[test]
    fn head_announces_what_get_would_send_but_has_no_body() {
        let p = plan_for(LEN, mtime(), &inputs(), true);
        assert_eq!((p.status, p.body, p.content_length), (200, None, LEN));
        let c = Conditions {
            range: Some(b"bytes=10-19"),
            ..inputs()
        };
        let p = plan_for(LEN, mtime(), &c, true);
        assert_eq!((p.status, p.body, p.content_length), (206, None, 10));
        assert_eq!(p.range, Some((10, 10)));
    }

    #[test]
    fn an_empty_file_has_no_body_to_send() {
        let p = plan_for(0, mtime(), &inputs(), false);
        assert_eq!((p.status, p.body, p.content_length), (200, None, 0));
    }

    #[test]
    fn if_none_match_strong_weak_unquoted_star_and_lists() {
        assert_eq!(inm(b"\"5fee6600-1dcd6500-3e8\""), 304);
        assert_eq!(inm(b"W/\"5fee6600-1dcd6500-3e8\""), 304);
        assert_eq!(inm(b"5fee6600-1dcd6500-3e8"), 304);
        assert_eq!(inm(b"*"), 304);
        assert_eq!(inm(b"\"a\", \"b,c\" ,W/\"5fee6600-1dcd6500-3e8\""), 304);
        assert_eq!(inm(b"\"a\",,5fee6600-1dcd6500-3e8"), 304);
        assert_eq!(inm(b"\"a\", *"), 304);
    }

    #[test]
    fn if_none_match_that_differs_serves_the_file() {
        assert_eq!(inm(b"\"5fee6600-1dcd6500-3e9\""), 200);
        assert_eq!(inm(b"\"a\", \"b\""), 200);
        assert_eq!(inm(b"\"5fee6600-1dcd6500-3e8"), 200); // unterminated
        assert_eq!(inm(b"5fee6600-1dcd6500-3e8, \"x"), 304); // matched before it
        assert_eq!(inm(b"W/*"), 200);
        assert_eq!(inm(b""), 200);
        assert_eq!(inm(b" , ,"), 200);
        assert_eq!(inm(b"\"*\""), 200); // a tag spelled *, not the wildcard
        assert_eq!(inm(b"W/"), 200);
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        let c = Conditions {
            if_none_match: Some(b"\"other\""),
            if_modified_since: Some(b"Sat, 01 Jan 2022 00:00:00 GMT"),
            ..inputs()
        };
        assert_eq!(status(c), 200);
        let c = Conditions {
            if_none_match: Some(TAG),
            if_modified_since: Some(b"Thu, 01 Jan 1970 00:00:00 GMT"),
            ..inputs()
        };
        assert_eq!(status(c), 304);
    }

    #[test]
    fn if_modified_since_equal_newer_older_and_garbage() {
        assert_eq!(ims(LAST_MODIFIED), 304); // sub-second mtime still "equal"
        assert_eq!(ims(b"Sat, 01 Jan 2022 00:00:00 GMT"), 304);
        assert_eq!(ims(b"Thu, 31 Dec 2020 23:59:59 GMT"), 200);
        assert_eq!(ims(b"Friday, 01-Jan-21 00:00:00 GMT"), 304);
        assert_eq!(ims(b"Fri Jan  1 00:00:00 2021"), 304);
        assert_eq!(ims(b"not a date"), 200);
        assert_eq!(ims(b""), 200);
        assert_eq!(ims(b"1609459200"), 200);
    }

    #[test]
    fn not_modified_beats_range() {
        let c = Conditions {
            if_none_match: Some(TAG),
            range: Some(b"bytes=0-0"),
            ..inputs()
        };
        let p = plan_for(LEN, mtime(), &c, false);
        assert_eq!(
            p,
            Plan {
                status: 304,
                body: None,
                content_length: 0,
                range: None,
                unsatisfied: false
            }
        );
    }

    #[test]
    fn ranges_first_to_last_open_ended_and_suffix() {
        let p = range(b"bytes=0-99");
        assert_eq!(
            (p.status, p.body, p.content_length),
            (206, Some((0, 100)), 100)
        );
        assert_eq!(p.range, Some((0, 100)));
        let p = range(b"bytes=900-");
        assert_eq!(
            (p.status, p.body, p.range),
            (206, Some((900, 100)), Some((900, 100)))
        );
        let p = range(b"bytes=-10");
        assert_eq!(
            (p.status, p.body, p.range),
            (206, Some((990, 10)), Some((990, 10)))
        );
        let p = range(b"bytes=999-999");
        assert_eq!(p.body, Some((999, 1)));
        let p = range(b"Bytes = 5-5 ");
        assert_eq!(p.body, Some((5, 1)));
        let p = range(b"bytes=0-0,");
        assert_eq!(p.body, Some((0, 1)));
    }

    #[test]
    fn ranges_beyond_the_end_are_clamped() {
        let p = range(b"bytes=500-5000");
        assert_eq!((p.status, p.body), (206, Some((500, 500))));
        let p = range(b"bytes=-5000");
        assert_eq!((p.status, p.body), (206, Some((0, LEN))));
        let p = range(b"bytes=0-99999999999999999999999");
        assert_eq!((p.status, p.body), (206, Some((0, LEN))));
    }

    #[test]
    fn unsatisfiable_ranges_are_416_without_a_body() {
        for v in [
            &b"bytes=1000-"[..],
            b"bytes=1000-2000",
            b"bytes=-0",
            b"bytes=99999999999999999999999-",
        ] {
            let p = range(v);
            assert_eq!(
                p,
                Plan {
                    status: 416,
                    body: None,
                    content_length: 0,
                    range: None,
                    unsatisfied: true
                },
                "{}",
                String::from_utf8_lossy(v)
            );
        }
        let c = Conditions {
            range: Some(b"bytes=0-"),
            ..inputs()
        };
        assert_eq!(plan_for(0, mtime(), &c, false).status, 416);
        let c = Conditions {
            range: Some(b"bytes=-1"),
            ..inputs()
        };
        assert_eq!(plan_for(0, mtime(), &c, false).status, 416);
    }

    #[test]
    fn multiple_or_malformed_ranges_are_ignored() {
        for v in [
            &b"bytes=0-1,5-6"[..],
            b"bytes=0-1, -5",
            b"bytes=",
            b"bytes=-",
            b"bytes=abc",
            b"bytes=5-3",
            b"bytes=1-2-3",
            b"bytes=+1-2",
            b"bytes=0x10-",
            b"items=0-1",
            b"0-1",
            b"",
            b"bytes=-1x",
        ] {
            let p = range(v);
            assert_eq!(
                (p.status, p.body),
                (200, Some((0, LEN))),
                "{}",
                String::from_utf8_lossy(v)
            );
        }
    }

    #[test]
    fn if_range_matching_keeps_the_range_and_mismatch_drops_it() {
        let with = |if_range: &'static [u8]| {
            let c = Conditions {
                range: Some(b"bytes=0-9"),
                if_range: Some(if_range),
                ..inputs()
            };
            plan_for(LEN, mtime(), &c, false).status
        };
        assert_eq!(with(TAG), 206);
        assert_eq!(with(LAST_MODIFIED), 206);
        assert_eq!(with(b"5fee6600-1dcd6500-3e8"), 206);
        assert_eq!(with(b"W/\"5fee6600-1dcd6500-3e8\""), 200);
        assert_eq!(with(b"\"old\""), 200);
        assert_eq!(with(b"Thu, 31 Dec 2020 23:59:59 GMT"), 200);
        assert_eq!(with(b"Sat, 01 Jan 2022 00:00:00 GMT"), 200);
        assert_eq!(with(b"garbage"), 200);
        assert_eq!(with(b""), 200);
    }
}
