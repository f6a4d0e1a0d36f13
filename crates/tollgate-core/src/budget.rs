//! Budget definitions: who a budget applies to (scope and subject), what it
//! limits (money and/or tokens), over which period, and what happens at the
//! limit.
//!
//! Budgets come in three tiers per scope. For a given caller and scope, the
//! most specific tier that has any budget wins: *override* (explicit, for
//! one subject) > *role* (for every subject whose caller has the role) >
//! *default* (for every subject). Every budget that applies must allow a
//! request.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::money::Money;
use crate::period::{Calendar, PeriodError, PeriodKind};
use crate::template::Template;

/// What a budget is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Global,
    Tenant,
    User,
    Session,
    Key,
    /// A named budget, picked per request with `X-Budget-Id`.
    Budget,
    /// The Cycles protocol's scopes below a tenant; a subject is a
    /// canonical path (`tenant:acme/workspace:prod/agent:bot`).
    Workspace,
    App,
    Workflow,
    Agent,
    Toolset,
}

impl Scope {
    pub const ALL: [Scope; 11] = [
        Scope::Global,
        Scope::Tenant,
        Scope::User,
        Scope::Session,
        Scope::Key,
        Scope::Budget,
        Scope::Workspace,
        Scope::App,
        Scope::Workflow,
        Scope::Agent,
        Scope::Toolset,
    ];

    /// Whether the scope is one of the Cycles protocol's levels below a
    /// tenant (its subjects are canonical paths).
    pub fn is_cycles_path(self) -> bool {
        matches!(
            self,
            Scope::Workspace | Scope::App | Scope::Workflow | Scope::Agent | Scope::Toolset
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Tenant => "tenant",
            Scope::User => "user",
            Scope::Session => "session",
            Scope::Key => "key",
            Scope::Budget => "budget",
            Scope::Workspace => "workspace",
            Scope::App => "app",
            Scope::Workflow => "workflow",
            Scope::Agent => "agent",
            Scope::Toolset => "toolset",
        }
    }
}

impl FromStr for Scope {
    type Err = BudgetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "global" => Scope::Global,
            "tenant" => Scope::Tenant,
            "user" => Scope::User,
            "session" => Scope::Session,
            "key" => Scope::Key,
            "budget" | "named" => Scope::Budget,
            "workspace" => Scope::Workspace,
            "app" => Scope::App,
            "workflow" => Scope::Workflow,
            "agent" => Scope::Agent,
            "toolset" => Scope::Toolset,
            _ => {
                return Err(BudgetError::field(
                    "scope",
                    format!(
                        "unknown scope {s:?} (expected global, tenant, user, session, key, budget, workspace, app, workflow, agent or toolset)"
                    ),
                ));
            }
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens when a request would pass the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Refuse (after trying to cap the output to what is left).
    Block,
    /// Allow, flag the record `warned`, say so in `x-tollgate-warning`.
    Warn,
    /// Decide exactly as `Block` would, never refuse: flag the record
    /// `would_block` (a budget rolled out before it bites).
    Shadow,
    /// Serve the request with the budget's `downgrade_to` model instead
    /// (flagged `downgraded`) when it cannot be afforded at its own.
    Downgrade,
    /// Past the limit, admit requests at the budget's `throttle` rate
    /// (flagged `throttled`); beyond that rate, a retryable 429.
    Throttle,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Warn => "warn",
            Action::Shadow => "shadow",
            Action::Downgrade => "downgrade",
            Action::Throttle => "throttle",
        }
    }
}

/// A message shown once a budget has used `at_pct` percent of its limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub at_pct: u8,
    pub message: Template,
}

/// What `warn` says when no warning mark has a message for the state.
pub const DEFAULT_WARN_MESSAGE: &str = "Budget {budget} is past its {period} limit ({percent_used}% used); requests are allowed and flagged.";

/// Which tier a budget belongs to (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    Override,
    Role(String),
    Default,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollover {
    pub cap_money: Option<Money>,
    pub cap_tokens: Option<u64>,
}

