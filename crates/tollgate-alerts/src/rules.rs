//! Alert rules: what they say (`alerts.rules:`, `/admin/alert-rules`) and
//! the two shipped ones.
//!
//! - `spend_over`: more than `threshold_usd` spent within a rolling
//!   `window`, globally or per tenant / user / key / model (one instance
//!   per subject);
//! - `budget_forecast`: at the spend rate of the last `lookback`, a budget
//!   runs out more than `lead` before its period resets.
//!
//! Each fires at most once per `cooldown_minutes` per (rule, subject).

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use tollgate_core::Money;
use tollgate_core::period::parse_span;

/// A rule as written in the config or sent to the API. Every field but
/// `id` may be left out of a config entry for a shipped rule (the entry
/// then changes only what it names, typically `enabled`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_usd: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookback: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_minutes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleScope {
    Global,
    Tenant,
    User,
    Key,
    Model,
}

impl RuleScope {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleScope::Global => "global",
            RuleScope::Tenant => "tenant",
            RuleScope::User => "user",
            RuleScope::Key => "key",
            RuleScope::Model => "model",
        }
    }

    fn parse(s: &str) -> Option<RuleScope> {
        Some(match s {
            "global" => RuleScope::Global,
            "tenant" => RuleScope::Tenant,
            "user" => RuleScope::User,
            "key" => RuleScope::Key,
            "model" => RuleScope::Model,
            _ => return None,
        })
    }

    /// The subject a usage record counts for under this scope (`None`:
    /// the record has none, e.g. no tenant).
    pub fn subject_of(self, r: &tollgate_core::UsageRecord) -> Option<String> {
        match self {
            RuleScope::Global => Some("*".into()),
            RuleScope::Tenant => r.tenant.clone(),
            RuleScope::User => r.user.clone(),
            RuleScope::Key => r.key_id.clone(),
            RuleScope::Model => Some(r.model_served.clone()),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum RuleKind {
    SpendOver {
        window: SignedDuration,
        threshold: Money,
    },
    BudgetForecast {
        lookback: SignedDuration,
        lead: SignedDuration,
    },
}

/// A validated rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub id: String,
    pub kind: RuleKind,
    pub scope: RuleScope,
    pub cooldown: SignedDuration,
    pub severity: &'static str,
    pub enabled: bool,
}

/// The longest `spend_over` window (memory: minute buckets per subject).
pub const MAX_WINDOW: SignedDuration = SignedDuration::from_hours(24 * 7);

/// The shipped rules, disabled until the config (or API) enables them.
pub fn stock() -> Vec<RuleInput> {
    vec![
        RuleInput {
            id: Some("cost-hourly-spike".into()),
            kind: Some("spend_over".into()),
            scope: Some("global".into()),
            window: Some("1h".into()),
            threshold_usd: Money::parse_usd("5.00").ok(),
            cooldown_minutes: Some(30),
            severity: Some("warn".into()),
            enabled: Some(false),
            ..RuleInput::default()
        },
        RuleInput {
            id: Some("cost-daily-budget".into()),
            kind: Some("spend_over".into()),
            scope: Some("global".into()),
            window: Some("24h".into()),
            threshold_usd: Money::parse_usd("20.00").ok(),
            cooldown_minutes: Some(360),
            severity: Some("error".into()),
            enabled: Some(false),
            ..RuleInput::default()
        },
    ]
}

impl RuleInput {
    /// `self` over `base`: the fields `self` sets win.
    pub fn over(&self, base: &RuleInput) -> RuleInput {
        RuleInput {
            id: self.id.clone().or_else(|| base.id.clone()),
            kind: self.kind.clone().or_else(|| base.kind.clone()),
            scope: self.scope.clone().or_else(|| base.scope.clone()),
            window: self.window.clone().or_else(|| base.window.clone()),
            threshold_usd: self.threshold_usd.or(base.threshold_usd),
            lookback: self.lookback.clone().or_else(|| base.lookback.clone()),
            lead: self.lead.clone().or_else(|| base.lead.clone()),
            cooldown_minutes: self.cooldown_minutes.or(base.cooldown_minutes),
            severity: self.severity.clone().or_else(|| base.severity.clone()),
            enabled: self.enabled.or(base.enabled),
        }
    }
}

fn span(field: &str, v: Option<&str>, default: Option<&str>) -> Result<SignedDuration, String> {
    let s = v.or(default).ok_or_else(|| format!("{field}: required"))?;
    parse_span(s)
        .ok_or_else(|| format!("{field}: invalid duration {s:?} (expected 30m, 1h, 24h, 7d)"))
}

impl Rule {
    /// Validates an input; each error names its field.
    pub fn from_input(i: &RuleInput) -> Result<Rule, String> {
        let id =
            i.id.clone()
                .filter(|s| !s.trim().is_empty())
                .ok_or("id: required")?;
        if id.contains(['|', '/']) || id.len() > 128 {
            return Err("id: at most 128 characters, without '|' or '/'".into());
        }
        let scope_s = i.scope.as_deref().unwrap_or("global");
        let scope = RuleScope::parse(scope_s).ok_or_else(|| {
            format!(
                "scope: unknown scope {scope_s:?} (expected global, tenant, user, key or model)"
            )
        })?;
        let kind = match i.kind.as_deref() {
            Some("spend_over") => {
                if i.lookback.is_some() || i.lead.is_some() {
                    return Err("lookback/lead: only for budget_forecast rules".into());
                }
                let window = span("window", i.window.as_deref(), None)?;
                if window > MAX_WINDOW || window < SignedDuration::from_mins(1) {
                    return Err("window: between 1m and 7d".into());
                }
                let threshold = i.threshold_usd.ok_or("threshold_usd: required")?;
                if threshold <= Money::ZERO {
                    return Err("threshold_usd: must be above zero".into());
                }
                RuleKind::SpendOver { window, threshold }
            }
            Some("budget_forecast") => {
                if i.window.is_some() || i.threshold_usd.is_some() {
                    return Err("window/threshold_usd: only for spend_over rules".into());
                }
                if scope != RuleScope::Global {
                    return Err(
                        "scope: a budget_forecast rule watches every budget (scope global)".into(),
                    );
                }
                let lookback = span("lookback", i.lookback.as_deref(), Some("6h"))?;
                if lookback > MAX_WINDOW {
                    return Err("lookback: at most 7d".into());
                }
                RuleKind::BudgetForecast {
                    lookback,
                    lead: span("lead", i.lead.as_deref(), Some("24h"))?,
                }
            }
            Some(k) => {
                return Err(format!(
                    "kind: unknown kind {k:?} (expected spend_over or budget_forecast)"
                ));
            }
            None => return Err("kind: required (spend_over or budget_forecast)".into()),
        };
        let severity = match i.severity.as_deref().unwrap_or("warn") {
            "info" => "info",
            "warn" => "warn",
            "error" => "error",
            s => {
                return Err(format!(
                    "severity: unknown severity {s:?} (expected info, warn or error)"
                ));
            }
        };
        let minutes = i.cooldown_minutes.unwrap_or(60);
        if minutes == 0 || minutes > 60 * 24 * 30 {
            return Err("cooldown_minutes: 1..=43200".into());
        }
        Ok(Rule {
            id,
            kind,
            scope,
            cooldown: SignedDuration::from_mins(i64::try_from(minutes).unwrap_or(60)),
            severity,
            enabled: i.enabled.unwrap_or(true),
        })
    }

    pub fn to_input(&self) -> RuleInput {
        let fmt = tollgate_core::period::format_span;
        let (kind, window, threshold_usd, lookback, lead) = match &self.kind {
            RuleKind::SpendOver { window, threshold } => (
                "spend_over",
                Some(fmt(*window)),
                Some(*threshold),
                None,
                None,
            ),
            RuleKind::BudgetForecast { lookback, lead } => (
                "budget_forecast",
                None,
                None,
                Some(fmt(*lookback)),
                Some(fmt(*lead)),
            ),
        };
        RuleInput {
            id: Some(self.id.clone()),
            kind: Some(kind.into()),
            scope: Some(self.scope.as_str().into()),
            window,
            threshold_usd,
            lookback,
            lead,
            cooldown_minutes: Some(u64::try_from(self.cooldown.as_secs() / 60).unwrap_or(0)),
            severity: Some(self.severity.into()),
            enabled: Some(self.enabled),
        }
    }
}

/// Where a rule comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleSource {
    /// Shipped with Tollgate (changed only through the config).
    Stock,
    Config,
    /// Created through the admin API.
    Admin,
}

