//! Backends killed and restarted at random under concurrent keep-alive load
//! (docs/protocol.md, "Backend failures" and "Backend lifecycle").
//!
//! A pool of echo backends dies at seeded-random moments — idle, with a
//! request read but unanswered, or (where a cut is acceptable) half-way
//! through a response — half of the time with a reset rather than a FIN,
//! and reconnects after up to 100 ms. Meanwhile client threads send
//! keep-alive requests, each carrying a unique token, and check that every
//! answer is the echo of their own request:
//! - in a `redeployable` section every request succeeds;
//! - in a section that is not, a request may end in a 502 or a cut, but
//!   never in another client's response, and never later than a deadline.
//!
//! Afterwards, with the backends back, the proxy holds exactly the
//! descriptors it held after the warm-up and about the same memory.
//!
//! The seed is printed with every failure; `CHURN_SEED=N` replays its
//! decisions (the interleaving with the proxy is up to the scheduler).

mod common;

use common::*;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const CLIENTS: usize = 8;
const BACKENDS: usize = 6;
const WARM_UP: Duration = Duration::from_millis(500);
const LOAD: Duration = Duration::from_secs(5);
/// No request may take longer than this, whatever happens to its backend.
const REQUEST_DEADLINE: Duration = Duration::from_secs(8);
/// Within this, after the load, descriptors and memory are back.
const SETTLE: Duration = Duration::from_secs(5);
/// How far VmRSS may stay above its post-warm-up value.
const RSS_SLACK_KB: u64 = 2048;

// ---------------------------------------------------------------------------
// Seeded randomness
// ---------------------------------------------------------------------------

/// splitmix64: small, seedable, good enough to pick moments to die.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `CHURN_SEED` if set, else one from the clock; printed either way.
fn seed(test: &str) -> u64 {
    let seed = match std::env::var("CHURN_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CHURN_SEED={s:?} is not a number")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    };
    eprintln!("{test}: churn seed {seed} (replay with CHURN_SEED={seed})");
    seed
}

// ---------------------------------------------------------------------------
// Backends that die
// ---------------------------------------------------------------------------

/// How one backend connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Death {
    /// Its lifetime ran out between requests.
    Idle,
    /// It read a request (head, or head and body) and closed unanswered.
    MidRequest,
    /// It sent part of a response and closed.
    MidResponse,
    /// The proxy closed it, or reading or writing failed.
    Other,
}

const DEATH_KINDS: usize = 4;

/// Shared between the test and its backend threads.
#[derive(Default)]
struct Pool {
    /// Backends stop dying (and those that died come back).
    calm: AtomicBool,
    /// Backends leave for good.
    stop: AtomicBool,
    /// Backend connections open from the backends' side.
    live: AtomicUsize,
    deaths: [AtomicUsize; DEATH_KINDS],
}

impl Pool {
    fn deaths(&self, d: Death) -> usize {
        self.deaths[d as usize].load(Ordering::SeqCst)
    }
}

/// Chances per thousand requests.
const MID_REQUEST_PER_MILLE: u64 = 6;
const MID_RESPONSE_PER_MILLE: u64 = 3;

/// Partial body of a response cut short by its backend; it cannot be
/// mistaken for the echo of a request.
const CUT_SHORT: &[u8] = b"cut short";

/// One backend slot: connects, serves echo requests until its seeded death,
/// reconnects, and so on until the pool stops.
fn churning_backend(
    addr: SocketAddr,
    slot: usize,
    seed: u64,
    mid_response: bool,
    pool: Arc<Pool>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut rng = Rng::new(seed, slot as u64 + 1);
        let mut generation = 0;
        while !pool.stop.load(Ordering::SeqCst) {
            generation += 1;
            let id = id12("churn", slot * 100_000 + generation % 100_000);
            let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
                thread::sleep(Duration::from_millis(50));
                continue;
            };
            let mut be = Backend {
                conn: Conn::new(stream),
                id: id.clone(),
            };
            if be.conn.write_all(&handshake_bytes(&id, "")).is_err() {
                continue;
            }
            pool.live.fetch_add(1, Ordering::SeqCst);
            let death = serve_until_death(&mut be, &mut rng, mid_response, &pool);
            if rng.below(2) == 0 {
                reset_on_close(&be.conn.stream);
            }
            drop(be);
            pool.live.fetch_sub(1, Ordering::SeqCst);
            if let Some(d) = death {
                pool.deaths[d as usize].fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(rng.below(100)));
            }
        }
    })
}

