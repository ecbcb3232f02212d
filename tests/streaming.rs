//! Large bodies stream through with bounded memory (docs/failures.md#overload): the proxy's
//! peak RSS (VmHWM) stays under 64 MiB while 1 GiB moves each way. Data is
//! generated on the fly; nothing holds a whole body.

mod common;

use common::*;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
const RSS_LIMIT_KB: u64 = 64 * 1024;
const BLOCK: usize = 64 * 1024;

/// Byte i of every streamed body is `(i % 251) as u8`: 251 is prime and no
/// block size used is a multiple of it, so misordered, lost or duplicated
/// blocks show up in the spot checks.
fn pattern_at(offset: u64, out: &mut [u8]) {
    for (k, b) in out.iter_mut().enumerate() {
        *b = ((offset + k as u64) % 251) as u8;
    }
}

/// A buffer from which the stream bytes at any offset can be sliced without
/// per-byte work (this runs in a debug build): `slice(&base, offset, n)`.
fn pattern_base(max_len: usize) -> Vec<u8> {
    let mut v = vec![0u8; max_len + 251];
    pattern_at(0, &mut v);
    v
}

fn slice(base: &[u8], offset: u64, n: usize) -> &[u8] {
    let s = (offset % 251) as usize;
    &base[s..s + n]
}

/// Samples the proxy's VmRSS every 50 ms until stopped; returns the maximum.
fn rss_sampler(pid: u32, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut max = 0;
        while !stop.load(Ordering::SeqCst) {
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                for l in s.lines() {
                    if let Some(v) = l.strip_prefix("VmRSS:") {
                        let kb: u64 = v
                            .split_whitespace()
                            .next()
                            .unwrap_or("0")
                            .parse()
                            .unwrap_or(0);
                        max = max.max(kb);
                    }
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        max
    })
}

#[test]
fn upload_1gib_content_length_with_bounded_memory() {
    let p = Proxy::start(&one_section("timeout: 10\nbackend_timeout: 30", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("sink", 1), "");
    let received = Arc::new(AtomicU64::new(0));
    let received2 = received.clone();
    let backend = thread::spawn(move || {
        let h = b
            .read_request_head()
            .expect("backend: read head")
            .expect("backend: proxy closed before the request");
        assert_eq!(h.framing().unwrap(), Framing::Length(GIB));
        // Count the body; spot-check the bytes at block boundaries.
        let mut pos = 0u64;
        let mut bad = None;
        let mut expect = [0u8; 1];
        let res = b.conn.read_exact_body(GIB, &mut |chunk: &[u8]| {
            if bad.is_none() {
                pattern_at(pos, &mut expect);
                if chunk[0] != expect[0] {
                    bad = Some(pos);
                }
                let last = pos + chunk.len() as u64 - 1;
                pattern_at(last, &mut expect);
                if chunk[chunk.len() - 1] != expect[0] {
                    bad = Some(last);
                }
            }
            pos += chunk.len() as u64;
            received2.store(pos, Ordering::Relaxed);
        });
        if let Err(e) = res {
            panic!("backend: body read failed after {pos} bytes: {e}");
        }
        assert_eq!(bad, None, "upload corrupted at byte {bad:?}");
        b.respond("200 OK", &[], format!("received {pos}").as_bytes());
        pos
    });

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = rss_sampler(p.pid(), stop.clone());
    let t = Instant::now();
    let mut c = Client::connect(p.client_addr());
    let _ = c
        .conn
        .stream
        .set_write_timeout(Some(Duration::from_secs(30)));
    c.send(
        format!("POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: {GIB}\r\n\r\n")
            .as_bytes(),
    );
    let base = pattern_base(BLOCK);
    let mut sent = 0u64;
    while sent < GIB {
        let n = (GIB - sent).min(BLOCK as u64) as usize;
        if let Err(e) = c.conn.stream.write_all(slice(&base, sent, n)) {
            panic!(
                "client: upload write failed after {sent} bytes ({} received by the backend): {e}",
                received.load(Ordering::Relaxed)
            );
        }
        sent += n as u64;
    }
    c.conn.stream.flush().unwrap();
    let _ = c
        .conn
        .stream
        .set_read_timeout(Some(Duration::from_secs(30)));
    let r = c.read_response(false);
    let took = t.elapsed();
    stop.store(true, Ordering::SeqCst);
    let max_rss = join_within(sampler, Duration::from_secs(5), "sampler");
    let peak = p.peak_rss_kb();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_str(), format!("received {GIB}"));
    assert_eq!(
        join_within(backend, Duration::from_secs(30), "backend"),
        GIB
    );
    eprintln!("upload 1 GiB: {took:?}, proxy max VmRSS {max_rss} kB, VmHWM {peak} kB");
    assert!(
        peak < RSS_LIMIT_KB,
        "proxy peak RSS {peak} kB (sampled max {max_rss} kB) over {RSS_LIMIT_KB} kB during a 1 GiB upload"
    );
    // Keep-alive still works after the big body.
    let mut b2 = Backend::connect(p.backend_addr(0), &id12("sink", 2), "");
    let h2 = thread::spawn(move || b2.echo_one());
    let r = c.get("app.test", "/after");
    assert_eq!(r.status, 200, "{r:?}");
    join_within(h2, Duration::from_secs(10), "backend 2");
}

