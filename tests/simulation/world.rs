//! The simulated world: what one worker sees (clients, backend
//! connections, reloads, a clock), the model of who waits where and who
//! serves whom, and the checks of `Dispatch`'s answers against it (see
//! `simulation.rs` for the list).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use slab::Slab;
use swiftiply::dispatch::{
    after_failure, AfterFailure, Class, Dispatch, Freed, Placed, MAX_REDEPLOYS,
};

use crate::Rng;

/// Backend listener addresses; a config maps each to a section or to none.
const ADDRESSES: usize = 4;
const MAX_SECTIONS: usize = 3;
/// Steps kept for the report of a failure.
const TRACE_LEN: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Request {
    /// Arrived, or its backend failed: being handed to `Dispatch`.
    Placing {
        section: usize,
    },
    Queued {
        section: usize,
        class: Class,
        since: Instant,
        /// Order among requests queued at the same `since` (renumbered when
        /// a reload merges queues, in the order the merge must keep).
        seq: u64,
    },
    Served {
        section: usize,
        backend: usize,
    },
}

#[derive(Debug, Clone)]
struct RequestInfo {
    id: u64,
    state: Request,
    /// Kept whole for a retry (within `redeployment_sizelimit`).
    retained: bool,
    /// Response bytes reached the client.
    started: bool,
    redeploys: u8,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Idle,
    Busy(usize),
}

#[derive(Debug, Clone)]
struct BackendInfo {
    section: usize,
    addr: usize,
    state: Backend,
}

enum Conn {
    Client(RequestInfo),
    Backend(BackendInfo),
}

/// A request the model has waiting in a section.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Waiting {
    key: usize,
    class: Class,
    since: Instant,
    seq: u64,
}

impl Waiting {
    /// The order a section serves its waiting requests in: retries first,
    /// then by when each began waiting.
    fn order(&self) -> (bool, Instant, u64) {
        (self.class == Class::New, self.since, self.seq)
    }
}

/// How a request ended (each exactly once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Ok,
    Expired,
    Failed,
    Cut,
    TimedOut,
    ClientLeft,
}

pub struct World {
    rng: Rng,
    t0: Instant,
    now: Instant,
    dispatch: Dispatch,
    /// The running config's `timeout` (what the checks hold the
    /// dispatcher to).
    timeout: Duration,
    conns: Slab<Conn>,
    /// Each address's section in the running config.
    addr_section: [Option<usize>; ADDRESSES],
    redeployable: Vec<bool>,
    /// Each section's idle backends, the one idle the longest first.
    idle: Vec<VecDeque<usize>>,
    next_id: u64,
    next_seq: u64,
    /// Request ids that ended, with how (indexed by id).
    ended: Vec<Option<End>>,
    pub trace: VecDeque<String>,
    pub counts: Counts,
}

#[derive(Debug, Default)]
pub struct Counts {
    pub requests: u64,
    /// By `End`.
    pub ends: [u64; 6],
    pub retries: u64,
    pub reloads: u64,
    /// Backends closed because their retired section had nothing left.
    pub retired_closes: u64,
}

pub type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

impl World {
    pub fn new(seed: u64) -> World {
        let mut rng = Rng(seed);
        let sections = 1 + rng.below(MAX_SECTIONS);
        let timeout = Duration::from_millis(20 + rng.below(200) as u64);
        let mut addr_section = [None; ADDRESSES];
        for (a, s) in addr_section.iter_mut().enumerate() {
            *s = Some(a % sections);
        }
        let redeployable = (0..sections).map(|_| rng.chance(60)).collect();
        let t0 = Instant::now();
        World {
            rng,
            t0,
            now: t0,
            dispatch: Dispatch::new(sections, timeout),
            timeout,
            conns: Slab::new(),
            addr_section,
            redeployable,
            idle: vec![VecDeque::new(); sections],
            next_id: 0,
            next_seq: 0,
            ended: Vec::new(),
            trace: VecDeque::new(),
            counts: Counts::default(),
        }
    }