/// Serves requests until this connection's death (`Some`), or until the
/// pool stops (`None`).
fn serve_until_death(
    be: &mut Backend,
    rng: &mut Rng,
    mid_response: bool,
    pool: &Pool,
) -> Option<Death> {
    let lifetime = Duration::from_millis(20 + rng.below(400));
    let born = Instant::now();
    loop {
        let calm = pool.calm.load(Ordering::SeqCst);
        if pool.stop.load(Ordering::SeqCst) {
            return None;
        }
        // Calm: wake up now and then to notice `stop`.
        let wait = if calm {
            Duration::from_millis(100)
        } else {
            lifetime.saturating_sub(born.elapsed())
        };
        if wait.is_zero() {
            return Some(Death::Idle);
        }
        be.set_read_timeout(wait);
        let head = match be.read_request_head() {
            Ok(Some(h)) => h,
            Ok(None) => return Some(Death::Other),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => return Some(Death::Other),
        };
        be.set_read_timeout(Duration::from_secs(5));
        let roll = if calm { 1000 } else { rng.below(1000) };
        if roll < MID_REQUEST_PER_MILLE {
            if rng.below(2) == 0 {
                let _ = be.read_request_body(head);
            }
            return Some(Death::MidRequest);
        }
        let Ok(req) = be.read_request_body(head) else {
            return Some(Death::Other);
        };
        if mid_response && roll < MID_REQUEST_PER_MILLE + MID_RESPONSE_PER_MILLE {
            let mut partial = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
            partial.extend_from_slice(CUT_SHORT);
            let _ = be.conn.write_all(&partial);
            return Some(Death::MidResponse);
        }
        if be.try_respond_echo(&req, &[]).is_err() {
            return Some(Death::Other);
        }
    }
}

/// Makes closing `s` send a reset instead of a FIN.
fn reset_on_close(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a plain setsockopt on a socket we own, with a value of the
    // size we pass.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// What one client thread saw.
#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    bad_gateway: usize,
    cut: usize,
    /// Everything that must not happen, described.
    wrong: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.bad_gateway += other.bad_gateway;
        self.cut += other.cut;
        self.wrong.extend(other.wrong);
    }
}

/// A request that carries `token` in its target, and in the body of every
/// third one.
fn request(host: &str, token: &str, n: usize) -> Vec<u8> {
    if n % 3 == 0 {
        let body = format!("payload of {token}");
        format!(
            "POST /echo/{token} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    } else {
        format!("GET /echo/{token} HTTP/1.1\r\nHost: {host}\r\nX-Token: {token}\r\n\r\n")
            .into_bytes()
    }
}

/// Sends keep-alive requests until `until`. `must_succeed`: every request
/// must be answered 200 (a redeployable section); otherwise a 502 or a cut
/// is allowed. Either way a 200 must be the echo of this very request.
fn client_load(
    addr: SocketAddr,
    host: &str,
    me: usize,
    until: Instant,
    must_succeed: bool,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<Client> = None;
    let mut n = 0;
    while Instant::now() < until && tally.wrong.len() < 5 {
        n += 1;
        let token = format!("tok-{me}-{n}");
        let req = request(host, &token, n);
        let c = conn.get_or_insert_with(|| {
            let c = Client::connect(addr);
            let _ = c.conn.stream.set_read_timeout(Some(REQUEST_DEADLINE));
            c
        });
        let started = Instant::now();
        let sent = c.try_send(&req);
        let answer = match sent {
            Ok(()) => c.try_read_response(false),
            Err(e) => Err(ReadError {
                error: e,
                partial: None,
            }),
        };
        let took = started.elapsed();
        if took > REQUEST_DEADLINE {
            tally
                .wrong
                .push(format!("{token}: took {took:?}, past the deadline"));
        }
        match answer {
            Ok(r) if r.status == 200 => {
                if r.body != req {
                    tally.wrong.push(format!(
                        "{token}: a 200 that is not the echo of this request: {r:?}"
                    ));
                } else {
                    tally.ok += 1;
                }
                if r.says_close() {
                    conn = None;
                }
            }
            Ok(r) => {
                if r.status != 502 || must_succeed {
                    tally.wrong.push(format!("{token}: {r:?}"));
                } else {
                    tally.bad_gateway += 1;
                }
                conn = None;
            }
            Err(e) => {
                if e.error.kind() == std::io::ErrorKind::TimedOut {
                    tally
                        .wrong
                        .push(format!("{token}: no answer within {REQUEST_DEADLINE:?}"));
                } else if must_succeed {
                    tally.wrong.push(format!("{token}: cut: {e:?}"));
                } else if let Some(p) = &e.partial {
                    let own = req.starts_with(&p.body) || p.body.starts_with(CUT_SHORT);
                    if p.status != 200 || !own {
                        tally
                            .wrong
                            .push(format!("{token}: a cut response not its own: {e:?}"));
                    } else {
                        tally.cut += 1;
                    }
                } else {
                    tally.cut += 1;
                }
                conn = None;
            }
        }
    }
    tally
}

fn run_clients(addr: SocketAddr, host: &'static str, load: Duration, must_succeed: bool) -> Tally {
    let until = Instant::now() + load;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|me| thread::spawn(move || client_load(addr, host, me, until, must_succeed)))
        .collect();
    let mut total = Tally::default();
    for t in threads {
        total.add(join_within(
            t,
            load + REQUEST_DEADLINE + Duration::from_secs(2),
            "client",
        ));
    }
    total
}