/// Reads a body of `framing` from the client, slowly-ish, checking the
/// pattern at chunk edges; returns the byte count.
fn read_download(c: &mut Client, framing: Framing) -> u64 {
    let mut pos = 0u64;
    let mut bad = None;
    let mut next_pause = 32u64 << 20;
    let mut expect = [0u8; 1];
    let mut sink = |chunk: &[u8]| {
        if bad.is_none() {
            pattern_at(pos, &mut expect);
            if chunk[0] != expect[0] {
                bad = Some(pos);
            }
        }
        pos += chunk.len() as u64;
        // Slow-ish reader: stall now and then so back-pressure must engage.
        if pos >= next_pause {
            next_pause += 32 << 20;
            thread::sleep(Duration::from_millis(40));
        }
    };
    let res = c.conn.read_body(framing, &mut sink);
    if let Err(e) = res {
        panic!("client: download failed after {pos} bytes: {e}");
    }
    assert_eq!(bad, None, "download corrupted at byte {bad:?}");
    pos
}

#[test]
fn download_1gib_to_slow_reader_with_bounded_memory() {
    let p = Proxy::start(&one_section("timeout: 10\nbackend_timeout: 30", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("source", 1), "");
    let backend = thread::spawn(move || {
        b.expect_request();
        let _ = b
            .conn
            .stream
            .set_write_timeout(Some(Duration::from_secs(30)));
        b.write(format!("HTTP/1.1 200 OK\r\nContent-Length: {GIB}\r\n\r\n").as_bytes());
        let base = pattern_base(BLOCK);
        let mut sent = 0u64;
        while sent < GIB {
            let n = (GIB - sent).min(BLOCK as u64) as usize;
            if let Err(e) = b.conn.stream.write_all(slice(&base, sent, n)) {
                panic!("backend: download write failed after {sent} bytes: {e}");
            }
            sent += n as u64;
        }
        // Then serve one more request on the same connection.
        b.echo_one();
    });
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = rss_sampler(p.pid(), stop.clone());
    let t = Instant::now();
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /download HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let _ = c
        .conn
        .stream
        .set_read_timeout(Some(Duration::from_secs(30)));
    let head = read_response_head(&mut c.conn)
        .expect("response head")
        .expect("closed before the head");
    assert_eq!(head.status, 200);
    let framing = head.framing(false);
    assert_eq!(framing, Framing::Length(GIB), "{head:?}");
    let n = read_download(&mut c, framing);
    let took = t.elapsed();
    stop.store(true, Ordering::SeqCst);
    let max_rss = join_within(sampler, Duration::from_secs(5), "sampler");
    let peak = p.peak_rss_kb();
    assert_eq!(n, GIB);
    eprintln!("download 1 GiB: {took:?}, proxy max VmRSS {max_rss} kB, VmHWM {peak} kB");
    assert!(
        peak < RSS_LIMIT_KB,
        "proxy peak RSS {peak} kB (sampled max {max_rss} kB) over {RSS_LIMIT_KB} kB during a 1 GiB download"
    );
    let r = c.get("app.test", "/after");
    assert_eq!(r.status, 200, "{r:?}");
    join_within(backend, Duration::from_secs(30), "backend");
}

#[test]
fn download_256mib_packet_mode_rechunked_with_bounded_memory() {
    const TOTAL: u64 = 256 << 20;
    let p = Proxy::start(&one_section("timeout: 10\nbackend_timeout: 30", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("pktsrc", 1), "");
    let backend = thread::spawn(move || {
        b.expect_request();
        let _ = b
            .conn
            .stream
            .set_write_timeout(Some(Duration::from_secs(30)));
        b.write(b"HTTP/1.1 200 OK\r\nX-Swiftiply-Close: 1\r\n\r\n");
        // Packets of varying sizes, up to 1 MiB, written with their framing.
        let sizes = [BLOCK, 1 << 20, 1000, 0, 65_537, 300_000];
        let base = pattern_base(1 << 20);
        let mut sent = 0u64;
        let mut k = 0;
        while sent < TOTAL {
            let n = (sizes[k % sizes.len()] as u64).min(TOTAL - sent) as usize;
            k += 1;
            let w = b
                .conn
                .stream
                .write_all(format!("{n:08}").as_bytes())
                .and_then(|_| b.conn.stream.write_all(slice(&base, sent, n)));
            if let Err(e) = w {
                panic!("backend: packet write failed after {sent} bytes: {e}");
            }
            sent += n as u64;
        }
        b.write(b"--------");
        b.echo_one();
    });
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = rss_sampler(p.pid(), stop.clone());
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /packets HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let _ = c
        .conn
        .stream
        .set_read_timeout(Some(Duration::from_secs(30)));
    let head = read_response_head(&mut c.conn)
        .expect("response head")
        .expect("closed before the head");
    assert_eq!(head.status, 200);
    assert!(head.header("x-swiftiply-close").is_none());
    let framing = head.framing(false);
    assert_eq!(framing, Framing::Chunked, "{head:?}");
    let n = read_download(&mut c, framing);
    stop.store(true, Ordering::SeqCst);
    let max_rss = join_within(sampler, Duration::from_secs(5), "sampler");
    let peak = p.peak_rss_kb();
    assert_eq!(n, TOTAL);
    eprintln!("packet download 256 MiB: proxy max VmRSS {max_rss} kB, VmHWM {peak} kB");
    assert!(
        peak < RSS_LIMIT_KB,
        "proxy peak RSS {peak} kB over {RSS_LIMIT_KB} kB"
    );
    let r = c.get("app.test", "/after");
    assert_eq!(r.status, 200, "{r:?}");
    join_within(backend, Duration::from_secs(30), "backend");
}
