//! Budgets at run time: which budgets apply to a request, reserving on all
//! of them at once (durably, before forwarding), settling, and the state
//! that headers, `/usage`, `/admin/budgets` and explain show.
//!
//! The authoritative ledger is in memory (a sharded ledger, no global lock);
//! every change also goes to the [`Journal`], so the store can rebuild it.
//! A reservation is acknowledged only once its journal batch committed. At
//! start-up, reservations left open by a crash are charged at their
//! reserved (worst-case) amount, with a record flagged `reconciled`: spend
//! never escapes a budget across restarts.
//!
//! Counter keys: `{budget id}|{subject}|{period start, ms}`; rolling windows
//! charge `…|b{bucket start, ms}` and check every bucket of the window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use jiff::{SignedDuration, Timestamp};
use tollgate_core::budget::{Action, Budget, Scope, Tier};
use tollgate_core::ledger::{Amount, Denied, Headroom, Limit, Line, Settled};
use tollgate_core::period::{Period, PeriodKind, bucket_start, window_buckets};
use tollgate_core::{Money, UsageRecord};
use tollgate_store::{Store, StoreError, StoredBudget};

use crate::identity::Caller;
pub use crate::ledger::Sizing;
use crate::ledger::{Ledger, LedgerError};

/// Reservations made by the proxy are settled by their request; this
/// deadline only bounds how long a lost one could hold headroom.
const PROXY_RESERVATION_TTL: SignedDuration = SignedDuration::from_hours(24);

/// The time, injectable so periods can be tested without sleeping.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock tests move by hand.
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(t: Timestamp) -> ManualClock {
        ManualClock(Mutex::new(t))
    }

    pub fn set(&self, t: Timestamp) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where a budget was declared: config budgets are changed in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Config,
    Admin,
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub budget: Arc<Budget>,
    pub source: Source,
}

/// The budgets, indexed by who they apply to, so finding a request's
/// budgets costs the same with ten budgets or a hundred thousand. Per scope,
/// a map from subject (or role) to the budgets' positions in `all`: looked
/// up by `&str`, no allocation per request; one position inline, since a
/// subject rarely has more than one budget per scope (100k budgets ≈ 5 MB).
#[derive(Default)]
pub struct BudgetSet {
    pub all: Vec<Entry>,
    overrides: HashMap<Scope, HashMap<Box<str>, Slots>>,
    roles: HashMap<Scope, HashMap<Box<str>, Slots>>,
    defaults: HashMap<Scope, Slots>,
    global: Slots,
}

/// Positions in [`BudgetSet::all`].
#[derive(Default)]
enum Slots {
    #[default]
    None,
    One(u32),
    Many(Vec<u32>),
}

impl Slots {
    fn push(&mut self, i: usize) {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        *self = match std::mem::take(self) {
            Slots::None => Slots::One(i),
            Slots::One(a) => Slots::Many(vec![a, i]),
            Slots::Many(mut v) => {
                v.push(i);
                Slots::Many(v)
            }
        };
    }

    fn positions(&self) -> &[u32] {
        match self {
            Slots::None => &[],
            Slots::One(i) => std::slice::from_ref(i),
            Slots::Many(v) => v,
        }
    }
}

impl BudgetSet {
    fn new(all: Vec<Entry>) -> BudgetSet {
        let mut set = BudgetSet {
            all,
            ..BudgetSet::default()
        };
        for (i, e) in set.all.iter().enumerate() {
            let b = &e.budget;
            match (&b.tier, b.scope, &b.subject) {
                (Tier::Override, Scope::Global, _) => set.global.push(i),
                (Tier::Override, scope, Some(s)) => set
                    .overrides
                    .entry(scope)
                    .or_default()
                    .entry(s.as_str().into())
                    .or_default()
                    .push(i),
                (Tier::Override, _, None) => {}
                (Tier::Role(r), scope, _) => set
                    .roles
                    .entry(scope)
                    .or_default()
                    .entry(r.as_str().into())
                    .or_default()
                    .push(i),
                (Tier::Default, scope, _) => set.defaults.entry(scope).or_default().push(i),
            }
        }
        set
    }
}

