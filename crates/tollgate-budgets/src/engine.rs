//! Budgets at run time: which budgets apply to a request, reserving on all
//! of them at once (durably, before forwarding), settling, and the state
//! that headers, `/usage`, `/admin/budgets` and explain show.
//!
//! The ledger is behind the [`Ledger`] trait (the embedded one: memory,
//! made durable by the reservation log and the journal). A reservation is
//! durable before its request is forwarded, with the request's record as
//! its payload; at start-up, a reservation a crash left open is charged at
//! its reserved (worst-case) amount from that payload, flagged
//! `reconciled`: spend never escapes a budget across restarts.
//!
//! Counter keys ([`CounterKey`]): the group `{budget id}|{subject}` and the
//! period's start; a rolling window charges the bucket of now and checks
//! its group's running sum from the window's oldest bucket on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use jiff::{SignedDuration, Timestamp};
use tollgate_core::budget::{Action, Budget, Scope, Tier};
use tollgate_core::ledger::{Amount, CounterKey, Denied, Headroom, Limit, Line, Settled, Window};
use tollgate_core::period::{Period, PeriodKind, bucket_start, window_start};
use tollgate_core::{Money, UsageRecord};
use tollgate_store::{Store, StoreError, StoredBudget};

pub use crate::ledger::Sizing;
use crate::ledger::{FailPolicy, Ledger, LedgerError, Payload, Reservation};
use crate::levels::Levels;
use tollgate_core::Caller;

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
#[derive(Clone, Default)]
pub struct BudgetSet {
    pub all: Vec<Entry>,
    overrides: HashMap<Scope, HashMap<Box<str>, Slots>>,
    roles: HashMap<Scope, HashMap<Box<str>, Slots>>,
    defaults: HashMap<Scope, Slots>,
    global: Slots,
    /// Position of each budget by id, in id order (lookups, stable pages).
    by_id: std::collections::BTreeMap<Box<str>, u32>,
}

/// Positions in [`BudgetSet::all`].
#[derive(Clone, Default)]
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

    fn remove(&mut self, i: u32) {
        *self = match std::mem::take(self) {
            Slots::One(a) if a == i => Slots::None,
            Slots::Many(mut v) => {
                v.retain(|&x| x != i);
                match v.as_slice() {
                    [] => Slots::None,
                    [one] => Slots::One(*one),
                    _ => Slots::Many(v),
                }
            }
            other => other,
        };
    }

    fn replace(&mut self, old: u32, new: u32) {
        match self {
            Slots::One(a) if *a == old => *a = new,
            Slots::Many(v) => v.iter_mut().filter(|x| **x == old).for_each(|x| *x = new),
            _ => {}
        }
    }
}

impl BudgetSet {
    fn new(all: Vec<Entry>) -> BudgetSet {
        let mut set = BudgetSet::default();
        for e in all {
            set.upsert(e);
        }
        set
    }

    /// The index slot a budget belongs to (`None`: an override without a
    /// subject, which applies to nobody).
    fn slot_mut(&mut self, b: &Budget) -> Option<&mut Slots> {
        match (&b.tier, b.scope, &b.subject) {
            (Tier::Override, Scope::Global, _) => Some(&mut self.global),
            (Tier::Override, scope, Some(s)) => Some(
                self.overrides
                    .entry(scope)
                    .or_default()
                    .entry(s.as_str().into())
                    .or_default(),
            ),
            (Tier::Override, _, None) => None,
            (Tier::Role(r), scope, _) => Some(
                self.roles
                    .entry(scope)
                    .or_default()
                    .entry(r.as_str().into())
                    .or_default(),
            ),
            (Tier::Default, scope, _) => Some(self.defaults.entry(scope).or_default()),
        }
    }

    /// Adds a budget, or replaces the one with its id, updating the index
    /// in place (no rebuild).
    pub fn upsert(&mut self, e: Entry) {
        match self.by_id.get(e.budget.id.as_str()).copied() {
            Some(i) => {
                let old = std::mem::replace(&mut self.all[i as usize], e.clone());
                if let Some(slot) = self.slot_mut(&old.budget) {
                    slot.remove(i);
                }
                if let Some(slot) = self.slot_mut(&e.budget) {
                    slot.push(i as usize);
                }
            }
            None => {
                let i = self.all.len();
                self.by_id.insert(
                    e.budget.id.as_str().into(),
                    u32::try_from(i).unwrap_or(u32::MAX),
                );
                if let Some(slot) = self.slot_mut(&e.budget) {
                    slot.push(i);
                }
                self.all.push(e);
            }
        }
    }

