//! The status page as a browser shows it: headless Chromium renders a page
//! from `swiftiply::status::render_html` to a PNG and to its DOM, and the
//! test checks both — the screenshot has the page's size, real content and
//! the queue-depth highlight; the DOM has every section and backend row and
//! no markup smuggled in through a backend id.
//!
//! Chromium is required: CI runs `tests/run.sh`, which installs it. When it
//! is missing this test fails and says so, rather than passing unchecked.
//! Every Chromium run is bounded by `CHROMIUM_DEADLINE` and runs in its own
//! process group, killed whole on timeout.
//!
//! `render_in_chromium(url, dir)` works for any URL: the end-to-end test
//! points it at a running proxy's `status_uri`, with a backend busy and a
//! request waiting, and checks the page the same way.
//!
//! The PNG decoder below (zlib inflate, PNG row filters, CRC and Adler
//! checks) is just enough for Chromium's 8-bit RGB/RGBA screenshots, and
//! keeps the test free of an image crate.

use std::collections::HashSet;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use common::{config, eventually, id12, Backend, Client, Proxy, Response};
use swiftiply::status::{
    render_html, BackendSnapshot, BackendStateName, Histogram, SectionCounters, SectionSnapshot,
    Snapshot, StatusClasses,
};

const CHROMIUM: &str = "chromium";
/// The most one Chromium run may take before it is killed.
const CHROMIUM_DEADLINE: Duration = Duration::from_secs(60);
const WIDTH: u32 = 1200;
const HEIGHT: u32 = 900;
/// `.queue-depth.waiting`'s background (#d9480f) in `src/status/html.rs`.
const WAITING_RGB: [u8; 3] = [0xd9, 0x48, 0x0f];

/// The screenshot is the window's size, not blank, and shows the
/// queue-depth highlight of a section with requests waiting.
fn assert_screenshot_shows_a_waiting_queue(png: &Png, dir: &Path) {
    assert_eq!((png.width, png.height), (WIDTH, HEIGHT), "screenshot size");
    let colours = png.distinct_colours();
    assert!(
        colours >= 50,
        "the screenshot looks blank: {colours} distinct colours (see {})",
        dir.display()
    );
    let highlight = png.count(WAITING_RGB);
    assert!(
        highlight >= 3000,
        "the queue-depth highlight #d9480f covers {highlight} pixels, expected a box of at \
         least 3000 (see {})",
        dir.display()
    );
}

#[test]
fn the_status_page_renders_in_headless_chromium() {
    let started = Instant::now();
    let dir = ScratchDir::new("status-page");
    let snapshot = example_snapshot();
    let backends: usize = snapshot.sections.iter().map(|s| s.backends.len()).sum();
    let mut html = Vec::new();
    render_html(&snapshot, &mut html);
    let page = dir.path.join("page.html");
    fs::write(&page, &html).expect("write page.html");

    let (png, dom) = render_in_chromium(&format!("file://{}", page.display()), &dir.path);

    assert_screenshot_shows_a_waiting_queue(&png, &dir.path);

    for id in ["id=\"summary\"", "id=\"section-0\"", "id=\"section-1\""] {
        assert!(dom.contains(id), "the DOM lacks {id}:\n{dom}");
    }
    assert_eq!(
        dom.matches("class=\"queue-depth waiting\"").count(),
        1,
        "{dom}"
    );
    assert_eq!(
        dom.matches("<tr class=\"backend ").count(),
        backends,
        "{dom}"
    );
    for id in ["app-1", "app-2", "app-3", "api-1"] {
        assert!(
            dom.contains(&format!("<td class=\"id\">{id}</td>")),
            "backend {id}:\n{dom}"
        );
    }
    assert!(
        dom.contains("&lt;i&gt;not markup&lt;/i&gt;") && !dom.contains("<i>"),
        "a backend id became markup:\n{dom}"
    );
    eprintln!(
        "status page rendered and checked in {:?}",
        started.elapsed()
    );
}

