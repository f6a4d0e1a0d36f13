//! Counters of what this process settled, for Prometheus: every record
//! the engine settles is counted here, so the counters equal the records
//! written since the process started.
//!
//! Cheap on the hot path: a read-locked map lookup per record (a write
//! lock only the first time a provider, model and status meet), then
//! relaxed atomics; money in a per-row mutex, exact.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tollgate_core::{Money, UsageRecord};

/// Upper bounds of the request duration histogram, in milliseconds.
const DURATION_MS: [u64; 14] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
];

/// Token kinds, as the `kind` label says them, in `Usage` order.
const KINDS: [&str; 6] = [
    "input",
    "output",
    "cached_input",
    "cache_write_5m",
    "cache_write_1h",
    "reasoning",
];

#[derive(Default)]
struct Row {
    requests: AtomicU64,
    tokens: [AtomicU64; 6],
    cost: Mutex<Money>,
}

#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; DURATION_MS.len() + 1],
    sum_ms: AtomicU64,
}

impl Histogram {
    fn observe(&self, ms: u64) {
        let i = DURATION_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(DURATION_MS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str) {
        let mut cum = 0u64;
        for (i, b) in DURATION_MS.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cum}", *b as f64 / 1000.0);
        }
        cum += self.counts[DURATION_MS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let sum = self.sum_ms.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_sum {}.{:03}", sum / 1000, sum % 1000);
        let _ = writeln!(out, "{name}_count {cum}");
    }
}

type RowKey = (Arc<str>, Arc<str>, u16);

/// (provider, model), tokens by kind, cost.
type ModelTotals = ((Arc<str>, Arc<str>), [u64; 6], Money);

#[derive(Default)]
pub struct RecordMetrics {
    rows: RwLock<HashMap<RowKey, Arc<Row>>>,
    refusals: RwLock<HashMap<&'static str, Arc<AtomicU64>>>,
    duration: Histogram,
}

/// A label value in the text format: `\`, `"` and newlines escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl RecordMetrics {
    /// Counts one settled record.
    pub fn observe(&self, r: &UsageRecord) {
        let row = {
            let rows = self.rows.read().unwrap_or_else(|e| e.into_inner());
            rows.iter()
                .find(|((p, m, s), _)| {
                    **p == *r.provider && **m == *r.model_served && *s == r.status
                })
                .map(|(_, row)| row.clone())
        };
        // The map is keyed by a few providers × models × statuses; a scan
        // of the borrowed keys avoids allocating a key per request.
        let row = row.unwrap_or_else(|| {
            let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
            rows.entry((
                r.provider.as_str().into(),
                r.model_served.as_str().into(),
                r.status,
            ))
            .or_default()
            .clone()
        });
        row.requests.fetch_add(1, Ordering::Relaxed);
        let u = &r.usage;
        for (i, n) in [
            u.input_tokens,
            u.output_tokens,
            u.cached_input_tokens,
            u.cache_write_5m_tokens,
            u.cache_write_1h_tokens,
            u.reasoning_tokens,
        ]
        .into_iter()
        .enumerate()
        {
            if n > 0 {
                row.tokens[i].fetch_add(n, Ordering::Relaxed);
            }
        }
        if r.cost != Money::ZERO {
            *row.cost.lock().unwrap_or_else(|e| e.into_inner()) += r.cost;
        }
        if r.flags.blocked {
            self.refused("budget_exceeded");
        } else {
            self.duration.observe(r.latency_ms);
        }
    }

    /// Refusals since start by reason, in reason order.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        let mut refusals: Vec<(&'static str, u64)> = self
            .refusals
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (*k, v.load(Ordering::Relaxed)))
            .collect();
        refusals.sort_unstable();
        refusals
    }

    /// Counts a refusal by its error code.
    pub fn refused(&self, reason: &'static str) {
        let c = self
            .refusals
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(reason)
            .cloned();
        let c = c.unwrap_or_else(|| {
            self.refusals
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(reason)
                .or_default()
                .clone()
        });
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self, out: &mut String) {
        let rows: Vec<(RowKey, Arc<Row>)> = {
            let mut v: Vec<_> = self
                .rows
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(k, r)| (k.clone(), r.clone()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        out.push_str("# HELP tollgate_requests_total Requests recorded, by provider, model served and status (refusals included).\n");
        out.push_str("# TYPE tollgate_requests_total counter\n");
        for ((p, m, s), r) in &rows {
            let _ = writeln!(
                out,
                "tollgate_requests_total{{provider=\"{}\",model=\"{}\",status=\"{s}\"}} {}",
                label(p),
                label(m),
                r.requests.load(Ordering::Relaxed)
            );
        }
        // Tokens and cost per provider and model, statuses summed.
        let mut per_model: Vec<ModelTotals> = Vec::new();
        for ((p, m, _), r) in &rows {
            let tokens: Vec<u64> = r.tokens.iter().map(|t| t.load(Ordering::Relaxed)).collect();
            let cost = *r.cost.lock().unwrap_or_else(|e| e.into_inner());
            match per_model
                .iter_mut()
                .find(|(k, _, _)| k.0 == *p && k.1 == *m)
            {
                Some((_, t, c)) => {
                    for (a, b) in t.iter_mut().zip(&tokens) {
                        *a += b;
                    }
                    *c += cost;
                }
                None => {
                    let mut t = [0u64; 6];
                    t.copy_from_slice(&tokens);
                    per_model.push(((p.clone(), m.clone()), t, cost));
                }
            }
        }
        out.push_str(
            "# HELP tollgate_tokens_total Tokens recorded, by provider, model served and kind.\n",
        );
        out.push_str("# TYPE tollgate_tokens_total counter\n");
        for ((p, m), t, _) in &per_model {
            for (kind, n) in KINDS.iter().zip(t) {
                let _ = writeln!(
                    out,
                    "tollgate_tokens_total{{provider=\"{}\",model=\"{}\",kind=\"{kind}\"}} {n}",
                    label(p),
                    label(m)
                );
            }
        }
        out.push_str("# HELP tollgate_cost_usd_total Cost recorded in USD (exact decimal), by provider and model served.\n");
        out.push_str("# TYPE tollgate_cost_usd_total counter\n");
        for ((p, m), _, c) in &per_model {
            let _ = writeln!(
                out,
                "tollgate_cost_usd_total{{provider=\"{}\",model=\"{}\"}} {}",
                label(p),
                label(m),
                c.to_usd_string()
            );
        }
        out.push_str(
            "# HELP tollgate_refusals_total Requests refused, by reason (the error code).\n",
        );
        out.push_str("# TYPE tollgate_refusals_total counter\n");
        for (reason, n) in self.refusals() {
            let _ = writeln!(out, "tollgate_refusals_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str("# HELP tollgate_request_duration_seconds Time from request to its last byte, for requests served.\n");
        out.push_str("# TYPE tollgate_request_duration_seconds histogram\n");
        self.duration
            .render(out, "tollgate_request_duration_seconds");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        for ms in [1, 7, 7, 400, 999_999] {
            h.observe(ms);
        }
        let mut out = String::new();
        h.render(&mut out, "d");
        assert!(out.contains("d_bucket{le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("d_bucket{le=\"0.01\"} 3\n"), "{out}");
        assert!(out.contains("d_bucket{le=\"0.5\"} 4\n"), "{out}");
        assert!(out.contains("d_bucket{le=\"+Inf\"} 5\n"), "{out}");
        assert!(
            out.contains("d_count 5\n") && out.contains("d_sum 1000.414\n"),
            "{out}"
        );
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
