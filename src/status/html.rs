//! The snapshot as one self-contained HTML page for a person: inline CSS, no
//! script, no external resource, reloaded by the browser every 5 seconds.
//!
//! Laid out for an incident: the header says what runs and for how long;
//! each section's queue depth is the largest thing in its block and turns
//! orange-red when requests are waiting; error counts turn red when non-zero;
//! the backend table says which connection does what.
//!
//! Invariants: every string from the snapshot (host names, addresses,
//! backend ids, the version) goes through `Esc`, which escapes `& < > " '`,
//! so nothing a backend or a config file says can become markup. Stable
//! hooks for tests and scripts: `id="summary"`, `id="section-<n>"` (n in
//! snapshot order), `class="queue-depth"` (plus `waiting` when non-zero),
//! `tr class="backend state-<state>"`.

use std::fmt;
use std::io::Write;

use super::{BackendSnapshot, SectionSnapshot, Snapshot, StatusClasses, BUCKET_LABELS};
use crate::static_files::httpdate::civil_from_days;

pub const HTML_CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// The queue-depth highlight (`#d9480f`); tests look for it in screenshots.
const WAITING_COLOUR: &str = "#d9480f";

const STYLE: &str = "\
*{box-sizing:border-box}\
body{margin:0;font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2330;background:#f3f4f6}\
header{background:#1d2330;color:#f3f4f6;padding:12px 20px}\
h1{margin:0 0 8px;font-size:20px}h1 .version{font-weight:normal;color:#aab2bf}\
.facts{display:flex;flex-wrap:wrap;gap:6px 22px;margin:0}\
.facts div{display:flex;gap:6px}.facts dt{color:#aab2bf}.facts dd{margin:0;font-weight:600}\
main{padding:14px 20px;display:grid;gap:14px}\
.section{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:12px 16px}\
.section h2{margin:0 0 4px;font-size:17px}\
.meta{margin:0 0 10px;color:#4a5263}.meta span{margin-right:16px}\
.row{display:flex;flex-wrap:wrap;gap:14px;align-items:stretch}\
.queue-depth{min-width:150px;padding:8px 14px;border-radius:6px;background:#e6f4ea;color:#1e6b34;text-align:center}\
.queue-depth .num{display:block;font-size:34px;font-weight:700;line-height:1.1}\
.queue-depth.waiting{background:#d9480f;color:#fff}\
.pool{padding:8px 14px;border-radius:6px;background:#f3f4f6}.pool b{font-size:18px}\
table{border-collapse:collapse}\
.counters td,.counters th{padding:1px 10px 1px 0;text-align:left;white-space:nowrap}\
.counters th{font-weight:normal;color:#4a5263}\
.counters [class^=count-],.counters [class^=status-]{margin-right:12px}\
.bad{color:#c92a2a;font-weight:700}\
.backends{margin-top:10px;width:100%}\
.backends th{text-align:left;border-bottom:2px solid #d5d9e0;padding:3px 8px;color:#4a5263;font-weight:600}\
.backends td{border-bottom:1px solid #eceef2;padding:3px 8px;font-variant-numeric:tabular-nums}\
.backends td.num{text-align:right}\
.state{display:inline-block;min-width:88px;padding:0 8px;border-radius:10px;color:#fff;text-align:center}\
.state-idle .state{background:#2b8a3e}.state-busy .state{background:#e67700}\
.state-handshaking .state{background:#868e96}.state-closing .state{background:#7048e8}\
.none{color:#868e96;font-style:italic}\
footer{padding:0 20px 16px;color:#6b7280;font-size:12px}";

/// Appends the HTML status page for `s` to `out`.
pub fn render_html(s: &Snapshot, out: &mut Vec<u8>) {
    debug_assert!(STYLE.contains(WAITING_COLOUR));
    // Writing to a `Vec<u8>` cannot fail, so the `io::Result`s of `write!`
    // here are discarded.
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Swiftiply status</title><style>{STYLE}</style></head>\n<body>\n"
    );
    header(s, out);
    let _ = writeln!(out, "<main>");
    if s.sections.is_empty() {
        let _ = writeln!(out, "<p class=\"none\">No sections are configured.</p>");
    }
    for (n, sec) in s.sections.iter().enumerate() {
        section(n, sec, s.now_unix, out);
    }
    let _ = write!(
        out,
        "</main>\n<footer>As of {} · this page reloads every 5 s · \
         Prometheus metrics: the same address without <code>?html</code>, fetched by a scraper or curl</footer>\n\
         </body></html>\n",
        Utc(s.now_unix)
    );
}

