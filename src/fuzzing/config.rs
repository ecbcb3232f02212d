//! The config invariant (`crate::config`): loading never panics, and what
//! loads prints and loads back equal.

use crate::config::Config;

pub fn check_config(data: &[u8]) {
    const ORIGIN: &str = "fuzz.yml";
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match serde_yaml::from_str::<serde_yaml::Value>(text) {
        Ok(v) if may_resolve(&v) => return,
        _ => {}
    }
    let cfg = match Config::from_yaml_str(text, ORIGIN) {
        Ok(cfg) => cfg,
        Err(e) => {
            assert!(e.0.starts_with(ORIGIN), "error without its origin: {e}");
            return;
        }
    };
    let printed = cfg.to_yaml();
    let again = Config::from_yaml_str(&printed, ORIGIN)
        .unwrap_or_else(|e| panic!("the printed config does not load: {e}\n{printed}"));
    assert_eq!(
        again, cfg,
        "printed and loaded again, the config changed:\n{printed}"
    );
    assert_eq!(again.to_yaml(), printed, "printing is not stable");
}

/// Could loading resolve a host name? Any string `name:port` where `name`
/// is not an IP literal (as `outgoing` and `ssl.at` allow).
fn may_resolve(v: &serde_yaml::Value) -> bool {
    use serde_yaml::Value;
    match v {
        Value::String(s) => s.rsplit_once(':').is_some_and(|(host, port)| {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            port.trim().parse::<u16>().is_ok() && bare.trim().parse::<std::net::IpAddr>().is_err()
        }),
        Value::Sequence(s) => s.iter().any(may_resolve),
        Value::Mapping(m) => m.iter().any(|(k, v)| may_resolve(k) || may_resolve(v)),
        Value::Tagged(t) => may_resolve(&t.value),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_print_and_load_back_equal() {
        for c in [
            include_str!("../../config/minimal.yml"),
            include_str!("../../config/example.yml"),
            "cluster_address: 1\n",
            "map: [",
        ] {
            check_config(c.as_bytes());
        }
    }

    #[test]
    fn a_host_name_to_resolve_is_noticed() {
        let v = |s: &str| serde_yaml::from_str::<serde_yaml::Value>(s).unwrap();
        assert!(may_resolve(&v("map: [{outgoing: backend.internal:3000}]")));
        assert!(!may_resolve(&v("map: [{outgoing: '[::1]:3000'}]")));
        assert!(!may_resolve(&v("map: [{outgoing: 127.0.0.1:3000}]")));
    }
}