    fn log(&mut self, what: String) {
        if self.trace.len() == TRACE_LEN {
            self.trace.pop_front();
        }
        let at = self.now - self.t0;
        self.trace
            .push_back(format!("{:>10.3} ms  {what}", at.as_secs_f64() * 1e3));
    }

    fn request(&self, key: usize) -> Option<&RequestInfo> {
        match self.conns.get(key) {
            Some(Conn::Client(r)) => Some(r),
            _ => None,
        }
    }

    fn request_mut(&mut self, key: usize) -> Option<&mut RequestInfo> {
        match self.conns.get_mut(key) {
            Some(Conn::Client(r)) => Some(r),
            _ => None,
        }
    }

    fn backend_mut(&mut self, key: usize) -> Option<&mut BackendInfo> {
        match self.conns.get_mut(key) {
            Some(Conn::Backend(b)) => Some(b),
            _ => None,
        }
    }

    fn keys(&self, pick: impl Fn(&Conn) -> bool) -> Vec<usize> {
        self.conns
            .iter()
            .filter(|(_, c)| pick(c))
            .map(|(k, _)| k)
            .collect()
    }

    /// The section's waiting requests, in the order they must be served.
    fn queued_in(&self, section: usize) -> Vec<Waiting> {
        let mut q: Vec<Waiting> = self
            .conns
            .iter()
            .filter_map(|(key, c)| match c {
                Conn::Client(RequestInfo {
                    state:
                        Request::Queued {
                            section: s,
                            class,
                            since,
                            seq,
                        },
                    ..
                }) if *s == section => Some(Waiting {
                    key,
                    class: *class,
                    since: *since,
                    seq: *seq,
                }),
                _ => None,
            })
            .collect();
        q.sort_by_key(Waiting::order);
        q
    }

    /// Ends the request on `key` and frees its key. A request ends at most
    /// once because its key then names nobody, or a later request: every
    /// answer of the dispatcher that names a key is checked against the
    /// state of the request the key names now. `drain` checks that each
    /// ended at least once.
    fn end(&mut self, key: usize, how: End) -> Check {
        let Some(Conn::Client(r)) = self.conns.try_remove(key) else {
            return Err(format!("ending {key}, which is no request"));
        };
        self.ended[r.id as usize] = Some(how);
        self.counts.ends[how as usize] += 1;
        self.log(format!("request #{} (key {key}) ends: {how:?}", r.id));
        Ok(())
    }

    /// The dispatcher handed `client`, waiting in `section`, to `backend`.
    fn paired(&mut self, section: usize, client: usize, backend: usize) -> Check {
        let queue = self.queued_in(section);
        let Some(w) = queue.iter().find(|w| w.key == client) else {
            return Err(format!(
                "key {client} was handed a backend of section {section} but is not waiting there ({:?})",
                self.request(client).map(|r| r.state)
            ));
        };
        let first = queue[0];
        ensure!(
            first.key == client,
            "FIFO: key {client} ({:?} since {:?}, #{}) served before key {} ({:?} since {:?}, #{}) in section {section}",
            w.class,
            w.since - self.t0,
            w.seq,
            first.key,
            first.class,
            first.since - self.t0,
            first.seq
        );
        ensure!(
            self.now - w.since < self.timeout,
            "key {client} handed a backend after waiting {:?}, timeout {:?}",
            self.now - w.since,
            self.timeout
        );
        self.serve(section, client, backend)
    }

    /// `backend` starts serving `client`: it must be connected, of that
    /// section, and not serving anybody.
    fn serve(&mut self, section: usize, client: usize, backend: usize) -> Check {
        let Some(b) = self.backend_mut(backend) else {
            return Err(format!(
                "key {client} handed to key {backend}, which is no backend"
            ));
        };
        ensure!(
            b.state == Backend::Idle,
            "backend {backend} handed key {client} while {:?}",
            b.state
        );
        ensure!(
            b.section == section,
            "backend {backend} of section {} handed a request of section {section}",
            b.section
        );
        b.state = Backend::Busy(client);
        let r = self.request_mut(client).expect("checked by the caller");
        r.state = Request::Served { section, backend };
        let id = r.id;
        self.log(format!(
            "request #{id} (key {client}) served by backend {backend}"
        ));
        Ok(())
    }