impl std::ops::Deref for BudgetSet {
    type Target = [Entry];
    fn deref(&self) -> &[Entry] {
        &self.all
    }
}

/// One budget as it applies to one request: the subject it is counted
/// for, the current period, and the ledger line.
#[derive(Clone, Debug)]
pub struct Applied {
    pub budget: Arc<Budget>,
    pub subject: String,
    pub period: Period,
    pub resets_at: Option<Timestamp>,
    pub line: Line,
}

/// A budget's state now.
#[derive(Clone, Debug)]
pub struct State {
    pub spent: Amount,
    pub reserved: Amount,
    pub limit: Limit,
    pub headroom: Headroom,
    pub status: &'static str,
}

impl State {
    /// The fraction left (0..=1) of the tighter unit, for picking the
    /// tightest budget; `None` when unlimited.
    pub fn fraction_left(&self) -> Option<f64> {
        // Display-only ratio for ordering headers; never used for money.
        let m = self.limit.money.zip(self.headroom.money).map(|(l, h)| {
            if l.units() <= 0 {
                0.0
            } else {
                h.units() as f64 / l.units() as f64
            }
        });
        let t = self
            .limit
            .tokens
            .zip(self.headroom.tokens)
            .map(|(l, h)| if l == 0 { 0.0 } else { h as f64 / l as f64 });
        match (m, t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A reservation held for one request.
#[derive(Clone, Debug)]
pub struct Reserved {
    pub id: String,
    /// Output tokens the reservation covers.
    pub granted: u64,
    pub amount: Amount,
    pub charges: Vec<String>,
    /// A `warn` budget is past its limit with this request.
    pub warned: bool,
}

/// Why a request was refused.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub applied: Applied,
    pub headroom: Headroom,
}

#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("budget {} exceeded", .0.applied.budget.id)]
    Refused(Box<Refusal>),
    #[error("the ledger is unavailable: {0}")]
    Unavailable(String),
}

pub struct BudgetEngine {
    entries: RwLock<Arc<BudgetSet>>,
    config_budgets: Vec<Budget>,
    ledger: Arc<dyn Ledger>,
    ticks: std::sync::atomic::AtomicU64,
    pub clock: Arc<dyn Clock>,
    pub min_output_tokens: u64,
    pub default_max_output_tokens: u64,
    /// `budgets.unknown_input_tokens`; `None`: the model's context window.
    pub unknown_input_tokens: Option<u64>,
    /// Settlements whose usage exceeded their reservation.
    pub overspent: std::sync::atomic::AtomicU64,
    /// Settlements whose reported usage was clamped or implausible.
    pub suspicious: std::sync::atomic::AtomicU64,
}

/// Input reserved for what only the provider can size, for a model whose
/// context window the catalog does not know.
pub const DEFAULT_UNKNOWN_INPUT_TOKENS: u64 = 200_000;

fn key(b: &Budget, subject: &str, start: Timestamp) -> String {
    format!("{}|{subject}|{}", b.id, start.as_millisecond())
}

fn bucket_key(b: &Budget, subject: &str, bucket: Timestamp) -> String {
    format!("{}|{subject}|b{}", b.id, bucket.as_millisecond())
}

impl BudgetEngine {
    /// Loads stored budgets over `ledger`.
    pub async fn load(
        store: &dyn Store,
        ledger: Arc<dyn Ledger>,
        config_budgets: Vec<Budget>,
        clock: Arc<dyn Clock>,
        sizing: &crate::config::BudgetsConfig,
    ) -> Result<BudgetEngine, StoreError> {
        let engine = BudgetEngine {
            entries: RwLock::new(Arc::new(BudgetSet::default())),
            config_budgets,
            ledger,
            ticks: std::sync::atomic::AtomicU64::new(0),
            clock,
            min_output_tokens: sizing.min_output_tokens,
            default_max_output_tokens: sizing.default_max_output_tokens,
            unknown_input_tokens: sizing.unknown_input_tokens,
            overspent: Default::default(),
            suspicious: Default::default(),
        };
        engine.reload(store).await?;
        Ok(engine)
    }

