//! Watching the rules: `spend_over` over minute buckets fed by settled
//! records, `budget_forecast` on a timer.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use tollgate_budgets::{BudgetEngine, Event};
use tollgate_core::Money;
use tollgate_core::period::PeriodKind;
use tollgate_store::StoreError;
use tollgate_store::alerts::{NewAlert, SpendBy};

use crate::Shared;
use crate::fire::new_id;
use crate::rules::{Rule, RuleKind, RuleScope};

/// Subjects one rule keeps windows for at most; past it, the least
/// recently charged are forgotten (their spend is old news).
const MAX_SUBJECTS: usize = 100_000;

/// One subject's spend in a rule's window, by minute.
#[derive(Default)]
struct Series {
    minutes: VecDeque<(i64, Money)>,
    total: Money,
    /// When the rule last fired for this subject (read from the store the
    /// first time it matters).
    last_fire: Option<Option<Timestamp>>,
}

impl Series {
    fn add(&mut self, minute: i64, cost: Money, window_ms: i64) {
        match self.minutes.back_mut() {
            Some((m, c)) if *m == minute => *c += cost,
            _ => self.minutes.push_back((minute, cost)),
        }
        self.total += cost;
        self.age(minute, window_ms);
    }

    /// Drops the minutes that left the window ending at `minute`.
    fn age(&mut self, minute: i64, window_ms: i64) {
        while let Some(&(m, c)) = self.minutes.front() {
            if m > minute - window_ms {
                break;
            }
            self.total = self.total - c;
            self.minutes.pop_front();
        }
    }
}

fn by(scope: RuleScope) -> SpendBy {
    match scope {
        RuleScope::Global => SpendBy::All,
        RuleScope::Tenant => SpendBy::Tenant,
        RuleScope::User => SpendBy::User,
        RuleScope::Key => SpendBy::Key,
        RuleScope::Model => SpendBy::Model,
    }
}

struct Watched {
    rule: Rule,
    window_ms: i64,
    threshold: Money,
    series: HashMap<String, Series>,
}

/// The enabled `spend_over` rules, their windows restored from the store.
async fn restore(shared: &Shared) -> Result<Vec<Watched>, StoreError> {
    let now = shared.engine.now();
    let mut out = Vec::new();
    for rule in shared.rules().into_iter().filter(|r| r.enabled) {
        let RuleKind::SpendOver { window, threshold } = rule.kind else {
            continue;
        };
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let mut series: HashMap<String, Series> = HashMap::new();
        let mut rows = shared
            .store
            .spend_by_minute(by(rule.scope), now - window)
            .await?;
        rows.sort_by_key(|r| r.1);
        for (subject, minute, cost) in rows {
            series
                .entry(subject)
                .or_default()
                .add(minute, cost, window_ms);
        }
        out.push(Watched {
            rule,
            window_ms,
            threshold,
            series,
        });
    }
    Ok(out)
}

/// Follows settled records while any `spend_over` rule is enabled;
/// starts over (restoring from the store) when the rules change.
pub(crate) async fn spend(shared: Arc<Shared>) {
    loop {
        let changed = shared.rules_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let any = shared
            .rules()
            .iter()
            .any(|r| r.enabled && matches!(r.kind, RuleKind::SpendOver { .. }));
        if !any {
            changed.await;
            continue;
        }
        // Subscribed before restoring: a record settled meanwhile may be
        // counted twice (at worst an early alert), never missed.
        let mut rx = shared.engine.events.subscribe_lossless_to(true);
        let mut watched = match restore(&shared).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot restore alert rule windows; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                _ = &mut changed => break,
                p = rx.recv() => {
                    let Some(p) = p else { return };
                    let Event::Settled { record } = &p.event else { continue };
                    if record.cost <= Money::ZERO {
                        continue;
                    }
                    for w in &mut watched {
                        if let Err(e) = charge(&shared, w, record).await {
                            tracing::error!(error = %e, rule = %w.rule.id, "cannot record a rule alert");
                        }
                    }
                }
            }
        }
    }
}

