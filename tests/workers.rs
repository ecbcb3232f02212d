//! Several event loops in one process (`workers: N`) and several processes
//! on one port (`reuseport: true`): the kernel spreads client connections,
//! every worker gets its share of each section's backends, and a port is
//! shared only when every process sharing it asks for that.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// Which worker each backend joined, from the log lines
/// `[... worker N] backend ID joined section ...`; waits until there are
/// `n` of them.
fn joined(p: &Proxy, n: usize) -> BTreeMap<String, usize> {
    let parse = || {
        let mut out = BTreeMap::new();
        for line in p.stderr_text().lines() {
            let Some((head, rest)) = line.split_once("] backend ") else {
                continue;
            };
            let Some((id, _)) = rest.split_once(" joined section ") else {
                continue;
            };
            let worker = head
                .rsplit_once("worker ")
                .and_then(|(_, w)| w.parse().ok())
                .unwrap_or_else(|| panic!("no worker in the log line {line:?}"));
            out.insert(id.to_string(), worker);
        }
        out
    };
    assert!(
        eventually(T, || parse().len() >= n),
        "{n} backends did not join; stderr:\n{}",
        p.stderr_text()
    );
    parse()
}

fn per_worker(joined: &BTreeMap<String, usize>, workers: usize) -> Vec<usize> {
    let mut counts = vec![0; workers];
    for &w in joined.values() {
        counts[w] += 1;
    }
    counts
}

fn lines_with(p: &Proxy, s: &str) -> usize {
    p.stderr_text().lines().filter(|l| l.contains(s)).count()
}

#[test]
fn two_workers_print_one_start_up_and_serve_many_clients_with_backends_on_both() {
    let p = Proxy::start(&one_section("workers: 2", ""));
    assert_eq!(lines_with(&p, "swiftiply: clients listening on"), 1);
    assert_eq!(
        lines_with(&p, "swiftiply: section 0 backends listening on"),
        1
    );
    assert_eq!(lines_with(&p, "swiftiply: 2 workers"), 1);
    assert_eq!(lines_with(&p, "swiftiply: ready"), 1);

    let farm = EchoFarm::start(p.backend_addr(0), "", 4, false);
    let joined = joined(&p, 4);
    assert_eq!(per_worker(&joined, 2), vec![2, 2], "{joined:?}");

    // 40 connections open at once, one request each.
    let mut clients: Vec<Client> = (0..40).map(|_| Client::connect(p.client_addr())).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("GET /r{i} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes());
    }
    let mut served_by = BTreeSet::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.read_response(false);
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert!(
            r.body_contains(&format!("GET /r{i} ")),
            "request {i}: {r:?}"
        );
        let backend = r.header("X-Backend").expect("X-Backend").to_string();
        assert!(farm.ids.contains(&backend), "{backend}");
        served_by.insert(joined[&backend]);
    }
    // The kernel hashes the 40 connections over both workers' listeners
    // (all on one worker: a chance of 2 in 2^40).
    assert_eq!(served_by.len(), 2, "only worker(s) {served_by:?} served");
}

#[test]
fn a_new_backend_goes_to_the_worker_with_fewest() {
    let p = Proxy::start(&one_section("workers: 2", ""));
    let addr = p.backend_addr(0);
    let mut backends: Vec<Backend> = (0..4)
        .map(|i| Backend::connect(addr, &id12("bal", i), ""))
        .collect();
    let first = joined(&p, 4);
    assert_eq!(per_worker(&first, 2), vec![2, 2], "{first:?}");

    // One leaves: its worker now has fewer, so it must take the next one
    // (the other worker declines, however the kernel wakes them).
    let leaving = backends.remove(1);
    let lost = first[&leaving.id];
    drop(leaving);
    assert!(
        p.wait_for_log(
            &format!("worker {lost}] a backend connection closed; 1 left"),
            T
        ),
        "{}",
        p.stderr_text()
    );
    backends.push(Backend::connect(addr, &id12("bal", 4), ""));
    let after = joined(&p, 5);
    assert_eq!(after[&id12("bal", 4)], lost, "{after:?}");

    // A burst is split evenly again.
    for i in 5..9 {
        backends.push(Backend::connect(addr, &id12("bal", i), ""));
    }
    let all = joined(&p, 9);
    let last: BTreeMap<_, _> = all
        .iter()
        .filter(|(id, _)| *id != &id12("bal", 1))
        .collect();
    let mut counts = [0, 0];
    for &&w in last.values() {
        counts[w] += 1;
    }
    assert_eq!(counts, [4, 4], "{all:?}");
}