fn header(s: &Snapshot, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        "<header id=\"summary\"><h1>Swiftiply <span class=\"version\">{}</span></h1><dl class=\"facts\">",
        Esc(s.version)
    );
    let reloads = if s.reload_failures > 0 {
        format!(
            "{} <span class=\"bad\">({} failed)</span>",
            s.reloads, s.reload_failures
        )
    } else {
        s.reloads.to_string()
    };
    let facts: [(&str, &str, String); 8] = [
        ("uptime", "Uptime", Age(s.uptime_secs()).to_string()),
        ("started", "Started", Utc(s.started_unix).to_string()),
        ("workers", "Workers", s.workers.to_string()),
        ("reloads", "Reloads", reloads),
        (
            "clients",
            "Client connections",
            s.client_connections.to_string(),
        ),
        (
            "backends",
            "Backend connections",
            s.backend_connections.to_string(),
        ),
        (
            "bytes",
            "Bytes in / out",
            format!("{} / {}", Bytes(s.bytes_in), Bytes(s.bytes_out)),
        ),
        (
            "unrouted",
            "Unrouted responses",
            classes_summary(&s.unrouted),
        ),
    ];
    for (id, label, value) in facts {
        // `value` is built above from numbers and fixed markup only.
        let _ = write!(
            out,
            "<div><dt>{label}</dt><dd id=\"{id}\">{value}</dd></div>"
        );
    }
    let _ = writeln!(out, "</dl></header>");
}

fn section(n: usize, sec: &SectionSnapshot, now: u64, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        "<section class=\"section\" id=\"section-{n}\"><h2 class=\"name\">{}</h2><p class=\"meta\">",
        Esc(&sec.name)
    );
    let _ = write!(
        out,
        "<span class=\"hosts\">Hosts: {}</span>",
        List(&sec.hosts)
    );
    let _ = write!(
        out,
        "<span class=\"outgoing\">Backends connect to: {}</span></p>\n<div class=\"row\">",
        List(&sec.outgoing)
    );

    let waiting = if sec.queue_depth > 0 { " waiting" } else { "" };
    let _ = write!(
        out,
        "<div class=\"queue-depth{waiting}\"><span class=\"num\">{}</span>waiting for a backend</div>",
        sec.queue_depth
    );
    let _ = write!(
        out,
        "<div class=\"pool\"><b>{}</b> idle<br><b>{}</b> busy<br><b>{}</b> handshaking</div>",
        sec.idle_backends, sec.busy_backends, sec.handshaking_backends
    );

    let _ = write!(out, "<table class=\"counters\"><tr><th>Responses</th><td>");
    for (label, &count) in StatusClasses::LABELS.iter().zip(&sec.counters.responses.0) {
        let count = Count(count, *label == "5xx");
        let _ = write!(out, "<span class=\"count-{label}\">{label} {count}</span> ");
    }
    let _ = write!(out, "</td></tr><tr><th>Gateway errors</th><td>");
    for (code, count) in [
        (502, sec.counters.status_502),
        (503, sec.counters.status_503),
        (504, sec.counters.status_504),
    ] {
        let count = Count(count, true);
        let _ = write!(out, "<span class=\"status-{code}\">{code} {count}</span> ");
    }
    let _ = write!(
        out,
        "</td></tr><tr><th>Backends</th><td>{} joined, {} left, {} refused</td></tr>\
         <tr><th>Redeploys</th><td>{}</td></tr><tr><th>Static files</th><td>{}</td></tr>\
         <tr><th>Bytes in / out</th><td>{} / {}</td></tr><tr><th>Queue wait</th><td>",
        sec.counters.backends_joined,
        sec.counters.backends_left,
        Count(sec.counters.handshakes_refused, true),
        sec.counters.redeploys,
        sec.counters.static_files,
        Bytes(sec.counters.bytes_in),
        Bytes(sec.counters.bytes_out),
    );
    match (
        sec.counters.queue_wait.mean(),
        sec.counters.queue_wait.quantile_bucket(0.99),
    ) {
        (Some(mean), Some(p99)) => {
            let _ = write!(
                out,
                "mean {:.1} ms, 99% ≤ {} s ({} requests)",
                mean.as_secs_f64() * 1000.0,
                BUCKET_LABELS[p99],
                sec.counters.queue_wait.count
            );
        }
        _ => {
            let _ = write!(out, "<span class=\"none\">no requests yet</span>");
        }
    }
    let _ = writeln!(out, "</td></tr></table></div>");

    backends_table(n, &sec.backends, now, out);
    let _ = writeln!(out, "</section>");
}