    /// Charges reservations left open by an unclean stop (see [`Ledger::reconcile`]).
    pub async fn reconcile(&self) -> Result<usize, StoreError> {
        self.ledger.reconcile(self.now()).await
    }

    /// Re-reads stored budgets (admin API, CLI, another instance).
    pub async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        let mut entries: Vec<Entry> = self
            .config_budgets
            .iter()
            .map(|b| Entry {
                budget: Arc::new(b.clone()),
                source: Source::Config,
            })
            .collect();
        // A page at a time: 100k stored budgets never sit in memory twice.
        let mut after = None;
        loop {
            let page = store.budgets_page(after, 2_000).await?;
            let Some(last) = page.last() else { break };
            after = Some((last.created_at, last.id.clone()));
            for s in page {
                match Budget::from_input(s.id.clone(), &s.input, Tier::Override, None) {
                    Ok(b) => entries.push(Entry {
                        budget: Arc::new(b),
                        source: Source::Admin,
                    }),
                    Err(e) => {
                        tracing::error!(budget = %s.id, error = %e, "stored budget is invalid; ignored")
                    }
                }
            }
        }
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(BudgetSet::new(entries));
        Ok(())
    }

    pub fn entries(&self) -> Arc<BudgetSet> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The subject a caller has in `scope`, if any.
    fn subject(caller: &Caller, scope: Scope) -> Option<String> {
        match scope {
            Scope::Global => Some("*".into()),
            Scope::Tenant => caller.tenant.clone(),
            Scope::User => caller.user.clone(),
            Scope::Session => caller.session.clone(),
            Scope::Key => caller.key_id.clone(),
            Scope::Budget => caller.budget_id.clone(),
        }
    }

    /// Every budget that applies to `caller` using `model` now. Per scope,
    /// the most specific tier with a budget covering `model` wins:
    /// override > role > default.
    pub fn applicable(&self, caller: &Caller, model: &str) -> Vec<Applied> {
        let now = self.now();
        let set = self.entries();
        let mut out = Vec::new();
        for scope in Scope::ALL {
            if let Some(subject) = Self::subject(caller, scope) {
                out.extend(self.applicable_in(&set, caller, model, scope, &subject, now));
            }
        }
        out
    }

    /// The budgets of one scope that apply (`model` empty: budgets that
    /// cover every model, or a model glob itself).
    fn applicable_in(
        &self,
        set: &BudgetSet,
        caller: &Caller,
        model: &str,
        scope: Scope,
        subject: &str,
        now: Timestamp,
    ) -> Vec<Applied> {
        let covers = |b: &Budget| {
            b.models.is_empty()
                || b.models
                    .iter()
                    .any(|p| p == model || wildmatch::WildMatch::new(p).matches(model))
        };
        // A tier counts for this model only through budgets that cover it:
        // an override for `claude-*` leaves the default in force for `gpt-*`.
        let pick = |idx: Option<&Slots>| -> Vec<&Entry> {
            idx.map_or(&[][..], Slots::positions)
                .iter()
                .filter_map(|&i| set.all.get(i as usize))
                .filter(|e| covers(&e.budget))
                .collect()
        };
        let overrides = if scope == Scope::Global {
            pick(Some(&set.global))
        } else {
            pick(set.overrides.get(&scope).and_then(|m| m.get(subject)))
        };
        let chosen: Vec<&Entry> = if !overrides.is_empty() {
            overrides
        } else {
            let roles = caller
                .role
                .as_ref()
                .map(|r| pick(set.roles.get(&scope).and_then(|m| m.get(r.as_str()))))
                .unwrap_or_default();
            if !roles.is_empty() {
                roles
            } else {
                pick(set.defaults.get(&scope))
            }
        };
        chosen
            .into_iter()
            .map(|e| self.applied(e.budget.clone(), subject.to_string(), now))
            .collect()
    }

