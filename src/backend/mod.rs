//! Writing a Swiftiply backend in Rust.
//!
//! A backend dials in to the proxy, sends the handshake (docs/protocol.md#handshake) and
//! then serves one HTTP/1.1 request at a time on each connection. This module
//! does all of that with blocking I/O and one thread per connection: give it
//! a `Handler`, the proxy addresses and the number of connections, and it
//! keeps them connected — reconnecting with back-off and jitter when a proxy
//! goes away or restarts — until it is told to stop, at which point requests
//! in flight finish and no new ones are taken.
//!
//! ```no_run
//! use std::io::Write;
//! use swiftiply::backend::{BackendOptions, Request, Responder};
//!
//! let opts = BackendOptions::new(vec!["127.0.0.1:30000".into()]).connections(4);
//! let running = swiftiply::backend::spawn(opts, |req: &mut Request, res: &mut Responder| {
//!     if req.path() == "/stream" {
//!         let mut body = res.stream(200, &[("Content-Type", "text/plain")])?;
//!         body.write_all(b"one\n")?;
//!         body.write_all(b"two\n")?;
//!         return body.finish();
//!     }
//!     res.send(200, &[("Content-Type", "text/plain")], b"hello\n")
//! })
//! .unwrap();
//! running.stop_and_join();
//! ```
//!
//! The same handler can serve plain HTTP clients with `serve_http`, which is
//! how `examples/app.rs` runs either way.

mod conn;
mod http;
mod request;
mod respond;
mod signals;

use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use http::serve_http;
pub use request::{BodyReader, Request};
pub use respond::{reason, BodyWriter, Responder, StreamFraming};
pub use signals::{stop_on_termination, stop_on_termination_then};

use conn::{Conn, End, Role};

/// Answers requests. Any `Fn(&mut Request, &mut Responder) -> io::Result<()>`
/// that is `Send + Sync` is a handler.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: &mut Request<'_>, res: &mut Responder<'_>) -> io::Result<()>;
}

impl<F> Handler for F
where
    F: Fn(&mut Request<'_>, &mut Responder<'_>) -> io::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, req: &mut Request<'_>, res: &mut Responder<'_>) -> io::Result<()> {
        self(req, res)
    }
}

/// How often a connection waiting for its next request looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// Proxy `outgoing` addresses (`host:port`); `connections` are held to each.
    pub proxies: Vec<String>,
    /// The section's key; empty for none.
    pub key: String,
    pub connections: usize,
    /// Framing of streamed bodies: chunked (default) or packet mode.
    pub framing: StreamFraming,
    /// First 8 characters of every connection's 12-character id; the last 4
    /// are the connection number in hex. Default: the process id in hex.
    pub id_prefix: Option<String>,
}

impl BackendOptions {
    pub fn new(proxies: Vec<String>) -> Self {
        BackendOptions {
            proxies,
            key: String::new(),
            connections: 1,
            framing: StreamFraming::Chunked,
            id_prefix: None,
        }
    }

    pub fn key(mut self, key: &str) -> Self {
        self.key = key.to_string();
        self
    }

    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n.max(1);
        self
    }

    pub fn framing(mut self, framing: StreamFraming) -> Self {
        self.framing = framing;
        self
    }

    pub fn id_prefix(mut self, prefix: &str) -> Self {
        self.id_prefix = Some(prefix.to_string());
        self
    }

    /// The 12-character id of connection `n` (always exactly 12 printable
    /// ASCII characters, whatever the prefix or process id).
    pub fn id(&self, n: usize) -> String {
        let prefix = match &self.id_prefix {
            Some(p) => p
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .collect::<String>(),
            None => format!("{:08x}", std::process::id()),
        };
        let mut id: String = prefix
            .chars()
            .chain(std::iter::repeat('0'))
            .take(8)
            .collect();
        id.push_str(&format!("{:04x}", n & 0xffff));
        id
    }

    fn handshake(&self, n: usize) -> io::Result<Vec<u8>> {
        if self.key.len() > 255 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the key must be at most 255 bytes",
            ));
        }
        Ok(format!(
            "swiftclient{}{:02x}{}",
            self.id(n),
            self.key.len(),
            self.key
        )
        .into_bytes())
    }
}