async fn charge(
    shared: &Shared,
    w: &mut Watched,
    r: &tollgate_core::UsageRecord,
) -> Result<(), StoreError> {
    let Some(subject) = w.rule.scope.subject_of(r) else {
        return Ok(());
    };
    let minute = r.time.as_millisecond().div_euclid(60_000) * 60_000;
    if w.series.len() >= MAX_SUBJECTS && !w.series.contains_key(&subject) {
        forget_oldest(&mut w.series);
    }
    let s = w.series.entry(subject.clone()).or_default();
    s.add(minute, r.cost, w.window_ms);
    if s.total <= w.threshold {
        return Ok(());
    }
    let now = shared.engine.now();
    let last = match s.last_fire {
        Some(l) => l,
        None => shared.store.last_rule_alert(&w.rule.id, &subject).await?,
    };
    s.last_fire = Some(last);
    if last.is_some_and(|l| now.duration_since(l) < w.rule.cooldown) {
        return Ok(());
    }
    let value = s.total;
    s.last_fire = Some(Some(now));
    let id = new_id("alt");
    let RuleKind::SpendOver { window, threshold } = w.rule.kind else {
        return Ok(());
    };
    let body = json!({
        "id": id,
        "type": "rule.fired",
        "time": now.to_string(),
        "severity": w.rule.severity,
        "rule": {
            "id": w.rule.id,
            "kind": "spend_over",
            "window": w.rule.to_input().window,
            "threshold_usd": threshold.to_string(),
            "scope": w.rule.scope.as_str(),
            "subject": subject,
        },
        "value_usd": value.to_string(),
        "window_start": (now - window).to_string(),
    });
    record(
        shared,
        id,
        "rule.fired",
        w.rule.severity,
        None,
        &w.rule.id,
        &subject,
        now,
        body,
    )
    .await
}

fn forget_oldest(series: &mut HashMap<String, Series>) {
    let mut lasts: Vec<(i64, String)> = series
        .iter()
        .map(|(k, s)| (s.minutes.back().map_or(i64::MIN, |m| m.0), k.clone()))
        .collect();
    lasts.sort_unstable();
    for (_, k) in lasts.into_iter().take(MAX_SUBJECTS / 10) {
        series.remove(&k);
    }
}

#[allow(clippy::too_many_arguments)]
async fn record(
    shared: &Shared,
    id: String,
    kind: &str,
    severity: &str,
    budget_id: Option<String>,
    rule_id: &str,
    subject: &str,
    now: Timestamp,
    body: serde_json::Value,
) -> Result<(), StoreError> {
    let alert = NewAlert {
        dedupe: format!("{kind}|{rule_id}|{subject}|{}", now.as_millisecond()),
        id,
        kind: kind.into(),
        severity: severity.into(),
        budget_id,
        rule_id: Some(rule_id.into()),
        subject: Some(subject.into()),
        created_at: now,
        payload: body.to_string(),
    };
    let deliveries = crate::fire::webhook_targets(shared, kind);
    let queued = crate::fire::enqueue(shared);
    shared
        .store
        .insert_alert(&alert, &deliveries, queued)
        .await?;
    tracing::info!(alert = %alert.id, kind, rule = rule_id, subject, "alert");
    shared.wake.notify_one();
    Ok(())
}

/// Runs the forecast rules every `alerts.forecast_every_seconds`.
pub(crate) async fn forecasts(shared: Arc<Shared>) {
    let every = std::time::Duration::from_secs(shared.config.forecast_every_seconds.max(1));
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = forecast_now(&shared).await {
            tracing::warn!(error = %e, "budget forecasts failed; retrying at the next round");
        }
    }
}

/// The time `left` lasts at `spent` per `over`: `None` when nothing was
/// spent (it never runs out at that rate).
fn lasts(left: i128, spent: i128, over: SignedDuration) -> Option<SignedDuration> {
    if spent <= 0 {
        return None;
    }
    let ms = left.max(0).saturating_mul(over.as_millis()) / spent;
    Some(SignedDuration::from_millis(
        i64::try_from(ms).unwrap_or(i64::MAX),
    ))
}

