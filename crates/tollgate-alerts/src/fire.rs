//! Events → alerts, each recorded once.

use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tollgate_budgets::{Event, Level, Published};
use tollgate_core::budget::Budget;
use tollgate_core::period::PeriodKind;
use tollgate_store::StoreError;
use tollgate_store::alerts::{Enqueue, NewAlert, Recorded, Target};

use crate::Shared;
use crate::config::Format;
use crate::outbox::Outcome;
use crate::payload::{self, BudgetFacts};

/// How many models and spenders an alert names.
const TOP: usize = 5;

/// A random id with a prefix (`alt_…`, `dlv_…`).
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{:032x}", rand::random::<u128>())
}

/// What one event asks to fire.
struct Firing<'e> {
    kind: &'static str,
    severity: &'static str,
    budget_id: &'e str,
    subject: &'e str,
    period_start: i64,
    mark: Option<u8>,
    message: Option<&'e str>,
}

fn firing(e: &Event) -> Option<Firing<'_>> {
    Some(match e {
        Event::Threshold {
            budget_id,
            subject,
            period_start,
            threshold_pct,
        } => Firing {
            kind: "budget.threshold",
            severity: match threshold_pct {
                100.. => "error",
                80..=99 => "warn",
                _ => "info",
            },
            budget_id,
            subject,
            period_start: *period_start,
            mark: Some(*threshold_pct),
            message: None,
        },
        Event::Level {
            budget_id,
            subject,
            period_start,
            to: Level::OverLimit,
            ..
        } => Firing {
            kind: "budget.exceeded",
            severity: "error",
            budget_id,
            subject,
            period_start: *period_start,
            mark: None,
            message: None,
        },
        Event::SoftLimit {
            budget_id,
            subject,
            period_start,
        } => Firing {
            kind: "budget.soft_limit",
            severity: "warn",
            budget_id,
            subject,
            period_start: *period_start,
            mark: None,
            message: None,
        },
        Event::Warning {
            budget_id,
            subject,
            period_start,
            at_pct,
            message,
        } => Firing {
            kind: "budget.warning",
            severity: "warn",
            budget_id,
            subject,
            period_start: *period_start,
            mark: Some(*at_pct),
            message: Some(message),
        },
        _ => return None,
    })
}

pub(crate) async fn run(shared: Arc<Shared>, mut events: mpsc::Receiver<Published>) {
    while let Some(p) = events.recv().await {
        let Some(f) = firing(&p.event) else { continue };
        // A store that fails now is retried a few times; an alert that
        // still cannot be recorded is logged, and noticed again at the
        // budget's next settlement (the judge re-publishes passed marks
        // after a restart, and dedupe makes that harmless).
        for attempt in 0..5u32 {
            match fire_budget(&shared, &f).await {
                Ok(()) => break,
                Err(e) if e.is_transient() && attempt < 4 => {
                    tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, kind = f.kind, budget = f.budget_id, "cannot record an alert");
                    break;
                }
            }
        }
    }
}

/// The dedupe key's period part: the period's start, or for a rolling
/// window the window-long slot the alert falls in (at most one alert per
/// mark and window length).
fn slot(b: &Budget, period_start: i64, now: Timestamp) -> i64 {
    match b.period {
        PeriodKind::Rolling(w) => {
            let len = i64::try_from(w.as_millis()).unwrap_or(i64::MAX).max(1);
            now.as_millisecond().div_euclid(len)
        }
        _ => period_start,
    }
}

/// The configured webhooks that take alerts of `kind`.
pub(crate) fn webhook_targets(shared: &Shared, kind: &str) -> Vec<(String, Target)> {
    shared
        .config
        .webhooks
        .iter()
        .filter(|w| w.events.is_empty() || w.events.iter().any(|e| e == kind))
        .map(|w| {
            (
                new_id("dlv"),
                Target {
                    name: w.name.clone(),
                    url: w.url.clone(),
                    format: w.format.as_str().into(),
                    secret_env: w.secret_env.clone(),
                },
            )
        })
        .collect()
}

/// The targets an alert of `kind` for `b` goes to.
fn targets(shared: &Shared, b: &Budget, kind: &str) -> Vec<(String, Target)> {
    let mut out = webhook_targets(shared, kind);
    if let Some(url) = &b.webhook_url {
        out.push((
            new_id("dlv"),
            Target {
                name: format!("budget:{}", b.id),
                url: url.clone(),
                format: Format::Json.as_str().into(),
                secret_env: shared.config.secret_env.clone(),
            },
        ));
    }
    out
}

