//! A plain HTTP/1.1 server for the same handlers: thread per connection,
//! keep-alive, HTTP/1.0 and 1.1. It lets an application run with or without
//! Swiftiply in front (see `examples/app.rs`), and gives benchmarks a
//! direct baseline.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::conn::{Conn, Role};
use super::Handler;

/// Accepts on `listener` and serves `handler` until `stop` is set.
pub fn serve_http<H: Handler>(
    listener: TcpListener,
    handler: H,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    let handler: Arc<dyn Handler> = Arc::new(handler);
    listener.set_nonblocking(true)?;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((sock, peer)) => {
                sock.set_nonblocking(false)?;
                sock.set_nodelay(true)?;
                sock.set_read_timeout(Some(Duration::from_millis(100)))?;
                let (handler, stop) = (handler.clone(), stop.clone());
                thread::spawn(move || {
                    let mut conn = Conn::new();
                    if let Err(e) = conn.serve(&sock, &*handler, Role::Server, &stop) {
                        log::debug!("connection from {peer}: {e}");
                    }
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5))
            }
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    || e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e) => {
                log::warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(())
}