    /// `budget` as it applies to `subject` at `now`.
    pub fn applied(&self, budget: Arc<Budget>, subject: String, now: Timestamp) -> Applied {
        let period = budget.period.period_at(&budget.calendar, now);
        let (charge, window, resets_at) = match budget.period {
            PeriodKind::Rolling(w) => {
                let buckets = window_buckets(w, now);
                let oldest = buckets.last().copied();
                (
                    bucket_key(&budget, &subject, bucket_start(w, now)),
                    buckets
                        .iter()
                        .map(|b| bucket_key(&budget, &subject, *b))
                        .collect(),
                    // Spend starts leaving the window when the oldest bucket does.
                    oldest
                        .and_then(|b| b.checked_add(w).ok())
                        .and_then(|t| t.checked_add(PeriodKind::bucket_width(w)).ok()),
                )
            }
            _ => {
                let k = key(&budget, &subject, period.start);
                (k.clone(), vec![k], period.end)
            }
        };
        let limit = self.effective_limit(&budget, &subject, now);
        let line = Line {
            charge,
            window,
            limit,
            enforce: budget.action == Action::Block,
        };
        Applied {
            budget,
            subject,
            period,
            resets_at,
            line,
        }
    }

    /// The limit for the current period: the base, plus unused allowance of
    /// the previous period up to the rollover cap.
    fn effective_limit(&self, b: &Budget, subject: &str, now: Timestamp) -> Limit {
        let base = Limit {
            money: b.limit_money,
            tokens: b.limit_tokens,
        };
        let Some(r) = &b.rollover else { return base };
        let Some(prev) = b.period.previous(&b.calendar, now) else {
            return base;
        };
        let spent = self.ledger.counter(&key(b, subject, prev.start)).spent;
        Limit {
            money: base.money.map(|l| {
                let unused = l.saturating_sub(spent.money).max(Money::ZERO);
                l + r.cap_money.map_or(unused, |c| unused.min(c))
            }),
            tokens: base.tokens.map(|l| {
                let unused = l.saturating_sub(spent.tokens);
                l + r.cap_tokens.map_or(unused, |c| unused.min(c))
            }),
        }
    }

    pub fn state(&self, a: &Applied) -> State {
        let used = self.ledger.used(&a.line.window);
        let headroom = self.ledger.headroom(&a.line);
        let low_pct = i128::from(a.budget.low_threshold_pct);
        let over = headroom.money.is_some_and(|m| m.units() <= 0) || headroom.tokens == Some(0);
        let low = a
            .line
            .limit
            .money
            .zip(headroom.money)
            .is_some_and(|(l, h)| h.units() * 100 < l.units() * low_pct)
            || a.line
                .limit
                .tokens
                .zip(headroom.tokens)
                .is_some_and(|(l, h)| i128::from(h) * 100 < i128::from(l) * low_pct);
        State {
            spent: used.spent,
            reserved: used.reserved,
            limit: a.line.limit,
            headroom,
            status: if over {
                "over_limit"
            } else if low {
                "low"
            } else {
                "ok"
            },
        }
    }

    /// Reserves `base + n × per_unit` on every applicable budget for the
    /// largest `n ≤ want` all of them afford (at least `min`), durably.
    pub async fn reserve(
        &self,
        id: &str,
        applied: &[Applied],
        sizing: Sizing,
        template: UsageRecord,
    ) -> Result<Reserved, ReserveError> {
        let lines: Vec<Line> = applied.iter().map(|a| a.line.clone()).collect();
        let expires_at = self
            .now()
            .checked_add(PROXY_RESERVATION_TTL)
            .unwrap_or(Timestamp::MAX);
        let granted = match self
            .ledger
            .reserve(id, lines.clone(), sizing, expires_at, template)
            .await
        {
            Ok(n) => n,
            Err(LedgerError::Denied(Denied { line, headroom })) => {
                return Err(ReserveError::Refused(Box::new(Refusal {
                    applied: applied[line].clone(),
                    headroom,
                })));
            }
            Err(LedgerError::Unavailable(e)) => return Err(ReserveError::Unavailable(e)),
        };
        let amount = sizing.amount(granted);
        let warned = applied.iter().any(|a| {
            a.budget.action == Action::Warn && {
                let h = self.ledger.headroom(&a.line);
                h.money.is_some_and(|m| m.units() <= 0) || h.tokens == Some(0)
            }
        });
        let charges: Vec<String> = lines.iter().map(|l| l.charge.clone()).collect();
        Ok(Reserved {
            id: id.to_string(),
            granted,
            amount,
            charges,
            warned,
        })
    }