async fn facts(
    shared: &Shared,
    budget: Arc<Budget>,
    subject: &str,
    now: Timestamp,
) -> Result<
    (
        tollgate_budgets::Applied,
        tollgate_budgets::State,
        tollgate_store::Breakdown,
    ),
    StoreError,
> {
    let engine = &shared.engine;
    let applied = engine
        .applied(budget.clone(), subject.to_string(), now)
        .await;
    let state = engine.state(&applied).await;
    let since = tollgate_budgets::BudgetEngine::count_since(&budget, now);
    // A fixed subject (`Fixed`) is the whole budget: no subject filter.
    let who = tollgate_budgets::BudgetEngine::subject_of(&budget).map(|f| (f, subject.to_string()));
    let breakdown = shared
        .store
        .budget_breakdown(&budget.id, who, since, TOP)
        .await?;
    Ok((applied, state, breakdown))
}

/// Deliveries join the outbox now, by the system clock (the engine's
/// may be another in tests), due at once.
pub(crate) fn enqueue(shared: &Shared) -> Enqueue {
    let at = Timestamp::now();
    Enqueue {
        at,
        first_attempt_at: at,
        max_per_hour: shared.config.max_per_hour,
    }
}

async fn fire_budget(shared: &Shared, f: &Firing<'_>) -> Result<(), StoreError> {
    let Some(budget) = shared
        .engine
        .entries()
        .get(f.budget_id)
        .map(|e| e.budget.clone())
    else {
        // Deleted since: nothing to say about it.
        return Ok(());
    };
    let now = shared.engine.now();
    let dedupe = format!(
        "{}|{}|{}|{}|{}",
        f.kind,
        f.budget_id,
        f.subject,
        slot(&budget, f.period_start, now),
        f.mark.map_or(String::new(), |m| m.to_string())
    );
    if shared.store.alert_exists(&dedupe).await? {
        return Ok(());
    }
    let (applied, state, breakdown) = facts(shared, budget.clone(), f.subject, now).await?;
    let id = new_id("alt");
    let facts = BudgetFacts {
        applied: &applied,
        state: &state,
        breakdown: &breakdown,
    };
    let threshold = f.mark.filter(|_| f.kind == "budget.threshold");
    let mut body = payload::budget_body(&id, f.kind, now, f.severity, &facts, threshold, f.message);
    if f.kind == "budget.warning" {
        body["at_pct"] = serde_json::json!(f.mark);
    }
    let alert = NewAlert {
        id,
        dedupe,
        kind: f.kind.into(),
        severity: f.severity.into(),
        budget_id: Some(budget.id.clone()),
        rule_id: None,
        subject: Some(f.subject.to_string()),
        created_at: now,
        payload: body.to_string(),
    };
    let deliveries = targets(shared, &budget, f.kind);
    match shared
        .store
        .insert_alert(&alert, &deliveries, enqueue(shared))
        .await?
    {
        Recorded::New { suppressed } => {
            tracing::info!(alert = %alert.id, kind = f.kind, budget = %budget.id, subject = f.subject, targets = deliveries.len(), suppressed, "alert");
            if deliveries.len() > suppressed {
                shared.wake.notify_one();
            }
        }
        Recorded::Duplicate => {}
    }
    Ok(())
}

/// A `test` alert for `budget_id`'s targets, attempted at once.
pub(crate) async fn test(
    shared: &Shared,
    budget_id: &str,
) -> Result<Option<Vec<Outcome>>, StoreError> {
    let Some(budget) = shared
        .engine
        .entries()
        .get(budget_id)
        .map(|e| e.budget.clone())
    else {
        return Ok(None);
    };
    let now = shared.engine.now();
    let subject = budget.subject.clone().unwrap_or_else(|| "*".into());
    let (applied, state, breakdown) = facts(shared, budget.clone(), &subject, now).await?;
    let id = new_id("alt");
    let body = payload::test_body(
        &id,
        now,
        &BudgetFacts {
            applied: &applied,
            state: &state,
            breakdown: &breakdown,
        },
    );
    let alert = NewAlert {
        dedupe: id.clone(),
        id: id.clone(),
        kind: "test".into(),
        severity: "info".into(),
        budget_id: Some(budget.id.clone()),
        rule_id: None,
        subject: Some(subject),
        created_at: now,
        payload: body.to_string(),
    };
    let deliveries = targets(shared, &budget, "test");
    // Held from the outbox while attempted here; retried by it after.
    let at = Timestamp::now();
    let queue = Enqueue {
        at,
        first_attempt_at: at + crate::outbox::lease(&shared.config.delivery),
        max_per_hour: None,
    };
    shared
        .store
        .insert_alert(&alert, &deliveries, queue)
        .await?;
    Ok(Some(crate::outbox::attempt_alert(shared, &id).await?))
}
