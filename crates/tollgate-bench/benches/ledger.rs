//! The in-memory ledger alone: reserve + commit on 1, 3 and 10 budgets from
//! one thread, and on 3 shared budgets from several threads at once.
//!
//! `cargo bench -p tollgate-bench --bench ledger`

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tollgate_core::Money;
use tollgate_core::ledger::{Amount, CounterKey, Limit, Line, ShardedLedger, Sizing, Window};

fn lines(n: usize) -> Vec<Line> {
    (0..n)
        .map(|i| Line {
            charge: CounterKey::period(CounterKey::group(&format!("b{i}"), "s"), 0),
            window: Window::Period,
            limit: Limit {
                money: Some(Money::from_usd(1_000_000_000)),
                tokens: None,
            },
            enforce: true,
        })
        .collect()
}

fn reserve_commit(l: &ShardedLedger, lines: &[Line], id: &str) {
    let now = jiff::Timestamp::now();
    let _ = l.reserve_capped(
        id,
        lines,
        &Sizing {
            base: Amount::new(Money::from_units(1_000), 10),
            per_unit: Amount::new(Money::from_units(10), 1),
            want: 128,
            min: 16,
        },
        now,
    );
    l.commit(id, Amount::new(Money::from_units(500), 50), now);
}

fn one_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("reserve+commit, one thread");
    for n in [1usize, 3, 10] {
        let l = ShardedLedger::default();
        let lines = lines(n);
        let next = AtomicU64::new(0);
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{n} budgets")),
            &n,
            |b, _| {
                b.iter(|| {
                    let id = next.fetch_add(1, Ordering::Relaxed).to_string();
                    reserve_commit(&l, &lines, &id);
                })
            },
        );
    }
    g.finish();
}

/// Wall-clock time per operation with `threads` threads on the same three
/// budgets: the cost of contention on the shards they share.
fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("reserve+commit, 3 shared budgets");
    for threads in [2usize, 4] {
        g.bench_function(format!("{threads} threads"), |b| {
            b.iter_custom(|iters| {
                let l = ShardedLedger::default();
                let lines = lines(3);
                let per = iters.div_ceil(threads as u64);
                let start = Instant::now();
                std::thread::scope(|s| {
                    for t in 0..threads {
                        let (l, lines) = (&l, &lines);
                        s.spawn(move || {
                            for i in 0..per {
                                reserve_commit(l, lines, &format!("{t}-{i}"));
                            }
                        });
                    }
                });
                // Wall clock for all `iters` operations: per operation, the
                // figure falls below one thread's only if threads overlap.
                start.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, one_thread, contended);
criterion_main!(benches);
