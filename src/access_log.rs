//! The access log: one line per finished request, in the combined log format
//! extended with Swiftiply's own fields (`access_log: PATH` or `stderr`).
//!
//! The reactor fills a [`Record`] when a request is finished and calls
//! [`AccessLog::record`], which only formats the line into a buffer; at the
//! end of each event-loop iteration it calls [`AccessLog::flush`], which
//! writes everything buffered during that iteration with one write(2). On
//! SIGUSR1 it calls [`AccessLog::reopen`] (log rotation). Each worker thread
//! has its own `AccessLog` on the same path. With logging off the reactor
//! holds no `AccessLog` at all.
//!
//! One line, fields separated by single spaces:
//!
//! ```text
//! CLIENT - - [DD/Mon/YYYY:HH:MM:SS +0000] "METHOD TARGET VERSION" STATUS BYTES_OUT "REFERER" "USER_AGENT" SECTION BACKEND WAIT_MS BACKEND_MS TOTAL_MS BYTES_IN TERMINATION
//! ```
//!
//! - `CLIENT`: the client address (an IPv4-mapped IPv6 address is shown as
//!   IPv4); the two `-` are the combined format's identity and user fields.
//! - The time is `Record::start` (request head complete), in UTC.
//! - The request field is the request line as received (a missing part is
//!   left out with its space), or `"-"` when none was parsed.
//! - `STATUS` is `-` when no response was sent; `BYTES_OUT` and `BYTES_IN`
//!   are plain numbers (head + body, 0 allowed).
//! - `REFERER` and `USER_AGENT` are `"-"` when absent; `SECTION` and
//!   `BACKEND` are `-` when none.
//! - `WAIT_MS`, `BACKEND_MS` and `TOTAL_MS` are milliseconds with exactly
//!   three decimals (`0.042`, `1234.500`), truncated to the microsecond;
//!   `WAIT_MS` and `BACKEND_MS` are `-` when the request never queued or never
//!   reached a backend.
//! - `TERMINATION` is one word, [`Termination::as_str`].
//!
//! Invariants:
//! - A record is exactly one line: inside the quoted fields `"` and `\`
//!   become `\"` and `\\`, and every byte below 0x20, 0x7f and every byte
//!   from 0x80 becomes `\xHH` (lower-case hex). `SECTION` and `BACKEND` are
//!   escaped the same way and their spaces too (`\x20`). No byte a client
//!   sends can end a line early or add a field.
//! - The buffer holds whole lines only, and each write(2) carries whole
//!   lines: at most 64 KiB of them to a file, at most 4 KiB (`PIPE_BUF`) to
//!   stderr, or one longer line alone. Appends of whole lines by several
//!   workers to one file opened with `O_APPEND` do not interleave (on a local
//!   file system); writes of at most `PIPE_BUF` to a pipe are atomic.
//! - `record` never panics, and once the buffer has grown to its working
//!   size it never allocates.
//! - A failing write never stops the proxy: the lines are dropped, a warning
//!   is logged when a failure streak begins, and one more when writes succeed
//!   again, with the count of lines lost.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::static_files::httpdate::civil_from_days;

/// Largest batch of lines written to a file in one write(2): large enough
/// that a busy iteration costs one system call, small enough that a worker
/// does not hold a burst of lines in memory.
const FILE_BATCH_MAX: usize = 64 * 1024;

/// Largest batch written to stderr in one write(2). stderr is often a pipe
/// (a container runtime, the journal), where only writes of at most
/// `PIPE_BUF` bytes are atomic: larger ones could interleave with another
/// worker's lines or a log message.
const PIPE_BATCH_MAX: usize = 4096;

/// Buffer capacity at open; it grows to the working size under load.
const INITIAL_CAPACITY: usize = 8 * 1024;

/// 9999-12-31T23:59:59Z, the last instant a four-digit year can show.
const MAX_SECS: u64 = 253_402_300_799;

