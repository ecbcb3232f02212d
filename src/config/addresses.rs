//! Addresses and host names as an operator writes them: `cluster_address`
//! and `ssl.at` listener addresses, `outgoing` host:port values, and
//! `incoming` host names.
//!
//! Invariants: an IP literal (IPv6 with or without brackets) is taken as is;
//! a host name in an address is resolved to its first IPv4 address if it has
//! one, else its first address; `incoming` names are only checked and
//! lower-cased, never resolved. Errors are plain messages without the origin
//! prefix; the caller adds the origin and the key's place.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Resolves `host` (IP literal, bracketed IPv6, or a name) with `port`;
/// a name resolves to its first IPv4 address if it has one.
pub(super) fn resolve_host_port(host: &str, port: u16) -> Result<SocketAddr, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if bare.is_empty() || bare.contains(char::is_whitespace) || bare.contains(':') {
        return Err(format!(
            "`{host}` is not an IP address or host name (write e.g. 127.0.0.1)"
        ));
    }
    first_ipv4((bare, port)).map_err(|e| format!("cannot resolve `{host}`: {e}"))
}

fn first_ipv4<A: ToSocketAddrs>(a: A) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = a.to_socket_addrs().map_err(|e| e.to_string())?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| "it has no addresses".to_owned())
}

/// Parses an `outgoing` value: `host:port`, `[v6]:port`, or `name:port`
/// (resolved, first IPv4 address preferred).
pub(super) fn parse_outgoing(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bad =
        || format!("`{s}` is not host:port (write e.g. 127.0.0.1:30000; port 0 = any free port)");
    let (host, port) = t.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || host.contains(':') {
        return Err(bad());
    }
    resolve_host_port(host, port)
}

/// Lower-cases and checks one `incoming` host name.
pub(super) fn check_incoming(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("an `incoming` host name is empty".into());
    }
    if name.contains(char::is_whitespace) {
        return Err(format!(
            "`incoming` name `{name}` contains whitespace; give one host name per list item"
        ));
    }
    if name.contains('/') {
        return Err(format!(
            "`incoming` name `{name}` contains '/'; give a bare host name such as \
             example.com (no scheme or path)"
        ));
    }
    let is_v6_literal = name.starts_with('[') && name.ends_with(']');
    if name.contains(':') && !is_v6_literal {
        return Err(format!(
            "`incoming` name `{name}` has a ':' port suffix; give the host name without \
             the port (the port is ignored when matching the Host header)"
        ));
    }
    Ok(name.to_lowercase())
}