    /// Removes the budget with `id`, if any: the last budget takes its
    /// place, and the index follows.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(i) = self.by_id.remove(id) else {
            return false;
        };
        let last = u32::try_from(self.all.len() - 1).unwrap_or(u32::MAX);
        let removed = self.all.swap_remove(i as usize);
        if let Some(slot) = self.slot_mut(&removed.budget) {
            slot.remove(i);
        }
        if i != last {
            let moved = self.all[i as usize].budget.clone();
            if let Some(slot) = self.slot_mut(&moved) {
                slot.replace(last, i);
            }
            self.by_id.insert(moved.id.as_str().into(), i);
        }
        true
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.by_id.get(id).map(|&i| &self.all[i as usize])
    }

    /// Budgets in id order, from the first id after `after`.
    pub fn by_id_after<'a>(&'a self, after: Option<&str>) -> impl Iterator<Item = &'a Entry> + 'a {
        use std::ops::Bound;
        let start = match after {
            Some(a) => Bound::Excluded(Box::<str>::from(a)),
            None => Bound::Unbounded,
        };
        self.by_id
            .range::<Box<str>, _>((start, Bound::Unbounded))
            .map(|(_, &i)| &self.all[i as usize])
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
    /// Output tokens (per choice) the reservation covers.
    pub granted: u64,
    pub amount: Amount,
    /// What one more output token per choice adds.
    pub per_unit: Amount,
    pub charges: Vec<CounterKey>,
    /// A `warn` budget is past its limit with this request.
    pub warned: bool,
    /// A `shadow` budget would have refused this request.
    pub would_block: bool,
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
    /// `budgets.fail`: proxied requests' holds the ledger cannot make durable.
    pub fail: FailPolicy,
    /// Settlements whose usage exceeded their reservation.
    pub overspent: std::sync::atomic::AtomicU64,
    /// Settlements whose reported usage was clamped or implausible.
    pub suspicious: std::sync::atomic::AtomicU64,
    /// The stored budgets' version the loaded set reflects.
    known_version: Mutex<Option<(i64, i64)>>,
    /// Settlements, refusals and level changes, for whoever listens.
    pub events: Arc<crate::events::Events>,
    /// Every settled record counted, for `/metrics`.
    pub metrics: crate::metrics::RecordMetrics,
    /// Judges budget levels after settlements and refusals, in order
    /// (only while someone listens).
    levels: Levels,
}

/// How requests are sized when they reserve (the `budgets:` settings).
#[derive(Clone, Copy, Debug)]
pub struct SizingConfig {
    /// A capped request keeps at least this many output tokens, or is refused.
    pub min_output_tokens: u64,
    /// Output reserved (and set) for a request that names no limit.
    pub default_max_output_tokens: u64,
    /// Input reserved for what only the provider can size; `None`: the
    /// model's context window.
    pub unknown_input_tokens: Option<u64>,
    /// A proxied request whose hold cannot be made durable: refused
    /// (`closed`) or forwarded with the hold in memory (`open`).
    pub fail: FailPolicy,
}

/// Input reserved for what only the provider can size, for a model whose
/// context window the catalog does not know.
pub const DEFAULT_UNKNOWN_INPUT_TOKENS: u64 = 200_000;

fn key(b: &Budget, subject: &str, start: Timestamp) -> CounterKey {
    CounterKey::period(CounterKey::group(&b.id, subject), start.as_millisecond())
}

impl BudgetEngine {
    /// Loads stored budgets over `ledger`.
    pub async fn load(
        store: &dyn Store,
        ledger: Arc<dyn Ledger>,
        config_budgets: Vec<Budget>,
        clock: Arc<dyn Clock>,
        sizing: &SizingConfig,
    ) -> Result<BudgetEngine, StoreError> {
        let now = clock.now();
        let mut config_budgets = config_budgets;
        let mut first_seen_now = Vec::new();
        // Budgets that have charged anything existed before first-seen
        // times were kept (an upgraded database): their start is unknown.
        for b in &mut config_budgets {
            let (seen, new) = store.budget_first_seen(&b.id, now).await?;
            let charged = !ledger.subjects(&b.id, None, 1).await.is_empty();
            if !new || !charged {
                b.existed_since = Some(seen);
            }
            if new && !charged {
                first_seen_now.push(Arc::new(b.clone()));
            }
        }
        let events: Arc<crate::events::Events> = Default::default();
        let engine = BudgetEngine {
            entries: RwLock::new(Arc::new(BudgetSet::default())),
            config_budgets,
            ticks: std::sync::atomic::AtomicU64::new(0),
            clock,
            min_output_tokens: sizing.min_output_tokens,
            default_max_output_tokens: sizing.default_max_output_tokens,
            unknown_input_tokens: sizing.unknown_input_tokens,
            fail: sizing.fail,
            overspent: Default::default(),
            suspicious: Default::default(),
            known_version: Mutex::new(None),
            levels: Levels::spawn(ledger.clone(), events.clone()),
            events,
            metrics: Default::default(),
            ledger,
        };
        // A budget new to the config finds its period's spend already made
        // (counted before any request can charge it: none is served yet).
        for b in &first_seen_now {
            engine.count_existing_spend(store, b).await?;
        }
        engine.reload(store).await?;
        Ok(engine)
    }