/// A budget, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub id: String,
    pub name: Option<String>,
    pub scope: Scope,
    /// The subject for overrides (`alice`); `None` for the global budget
    /// and for role and default templates, which apply to every subject.
    pub subject: Option<String>,
    pub tier: Tier,
    pub limit_money: Option<Money>,
    pub limit_tokens: Option<u64>,
    pub period: PeriodKind,
    pub calendar: Calendar,
    pub action: Action,
    /// HTTP status of a refusal (429 by default; 402 is common too).
    pub refusal_status: u16,
    /// Low when less than this percentage of the limit is left...
    pub low_threshold_pct: u8,
    /// ... or less than this much money ...
    pub low_threshold_money: Option<Money>,
    /// ... or fewer tokens.
    pub low_threshold_tokens: Option<u64>,
    /// Warning marks, ascending by `at_pct`.
    pub warnings: Vec<Warning>,
    /// Replaces the refusal's message.
    pub refusal_message: Option<Template>,
    /// The model `downgrade` serves instead.
    pub downgrade_to: Option<String>,
    /// The rate `throttle` admits requests at past the limit.
    pub throttle: Option<ThrottleInput>,
    /// What changes while the budget is low.
    pub on_low: Option<OnLow>,
    /// Appended to whole text answers (see `tollgate_providers::footer`).
    pub footer: Option<Template>,
    /// Alert marks (percent of the limit), ascending.
    pub alert_thresholds: Vec<u8>,
    /// The budget's own alert target.
    pub webhook_url: Option<String>,
    /// Exported as `tollgate_budget_used_ratio{budget}` on `/metrics`.
    pub metrics: bool,
    /// Debt a Cycles commit with `ALLOW_WITH_OVERDRAFT` may run up past
    /// the limit (`None`: none).
    pub overdraft_money: Option<Money>,
    pub overdraft_tokens: Option<u64>,
    /// Model globs this budget covers; empty means every model.
    pub models: Vec<String>,
    pub rollover: Option<Rollover>,
    /// When the budget began to exist (created through the API, or first
    /// loaded from the config); `None` if unknown. A period that began
    /// before it carries nothing over.
    pub existed_since: Option<jiff::Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BudgetError {
    pub field: String,
    pub message: String,
}

/// Where budgets alert when they set no `alert_thresholds`.
pub const DEFAULT_ALERT_THRESHOLDS: [u8; 3] = [50, 80, 100];

/// A webhook URL's shape: absolute `http` or `https` with a host and no
/// credentials. Whether the host may be called is the alerts' allow-list's
/// business, checked where it is known.
pub fn webhook_url_ok(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http(s) URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if authority.contains('@') {
        return Err(format!(
            "{url:?} carries credentials; use a signing secret instead"
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} contains whitespace"));
    }
    Ok(())
}

impl BudgetError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        BudgetError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

fn default_period() -> String {
    "monthly".into()
}

/// A budget as written in YAML or sent to the admin API.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BudgetInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_usd: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_tokens: Option<u64>,
    #[serde(default = "default_period")]
    pub period: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Local time of the calendar reset, `HH:MM` (default 00:00).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_time: Option<String>,
    /// Weekly budgets: the day the week starts (default monday).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_weekday: Option<String>,
    /// Monthly budgets: the day the month starts (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_day: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_threshold_pct: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_threshold_usd: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_threshold_tokens: Option<u64>,
    /// Messages shown (in `x-tollgate-warning`) once the budget has used
    /// each percentage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<WarningInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<MessagesInput>,
    /// With `action: downgrade`: the cheaper model (same wire format) that
    /// serves requests this budget cannot afford at their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downgrade_to: Option<String>,
    /// With `action: throttle`: the rate requests are admitted at once the
    /// budget is past its limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleInput>,
    /// While the budget is low: model fallbacks and a prompt hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_low: Option<OnLowInput>,
    /// A usage footer (a template) appended to whole text answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footer: Option<String>,
    /// Percentages of the limit at which an alert fires, once each per
    /// period; absent: 50, 80 and 100; empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_thresholds: Option<Vec<u8>>,
    /// This budget's own alert target, besides `alerts.webhooks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Export the budget's used ratio on `/metrics` (one subject only: a
    /// default or role budget would need a label per subject).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub metrics: bool,
    /// Debt Cycles commits with `ALLOW_WITH_OVERDRAFT` may run up past the
    /// limit, in money and tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdraft_usd: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdraft_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Unused allowance carried into the next calendar period, up to a cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollover: Option<RolloverInput>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WarningInput {
    pub at_pct: u8,
    pub message: String,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ThrottleInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OnLowInput {
    /// Model (or glob) → the model that serves it while the budget is low.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fallbacks: std::collections::BTreeMap<String, String>,
    /// Prepend a budget hint to the system prompt.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prompt_hint: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hint_chars: Option<usize>,
}

/// What changes while a budget is low, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnLow {
    /// (model or glob, fallback), exact names first.
    pub fallbacks: Vec<(String, String)>,
    pub prompt_hint: bool,
    pub max_hint_chars: usize,
}