    /// Settles a finished request: charges `actual` (if it reserved) and
    /// writes its record, in one journal entry.
    pub fn settle(&self, reserved: Option<&Reserved>, actual: Amount, record: UsageRecord) {
        let (id, charges) = match reserved {
            Some(r) => (Some(r.id.as_str()), r.charges.as_slice()),
            None => (None, &[][..]),
        };
        let settled = self.ledger.settle(id, charges, actual, record);
        if let (Settled::Committed { overage: true }, Some(r)) = (settled, reserved) {
            self.overspent
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(request_id = %r.id, reserved = %r.amount.money, actual = %actual.money, "usage exceeded the reservation (recorded as overspend)");
        }
    }

    /// Gives a reservation back (the request never reached a provider).
    pub fn release(&self, reserved: &Reserved) {
        self.ledger.release(&reserved.id);
    }

    /// Releases reservations past their deadline (a safety net: proxy
    /// requests settle their own). A late settlement still charges them.
    pub fn expire_due(&self) -> usize {
        let n = self.ledger.expire_due(self.now());
        let tick = self
            .ticks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if tick.is_multiple_of(30) {
            self.prune_counters();
        }
        n
    }

    /// Drops in-memory counters no budget can read again: rolling buckets
    /// that left their window, and calendar periods before the previous one
    /// (kept for rollover). Counters of budgets that no longer exist stay:
    /// they are cheap and a re-created budget may use them.
    pub fn prune_counters(&self) {
        let now = self.now();
        let entries = self.entries();
        let mut oldest: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
        for e in entries.iter() {
            let b = &e.budget;
            let cutoff = match b.period {
                PeriodKind::Rolling(w) => now
                    .checked_sub(w)
                    .ok()
                    .and_then(|t| t.checked_sub(PeriodKind::bucket_width(w)).ok()),
                PeriodKind::Lifetime => None,
                _ => b.period.previous(&b.calendar, now).map(|p| p.start),
            };
            if let Some(c) = cutoff {
                oldest.insert(b.id.as_str(), c.as_millisecond());
            }
        }
        self.ledger.retain_counters(&|key: &str| {
            let mut parts = key.rsplitn(2, '|');
            let (Some(start), Some(rest)) = (parts.next(), parts.next()) else {
                return true;
            };
            let id = rest.split('|').next().unwrap_or(rest);
            let start: Option<i64> = start.trim_start_matches('b').parse().ok();
            match (oldest.get(id), start) {
                (Some(cut), Some(s)) => s >= *cut,
                _ => true,
            }
        });
    }

    /// Validates and stores a budget from the admin API or CLI.
    pub async fn put(&self, store: &dyn Store, stored: StoredBudget) -> Result<Budget, PutError> {
        let b = Budget::from_input(stored.id.clone(), &stored.input, Tier::Override, None)
            .map_err(PutError::Invalid)?;
        if self.config_budgets.iter().any(|c| c.id == stored.id) {
            return Err(PutError::ConfigOwned(stored.id));
        }
        store.put_budget(&stored).await?;
        self.reload(store).await?;
        Ok(b)
    }

    pub fn is_config_budget(&self, id: &str) -> bool {
        self.config_budgets.iter().any(|c| c.id == id)
    }

