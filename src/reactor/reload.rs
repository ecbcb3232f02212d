//! A reload in one worker: the new config replaces the old in place, and
//! no connection is dropped for it.
//!
//! The supervisor (`workers.rs`) has already parsed the file, checked the
//! sections' directories and bound the new listeners; here the worker:
//! 1. builds the new sections (hosts, keys, docroots, settings) and router;
//! 2. keeps the listeners whose address is still configured (a backend
//!    listener takes the role of the section that now names its address),
//!    closes the others and adds the new ones;
//! 3. moves every backend connection to the section that now has the
//!    `outgoing` address it came in on: idle ones join that section's idle
//!    queue in their old order, busy ones go on with their request. A
//!    backend whose address is gone is closed at once when idle; when busy,
//!    its section is kept as a *retired* section (after the config's ones,
//!    not routable) until it has served its request and any still waiting
//!    in that retired section, then it is closed;
//! 4. moves waiting requests to the new section that took over their old
//!    section's address (queues that merge keep the order in which their
//!    requests were queued, `dispatch::Dispatch::reload`); waiting requests of a section
//!    whose addresses are all gone stay in its retired section, still
//!    served by its busy backends;
//! 5. pairs idle backends with waiting requests wherever a section now has
//!    both (two old sections merged into one, for example).
//!
//! Requests in flight keep their backend and finish. A retired section is
//! dropped at the next reload once no connection refers to it.

use std::collections::HashMap;
use std::net::SocketAddr;

use log::{error, info};
use mio::{Interest, Token};

use super::client::Phase;
use super::control::ReloadPlan;
use super::listener::ListenerKind;
use super::LISTENER_BASE;
use super::{backend_in, buffer_size, client_in, BackendState, Conn, Limits, Reactor};
use crate::router::Router;
use crate::section::Section;