    /// Settles reservations a previous process left open: a request's is
    /// charged at its reserved amount (it may have reached the provider),
    /// with its record flagged `reconciled` and estimated; one that owes
    /// nothing until committed stays held until it is, or expires.
    /// Returns how many were charged.
    pub async fn reconcile(&self) -> Result<usize, LedgerError> {
        let mut n = 0;
        for o in self.ledger.orphans().await? {
            let Payload::Record(mut record) = o.payload else {
                continue;
            };
            record.cost = o.amount.money;
            record.usage.output_tokens = o.amount.tokens.saturating_sub(record.usage.input_tokens);
            record.flags.usage_estimated = true;
            record.flags.reconciled = true;
            self.ledger
                .commit(Some(&o.id), &o.charges, o.amount, Payload::Record(record));
            n += 1;
        }
        if n > 0 {
            tracing::warn!(
                count = n,
                "charged reservations left open by an unclean stop at their reserved amount"
            );
        }
        self.ledger.flush().await;
        Ok(n)
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
                    Ok(mut b) => {
                        b.existed_since = Some(s.created_at);
                        entries.push(Entry {
                            budget: Arc::new(b),
                            source: Source::Admin,
                        })
                    }
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
            s => caller
                .paths
                .iter()
                .find(|(p, _)| *p == s)
                .map(|(_, path)| path.clone()),
        }
    }

    /// Every budget that applies to `caller` using `model` now. Per scope,
    /// the most specific tier with a budget covering `model` wins:
    /// override > role > default.
    pub async fn applicable(&self, caller: &Caller, model: &str) -> Vec<Applied> {
        let now = self.now();
        let mut out = Vec::new();
        {
            let set = self.entries();
            for scope in Scope::ALL {
                if let Some(subject) = Self::subject(caller, scope) {
                    out.extend(self.applicable_in(&set, caller, model, scope, &subject, now));
                }
            }
        }
        self.roll_over(&mut out).await;
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
            .map(|e| self.applied_base(e.budget.clone(), subject.to_string(), now))
            .collect()
    }

    /// `budget` as it applies to `subject` at `now`.
    pub async fn applied(&self, budget: Arc<Budget>, subject: String, now: Timestamp) -> Applied {
        let mut a = [self.applied_base(budget, subject, now)];
        self.roll_over(&mut a).await;
        let [a] = a;
        a
    }

    /// [`Self::applied`] at the base limit: before unused allowance of the
    /// previous period rolls over (the charge, window and period are final).
    fn applied_base(&self, budget: Arc<Budget>, subject: String, now: Timestamp) -> Applied {
        let period = budget.period.period_at(&budget.calendar, now);
        let (charge, window, resets_at) = match budget.period {
            PeriodKind::Rolling(w) => {
                let oldest = window_start(w, now);
                (
                    CounterKey::bucket(
                        CounterKey::group(&budget.id, &subject),
                        bucket_start(w, now).as_millisecond(),
                    ),
                    Window::Rolling {
                        since: oldest.as_millisecond(),
                    },
                    // Spend starts leaving the window when the oldest bucket does.
                    oldest
                        .checked_add(w)
                        .and_then(|t| t.checked_add(PeriodKind::bucket_width(w)))
                        .ok(),
                )
            }
            _ => (
                key(&budget, &subject, period.start),
                Window::Period,
                period.end,
            ),
        };
        let limit = Limit {
            money: budget.limit_money,
            tokens: budget.limit_tokens,
        };
        let line = Line {
            charge,
            window,
            limit,
            // Downgrade and throttle budgets refuse at their limit like
            // block; the proxy then takes their way out (another model, a
            // lower rate).
            enforce: matches!(
                budget.action,
                Action::Block | Action::Downgrade | Action::Throttle
            ),
        };
        Applied {
            budget,
            subject,
            period,
            resets_at,
            line,
        }
    }

    /// Raises the limits of budgets with rollover to the current period's:
    /// the base, plus unused allowance of the previous period up to the
    /// rollover cap.
    async fn roll_over(&self, applied: &mut [Applied]) {
        for a in applied.iter_mut() {
            let b = &a.budget;
            let Some(r) = &b.rollover else { continue };
            let Some(prev) = b.period.previous(&b.calendar, a.period.start) else {
                continue;
            };
            // Rollover begins after the first full period: a period the
            // budget did not exist for leaves no unused allowance.
            if b.existed_since.is_some_and(|t| t > prev.start) {
                continue;
            }
            let spent = self
                .ledger
                .counter(&key(b, &a.subject, prev.start))
                .await
                .spent;
            let base = a.line.limit;
            a.line.limit = Limit {
                money: base.money.map(|l| {
                    let unused = l.saturating_sub(spent.money).max(Money::ZERO);
                    l + r.cap_money.map_or(unused, |c| unused.min(c))
                }),
                tokens: base.tokens.map(|l| {
                    let unused = l.saturating_sub(spent.tokens);
                    l + r.cap_tokens.map_or(unused, |c| unused.min(c))
                }),
            };
        }
    }

    pub async fn state(&self, a: &Applied) -> State {
        let used = self.ledger.used(std::slice::from_ref(&a.line)).await;
        Self::state_of(a, used.first().copied().unwrap_or_default())
    }

    /// The states of `applied`, in order, read in one call.
    pub async fn states(&self, applied: &[Applied]) -> Vec<State> {
        let lines: Vec<Line> = applied.iter().map(|a| a.line.clone()).collect();
        let used = self.ledger.used(&lines).await;
        applied
            .iter()
            .zip(used)
            .map(|(a, u)| Self::state_of(a, u))
            .collect()
    }

    pub(crate) fn state_of(a: &Applied, used: tollgate_core::ledger::Counter) -> State {
        let headroom = a.line.headroom(used);
        let over = headroom.money.is_some_and(|m| m.units() <= 0) || headroom.tokens == Some(0);
        let limit = a.line.limit;
        let low = a.budget.is_low(
            (limit.money, limit.tokens),
            (headroom.money, headroom.tokens),
        );
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
        let expires_at = self
            .now()
            .checked_add(PROXY_RESERVATION_TTL)
            .unwrap_or(Timestamp::MAX);
        // Should this process die before settling, the template is charged
        // at the reserved amount (see `reconcile`).
        self.reserve_until(
            id,
            applied,
            sizing,
            expires_at,
            Payload::record(template),
            self.fail,
        )
        .await
    }

    /// As [`Self::reserve`], held until `expires_at` (then released
    /// unless settled), with `payload` as what a crash leaves: a record
    /// to charge, or nothing (a Cycles reservation owes nothing unless
    /// its holder commits it).
    pub async fn reserve_until(
        &self,
        id: &str,
        applied: &[Applied],
        sizing: Sizing,
        expires_at: Timestamp,
        payload: Payload,
        fail: FailPolicy,
    ) -> Result<Reserved, ReserveError> {
        let r = Reservation {
            id: id.to_string(),
            lines: applied.iter().map(|a| a.line.clone()).collect(),
            sizing,
            expires_at,
            fail,
        };
        let granted = match self.ledger.reserve(&r, payload).await {
            Ok(n) => n,
            Err(LedgerError::Denied(d)) => {
                let r = self.refusal(applied, d, &sizing).await;
                if self.events.wanted() {
                    self.events.publish(crate::events::Event::Refused {
                        request_id: id.to_string(),
                        budget_id: r.applied.budget.id.clone(),
                        subject: r.applied.subject.clone(),
                        status: r.applied.budget.refusal_status,
                    });
                    self.levels.refused(&r.applied);
                }
                return Err(ReserveError::Refused(r));
            }
            Err(e @ (LedgerError::Unavailable(_) | LedgerError::NotOpen)) => {
                return Err(ReserveError::Unavailable(e.to_string()));
            }
        };
        let amount = sizing.amount(granted);
        // Soft budgets are judged by their state with this reservation in
        // it: a `warn` budget it took to its limit warns; a `shadow` budget
        // would have refused it if, before it, even the smallest request
        // the sizing allows did not fit (what `block` refuses). Advisory:
        // concurrent requests may be judged on either side of each other.
        let soft: Vec<&Applied> = applied
            .iter()
            .filter(|a| matches!(a.budget.action, Action::Warn | Action::Shadow))
            .collect();
        let (mut warned, mut would_block) = (false, false);
        if !soft.is_empty() {
            let lines: Vec<Line> = soft.iter().map(|a| a.line.clone()).collect();
            let used = self.ledger.used(&lines).await;
            let min = sizing.amount(sizing.min);
            for (a, u) in soft.iter().zip(used) {
                let h = a.line.headroom(u);
                match a.budget.action {
                    Action::Warn => {
                        warned |= h.money.is_some_and(|m| m.units() <= 0) || h.tokens == Some(0);
                    }
                    _ => {
                        // Taken before this reservation (its headroom now
                        // stops at zero, so it is read from the counter).
                        let lim = a.line.limit;
                        let money = u.spent.money + u.reserved.money - amount.money;
                        let tokens =
                            (u.spent.tokens + u.reserved.tokens).saturating_sub(amount.tokens);
                        let fits = lim.money.is_none_or(|l| money + min.money <= l)
                            && lim
                                .tokens
                                .is_none_or(|l| tokens.saturating_add(min.tokens) <= l);
                        would_block |= !fits;
                    }
                }
            }
        }
        let charges: Vec<CounterKey> = r.lines.into_iter().map(|l| l.charge).collect();
        Ok(Reserved {
            id: id.to_string(),
            granted,
            amount,
            per_unit: sizing.per_unit,
            charges,
            warned,
            would_block,
        })
    }

    /// Settles a finished request: charges `actual` (if it reserved) and
    /// writes its record, in one journal entry. A budget whose period
    /// changed while the request was in flight is charged as it is now:
    /// in the current period of its new definition.
    pub fn settle(
        &self,
        reserved: Option<&Reserved>,
        applied: &[Applied],
        actual: Amount,
        record: UsageRecord,
    ) {
        let charges: std::borrow::Cow<'_, [CounterKey]> = match reserved {
            Some(r) => self.current_charges(r, applied, self.now()),
            None => std::borrow::Cow::Borrowed(&[][..]),
        };
        let id = reserved.map(|r| r.id.as_str());
        self.metrics.observe(&record);
        let blocked = record.flags.blocked;
        let event = (self.events.settled_wanted() && !blocked).then(|| record.clone());
        let settled = self
            .ledger
            .commit(id, &charges, actual, Payload::record(record));
        if let Some(record) = event {
            self.events.publish(crate::events::Event::Settled {
                record: Arc::new(record),
            });
        }
        if self.events.wanted() && !blocked {
            self.levels.settled(applied);
        }
        if let (Settled::Committed { overage: true }, Some(r)) = (settled, reserved) {
            self.overspent
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(request_id = %r.id, reserved = %r.amount.money, actual = %actual.money, "usage exceeded the reservation (recorded as overspend)");
        }
    }

    /// The counters a reservation is charged to now: its own, unless a
    /// budget it holds room on was redefined (its period, time zone or reset
    /// changed) since — then that budget's key under its new definition.
    fn current_charges<'r>(
        &self,
        r: &'r Reserved,
        applied: &[Applied],
        time: Timestamp,
    ) -> std::borrow::Cow<'r, [CounterKey]> {
        if applied.len() != r.charges.len() {
            return std::borrow::Cow::Borrowed(&r.charges);
        }
        let set = self.entries();
        let mut out: Option<Vec<CounterKey>> = None;
        for (i, a) in applied.iter().enumerate() {
            let Some(cur) = set.get(&a.budget.id) else {
                continue;
            };
            if Arc::ptr_eq(&cur.budget, &a.budget)
                || (cur.budget.period == a.budget.period
                    && cur.budget.calendar == a.budget.calendar)
            {
                continue;
            }
            let now = self.applied_base(cur.budget.clone(), a.subject.clone(), time);
            if now.line.charge != r.charges[i] {
                out.get_or_insert_with(|| r.charges.clone())[i] = now.line.charge;
            }
        }
        match out {
            Some(v) => std::borrow::Cow::Owned(v),
            None => std::borrow::Cow::Borrowed(&r.charges),
        }
    }

    /// After a budget's period was redefined: its new period starts at the
    /// spend its records show, per subject (a rolling window's spend goes to
    /// its newest bucket: it leaves the window late, never early).
    async fn recount(&self, store: &dyn Store, b: &Arc<Budget>) -> Result<(), StoreError> {
        let now = self.now();
        let Some(subject) = Self::subject_of(b) else {
            return Ok(());
        };
        // Everything settled so far is in the records the count reads.
        self.ledger.flush().await;
        for (subject, spent) in store
            .budget_spend(&b.id, subject, Self::count_since(b, now))
            .await?
        {
            let a = self.applied_base(b.clone(), subject, now);
            self.ledger.set_spent(&a.line.charge, spent).await;
        }
        Ok(())
    }

    /// A budget that did not exist until now starts at what its scope has
    /// already spent in its current period (or window) on the models it
    /// covers — a monthly budget created on the 15th counts the month's
    /// spend so far. Named budgets (`scope: budget`) start at zero: records
    /// do not say which named budget a request chose.
    async fn count_existing_spend(
        &self,
        store: &dyn Store,
        b: &Arc<Budget>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        use tollgate_store::SubjectOf;
        let (field, only) = match (b.scope, &b.subject) {
            // Records do not say which named budget or Cycles scope a
            // request was for.
            (Scope::Budget, _) => return Ok(()),
            (s, _) if s.is_cycles_path() => return Ok(()),
            (Scope::Global, _) => (SubjectOf::Fixed("*".into()), None),
            (Scope::User, s) => (SubjectOf::User, s.clone()),
            (Scope::Tenant, s) => (SubjectOf::Tenant, s.clone()),
            (Scope::Session, s) => (SubjectOf::Session, s.clone()),
            (Scope::Key, s) => (SubjectOf::Key, s.clone()),
            (_, _) => return Ok(()),
        };
        self.ledger.flush().await;
        let globs: Vec<wildmatch::WildMatch> = b
            .models
            .iter()
            .map(|m| wildmatch::WildMatch::new(m))
            .collect();
        let mut per_subject: std::collections::BTreeMap<String, Amount> = Default::default();
        for row in store
            .scope_spend(field, only, Self::count_since(b, now))
            .await?
        {
            if globs.is_empty() || globs.iter().any(|g| g.matches(&row.model)) {
                let e = per_subject.entry(row.subject).or_default();
                *e = e.plus(row.spent);
            }
        }
        for (subject, spent) in per_subject {
            let a = self.applied_base(b.clone(), subject, now);
            self.ledger.set_spent(&a.line.charge, spent).await;
        }
        Ok(())
    }

    /// Which record field is `b`'s subject (`None`: named budgets, which
    /// no record field names).
    pub fn subject_of(b: &Budget) -> Option<tollgate_store::SubjectOf> {
        use tollgate_store::SubjectOf;
        Some(match (&b.subject, b.scope) {
            (_, s) if s.is_cycles_path() => return None,
            (Some(s), _) => SubjectOf::Fixed(s.clone()),
            (None, Scope::Global) => SubjectOf::Fixed("*".into()),
            (None, Scope::User) => SubjectOf::User,
            (None, Scope::Tenant) => SubjectOf::Tenant,
            (None, Scope::Session) => SubjectOf::Session,
            (None, Scope::Key) => SubjectOf::Key,
            (None, _) => return None,
        })
    }

    /// Where `b`'s current period (or window) begins.
    pub fn count_since(b: &Budget, now: Timestamp) -> Timestamp {
        match b.period {
            PeriodKind::Rolling(w) => now.checked_sub(w).unwrap_or(Timestamp::MIN),
            PeriodKind::Lifetime => Timestamp::MIN,
            _ => b.period.period_at(&b.calendar, now).start,
        }
    }

    /// Grows a reservation by `tokens` output tokens per choice on every
    /// line it holds, or on none (a stream topped up as it runs);
    /// `template` is what a crash charges from now on. `false` when a
    /// budget cannot fund it (or the reservation is gone).
    pub async fn extend(
        &self,
        reserved: &mut Reserved,
        tokens: u64,
        template: UsageRecord,
    ) -> bool {
        let more = tollgate_core::ledger::sized(Amount::default(), reserved.per_unit, tokens);
        match self
            .ledger
            .extend(&reserved.id, more, Payload::record(template), self.fail)
            .await
        {
            Ok(total) => {
                reserved.amount = total;
                reserved.granted += tokens;
                true
            }
            Err(_) => false,
        }
    }

    /// Grows a reservation by `more` on every line it holds, or on none
    /// (a commit above its estimate).
    pub async fn grow(
        &self,
        reserved: &mut Reserved,
        more: Amount,
        fail: FailPolicy,
    ) -> Result<(), LedgerError> {
        let total = self
            .ledger
            .extend(&reserved.id, more, Payload::Empty, fail)
            .await?;
        reserved.amount = total;
        Ok(())
    }

    /// Sets what a budget instance has spent in its current period (an
    /// operator starting a new period).
    pub async fn set_spent(&self, a: &Applied, spent: Amount) {
        self.ledger.set_spent(&a.line.charge, spent).await;
    }

    /// Moves a reservation's deadline to `until`.
    pub async fn prolong(
        &self,
        id: &str,
        until: Timestamp,
        fail: FailPolicy,
    ) -> Result<(), LedgerError> {
        self.ledger.prolong(id, until, Payload::Empty, fail).await
    }

    /// Gives a reservation back (the request never reached a provider).
    pub fn release(&self, reserved: &Reserved) {
        self.ledger.release(&reserved.id);
    }

    /// Releases reservations past their deadline (a safety net: proxy
    /// requests settle their own). A late settlement still charges them.
    pub async fn expire_due(&self) -> usize {
        let ids = self.ledger.expire_due(self.now()).await;
        for id in &ids {
            tracing::warn!(reservation = %id, "reservation expired unsettled; released");
        }
        ids.len()
    }

    /// Which counters a budget can still read: rolling buckets inside
    /// their window, calendar periods from the previous one on (kept for
    /// rollover). Counters of budgets that no longer exist are kept: they
    /// are cheap and a re-created budget may use them. Levels of older
    /// periods are forgotten as this is computed.
    pub fn retention(&self) -> Retention {
        let now = self.now();
        let entries = self.entries();
        let mut oldest: HashMap<String, i64> = HashMap::new();
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
                oldest.insert(b.id.clone(), c.as_millisecond());
            }
        }
        self.levels.prune(oldest.clone());
        Retention { oldest }
    }

    /// Whether the maintenance pass that prunes counters is due (every
    /// 30th call).
    pub fn prune_due(&self) -> bool {
        self.ticks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(30)
    }

    /// Waits until the level changes of every settlement so far are published.
    pub async fn flush_levels(&self) {
        self.levels.flush().await;
    }

    /// Validates and stores a budget from the admin API or CLI.
    pub async fn put(&self, store: &dyn Store, stored: StoredBudget) -> Result<Budget, PutError> {
        let mut b = Budget::from_input(stored.id.clone(), &stored.input, Tier::Override, None)
            .map_err(PutError::Invalid)?;
        b.existed_since = Some(stored.created_at);
        if self.config_budgets.iter().any(|c| c.id == stored.id) {
            return Err(PutError::ConfigOwned(stored.id));
        }
        let before = store.budgets_version().await.ok();
        store.put_budget(&stored).await?;
        let budget = Arc::new(b.clone());
        if self.entries().get(&b.id).is_none() {
            // Counted before the budget is in the set, so no request charges
            // it in between and the count cannot overwrite a charge.
            self.count_existing_spend(store, &budget).await?;
        }
        let redefined = self
            .entries()
            .get(&b.id)
            .is_some_and(|old| old.budget.period != b.period || old.budget.calendar != b.calendar);
        let entry = Entry {
            budget: budget.clone(),
            source: Source::Admin,
        };
        self.change(|set| set.upsert(entry));
        self.note_own_change(before, store.budgets_version().await.ok());
        if redefined {
            self.recount(store, &budget).await?;
        }
        Ok(b)
    }

    /// Deletes a stored budget; `false` if there is none with `id`.
    pub async fn delete(&self, store: &dyn Store, id: &str) -> Result<bool, StoreError> {
        let before = store.budgets_version().await.ok();
        if !store.delete_budget(id).await? {
            return Ok(false);
        }
        self.change(|set| {
            set.remove(id);
        });
        self.note_own_change(before, store.budgets_version().await.ok());
        Ok(true)
    }

    /// Applies one change to the loaded set in place (copied only if a
    /// request holds the current one this instant).
    fn change(&self, f: impl FnOnce(&mut BudgetSet)) {
        let mut guard = self.entries.write().unwrap_or_else(|e| e.into_inner());
        f(Arc::make_mut(&mut guard));
    }

    /// After this process changed a stored budget itself: if the set was
    /// current before the change, it is current after it, and the refresh
    /// need not reload everything.
    fn note_own_change(&self, before: Option<(i64, i64)>, after: Option<(i64, i64)>) {
        let mut known = self.known_version.lock().unwrap_or_else(|e| e.into_inner());
        if before.is_some() && *known == before {
            *known = after;
        }
    }

    /// The stored version the loaded set reflects (`None`: unknown).
    pub fn known_version(&self) -> Option<(i64, i64)> {
        *self.known_version.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that the loaded set reflects stored version `v`.
    pub fn set_known_version(&self, v: Option<(i64, i64)>) {
        *self.known_version.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }

    pub fn is_config_budget(&self, id: &str) -> bool {
        self.config_budgets.iter().any(|c| c.id == id)
    }

    /// One page of budget instances — every (budget, subject) with spend
    /// or reservations in its current period, plus every budget with a
    /// fixed subject — in (budget id, subject)
    /// order, after the cursor `after`, filtered; and the cursor of the next
    /// page. A template budget's subjects are read from the ledger in
    /// order, a chunk at a time, from the cursor on: a page costs what it
    /// shows (plus the inactive subjects it skips), not every counter.
    pub async fn instances_page(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
        filter: &InstanceFilter,
    ) -> InstancePage {
        const CHUNK: usize = 256;
        let now = self.now();
        let set = self.entries();
        let mut out: Vec<(Applied, State)> = Vec::new();
        let start = after.map(|(id, _)| id);
        // Resume inside the cursor's budget: it may have more subjects.
        let entries: Box<dyn Iterator<Item = &Entry> + Send> = match &filter.budget {
            Some(id) => Box::new(
                set.get(id)
                    .into_iter()
                    .filter(|e| start.is_none_or(|s| s <= e.budget.id.as_str())),
            ),
            None => Box::new(
                start
                    .and_then(|id| set.get(id))
                    .into_iter()
                    .chain(set.by_id_after(start)),
            ),
        };
        for e in entries {
            let b = &e.budget;
            if filter.scope.is_some_and(|s| s != b.scope) {
                continue;
            }
            let fixed = match (&b.subject, b.scope) {
                (Some(s), _) => Some(s.clone()),
                (None, Scope::Global) => Some("*".to_string()),
                (None, _) => None,
            };
            let mut from: Option<String> = match after {
                Some((id, s)) if id == b.id => Some(s.to_string()),
                _ => None,
            };
            loop {
                let candidates: Vec<String> = match (&fixed, &filter.subject) {
                    (Some(s), _) | (None, Some(s)) => {
                        if from.as_deref().is_some_and(|f| s.as_str() <= f) {
                            Vec::new()
                        } else {
                            vec![s.clone()]
                        }
                    }
                    (None, None) => self.ledger.subjects(&b.id, from.as_deref(), CHUNK).await,
                };
                let more = fixed.is_none() && filter.subject.is_none() && candidates.len() == CHUNK;
                from = candidates.last().cloned();
                for subject in candidates {
                    if filter.subject.as_ref().is_some_and(|s| *s != subject) {
                        continue;
                    }
                    let a = self.applied(b.clone(), subject, now).await;
                    let st = self.state(&a).await;
                    let active = st.spent != Amount::default() || st.reserved != Amount::default();
                    if fixed.is_none() && !active {
                        continue;
                    }
                    if filter.status.as_deref().is_some_and(|s| s != st.status) {
                        continue;
                    }
                    if out.len() == limit {
                        let next = out
                            .last()
                            .map(|(a, _)| (a.budget.id.clone(), a.subject.clone()));
                        return (out, next);
                    }
                    out.push((a, st));
                }
                if !more {
                    break;
                }
            }
        }
        (out, None)
    }
}