/// Why a request ended, as the last field of its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// A backend's response was delivered.
    Ok,
    /// A file from the section's docroot was sent.
    Static,
    /// The proxy answered by itself (health check, status page).
    Local,
    /// The request could not be parsed or was refused (4xx from the proxy).
    BadRequest,
    /// No section serves the request's Host (404).
    NoSection,
    /// No backend became free within `timeout` (503).
    QueueTimeout,
    /// The backend failed (502, or the response was cut).
    BackendFailed,
    /// The backend went silent past `backend_timeout` (504).
    BackendTimeout,
    /// The client closed the connection before the response was complete.
    ClientClosed,
    /// The client was too slow (header or write timeout).
    ClientTimeout,
    /// Cut at `shutdown_timeout` while the proxy was stopping.
    Shutdown,
}

impl Termination {
    /// The word written in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Termination::Ok => "ok",
            Termination::Static => "static",
            Termination::Local => "local",
            Termination::BadRequest => "bad_request",
            Termination::NoSection => "no_section",
            Termination::QueueTimeout => "queue_timeout",
            Termination::BackendFailed => "backend_failed",
            Termination::BackendTimeout => "backend_timeout",
            Termination::ClientClosed => "client_closed",
            Termination::ClientTimeout => "client_timeout",
            Termination::Shutdown => "shutdown",
        }
    }
}

/// One finished request, as the reactor saw it. Borrowed byte fields are raw
/// bytes from the wire; the formatter escapes them.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub client: IpAddr,
    /// When the request head was complete.
    pub start: SystemTime,
    pub method: &'a [u8],
    pub target: &'a [u8],
    /// E.g. `b"HTTP/1.1"`; empty when no request line was parsed.
    pub version: &'a [u8],
    /// 0 when no response was sent.
    pub status: u16,
    /// Bytes written to the client for this request (head + body).
    pub bytes_out: u64,
    /// Bytes read from the client for this request (head + body).
    pub bytes_in: u64,
    /// Empty = absent.
    pub referer: &'a [u8],
    /// Empty = absent.
    pub user_agent: &'a [u8],
    /// "" = no section chosen.
    pub section: &'a str,
    /// Backend id; "" = none.
    pub backend: &'a str,
    /// Time waiting for a free backend; `None` = never queued or dispatched.
    pub queue_wait: Option<Duration>,
    /// From dispatch to a backend until its response was complete; `None` =
    /// no backend.
    pub backend_time: Option<Duration>,
    /// From head complete to the last byte written.
    pub total: Duration,
    pub termination: Termination,
}

impl Record<'_> {
    /// Appends this request's line, ending in `\n`, to `out`. Allocates only
    /// if `out` must grow.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail; IpAddr's Display formats on the
        // stack.
        let _ = write!(out, "{}", self.client.to_canonical());
        out.extend_from_slice(b" - - [");
        push_clf_time(out, self.start);
        out.extend_from_slice(b"] \"");
        if self.method.is_empty() && self.version.is_empty() {
            out.push(b'-');
        } else {
            let mut first = true;
            for part in [self.method, self.target, self.version] {
                if part.is_empty() {
                    continue;
                }
                if !first {
                    out.push(b' ');
                }
                first = false;
                push_escaped(out, part, Spaces::Keep);
            }
        }
        out.extend_from_slice(b"\" ");
        match self.status {
            0 => out.push(b'-'),
            status => push_u64(out, u64::from(status)),
        }
        out.push(b' ');
        push_u64(out, self.bytes_out);
        out.extend_from_slice(b" \"");
        push_escaped_or_dash(out, self.referer, Spaces::Keep);
        out.extend_from_slice(b"\" \"");
        push_escaped_or_dash(out, self.user_agent, Spaces::Keep);
        out.extend_from_slice(b"\" ");
        push_escaped_or_dash(out, self.section.as_bytes(), Spaces::Escape);
        out.push(b' ');
        push_escaped_or_dash(out, self.backend.as_bytes(), Spaces::Escape);
        out.push(b' ');
        push_ms_or_dash(out, self.queue_wait);
        out.push(b' ');
        push_ms_or_dash(out, self.backend_time);
        out.push(b' ');
        push_ms(out, self.total);
        out.push(b' ');
        push_u64(out, self.bytes_in);
        out.push(b' ');
        out.extend_from_slice(self.termination.as_str().as_bytes());
        out.push(b'\n');
    }
}

