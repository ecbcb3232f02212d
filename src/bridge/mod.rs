//! `swiftiply-bridge`: puts any ordinary HTTP/1.1 application server behind
//! Swiftiply, unchanged.
//!
//! The bridge is a Swiftiply backend (it dials in to the proxy with the
//! `backend` library, `connections` connections per proxy) whose handler
//! forwards each request to an upstream HTTP server over a keep-alive pool
//! (`upstream`), optionally after starting that server itself (`spawn`).
//!
//! - `cli`: the command line, parsed and validated into `BridgeOptions`.
//! - `upstream`: the connection pool, balancing, and the request/response
//!   relay with bounded memory.
//! - `spawn`: `--spawn` copies of the application, their pid files, restarts
//!   and shutdown.
//!
//! Life cycle (`run`): signals are caught first (so a SIGTERM during start-up
//! still stops the copies); the copies start and are waited for; `--upstream`
//! servers are probed once (a down one is logged, not fatal: its requests get
//! 502 until it comes up); the backend connections start; then
//! `swiftiply-bridge: ready` goes to stderr. On the first SIGTERM/SIGINT the
//! backend connections stop taking requests, those in flight finish, the
//! copies are stopped and `run` returns `Ok`. A second signal signals the
//! copies and exits at once (status 1). The upstream pool outlives every
//! request, so nothing is torn down under a request in flight.

pub mod cli;
pub mod spawn;
pub mod upstream;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

pub use cli::{parse_args, BridgeOptions, Command, SpawnOptions, USAGE};
use spawn::{Apps, Registry};
pub use upstream::Upstreams;

use crate::backend::{self, BackendOptions, Request, Responder};

/// How long stopped copies get between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the main thread looks at the stop flag and the copies.
const TICK: Duration = Duration::from_millis(50);

/// Runs the bridge until a signal (then drains) or a fatal error.
pub fn run(opts: BridgeOptions) -> io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let registry = Registry::default();
    {
        let registry = registry.clone();
        backend::stop_on_termination_then(stop.clone(), move || {
            log::warn!("second signal: exiting now");
            registry.terminate_all();
        });
    }

    let mut apps = match &opts.spawn {
        Some(s) => Some(Apps::start(s, registry)?),
        None => None,
    };
    let mut addrs = opts.upstreams.clone();
    if let (Some(apps), Some(s)) = (&mut apps, &opts.spawn) {
        addrs.extend(apps.addrs());
        apps.wait_ready(s.ready_timeout, &stop);
    }
    for addr in &opts.upstreams {
        probe(*addr);
    }
    if stop.load(Ordering::Relaxed) {
        log::info!("stopped before serving");
        return Ok(()); // `apps` stops the copies on drop
    }

    let pool = Arc::new(Upstreams::new(addrs, opts.timeout));
    let handler = {
        let pool = pool.clone();
        move |req: &mut Request<'_>, res: &mut Responder<'_>| pool.handle(req, res)
    };
    let backend_opts = BackendOptions::new(opts.connect.clone())
        .key(&opts.key)
        .connections(opts.connections)
        .framing(opts.framing);
    let running = backend::spawn(backend_opts, handler)?;
    log::info!(
        "{} connection(s) to each of {}; forwarding to {}",
        opts.connections,
        opts.connect.join(", "),
        pool.addrs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    eprintln!("swiftiply-bridge: ready");

    while !stop.load(Ordering::Relaxed) {
        thread::sleep(TICK);
        if let Some(apps) = &mut apps {
            apps.watch();
        }
    }
    let busy: usize = pool.loads().iter().sum();
    log::info!("stopping: no new requests; waiting for {busy} in flight");
    running.stop();
    running.join();
    log::info!("requests in flight finished");
    if let Some(mut apps) = apps {
        apps.stop(STOP_GRACE);
    }
    log::info!("stopped");
    Ok(())
}

/// One connection attempt, for the log only.
fn probe(addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
        Ok(_) => log::info!("upstream {addr} is accepting connections"),
        Err(e) => log::warn!(
            "upstream {addr} is not accepting connections ({e}); \
             its requests get 502 until it is"
        ),
    }
}