    fn place(&mut self, section: usize, client: usize, class: Class) -> Check {
        let placed = match class {
            Class::New => self.dispatch.request(section, client, self.now),
            Class::Retry => self.dispatch.retry(section, client, self.now),
        };
        match placed {
            Placed::Paired(b) => {
                let longest = self.idle[section].front().copied();
                ensure!(
                    longest == Some(b),
                    "key {client} given backend {b}, but the one idle longest in section {section} is {longest:?}"
                );
                ensure!(
                    self.queued_in(section).is_empty(),
                    "key {client} given a backend while others wait in section {section}"
                );
                self.idle[section].pop_front();
                self.serve(section, client, b)
            }
            Placed::Queued => {
                ensure!(
                    self.idle[section].is_empty(),
                    "key {client} queued while backends {:?} are idle in section {section}",
                    self.idle[section]
                );
                let (now, seq) = (self.now, self.next_seq);
                self.next_seq += 1;
                let r = self.request_mut(client).expect("placed requests exist");
                r.state = Request::Queued {
                    section,
                    class,
                    since: now,
                    seq,
                };
                let id = r.id;
                self.log(format!(
                    "request #{id} (key {client}) waits in section {section} ({class:?})"
                ));
                Ok(())
            }
        }
    }

    /// `backend` is free again (joined, or finished its request).
    fn free(&mut self, backend: usize) -> Check {
        let b = self.backend_mut(backend).expect("a freed backend exists");
        b.state = Backend::Idle;
        let section = b.section;
        match self.dispatch.backend_free(section, backend, self.now) {
            Freed::Paired(c) => self.paired(section, c, backend),
            Freed::Idle => {
                ensure!(
                    section < self.dispatch.live(),
                    "backend {backend} went idle in retired section {section}"
                );
                ensure!(
                    self.queued_in(section).is_empty(),
                    "backend {backend} went idle while requests wait in section {section}"
                );
                self.idle[section].push_back(backend);
                self.log(format!("backend {backend} idle in section {section}"));
                Ok(())
            }
            Freed::Close => {
                ensure!(
                    section >= self.dispatch.live() && self.queued_in(section).is_empty(),
                    "backend {backend} of section {section} closed with live={} and {} waiting",
                    self.dispatch.live(),
                    self.queued_in(section).len()
                );
                self.conns.remove(backend);
                self.counts.retired_closes += 1;
                self.log(format!(
                    "backend {backend} closed: its section {section} is retired"
                ));
                Ok(())
            }
        }
    }

    fn live_addrs(&self) -> Vec<usize> {
        (0..ADDRESSES)
            .filter(|&a| self.addr_section[a].is_some())
            .collect()
    }

    fn busy_backends(&self) -> Vec<usize> {
        self.keys(|c| matches!(c, Conn::Backend(b) if matches!(b.state, Backend::Busy(_))))
    }

    pub fn step(&mut self) -> Check {
        match self.rng.below(100) {
            0..=29 => self.arrival(),
            30..=37 => self.backend_joins(),
            38..=59 => self.backend_finishes(),
            60..=64 => self.backend_fails(),
            65..=66 => self.backend_stalls(),
            67..=69 => self.idle_backend_leaves(),
            70..=73 => self.client_leaves(),
            74 => self.reload(),
            _ => self.time_passes(),
        }?;
        self.check()
    }

    fn arrival(&mut self) -> Check {
        let section = self.rng.below(self.dispatch.live());
        let id = self.next_id;
        self.next_id += 1;
        self.ended.push(None);
        self.counts.requests += 1;
        let retained = self.rng.chance(85);
        let key = self.conns.insert(Conn::Client(RequestInfo {
            id,
            state: Request::Placing { section },
            retained,
            started: false,
            redeploys: 0,
        }));
        self.log(format!(
            "request #{id} (key {key}) arrives for section {section}"
        ));
        self.place(section, key, Class::New)
    }