#[test]
fn a_running_proxy_serves_its_status_page_to_headless_chromium() {
    const T: Duration = Duration::from_secs(10);
    let started = Instant::now();
    let dir = ScratchDir::new("status-page-live");
    // `timeout` outlasts the Chromium runs, so the waiting request is
    // still waiting when the page is rendered.
    let p = Proxy::start(&config(
        "status_uri: /status\ntimeout: 30",
        &[
            "incoming: shop.test\noutgoing: 127.0.0.1:0",
            "incoming: api.test\noutgoing: 127.0.0.1:0",
        ],
    ));
    let addr = p.client_addr();

    // shop.test: its only backend holds a request and one more waits;
    // api.test: one idle backend.
    let (busy_id, idle_id) = (id12("shop", 1), id12("api", 1));
    let mut busy = Backend::connect(p.backend_addr(0), &busy_id, "");
    let _idle = Backend::connect(p.backend_addr(1), &idle_id, "");
    assert!(
        p.wait_for_log_count(" joined section ", 2, T),
        "the backends did not join:\n{}",
        p.stderr_text()
    );
    let mut held = Client::connect(addr);
    held.send(b"GET /held HTTP/1.1\r\nHost: shop.test\r\n\r\n");
    let held_request = busy.expect_request();
    let mut waiting = Client::connect(addr);
    waiting.send(b"GET /waiting HTTP/1.1\r\nHost: shop.test\r\n\r\n");

    let status = |target: &str, accept: Option<&str>| -> Response {
        let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
        Client::connect(addr).request(
            format!("GET {target} HTTP/1.1\r\nHost: anything.test\r\n{accept}\r\n").as_bytes(),
        )
    };
    let one_waiting = "<div class=\"queue-depth waiting\"><span class=\"num\">1</span>";
    assert!(
        eventually(T, || status("/status?html", None)
            .body_contains(one_waiting)),
        "the page never showed one request waiting:\n{}",
        status("/status?html", None).body_str()
    );

    // `?html` and a browser's Accept both get the page; neither, the metrics.
    for (target, accept) in [
        ("/status?html", None),
        (
            "/status",
            Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ),
    ] {
        let r = status(target, accept);
        assert_eq!(r.status, 200, "{target} {accept:?}: {r:?}");
        assert_eq!(
            r.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{target} {accept:?}: {r:?}"
        );
        assert!(r.body.starts_with(b"<!DOCTYPE html>"), "{r:?}");
        assert!(r.body_contains(one_waiting), "{r:?}");
    }
    let r = status("/status", Some("*/*"));
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "{r:?}"
    );

    let (png, dom) = render_in_chromium(&format!("http://{addr}/status?html"), &dir.path);

    assert_screenshot_shows_a_waiting_queue(&png, &dir.path);
    assert!(
        dom.contains("<meta http-equiv=\"refresh\" content=\"5\">"),
        "no meta refresh:\n{dom}"
    );
    for (n, name) in ["shop.test", "api.test"].iter().enumerate() {
        let block =
            format!("<section class=\"section\" id=\"section-{n}\"><h2 class=\"name\">{name}</h2>");
        assert!(dom.contains(&block), "no block for {name}:\n{dom}");
    }
    assert!(!dom.contains("id=\"section-2\""), "{dom}");
    assert_eq!(
        dom.matches("class=\"queue-depth waiting\"").count(),
        1,
        "{dom}"
    );
    assert!(dom.contains(one_waiting), "shop.test's queue:\n{dom}");
    assert_eq!(dom.matches("<tr class=\"backend ").count(), 2, "{dom}");
    for (state, id) in [("busy", &busy_id), ("idle", &idle_id)] {
        let row = format!("<tr class=\"backend state-{state}\"><td class=\"id\">{id}</td>");
        assert!(dom.contains(&row), "backend {id} ({state}):\n{dom}");
    }

    // The held and the waiting request are both answered in the end.
    busy.respond_echo(&held_request);
    assert_eq!(held.read_response(false).status, 200);
    let next = busy.expect_request();
    assert_eq!(next.target, "/waiting");
    busy.respond_echo(&next);
    assert_eq!(waiting.read_response(false).status, 200);
    eprintln!(
        "live status page rendered and checked in {:?}",
        started.elapsed()
    );
}

