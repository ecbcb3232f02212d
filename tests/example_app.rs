//! The example application (`examples/app.rs`) in both classic modes: a
//! plain HTTP server, and a Swiftiply backend chosen with `SWIFTIPLY=`.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// `cargo test` builds the examples next to the binaries (`--all-targets`
/// builds them as test harnesses instead, so use plain `cargo test`).
fn app_path() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_swiftiply"));
    let app = bin.parent().unwrap().join("examples").join("app");
    assert!(
        app.exists(),
        "{} is missing: run the suite with `cargo test` (or tests/run.sh), which builds the examples",
        app.display()
    );
    app
}

struct App(Child);

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl App {
    fn start(args: &[&str], env: &[(&str, &str)]) -> (App, std::sync::mpsc::Receiver<String>) {
        let mut child = Command::new(app_path())
            .args(args)
            .env_remove("SWIFTIPLY")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", app_path().display()));
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (App(child), rx)
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + T;
        loop {
            if let Ok(Some(s)) = self.0.try_wait() {
                return s.code();
            }
            assert!(Instant::now() < deadline, "app did not exit after SIGTERM");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn check_routes(addr: SocketAddr) {
    let mut c = Client::connect(addr);
    let r = c.get("app.test", "/hello");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"Hello, world!".as_slice()),
        "{r:?}"
    );
    let r = c.get("app.test", "/stream");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.framing, Framing::Chunked, "{r:?}");
    assert_eq!(
        r.body_str(),
        "chunk 1\nchunk 2\nchunk 3\nchunk 4\nchunk 5\n"
    );
    let r = c
        .request(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 11\r\n\r\nhello there");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"hello there".as_slice()),
        "{r:?}"
    );
}

#[test]
fn the_app_serves_plain_http() {
    let (app, lines) = App::start(&["--listen", "127.0.0.1:0"], &[]);
    let line = lines.recv_timeout(T).expect("app printed nothing");
    let addr: SocketAddr = line
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    check_routes(addr);
    // HTTP/1.0 with keep-alive: a streamed body must close the connection.
    let mut c = Client::connect(addr);
    let r = c.request(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert!(r.says_close(), "{r:?}");
    assert_eq!(
        r.body_str(),
        "chunk 1\nchunk 2\nchunk 3\nchunk 4\nchunk 5\n"
    );
    assert_eq!(app.terminate(), Some(0));
}

#[test]
fn the_app_is_a_backend_when_swiftiply_is_set() {
    let p = Proxy::start(&one_section("timeout: 5", ""));
    let backend = p.backend_addr(0).to_string();
    let (app, _lines) = App::start(&["--connections", "3"], &[("SWIFTIPLY", &backend)]);
    // The first request may wait in the queue until the app has dialled in.
    check_routes(p.client_addr());
    assert_eq!(app.terminate(), Some(0));
}