impl Reactor {
    pub(super) fn reload(&mut self, plan: ReloadPlan) {
        let ReloadPlan {
            cfg,
            keep,
            added,
            sections: mut fresh,
            applied,
        } = plan;
        // However it goes, the supervisor waits for this worker no more.
        let _applied = Applied(applied);
        if self.stopping.is_some() {
            // The supervisor sends none during a stop.
            return;
        }
        let live = fresh.len();

        // Listeners. The old sections' backend addresses are noted first:
        // they say where each old section's waiting requests go.
        let mut old_addrs: Vec<Vec<SocketAddr>> = vec![Vec::new(); self.sections.len()];
        for l in &self.listeners {
            if let ListenerKind::Backend { section } = l.kind {
                if let Some(a) = old_addrs.get_mut(section) {
                    a.push(l.addr);
                }
            }
        }
        let mut listeners = Vec::with_capacity(keep.len() + added.len());
        for mut l in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut l.sock);
            match keep.iter().find(|(a, _)| *a == l.addr) {
                Some((_, role)) => {
                    l.kind = match role {
                        Some(section) => ListenerKind::Backend { section: *section },
                        None => ListenerKind::Client,
                    };
                    listeners.push(l);
                }
                None => info!("reload: no longer listening on {}", l.addr),
            }
        }
        for l in added {
            info!("reload: now listening on {}", l.addr);
            listeners.push(l);
        }
        for (i, l) in listeners.iter_mut().enumerate() {
            if let Err(e) = self.poll.registry().register(
                &mut l.sock,
                Token(LISTENER_BASE + i),
                Interest::READABLE,
            ) {
                error!("reload: cannot watch the listener on {}: {e}", l.addr);
            }
        }
        let section_of: HashMap<SocketAddr, usize> = listeners
            .iter()
            .filter_map(|l| match l.kind {
                ListenerKind::Backend { section } => Some((l.addr, section)),
                ListenerKind::Client => None,
            })
            .collect();
        self.listeners = listeners;
        // A section without backend addresses (docroot only) is followed by
        // the one of the same name.
        let successor: Vec<Option<usize>> = old_addrs
            .iter()
            .zip(&self.sections)
            .map(|(addrs, s)| match s.cfg.outgoing.is_empty() {
                false => addrs.iter().find_map(|a| section_of.get(a).copied()),
                true => fresh.iter().position(|f| f.name == s.name),
            })
            .collect();

        let old = std::mem::take(&mut self.sections);
        for (s, new) in old.iter().zip(&successor) {
            if let Some(j) = new {
                fresh[*j].stats.merge(&s.stats);
            }
        }

        // Retired sections get the indices after the config's, in the
        // order they are first needed: waiting requests no section takes
        // over, then busy backends whose address is gone.
        let mut retired: Vec<usize> = Vec::new();
        let mut gone: Vec<(usize, String)> = Vec::new();
        let retire = |old_section: usize, retired: &mut Vec<usize>| match retired
            .iter()
            .position(|&r| r == old_section)
        {
            Some(p) => live + p,
            None => {
                retired.push(old_section);
                live + retired.len() - 1
            }
        };
        let waiting_to: Vec<usize> = (0..old.len())
            .map(|i| match successor[i] {
                Some(j) => j,
                None if self.dispatch.waiting_count(i) > 0 => retire(i, &mut retired),
                None => usize::MAX, // nothing to move
            })
            .collect();

        // Busy and handshaking backends, then the clients they serve.
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for &k in &keys {
            let Some(Conn::Backend(be)) = self.conns.get_mut(k).map(|e| &mut e.conn) else {
                continue;
            };
            match (&be.state, section_of.get(&be.outgoing)) {
                (_, Some(&j)) => be.section = j,
                (BackendState::Idle, None) => {} // closed below, with dispatch's list
                (BackendState::Handshake { .. }, None) => gone.push((
                    k,
                    old.get(be.section)
                        .map_or(String::new(), |s| s.name.clone()),
                )),
                (BackendState::Busy { .. }, None) => be.section = retire(be.section, &mut retired),
            }
        }
        for &k in &keys {
            let Some(Conn::Client(cl)) = self.conns.get(k).map(|e| &e.conn) else {
                continue;
            };
            let serving = match cl.phase {
                Phase::Proxying { backend, .. } => {
                    backend_in(&mut self.conns, backend).map(|be| be.section)
                }
                _ => None,
            };
            let Some(cl) = client_in(&mut self.conns, k) else {
                continue;
            };
            match (&mut cl.phase, serving) {
                (Phase::Proxying { section: s, .. }, Some(section)) => *s = section,
                (Phase::Queued { section: s }, _) => {
                    debug_assert!(waiting_to[*s] != usize::MAX, "queued where nothing waits");
                    *s = waiting_to[*s];
                }
                (Phase::Body { section: s }, _) => {
                    // Not queued yet: it joins the queue of the section that
                    // took over (a removed section's queue answers 503).
                    *s = successor[*s].unwrap_or_else(|| retire(*s, &mut retired));
                }
                _ => {}
            }
            // The request's counters go to the section that took over its
            // own (none if it was removed).
            let phase_section = match cl.phase {
                Phase::Proxying { section, .. }
                | Phase::Queued { section }
                | Phase::Body { section } => Some(section),
                _ => None,
            };
            if let Some(t) = cl.tally() {
                t.section = phase_section
                    .or_else(|| t.section.and_then(|i| successor.get(i).copied().flatten()));
            }
        }
        // Idle backends keep their order in their new section; waiting
        // requests move (merging in order of queueing).
        let conns = &self.conns;
        let idle_to = |b: usize| match conns.get(b).map(|e| &e.conn) {
            Some(Conn::Backend(be)) => section_of.get(&be.outgoing).copied(),
            _ => None,
        };
        let total = live + retired.len();
        let dropped = self
            .dispatch
            .reload(live, total, &waiting_to, cfg.timeout, idle_to);
        gone.extend(dropped.into_iter().map(|(b, i)| (b, old[i].name.clone())));
        let mut old: Vec<Option<Section>> = old.into_iter().map(Some).collect();
        for &r in &retired {
            let Some(s) = old[r].take() else { continue };
            info!(
                "reload: section {} was removed; its busy backends finish their requests first",
                s.name
            );
            fresh.push(s);
        }

        self.sections = fresh;
        self.live_sections = live;
        self.router = Router::new(&cfg.sections);
        let old_log = self.access_log_spec.take();
        self.switch_access_log(cfg.access_log.as_deref(), old_log.as_deref());
        self.access_log_spec = cfg.access_log.clone();
        self.limits = Limits::of(&cfg);
        self.reschedule_publish();
        self.splice = cfg.splice;
        self.pool.resize(buffer_size(&cfg));
        self.pool.spool.configure(
            cfg.request_spool_directory.as_deref(),
            cfg.request_spool_limit,
        );
        for (b, section) in gone {
            self.drop_backend(b, &section, "its outgoing address was removed by a reload");
        }
        // Requests that waited longer than a lowered `timeout` get their 503
        // before any is paired.
        self.expire_waiting();
        // A section that now has both idle backends and waiting requests.
        while let Some(p) = self.dispatch.next_pairing(self.now) {
            self.pair(p.client, p.backend, p.section);
            self.pending.push(p.client);
        }
        self.stats.reloads += 1;
        info!(
            "reload: {} sections, {} listeners",
            live,
            self.listeners.len()
        );
    }

    /// Closes a backend connection that no section has any more (its
    /// section index is stale, so `close_backend` cannot be used).
    fn drop_backend(&mut self, b: usize, section: &str, why: &str) {
        let Some(e) = self.conns.try_remove(b) else {
            return;
        };
        if let Conn::Backend(be) = e.conn {
            self.open_backends -= 1;
            if be.id.is_some() {
                self.stats.backends_left += 1;
                info!("backend {} left section {section} ({why})", be.label());
            }
        }
    }
}

/// Tells the supervisor, when dropped, that the worker is done with the
/// reload.
struct Applied(std::sync::mpsc::Sender<()>);

impl Drop for Applied {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}