fn backends_table(n: usize, backends: &[BackendSnapshot], now: u64, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        "<table class=\"backends\" id=\"section-{n}-backends\"><thead><tr><th>Id</th><th>Address</th>\
         <th>State</th><th>Requests</th><th>Connected since</th><th>Age</th><th>Worker</th></tr></thead><tbody>"
    );
    if backends.is_empty() {
        let _ = write!(out, "<tr class=\"no-backends\"><td colspan=\"7\" class=\"none\">No backend is connected.</td></tr>");
    }
    for b in backends {
        let state = b.state.as_str();
        let id = if b.id.is_empty() {
            "<span class=\"none\">(none yet)</span>".to_string()
        } else {
            Esc(&b.id).to_string()
        };
        let _ = write!(
            out,
            "\n<tr class=\"backend state-{state}\"><td class=\"id\">{id}</td><td class=\"peer\">{}</td>\
             <td><span class=\"state\">{state}</span></td><td class=\"num requests\">{}</td>\
             <td class=\"since\">{}</td><td class=\"age\">{}</td><td class=\"num worker\">{}</td></tr>",
            Esc(&b.peer),
            b.requests,
            Utc(b.connected_unix),
            Age(now.saturating_sub(b.connected_unix)),
            b.worker
        );
    }
    let _ = writeln!(out, "</tbody></table>");
}

/// "1xx 0, 4xx 2" for the classes with a count; "none" when all are zero.
fn classes_summary(c: &StatusClasses) -> String {
    let parts: Vec<String> = StatusClasses::LABELS
        .iter()
        .zip(&c.0)
        .filter(|(_, &n)| n > 0)
        .map(|(label, n)| format!("{label} {n}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// HTML-escapes a string for text and double- or single-quoted attributes.
struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// A comma-separated list of escaped strings, or "none".
struct List<'a>(&'a [String]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("<span class=\"none\">none</span>");
        }
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "<code>{}</code>", Esc(item))?;
        }
        Ok(())
    }
}

/// A count, in red (`class="bad"`) when it is an alarm (the `bool`) and
/// non-zero.
struct Count(u64, bool);

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count(n, true) if *n > 0 => write!(f, "<span class=\"bad\">{n}</span>"),
            Count(n, _) => write!(f, "{n}"),
        }
    }
}

/// Unix seconds as `2025-11-27 16:21:48 UTC`.
struct Utc(u64);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = i64::try_from(self.0)
            .unwrap_or(i64::MAX)
            .min(253_402_300_799);
        let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
        let tod = secs.rem_euclid(86_400);
        write!(
            f,
            "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02} UTC",
            tod / 3600,
            tod / 60 % 60,
            tod % 60
        )
    }
}

/// A duration in seconds as its two largest units: `3d 4h`, `2h 5m`, `42s`.
struct Age(u64);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
        if d > 0 {
            write!(f, "{d}d {h}h")
        } else if h > 0 {
            write!(f, "{h}h {m}m")
        } else if m > 0 {
            write!(f, "{m}m {sec}s")
        } else {
            write!(f, "{sec}s")
        }
    }
}

