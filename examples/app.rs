//! The example application: a few routes, served either as a plain HTTP
//! server or as a Swiftiply backend — the classic Mongrel switch.
//!
//! ```text
//! cargo run --release --example app -- --listen 127.0.0.1:3000       # plain HTTP
//! SWIFTIPLY=127.0.0.1:30000 cargo run --release --example app        # backend
//! cargo run --release --example app -- --swiftiply 127.0.0.1:30000 --connections 8 [--key K] [--packets]
//! ```
//!
//! Routes: `/` and `/hello` (13 bytes, "Hello, world!"), `/large` (1 MiB of
//! bytes, for throughput), `/stream` (a body of unknown length in five
//! pieces), `POST /echo` (the request body back), `/slow?ms=N` (answers after
//! N ms). It is also the benchmarks' backend, so the hot routes do no
//! allocation: `/large` sends a buffer built once, on its first request.
//! SIGTERM or Ctrl-C stops it gracefully.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use swiftiply::backend::{self, BackendOptions, Request, Responder, StreamFraming};

const USAGE: &str = "usage: app [--listen ADDR] | [--swiftiply HOST:PORT]... [--connections N] [--key KEY] [--packets]
  (the environment variable SWIFTIPLY=HOST:PORT also selects backend mode)";

/// Size of the `/large` body.
const LARGE: usize = 1 << 20;

/// The `/large` body: built once, shared by every request and thread.
fn large_body() -> &'static [u8] {
    static BODY: OnceLock<Vec<u8>> = OnceLock::new();
    BODY.get_or_init(|| (0..LARGE).map(|i| b'a' + (i % 26) as u8).collect())
}

fn handle(req: &mut Request<'_>, res: &mut Responder<'_>) -> io::Result<()> {
    const TEXT: &[(&str, &str)] = &[("Content-Type", "text/plain")];
    match (req.method(), req.path()) {
        ("GET" | "HEAD", "/" | "/hello") => res.send(200, TEXT, b"Hello, world!"),
        ("GET" | "HEAD", "/large") => res.send(
            200,
            &[("Content-Type", "application/octet-stream")],
            large_body(),
        ),
        ("GET" | "HEAD", "/stream") => {
            let mut body = res.stream(200, TEXT)?;
            for i in 1..=5 {
                writeln!(body, "chunk {i}")?;
            }
            body.finish()
        }
        ("POST" | "PUT", "/echo") => {
            let mut data = Vec::new();
            req.body().read_to_end(&mut data)?;
            res.send(200, &[("Content-Type", "application/octet-stream")], &data)
        }
        ("GET", "/slow") => {
            let ms: u64 = req
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(100)
                .min(60_000);
            std::thread::sleep(Duration::from_millis(ms));
            res.send(200, TEXT, format!("slept {ms} ms\n").as_bytes())
        }
        _ => res.send(404, TEXT, b"not found\n"),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut listen = None;
    let mut proxies: Vec<String> = std::env::var("SWIFTIPLY")
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    let mut connections = 4;
    let mut key = String::new();
    let mut framing = StreamFraming::Chunked;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let parsed: Result<(), String> = match arg.as_str() {
            "--listen" => value("--listen").map(|v| listen = Some(v)),
            "--swiftiply" => value("--swiftiply").map(|v| proxies.push(v)),
            "--connections" | "-n" => value("--connections").and_then(|v| {
                v.parse()
                    .map(|n| connections = n)
                    .map_err(|_| format!("--connections: {v:?} is not a number"))
            }),
            "--key" => value("--key").map(|v| key = v),
            "--packets" => {
                framing = StreamFraming::Packets;
                Ok(())
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {other:?}")),
        };
        if let Err(e) = parsed {
            eprintln!("app: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    if !proxies.is_empty() {
        let opts = BackendOptions::new(proxies.clone())
            .connections(connections)
            .key(&key)
            .framing(framing);
        let running = match backend::spawn(opts, handle) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("app: {e}");
                return ExitCode::FAILURE;
            }
        };
        backend::stop_on_termination(running.stop_flag());
        eprintln!(
            "app: serving as a Swiftiply backend, {connections} connection(s) to {}",
            proxies.join(", ")
        );
        running.join();
        return ExitCode::SUCCESS;
    }
    let addr = listen
        .or_else(|| std::env::var("PORT").ok().map(|p| format!("127.0.0.1:{p}")))
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("app: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    backend::stop_on_termination(stop.clone());
    eprintln!(
        "app: serving plain HTTP on {}",
        listener.local_addr().map_or(addr, |a| a.to_string())
    );
    match backend::serve_http(listener, handle, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("app: {e}");
            ExitCode::FAILURE
        }
    }
}
