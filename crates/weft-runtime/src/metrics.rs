//! What `GET /metrics` says, in the Prometheus text format.
//!
//! A handful of counters and one histogram, kept with atomics: the text
//! format is a few lines per metric, so it is written here rather than
//! through a metrics framework and its exporter.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use weft_store::RunState;

/// Upper bounds of the claim-latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// This node's counters.
#[derive(Default)]
pub struct Metrics {
    attempts_started: AtomicU64,
    attempts_failed: AtomicU64,
    attempts_interrupted: AtomicU64,
    claim_buckets: [AtomicU64; BUCKETS.len()],
    claim_count: AtomicU64,
    /// In microseconds.
    claim_sum_us: AtomicU64,
    fences: AtomicU64,
}

/// What the cluster and the node look like now, for one scrape.
pub struct Snapshot<'a> {
    pub node: &'a str,
    /// Runs by state, or why the store could not say.
    pub runs: Result<&'a [(RunState, u64)], String>,
    pub running_here: usize,
    pub holding_slots: usize,
    pub max_concurrent: usize,
    /// Attempts this node ran on a process started ahead of them.
    pub standby_attempts: u64,
    /// The node is fenced (it runs nothing until it has rejoined).
    pub fenced: bool,
    /// What the store takes, when it could say.
    pub stored_bytes: Option<u64>,
}

impl Metrics {
    /// An attempt started, `waited` after its run became pending.
    pub fn attempt_started(&self, waited: Duration) {
        self.attempts_started.fetch_add(1, Ordering::Relaxed);
        let secs = waited.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.claim_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.claim_count.fetch_add(1, Ordering::Relaxed);
        self.claim_sum_us
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }

