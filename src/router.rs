//! Host → section.
//!
//! Names are matched exactly, ASCII case-insensitively, with the port already
//! stripped by the request parser. No match falls back to the section marked
//! `default: true`; with none, the caller answers 404. Lookups lower-case the
//! host into a stack buffer, so routing allocates nothing.

use std::collections::HashMap;

use crate::config::SectionConfig;

/// Longest host name that can match (DNS names are at most 253 bytes).
const MAX_HOST: usize = 255;

pub struct Router {
    names: HashMap<Box<[u8]>, usize>,
    default: Option<usize>,
}

impl Router {
    pub fn new(sections: &[SectionConfig]) -> Self {
        let mut names = HashMap::new();
        let mut default = None;
        for (i, s) in sections.iter().enumerate() {
            for name in &s.incoming {
                names
                    .entry(name.to_ascii_lowercase().into_bytes().into_boxed_slice())
                    .or_insert(i);
            }
            if s.default && default.is_none() {
                default = Some(i);
            }
        }
        Router { names, default }
    }

    pub fn route(&self, host: Option<&[u8]>) -> Option<usize> {
        host.and_then(|h| self.lookup(h)).or(self.default)
    }

    fn lookup(&self, host: &[u8]) -> Option<usize> {
        if host.len() > MAX_HOST {
            return None;
        }
        let mut lower = [0u8; MAX_HOST];
        for (d, s) in lower.iter_mut().zip(host) {
            *d = s.to_ascii_lowercase();
        }
        self.names.get(&lower[..host.len()]).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn section(names: &[&str], default: bool) -> SectionConfig {
        let mut s = Config::builtin_default().sections[0].clone();
        s.incoming = names.iter().map(|n| n.to_string()).collect();
        s.default = default;
        s
    }

    #[test]
    fn hosts_match_case_insensitively_then_the_default() {
        let r = Router::new(&[
            section(&["a.example", "www.a.example"], false),
            section(&["b.example"], true),
        ]);
        assert_eq!(r.route(Some(b"A.Example")), Some(0));
        assert_eq!(r.route(Some(b"www.a.example")), Some(0));
        assert_eq!(r.route(Some(b"b.example")), Some(1));
        assert_eq!(r.route(Some(b"nope")), Some(1));
        assert_eq!(r.route(None), Some(1));
    }

    #[test]
    fn no_default_means_no_route() {
        let r = Router::new(&[section(&["a.example"], false)]);
        assert_eq!(r.route(Some(b"b.example")), None);
        assert_eq!(r.route(Some(&[b'a'; 300])), None);
    }
}