    fn backend_joins(&mut self) -> Check {
        let Some(addr) = self.rng.pick(&self.live_addrs()) else {
            return Ok(());
        };
        let section = self.addr_section[addr].expect("a live address");
        let key = self.conns.insert(Conn::Backend(BackendInfo {
            section,
            addr,
            state: Backend::Idle, // until `free` says where it goes
        }));
        self.log(format!(
            "backend {key} joins section {section} on address {addr}"
        ));
        self.free(key)
    }

    fn backend_finishes(&mut self) -> Check {
        let Some(b) = self.rng.pick(&self.busy_backends()) else {
            return self.time_passes();
        };
        let Some(Conn::Backend(BackendInfo {
            state: Backend::Busy(c),
            ..
        })) = self.conns.get(b)
        else {
            unreachable!()
        };
        let c = *c;
        self.end(c, End::Ok)?;
        if self.rng.chance(10) {
            // It closed after its response (or sent bytes after it).
            self.conns.remove(b);
            self.log(format!("backend {b} closes after its response"));
            return Ok(());
        }
        self.free(b)
    }

    /// The backend of a busy exchange fails: the request is retried, gets a
    /// 502, or is cut, as `after_failure` says.
    fn backend_fails(&mut self) -> Check {
        let Some(b) = self.rng.pick(&self.busy_backends()) else {
            return Ok(());
        };
        let Conn::Backend(be) = self.conns.remove(b) else {
            unreachable!("picked among backends")
        };
        let (Backend::Busy(c), section) = (be.state, be.section) else {
            unreachable!("picked among busy backends")
        };
        self.log(format!("backend {b} fails mid-request"));
        let started = self.rng.chance(20);
        let redeployable = self.redeployable.get(section).copied().unwrap_or(false);
        let r = self.request_mut(c).expect("a served request exists");
        r.started |= started;
        let (started, retained, redeploys) = (r.started, r.retained, r.redeploys);
        // The rule (docs/protocol.md#backend-failures), stated again here to hold the code to it.
        let expected = if started {
            AfterFailure::Cut
        } else if redeployable && retained && redeploys < MAX_REDEPLOYS {
            AfterFailure::Retry
        } else {
            AfterFailure::Fail
        };
        let rule = after_failure(started, redeployable, retained, redeploys);
        ensure!(
            rule == expected,
            "after_failure(started {started}, redeployable {redeployable}, retained {retained}, redeploys {redeploys}) is {rule:?}, not {expected:?}"
        );
        match rule {
            AfterFailure::Cut => self.end(c, End::Cut),
            AfterFailure::Fail => self.end(c, End::Failed),
            AfterFailure::Retry => {
                let r = self.request_mut(c).expect("exists");
                r.redeploys += 1;
                r.state = Request::Placing { section };
                self.counts.retries += 1;
                self.place(section, c, Class::Retry)
            }
        }
    }

    /// A busy backend sent nothing within `backend_timeout`: it is closed
    /// and its request answered 504 (or cut).
    fn backend_stalls(&mut self) -> Check {
        let Some(b) = self.rng.pick(&self.busy_backends()) else {
            return Ok(());
        };
        let Conn::Backend(be) = self.conns.remove(b) else {
            unreachable!("picked among backends")
        };
        let Backend::Busy(c) = be.state else {
            unreachable!("picked among busy backends")
        };
        self.log(format!("backend {b} stalls past backend_timeout"));
        self.end(c, End::TimedOut)
    }

    fn idle_backend_leaves(&mut self) -> Check {
        let idle: Vec<usize> = self.idle.iter().flatten().copied().collect();
        let Some(b) = self.rng.pick(&idle) else {
            return Ok(());
        };
        let section = match self.conns.get(b) {
            Some(Conn::Backend(be)) => be.section,
            _ => return Err(format!("idle backend {b} is not connected")),
        };
        ensure!(
            self.dispatch.backend_gone(section, b),
            "dispatch did not know idle backend {b} of section {section}"
        );
        self.idle[section].retain(|&x| x != b);
        self.conns.remove(b);
        self.log(format!("idle backend {b} of section {section} leaves"));
        Ok(())
    }