impl RuleSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleSource::Stock => "stock",
            RuleSource::Config => "config",
            RuleSource::Admin => "admin",
        }
    }
}

/// The stock rules with the config's entries over them, then the
/// config's own rules; each validated (errors name `alerts.rules[i]`).
pub fn from_config(entries: &[RuleInput]) -> Result<Vec<(Rule, RuleSource)>, String> {
    let stock = stock();
    let mut out: Vec<(Rule, RuleSource)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        let id =
            e.id.clone()
                .ok_or_else(|| format!("alerts.rules[{i}].id: required"))?;
        if !seen.insert(id.clone()) {
            return Err(format!("alerts.rules[{i}].id: {id:?} is defined twice"));
        }
        let merged = match stock.iter().find(|s| s.id.as_deref() == Some(id.as_str())) {
            Some(s) => e.over(s),
            None => e.clone(),
        };
        let rule = Rule::from_input(&merged).map_err(|m| format!("alerts.rules[{i}].{m}"))?;
        out.push((rule, RuleSource::Config));
    }
    for s in &stock {
        if !seen.contains(s.id.as_deref().unwrap_or_default()) {
            out.push((
                Rule::from_input(s).map_err(|m| format!("stock rule: {m}"))?,
                RuleSource::Stock,
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_rules_ship_disabled_and_the_config_enables_them() {
        let rules = from_config(&[]).unwrap();
        assert_eq!(rules.len(), 2);
        assert!(
            rules
                .iter()
                .all(|(r, s)| !r.enabled && *s == RuleSource::Stock)
        );
        let on = RuleInput {
            id: Some("cost-hourly-spike".into()),
            enabled: Some(true),
            ..Default::default()
        };
        let rules = from_config(&[on]).unwrap();
        let (spike, src) = rules
            .iter()
            .find(|(r, _)| r.id == "cost-hourly-spike")
            .unwrap();
        assert!(spike.enabled && *src == RuleSource::Config);
        assert_eq!(
            spike.kind,
            RuleKind::SpendOver {
                window: SignedDuration::from_hours(1),
                threshold: Money::parse_usd("5").unwrap()
            }
        );
        assert_eq!(spike.cooldown, SignedDuration::from_mins(30));
    }

    #[test]
    fn rules_validate_and_round_trip() {
        let forecast: RuleInput = serde_json::from_str(
            r#"{"id":"month-runs-out","kind":"budget_forecast","lookback":"6h","lead":"24h","severity":"warn"}"#,
        )
        .unwrap();
        let r = Rule::from_input(&forecast).unwrap();
        assert_eq!(Rule::from_input(&r.to_input()).unwrap(), r);
        for (bad, field) in [
            (
                r#"{"id":"a","kind":"spend_over","window":"1h"}"#,
                "threshold_usd",
            ),
            (
                r#"{"id":"a","kind":"spend_over","window":"9d","threshold_usd":"1"}"#,
                "window",
            ),
            (
                r#"{"id":"a","kind":"spend_over","window":"1h","threshold_usd":"1","scope":"planet"}"#,
                "scope",
            ),
            (r#"{"id":"a","kind":"nope"}"#, "kind"),
            (
                r#"{"id":"a","kind":"budget_forecast","scope":"user"}"#,
                "scope",
            ),
            (
                r#"{"id":"a","kind":"spend_over","window":"1h","threshold_usd":"1","severity":"loud"}"#,
                "severity",
            ),
            (
                r#"{"id":"a","kind":"spend_over","window":"1h","threshold_usd":"1","cooldown_minutes":0}"#,
                "cooldown_minutes",
            ),
        ] {
            let i: RuleInput = serde_json::from_str(bad).unwrap();
            let e = Rule::from_input(&i).unwrap_err();
            assert!(e.starts_with(field), "{bad}: {e}");
        }
        let twice = RuleInput {
            id: Some("x".into()),
            ..forecast.clone()
        };
        assert!(
            from_config(&[twice.clone(), twice])
                .unwrap_err()
                .contains("twice")
        );
    }
}