/// Which in-memory counters budgets can still read (see
/// [`BudgetEngine::retention`]).
#[derive(Clone, Debug, Default)]
pub struct Retention {
    /// The oldest period or bucket start (ms) still read, per budget id.
    oldest: HashMap<String, i64>,
}

impl Retention {
    pub fn keeps(&self, key: &CounterKey) -> bool {
        let start = match key.slot {
            tollgate_core::ledger::Slot::Period(s) | tollgate_core::ledger::Slot::Bucket(s) => s,
        };
        self.oldest
            .get(key.budget())
            .is_none_or(|cut| start >= *cut)
    }
}

/// A page of budget instances with their state, and the cursor (budget
/// id, subject) of the next page if there is one.
pub type InstancePage = (Vec<(Applied, State)>, Option<(String, String)>);

/// Filters for listing budget instances.
#[derive(Clone, Debug, Default)]
pub struct InstanceFilter {
    /// One budget's instances only.
    pub budget: Option<String>,
    pub scope: Option<Scope>,
    pub subject: Option<String>,
    /// `ok`, `low` or `over_limit`.
    pub status: Option<String>,
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
    pub async fn plan(&self, applied: &[Applied], s: &Sizing) -> Result<u64, Box<Refusal>> {
        let lines: Vec<Line> = applied.iter().map(|a| a.line.clone()).collect();
        match self.ledger.plan(&lines, s).await {
            Ok(n) => Ok(n),
            Err(d) => Err(self.refusal(applied, d, s).await),
        }
    }