/// Where the lines go.
enum Sink {
    Stderr,
    File {
        path: PathBuf,
        file: File,
    },
    /// Keeps each write(2) the log would make, so tests can see the batches.
    #[cfg(test)]
    Memory(Vec<Vec<u8>>),
}

impl Sink {
    fn batch_max(&self) -> usize {
        match self {
            Sink::Stderr => PIPE_BATCH_MAX,
            Sink::File { .. } => FILE_BATCH_MAX,
            #[cfg(test)]
            Sink::Memory(_) => FILE_BATCH_MAX,
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            // The lock keeps other threads' stderr output out of the batch.
            Sink::Stderr => io::stderr().lock().write_all(bytes),
            Sink::File { file, .. } => file.write_all(bytes),
            #[cfg(test)]
            Sink::Memory(writes) => {
                writes.push(bytes.to_vec());
                Ok(())
            }
        }
    }
}

impl fmt::Display for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sink::Stderr => f.write_str("stderr"),
            Sink::File { path, .. } => write!(f, "{}", path.display()),
            #[cfg(test)]
            Sink::Memory(_) => f.write_str("memory"),
        }
    }
}

/// A run of failed writes, reported once when it begins.
struct FailureStreak {
    /// The error that began it (kind and errno): a different error is a new
    /// streak, worth its own warning.
    error: (io::ErrorKind, Option<i32>),
    /// Lines dropped since the first failure.
    dropped: u64,
}

/// One worker's access log.
pub struct AccessLog {
    sink: Sink,
    /// Whole lines not written yet.
    batch: Vec<u8>,
    /// How many lines `batch` holds, to report what a failed write dropped.
    lines: u64,
    failure: Option<FailureStreak>,
}

impl AccessLog {
    /// "stderr" writes to fd 2; anything else is a file path, opened for
    /// appending (created 0644). The error message names the path and the
    /// reason, fit for a config error or a log line.
    pub fn open(spec: &str) -> Result<AccessLog, String> {
        let sink = match spec {
            "" => return Err("access_log is empty: give a file path or `stderr`".into()),
            "stderr" => Sink::Stderr,
            path => {
                let path = PathBuf::from(path);
                let file = open_append(&path)?;
                Sink::File { path, file }
            }
        };
        Ok(AccessLog::with_sink(sink))
    }

    fn with_sink(sink: Sink) -> AccessLog {
        AccessLog {
            sink,
            batch: Vec::with_capacity(INITIAL_CAPACITY),
            lines: 0,
            failure: None,
        }
    }

    /// Formats one line into the buffer. If that takes the buffer past the
    /// batch limit, the lines before it are written now.
    pub fn record(&mut self, r: &Record<'_>) {
        let line_start = self.batch.len();
        r.write_line(&mut self.batch);
        self.lines += 1;
        if self.batch.len() > self.sink.batch_max() && line_start > 0 {
            self.write_out(line_start, self.lines - 1);
            // The new line starts the next batch; drain moves it to the
            // front without reallocating.
            self.batch.drain(..line_start);
            self.lines = 1;
        }
        debug_assert_eq!(self.batch.last(), Some(&b'\n'));
    }