    fn client_leaves(&mut self) -> Check {
        let clients = self.keys(|c| matches!(c, Conn::Client(_)));
        let Some(c) = self.rng.pick(&clients) else {
            return Ok(());
        };
        match self.request(c).expect("picked").state {
            Request::Queued { section, .. } => {
                ensure!(
                    self.dispatch.client_gone(section, c),
                    "dispatch did not know waiting key {c} of section {section}"
                );
            }
            Request::Placing { .. } => return Err(format!("key {c} was never placed")),
            Request::Served { backend, .. } => {
                // The reactor closes the backend: its stream is mid-request.
                self.conns.remove(backend);
                self.log(format!("backend {backend} closed: its client left"));
            }
        }
        self.end(c, End::ClientLeft)
    }

    /// Advances the clock, never past the next queue deadline (as the
    /// reactor's poll timeout does), and ends what expired.
    fn time_passes(&mut self) -> Check {
        let timeout = self.timeout;
        let step = match self.rng.below(10) {
            0 => timeout * 2,
            1..=3 => timeout / 4,
            _ => Duration::from_micros(self.rng.below(5_000) as u64),
        };
        let mut to = self.now + step;
        if let Some(d) = self.dispatch.next_deadline() {
            ensure!(
                d >= self.now,
                "next_deadline {:?} is in the past",
                d - self.t0
            );
            to = to.min(d);
        }
        self.now = to;
        for w in self.all_queued() {
            ensure!(
                self.now - w.since <= timeout,
                "key {} ({:?}) has waited {:?}, past timeout {timeout:?}: next_deadline was late",
                w.key,
                w.class,
                self.now - w.since
            );
        }
        self.expire(false)
    }

    fn all_queued(&self) -> Vec<Waiting> {
        (0..self.dispatch.sections())
            .flat_map(|s| self.queued_in(s))
            .collect()
    }

    /// Ends every request the dispatcher says has waited `timeout`.
    /// `late`: the timeout was just lowered, so some may have waited longer.
    fn expire(&mut self, late: bool) -> Check {
        let timeout = self.timeout;
        while let Some(e) = self.dispatch.pop_expired(self.now) {
            let state = self.request(e.client).map(|r| r.state);
            let Some(Request::Queued { section, since, .. }) = state else {
                return Err(format!("key {} expired while {state:?}", e.client));
            };
            ensure!(
                section == e.section,
                "key {} expired from section {} but waits in {section}",
                e.client,
                e.section
            );
            let waited = self.now - since;
            ensure!(
                e.waited == waited,
                "expiry reports {:?} waited, the model {waited:?}",
                e.waited
            );
            ensure!(
                waited == timeout || (late && waited > timeout),
                "key {} expired after {waited:?}, timeout {timeout:?}",
                e.client
            );
            self.end(e.client, End::Expired)?;
        }
        for w in self.all_queued() {
            ensure!(
                self.now - w.since < timeout,
                "key {} has waited {:?} (timeout {timeout:?}) and was not expired",
                w.key,
                self.now - w.since
            );
        }
        Ok(())
    }