    /// The refusal of line `d.line`. A rolling window's reset is when
    /// enough spend leaves the window for the smallest request the sizing
    /// allows (`s.amount(s.min)`) to fit — or, when no amount leaving can
    /// make room (in-flight reservations, a request above the limit), when
    /// the oldest charged bucket leaves.
    async fn refusal(&self, applied: &[Applied], d: Denied, s: &Sizing) -> Box<Refusal> {
        let mut a = applied[d.line].clone();
        if let PeriodKind::Rolling(w) = a.budget.period {
            a.resets_at = self.rolling_reset(&a, w, d.headroom, s.amount(s.min)).await;
        }
        Box::new(Refusal {
            applied: a,
            headroom: d.headroom,
        })
    }

    async fn rolling_reset(
        &self,
        a: &Applied,
        w: SignedDuration,
        headroom: Headroom,
        need: Amount,
    ) -> Option<Timestamp> {
        let leaves = |bucket: Timestamp| {
            bucket
                .checked_add(w)
                .and_then(|t| t.checked_add(PeriodKind::bucket_width(w)))
                .ok()
        };
        let mut freed = Amount::default();
        let mut oldest_charged = None;
        let since = match a.line.window {
            Window::Rolling { since } => since,
            Window::Period => return a.resets_at,
        };
        for (start_ms, spent) in self.ledger.buckets(&a.line.charge.group).await {
            if start_ms < since || spent.is_zero() {
                continue;
            }
            let Ok(start) = Timestamp::from_millisecond(start_ms) else {
                continue;
            };
            oldest_charged.get_or_insert(start);
            freed = freed.plus(spent);
            let money_ok = headroom.money.is_none_or(|h| h + freed.money >= need.money);
            let tokens_ok = headroom
                .tokens
                .is_none_or(|h| h.saturating_add(freed.tokens) >= need.tokens);
            if money_ok && tokens_ok {
                return leaves(start);
            }
        }
        oldest_charged.and_then(leaves)
    }