/// A byte count in binary units with one decimal: `68.4 KiB`.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut v = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while v >= 1024.0 && unit < UNITS.len() - 1 {
            v /= 1024.0;
            unit += 1;
        }
        write!(f, "{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::super::{fixture, BackendStateName};
    use super::*;

    fn page(s: &Snapshot) -> String {
        let mut out = Vec::new();
        render_html(s, &mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn the_header_shows_version_uptime_and_totals() {
        let p = page(&fixture::snapshot());
        assert!(p.starts_with("<!DOCTYPE html>"));
        assert!(p.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(p.contains("<span class=\"version\">9.8.7</span>"));
        assert!(p.contains("<dd id=\"uptime\">1d 1h</dd>"));
        assert!(p.contains("<dd id=\"started\">2025-11-26 15:20:47 UTC</dd>"));
        assert!(p.contains("<dd id=\"workers\">2</dd>"));
        assert!(p.contains("<dd id=\"reloads\">3 <span class=\"bad\">(1 failed)</span></dd>"));
        assert!(p.contains("<dd id=\"clients\">12</dd>"));
        assert!(p.contains("<dd id=\"bytes\">4.9 KiB / 68.4 KiB</dd>"));
        assert!(p.contains("<dd id=\"unrouted\">2xx 1, 4xx 1</dd>"));
        assert!(p.trim_end().ends_with("</html>"));
    }

    #[test]
    fn each_section_has_its_block_and_queue_depth() {
        let p = page(&fixture::snapshot());
        assert!(p.contains("id=\"section-0\"><h2 class=\"name\">shop.example</h2>"));
        assert!(p.contains("<code>www.shop.example</code>"));
        assert!(p.contains("<code>127.0.0.1:9001</code>"));
        assert!(p.contains("<div class=\"queue-depth waiting\"><span class=\"num\">7</span>"));
        assert!(p.contains("id=\"section-1\""));
        assert!(
            p.contains("<div class=\"queue-depth\"><span class=\"num\">0</span>"),
            "no highlight at 0"
        );
        assert!(p.contains("<span class=\"status-502\">502 <span class=\"bad\">1</span></span>"));
        assert!(p.contains("<span class=\"status-503\">503 0</span>"));
        assert!(p.contains("5 joined, 2 left, <span class=\"bad\">1</span> refused"));
        assert!(p.contains("mean 10.2 ms, 99% ≤ 0.05 s (3 requests)"));
        assert!(
            p.contains("No backend is connected."),
            "the second section has none"
        );
    }

    #[test]
    fn the_page_has_a_row_for_each_backend() {
        let s = fixture::snapshot();
        let p = page(&s);
        assert_eq!(p.matches("<tr class=\"backend ").count(), 3);
        assert!(p.contains(
            "<tr class=\"backend state-busy\"><td class=\"id\">shop-1</td><td class=\"peer\">127.0.0.1:40001</td>\
             <td><span class=\"state\">busy</span></td><td class=\"num requests\">41</td>\
             <td class=\"since\">2025-11-27 15:21:48 UTC</td><td class=\"age\">1h 0m</td><td class=\"num worker\">0</td></tr>"
        ));
        assert!(p.contains("<td class=\"id\">shop-2</td>"));
        assert!(p.contains("<td class=\"age\">1m 5s</td>"));
        assert!(p.contains("<tr class=\"backend state-handshaking\"><td class=\"id\"><span class=\"none\">(none yet)</span>"));
    }

    #[test]
    fn hostile_host_names_and_backend_ids_are_escaped() {
        let mut s = fixture::snapshot();
        let evil = "<script>alert('x')</script>\"&amp;";
        s.version = "<b>";
        s.sections[0].name = evil.into();
        s.sections[0].hosts.push(evil.into());
        s.sections[0].outgoing.push(evil.into());
        s.sections[0].backends[0].id = evil.into();
        s.sections[0].backends[0].peer = evil.into();
        s.sections[0].backends[0].state = BackendStateName::Closing;
        let p = page(&s);
        let escaped = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;amp;";
        assert_eq!(p.matches(escaped).count(), 5, "{p}");
        assert!(!p.contains("<script"), "no raw markup from the snapshot");
        assert!(p.contains("<span class=\"version\">&lt;b&gt;</span>"));
        assert!(p.contains("<tr class=\"backend state-closing\">"));
    }

    #[test]
    fn the_page_is_self_contained() {
        let p = page(&fixture::snapshot());
        for forbidden in ["<script", "http://", "https://", "<link", "<img", "url("] {
            assert!(!p.contains(forbidden), "{forbidden}");
        }
        assert!(p.contains(WAITING_COLOUR));
    }

    #[test]
    fn an_empty_snapshot_renders() {
        let p = page(&Snapshot::default());
        assert!(p.contains("No sections are configured."));
        assert!(p.contains("<dd id=\"started\">1970-01-01 00:00:00 UTC</dd>"));
    }

    #[test]
    fn small_formatters() {
        assert_eq!(Age(0).to_string(), "0s");
        assert_eq!(Age(61).to_string(), "1m 1s");
        assert_eq!(Age(7200).to_string(), "2h 0m");
        assert_eq!(Age(3 * 86_400 + 4 * 3600 + 5).to_string(), "3d 4h");
        assert_eq!(Bytes(1023).to_string(), "1023 B");
        assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
        assert_eq!(Bytes(u64::MAX).to_string(), "16.0 EiB");
        assert_eq!(Utc(u64::MAX).to_string(), "9999-12-31 23:59:59 UTC");
        assert_eq!(
            Esc("a'b\"c<d>e&f").to_string(),
            "a&#39;b&quot;c&lt;d&gt;e&amp;f"
        );
    }
}