#[test]
fn a_burst_of_backends_on_eight_workers_is_spread_evenly_and_none_is_left_waiting() {
    let p = Proxy::start(&one_section("workers: 8", ""));
    let addr = p.backend_addr(0);
    let mut backends: Vec<Backend> = (0..100)
        .map(|i| Backend::connect(addr, &id12("burst", i), ""))
        .collect();
    let first = joined(&p, 100);
    let counts = per_worker(&first, 8);
    let (min, max) = (counts.iter().min(), counts.iter().max());
    assert!(max.unwrap() - min.unwrap() <= 1, "{counts:?}");

    // Every other one leaves while new ones arrive: each new one must still
    // be taken by someone, whichever workers the closes left with fewest.
    for i in 0..50 {
        drop(backends.remove(i));
        backends.push(Backend::connect(addr, &id12("burst", 100 + i), ""));
    }
    let all = joined(&p, 150);
    assert!((100..150).all(|i| all.contains_key(&id12("burst", i))));
}

#[test]
fn cpu_affinity_pins_each_worker_to_its_own_cpu() {
    let p = Proxy::start(&one_section("workers: 2\ncpu_affinity: true", ""));
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let allowed = cpu_list(
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap(),
    );
    let mut pinned = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", p.pid())).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if let Some(w) = comm.trim().strip_prefix("swiftiply-w") {
            let st = std::fs::read_to_string(dir.join("status")).unwrap();
            let cpus = st
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(cpu_list)
                .unwrap();
            pinned.insert(w.parse::<usize>().unwrap(), cpus);
        }
    }
    assert_eq!(pinned.len(), 2, "{pinned:?}");
    if lines_with(&p, "cpu_affinity: cannot pin") > 0 {
        return; // a sandbox that forbids pinning: a warning, and it still runs
    }
    for (w, cpus) in &pinned {
        assert_eq!(cpus, &vec![allowed[w % allowed.len()]], "worker {w}");
    }
}

/// "0-2,5" → [0, 1, 2, 5].
fn cpu_list(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => out.push(part.parse().unwrap()),
        }
    }
    out
}

#[test]
fn with_reuseport_two_proxies_share_a_client_port() {
    let first = Proxy::start(&one_section("reuseport: true", ""));
    let port = first.client_addr().port();
    let second = Proxy::start(&one_section(
        &format!("reuseport: true\ncluster_port: {port}"),
        "",
    ));
    assert_eq!(second.client_addr(), first.client_addr());
    // Each process has its own backends (their backend ports differ).
    let farm1 = EchoFarm::start(first.backend_addr(0), "", 2, false);
    let farm2 = EchoFarm::start(second.backend_addr(0), "", 2, false);
    for p in [&first, &second] {
        assert!(
            eventually(T, || lines_with(p, "joined section") == 2),
            "{}",
            p.stderr_text()
        );
    }
    let (mut one, mut two) = (0, 0);
    for i in 0..200 {
        if one > 0 && two > 0 {
            break;
        }
        let r = get_once(first.client_addr(), "app.test", &format!("/s{i}"));
        assert_eq!(r.status, 200, "{r:?}");
        let backend = r.header("X-Backend").unwrap_or_default().to_string();
        if farm1.ids.contains(&backend) {
            one += 1;
        } else if farm2.ids.contains(&backend) {
            two += 1;
        } else {
            panic!("unknown backend {backend:?}");
        }
    }
    assert!(one > 0 && two > 0, "first served {one}, second {two}");
}

#[test]
fn without_reuseport_a_second_proxy_cannot_take_the_port() {
    let first = Proxy::start(&one_section("", ""));
    let addr = first.client_addr();
    for top in [
        format!("cluster_port: {}", addr.port()),
        // Both must ask for sharing: one that does cannot join one that
        // does not.
        format!("cluster_port: {}\nreuseport: true", addr.port()),
    ] {
        let e = match Proxy::try_start(&one_section(&top, "")) {
            Ok(_) => panic!("a second proxy took {addr} ({top})"),
            Err(e) => e,
        };
        assert!(
            e.contains(&format!("cannot listen on {addr} for clients"))
                && e.contains("already using that port")
                && e.contains("reuseport: true"),
            "{e}"
        );
    }
}
