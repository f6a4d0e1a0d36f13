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

/// Upper bounds of the request duration histogram, in microseconds.
const DURATION_US: [u64; 14] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
];

/// Upper bounds of the overhead histogram (Tollgate's own time on a
/// forwarded request), in microseconds: from 50 µs to a second.
const OVERHEAD_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 250_000, 1_000_000,
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

/// A histogram of durations in microseconds over fixed bounds (`N`
/// bounds, `N + 1` counts: the last is beyond every bound).
struct Histogram<const N: usize> {
    bounds: &'static [u64; N],
    counts: [AtomicU64; N],
    beyond: AtomicU64,
    sum_us: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: &'static [u64; N]) -> Self {
        Histogram {
            bounds,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            beyond: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    fn observe(&self, us: u64) {
        match self.bounds.iter().position(|&b| us <= b) {
            Some(i) => self.counts[i].fetch_add(1, Ordering::Relaxed),
            None => self.beyond.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str) {
        let mut cum = 0u64;
        for (c, b) in self.counts.iter().zip(self.bounds) {
            cum += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cum}", seconds(*b));
        }
        cum += self.beyond.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            seconds(self.sum_us.load(Ordering::Relaxed))
        );
        let _ = writeln!(out, "{name}_count {cum}");
    }
}

/// Microseconds as decimal seconds, exactly (`1500` → `0.0015`).
fn seconds(us: u64) -> String {
    let frac = us % 1_000_000;
    if frac == 0 {
        return (us / 1_000_000).to_string();
    }
    let digits = format!("{frac:06}");
    format!("{}.{}", us / 1_000_000, digits.trim_end_matches('0'))
}

type RowKey = (Arc<str>, Arc<str>, u16);

/// Most (provider, model, status) series kept apart: model names reach
/// here from callers (a glob route admits any matching name, a Cycles
/// action names itself), so past this many, new ones are counted under
/// the model `other` — `/metrics` and this map stay bounded.
const MAX_ROWS: usize = 2_000;

/// (provider, model), tokens by kind, cost.
type ModelTotals = ((Arc<str>, Arc<str>), [u64; 6], Money);

pub struct RecordMetrics {
    rows: RwLock<HashMap<RowKey, Arc<Row>>>,
    refusals: RwLock<HashMap<&'static str, Arc<AtomicU64>>>,
    duration: Histogram<{ DURATION_US.len() }>,
    overhead: Histogram<{ OVERHEAD_US.len() }>,
}

impl Default for RecordMetrics {
    fn default() -> Self {
        RecordMetrics {
            rows: RwLock::default(),
            refusals: RwLock::default(),
            duration: Histogram::new(&DURATION_US),
            overhead: Histogram::new(&OVERHEAD_US),
        }
    }
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
            let model = if rows.len() >= MAX_ROWS {
                "other"
            } else {
                r.model_served.as_str()
            };
            rows.entry((r.provider.as_str().into(), model.into(), r.status))
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
            self.duration.observe(r.latency_ms.saturating_mul(1000));
        }
    }

    /// Counts Tollgate's own time on a forwarded request: its whole time
    /// less the time spent waiting on the upstream.
    pub fn overhead(&self, d: std::time::Duration) {
        self.overhead
            .observe(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
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
        out.push_str("# HELP tollgate_overhead_seconds Time Tollgate adds to a forwarded request: its whole time less the upstream's.\n");
        out.push_str("# TYPE tollgate_overhead_seconds histogram\n");
        self.overhead.render(out, "tollgate_overhead_seconds");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&DURATION_US);
        for ms in [1, 7, 7, 400, 999_999] {
            h.observe(ms * 1000);
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
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(50), "0.00005");
        assert_eq!(seconds(1_500), "0.0015");
        assert_eq!(seconds(2_000_000), "2");
        assert_eq!(seconds(1_000_414_000), "1000.414");
    }

    #[test]
    fn series_stay_bounded_whatever_models_callers_name() {
        let m = RecordMetrics::default();
        let mut r = UsageRecord {
            request_id: "r".into(),
            time: jiff::Timestamp::UNIX_EPOCH,
            key_id: None,
            user: None,
            tenant: None,
            session: None,
            budgets: Vec::new(),
            provider: "cycles".into(),
            model_requested: String::new(),
            model_served: String::new(),
            usage: Default::default(),
            cost: Money::ZERO,
            latency_ms: 1,
            ttft_ms: None,
            status: 200,
            flags: Default::default(),
        };
        for i in 0..MAX_ROWS + 500 {
            r.model_served = format!("tool-{i}");
            m.observe(&r);
        }
        let rows = m.rows.read().unwrap();
        assert_eq!(rows.len(), MAX_ROWS + 1);
        let other = rows
            .iter()
            .find(|((_, model, _), _)| &**model == "other")
            .map(|(_, row)| row.requests.load(Ordering::Relaxed));
        assert_eq!(other, Some(500));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
