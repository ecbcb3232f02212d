#!/usr/bin/env python3
"""Plants known bugs in src/dispatch.rs, one at a time, and checks that the
deterministic simulation (tests/simulation.rs) catches each.

Run by hand from the repository root: python3 tests/simulation/plant_bugs.py
It restores src/dispatch.rs afterwards, whatever happens, and exits 1 if a
planted bug went unnoticed (or no longer applies to the code).
"""
import subprocess
import sys

PATH = "src/dispatch.rs"
SEEDS = 100

BUGS = {
    "new requests served before retries": ("self.retries.pop_front().or_else(|| self.new.pop_front())","self.new.pop_front().or_else(|| self.retries.pop_front())"),
    "next_deadline forgets retries": ("        r.into_iter().chain(n).min()\n","        let _ = r; n\n"),
    "a closed idle backend stays in its queue": ("                q.idle.remove(i);\n                true","                let _ = i;\n                true"),
    "a client leaving the queue is not counted out": ("        if removed {\n            self.waiting -= 1;\n        }","        let _ = removed;"),
    "a retired section keeps idle backends": ("        if retired {\n            return Freed::Close;\n        }",""),
    "a request expires one tick late": ("Some(w) if w.since + timeout <= now","Some(w) if w.since + timeout < now"),
    "a reload appends queues instead of merging them": ("    let mine = std::mem::take(into);","    into.extend(from);\n    return;\n    #[allow(unreachable_code)]\n    let mine = std::mem::take(into);"),
    "one redeploy too many": ("redeploys < MAX_REDEPLOYS {","redeploys <= MAX_REDEPLOYS {"),
    "a retry waits behind new requests": ("            Class::Retry => &mut self.retries,\n            Class::New => &mut self.new,","            Class::Retry | Class::New => &mut self.new,"),
    "the backend idle the shortest is taken": ("        if let Some(b) = q.idle.pop_front() {","        if let Some(b) = q.idle.pop_back() {"),
    "a reload keeps an idle backend whose address is gone": ("                    Some(j) if j < live => self.sections[j].idle.push_back(b),","                    Some(j) if j < live => self.sections[j].idle.push_back(b),\n                    None if i < live => self.sections[i].idle.push_back(b),"),
    "a reload keeps the old timeout": ("        self.timeout = timeout;\n",""),
    "a retry that leaves stays queued": ("        for q in [&mut self.retries, &mut self.new] {","        for q in [&mut self.new] {"),
    "new requests of one instant served last first": ("        q.push_back(w);\n", "        match q.back().copied() {\n            Some(last) if last.since == w.since => {\n                q.pop_back();\n                q.push_back(w);\n                q.push_back(last);\n            }\n            _ => q.push_back(w),\n        }\n"),
    "a merge puts the other queue first on a tie": ("(Some(x), Some(y)) => x.since <= y.since,", "(Some(x), Some(y)) => x.since < y.since,"),
    "a reload reverses idle backends": ("Some(j) if j < live => self.sections[j].idle.push_back(b),", "Some(j) if j < live => self.sections[j].idle.push_front(b),"),
    "a request not kept whole is retried": ("} else if redeployable && retained && redeploys < MAX_REDEPLOYS {", "} else if redeployable && redeploys < MAX_REDEPLOYS {"),
    "a request is retried after its response started": ("    if started {\n        AfterFailure::Cut", "    if started && !redeployable {\n        AfterFailure::Cut"),
    "retired sections never expire": ("        for (section, q) in self.sections.iter_mut().enumerate() {\n            if let Some(w) = q.waiting.pop_expired", "        for (section, q) in self.sections.iter_mut().enumerate().take(self.live) {\n            if let Some(w) = q.waiting.pop_expired"),
}


def main():
    original = open(PATH).read()
    missed = 0
    try:
        for name, (good, bad) in BUGS.items():
            if original.count(good) != 1:
                print(f"{name}: the code it changes is gone; update this script")
                missed += 1
                continue
            open(PATH, "w").write(original.replace(good, bad))
            run = subprocess.run(
                f"SIM_SEEDS={SEEDS} cargo test -q --test simulation dispatch_keeps 2>&1",
                shell=True, capture_output=True, text=True)
            caught = [l for l in run.stdout.splitlines() if l.startswith("seed ")]
            if caught:
                print(f"{name}: caught: {caught[0][:200]}")
            else:
                print(f"{name}: MISSED")
                missed += 1
    finally:
        open(PATH, "w").write(original)
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
