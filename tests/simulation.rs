//! Deterministic simulation of queueing and dispatch.
//!
//! `swiftiply::dispatch::Dispatch` is the code the reactor asks for every
//! pairing, queue deadline, retry and reload move. Here it is driven by a
//! seeded random schedule of what a worker sees: requests arriving in
//! several sections, backends joining, finishing, closing after a
//! response, failing mid-request (with retries in redeployable sections),
//! stalling past `backend_timeout`, leaving while idle, clients leaving
//! while queued or while served, reloads that merge, split and remove
//! sections and change `timeout`, and time passing on an invented clock.
//! Keys come from one slab for clients and backends alike and are reused,
//! as the reactor's are, so a stale key left in a queue names somebody
//! else.
//!
//! A model of the world (who is queued where since when, which backend
//! serves whom) checks after every step that:
//! - every request ends exactly once: any answer naming a key is checked
//!   against the request that key names now, and when the schedule drains
//!   every request has ended;
//! - a backend serves at most one request at a time, and only a connected,
//!   idle backend of the request's own section is handed a request;
//! - FIFO holds exactly: a section serves its retries, then its new
//!   requests, each in the order they began waiting (requests queued at the
//!   same instant in the order they were queued); queues merged by a
//!   reload keep that order, and idle backends their old order; the
//!   backend idle the longest is taken first;
//! - a request never waits past `timeout`: the clock only advances as far
//!   as `next_deadline` allows, as the reactor's poll does; a request
//!   expires exactly `timeout` after it began waiting (at once if a reload
//!   lowered `timeout` below what it has waited), and is never handed a
//!   backend at or after that;
//! - a failed backend's request is retried, answered 502 or cut as the rule
//!   says (stated again in the model), at most `MAX_REDEPLOYS` times;
//! - nothing waits while an idle backend of its section could take it, and
//!   the dispatcher's queues hold exactly what the model says, in order.
//!
//! A failure (a broken rule, or a panic in `Dispatch` or the model) prints
//! its seed, what broke and the last steps; `SIM_SEED=N cargo test --test
//! simulation` replays that seed alone, and `SIM_SEEDS=N` runs N seeds
//! instead of the default. `simulation/plant_bugs.py` plants known bugs in
//! `src/dispatch.rs` one at a time and checks that each is caught.
//!
//! The reactor's own part of a reload (which section takes over which
//! address, which sections retire) is worked out again here, not run; it
//! is tested end to end in `tests/reload.rs`.

#[path = "simulation/world.rs"]
mod world;

use std::any::Any;
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};

use world::{Counts, World};

const DEFAULT_SEEDS: u64 = 300;
const STEPS: usize = 4_000;

/// SplitMix64: small, fast, and the same sequence on every machine.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len())])
    }
}

/// Runs one seed; on a violation (or a panic, in `Dispatch` or in the
/// model), says what, where, and what led to it.
fn run(seed: u64) -> Result<Counts, String> {
    let mut w = World::new(seed);
    let mut outcome = Ok(());
    let mut at = 0;
    for step in 0..=STEPS {
        at = step;
        let w = &mut w;
        let taken = panic::catch_unwind(AssertUnwindSafe(|| match step {
            STEPS => w.drain(),
            _ => w.step(),
        }));
        outcome = taken.unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(&p))));
        if outcome.is_err() {
            break;
        }
    }
    match outcome {
        Ok(()) => Ok(w.counts),
        Err(why) => {
            let mut msg = format!("seed {seed}, step {at}: {why}\nlast steps:\n");
            for line in &w.trace {
                let _ = writeln!(msg, "  {line}");
            }
            let _ = write!(
                msg,
                "replay with: SIM_SEED={seed} cargo test --test simulation"
            );
            Err(msg)
        }
    }
}

fn panic_text(p: &Box<dyn Any + Send>) -> &str {
    match (p.downcast_ref::<&str>(), p.downcast_ref::<String>()) {
        (Some(s), _) => s,
        (_, Some(s)) => s,
        _ => "(no message)",
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("SIM_SEED") {
        return vec![s.parse().expect("SIM_SEED is a number")];
    }
    let n = std::env::var("SIM_SEEDS")
        .ok()
        .map_or(DEFAULT_SEEDS, |s| s.parse().expect("SIM_SEEDS is a number"));
    (1..=n).collect()
}

#[test]
fn dispatch_keeps_its_invariants_under_seeded_random_schedules() {
    let mut total = Counts::default();
    for seed in seeds() {
        match run(seed) {
            Ok(c) => {
                total.requests += c.requests;
                total.retries += c.retries;
                total.reloads += c.reloads;
                total.retired_closes += c.retired_closes;
                for (t, n) in total.ends.iter_mut().zip(c.ends) {
                    *t += n;
                }
            }
            Err(msg) => panic!("{msg}"),
        }
    }
    eprintln!("{total:?}");
    // The schedules reach every path they are meant to check.
    assert!(total.requests > 0);
    assert!(
        total.ends.iter().all(|&n| n > 0),
        "an ending never happened: {total:?}"
    );
    assert!(total.retries > 0 && total.reloads > 0, "{total:?}");
    if std::env::var("SIM_SEED").is_err() {
        assert!(
            total.retired_closes > 0,
            "no retired section ever closed a backend: {total:?}"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = run(7).expect("seed 7 passes");
    let b = run(7).expect("seed 7 passes");
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}
