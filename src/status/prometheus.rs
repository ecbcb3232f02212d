//! The snapshot in Prometheus text exposition format 0.0.4.
//!
//! Every family is written once, as `# HELP`, `# TYPE`, then all its samples
//! (the format requires a family's samples to be contiguous). Per-section
//! families always carry every section, even at zero, so a series does not
//! appear only after its first event. Label values are escaped (`\\`, `\"`,
//! `\n`); names are constants. The metric list is documented in docs/operations.md
//! ("Metrics and status page"); keep the two in step.

use std::io::Write;

use super::BUCKET_LABELS;
use super::{BackendStateName, Histogram, SectionSnapshot, Snapshot, StatusClasses};

pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Appends the Prometheus text for `s` to `out`.
pub fn render_prometheus(s: &Snapshot, out: &mut Vec<u8>) {
    let mut w = Writer { out };
    let sections = &s.sections;

    w.family(
        "swiftiply_build_info",
        "gauge",
        "Always 1; the version label is the running Swiftiply.",
    );
    w.sample("swiftiply_build_info", &[("version", s.version)], 1);
    w.family(
        "swiftiply_start_time_seconds",
        "gauge",
        "Unix time the process started.",
    );
    w.sample("swiftiply_start_time_seconds", &[], s.started_unix);
    w.family(
        "swiftiply_workers",
        "gauge",
        "Event loops (worker threads) in the process.",
    );
    w.sample("swiftiply_workers", &[], s.workers as u64);
    w.family(
        "swiftiply_config_reloads_total",
        "counter",
        "Successful configuration reloads (SIGHUP).",
    );
    w.sample("swiftiply_config_reloads_total", &[], s.reloads);
    w.family(
        "swiftiply_config_reload_failures_total",
        "counter",
        "Configuration reloads refused (the old configuration stayed).",
    );
    w.sample(
        "swiftiply_config_reload_failures_total",
        &[],
        s.reload_failures,
    );
    w.family(
        "swiftiply_client_connections",
        "gauge",
        "Client connections open now.",
    );
    w.sample("swiftiply_client_connections", &[], s.client_connections);
    w.family(
        "swiftiply_backend_connections",
        "gauge",
        "Backend connections open now, in any state.",
    );
    w.sample("swiftiply_backend_connections", &[], s.backend_connections);
    w.family(
        "swiftiply_client_received_bytes_total",
        "counter",
        "Bytes read from clients.",
    );
    w.sample("swiftiply_client_received_bytes_total", &[], s.bytes_in);
    w.family(
        "swiftiply_client_sent_bytes_total",
        "counter",
        "Bytes written to clients.",
    );
    w.sample("swiftiply_client_sent_bytes_total", &[], s.bytes_out);

    w.per_section(
        sections,
        "swiftiply_section_received_bytes_total",
        "counter",
        "Bytes read from clients for requests routed to the section.",
        |sec| sec.counters.bytes_in,
    );
    w.per_section(
        sections,
        "swiftiply_section_sent_bytes_total",
        "counter",
        "Bytes written to clients for requests routed to the section.",
        |sec| sec.counters.bytes_out,
    );

    w.family(
        "swiftiply_responses_total",
        "counter",
        "Responses by section and status class; section=\"\" counts those given before routing.",
    );
    w.classes("", &s.unrouted);
    for sec in sections {
        w.classes(&sec.name, &sec.counters.responses);
    }

    w.family(
        "swiftiply_gateway_errors_total",
        "counter",
        "Responses 502 (backend failed), 503 (no backend in time), 504 (backend timed out) by section.",
    );
    for sec in sections {
        for (code, n) in [
            ("502", sec.counters.status_502),
            ("503", sec.counters.status_503),
            ("504", sec.counters.status_504),
        ] {
            w.sample(
                "swiftiply_gateway_errors_total",
                &[("section", &sec.name), ("code", code)],
                n,
            );
        }
    }

    w.family(
        "swiftiply_backends_aborted_total",
        "counter",
        "Backend connections closed mid-request because of their client, by reason.",
    );
    for sec in sections {
        for (reason, n) in [
            ("client_body_error", sec.counters.aborted_body_error),
            ("client_body_slow", sec.counters.aborted_body_slow),
            ("client_gone", sec.counters.aborted_client_gone),
        ] {
            w.sample(
                "swiftiply_backends_aborted_total",
                &[("section", &sec.name), ("reason", reason)],
                n,
            );
        }
    }

    w.per_section(
        sections,
        "swiftiply_queue_depth",
        "gauge",
        "Requests waiting for a backend now.",
        |sec| sec.queue_depth,
    );

    w.family(
        "swiftiply_backends",
        "gauge",
        "Backend connections by section and state (handshaking, idle, busy).",
    );
    for sec in sections {
        for (state, n) in [
            (BackendStateName::Handshaking, sec.handshaking_backends),
            (BackendStateName::Idle, sec.idle_backends),
            (BackendStateName::Busy, sec.busy_backends),
        ] {
            w.sample(
                "swiftiply_backends",
                &[("section", &sec.name), ("state", state.as_str())],
                n,
            );
        }
    }

    w.per_section(
        sections,
        "swiftiply_backends_joined_total",
        "counter",
        "Backend connections that completed their handshake.",
        |sec| sec.counters.backends_joined,
    );
    w.per_section(
        sections,
        "swiftiply_backends_left_total",
        "counter",
        "Backend connections that closed after joining.",
        |sec| sec.counters.backends_left,
    );
    w.per_section(
        sections,
        "swiftiply_handshakes_refused_total",
        "counter",
        "Backend handshakes refused (wrong key, malformed, timed out).",
        |sec| sec.counters.handshakes_refused,
    );
    w.per_section(
        sections,
        "swiftiply_redeploys_total",
        "counter",
        "Requests retried on another backend after one failed before answering.",
        |sec| sec.counters.redeploys,
    );
    w.per_section(
        sections,
        "swiftiply_static_files_total",
        "counter",
        "Responses served from the section's docroot without a backend.",
        |sec| sec.counters.static_files,
    );

    w.family(
        "swiftiply_queue_wait_seconds",
        "histogram",
        "Time each request dispatched to a backend waited for one (0 when one was idle).",
    );
    for sec in sections {
        w.histogram(
            "swiftiply_queue_wait_seconds",
            &sec.name,
            &sec.counters.queue_wait,
        );
    }
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    // Writing to a `Vec<u8>` cannot fail, so the `io::Result`s of `write!`
    // below are discarded.

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        debug_assert!(!help.contains(['\\', '\n']), "HELP text is not escaped");
        let _ = write!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.name_and_labels(name, labels);
        let _ = writeln!(self.out, " {value}");
    }

    fn name_and_labels(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.out.extend_from_slice(name.as_bytes());
        if labels.is_empty() {
            return;
        }
        self.out.push(b'{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.out.extend_from_slice(label.as_bytes());
            self.out.extend_from_slice(b"=\"");
            escape_label_value(value, self.out);
            self.out.push(b'"');
        }
        self.out.push(b'}');
    }

    fn per_section(
        &mut self,
        sections: &[SectionSnapshot],
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&SectionSnapshot) -> u64,
    ) {
        self.family(name, kind, help);
        for sec in sections {
            self.sample(name, &[("section", &sec.name)], value(sec));
        }
    }

    fn classes(&mut self, section: &str, classes: &StatusClasses) {
        for (class, &n) in StatusClasses::LABELS.iter().zip(&classes.0) {
            self.sample(
                "swiftiply_responses_total",
                &[("section", section), ("class", class)],
                n,
            );
        }
    }

    fn histogram(&mut self, name: &str, section: &str, h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (le, &n) in BUCKET_LABELS.iter().zip(&h.counts) {
            cumulative = cumulative.saturating_add(n);
            self.sample(&bucket, &[("section", section), ("le", le)], cumulative);
        }
        self.name_and_labels(&format!("{name}_sum"), &[("section", section)]);
        let _ = writeln!(
            self.out,
            " {}.{:06}",
            h.sum_micros / 1_000_000,
            h.sum_micros % 1_000_000
        );
        self.sample(&format!("{name}_count"), &[("section", section)], h.count);
    }
}