// ---------------------------------------------------------------------------
// The proxy's resources
// ---------------------------------------------------------------------------

fn open_fds(p: &Proxy) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", p.pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------

fn churn(test: &str, redeployable: bool) {
    let seed = seed(test);
    let host = "app.test";
    let section = if redeployable {
        "redeployable: true"
    } else {
        ""
    };
    let mut p = Proxy::start(&one_section("timeout: 5\nbackend_timeout: 3", section));
    let addr = p.client_addr();
    let pool = Arc::new(Pool::default());
    pool.calm.store(true, Ordering::SeqCst);
    let backends: Vec<_> = (0..BACKENDS)
        .map(|slot| churning_backend(p.backend_addr(0), slot, seed, !redeployable, pool.clone()))
        .collect();
    assert!(
        p.wait_for_log_count("joined section", BACKENDS, SETTLE),
        "seed {seed}: the backends did not join:\n{}",
        p.stderr_text()
    );

    let with_backends = open_fds(&p);

    // Warm-up: the same load without deaths; afterwards, the baseline.
    let warm = run_clients(addr, host, WARM_UP, true);
    assert!(
        warm.wrong.is_empty() && warm.ok > 0,
        "seed {seed}: warm-up failed: {warm:?}"
    );
    let settled = eventually(SETTLE, || open_fds(&p) == with_backends);
    assert!(
        settled,
        "seed {seed}: {} descriptors after the warm-up, {with_backends} before it",
        open_fds(&p)
    );
    let base_fds = with_backends - BACKENDS;
    let base_rss = p.rss_kb();

    // The churn.
    pool.calm.store(false, Ordering::SeqCst);
    let started = Instant::now();
    let load = run_clients(addr, host, LOAD, redeployable);
    pool.calm.store(true, Ordering::SeqCst);
    let took = started.elapsed();
    let deaths: Vec<usize> = [
        Death::Idle,
        Death::MidRequest,
        Death::MidResponse,
        Death::Other,
    ]
    .iter()
    .map(|&d| pool.deaths(d))
    .collect();
    eprintln!(
        "{test}: seed {seed}: {} answered, {} 502, {} cut in {took:?}; \
         backend deaths: idle {}, mid-request {}, mid-response {}, other {}",
        load.ok, load.bad_gateway, load.cut, deaths[0], deaths[1], deaths[2], deaths[3]
    );
    assert!(
        load.wrong.is_empty(),
        "seed {seed}: {} requests went wrong, first ones:\n{}",
        load.wrong.len(),
        load.wrong.join("\n")
    );
    assert!(load.ok > 100, "seed {seed}: too little load got through");
    assert!(
        deaths[Death::Idle as usize] > 0 && deaths[Death::MidRequest as usize] > 0,
        "seed {seed}: the backends hardly churned: {deaths:?}"
    );
    if !redeployable {
        assert!(
            deaths[Death::MidResponse as usize] > 0,
            "seed {seed}: no backend died mid-response: {deaths:?}"
        );
    }
    p.assert_alive();

    // The backends are back, the clients gone: so are the descriptors and
    // the memory the churn used.
    let mut last = (0, 0, 0);
    let back = eventually(SETTLE, || {
        let live = pool.live.load(Ordering::SeqCst);
        last = (live, open_fds(&p), p.rss_kb());
        live == BACKENDS && last.1 == base_fds + live && last.2 <= base_rss + RSS_SLACK_KB
    });
    let (live, fds, rss) = last;
    assert!(
        back,
        "seed {seed}: after the churn the proxy holds {fds} descriptors for {live} backends \
         (baseline {base_fds} + {live}) and {rss} kB resident (baseline {base_rss} kB, \
         allowed +{RSS_SLACK_KB} kB)"
    );
    eprintln!(
        "{test}: seed {seed}: after the churn {fds} descriptors ({base_fds} + {live} backends), \
         VmRSS {rss} kB (after the warm-up {base_rss} kB)"
    );
    // And it still serves.
    let r = get_once(addr, host, "/after-churn");
    assert_eq!(r.status, 200, "seed {seed}: {r:?}");

    pool.stop.store(true, Ordering::SeqCst);
    for b in backends {
        join_within(b, Duration::from_secs(5), "backend");
    }
    p.assert_alive();
}

#[test]
fn a_redeployable_section_answers_every_request_while_backends_churn() {
    churn("redeployable", true);
}

#[test]
fn a_section_without_redeploy_never_crosses_responses_while_backends_churn() {
    churn("not redeployable", false);
}