/// Running backend connections; stop them with `stop` / `stop_and_join`.
pub struct Running {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    /// Asks every connection to stop: requests in flight finish, idle
    /// connections close within a moment, none is reopened.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }

    pub fn stop_and_join(self) {
        self.stop();
        self.join();
    }

    /// The flag `stop` sets, for callers that stop on a signal.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }
}

/// Starts `connections` threads per proxy address, each holding one
/// connection to the proxy and serving `handler` on it.
pub fn spawn<H: Handler>(opts: BackendOptions, handler: H) -> io::Result<Running> {
    if opts.proxies.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no proxy address given",
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let handler: Arc<dyn Handler> = Arc::new(handler);
    let mut threads = Vec::new();
    let mut n = 0;
    for proxy in &opts.proxies {
        for _ in 0..opts.connections {
            let hello = opts.handshake(n)?;
            let id = opts.id(n);
            let (proxy, handler, stop) = (proxy.clone(), handler.clone(), stop.clone());
            let framing = opts.framing;
            threads.push(
                thread::Builder::new()
                    .name(format!("backend-{id}"))
                    .spawn(move || {
                        keep_connected(&proxy, &id, &hello, framing, &*handler, &stop)
                    })?,
            );
            n += 1;
        }
    }
    Ok(Running { stop, threads })
}

/// One connection's life: connect, serve, and reconnect until stopped.
fn keep_connected(
    proxy: &str,
    id: &str,
    hello: &[u8],
    framing: StreamFraming,
    handler: &dyn Handler,
    stop: &AtomicBool,
) {
    let mut backoff = BACKOFF_MIN;
    let mut rng = Jitter::new(id);
    let mut conn = Conn::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        conn.reset();
        match connect(proxy, hello) {
            Ok(sock) => match conn.serve(&sock, handler, Role::Backend { framing }, stop) {
                Ok(End::Stopped) => return,
                Ok(_) => log::info!("backend {id}: the proxy at {proxy} closed the connection"),
                Err(e) => log::warn!("backend {id}: connection to {proxy} failed: {e}"),
            },
            Err(e) => log::debug!("backend {id}: cannot connect to {proxy}: {e}"),
        }
        // A connection that worked for a while starts the back-off afresh.
        if conn.served > 0 || started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        let pause = backoff / 2 + rng.below(backoff / 2);
        sleep_unless_stopped(pause, stop);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn connect(proxy: &str, hello: &[u8]) -> io::Result<TcpStream> {
    let addr = proxy
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "address resolves to nothing"))?;
    let mut sock = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(POLL))?;
    sock.write_all(hello)?;
    Ok(sock)
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let until = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// A small xorshift generator for reconnect jitter (no crate needed for that).
struct Jitter(u64);

impl Jitter {
    fn new(seed: &str) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let s = seed.bytes().fold(t ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Jitter(s | 1)
    }

    fn below(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let ms = max.as_millis() as u64;
        Duration::from_millis(if ms == 0 { 0 } else { self.0 % ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_always_twelve_printable_characters() {
        let o = BackendOptions::new(vec![]);
        assert_eq!(o.id(3).len(), 12);
        assert!(o.id(70000).ends_with(&format!("{:04x}", 70000 & 0xffff)));
        let o = o.id_prefix("ab");
        assert_eq!(o.id(1), "ab0000000001");
        let o = BackendOptions::new(vec![]).id_prefix("a very long prefix \u{e9}\n");
        let id = o.id(0);
        assert_eq!(id.len(), 12);
        assert!(id.bytes().all(|b| b.is_ascii_graphic()));
    }

    #[test]
    fn the_handshake_is_byte_exact() {
        let o = BackendOptions::new(vec![])
            .id_prefix("7f000001")
            .key("abcdef1234");
        assert_eq!(
            o.handshake(0x1234).unwrap(),
            b"swiftclient7f0000011234"
                .iter()
                .chain(b"0aabcdef1234")
                .copied()
                .collect::<Vec<u8>>()
        );
        assert!(BackendOptions::new(vec![])
            .key(&"k".repeat(256))
            .handshake(0)
            .is_err());
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        let mut j = Jitter::new("x");
        for _ in 0..1000 {
            assert!(j.below(Duration::from_millis(50)) < Duration::from_millis(50));
        }
        assert_eq!(j.below(Duration::ZERO), Duration::ZERO);
    }
}
