//! Heap allocations per request in Swiftiply's steady state, counted
//! in-process: the bench binary's global allocator counts the allocations
//! (and bytes) made by threads that opted in, and only the thread running
//! Swiftiply's reactor opts in. The backend (the crate's backend library)
//! and the client threads run in the same process but are not counted.
//!
//! After 2,000 warm-up requests on a few keep-alive connections, the
//! counters are read, 20,000 more requests are made on the same
//! connections, and the counters are read again. A `realloc` counts as one
//! allocation of its new size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use swiftiply::backend::{self, BackendOptions, Request, Responder};
use swiftiply::config::Config;
use swiftiply::reactor::Reactor;

use crate::http::Client;
use crate::lab::{self, Lab};
use crate::peers;

pub const WARMUP: usize = 2_000;
pub const MEASURED: usize = 20_000;
const CLIENTS: usize = 4;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Const-initialised and without a destructor: safe to read from inside
    // the allocator, even while the thread is being torn down.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// The system allocator, counting for threads that opted in.
pub struct CountingAlloc;

impl CountingAlloc {
    fn note(size: usize) {
        if COUNTED.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(size as u64, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

fn snapshot() -> (u64, u64) {
    (
        ALLOCATIONS.load(Ordering::SeqCst),
        BYTES.load(Ordering::SeqCst),
    )
}

pub struct Allocs {
    pub per_request: f64,
    pub bytes_per_request: f64,
    pub warmup_allocations: u64,
}

/// Runs the reactor in a counted thread (pinned to the proxy CPU) with an
/// in-process backend, and counts.
pub fn measure(lab: &Lab) -> Result<Allocs, String> {
    let config = lab.write_file("swiftiply-inprocess.yml", &peers::swiftiply_config())?;
    let (tx, rx) = mpsc::channel::<Result<(SocketAddr, SocketAddr), String>>();
    let proxy_cpu = lab.cpu(lab::Place::Proxy);
    std::thread::Builder::new()
        .name("reactor".into())
        .spawn(move || {
            if let Some(cpu) = proxy_cpu {
                let _ = lab::pin_current_thread(&cpu);
            }
            let reactor = Config::load(&config)
                .map_err(|e| e.to_string())
                .and_then(|cfg| Reactor::bind(&cfg).map_err(|e| e.to_string()));
            let mut reactor = match reactor {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let clients = reactor.client_addrs().first().copied();
            let backends = reactor.backend_addrs().first().map(|&(_, a)| a);
            let Some((clients, backends)) = clients.zip(backends) else {
                let _ = tx.send(Err("the reactor has no listeners".into()));
                return;
            };
            let _ = tx.send(Ok((clients, backends)));
            COUNTED.set(true);
            // Never returns while the process lives; an error ends the thread.
            if let Err(e) = reactor.run() {
                eprintln!("compare: the in-process reactor failed: {e}");
            }
        })
        .map_err(|e| format!("cannot start the reactor thread: {e}"))?;
    let (clients, backends) = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "the in-process reactor did not start".to_string())??;

    let opts = BackendOptions::new(vec![backends.to_string()]).connections(peers::BACKEND_CONNS);
    let running = backend::spawn(opts, |_: &mut Request<'_>, res: &mut Responder<'_>| {
        res.send(200, &[("Content-Type", "text/plain")], b"Hello, world!")
    })
    .map_err(|e| format!("cannot start the in-process backend: {e}"))?;
    let result = count(clients);
    running.stop_and_join();
    result
}

fn count(addr: SocketAddr) -> Result<Allocs, String> {
    // The backend connections may still be dialing in.
    let until = lab::after(10.0);
    loop {
        lab::check_interrupt()?;
        match crate::http::get_once(addr, "/hello", Duration::from_secs(2)) {
            Ok(r) if r.status == 200 => break,
            _ if std::time::Instant::now() >= until => {
                return Err("the in-process proxy never answered 200".into())
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let mut clients = (0..CLIENTS)
        .map(|_| Client::connect(addr, Duration::from_secs(10)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot connect to the in-process proxy: {e}"))?;
    let start = snapshot();
    drive(&mut clients, WARMUP)?;
    let warm = snapshot();
    drive(&mut clients, MEASURED)?;
    let end = snapshot();
    Ok(Allocs {
        per_request: (end.0 - warm.0) as f64 / MEASURED as f64,
        bytes_per_request: (end.1 - warm.1) as f64 / MEASURED as f64,
        warmup_allocations: warm.0 - start.0,
    })
}

/// `total` requests of `GET /hello`, spread over the clients (one thread
/// each), every one answered 200.
pub fn drive(clients: &mut [Client], total: usize) -> Result<(), String> {
    let n = clients.len();
    std::thread::scope(|s| {
        let workers: Vec<_> = clients
            .iter_mut()
            .enumerate()
            .map(|(i, c)| {
                let share = total / n + usize::from(i < total % n);
                s.spawn(move || -> Result<(), String> {
                    for _ in 0..share {
                        let r = c
                            .get("/hello")
                            .map_err(|e| format!("request failed: {e}"))?;
                        if r.status != 200 {
                            return Err(format!("a request got status {}", r.status));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err("a client thread panicked".into()))
        })
    })
}
