//! What was measured, per scenario, metric and target, over the rounds; and
//! the final table: median, min–max, the number of samples, and the ratio
//! Swiftiply ÷ target on each peer's row. A target whose run reported
//! errors (wrk's non-2xx responses or socket errors, a failed measurement,
//! fewer idle connections than asked) is marked `!` and the details are
//! listed under the table.

use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    Small,
    Large,
    Idle,
    Queue,
    Cost,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Small,
        Scenario::Large,
        Scenario::Idle,
        Scenario::Queue,
        Scenario::Cost,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Small => "small",
            Scenario::Large => "large",
            Scenario::Idle => "idle",
            Scenario::Queue => "queue",
            Scenario::Cost => "cost",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Direct,
    Swiftiply,
    Haproxy,
    HaproxySplice,
    Nginx,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Swiftiply => "swiftiply",
            Target::Haproxy => "haproxy",
            Target::HaproxySplice => "haproxy-splice",
            Target::Nginx => "nginx",
        }
    }
}

pub struct Metric {
    pub label: &'static str,
    pub higher_is_better: bool,
    pub decimals: usize,
    /// Whether Swiftiply ÷ target means anything for it.
    pub ratio: bool,
}

pub const REQUESTS_PER_SEC: Metric = Metric {
    label: "requests/s",
    higher_is_better: true,
    decimals: 0,
    ratio: true,
};
pub const P50_MS: Metric = Metric {
    label: "p50 latency, ms",
    higher_is_better: false,
    decimals: 3,
    ratio: true,
};
pub const P99_MS: Metric = Metric {
    label: "p99 latency, ms",
    higher_is_better: false,
    decimals: 3,
    ratio: true,
};
pub const CPU_US_PER_REQUEST: Metric = Metric {
    label: "proxy CPU time per request, µs (user + system, from /proc; the cost that \
            decides throughput once the proxy's CPU is the bottleneck)",
    higher_is_better: false,
    decimals: 2,
    ratio: true,
};
pub const GB_PER_SEC: Metric = Metric {
    label: "GB/s (10^9 bytes/s, wrk's Transfer/sec)",
    higher_is_better: true,
    decimals: 3,
    ratio: true,
};
pub const IDLE_BYTES: Metric = Metric {
    label: "RSS per idle connection, bytes",
    higher_is_better: false,
    decimals: 0,
    ratio: true,
};
pub const IDLE_HELD: Metric = Metric {
    label: "idle connections held",
    higher_is_better: true,
    decimals: 0,
    ratio: false,
};
pub const ALLOCS: Metric = Metric {
    label: "heap allocations per request (reactor thread)",
    higher_is_better: false,
    decimals: 3,
    ratio: true,
};
pub const ALLOC_BYTES: Metric = Metric {
    label: "bytes allocated per request (reactor thread)",
    higher_is_better: false,
    decimals: 1,
    ratio: true,
};
pub const INSTRUCTIONS: Metric = Metric {
    label: "instructions per request (callgrind)",
    higher_is_better: false,
    decimals: 0,
    ratio: true,
};

struct Row {
    scenario: Scenario,
    metric: &'static Metric,
    target: Target,
    values: Vec<f64>,
}

#[derive(Default)]
pub struct Results {
    titles: Vec<(Scenario, String)>,
    rows: Vec<Row>,
    /// (scenario, target, what went wrong).
    problems: Vec<(Scenario, Target, String)>,
    /// Lines printed under a scenario's rows (derived ratios, notes).
    notes: Vec<(Scenario, String)>,
}

impl Results {
    pub fn title(&mut self, scenario: Scenario, title: String) {
        self.titles.retain(|(s, _)| *s != scenario);
        self.titles.push((scenario, title));
    }

    pub fn add(&mut self, scenario: Scenario, metric: &'static Metric, target: Target, v: f64) {
        match self.rows.iter_mut().find(|r| {
            r.scenario == scenario && std::ptr::eq(r.metric, metric) && r.target == target
        }) {
            Some(row) => row.values.push(v),
            None => self.rows.push(Row {
                scenario,
                metric,
                target,
                values: vec![v],
            }),
        }
    }