    /// A new config: addresses move between sections, sections merge,
    /// split or go, `timeout` changes. The moves are worked out as the
    /// reactor's `reload.rs` does: a section's waiting requests follow its
    /// first address still configured; otherwise, as do busy backends whose
    /// address is gone, they stay in a retired section.
    fn reload(&mut self) -> Check {
        let live = 1 + self.rng.below(MAX_SECTIONS);
        let old_sections = self.dispatch.sections();
        let mut new_addr = [None; ADDRESSES];
        for s in new_addr.iter_mut() {
            *s = (!self.rng.chance(20)).then(|| self.rng.below(live));
        }
        if new_addr.iter().all(Option::is_none) {
            new_addr[0] = Some(0);
        }
        let timeout = Duration::from_millis(20 + self.rng.below(200) as u64);
        let successor: Vec<Option<usize>> = (0..old_sections)
            .map(|s| {
                (0..ADDRESSES)
                    .filter(|&a| self.addr_section[a] == Some(s))
                    .find_map(|a| new_addr[a])
            })
            .collect();
        let mut retired: Vec<usize> = Vec::new();
        let mut retire = |s: usize| match retired.iter().position(|&r| r == s) {
            Some(p) => live + p,
            None => {
                retired.push(s);
                live + retired.len() - 1
            }
        };
        let waiting_to: Vec<usize> = (0..old_sections)
            .map(|s| match successor[s] {
                Some(j) => j,
                None if !self.queued_in(s).is_empty() => retire(s),
                None => usize::MAX,
            })
            .collect();
        let old_queues: Vec<Vec<Waiting>> = (0..old_sections).map(|s| self.queued_in(s)).collect();
        let old_idle = std::mem::take(&mut self.idle);
        let mut expect_gone = Vec::new();
        for k in self.keys(|c| matches!(c, Conn::Backend(_))) {
            let Some(Conn::Backend(be)) = self.conns.get_mut(k) else {
                unreachable!()
            };
            match (be.state, new_addr[be.addr]) {
                (_, Some(j)) => be.section = j,
                (Backend::Idle, None) => expect_gone.push((k, be.section)),
                (Backend::Busy(_), None) => be.section = retire(be.section),
            }
        }
        let total = live + retired.len();
        for k in self.keys(|c| matches!(c, Conn::Client(_))) {
            let served_by = match self.request(k).map(|r| r.state) {
                Some(Request::Served { backend, .. }) => match self.conns.get(backend) {
                    Some(Conn::Backend(be)) => Some(be.section),
                    _ => return Err(format!("key {k} served by missing backend {backend}")),
                },
                _ => None,
            };
            let r = self.request_mut(k).expect("a client");
            match &mut r.state {
                Request::Queued { section, .. } => *section = waiting_to[*section],
                Request::Served { section, .. } => *section = served_by.expect("set above"),
                Request::Placing { .. } => return Err(format!("key {k} was never placed")),
            }
        }
        let conns = &self.conns;
        let idle_to = |b: usize| match conns.get(b) {
            Some(Conn::Backend(be)) => new_addr[be.addr],
            _ => None,
        };
        let mut gone = self
            .dispatch
            .reload(live, total, &waiting_to, timeout, idle_to);
        self.timeout = timeout;
        self.counts.reloads += 1;
        self.log(format!(
            "reload: {live} sections, {} retired, addresses {new_addr:?}, timeout {timeout:?}",
            retired.len()
        ));
        gone.sort_unstable();
        expect_gone.sort_unstable();
        ensure!(
            gone == expect_gone,
            "reload closed idle backends {gone:?}, expected {expect_gone:?}"
        );
        for (b, _) in gone {
            self.conns.remove(b);
        }
        self.addr_section = new_addr;
        self.redeployable = (0..total).map(|_| self.rng.chance(60)).collect();
        // Idle backends keep their old order: old section by old section,
        // each in its own order.
        self.idle = vec![VecDeque::new(); total];
        for b in old_idle.into_iter().flatten() {
            if let Some(Conn::Backend(be)) = self.conns.get(b) {
                self.idle[be.section].push_back(b);
            }
        }
        // Merged queues keep the order in which requests began waiting;
        // at the same instant, old section by old section.
        for t in 0..total {
            let mut merged: Vec<Waiting> = (0..old_sections)
                .filter(|&i| waiting_to[i] == t)
                .flat_map(|i| old_queues[i].iter().copied())
                .collect();
            merged.sort_by_key(|w| (w.class == Class::New, w.since)); // stable
            for w in merged {
                let next = self.next_seq;
                self.next_seq += 1;
                if let Some(RequestInfo {
                    state: Request::Queued { seq, .. },
                    ..
                }) = self.request_mut(w.key)
                {
                    *seq = next;
                }
            }
        }
        self.check_queues(false)?;
        // A lowered timeout ends what waited too long before anything is
        // paired, as the reactor's reload does.
        self.expire(true)?;
        while let Some(p) = self.dispatch.next_pairing(self.now) {
            ensure!(
                p.section < live,
                "a pairing in retired section {}",
                p.section
            );
            let longest = self.idle[p.section].pop_front();
            ensure!(
                longest == Some(p.backend),
                "reload paired backend {}, not the one idle longest {longest:?}",
                p.backend
            );
            self.paired(p.section, p.client, p.backend)?;
        }
        Ok(())
    }