/// Two sections, six backends in every state, requests waiting in the
/// first section and a backend id that tries to be markup in the second.
fn example_snapshot() -> Snapshot {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut wait = Histogram::default();
    for ms in [0, 0, 3, 40, 700] {
        wait.observe(Duration::from_millis(ms));
    }
    let mut responses = StatusClasses::default();
    for status in [200, 200, 200, 301, 404, 502, 503] {
        responses.add(status);
    }
    let backend = |id: &str, port: u16, state, requests, age: u64, worker| BackendSnapshot {
        id: id.into(),
        peer: format!("10.0.0.7:{port}"),
        state,
        requests,
        connected_unix: now - age,
        worker,
    };
    Snapshot {
        version: env!("CARGO_PKG_VERSION"),
        started_unix: now - 3 * 86_400 - 5000,
        now_unix: now,
        workers: 2,
        reloads: 2,
        reload_failures: 0,
        client_connections: 37,
        backend_connections: 5,
        bytes_in: 48_000_000,
        bytes_out: 3_100_000_000,
        unrouted: StatusClasses([0, 12, 0, 3, 0]),
        sections: vec![
            SectionSnapshot {
                name: "app.example.com".into(),
                hosts: vec!["app.example.com".into(), "www.example.com".into()],
                outgoing: vec!["127.0.0.1:30000".into()],
                queue_depth: 12,
                busy_backends: 2,
                handshaking_backends: 1,
                counters: SectionCounters {
                    responses,
                    status_502: 1,
                    status_503: 1,
                    backends_joined: 9,
                    backends_left: 6,
                    handshakes_refused: 2,
                    redeploys: 1,
                    static_files: 120,
                    bytes_in: 40_000_000,
                    bytes_out: 3_000_000_000,
                    queue_wait: wait,
                    ..SectionCounters::default()
                },
                backends: vec![
                    backend("app-1", 41000, BackendStateName::Busy, 5120, 7200, 0),
                    backend("app-2", 41001, BackendStateName::Busy, 4988, 7100, 1),
                    backend("", 41002, BackendStateName::Handshaking, 0, 1, 1),
                    backend("app-3", 41003, BackendStateName::Closing, 812, 900, 0),
                ],
                ..SectionSnapshot::default()
            },
            SectionSnapshot {
                name: "api.example.com".into(),
                hosts: vec!["api.example.com".into()],
                outgoing: vec!["127.0.0.1:30001".into()],
                idle_backends: 1,
                counters: SectionCounters {
                    responses: StatusClasses([0, 900, 0, 4, 0]),
                    backends_joined: 1,
                    ..SectionCounters::default()
                },
                backends: vec![
                    backend("api-1", 42000, BackendStateName::Idle, 904, 60, 1),
                    backend("<i>not markup</i>", 42001, BackendStateName::Idle, 0, 5, 0),
                ],
                ..SectionSnapshot::default()
            },
        ],
    }
}

// ---------------------------------------------------------------------------
// Chromium
// ---------------------------------------------------------------------------

/// Loads `url` in headless Chromium at 1200×900: a screenshot (decoded) and
/// the DOM after load. Files (the PNG, each run's stdout and stderr, the
/// profiles) go to `out_dir`. Panics with Chromium's stderr if it fails or
/// outlives `CHROMIUM_DEADLINE`.
fn render_in_chromium(url: &str, out_dir: &Path) -> (Png, String) {
    let shot = out_dir.join("page.png");
    run_chromium(
        &[&format!("--screenshot={}", shot.display()), url],
        out_dir,
        "screenshot",
    );
    let bytes = fs::read(&shot)
        .unwrap_or_else(|e| panic!("chromium wrote no screenshot at {}: {e}", shot.display()));
    let png = decode_png(&bytes)
        .unwrap_or_else(|e| panic!("{} is not a PNG this test can read: {e}", shot.display()));
    let dom = run_chromium(&["--dump-dom", url], out_dir, "dump-dom");
    (png, dom)
}

