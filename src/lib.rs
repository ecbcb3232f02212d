//! Swiftiply: a clustering HTTP proxy whose backends connect to it.
//!
//! - `config`: the YAML configuration, typed and validated.
//! - `proto`: sans-I/O protocol code (handshake, request and response heads,
//!   body framing, packet mode, the proxy's own responses).
//! - `reactor`: the mio event loop that moves bytes between sockets.
//! - `section`, `router`: sites and their settings; Host routing.
//! - `dispatch`: sans-I/O pairing of waiting requests with idle backends,
//!   queue deadlines and retries, driven by the reactor (and by the seeded
//!   simulation in `tests/simulation.rs`).
//! - `pace`: sans-I/O rule for how long the proxy waits for a request body
//!   (`min_body_rate`, `body_timeout`).
//! - `status`: the status endpoint's snapshot, rendered as Prometheus text or
//!   an HTML page.
//! - `backend`: a library for writing backends in Rust (blocking, one thread
//!   per connection), also able to serve plain HTTP.
//! - `bridge`: `swiftiply-bridge`, which puts an ordinary HTTP/1.1 server
//!   behind the proxy (a backend that forwards to it over a keep-alive pool).
//! - `access_log`: one line per finished request (`access_log: PATH|stderr`),
//!   formatted into a buffer and written in batches of whole lines.
//! - `daemon`: daemon mode, the pid file and dropping root, between binding
//!   the listeners and starting the workers.
//! - `fuzzing`: the invariant checks the fuzz targets (`fuzz/`) and
//!   `tests/fuzz_regressions.rs` run over arbitrary bytes; not an API.

pub mod access_log;
pub mod backend;
pub mod bridge;
pub mod config;
pub mod daemon;
pub mod dispatch;
#[doc(hidden)]
pub mod fuzzing;
pub mod pace;
pub mod proto;
pub mod reactor;
pub mod router;
pub mod section;
pub mod static_files;
pub mod status;