    /// Waiting requests as `key:Class@ms`.
    fn show(&self, q: &[(usize, Class, Instant)]) -> String {
        let items: Vec<String> = q
            .iter()
            .map(|(k, c, since)| format!("{k}:{c:?}@{:.3}", (*since - self.t0).as_secs_f64() * 1e3))
            .collect();
        format!("[{}]", items.join(", "))
    }

    /// The dispatcher's queues hold exactly the model's, and nothing waits
    /// beside an idle backend.
    fn check(&self) -> Check {
        self.check_queues(true)
    }

    /// The dispatcher's queues hold exactly the model's, in order; with
    /// `paired`, nothing waits beside an idle backend (not so in the middle
    /// of a reload, before `next_pairing`).
    fn check_queues(&self, paired: bool) -> Check {
        ensure!(
            self.dispatch.sections() == self.idle.len(),
            "dispatch has {} sections, the model {}",
            self.dispatch.sections(),
            self.idle.len()
        );
        for s in 0..self.dispatch.sections() {
            let idle: Vec<usize> = self.dispatch.idle(s).collect();
            ensure!(
                idle.iter().eq(self.idle[s].iter()),
                "section {s}: dispatch idle {idle:?}, model {:?}",
                self.idle[s]
            );
            for &b in &idle {
                let ok = matches!(self.conns.get(b), Some(Conn::Backend(be)) if be.state == Backend::Idle && be.section == s);
                ensure!(ok, "section {s} lists idle backend {b}, which is not");
            }
            let listed: Vec<(usize, Class, Instant)> = self
                .dispatch
                .waiting(s)
                .map(|(c, w)| (w.client, c, w.since))
                .collect();
            let want: Vec<(usize, Class, Instant)> = self
                .queued_in(s)
                .iter()
                .map(|w| (w.key, w.class, w.since))
                .collect();
            ensure!(
                listed == want,
                "section {s}: dispatch waiting {}, model {} (in serving order)",
                self.show(&listed),
                self.show(&want)
            );
            ensure!(
                !paired || idle.is_empty() || want.is_empty(),
                "section {s} has idle backends {idle:?} and waiting requests"
            );
            ensure!(
                self.dispatch.waiting_count(s) == want.len(),
                "section {s}: waiting_count is off"
            );
        }
        let waiting = self.all_queued().len();
        ensure!(
            self.dispatch.waiting_total() == waiting,
            "waiting_total {} but {waiting} wait",
            self.dispatch.waiting_total()
        );
        ensure!(
            (waiting == 0) == self.dispatch.next_deadline().is_none(),
            "{waiting} waiting but next_deadline is {:?}",
            self.dispatch.next_deadline()
        );
        Ok(())
    }

    /// No new work: busy backends finish and waiting requests are served
    /// or expire. Afterwards every request must have ended exactly once.
    pub fn drain(&mut self) -> Check {
        for _ in 0..100_000 {
            if let Some(&b) = self.busy_backends().first() {
                let Some(Conn::Backend(BackendInfo {
                    state: Backend::Busy(c),
                    ..
                })) = self.conns.get(b)
                else {
                    unreachable!()
                };
                self.end(*c, End::Ok)?;
                self.free(b)?;
            } else if self.dispatch.next_deadline().is_some() {
                self.now = self.dispatch.next_deadline().expect("checked");
                self.expire(false)?;
            } else {
                break;
            }
            self.check()?;
        }
        let open = self.keys(|c| matches!(c, Conn::Client(_)));
        ensure!(open.is_empty(), "requests {open:?} never ended");
        let unended = self.ended.iter().filter(|e| e.is_none()).count();
        ensure!(unended == 0, "{unended} requests never ended");
        Ok(())
    }
}