/// Runs Chromium with the common headless flags and `args`; answers its
/// stdout.
fn run_chromium(args: &[&str], out_dir: &Path, tag: &str) -> String {
    let profile = out_dir.join(format!("{tag}-profile"));
    let stdout_path = out_dir.join(format!("{tag}.stdout"));
    let stderr_path = out_dir.join(format!("{tag}.stderr"));
    let stdout = fs::File::create(&stdout_path).expect("create stdout file");
    let stderr = fs::File::create(&stderr_path).expect("create stderr file");
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        "--hide-scrollbars",
        "--force-color-profile=srgb",
        &format!("--user-data-dir={}", profile.display()),
        &format!("--window-size={WIDTH},{HEIGHT}"),
    ])
    .args(args)
    .stdin(Stdio::null())
    .stdout(stdout)
    .stderr(stderr)
    // Its own process group, so a timeout kills the renderer and GPU
    // processes along with the browser.
    .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{CHROMIUM}` is not installed (not found in PATH). This test needs headless \
             Chromium: run tests/run.sh, which installs it (apt-get install chromium)."
        ),
        Err(e) => panic!("cannot start `{CHROMIUM}`: {e}"),
    };
    let group = child.id() as i32;
    let kill_group = || {
        // SAFETY: kill(2) with a negative pid signals the process group we
        // created above; it touches no memory.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    };
    let deadline = Instant::now() + CHROMIUM_DEADLINE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                kill_group();
                let _ = child.wait();
                panic!(
                    "chromium ({tag}) did not finish within {CHROMIUM_DEADLINE:?} and was \
                     killed; its stderr:\n{}",
                    tail(&stderr_path)
                );
            }
            Err(e) => {
                kill_group();
                panic!("waiting for chromium ({tag}): {e}");
            }
        }
    };
    kill_group(); // helpers that outlived the browser, if any
    if !status.success() {
        panic!(
            "chromium ({tag}) failed: {status}; its stderr:\n{}",
            tail(&stderr_path)
        );
    }
    fs::read_to_string(&stdout_path).expect("read chromium's stdout")
}

/// The last 4 KB of a file, for failure messages.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let cut = text.len().saturating_sub(4096);
    let start = (cut..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text[start..].to_string()
}

/// A fresh directory under the system temp dir, removed when the test
/// passes and kept (and named on stderr) when it fails.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn new(tag: &str) -> ScratchDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "swiftiply-test-{tag}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&path).expect("create scratch dir");
        ScratchDir { path }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("kept for inspection: {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------
// PNG
// ---------------------------------------------------------------------------

/// A decoded image, alpha dropped.
struct Png {
    width: u32,
    height: u32,
    rgb: Vec<[u8; 3]>,
}

impl Png {
    fn distinct_colours(&self) -> usize {
        self.rgb.iter().collect::<HashSet<_>>().len()
    }

    fn count(&self, colour: [u8; 3]) -> usize {
        self.rgb.iter().filter(|&&p| p == colour).count()
    }
}

/// Decodes a non-interlaced 8-bit RGB or RGBA PNG, checking every chunk's
/// CRC and the zlib stream's Adler-32.
fn decode_png(data: &[u8]) -> Result<Png, String> {
    let body = data
        .strip_prefix(b"\x89PNG\r\n\x1a\n")
        .ok_or("no PNG signature")?;
    let (mut pos, mut header, mut idat) = (0, None, Vec::new());
    loop {
        let len = be32(body, pos)? as usize;
        let chunk = body.get(pos + 4..pos + 8 + len).ok_or("truncated chunk")?;
        if crc32(chunk) != be32(body, pos + 8 + len)? {
            return Err(format!(
                "CRC mismatch in {:?}",
                String::from_utf8_lossy(&chunk[..4])
            ));
        }
        let (kind, content) = chunk.split_at(4);
        match kind {
            b"IHDR" => header = Some(content.to_vec()),
            b"IDAT" => idat.extend_from_slice(content),
            b"IEND" => break,
            _ => {}
        }
        pos += 12 + len;
    }
    let h = header.ok_or("no IHDR")?;
    let (width, height) = (be32(&h, 0)?, be32(&h, 4)?);
    let channels = match (h[8], h[9], h[12]) {
        (8, 2, 0) => 3,
        (8, 6, 0) => 4,
        (depth, colour, interlace) => {
            return Err(format!(
                "unsupported PNG: depth {depth}, colour type {colour}, interlace {interlace}"
            ))
        }
    };
    let raw = zlib_decompress(&idat)?;
    let stride = width as usize * channels;
    if raw.len() != (stride + 1) * height as usize {
        return Err(format!(
            "{} bytes of pixel data for {width}x{height}",
            raw.len()
        ));
    }
    let mut pixels = vec![0u8; stride * height as usize];
    for y in 0..height as usize {
        let filter = raw[y * (stride + 1)];
        let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
        let (done, rest) = pixels.split_at_mut(y * stride);
        let prev = if y > 0 {
            &done[(y - 1) * stride..]
        } else {
            &[][..]
        };
        let cur = &mut rest[..stride];
        for i in 0..stride {
            let a = if i >= channels { cur[i - channels] } else { 0 };
            let b = prev.get(i).copied().unwrap_or(0);
            let c = if i >= channels {
                prev.get(i - channels).copied().unwrap_or(0)
            } else {
                0
            };
            let predicted = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => paeth(a, b, c),
                f => return Err(format!("unknown row filter {f}")),
            };
            cur[i] = line[i].wrapping_add(predicted);
        }
    }
    let rgb = pixels
        .chunks_exact(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    Ok(Png { width, height, rgb })
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = (
        (p - i16::from(a)).abs(),
        (p - i16::from(b)).abs(),
        (p - i16::from(c)).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

fn be32(data: &[u8], at: usize) -> Result<u32, String> {
    let b = data.get(at..at + 4).ok_or("truncated PNG")?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// RFC 1950 wrapper around `inflate`.
fn zlib_decompress(data: &[u8]) -> Result<Vec<u8>, String> {
    let (cmf, flg) = match data {
        [cmf, flg, ..] => (*cmf, *flg),
        _ => return Err("empty zlib stream".into()),
    };
    if cmf & 0x0f != 8 || (u16::from(cmf) << 8 | u16::from(flg)) % 31 != 0 || flg & 0x20 != 0 {
        return Err("bad zlib header".into());
    }
    let mut bits = Bits {
        data,
        pos: 2,
        buf: 0,
        count: 0,
    };
    let out = inflate(&mut bits)?;
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &out {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    if be32(data, bits.pos)? != (b << 16 | a) {
        return Err("Adler-32 mismatch".into());
    }
    Ok(out)
}

/// Deflate's bit order: least significant bit of each byte first.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u32,
    count: u32,
}

impl Bits<'_> {
    fn take(&mut self, n: u32) -> Result<u32, String> {
        while self.count < n {
            let byte = *self.data.get(self.pos).ok_or("deflate stream ends early")?;
            self.pos += 1;
            self.buf |= u32::from(byte) << self.count;
            self.count += 8;
        }
        let v = self.buf & ((1u32 << n) - 1);
        self.buf >>= n;
        self.count -= n;
        Ok(v)
    }

    /// Drops the rest of the current byte (bytes are loaded only as
    /// needed, so fewer than 8 bits are ever buffered here).
    fn align(&mut self) {
        self.buf = 0;
        self.count = 0;
    }
}

/// A canonical Huffman code: how many codes of each length, and the
/// symbols in code order.
struct Huffman {
    counts: [u16; 16],
    symbols: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Huffman {
        let mut counts = [0u16; 16];
        for &len in lengths {
            counts[usize::from(len)] += 1;
        }
        counts[0] = 0;
        let mut offsets = [0u16; 16];
        for len in 1..15 {
            offsets[len + 1] = offsets[len] + counts[len];
        }
        let mut symbols = vec![0u16; lengths.len()];
        for (symbol, &len) in lengths.iter().enumerate() {
            if len != 0 {
                symbols[usize::from(offsets[usize::from(len)])] = symbol as u16;
                offsets[usize::from(len)] += 1;
            }
        }
        Huffman { counts, symbols }
    }

    fn decode(&self, bits: &mut Bits) -> Result<u16, String> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= bits.take(1)? as i32;
            let count = i32::from(self.counts[len]);
            if code - first < count {
                return Ok(self.symbols[(index + code - first) as usize]);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err("invalid Huffman code".into())
    }
}

const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// The order in which a dynamic block sends its code-length code lengths.
const CLEN_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// RFC 1951 inflate: stored, fixed and dynamic blocks.
fn inflate(bits: &mut Bits) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let last = bits.take(1)? == 1;
        match bits.take(2)? {
            0 => {
                bits.align();
                let len = usize::from(u16::from_le_bytes([
                    bits.take(8)? as u8,
                    bits.take(8)? as u8,
                ]));
                let nlen = u16::from_le_bytes([bits.take(8)? as u8, bits.take(8)? as u8]);
                if len != usize::from(!nlen) {
                    return Err("stored block length check failed".into());
                }
                let block = bits
                    .data
                    .get(bits.pos..bits.pos + len)
                    .ok_or("truncated stored block")?;
                out.extend_from_slice(block);
                bits.pos += len;
            }
            1 => {
                let mut lengths = [8u8; 288];
                lengths[144..256].fill(9);
                lengths[256..280].fill(7);
                let (lit, dist) = (Huffman::new(&lengths), Huffman::new(&[5; 30]));
                inflate_block(bits, &lit, &dist, &mut out)?;
            }
            2 => {
                let (lit, dist) = dynamic_codes(bits)?;
                inflate_block(bits, &lit, &dist, &mut out)?;
            }
            _ => return Err("reserved block type".into()),
        }
        if last {
            bits.align();
            return Ok(out);
        }
    }
}

fn dynamic_codes(bits: &mut Bits) -> Result<(Huffman, Huffman), String> {
    let nlit = bits.take(5)? as usize + 257;
    let ndist = bits.take(5)? as usize + 1;
    let nclen = bits.take(4)? as usize + 4;
    let mut clen = [0u8; 19];
    for &i in &CLEN_ORDER[..nclen] {
        clen[i] = bits.take(3)? as u8;
    }
    let clen_code = Huffman::new(&clen);
    let mut lengths = Vec::with_capacity(nlit + ndist);
    while lengths.len() < nlit + ndist {
        let (value, repeat) = match clen_code.decode(bits)? {
            sym @ 0..=15 => (sym as u8, 1),
            16 => (
                *lengths.last().ok_or("repeat with no previous length")?,
                3 + bits.take(2)?,
            ),
            17 => (0, 3 + bits.take(3)?),
            18 => (0, 11 + bits.take(7)?),
            _ => return Err("bad code-length symbol".into()),
        };
        lengths.extend(std::iter::repeat_n(value, repeat as usize));
    }
    if lengths.len() != nlit + ndist {
        return Err("code lengths overrun".into());
    }
    Ok((
        Huffman::new(&lengths[..nlit]),
        Huffman::new(&lengths[nlit..]),
    ))
}

fn inflate_block(
    bits: &mut Bits,
    lit: &Huffman,
    dist: &Huffman,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    loop {
        let sym = usize::from(lit.decode(bits)?);
        if sym < 256 {
            out.push(sym as u8);
            continue;
        }
        if sym == 256 {
            return Ok(());
        }
        let i = sym - 257;
        let len = *LEN_BASE.get(i).ok_or("bad length symbol")? as usize
            + bits.take(u32::from(LEN_EXTRA[i]))? as usize;
        let d = usize::from(dist.decode(bits)?);
        let back = *DIST_BASE.get(d).ok_or("bad distance symbol")? as usize
            + bits.take(u32::from(DIST_EXTRA[d]))? as usize;
        if back > out.len() {
            return Err("distance before the start of the output".into());
        }
        let from = out.len() - back;
        for k in 0..len {
            out.push(out[from + k]);
        }
    }
}

#[test]
fn the_png_decoder_reads_stored_and_compressed_images() {
    // A 2x2 RGB image, row filters None and Sub, in one stored deflate block.
    let raw = [0u8, 255, 0, 0, 0, 255, 0, 1, 0, 0, 255, 10, 20, 30];
    let mut z = vec![
        0x78,
        0x01,
        0x01,
        raw.len() as u8,
        0,
        !(raw.len() as u8),
        0xff,
    ];
    z.extend_from_slice(&raw);
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&(b << 16 | a).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], content: &[u8]| {
        png.extend_from_slice(&(content.len() as u32).to_be_bytes());
        let body = [kind, content].concat();
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    chunk(b"IHDR", &[0, 0, 0, 2, 0, 0, 0, 2, 8, 2, 0, 0, 0]);
    chunk(b"IDAT", &z);
    chunk(b"IEND", &[]);
    let img = decode_png(&png).expect("decode");
    assert_eq!((img.width, img.height), (2, 2));
    assert_eq!(
        img.rgb,
        [[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 29]]
    ); // 30 + 255, mod 256

    // Fixed Huffman codes: zlib's compression of "abcabcabc". (Dynamic
    // blocks are what Chromium's screenshots are made of.)
    let fixed = [
        0x78, 0x9c, 0x4b, 0x4c, 0x4a, 0x4e, 0x04, 0x23, 0x00, 0x11, 0x3d, 0x03, 0x73,
    ];
    assert_eq!(zlib_decompress(&fixed).as_deref(), Ok(&b"abcabcabc"[..]));

    let mut corrupt = png.clone();
    corrupt[50] ^= 1; // a pixel byte inside IDAT
    assert!(
        matches!(decode_png(&corrupt), Err(e) if e.contains("CRC")),
        "a flipped bit fails the CRC"
    );
}