    pub fn problem(&mut self, scenario: Scenario, target: Target, what: String) {
        self.problems.push((scenario, target, what));
    }

    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }

    pub fn note(&mut self, scenario: Scenario, line: String) {
        self.notes.push((scenario, line));
    }

    pub fn median(
        &self,
        scenario: Scenario,
        metric: &'static Metric,
        target: Target,
    ) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| {
                r.scenario == scenario && std::ptr::eq(r.metric, metric) && r.target == target
            })
            .map(|r| Stats::of(&r.values).median)
    }

    fn flagged(&self, scenario: Scenario, target: Target) -> bool {
        self.problems
            .iter()
            .any(|(s, t, _)| *s == scenario && *t == target)
    }

    /// The table, as text.
    pub fn table(&self) -> String {
        let mut lines: Vec<Line> = Vec::new();
        let mut scenarios: Vec<Scenario> = self.rows.iter().map(|r| r.scenario).collect();
        scenarios.extend(self.problems.iter().map(|p| p.0));
        scenarios.sort();
        scenarios.dedup();
        for scenario in scenarios {
            let title = self
                .titles
                .iter()
                .find(|(s, _)| *s == scenario)
                .map_or(scenario.name().to_string(), |(_, t)| t.clone());
            lines.push(Line::Heading(format!("{}: {title}", scenario.name())));
            let mut metrics: Vec<&'static Metric> = Vec::new();
            for r in self.rows.iter().filter(|r| r.scenario == scenario) {
                if !metrics.iter().any(|m| std::ptr::eq(*m, r.metric)) {
                    metrics.push(r.metric);
                }
            }
            for metric in metrics {
                let better = if !metric.ratio {
                    "no ratio"
                } else if metric.higher_is_better {
                    "higher is better; a ratio over 1 favours swiftiply"
                } else {
                    "lower is better; a ratio under 1 favours swiftiply"
                };
                lines.push(Line::Heading(format!("  {} ({better})", metric.label)));
                let mut rows: Vec<&Row> = self
                    .rows
                    .iter()
                    .filter(|r| r.scenario == scenario && std::ptr::eq(r.metric, metric))
                    .collect();
                rows.sort_by_key(|r| r.target);
                let ours = self.median(scenario, metric, Target::Swiftiply);
                for r in rows {
                    let st = Stats::of(&r.values);
                    let d = metric.decimals;
                    let ratio = match (r.target, ours) {
                        (Target::Swiftiply, _) | (_, None) => String::new(),
                        _ if !metric.ratio => String::new(),
                        (_, Some(o)) if st.median != 0.0 => format!("{:.2}", o / st.median),
                        _ => "n/a".into(),
                    };
                    let mark = if self.flagged(scenario, r.target) {
                        " !"
                    } else {
                        ""
                    };
                    lines.push(Line::Cells([
                        format!("    {}{mark}", r.target.name()),
                        number(st.median, d),
                        format!("{} – {}", number(st.min, d), number(st.max, d)),
                        r.values.len().to_string(),
                        ratio,
                    ]));
                }
            }
            for (_, note) in self.notes.iter().filter(|(s, _)| *s == scenario) {
                lines.push(Line::Heading(format!("  {note}")));
            }
        }
        let header = [
            "scenario / metric / target".to_string(),
            "median".into(),
            "min – max".into(),
            "n".into(),
            "swiftiply ÷ target".into(),
        ];
        let mut widths = header.clone().map(|h| h.chars().count());
        for l in &lines {
            if let Line::Cells(c) = l {
                for (w, cell) in widths.iter_mut().zip(c) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let row = |cells: &[String; 5], out: &mut String| {
            let mut text = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                let pad = w.saturating_sub(cell.chars().count());
                if i == 0 {
                    let _ = write!(text, "{cell}{}", " ".repeat(pad));
                } else {
                    let _ = write!(text, "  {}{cell}", " ".repeat(pad));
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        row(&header, &mut out);
        for l in &lines {
            match l {
                Line::Heading(h) => {
                    let _ = writeln!(out, "{h}");
                }
                Line::Cells(c) => row(c, &mut out),
            }
        }
        if !self.problems.is_empty() {
            let _ = writeln!(
                out,
                "\n! problems (results marked ! include runs with errors):"
            );
            for (s, t, what) in &self.problems {
                let _ = writeln!(out, "  {} / {}: {what}", s.name(), t.name());
            }
        }
        out
    }
}

enum Line {
    Heading(String),
    Cells([String; 5]),
}

pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(values: &[f64]) -> Stats {
        let mut v: Vec<f64> = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Stats {
            median,
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// `decimals` places; thousands separated by commas when there are none.
pub fn number(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if decimals > 0 {
        return format!("{v:.decimals$}");
    }
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 && s != "0" {
        out.insert(0, '-');
    }
    out
}