/// Hints are short: the default bound on their length.
pub const DEFAULT_MAX_HINT_CHARS: usize = 200;

impl OnLow {
    /// The model that serves `model` while the budget is low, if any.
    pub fn fallback_for(&self, model: &str) -> Option<&str> {
        self.fallbacks
            .iter()
            .find(|(pat, _)| pat == model || wildmatch::WildMatch::new(pat).matches(model))
            .map(|(_, to)| to.as_str())
            .filter(|to| *to != model)
    }

    fn from_input(i: &OnLowInput) -> Result<OnLow, BudgetError> {
        let max = i.max_hint_chars.unwrap_or(DEFAULT_MAX_HINT_CHARS);
        if !(20..=2000).contains(&max) {
            return Err(BudgetError::field(
                "on_low.max_hint_chars",
                "must be 20..=2000",
            ));
        }
        if i.max_hint_chars.is_some() && !i.prompt_hint {
            return Err(BudgetError::field(
                "on_low.max_hint_chars",
                "bounds the prompt hint; set prompt_hint: true or remove it",
            ));
        }
        if i.fallbacks.is_empty() && !i.prompt_hint {
            return Err(BudgetError::field(
                "on_low",
                "does nothing: give fallbacks and/or prompt_hint: true",
            ));
        }
        let mut fallbacks: Vec<(String, String)> = Vec::new();
        for (from, to) in &i.fallbacks {
            if from.is_empty() || to.is_empty() || to.contains(['*', '?']) {
                return Err(BudgetError::field(
                    &format!("on_low.fallbacks.{from}"),
                    "maps a model (or glob) to one model name",
                ));
            }
            fallbacks.push((from.clone(), to.clone()));
        }
        // Exact names before globs, so `gpt-4o` is not taken by `gpt-4*`.
        fallbacks.sort_by_key(|(f, _)| f.contains(['*', '?']));
        Ok(OnLow {
            fallbacks,
            prompt_hint: i.prompt_hint,
            max_hint_chars: max,
        })
    }

