//! Rules that span several keys or sections, checked on a built `Config`.
//!
//! Invariants a loaded `Config` has after `check`: no client listener
//! (`cluster_address` x `cluster_port`, port 0 excepted) is listed twice;
//! each `ssl.at` is one of those listeners, with one certificate each; at
//! most one section is the default; each `incoming` host name belongs to
//! one section, once; each `outgoing` address (port 0 excepted) belongs to
//! one section, once, and is not a client listener.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::addresses::parse_outgoing;
use super::Config;

/// Checks rules that span several keys or sections. Returns the message
/// (without the origin prefix).
pub(super) fn check(cfg: &Config) -> Result<(), String> {
    // Listeners.
    let listeners = cfg.client_addrs().map_err(|e| e.0)?;
    let mut seen: HashMap<SocketAddr, ()> = HashMap::new();
    for a in &listeners {
        if a.port() != 0 && seen.insert(*a, ()).is_some() {
            return Err(format!(
                "client listener {a} is listed twice (cluster_address x cluster_port); \
                 remove the repeated address or port"
            ));
        }
    }
    let mut ats: Vec<SocketAddr> = Vec::new();
    for (i, s) in cfg.ssl.iter().enumerate() {
        let at = parse_outgoing(&s.at).map_err(|e| format!("ssl[{i}].at: {e}"))?;
        if !listeners.contains(&at) {
            let list: Vec<String> = listeners.iter().map(|a| a.to_string()).collect();
            return Err(format!(
                "ssl[{i}].at `{}` is not one of the client listeners ({}); `at` must \
                 equal a cluster_address:cluster_port pair",
                s.at,
                list.join(", ")
            ));
        }
        if ats.contains(&at) {
            return Err(format!(
                "ssl[{i}].at `{}` is given twice; each listener has one certificate",
                s.at
            ));
        }
        ats.push(at);
    }

    let label = |i: usize| -> String {
        let s = &cfg.sections[i];
        match s.incoming.first() {
            Some(n) => format!("map[{i}] ({n})"),
            None => format!("map[{i}]"),
        }
    };

    // At most one default section.
    let defaults: Vec<usize> = (0..cfg.sections.len())
        .filter(|&i| cfg.sections[i].default)
        .collect();
    if defaults.len() > 1 {
        let names: Vec<String> = defaults.iter().map(|&i| label(i)).collect();
        return Err(format!(
            "{} all have `default: true`; only one section can be the default (it \
             answers requests whose Host matches no section)",
            names.join(" and ")
        ));
    }

    // Each incoming name in one section, once.
    let mut owner: HashMap<&str, usize> = HashMap::new();
    for (i, s) in cfg.sections.iter().enumerate() {
        for name in &s.incoming {
            if let Some(&j) = owner.get(name.as_str()) {
                return Err(if i == j {
                    format!(
                        "{}: `incoming` name `{name}` is listed twice; remove one",
                        label(i)
                    )
                } else {
                    format!(
                        "`incoming` name `{name}` appears in {} and in {}; a host name can \
                         belong to only one section",
                        label(j),
                        label(i)
                    )
                });
            }
            owner.insert(name, i);
        }
    }

    // Each outgoing address (non-zero port) once, and not a client
    // listener.
    let mut out_owner: HashMap<SocketAddr, usize> = HashMap::new();
    for (i, s) in cfg.sections.iter().enumerate() {
        for a in &s.outgoing {
            if a.port() == 0 {
                continue;
            }
            if let Some(&j) = out_owner.get(a) {
                return Err(if i == j {
                    format!(
                        "{}: `outgoing` address {a} is listed twice; remove one",
                        label(i)
                    )
                } else {
                    format!(
                        "`outgoing` address {a} is used by {} and by {}; each section \
                         needs its own address for its backends",
                        label(j),
                        label(i)
                    )
                });
            }
            if listeners.contains(a) {
                return Err(format!(
                    "{}: `outgoing` address {a} is also a client listener \
                     (cluster_address x cluster_port); use a different port",
                    label(i)
                ));
            }
            out_owner.insert(*a, i);
        }
    }
    Ok(())
}