    /// An attempt failed on its own (not an interruption).
    pub fn attempt_failed(&self) {
        self.attempts_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Attempts closed as interrupted (a crash, a node taken over).
    pub fn attempts_interrupted(&self, n: usize) {
        self.attempts_interrupted
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The node fenced itself.
    pub fn node_fenced(&self) {
        self.fences.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self, now: &Snapshot<'_>) -> String {
        let node = escape(now.node);
        let mut out = String::new();
        match &now.runs {
            Ok(runs) => {
                out.push_str(
                    "# HELP weft_runs Task runs in the store, by state (the whole cluster).\n# TYPE weft_runs gauge\n",
                );
                for state in RunState::ALL {
                    let n = runs
                        .iter()
                        .find(|(s, _)| *s == state)
                        .map_or(0, |(_, n)| *n);
                    let _ = writeln!(out, "weft_runs{{state=\"{state}\"}} {n}");
                }
                let name = "weft_pending_runs";
                let pending = runs
                    .iter()
                    .find(|(s, _)| *s == RunState::Pending)
                    .map_or(0, |(_, n)| *n);
                let _ = writeln!(
                    out,
                    "# HELP {name} Runs waiting for a slot anywhere in the cluster (the queue's depth).\n# TYPE {name} gauge\n{name}{{node=\"{node}\"}} {pending}"
                );
                if let Some(bytes) = now.stored_bytes {
                    let name = "weft_store_bytes";
                    let _ = writeln!(
                        out,
                        "# HELP {name} Bytes the store takes: every run's input, result and output until --retention prunes it (the whole cluster).\n# TYPE {name} gauge\n{name} {bytes}"
                    );
                }
            }
            // A comment: the scrape still has this node's own metrics.
            Err(why) => {
                let _ = writeln!(
                    out,
                    "# weft_runs and weft_pending_runs are left out: {}",
                    why.replace('\n', " ")
                );
            }
        }
        let gauges = [
            (
                "weft_node_running_attempts",
                "Attempts running on this node.",
                now.running_here as f64,
            ),
            (
                "weft_node_slots_used",
                "Attempts holding one of this node's --max-concurrent slots.",
                now.holding_slots as f64,
            ),
            (
                "weft_node_max_concurrent",
                "This node's --max-concurrent.",
                now.max_concurrent as f64,
            ),
            (
                "weft_node_fenced",
                "1 while this node is fenced: it lost its lease on the database, killed its task processes and runs nothing until it has rejoined.",
                f64::from(u8::from(now.fenced)),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{node=\"{node}\"}} {value}"
            );
        }
        let counters = [
            (
                "weft_attempts_started_total",
                "Attempts this node started.",
                &self.attempts_started,
            ),
            (
                "weft_attempts_failed_total",
                "Attempts on this node that failed on their own.",
                &self.attempts_failed,
            ),
            (
                "weft_attempts_interrupted_total",
                "Attempts this node closed as interrupted (its own restart, or nodes it took over).",
                &self.attempts_interrupted,
            ),
            (
                "weft_node_fenced_total",
                "Times this node fenced itself (it could not renew its lease on the database in time).",
                &self.fences,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{node=\"{node}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let name = "weft_standby_attempts_total";
        let _ = writeln!(
            out,
            "# HELP {name} Attempts this node ran on a task process started ahead of them (a standby).\n# TYPE {name} counter\n{name}{{node=\"{node}\"}} {}",
            now.standby_attempts
        );
        let name = "weft_claim_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From a run becoming pending to its attempt starting on this node.\n# TYPE {name} histogram"
        );
        for (bound, bucket) in BUCKETS.iter().zip(&self.claim_buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{node=\"{node}\",le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.claim_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{node=\"{node}\",le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{node=\"{node}\"}} {}",
            self.claim_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{node=\"{node}\"}} {count}");
        out
    }
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_every_metric_with_its_node() {
        let m = Metrics::default();
        m.attempt_started(Duration::from_millis(3));
        m.attempt_started(Duration::from_secs(20));
        m.attempt_failed();
        let text = m.render(&Snapshot {
            node: "n\"1",
            runs: Ok(&[(RunState::Pending, 4), (RunState::Completed, 7)]),
            running_here: 2,
            holding_slots: 1,
            max_concurrent: 8,
            standby_attempts: 5,
            fenced: false,
            stored_bytes: Some(4096),
        });
        for line in [
            "weft_runs{state=\"pending\"} 4",
            "weft_runs{state=\"completed\"} 7",
            "weft_runs{state=\"failed\"} 0",
            "weft_store_bytes 4096",
            "weft_pending_runs{node=\"n\\\"1\"} 4",
            "weft_node_running_attempts{node=\"n\\\"1\"} 2",
            "weft_attempts_started_total{node=\"n\\\"1\"} 2",
            "weft_attempts_failed_total{node=\"n\\\"1\"} 1",
            "weft_standby_attempts_total{node=\"n\\\"1\"} 5",
            "weft_claim_latency_seconds_bucket{node=\"n\\\"1\",le=\"0.0025\"} 0",
            "weft_claim_latency_seconds_bucket{node=\"n\\\"1\",le=\"0.005\"} 1",
            "weft_claim_latency_seconds_bucket{node=\"n\\\"1\",le=\"10\"} 1",
            "weft_claim_latency_seconds_bucket{node=\"n\\\"1\",le=\"+Inf\"} 2",
            "weft_claim_latency_seconds_count{node=\"n\\\"1\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        assert!(text.contains("# TYPE weft_claim_latency_seconds histogram"));
        assert!(
            text.lines()
                .any(|l| l == "weft_node_fenced{node=\"n\\\"1\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn a_fenced_node_says_so_without_its_database() {
        let m = Metrics::default();
        m.node_fenced();
        let text = m.render(&Snapshot {
            node: "n2",
            runs: Err("the database at postgres://weft@db/weft is unavailable:\nno answer".into()),
            running_here: 0,
            holding_slots: 0,
            max_concurrent: 2,
            standby_attempts: 0,
            fenced: true,
            stored_bytes: None,
        });
        for line in [
            "# weft_runs and weft_pending_runs are left out: the database at postgres://weft@db/weft is unavailable: no answer",
            "weft_node_fenced{node=\"n2\"} 1",
            "weft_node_fenced_total{node=\"n2\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        assert!(!text.contains("weft_runs{"), "{text}");
    }
}
