//! Instructions per request under callgrind, for Swiftiply and, where they
//! run under valgrind, HAProxy and nginx.
//!
//! Each proxy is run twice under `valgrind --tool=callgrind`, serving N1 and
//! then N2 keep-alive `GET /hello` requests from the harness's own client
//! threads, and stopped with SIGTERM (callgrind writes its profile when the
//! program ends on a signal too). Start-up, connection set-up and shutdown
//! cost the same in both runs, so (I2 − I1) / (N2 − N1) is the cost of one
//! request in steady state. The backend (the example app) runs natively.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::allocs::drive;
use crate::http::Client;
use crate::lab::{self, Lab, ProcId};
use crate::peers::{self, Bins, Callgrind};
use crate::report::Target;

pub const N1: usize = 2_000;
pub const N2: usize = 12_000;
const CLIENTS: usize = 4;

/// What the proxies need besides themselves.
pub struct Setup<'a> {
    pub valgrind: &'a Path,
    pub bins: &'a Bins,
    pub app: SocketAddr,
}

/// Instructions per request for `target`, from two callgrind runs.
pub fn instructions_per_request(
    lab: &mut Lab,
    setup: &Setup,
    target: Target,
    program: &Path,
) -> Result<f64, String> {
    let i1 = one_run(lab, setup, target, program, N1)?;
    let i2 = one_run(lab, setup, target, program, N2)?;
    if i2 <= i1 {
        return Err(format!(
            "{} instructions for {N2} requests is not more than {i1} for {N1}",
            i2
        ));
    }
    Ok((i2 - i1) as f64 / (N2 - N1) as f64)
}

/// Total instructions of one run serving `requests` requests.
fn one_run(
    lab: &mut Lab,
    setup: &Setup,
    target: Target,
    program: &Path,
    requests: usize,
) -> Result<u64, String> {
    let out = lab
        .dir
        .join(format!("callgrind-{}-{requests}.out", target.name()));
    let cg = Callgrind {
        valgrind: setup.valgrind,
        out: out.clone(),
    };
    let (proc, extra, addr) = match target {
        Target::Swiftiply => {
            let s = peers::start_swiftiply(lab, setup.bins, Some(&cg))?;
            (s.proc, Some(s.backend_app), s.clients)
        }
        Target::Haproxy => {
            let plan = peers::HaproxyPlan {
                maxconn: 1000,
                nofile: None,
                splice: false,
            };
            let h = peers::start_haproxy(lab, program, setup.app, plan, Some(&cg))?;
            (h.proc, None, h.plain)
        }
        Target::Nginx => {
            let n = peers::start_nginx(lab, program, setup.app, 1024, None, Some(&cg))?;
            (n.proc, None, n.addr)
        }
        other => return Err(format!("no callgrind run for {}", other.name())),
    };
    let served = serve(addr, requests);
    let stopped = stop(lab, proc);
    if let Some(app) = extra {
        lab.finish(app);
    }
    served?;
    stopped?;
    let text = std::fs::read_to_string(&out)
        .map_err(|e| format!("callgrind wrote no profile {}: {e}", out.display()))?;
    total_instructions(&text)
        .ok_or_else(|| format!("no summary: or totals: line in {}", out.display()))
}

fn serve(addr: SocketAddr, requests: usize) -> Result<(), String> {
    let mut clients = (0..CLIENTS)
        .map(|_| Client::connect(addr, Duration::from_secs(60)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    drive(&mut clients, requests)
}

/// SIGTERM, then up to 60 s for callgrind to write its profile.
fn stop(lab: &mut Lab, proc: ProcId) -> Result<(), String> {
    lab.signal(proc, libc::SIGTERM);
    lab.wait_exit(proc, lab::after(60.0)).map(|_| ())
}

/// The `summary:` (or `totals:`) figure of a callgrind profile: the first
/// event, instructions.
fn total_instructions(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with("summary:"))
        .or_else(|| text.lines().find(|l| l.starts_with("totals:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