    fn to_input(&self) -> OnLowInput {
        OnLowInput {
            fallbacks: self.fallbacks.iter().cloned().collect(),
            prompt_hint: self.prompt_hint,
            max_hint_chars: self
                .prompt_hint
                .then_some(self.max_hint_chars)
                .filter(|m| *m != DEFAULT_MAX_HINT_CHARS),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MessagesInput {
    /// Replaces the text of this budget's refusals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RolloverInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_usd: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_tokens: Option<u64>,
}

fn period_err(e: PeriodError) -> BudgetError {
    let field = match e {
        PeriodError::Unknown(_) | PeriodError::BadWindow(_) => "period",
        PeriodError::BadZone(_) => "timezone",
        PeriodError::BadTime(_) => "reset_time",
        PeriodError::BadWeekday(_) => "reset_weekday",
        PeriodError::BadDay(_) => "reset_day",
    };
    BudgetError::field(field, e.to_string())
}

/// Whether `path` is a canonical Cycles scope path
/// (`tenant:T/level:value/...`, levels in canonical order, values of the
/// protocol's charset) whose last level is `scope`.
pub fn is_cycles_path_of(path: &str, scope: Scope) -> bool {
    const ORDER: [&str; 6] = ["tenant", "workspace", "app", "workflow", "agent", "toolset"];
    let mut last = None;
    for (i, seg) in path.split('/').enumerate() {
        let Some((level, value)) = seg.split_once(':') else {
            return false;
        };
        let Some(pos) = ORDER.iter().position(|l| *l == level) else {
            return false;
        };
        let ok_value = !value.is_empty()
            && value.len() <= 128
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok_value || (i == 0) != (pos == 0) || last.is_some_and(|l| pos <= l) {
            return false;
        }
        last = Some(pos);
    }
    last.is_some_and(|l| ORDER[l] == scope.as_str())
}

/// An id usable in counter keys, where `|` separates it from a subject.
pub(crate) fn check_id(id: &str, what: &str) -> Result<(), BudgetError> {
    if id.is_empty() || id.contains('|') || id.chars().any(char::is_control) {
        return Err(BudgetError::field(
            "id",
            format!("{id:?} is not a {what} id (non-empty, no `|`, no control characters)"),
        ));
    }
    Ok(())
}

/// The scope given by position (YAML keys it) or else by the input.
pub(crate) fn scope_of(
    given: Option<Scope>,
    input: Option<&str>,
    expected: &str,
) -> Result<Scope, BudgetError> {
    match (given, input) {
        (Some(s), _) => Ok(s),
        (None, Some(s)) => s.parse(),
        (None, None) => Err(BudgetError::field("scope", format!("missing ({expected})"))),
    }
}

impl Budget {
    /// Validates `input` as a budget of `tier` with `id`. `scope` overrides
    /// the input's (defaults and roles are keyed by scope in YAML).
    pub fn from_input(
        id: String,
        input: &BudgetInput,
        tier: Tier,
        scope: Option<Scope>,
    ) -> Result<Budget, BudgetError> {
        check_id(&id, "budget")?;
        let scope = scope_of(
            scope,
            input.scope.as_deref(),
            "global, tenant, user, session, key, budget, workspace, app, workflow, agent or toolset",
        )?;
        let subject = input.subject.clone().filter(|s| !s.is_empty());
        if let Some(s) = &subject
            && scope.is_cycles_path()
            && !is_cycles_path_of(s, scope)
        {
            return Err(BudgetError::field(
                "subject",
                format!(
                    "a {scope} budget's subject is a Cycles scope path ending in its {scope}, like tenant:acme/{scope}:name (got {s:?})"
                ),
            ));
        }
        match (&tier, scope, &subject) {
            (Tier::Override, Scope::Global, Some(_)) => {
                return Err(BudgetError::field(
                    "subject",
                    "the global budget has no subject",
                ));
            }
            (Tier::Override, s, None) if s != Scope::Global => {
                return Err(BudgetError::field(
                    "subject",
                    format!("a {s} budget needs a subject (which {s} it limits)"),
                ));
            }
            (Tier::Role(_) | Tier::Default, _, Some(_)) => {
                return Err(BudgetError::field(
                    "subject",
                    "defaults and role budgets apply to every subject; use an override for one",
                ));
            }
            _ => {}
        }
        if input.limit_usd.is_none() && input.limit_tokens.is_none() {
            return Err(BudgetError::field(
                "limit_usd",
                "a budget needs limit_usd and/or limit_tokens",
            ));
        }
        if input.metrics && !matches!(tier, Tier::Override) {
            return Err(BudgetError::field(
                "metrics",
                "only a budget with one subject (or the global one) is exported: a default or role budget would need a label per subject",
            ));
        }
        if input.limit_usd.is_some_and(Money::is_negative) {
            return Err(BudgetError::field("limit_usd", "must not be negative"));
        }
        if input.overdraft_usd.is_some_and(Money::is_negative) {
            return Err(BudgetError::field("overdraft_usd", "must not be negative"));
        }
        if input.overdraft_usd.is_some() && input.limit_usd.is_none() {
            return Err(BudgetError::field(
                "overdraft_usd",
                "an overdraft is debt past limit_usd: the budget needs limit_usd",
            ));
        }
        if input.overdraft_tokens.is_some() && input.limit_tokens.is_none() {
            return Err(BudgetError::field(
                "overdraft_tokens",
                "an overdraft is debt past limit_tokens: the budget needs limit_tokens",
            ));
        }
        let period: PeriodKind = input.period.parse().map_err(period_err)?;
        let calendar = Calendar::new(
            input.timezone.as_deref(),
            input.reset_time.as_deref(),
            input.reset_weekday.as_deref(),
            input.reset_day,
        )
        .map_err(period_err)?;
        let action = match input.action.as_deref().unwrap_or("block") {
            "block" => Action::Block,
            "warn" => Action::Warn,
            "shadow" => Action::Shadow,
            "downgrade" => Action::Downgrade,
            "throttle" => Action::Throttle,
            a => {
                return Err(BudgetError::field(
                    "action",
                    format!(
                        "unknown action {a:?} (expected block, warn, shadow, downgrade or throttle)"
                    ),
                ));
            }
        };
        match (action, input.throttle) {
            (Action::Throttle, None) => {
                return Err(BudgetError::field(
                    "throttle",
                    "action throttle needs the rate to admit at ({ requests_per_minute, tokens_per_minute })",
                ));
            }
            (Action::Throttle, Some(t)) => {
                if t.requests_per_minute.is_none() && t.tokens_per_minute.is_none() {
                    return Err(BudgetError::field(
                        "throttle",
                        "needs requests_per_minute and/or tokens_per_minute",
                    ));
                }
                if t.requests_per_minute == Some(0) || t.tokens_per_minute == Some(0) {
                    return Err(BudgetError::field(
                        "throttle",
                        "a rate must be at least 1 per minute (use action block to stop requests)",
                    ));
                }
            }
            (_, Some(_)) => {
                return Err(BudgetError::field(
                    "throttle",
                    "only a budget with action throttle has a throttle rate",
                ));
            }
            _ => {}
        }
        let downgrade_to = input.downgrade_to.clone().filter(|m| !m.is_empty());
        match (action, &downgrade_to) {
            (Action::Downgrade, None) => {
                return Err(BudgetError::field(
                    "downgrade_to",
                    "action downgrade needs the model to serve instead",
                ));
            }
            (a, Some(_)) if a != Action::Downgrade => {
                return Err(BudgetError::field(
                    "downgrade_to",
                    "only a budget with action downgrade serves another model",
                ));
            }
            _ => {}
        }
        let refusal_status = input.refusal_status.unwrap_or(429);
        if !(400..=599).contains(&refusal_status) {
            return Err(BudgetError::field(
                "refusal_status",
                format!("{refusal_status} is not an HTTP error status"),
            ));
        }
        let low_threshold_pct = input.low_threshold_pct.unwrap_or(20);
        if low_threshold_pct > 100 {
            return Err(BudgetError::field("low_threshold_pct", "must be 0..=100"));
        }
        if input.low_threshold_usd.is_some_and(Money::is_negative) {
            return Err(BudgetError::field(
                "low_threshold_usd",
                "must not be negative",
            ));
        }
        for (field, unit_set, limit_set) in [
            (
                "low_threshold_usd",
                input.low_threshold_usd.is_some(),
                input.limit_usd.is_some(),
            ),
            (
                "low_threshold_tokens",
                input.low_threshold_tokens.is_some(),
                input.limit_tokens.is_some(),
            ),
        ] {
            if unit_set && !limit_set {
                let unit = if field.ends_with("usd") {
                    "limit_usd"
                } else {
                    "limit_tokens"
                };
                return Err(BudgetError::field(
                    field,
                    format!("the budget has no {unit} for this threshold to apply to"),
                ));
            }
        }
        let mut warnings = Vec::with_capacity(input.warnings.len());
        for (i, w) in input.warnings.iter().enumerate() {
            let field = format!("warnings[{i}]");
            if !(1..=100).contains(&w.at_pct) {
                return Err(BudgetError::field(
                    &format!("{field}.at_pct"),
                    "must be 1..=100",
                ));
            }
            let message = Template::parse(&w.message)
                .map_err(|e| BudgetError::field(&format!("{field}.message"), e.to_string()))?;
            warnings.push(Warning {
                at_pct: w.at_pct,
                message,
            });
        }
        warnings.sort_by_key(|w| w.at_pct);
        if let Some(w) = warnings.windows(2).find(|w| w[0].at_pct == w[1].at_pct) {
            return Err(BudgetError::field(
                "warnings",
                format!("two warnings at {}%", w[0].at_pct),
            ));
        }
        let refusal_message = input
            .messages
            .as_ref()
            .and_then(|m| m.refusal.as_deref())
            .map(Template::parse)
            .transpose()
            .map_err(|e| BudgetError::field("messages.refusal", e.to_string()))?;
        let alert_thresholds = match &input.alert_thresholds {
            None => DEFAULT_ALERT_THRESHOLDS.to_vec(),
            Some(t) => {
                if t.contains(&0) {
                    return Err(BudgetError::field(
                        "alert_thresholds",
                        "a threshold is a percentage of the limit, 1..=255",
                    ));
                }
                let mut t = t.clone();
                t.sort_unstable();
                t.dedup();
                t
            }
        };
        if let Some(url) = &input.webhook_url {
            webhook_url_ok(url).map_err(|m| BudgetError::field("webhook_url", m))?;
        }
        let rollover = match &input.rollover {
            Some(r) if period.is_rolling() || period == PeriodKind::Lifetime => {
                let _ = r;
                return Err(BudgetError::field(
                    "rollover",
                    "only calendar periods (daily, weekly, monthly) roll over",
                ));
            }
            Some(r) => Some(Rollover {
                cap_money: r.cap_usd,
                cap_tokens: r.cap_tokens,
            }),
            None => None,
        };
        Ok(Budget {
            id,
            name: input.name.clone(),
            scope,
            subject,
            tier,
            limit_money: input.limit_usd,
            limit_tokens: input.limit_tokens,
            period,
            calendar,
            action,
            refusal_status,
            low_threshold_pct,
            low_threshold_money: input.low_threshold_usd,
            low_threshold_tokens: input.low_threshold_tokens,
            warnings,
            refusal_message,
            downgrade_to,
            throttle: input.throttle,
            on_low: input.on_low.as_ref().map(OnLow::from_input).transpose()?,
            footer: input
                .footer
                .as_deref()
                .map(Template::parse)
                .transpose()
                .map_err(|e| BudgetError::field("footer", e.to_string()))?,
            alert_thresholds,
            webhook_url: input.webhook_url.clone(),
            metrics: input.metrics,
            overdraft_money: input.overdraft_usd,
            overdraft_tokens: input.overdraft_tokens,
            models: input.models.clone(),
            rollover,
            existed_since: None,
        })
    }

    /// Whether a budget with `limit` and `left` of it is low: less than
    /// `low_threshold_pct` of the limit left, or less than an absolute
    /// threshold, in either unit. Exact (integer) arithmetic.
    pub fn is_low(
        &self,
        limit: (Option<Money>, Option<u64>),
        left: (Option<Money>, Option<u64>),
    ) -> bool {
        let pct = i128::from(self.low_threshold_pct);
        let money = limit.0.zip(left.0).is_some_and(|(l, h)| {
            h.units() * 100 < l.units() * pct || self.low_threshold_money.is_some_and(|t| h < t)
        });
        let tokens = limit.1.zip(left.1).is_some_and(|(l, h)| {
            i128::from(h) * 100 < i128::from(l) * pct
                || self.low_threshold_tokens.is_some_and(|t| h < t)
        });
        money || tokens
    }

    /// The input that recreates this budget (for storage and the API).
    pub fn to_input(&self) -> BudgetInput {
        BudgetInput {
            id: Some(self.id.clone()),
            name: self.name.clone(),
            scope: Some(self.scope.as_str().into()),
            subject: self.subject.clone(),
            limit_usd: self.limit_money,
            limit_tokens: self.limit_tokens,
            period: self.period.to_string(),
            timezone: Some(self.calendar.tz_name.to_string()),
            reset_time: Some(format!(
                "{:02}:{:02}",
                self.calendar.reset_time.hour(),
                self.calendar.reset_time.minute()
            )),
            reset_weekday: Some(format!("{:?}", self.calendar.weekday).to_lowercase()),
            reset_day: Some(i64::from(self.calendar.day_of_month)),
            action: Some(self.action.as_str().into()),
            refusal_status: Some(self.refusal_status),
            low_threshold_pct: Some(self.low_threshold_pct),
            low_threshold_usd: self.low_threshold_money,
            low_threshold_tokens: self.low_threshold_tokens,
            warnings: self
                .warnings
                .iter()
                .map(|w| WarningInput {
                    at_pct: w.at_pct,
                    message: w.message.source().to_string(),
                })
                .collect(),
            messages: self.refusal_message.as_ref().map(|t| MessagesInput {
                refusal: Some(t.source().to_string()),
            }),
            downgrade_to: self.downgrade_to.clone(),
            throttle: self.throttle,
            on_low: self.on_low.as_ref().map(OnLow::to_input),
            footer: self.footer.as_ref().map(|t| t.source().to_string()),
            alert_thresholds: Some(self.alert_thresholds.clone()),
            webhook_url: self.webhook_url.clone(),
            metrics: self.metrics,
            overdraft_usd: self.overdraft_money,
            overdraft_tokens: self.overdraft_tokens,
            models: self.models.clone(),
            rollover: self.rollover.as_ref().map(|r| RolloverInput {
                cap_usd: r.cap_money,
                cap_tokens: r.cap_tokens,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> BudgetInput {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn cycles_scope_budgets_name_a_canonical_path_ending_in_their_scope() {
        for (path, scope, ok) in [
            ("tenant:acme/agent:bot", Scope::Agent, true),
            ("tenant:acme/workspace:prod/agent:bot", Scope::Agent, true),
            ("tenant:acme/workspace:prod", Scope::Workspace, true),
            ("tenant:acme/workspace:prod", Scope::Agent, false),
            ("agent:bot", Scope::Agent, false),
            ("tenant:acme/agent:bot/workspace:x", Scope::Workspace, false),
            ("tenant:acme/agent:b t", Scope::Agent, false),
            ("tenant:acme/agent:", Scope::Agent, false),
            ("bot", Scope::Agent, false),
        ] {
            assert_eq!(is_cycles_path_of(path, scope), ok, "{path} as {scope}");
        }
        let bad = input(r#"{"scope":"agent","subject":"bot","limit_usd":"1"}"#);
        let e = Budget::from_input("b".into(), &bad, Tier::Override, None).unwrap_err();
        assert!(e.to_string().contains("tenant:acme/agent:name"), "{e}");
    }

    #[test]
    fn metrics_are_for_budgets_of_one_subject() {
        let one = input(r#"{"scope":"user","subject":"a","limit_usd":"1","metrics":true}"#);
        let b = Budget::from_input("b".into(), &one, Tier::Override, None).unwrap();
        assert!(b.metrics);
        assert!(b.to_input().metrics);
        let template = input(r#"{"limit_usd":"1","metrics":true}"#);
        let e = Budget::from_input("d".into(), &template, Tier::Default, Some(Scope::User))
            .unwrap_err();
        assert!(e.to_string().contains("metrics"), "{e}");
    }

    #[test]
    fn alert_thresholds_default_sort_and_round_trip() {
        let b = Budget::from_input(
            "b".into(),
            &input(r#"{"scope":"user","subject":"a","limit_usd":"1"}"#),
            Tier::Override,
            None,
        )
        .unwrap();
        assert_eq!(b.alert_thresholds, DEFAULT_ALERT_THRESHOLDS);
        let b = Budget::from_input(
            "b".into(),
            &input(
                r#"{"scope":"user","subject":"a","limit_usd":"1","alert_thresholds":[90,50,90],
                    "webhook_url":"https://hooks.example.com/t"}"#,
            ),
            Tier::Override,
            None,
        )
        .unwrap();
        assert_eq!(b.alert_thresholds, [50, 90]);
        let again = Budget::from_input("b".into(), &b.to_input(), Tier::Override, None).unwrap();
        assert_eq!(again, b);
        for bad in [
            "http://",
            "https://u:p@h/x",
            "https://h/a b",
            "hooks.example.com",
        ] {
            assert!(webhook_url_ok(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn brief_example_validates_and_round_trips() {
        let i = input(
            r#"{"scope":"user","subject":"alice","limit_usd":"5.00","period":"daily","timezone":"Europe/Paris","action":"warn","low_threshold_pct":10,"models":["gpt-*"]}"#,
        );
        let b = Budget::from_input("b1".into(), &i, Tier::Override, None).unwrap();
        assert_eq!(b.limit_money, Some(Money::parse_usd("5").unwrap()));
        assert_eq!(b.action, Action::Warn);
        let again = Budget::from_input("b1".into(), &b.to_input(), Tier::Override, None).unwrap();
        assert_eq!(again, b);
    }

    #[test]
    fn soft_settings_validate_and_round_trip() {
        let i = input(
            r#"{"scope":"user","subject":"dave","limit_usd":"10","period":"monthly","action":"shadow",
                "low_threshold_usd":"2.50","warnings":[{"at_pct":90,"message":"{percent_used}% used"},{"at_pct":75,"message":"75: {usd_remaining} left"}],
                "messages":{"refusal":"You've reached your {period} limit. Resets {reset_time}."}}"#,
        );
        let b = Budget::from_input("d".into(), &i, Tier::Override, None).unwrap();
        assert_eq!(b.action, Action::Shadow);
        assert_eq!(
            b.warnings.iter().map(|w| w.at_pct).collect::<Vec<_>>(),
            vec![75, 90]
        );
        let again = Budget::from_input("d".into(), &b.to_input(), Tier::Override, None).unwrap();
        assert_eq!(again, b);
        // Low by the absolute threshold, not yet by the percentage.
        let ten = Money::parse_usd("10").unwrap();
        assert!(b.is_low(
            (Some(ten), None),
            (Some(Money::parse_usd("2.49").unwrap()), None)
        ));
        assert!(!b.is_low(
            (Some(ten), None),
            (Some(Money::parse_usd("2.50").unwrap()), None)
        ));
    }

    #[test]
    fn invalid_budgets_name_the_field() {
        let cases = [
            (r#"{"scope":"user","limit_usd":"1"}"#, "subject"),
            (
                r#"{"scope":"planet","subject":"x","limit_usd":"1"}"#,
                "scope",
            ),
            (r#"{"scope":"user","subject":"a"}"#, "limit_usd"),
            (
                r#"{"scope":"user","subject":"a","limit_usd":"1","period":"hourly"}"#,
                "period",
            ),
            (
                r#"{"scope":"user","subject":"a","limit_usd":"1","timezone":"Nowhere/City"}"#,
                "timezone",
            ),
            (
                r#"{"scope":"user","subject":"a","limit_usd":"1","action":"downgrade"}"#,
                "downgrade_to",
            ),
            (
                r#"{"scope":"user","subject":"a","limit_usd":"1","downgrade_to":"gpt-4o-mini"}"#,
                "downgrade_to",
            ),
            (
                r#"{"scope":"user","subject":"a","limit_usd":"1","action":"throttle"}"#,
                "throttle",
            ),
            (
                r#"{"scope":"user","subject":"a","limit_usd":"1","action":"throttle","throttle":{"requests_per_minute":0}}"#,
                "throttle",
            ),
            (
                r#"{"scope":"user","subject":"a","limit_usd":"1","throttle":{"requests_per_minute":2}}"#,
                "throttle",
            ),
            (
                r#"{"scope":"user","subject":"a","limit_usd":"-1"}"#,
                "limit_usd",
            ),
            (
                r#"{"scope":"user","subject":"a","limit_usd":"1","period":"rolling:1h","rollover":{"cap_usd":"1"}}"#,
                "rollover",
            ),
            (
                r#"{"scope":"user","subject":"a","limit_usd":"1","warnings":[{"at_pct":0,"message":"x"}]}"#,
                "warnings[0].at_pct",
            ),
            (
                r#"{"scope":"user","subject":"a","limit_usd":"1","warnings":[{"at_pct":50,"message":"{usd_usde}"}]}"#,
                "warnings[0].message",
            ),
            (
                r#"{"scope":"user","subject":"a","limit_usd":"1","warnings":[{"at_pct":50,"message":"a"},{"at_pct":50,"message":"b"}]}"#,
                "warnings",
            ),
            (
                r#"{"scope":"user","subject":"a","limit_tokens":10,"low_threshold_usd":"1"}"#,
                "low_threshold_usd",
            ),
            (
                r#"{"scope":"user","subject":"a","limit_usd":"1","messages":{"refusal":"{"}}"#,
                "messages.refusal",
            ),
            (
                r#"{"scope":"global","subject":"a","limit_usd":"1"}"#,
                "subject",
            ),
            (
                r#"{"scope":"user","subject":"a","limit_usd":"1","alert_thresholds":[0,80]}"#,
                "alert_thresholds",
            ),
            (
                r#"{"scope":"user","subject":"a","limit_usd":"1","id":"a|b"}"#,
                "id",
            ),
            (
                r#"{"scope":"user","subject":"a","limit_usd":"1","webhook_url":"ftp://x"}"#,
                "webhook_url",
            ),
        ];
        for (json, field) in cases {
            let i = input(json);
            let id = i.id.clone().unwrap_or_else(|| "x".into());
            let e = Budget::from_input(id, &i, Tier::Override, None).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
        }
        assert!(
            serde_json::from_str::<BudgetInput>(r#"{"scope":"user","limit_usd":1.5}"#).is_err(),
            "money is never a float"
        );
    }
}