    /// Every (budget, subject) with spend or reservations in its current
    /// period, plus every budget with a fixed subject.
    pub fn instances(&self) -> Vec<Applied> {
        let now = self.now();
        let entries = self.entries();
        let mut out = Vec::new();
        let keys: Vec<String> = self.ledger.keys();
        for e in entries.iter() {
            let b = &e.budget;
            match (&b.subject, b.scope) {
                (Some(s), _) => out.push(self.applied(b.clone(), s.clone(), now)),
                (None, Scope::Global) => out.push(self.applied(b.clone(), "*".into(), now)),
                (None, _) => {
                    let prefix = format!("{}|", b.id);
                    let mut subjects: Vec<String> = keys
                        .iter()
                        .filter_map(|k| k.strip_prefix(&prefix))
                        .filter_map(|rest| rest.rsplit_once('|').map(|(s, _)| s.to_string()))
                        .collect();
                    subjects.sort();
                    subjects.dedup();
                    for s in subjects {
                        let a = self.applied(b.clone(), s, now);
                        let st = self.state(&a);
                        if st.spent != Amount::default() || st.reserved != Amount::default() {
                            out.push(a);
                        }
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("{0}")]
    Invalid(tollgate_core::budget::BudgetError),
    #[error("budget {0:?} is declared in the config file; change it there")]
    ConfigOwned(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BudgetEngine {
    /// How a request is reserved: `input_tokens` at the highest input rate,
    /// plus up to `max_output` (or the default) output tokens for each of
    /// `choices` completions at the higher of the output and reasoning rates.
    /// The ledger grants a per-choice output limit.
    pub fn sizing(
        &self,
        price: &tollgate_core::ModelPrice,
        input_tokens: u64,
        max_output: Option<u64>,
        makes_output: bool,
        choices: u64,
    ) -> Sizing {
        let (input_rate, output_rate) = price.reservation_rates(input_tokens);
        let want = if makes_output {
            max_output.unwrap_or(self.default_max_output_tokens)
        } else {
            0
        };
        let choices = choices.max(1);
        Sizing {
            base: Amount::new(input_rate.cost(input_tokens), input_tokens),
            per_unit: Amount::new(output_rate.cost(choices), choices),
            want,
            min: self.min_output_tokens.min(want),
        }
    }

    /// Input tokens reserved for a request part only the provider can size.
    pub fn unknown_input_tokens(&self, model: &str, catalog: &tollgate_core::Catalog) -> u64 {
        self.unknown_input_tokens
            .or_else(|| catalog.context_window(model))
            .unwrap_or(DEFAULT_UNKNOWN_INPUT_TOKENS)
    }

    /// What would happen to this request now, without reserving anything.
    pub fn plan(&self, applied: &[Applied], s: &Sizing) -> Result<u64, Box<Refusal>> {
        let lines: Vec<Line> = applied.iter().map(|a| a.line.clone()).collect();
        self.ledger
            .plan(&lines, s)
            .map_err(|Denied { line, headroom }| {
                Box::new(Refusal {
                    applied: applied[line].clone(),
                    headroom,
                })
            })
    }

    /// Every budget that applies to `caller`, whatever the model.
    pub fn applicable_any_model(&self, caller: &Caller) -> Vec<Applied> {
        let now = self.now();
        let mut out = Vec::new();
        let entries = self.entries();
        for scope in Scope::ALL {
            let Some(subject) = Self::subject(caller, scope) else {
                continue;
            };
            let mut models: Vec<&str> = entries
                .iter()
                .filter(|e| e.budget.scope == scope)
                .flat_map(|e| e.budget.models.iter().map(String::as_str))
                .collect();
            models.push("");
            let mut seen = std::collections::HashSet::new();
            for m in models {
                for a in self.applicable_in(&entries, caller, m, scope, &subject, now) {
                    if seen.insert(a.line.charge.clone()) {
                        out.push(a);
                    }
                }
            }
        }
        out
    }
}

/// The `X-Budget-*` header values for one budget's state: limit and
/// remaining in USD when it has a money limit, else in tokens.
pub fn header_values(a: &Applied, st: &State) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    match (
        st.limit.money,
        st.headroom.money,
        st.limit.tokens,
        st.headroom.tokens,
    ) {
        (Some(l), Some(h), _, _) => {
            out.push(("x-budget-limit", l.to_string()));
            out.push(("x-budget-remaining", h.to_string()));
        }
        (_, _, Some(l), Some(h)) => {
            out.push(("x-budget-limit", format!("{l} tokens")));
            out.push(("x-budget-remaining", format!("{h} tokens")));
        }
        _ => {}
    }
    if let Some(r) = a.resets_at {
        out.push(("x-budget-reset", r.to_string()));
    }
    out.push(("x-budget-status", st.status.to_string()));
    out.push(("x-budget-id", a.budget.id.clone()));
    out
}