/// One round of every enabled forecast rule over every calendar budget
/// that spent within the rule's lookback.
pub(crate) async fn forecast_now(shared: &Shared) -> Result<usize, StoreError> {
    let mut fired = 0;
    let now = shared.engine.now();
    for rule in shared.rules().into_iter().filter(|r| r.enabled) {
        let RuleKind::BudgetForecast { lookback, lead } = rule.kind else {
            continue;
        };
        let set = shared.engine.entries();
        for e in set.iter() {
            let b = e.budget.clone();
            if matches!(b.period, PeriodKind::Lifetime | PeriodKind::Rolling(_)) {
                continue;
            }
            let Some(field) = BudgetEngine::subject_of(&b) else {
                continue;
            };
            let recent = shared
                .store
                .budget_spend(&b.id, field, now - lookback)
                .await?;
            for (subject, spent) in recent {
                let a = shared.engine.applied(b.clone(), subject.clone(), now).await;
                let Some(resets) = a.resets_at else { continue };
                let st = shared.engine.state(&a).await;
                if st.status == "over_limit" {
                    continue;
                }
                // Spend of the lookback that fell in this period only.
                let since = (now - lookback).max(a.period.start);
                let span = now.duration_since(since);
                let money = st
                    .limit
                    .money
                    .and_then(|l| lasts((l - st.spent.money).units(), spent.money.units(), span));
                let tokens = st.limit.tokens.and_then(|l| {
                    lasts(
                        i128::from(l.saturating_sub(st.spent.tokens)),
                        i128::from(spent.tokens),
                        span,
                    )
                });
                let Some(runs_out) = money.into_iter().chain(tokens).min() else {
                    continue;
                };
                let exhausted_at = now + runs_out;
                if exhausted_at + lead >= resets {
                    continue;
                }
                let who = format!("{}/{}", b.id, subject);
                if shared
                    .store
                    .last_rule_alert(&rule.id, &who)
                    .await?
                    .is_some_and(|l| now.duration_since(l) < rule.cooldown)
                {
                    continue;
                }
                let id = new_id("alt");
                let breakdown = tollgate_store::Breakdown::default();
                let facts = crate::payload::BudgetFacts {
                    applied: &a,
                    state: &st,
                    breakdown: &breakdown,
                };
                let mut body = crate::payload::budget_body(
                    &id,
                    "budget.forecast",
                    now,
                    rule.severity,
                    &facts,
                    None,
                    None,
                );
                body["rule"] = json!({
                    "id": rule.id,
                    "kind": "budget_forecast",
                    "lookback": rule.to_input().lookback,
                    "lead": rule.to_input().lead,
                });
                body["projected_exhaustion_at"] = json!(exhausted_at.to_string());
                body["recent_spend_usd"] = json!(spent.money.to_string());
                record(
                    shared,
                    id,
                    "budget.forecast",
                    rule.severity,
                    Some(b.id.clone()),
                    &rule.id,
                    &who,
                    now,
                    body,
                )
                .await?;
                fired += 1;
            }
        }
    }
    Ok(fired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_windows_age_out() {
        let mut s = Series::default();
        let m = 60_000;
        let w = 60 * m;
        s.add(0, Money::from_units(5), w);
        s.add(10 * m, Money::from_units(7), w);
        s.add(10 * m, Money::from_units(1), w);
        assert_eq!(s.total, Money::from_units(13));
        assert_eq!(s.minutes.len(), 2);
        s.add(60 * m, Money::from_units(2), w);
        assert_eq!(s.total, Money::from_units(10), "minute 0 left the hour");
        s.add(200 * m, Money::ZERO, w);
        assert_eq!(s.total, Money::ZERO);
    }

    #[test]
    fn runway_is_exact_and_none_without_spend() {
        let h = SignedDuration::from_hours(6);
        assert_eq!(lasts(100, 50, h), Some(SignedDuration::from_hours(12)));
        assert_eq!(lasts(0, 50, h), Some(SignedDuration::ZERO));
        assert_eq!(lasts(100, 0, h), None);
    }
}