    /// Every budget that applies to `caller`, whatever the model.
    pub async fn applicable_any_model(&self, caller: &Caller) -> Vec<Applied> {
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
        self.roll_over(&mut out).await;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tollgate_core::budget::BudgetInput;

    fn entry(id: u8, scope: u8, subject: u8, tier: u8) -> Entry {
        let scope = ["user", "tenant", "session", "global"][scope as usize % 4];
        let tier = match tier % 3 {
            0 => Tier::Override,
            1 => Tier::Default,
            _ => Tier::Role(format!("r{}", subject % 2)),
        };
        let mut spec = serde_json::json!({"scope": scope, "limit_tokens": 100, "period": "daily"});
        if tier == Tier::Override && scope != "global" {
            spec["subject"] = serde_json::json!(format!("s{}", subject % 3));
        }
        let input: BudgetInput = serde_json::from_value(spec).unwrap();
        let b = Budget::from_input(format!("b{id}"), &input, tier, None).unwrap();
        Entry {
            budget: Arc::new(b),
            source: Source::Admin,
        }
    }

    /// What the index answers, for every scope, subject and role.
    fn answers(set: &BudgetSet) -> Vec<Vec<String>> {
        let ids = |slots: Option<&Slots>| -> Vec<String> {
            let mut v: Vec<String> = slots
                .map_or(&[][..], Slots::positions)
                .iter()
                .map(|&i| set.all[i as usize].budget.id.clone())
                .collect();
            v.sort();
            v
        };
        let mut out = vec![ids(Some(&set.global))];
        for scope in Scope::ALL {
            out.push(ids(set.defaults.get(&scope)));
            for k in ["s0", "s1", "s2", "r0", "r1"] {
                out.push(ids(set.overrides.get(&scope).and_then(|m| m.get(k))));
                out.push(ids(set.roles.get(&scope).and_then(|m| m.get(k))));
            }
        }
        let mut by_id: Vec<String> = set.by_id_after(None).map(|e| e.budget.id.clone()).collect();
        by_id.dedup();
        out.push(by_id);
        out
    }

    proptest! {
        /// Changing one budget in place indexes exactly as loading the
        /// whole set again would (the admin API no longer reloads).
        #[test]
        fn incremental_changes_index_like_a_full_reload(
            ops in prop::collection::vec((any::<bool>(), 0u8..12, 0u8..4, 0u8..6, 0u8..3), 1..60)
        ) {
            let mut set = BudgetSet::default();
            let mut model: Vec<Entry> = Vec::new();
            for (remove, id, scope, subject, tier) in ops {
                let e = entry(id, scope, subject, tier);
                if remove {
                    set.remove(&e.budget.id);
                    model.retain(|m| m.budget.id != e.budget.id);
                } else {
                    set.upsert(e.clone());
                    match model.iter_mut().find(|m| m.budget.id == e.budget.id) {
                        Some(m) => *m = e,
                        None => model.push(e),
                    }
                }
                prop_assert_eq!(answers(&set), answers(&BudgetSet::new(model.clone())));
            }
        }
    }
}
