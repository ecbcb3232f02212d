//! `Config` back to YAML, for `--check` and for `Config::validate`.
//!
//! Invariant: the output uses the original key names, prints durations as
//! float seconds (exact, since durations are kept to the microsecond and
//! bounded by `MAX_DURATION_S`), leaves out unset optional keys, and
//! `Config::from_yaml_str(&to_yaml(cfg), ..)` gives back a `Config` equal to
//! `cfg`. `Config::validate` depends on that round trip.

use std::path::Path;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::Config;

/// The normalized configuration as YAML text.
pub(super) fn to_yaml(cfg: &Config) -> String {
    serde_yaml::to_string(&to_value(cfg))
        .unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
}

fn to_value(cfg: &Config) -> Value {
    let mut m = Mapping::new();
    let s = |v: &str| Value::String(v.to_owned());
    let path = |p: &Path| Value::String(p.to_string_lossy().into_owned());
    let secs = |d: Duration| Value::Number((d.as_micros() as f64 / 1e6).into());
    let list = |v: &[String]| Value::Sequence(v.iter().map(|x| s(x)).collect());

    m.insert(s("cluster_address"), list(&cfg.cluster_address));
    m.insert(
        s("cluster_port"),
        Value::Sequence(cfg.cluster_port.iter().map(|p| Value::from(*p)).collect()),
    );
    m.insert(s("daemonize"), Value::Bool(cfg.daemonize));
    if let Some(p) = &cfg.pidfile {
        m.insert(s("pidfile"), path(p));
    }
    if let Some(u) = &cfg.user {
        m.insert(s("user"), s(u));
    }
    if let Some(g) = &cfg.group {
        m.insert(s("group"), s(g));
    }
    m.insert(s("timeout"), secs(cfg.timeout));
    m.insert(s("health_check_uri"), s(&cfg.health_check_uri));
    if !cfg.ssl.is_empty() {
        let v = cfg
            .ssl
            .iter()
            .map(|l| {
                let mut e = Mapping::new();
                e.insert(s("at"), s(&l.at));
                e.insert(s("certfile"), path(&l.certfile));
                e.insert(s("keyfile"), path(&l.keyfile));
                Value::Mapping(e)
            })
            .collect();
        m.insert(s("ssl"), Value::Sequence(v));
    }
    let mut lg = Mapping::new();
    lg.insert(s("type"), s("stderror"));
    lg.insert(s("log_level"), Value::from(cfg.log_level));
    m.insert(s("logger"), Value::Mapping(lg));
    m.insert(s("header_timeout"), secs(cfg.header_timeout));
    m.insert(s("keepalive_timeout"), secs(cfg.keepalive_timeout));
    m.insert(s("backend_timeout"), secs(cfg.backend_timeout));
    m.insert(s("handshake_timeout"), secs(cfg.handshake_timeout));
    m.insert(
        s("max_header_bytes"),
        Value::from(cfg.max_header_bytes as u64),
    );
    if let Some(b) = cfg.max_body_bytes {
        m.insert(s("max_body_bytes"), Value::from(b));
    }
    m.insert(s("request_buffer"), Value::from(cfg.request_buffer as u64));
    if let Some(d) = &cfg.request_spool_directory {
        m.insert(s("request_spool_directory"), path(d));
    }
    m.insert(
        s("request_spool_limit"),
        Value::from(cfg.request_spool_limit),
    );
    m.insert(s("min_body_rate"), Value::from(cfg.min_body_rate));
    m.insert(s("min_body_rate_grace"), secs(cfg.min_body_rate_grace));
    m.insert(s("body_timeout"), secs(cfg.body_timeout));
    if let Some(n) = cfg.max_connections {
        m.insert(s("max_connections"), Value::from(n as u64));
    }
    m.insert(s("workers"), Value::from(cfg.workers as u64));
    m.insert(s("cpu_affinity"), Value::Bool(cfg.cpu_affinity));
    m.insert(s("reuseport"), Value::Bool(cfg.reuseport));
    m.insert(s("splice"), Value::Bool(cfg.splice));
    if let Some(a) = &cfg.access_log {
        m.insert(s("access_log"), s(a));
    }
    if let Some(u) = &cfg.status_uri {
        m.insert(s("status_uri"), s(u));
    }
    m.insert(s("shutdown_timeout"), secs(cfg.shutdown_timeout));
    let sections = cfg
        .sections
        .iter()
        .map(|sec| {
            let mut e = Mapping::new();
            e.insert(s("incoming"), list(&sec.incoming));
            if !sec.outgoing.is_empty() {
                e.insert(
                    s("outgoing"),
                    Value::Sequence(sec.outgoing.iter().map(|a| s(&a.to_string())).collect()),
                );
            }
            e.insert(s("default"), Value::Bool(sec.default));
            e.insert(s("key"), s(&sec.key));
            if let Some(p) = &sec.docroot {
                e.insert(s("docroot"), path(p));
            }
            if let Some(p) = &sec.sendfileroot {
                e.insert(s("sendfileroot"), path(p));
            }
            e.insert(
                s("enable_sendfile_404"),
                Value::Bool(sec.enable_sendfile_404),
            );
            e.insert(s("xforwardedfor"), Value::Bool(sec.xforwardedfor));
            e.insert(s("redeployable"), Value::Bool(sec.redeployable));
            e.insert(
                s("redeployment_sizelimit"),
                Value::from(sec.redeployment_sizelimit as u64),
            );
            if let Some(v) = &sec.staticmask {
                e.insert(s("staticmask"), s(v));
            }
            if let Some(v) = &sec.cache_directory {
                e.insert(s("cache_directory"), s(v));
            }
            e.insert(s("cache_extensions"), list(&sec.cache_extensions));
            Value::Mapping(e)
        })
        .collect();
    m.insert(s("map"), Value::Sequence(sections));
    Value::Mapping(m)
}