/// Exposition-format label escaping: backslash, double quote, line feed.
fn escape_label_value(v: &str, out: &mut Vec<u8>) {
    for &b in v.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;
    use std::collections::HashMap;

    fn rendered() -> String {
        let mut out = Vec::new();
        render_prometheus(&fixture::snapshot(), &mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    /// The value of the sample line that starts with `series` + ' '.
    fn value(text: &str, series: &str) -> String {
        let prefix = format!("{series} ");
        let hits: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .collect();
        assert_eq!(hits.len(), 1, "exactly one line for {series}:\n{text}");
        hits[0].to_string()
    }

    #[test]
    fn process_wide_samples() {
        let t = rendered();
        assert_eq!(value(&t, r#"swiftiply_build_info{version="9.8.7"}"#), "1");
        assert_eq!(
            value(&t, "swiftiply_start_time_seconds"),
            fixture::STARTED.to_string()
        );
        assert_eq!(value(&t, "swiftiply_workers"), "2");
        assert_eq!(value(&t, "swiftiply_config_reloads_total"), "3");
        assert_eq!(value(&t, "swiftiply_config_reload_failures_total"), "1");
        assert_eq!(value(&t, "swiftiply_client_connections"), "12");
        assert_eq!(value(&t, "swiftiply_backend_connections"), "4");
        assert_eq!(value(&t, "swiftiply_client_received_bytes_total"), "5000");
        assert_eq!(value(&t, "swiftiply_client_sent_bytes_total"), "70000");
    }

    #[test]
    fn per_section_samples() {
        let t = rendered();
        let shop = r#"section="shop.example""#;
        assert_eq!(
            value(
                &t,
                &format!("swiftiply_section_received_bytes_total{{{shop}}}")
            ),
            "4000"
        );
        assert_eq!(
            value(&t, &format!("swiftiply_section_sent_bytes_total{{{shop}}}")),
            "60000"
        );
        for (class, n) in [("1xx", 0), ("2xx", 2), ("3xx", 1), ("4xx", 1), ("5xx", 1)] {
            let series = format!("swiftiply_responses_total{{{shop},class=\"{class}\"}}");
            assert_eq!(value(&t, &series), n.to_string());
        }
        assert_eq!(
            value(&t, r#"swiftiply_responses_total{section="",class="2xx"}"#),
            "1"
        );
        assert_eq!(
            value(&t, r#"swiftiply_responses_total{section="",class="4xx"}"#),
            "1"
        );
        assert_eq!(
            value(
                &t,
                &format!("swiftiply_gateway_errors_total{{{shop},code=\"502\"}}")
            ),
            "1"
        );
        assert_eq!(
            value(
                &t,
                &format!("swiftiply_gateway_errors_total{{{shop},code=\"503\"}}")
            ),
            "0"
        );
        assert_eq!(value(&t, &format!("swiftiply_queue_depth{{{shop}}}")), "7");
        for state in ["handshaking", "idle", "busy"] {
            let series = format!("swiftiply_backends{{{shop},state=\"{state}\"}}");
            assert_eq!(value(&t, &series), "1");
        }
        assert_eq!(
            value(&t, &format!("swiftiply_backends_joined_total{{{shop}}}")),
            "5"
        );
        assert_eq!(
            value(&t, &format!("swiftiply_backends_left_total{{{shop}}}")),
            "2"
        );
        assert_eq!(
            value(&t, &format!("swiftiply_handshakes_refused_total{{{shop}}}")),
            "1"
        );
        assert_eq!(
            value(
                &t,
                &format!("swiftiply_backends_aborted_total{{{shop},reason=\"client_body_slow\"}}")
            ),
            "3"
        );
        assert_eq!(
            value(&t, &format!("swiftiply_redeploys_total{{{shop}}}")),
            "1"
        );
        assert_eq!(
            value(&t, &format!("swiftiply_static_files_total{{{shop}}}")),
            "2"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_in_seconds() {
        let t = rendered();
        let shop = r#"section="shop.example""#;
        // Observed: 0, 700 µs, 30 ms.
        let expected = [1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3];
        for (le, n) in BUCKET_LABELS.iter().zip(expected) {
            let series = format!("swiftiply_queue_wait_seconds_bucket{{{shop},le=\"{le}\"}}");
            assert_eq!(value(&t, &series), n.to_string(), "le={le}");
        }
        assert_eq!(
            value(&t, &format!("swiftiply_queue_wait_seconds_sum{{{shop}}}")),
            "0.030700"
        );
        assert_eq!(
            value(&t, &format!("swiftiply_queue_wait_seconds_count{{{shop}}}")),
            "3"
        );
        // A section with no observations still has its series, at zero.
        let other = r#"section="a\"b\\c\nd""#;
        assert_eq!(
            value(
                &t,
                &format!("swiftiply_queue_wait_seconds_bucket{{{other},le=\"+Inf\"}}")
            ),
            "0"
        );
        assert_eq!(
            value(&t, &format!("swiftiply_queue_wait_seconds_sum{{{other}}}")),
            "0.000000"
        );
    }

    #[test]
    fn label_values_are_escaped_and_never_break_a_line() {
        let t = rendered();
        assert_eq!(
            value(&t, r#"swiftiply_queue_depth{section="a\"b\\c\nd"}"#),
            "0"
        );
        assert!(
            t.lines()
                .all(|l| l.starts_with("# ") || l.starts_with("swiftiply_")),
            "{t}"
        );
        assert!(t.ends_with('\n'));
    }

    #[test]
    fn every_family_has_one_help_and_one_type_before_its_samples() {
        let t = rendered();
        let mut helps: HashMap<&str, usize> = HashMap::new();
        let mut types: HashMap<&str, &str> = HashMap::new();
        let mut seen_order: Vec<&str> = Vec::new();
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                *helps.entry(name).or_default() += 1;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let name = parts.next().unwrap();
                assert!(
                    types.insert(name, parts.next().unwrap()).is_none(),
                    "TYPE twice: {name}"
                );
                assert_eq!(helps.get(name), Some(&1), "HELP before TYPE for {name}");
                seen_order.push(name);
            } else {
                let series = line.split(['{', ' ']).next().unwrap();
                // The family is the current one (samples are contiguous).
                let family = *seen_order.last().expect("a sample before any TYPE");
                let kind = types[family];
                let ok = series == family
                    || (kind == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|suffix| series == [family, suffix].concat()));
                assert!(ok, "sample {series} outside its family {family}");
                if kind == "counter" {
                    assert!(family.ends_with("_total"), "{family}");
                }
            }
        }
        assert_eq!(helps.len(), types.len());
        assert!(helps.values().all(|&n| n == 1), "{helps:?}");
        assert_eq!(types.len(), 22, "families: {seen_order:?}");
    }

    #[test]
    fn an_empty_snapshot_still_renders_every_process_family() {
        let mut out = Vec::new();
        render_prometheus(&Snapshot::default(), &mut out);
        let t = String::from_utf8(out).unwrap();
        assert_eq!(value(&t, r#"swiftiply_build_info{version=""}"#), "1");
        assert_eq!(
            value(&t, r#"swiftiply_responses_total{section="",class="5xx"}"#),
            "0"
        );
        assert!(t.contains("# TYPE swiftiply_queue_wait_seconds histogram\n"));
    }
}
