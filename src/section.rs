//! A section: one site, with its settings, its idle backends and its
//! waiting requests.
//!
//! Invariants: a backend token is in `idle` at most once and only while that
//! backend is idle; a client token is in `waiting` at most once and only
//! while that client is queued. Both queues are FIFO: the backend idle the
//! longest takes the oldest waiting request. A redeployed request goes to the
//! front, since it has already waited its turn.

use std::collections::VecDeque;

use crate::config::SectionConfig;
use crate::static_files::StaticRoot;
use crate::status::SectionCounters;

pub struct Section {
    pub cfg: SectionConfig,
    /// `docroot`: files served before asking a backend.
    pub docroot: Option<StaticRoot>,
    /// `sendfileroot`: where X-Sendfile paths are resolved.
    pub sendfile_root: Option<StaticRoot>,
    /// Display name for logs: the first incoming name.
    pub name: String,
    /// This worker's counters; a reload carries them over to the section
    /// that takes over the old one's backend addresses.
    pub stats: SectionCounters,
    idle: VecDeque<usize>,
    waiting: VecDeque<usize>,
}

impl Section {
    /// Opens the section's docroot and sendfileroot; an error names the
    /// directory and why it cannot be used.
    pub fn new(cfg: SectionConfig) -> Result<Self, String> {
        let name = cfg
            .incoming
            .first()
            .cloned()
            .unwrap_or_else(|| "(unnamed)".into());
        let docroot = match &cfg.docroot {
            Some(dir) => Some(
                StaticRoot::new(
                    dir,
                    cfg.staticmask.as_deref(),
                    cfg.cache_directory.as_deref(),
                    &cfg.cache_extensions,
                )
                .map_err(|e| format!("section {name}: docroot: {e}"))?,
            ),
            None => None,
        };
        let sendfile_root = match &cfg.sendfileroot {
            Some(dir) => Some(
                StaticRoot::new(dir, None, None, &[])
                    .map_err(|e| format!("section {name}: sendfileroot: {e}"))?,
            ),
            None => None,
        };
        Ok(Section {
            cfg,
            docroot,
            sendfile_root,
            name,
            stats: SectionCounters::default(),
            idle: VecDeque::new(),
            waiting: VecDeque::new(),
        })
    }

    pub fn take_idle_backend(&mut self) -> Option<usize> {
        self.idle.pop_front()
    }

    pub fn add_idle_backend(&mut self, b: usize) {
        debug_assert!(!self.idle.contains(&b));
        self.idle.push_back(b);
    }

    pub fn remove_idle_backend(&mut self, b: usize) -> bool {
        match self.idle.iter().position(|&x| x == b) {
            Some(i) => {
                self.idle.remove(i);
                true
            }
            None => false,
        }
    }

    pub fn take_waiting(&mut self) -> Option<usize> {
        self.waiting.pop_front()
    }

    pub fn enqueue(&mut self, c: usize) {
        debug_assert!(!self.waiting.contains(&c));
        self.waiting.push_back(c);
    }

    pub fn enqueue_front(&mut self, c: usize) {
        debug_assert!(!self.waiting.contains(&c));
        self.waiting.push_front(c);
    }

    pub fn remove_waiting(&mut self, c: usize) -> bool {
        match self.waiting.iter().position(|&x| x == c) {
            Some(i) => {
                self.waiting.remove(i);
                true
            }
            None => false,
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }

    pub fn waiting_count(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn both_queues_are_fifo_and_redeploys_go_first() {
        let mut s = Section::new(Config::builtin_default().sections[0].clone()).unwrap();
        s.add_idle_backend(1);
        s.add_idle_backend(2);
        assert_eq!(s.take_idle_backend(), Some(1));
        s.enqueue(10);
        s.enqueue(11);
        s.enqueue_front(9);
        assert!(s.remove_waiting(10));
        assert!(!s.remove_waiting(10));
        assert_eq!(s.take_waiting(), Some(9));
        assert_eq!(s.take_waiting(), Some(11));
        assert_eq!(s.take_waiting(), None);
        assert!(s.remove_idle_backend(2));
        assert_eq!(s.idle_count(), 0);
    }
}