    /// Writes everything buffered. On failure the lines are dropped (see the
    /// module doc); the proxy goes on.
    pub fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        self.write_out(self.batch.len(), self.lines);
        self.batch.clear();
        self.lines = 0;
    }

    /// Flushes, then opens the path again (log rotation: the old file was
    /// renamed). A no-op for stderr. On error the old descriptor is kept and
    /// the message names the path and the reason.
    pub fn reopen(&mut self) -> Result<(), String> {
        self.flush();
        if let Sink::File { path, file } = &mut self.sink {
            // Assigning closes the old descriptor only once the new one is
            // open.
            *file = open_append(path)?;
        }
        Ok(())
    }

    /// Nothing buffered.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Writes `batch[..len]`, which holds `lines` whole lines, and keeps the
    /// failure streak up to date.
    fn write_out(&mut self, len: usize, lines: u64) {
        debug_assert!(len > 0 && self.batch[len - 1] == b'\n');
        match self.sink.write_all(&self.batch[..len]) {
            Ok(()) => {
                if let Some(streak) = self.failure.take() {
                    log::warn!(
                        "access log {}: writing again after dropping {} lines",
                        self.sink,
                        streak.dropped
                    );
                }
            }
            Err(e) => {
                let error = (e.kind(), e.raw_os_error());
                match &mut self.failure {
                    Some(streak) if streak.error == error => streak.dropped += lines,
                    streak => {
                        log::warn!(
                            "access log {}: write failed: {e}; dropping lines until a write succeeds",
                            self.sink
                        );
                        let dropped = streak.as_ref().map_or(0, |s| s.dropped) + lines;
                        *streak = Some(FailureStreak { error, dropped });
                    }
                }
            }
        }
    }
}

impl Drop for AccessLog {
    /// The lines of the last iteration still go out when a worker stops.
    fn drop(&mut self) {
        self.flush();
    }
}

fn open_append(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| {
            format!(
                "access log {}: cannot open for appending: {e}",
                path.display()
            )
        })
}

#[derive(Clone, Copy)]
enum Spaces {
    /// Inside quotes a space is harmless.
    Keep,
    /// In an unquoted field a space would start another field.
    Escape,
}

fn push_escaped_or_dash(out: &mut Vec<u8>, bytes: &[u8], spaces: Spaces) {
    if bytes.is_empty() {
        out.push(b'-');
    } else {
        push_escaped(out, bytes, spaces);
    }
}

/// Copies `bytes` with `"` and `\` backslash-escaped and every byte that is
/// not printable ASCII (and, with `Spaces::Escape`, a space) as `\xHH`.
fn push_escaped(out: &mut Vec<u8>, bytes: &[u8], spaces: Spaces) {
    let needs_escape = |b: u8| match b {
        b'"' | b'\\' | 0x7f.. | ..0x20 => true,
        b' ' => matches!(spaces, Spaces::Escape),
        _ => false,
    };
    let mut rest = bytes;
    // Copy runs of plain bytes whole; most fields have no escape at all.
    while let Some(i) = rest.iter().position(|&b| needs_escape(b)) {
        out.extend_from_slice(&rest[..i]);
        match rest[i] {
            b @ (b'"' | b'\\') => out.extend_from_slice(&[b'\\', b]),
            b => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'x',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]);
            }
        }
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20]; // u64::MAX has 20 digits
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_ms_or_dash(out: &mut Vec<u8>, d: Option<Duration>) {
    match d {
        Some(d) => push_ms(out, d),
        None => out.push(b'-'),
    }
}

/// Milliseconds with three decimals, truncated to the microsecond.
fn push_ms(out: &mut Vec<u8>, d: Duration) {
    // Only a Duration of over 584,000 years overflows; show it as the most.
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    push_u64(out, micros / 1000);
    let frac = micros % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `DD/Mon/YYYY:HH:MM:SS +0000`, UTC. Times before 1970 or after 9999 are
/// clamped so the field keeps its shape.
fn push_clf_time(out: &mut Vec<u8>, t: SystemTime) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(MAX_SECS);
    // `secs` is clamped to 0..=MAX_SECS, so the casts keep every value.
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let year = year as u64;
    let tod = secs % 86_400;
    let mut s = *b"01/Jan/1970:00:00:00 +0000";
    two_digits(&mut s[0..2], u64::from(day));
    s[3..6].copy_from_slice(MONTHS[(month - 1) as usize]);
    two_digits(&mut s[7..9], year / 100);
    two_digits(&mut s[9..11], year % 100);
    two_digits(&mut s[12..14], tod / 3600);
    two_digits(&mut s[15..17], tod / 60 % 60);
    two_digits(&mut s[18..20], tod % 60);
    out.extend_from_slice(&s);
}

