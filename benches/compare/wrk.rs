//! Running wrk on the load CPU and reading its summary: requests/s, the
//! p50/p99 of `--latency`, Transfer/sec, and the error lines a result must
//! never hide ("Socket errors", "Non-2xx or 3xx responses").
//!
//! wrk prints sizes in binary units (1KB = 1024 B) and times as us, ms, s,
//! m or h; both are converted here, to bytes and milliseconds.

use std::path::Path;
use std::process::Command;

use crate::lab::{self, Lab, Place};

/// One wrk run's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub bytes_per_sec: f64,
    pub non_2xx_3xx: u64,
    /// connect, read, write, timeout.
    pub socket_errors: [u64; 4],
}

impl Summary {
    /// A description of the errors wrk saw, if any.
    pub fn errors(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.non_2xx_3xx > 0 {
            parts.push(format!("{} non-2xx/3xx responses", self.non_2xx_3xx));
        }
        let [c, r, w, t] = self.socket_errors;
        if c + r + w + t > 0 {
            parts.push(format!(
                "socket errors: connect {c}, read {r}, write {w}, timeout {t}"
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// How to load a target.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub connections: usize,
    pub secs: u32,
    /// wrk's `--timeout` in seconds (wrk's default, 2 s, when `None`).
    pub timeout_s: Option<u32>,
}

/// Runs `wrk -t1 -cN -dSs --latency URL` pinned to the load CPU.
pub fn run(lab: &mut Lab, wrk: &Path, url: &str, load: Load) -> Result<Summary, String> {
    let mut cmd = Command::new(wrk);
    cmd.arg("-t1")
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.secs))
        .arg("--latency");
    if let Some(t) = load.timeout_s {
        cmd.arg(format!("--timeout={t}s"));
    }
    cmd.arg(url);
    let id = lab.spawn("wrk", cmd, Place::Load)?;
    let status = lab.wait_exit(id, lab::after(f64::from(load.secs) + 30.0))?;
    let out = lab.output(id);
    if !status.success() {
        return Err(format!(
            "wrk against {url} failed ({status}):\n{}",
            lab.output_tail(id, 10)
        ));
    }
    parse(&out).map_err(|e| format!("wrk against {url}: {e}; its output:\n{out}"))
}

/// Reads wrk's summary.
pub fn parse(out: &str) -> Result<Summary, String> {
    let mut s = Summary::default();
    let (mut rps, mut transfer, mut p50, mut p99) = (None, None, None, None);
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = t.strip_prefix("Transfer/sec:") {
            transfer = parse_size(v.trim());
        } else if let Some(v) = t.strip_prefix("50%") {
            p50 = parse_time_ms(v.trim());
        } else if let Some(v) = t.strip_prefix("99%") {
            p99 = parse_time_ms(v.trim());
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            s.non_2xx_3xx = v.trim().parse().map_err(|_| format!("cannot read {t:?}"))?;
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for (i, part) in v.split(',').enumerate().take(4) {
                s.socket_errors[i] = part
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("cannot read {t:?}"))?;
            }
        }
    }
    s.requests_per_sec = rps.ok_or("no Requests/sec line")?;
    s.bytes_per_sec = transfer.ok_or("no Transfer/sec line")?;
    s.p50_ms = p50.ok_or("no 50% latency line (was --latency given?)")?;
    s.p99_ms = p99.ok_or("no 99% latency line")?;
    Ok(s)
}

/// "440.00us", "1.10ms", "2.00s", "1.00m" → milliseconds.
fn parse_time_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = v.split_at(split);
    let num: f64 = num.trim().parse().ok()?;
    let scale = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some(num * scale)
}

/// "7.03MB", "512.00B", "3.37GB" (binary units) → bytes.
fn parse_size(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = v.split_at(split);
    let num: f64 = num.trim().parse().ok()?;
    let power = match unit {
        "B" => 0,
        "KB" => 1,
        "MB" => 2,
        "GB" => 3,
        "TB" => 4,
        "PB" => 5,
        _ => return None,
    };
    Some(num * 1024f64.powi(power))
}

/// The parser against real wrk 4.1 output; run with `cargo bench --bench
/// compare -- --self-test`.
pub fn self_test() -> Result<(), String> {
    let out = "Running 2s test @ http://127.0.0.1:1/hello
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   452.37us  200.00us   5.00ms   90.00%
    Req/Sec    57.61k     2.00k   60.00k    70.00%
  Latency Distribution
     50%  440.00us
     75%  500.00us
     90%  600.00us
     99%    1.10ms
  115220 requests in 2.00s, 14.07MB read
  Socket errors: connect 0, read 3, write 0, timeout 12
  Non-2xx or 3xx responses: 5
Requests/sec:  57610.00
Transfer/sec:      3.37GB
";
    let s = parse(out)?;
    let want = Summary {
        requests_per_sec: 57610.0,
        p50_ms: 0.44,
        p99_ms: 1.1,
        bytes_per_sec: 3.37 * 1024.0 * 1024.0 * 1024.0,
        non_2xx_3xx: 5,
        socket_errors: [0, 3, 0, 12],
    };
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    let ok = close(s.requests_per_sec, want.requests_per_sec)
        && close(s.p50_ms, want.p50_ms)
        && close(s.p99_ms, want.p99_ms)
        && close(s.bytes_per_sec, want.bytes_per_sec)
        && s.non_2xx_3xx == want.non_2xx_3xx
        && s.socket_errors == want.socket_errors;
    if !ok {
        return Err(format!("wrk parser: got {s:?}, want {want:?}"));
    }
    if s.errors().is_none() {
        return Err("wrk parser: errors were not reported".into());
    }
    let clean = out
        .lines()
        .filter(|l| !l.contains("errors") && !l.contains("Non-2xx"))
        .collect::<Vec<_>>()
        .join("\n");
    match parse(&clean)?.errors() {
        None => {}
        Some(e) => return Err(format!("wrk parser: a clean run reported {e}")),
    }
    if parse_time_ms("2.00s") != Some(2000.0) || parse_size("512.00KB") != Some(524288.0) {
        return Err("wrk parser: unit conversion".into());
    }
    Ok(())
}
