//! Keys of the classic program that no longer mean anything here.
//!
//! Invariants: a legacy key whose old meaning is harmless to drop is accepted
//! and logged at info level with the reason, so classic configs keep
//! loading; one that would select behaviour Swiftiply no longer has (the
//! traditional proxy mode: `proxy: traditional`, `keepalive: false`) is an
//! error that says what to do instead. Nothing here changes the `Config`.

use super::raw::{Flag, RawLogger, RawSection, RawTop};
use super::ConfigError;

/// Logs that `key` is accepted but ignored, and why. `place` is empty or
/// ends with ": ".
pub(super) fn note_legacy(origin: &str, place: &str, key: &str, why: &str) {
    log::info!("{origin}: {place}ignoring legacy key `{key}` ({why})");
}

/// Checks the legacy per-section keys of `raw`, logging those that are
/// ignored. `place` names the entry (`defaults` or a section label).
pub(super) fn section_legacy(
    origin: &str,
    place: &str,
    raw: &RawSection,
) -> Result<(), ConfigError> {
    let p = format!("{place}: ");
    if let Some(proxy) = &raw.proxy {
        match proxy.trim().to_ascii_lowercase().as_str() {
            "keepalive" => note_legacy(origin, &p, "proxy", "`keepalive` is the only mode"),
            "traditional" => {
                return Err(ConfigError(format!(
                    "{origin}: {place}: `proxy: traditional` (the classic mode in which \
                     Swiftiply connects out to origin servers) is not supported; remove \
                     `proxy` and have the backends connect to the `outgoing` address"
                )))
            }
            other => {
                return Err(ConfigError(format!(
                    "{origin}: {place}: `proxy: {other}` is not a proxy mode; the only \
                     mode is `keepalive`, so remove the `proxy` key"
                )))
            }
        }
    }
    if let Some(Flag(ka)) = raw.keepalive {
        if ka {
            note_legacy(
                origin,
                &p,
                "keepalive",
                "backends always connect to Swiftiply",
            );
        } else {
            return Err(ConfigError(format!(
                "{origin}: {place}: `keepalive: false` selects the classic traditional proxy \
                 mode, which is not supported; remove `keepalive` and have the backends \
                 connect to the `outgoing` address"
            )));
        }
    }
    let cache_why = "static file caching is managed internally";
    if raw.file_cache.is_some() {
        note_legacy(origin, &p, "file_cache", cache_why);
    }
    if raw.etag_cache.is_some() {
        note_legacy(origin, &p, "etag_cache", cache_why);
    }
    if raw.dynamic_request_cache.is_some() {
        note_legacy(origin, &p, "dynamic_request_cache", cache_why);
    }
    if raw.url.is_some() {
        note_legacy(origin, &p, "url", "it was never used");
    }
    Ok(())
}

/// Logs the legacy top-level keys of `raw`, all of which are ignored.
pub(super) fn top_legacy(origin: &str, raw: &RawTop) {
    let items: [(&str, bool, &str); 9] = [
        (
            "epoll",
            raw.epoll.is_some(),
            "the event loop picks epoll/kqueue itself",
        ),
        (
            "kqueue",
            raw.kqueue.is_some(),
            "the event loop picks epoll/kqueue itself",
        ),
        (
            "epoll_descriptors",
            raw.epoll_descriptors.is_some(),
            "the descriptor limit is the process's `ulimit -n`",
        ),
        (
            "descriptors",
            raw.descriptors.is_some(),
            "the descriptor limit is the process's `ulimit -n`",
        ),
        (
            "chunked_encoding_threshold",
            raw.chunked_encoding_threshold.is_some(),
            "static files are always sent with Content-Length",
        ),
        (
            "cache_threshold",
            raw.cache_threshold.is_some(),
            "static file caching is managed internally",
        ),
        (
            "backend_address",
            raw.backend_address.is_some(),
            "it never worked; add a `map` entry instead",
        ),
        (
            "backend_port",
            raw.backend_port.is_some(),
            "it never worked; add a `map` entry instead",
        ),
        (
            "updates",
            raw.updates.is_some(),
            "the REST updater never worked",
        ),
    ];
    for (key, present, why) in items {
        if present {
            note_legacy(origin, "", key, why);
        }
    }
}

/// Logs the parts of a classic `logger` that are ignored: the Analogger
/// parameters, and a `type` other than stderr. The level is read in
/// `merge.rs`.
pub(super) fn logger_legacy(origin: &str, lg: &RawLogger) {
    for (key, present) in [
        ("service", lg.service.is_some()),
        ("host", lg.host.is_some()),
        ("port", lg.port.is_some()),
        ("key", lg.key.is_some()),
    ] {
        if present {
            note_legacy(
                origin,
                "logger: ",
                key,
                "Analogger logging is not supported",
            );
        }
    }
    if let Some(kind) = &lg.kind {
        let k = kind.trim().to_ascii_lowercase();
        if k != "stderror" && k != "stderr" {
            log::warn!(
                "{origin}: logger type `{kind}` is not supported; only stderr logging \
                 is, so logging goes to stderr"
            );
        }
    }
}