fn two_digits(out: &mut [u8], v: u64) {
    out[0] = b'0' + (v / 10 % 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// 2024-02-29T12:34:56.789Z.
    fn leap_day() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_709_210_096, 789_000_000)
    }

    /// A request a backend answered, every field present.
    fn served() -> Record<'static> {
        Record {
            client: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
            start: leap_day(),
            method: b"GET",
            target: b"/orders?id=42",
            version: b"HTTP/1.1",
            status: 200,
            bytes_out: 5120,
            bytes_in: 431,
            referer: b"https://shop.example/cart",
            user_agent: b"Mozilla/5.0 (X11; Linux x86_64)",
            section: "shop.example",
            backend: "b7",
            queue_wait: Some(Duration::from_micros(42)),
            backend_time: Some(Duration::from_micros(12_345_678)),
            total: Duration::from_micros(12_400_001),
            termination: Termination::Ok,
        }
    }

    fn line(r: &Record<'_>) -> String {
        let mut out = Vec::new();
        r.write_line(&mut out);
        String::from_utf8(out).expect("a log line is ASCII")
    }

    fn ms(d: Duration) -> String {
        let mut out = Vec::new();
        push_ms(&mut out, d);
        String::from_utf8(out).expect("digits")
    }

    /// The write(2) calls a log with a memory sink has made.
    fn writes(log: &AccessLog) -> &[Vec<u8>] {
        match &log.sink {
            Sink::Memory(writes) => writes,
            _ => panic!("not a memory sink"),
        }
    }

    /// A directory under the system temp dir, unique per test, removed when
    /// dropped.
    struct ScratchDir(PathBuf);

    impl ScratchDir {
        fn new() -> ScratchDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "swiftiply-access-log-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let path = std::env::temp_dir().join(name);
            // Left behind by an earlier run that had the same pid.
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).expect("create a scratch directory");
            ScratchDir(path)
        }

        fn path(&self, name: &str) -> String {
            let path = self.0.join(name);
            path.to_str().expect("a UTF-8 temp path").to_owned()
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn read(path: &str) -> String {
        fs::read_to_string(path).expect("read the log file")
    }

    #[test]
    fn a_request_served_by_a_backend_shows_every_field() {
        let expected = [
            "203.0.113.7",                         // CLIENT
            "-",                                   // identity
            "-",                                   // user
            "[29/Feb/2024:12:34:56 +0000]",        // start, UTC, whole seconds
            "\"GET /orders?id=42 HTTP/1.1\"",      // request line
            "200",                                 // STATUS
            "5120",                                // BYTES_OUT
            "\"https://shop.example/cart\"",       // REFERER
            "\"Mozilla/5.0 (X11; Linux x86_64)\"", // USER_AGENT
            "shop.example",                        // SECTION
            "b7",                                  // BACKEND
            "0.042",                               // WAIT_MS
            "12345.678",                           // BACKEND_MS
            "12400.001",                           // TOTAL_MS
            "431",                                 // BYTES_IN
            "ok",                                  // TERMINATION
        ]
        .join(" ")
            + "\n";
        assert_eq!(line(&served()), expected);
    }

    #[test]
    fn a_client_that_times_out_before_its_request_line_gets_dashes() {
        let r = Record {
            client: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            method: b"",
            target: b"",
            version: b"",
            status: 0,
            bytes_out: 0,
            bytes_in: 17,
            referer: b"",
            user_agent: b"",
            section: "",
            backend: "",
            queue_wait: None,
            backend_time: None,
            total: Duration::from_secs(10),
            termination: Termination::ClientTimeout,
            ..served()
        };
        assert_eq!(
            line(&r),
            "2001:db8::1 - - [29/Feb/2024:12:34:56 +0000] \"-\" - 0 \"-\" \"-\" - - - - \
             10000.000 17 client_timeout\n"
        );
    }

    #[test]
    fn a_request_for_an_unknown_host_has_no_section_and_no_backend() {
        let r = Record {
            status: 404,
            bytes_out: 120,
            referer: b"",
            section: "",
            backend: "",
            queue_wait: None,
            backend_time: None,
            total: Duration::from_micros(80),
            termination: Termination::NoSection,
            ..served()
        };
        assert!(line(&r).ends_with(
            "\"GET /orders?id=42 HTTP/1.1\" 404 120 \"-\" \"Mozilla/5.0 (X11; Linux x86_64)\" \
             - - - - 0.080 431 no_section\n"
        ));
    }

    #[test]
    fn a_request_line_without_a_version_leaves_it_out() {
        let r = Record {
            version: b"",
            ..served()
        };
        assert!(line(&r).contains(" \"GET /orders?id=42\" 200 "));
    }

    #[test]
    fn an_ipv4_client_on_a_dual_stack_listener_is_shown_as_ipv4() {
        let r = Record {
            client: IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
            ..served()
        };
        assert!(line(&r).starts_with("192.0.2.1 - - ["));
    }

    #[test]
    fn a_client_cannot_split_or_forge_a_line() {
        let r = Record {
            target: b"/a\"b\\c\r\n203.0.113.9 - - [forged] \"GET / HTTP/1.1\" 200",
            user_agent: b"curl\n\x00\x1b[31m\x7f\xff\xc3\xa9 \"x\"",
            referer: b"\\\"",
            ..served()
        };
        let text = line(&r);
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert!(text.ends_with('\n'));
        assert!(
            text.contains(
                " \"GET /a\\\"b\\\\c\\x0d\\x0a203.0.113.9 - - [forged] \\\"GET / HTTP/1.1\\\" 200 \
                 HTTP/1.1\" 200 5120 "
            ),
            "{text}"
        );
        assert!(
            text.contains(
                " \"\\\\\\\"\" \"curl\\x0a\\x00\\x1b[31m\\x7f\\xff\\xc3\\xa9 \\\"x\\\"\" "
            ),
            "{text}"
        );
    }

    #[test]
    fn section_and_backend_escape_spaces_so_fields_stay_countable() {
        let r = Record {
            section: "my site",
            backend: "b\"1\\\n",
            ..served()
        };
        let text = line(&r);
        assert!(
            text.contains("\" my\\x20site b\\\"1\\\\\\x0a 0.042 "),
            "{text}"
        );
        // After the user agent, seven fields and six spaces, as on every line.
        let (_, tail) = text.split_once("x86_64)\" ").expect("the user agent");
        assert_eq!(tail.trim_end().split(' ').count(), 7, "{tail}");
    }

    #[test]
    fn durations_are_milliseconds_with_three_decimals() {
        assert_eq!(ms(Duration::ZERO), "0.000");
        assert_eq!(ms(Duration::from_nanos(999)), "0.000");
        assert_eq!(ms(Duration::from_micros(42)), "0.042");
        assert_eq!(ms(Duration::from_nanos(42_999)), "0.042");
        assert_eq!(ms(Duration::from_millis(1)), "1.000");
        assert_eq!(ms(Duration::from_micros(1_234_500)), "1234.500");
        assert_eq!(ms(Duration::from_secs(3 * 3600)), "10800000.000");
        assert_eq!(ms(Duration::MAX), "18446744073709551.615");
    }

    #[test]
    fn times_are_utc_and_clamped_to_four_digit_years() {
        let at = |secs: u64| {
            let mut out = Vec::new();
            push_clf_time(&mut out, UNIX_EPOCH + Duration::from_secs(secs));
            String::from_utf8(out).expect("ASCII")
        };
        assert_eq!(at(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(at(971_186_136), "10/Oct/2000:13:55:36 +0000");
        assert_eq!(at(1_709_210_096), "29/Feb/2024:12:34:56 +0000");
        assert_eq!(at(4_107_542_399), "28/Feb/2100:23:59:59 +0000");
        assert_eq!(at(4_107_542_400), "01/Mar/2100:00:00:00 +0000");
        assert_eq!(at(u64::MAX / 2), "31/Dec/9999:23:59:59 +0000");

        let mut before_epoch = Vec::new();
        push_clf_time(&mut before_epoch, UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(before_epoch, b"01/Jan/1970:00:00:00 +0000");
    }

    #[test]
    fn termination_words_are_single_tokens() {
        let all = [
            (Termination::Ok, "ok"),
            (Termination::Static, "static"),
            (Termination::Local, "local"),
            (Termination::BadRequest, "bad_request"),
            (Termination::NoSection, "no_section"),
            (Termination::QueueTimeout, "queue_timeout"),
            (Termination::BackendFailed, "backend_failed"),
            (Termination::BackendTimeout, "backend_timeout"),
            (Termination::ClientClosed, "client_closed"),
            (Termination::ClientTimeout, "client_timeout"),
            (Termination::Shutdown, "shutdown"),
        ];
        for (t, word) in all {
            assert_eq!(t.as_str(), word);
        }
    }

    #[test]
    fn a_busy_iteration_is_written_in_batches_of_whole_lines_under_64_kib() {
        let mut log = AccessLog::with_sink(Sink::Memory(Vec::new()));
        let agent = vec![b'a'; 1000];
        let targets: Vec<String> = (0..200).map(|i| format!("/item/{i}")).collect();
        let mut expected = Vec::new();
        for target in &targets {
            let r = Record {
                target: target.as_bytes(),
                user_agent: &agent,
                ..served()
            };
            r.write_line(&mut expected);
            log.record(&r);
        }
        // About 240 KiB: several batches went out before the iteration ended.
        let early = writes(&log).len();
        assert!(early >= 3, "{early} early writes");
        log.flush();
        assert!(log.is_empty());

        let batches = writes(&log);
        assert_eq!(batches.len(), early + 1);
        assert_eq!(batches.concat(), expected);
        for (i, batch) in batches.iter().enumerate() {
            assert!(batch.len() <= FILE_BATCH_MAX, "batch {i}: {}", batch.len());
            assert_eq!(batch.last(), Some(&b'\n'), "batch {i} ends mid-line");
            // A batch went out early only because the next line did not fit.
            if let Some(next) = batches.get(i + 1) {
                let next_line = next.iter().position(|&b| b == b'\n').map_or(0, |n| n + 1);
                assert!(batch.len() + next_line > FILE_BATCH_MAX, "batch {i}");
            }
        }
    }

    #[test]
    fn a_line_longer_than_a_batch_is_written_alone() {
        let mut log = AccessLog::with_sink(Sink::Memory(Vec::new()));
        let huge_agent = vec![0x01; 20_000]; // 80,000 bytes once escaped
        log.record(&served());
        log.record(&Record {
            user_agent: &huge_agent,
            ..served()
        });
        log.record(&served());
        log.flush();
        let sizes: Vec<usize> = writes(&log).iter().map(Vec::len).collect();
        let small = line(&served()).len();
        assert_eq!(sizes.len(), 3, "{sizes:?}");
        assert_eq!((sizes[0], sizes[2]), (small, small));
        assert!(sizes[1] > 80_000);
    }

    #[test]
    fn stderr_batches_stay_within_an_atomic_pipe_write() {
        assert_eq!(Sink::Stderr.batch_max(), 4096);
    }

    #[test]
    fn the_buffer_is_reused_once_warmed_up() {
        let mut log = AccessLog::with_sink(Sink::Memory(Vec::new()));
        for _ in 0..1000 {
            log.record(&served());
        }
        log.flush();
        let warmed = (log.batch.as_ptr(), log.batch.capacity());
        for _ in 0..5 {
            for _ in 0..1000 {
                log.record(&served());
            }
            log.flush();
        }
        assert_eq!((log.batch.as_ptr(), log.batch.capacity()), warmed);
    }

    #[test]
    fn a_rotated_file_is_reopened_at_its_path() {
        let dir = ScratchDir::new();
        let path = dir.path("access.log");
        let rotated = dir.path("access.log.1");
        let mut log = AccessLog::open(&path).expect("open the access log");
        let mode = fs::metadata(&path).expect("created").permissions().mode();
        assert_eq!(mode & 0o600, 0o600, "{mode:o}");
        assert_eq!(mode & 0o7133, 0, "at most 0644: {mode:o}");

        let at = |target: &'static [u8]| Record { target, ..served() };
        log.record(&at(b"/before"));
        log.flush();
        fs::rename(&path, &rotated).expect("rotate");
        // Until the signal, lines still go to the renamed file.
        log.record(&at(b"/between"));
        log.flush();
        log.record(&at(b"/after"));
        log.reopen().expect("reopen after rotation");
        log.record(&at(b"/new"));
        log.flush();

        let old = read(&rotated);
        let new = read(&path);
        assert_eq!(old.lines().count(), 3, "{old}");
        assert!(old.contains("GET /before ") && old.contains("GET /between "));
        assert!(old.contains("GET /after "), "reopen flushes first");
        assert_eq!(new.lines().count(), 1, "{new}");
        assert!(new.contains("GET /new "));
    }

    #[test]
    fn an_existing_file_is_appended_to() {
        let dir = ScratchDir::new();
        let path = dir.path("access.log");
        fs::write(&path, "earlier line\n").expect("seed");
        let mut log = AccessLog::open(&path).expect("open");
        log.record(&served());
        drop(log); // a stopping worker flushes what it holds
        let text = read(&path);
        assert!(text.starts_with("earlier line\n203.0.113.7 "), "{text}");
    }

    #[test]
    fn a_failed_reopen_keeps_writing_to_the_old_file() {
        let dir = ScratchDir::new();
        let logs = dir.path("logs");
        fs::create_dir(&logs).expect("logs dir");
        let path = format!("{logs}/access.log");
        let rotated = dir.path("access.log.1");
        let mut log = AccessLog::open(&path).expect("open");
        fs::rename(&path, &rotated).expect("rotate");
        fs::remove_dir(&logs).expect("remove the log directory");

        let err = log.reopen().expect_err("the directory is gone");
        assert!(err.contains(&path), "{err}");
        assert!(err.contains("No such file or directory"), "{err}");
        log.record(&served());
        log.flush();
        assert_eq!(read(&rotated).lines().count(), 1);
    }

    #[test]
    fn open_errors_name_the_path_and_the_reason() {
        let missing = "/nonexistent-swiftiply-dir/access.log";
        let err = AccessLog::open(missing).err().expect("no such directory");
        assert_eq!(
            err,
            format!(
                "access log {missing}: cannot open for appending: \
                 No such file or directory (os error 2)"
            )
        );

        let dir = ScratchDir::new();
        let a_directory = dir.path("");
        let err = AccessLog::open(&a_directory).err().expect("a directory");
        assert!(
            err.contains(&a_directory) && err.contains("Is a directory"),
            "{err}"
        );

        let err = AccessLog::open("").err().expect("empty");
        assert!(err.contains("stderr"), "{err}");
    }

    #[test]
    fn a_full_disk_drops_lines_and_the_proxy_goes_on() {
        if !Path::new("/dev/full").exists() {
            return; // not Linux
        }
        let mut log = AccessLog::open("/dev/full").expect("open /dev/full");
        log.record(&served());
        log.record(&served());
        log.flush();
        assert!(log.is_empty(), "failed lines are dropped, not kept");
        let streak = log.failure.as_ref().expect("a failure streak began");
        assert_eq!((streak.error.1, streak.dropped), (Some(libc::ENOSPC), 2));

        // The same failure again is the same streak (no second warning).
        log.record(&served());
        log.flush();
        let streak = log.failure.as_ref().expect("still failing");
        assert_eq!(streak.dropped, 3);

        // Space is back: the streak ends.
        log.sink = Sink::Memory(Vec::new());
        log.record(&served());
        log.flush();
        assert!(log.failure.is_none());
        assert_eq!(writes(&log).len(), 1);
    }
}
