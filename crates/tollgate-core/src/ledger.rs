//! The ledger's state machine: reserve on N budgets at once or not at all,
//! commit the actual amount, release the rest, extend an open reservation,
//! expire the forgotten — pure, so every interleaving can be tested without
//! I/O.
//!
//! Flow for one request:
//! 1. `reserve(id, lines, amount)`: for every enforced line, `spent +
//!    reserved + amount ≤ limit` over the line's window; if any line fails,
//!    nothing changes. Otherwise every line gains the amount as *reserved*.
//!    `reserve_capped` reserves the largest amount a [`Sizing`] allows.
//! 2. `extend(id, more)`: an open reservation grows on every line, or on
//!    none (a stream's top-up, a tool call's extension).
//! 3. `commit(id, actual)`: each line moves the reserved amount out and adds
//!    `actual` to *spent*. Idempotent: a second commit (a retry, a replay)
//!    changes nothing. `actual > amount` is an overage: recorded as spent
//!    (visible as overspend), never lost.
//! 4. `release(id)`: a request that produced nothing gives its reservation
//!    back. `expire(now)` does that for reservations past their deadline;
//!    a late commit still charges them.
//!
//! Counters are typed keys ([`CounterKey`]): a group (one budget for one
//! subject) and a slot (a calendar period, or a rolling-window bucket). A
//! calendar line checks its one counter. A rolling line checks its group's
//! buckets from the window's oldest on, kept as a running sum that buckets
//! leave as they age ([`Window::Rolling`]): O(1) per reserve, however many
//! buckets the window has.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::money::Money;

/// Money and tokens together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub money: Money,
    pub tokens: u64,
}

impl Amount {
    pub fn new(money: Money, tokens: u64) -> Amount {
        Amount { money, tokens }
    }

    pub fn plus(self, o: Amount) -> Amount {
        Amount {
            money: self.money + o.money,
            tokens: self.tokens.saturating_add(o.tokens),
        }
    }

    pub fn minus(self, o: Amount) -> Amount {
        Amount {
            money: self.money - o.money,
            tokens: self.tokens.saturating_sub(o.tokens),
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Amount::default()
    }
}

/// A limit in money and/or tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub money: Option<Money>,
    pub tokens: Option<u64>,
}

/// Which part of a group's history a counter holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// A calendar period (or the lifetime), by its start in ms.
    Period(i64),
    /// A rolling window's bucket, by its start in ms.
    Bucket(i64),
}

/// One counter: a group — one budget for one subject, `budget|subject` —
/// and a slot. Written `budget|subject|<ms>` or `budget|subject|b<ms>`
/// (the form the store keeps); budget ids never contain `|`, subjects may.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    pub group: Arc<str>,
    pub slot: Slot,
}

impl CounterKey {
    /// The group of budget `budget` for `subject`.
    pub fn group(budget: &str, subject: &str) -> Arc<str> {
        Arc::from(format!("{budget}|{subject}"))
    }

    pub fn period(group: Arc<str>, start_ms: i64) -> CounterKey {
        CounterKey {
            group,
            slot: Slot::Period(start_ms),
        }
    }

    pub fn bucket(group: Arc<str>, start_ms: i64) -> CounterKey {
        CounterKey {
            group,
            slot: Slot::Bucket(start_ms),
        }
    }

    /// The budget id the key belongs to.
    pub fn budget(&self) -> &str {
        self.group.split_once('|').map_or(&self.group, |(b, _)| b)
    }
}

impl fmt::Display for CounterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.slot {
            Slot::Period(ms) => write!(f, "{}|{ms}", self.group),
            Slot::Bucket(ms) => write!(f, "{}|b{ms}", self.group),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a counter key: {0:?}")]
pub struct BadCounterKey(pub String);

impl FromStr for CounterKey {
    type Err = BadCounterKey;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadCounterKey(s.to_string());
        let (group, slot) = s.rsplit_once('|').ok_or_else(bad)?;
        if !group.contains('|') {
            return Err(bad());
        }
        let slot = match slot.strip_prefix('b') {
            Some(ms) => Slot::Bucket(ms.parse().map_err(|_| bad())?),
            None => Slot::Period(slot.parse().map_err(|_| bad())?),
        };
        Ok(CounterKey {
            group: Arc::from(group),
            slot,
        })
    }
}

impl Serialize for CounterKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CounterKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a line checks against its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// Its charge counter alone (a calendar period, the lifetime).
    Period,
    /// Every bucket of its charge's group that starts at or after `since`
    /// (ms), and every reservation open on the group.
    Rolling { since: i64 },
}

/// One budget's part in a reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The counter this request is charged to.
    pub charge: CounterKey,
    pub window: Window,
    pub limit: Limit,
    /// `false` for budgets that only warn: charged, never refusing.
    pub enforce: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub spent: Amount,
    pub reserved: Amount,
}

/// What is left under a line's limit (`None`: unlimited in that unit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Headroom {
    pub money: Option<Money>,
    pub tokens: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    /// Index of the first line that cannot afford the amount.
    pub line: usize,
    pub headroom: Headroom,
}

/// What a request asks of its budgets: `base + n × per_unit` for the
/// largest `n ≤ want` every line affords, and at least `min`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizing {
    pub base: Amount,
    pub per_unit: Amount,
    pub want: u64,
    pub min: u64,
}

impl Sizing {
    /// Exactly `amount`, nothing to cap.
    pub fn fixed(amount: Amount) -> Sizing {
        Sizing {
            base: amount,
            ..Sizing::default()
        }
    }

    pub fn amount(&self, n: u64) -> Amount {
        sized(self.base, self.per_unit, n)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Charged now; `overage` if the actual amount exceeded the reservation.
    Committed {
        overage: bool,
    },
    Released,
    /// Already settled earlier (idempotent replay): nothing changed.
    AlreadySettled,
    Unknown,
}

/// An open reservation after an extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grown {
    /// What it holds now, the extension included.
    pub amount: Amount,
    pub charges: Vec<CounterKey>,
    pub expires_at: Timestamp,
}

/// Why an extension was not made; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExtendError {
    #[error("refused by line {}", .0.line)]
    Denied(Denied),
    /// Settled, expired, or never reserved.
    #[error("the reservation is not open")]
    NotOpen,
}

/// A rolling group's buckets (oldest first) and their running sum, and the
/// reservations open on the group.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Series {
    buckets: VecDeque<(i64, Amount)>,
    spent: Amount,
    reserved: Amount,
    /// The latest window start read: time only moves forward, so a bucket
    /// that left the window never counts again, even for a line computed
    /// earlier (an extension of an older reservation).
    since: i64,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            buckets: VecDeque::new(),
            spent: Amount::default(),
            reserved: Amount::default(),
            since: i64::MIN,
        }
    }
}

impl Series {
    fn bucket_mut(&mut self, start: i64) -> &mut Amount {
        let i = match self.buckets.binary_search_by_key(&start, |(s, _)| *s) {
            Ok(i) => i,
            Err(i) => {
                self.buckets.insert(i, (start, Amount::default()));
                i
            }
        };
        &mut self.buckets[i].1
    }

    /// Buckets that started before `since` leave the running sum.
    fn age(&mut self, since: i64) {
        while let Some(&(start, a)) = self.buckets.front() {
            if start >= since {
                break;
            }
            self.spent = self.spent.minus(a);
            self.buckets.pop_front();
        }
    }
}

/// Counters and rolling series: what a ledger (or one of its shards) holds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Book {
    counters: HashMap<CounterKey, Counter>,
    series: HashMap<Arc<str>, Series>,
    /// The groups of each budget (by id), in order: a budget's subjects are
    /// listed without walking every counter. Updated only when a group is
    /// first seen and when counters are dropped.
    groups: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
}

impl Book {
    fn counter(&self, key: &CounterKey) -> Counter {
        match key.slot {
            Slot::Period(_) => self.counters.get(key).copied().unwrap_or_default(),
            Slot::Bucket(start) => Counter {
                spent: self
                    .series
                    .get(&key.group)
                    .and_then(|s| {
                        s.buckets
                            .binary_search_by_key(&start, |(b, _)| *b)
                            .ok()
                            .map(|i| s.buckets[i].1)
                    })
                    .unwrap_or_default(),
                reserved: Amount::default(),
            },
        }
    }

    /// Spent and reserved over `line`'s window; buckets that left it are
    /// dropped from the running sum first.
    fn used(&mut self, line: &Line) -> Counter {
        match line.window {
            Window::Period => self.counter(&line.charge),
            Window::Rolling { since } => match self.series.get_mut(&line.charge.group) {
                Some(s) => {
                    s.since = s.since.max(since);
                    s.age(s.since);
                    Counter {
                        spent: s.spent,
                        reserved: s.reserved,
                    }
                }
                None => Counter::default(),
            },
        }
    }

    /// [`Self::used`] without dropping any bucket: the sum walked bucket by
    /// bucket (the model's way).
    fn used_walked(&mut self, line: &Line) -> Counter {
        match line.window {
            Window::Period => self.counter(&line.charge),
            Window::Rolling { since } => match self.series.get_mut(&line.charge.group) {
                Some(s) => {
                    s.since = s.since.max(since);
                    Counter {
                        spent: s
                            .buckets
                            .iter()
                            .filter(|(start, _)| *start >= s.since)
                            .fold(Amount::default(), |acc, (_, a)| acc.plus(*a)),
                        reserved: s.reserved,
                    }
                }
                None => Counter::default(),
            },
        }
    }

    fn headroom(&mut self, line: &Line) -> Headroom {
        headroom_of(line, self.used(line))
    }

    /// Adds (`add`) or removes a reservation's hold on the line charged at `key`.
    /// The counter at `key`, created if new. Looked up before inserting:
    /// cloning a key touches its shared group's reference count, which
    /// threads charging the same budget would contend on.
    fn counter_mut(&mut self, key: &CounterKey) -> &mut Counter {
        if !self.counters.contains_key(key) {
            self.index(&key.group);
            self.counters.insert(key.clone(), Counter::default());
        }
        self.counters
            .get_mut(key)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    fn series_mut(&mut self, group: &Arc<str>) -> &mut Series {
        if !self.series.contains_key(group) {
            self.index(group);
            self.series.insert(group.clone(), Series::default());
        }
        self.series
            .get_mut(group)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    fn index(&mut self, group: &Arc<str>) {
        let budget = group.split_once('|').map_or(&**group, |(b, _)| b);
        match self.groups.get_mut(budget) {
            Some(set) => {
                if !set.contains(group) {
                    set.insert(group.clone());
                }
            }
            None => {
                self.groups
                    .insert(Arc::from(budget), BTreeSet::from([group.clone()]));
            }
        }
    }

    /// Up to `limit` subjects of `budget` after `after`, in order.
    fn subjects(&self, budget: &str, after: Option<&str>, limit: usize) -> Vec<String> {
        let Some(set) = self.groups.get(budget) else {
            return Vec::new();
        };
        let skip = budget.len() + 1;
        let from = after.map(|a| format!("{budget}|{a}"));
        let range = match &from {
            Some(f) => set.range::<str, _>((
                std::ops::Bound::Excluded(f.as_str()),
                std::ops::Bound::Unbounded,
            )),
            None => set.range::<str, _>(..),
        };
        range
            .take(limit)
            .map(|g| g.get(skip..).unwrap_or_default().to_string())
            .collect()
    }

    fn hold(&mut self, key: &CounterKey, amount: Amount, add: bool) {
        let r = match key.slot {
            Slot::Period(_) => &mut self.counter_mut(key).reserved,
            Slot::Bucket(_) => &mut self.series_mut(&key.group).reserved,
        };
        *r = if add { r.plus(amount) } else { r.minus(amount) };
    }

    fn charge(&mut self, key: &CounterKey, amount: Amount) {
        match key.slot {
            Slot::Period(_) => {
                let c = self.counter_mut(key);
                c.spent = c.spent.plus(amount);
            }
            Slot::Bucket(start) => {
                let s = self.series_mut(&key.group);
                let b = s.bucket_mut(start);
                *b = b.plus(amount);
                s.spent = s.spent.plus(amount);
            }
        }
    }

    fn set_spent(&mut self, key: &CounterKey, spent: Amount) {
        match key.slot {
            Slot::Period(_) => self.counter_mut(key).spent = spent,
            Slot::Bucket(start) => {
                let s = self.series_mut(&key.group);
                let b = s.bucket_mut(start);
                let old = std::mem::replace(b, spent);
                s.spent = s.spent.minus(old).plus(spent);
            }
        }
    }

    fn keys(&self) -> impl Iterator<Item = CounterKey> + '_ {
        self.counters
            .keys()
            .cloned()
            .chain(self.series.iter().flat_map(|(g, s)| {
                s.buckets
                    .iter()
                    .map(|(start, _)| CounterKey::bucket(g.clone(), *start))
            }))
    }

    /// Keeps the counters and buckets `keep` accepts, and any counter or
    /// series that holds a reservation.
    fn retain(&mut self, keep: &impl Fn(&CounterKey) -> bool) {
        self.counters
            .retain(|k, c| keep(k) || !c.reserved.is_zero());
        self.series.retain(|g, s| {
            let mut dropped = Amount::default();
            s.buckets.retain(|(start, a)| {
                let k = keep(&CounterKey::bucket(g.clone(), *start));
                if !k {
                    dropped = dropped.plus(*a);
                }
                k
            });
            s.spent = s.spent.minus(dropped);
            !s.buckets.is_empty() || !s.reserved.is_zero()
        });
        self.groups.clear();
        let groups: Vec<Arc<str>> = self
            .counters
            .keys()
            .map(|k| k.group.clone())
            .chain(self.series.keys().cloned())
            .collect();
        for g in &groups {
            self.index(g);
        }
    }

    fn buckets(&self, group: &str) -> Vec<(i64, Amount)> {
        self.series
            .get(group)
            .map(|s| s.buckets.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    lines: Vec<Line>,
    amount: Amount,
    expires_at: Timestamp,
    /// Expired and released; a late commit still charges the lines.
    expired: bool,
}

/// The reference ledger: one map, no locks. [`ShardedLedger`] must behave
/// exactly like it (the model test checks it step by step).
#[derive(Clone, Debug, Default)]
pub struct LedgerState {
    book: Book,
    open: HashMap<String, Entry>,
    /// Settled ids and when, for idempotency (pruned by age).
    settled: HashMap<String, Timestamp>,
}

impl LedgerState {
    pub fn counter(&self, key: &CounterKey) -> Counter {
        self.book.counter(key)
    }

    /// Spent and reserved over a line's window (`&mut`: reading a window
    /// moves its start forward).
    pub fn used(&mut self, line: &Line) -> Counter {
        self.book.used_walked(line)
    }

    pub fn headroom(&mut self, line: &Line) -> Headroom {
        let used = self.used(line);
        headroom_of(line, used)
    }

    fn known(&self, id: &str) -> bool {
        self.open.contains_key(id) || self.settled.contains_key(id)
    }

    /// Reserves `amount` on every line, or on none. Reserving an id that is
    /// open or settled is a no-op success (idempotent replay).
    pub fn reserve(
        &mut self,
        id: &str,
        lines: Vec<Line>,
        amount: Amount,
        expires_at: Timestamp,
    ) -> Result<(), Denied> {
        if self.known(id) {
            return Ok(());
        }
        if let Some((i, line)) = lines
            .iter()
            .enumerate()
            .find(|(_, l)| l.enforce && !fits(self.headroom(l), amount))
        {
            return Err(Denied {
                line: i,
                headroom: self.headroom(line),
            });
        }
        for l in &lines {
            self.book.hold(&l.charge, amount, true);
        }
        self.open.insert(
            id.to_string(),
            Entry {
                lines,
                amount,
                expires_at,
                expired: false,
            },
        );
        Ok(())
    }

    /// The largest `n ≤ want` (at least `min`) such that `s.amount(n)` fits
    /// every enforced line, or the line that refuses.
    pub fn plan_capped(&mut self, lines: &[Line], s: &Sizing) -> Result<u64, Denied> {
        plan_capped(lines, s, |l| self.headroom(l))
    }

    /// Reserves `s.amount(n)` for the largest `n ≤ s.want` every enforced
    /// line can afford, provided `n ≥ s.min`; returns `n`. This is how an
    /// output limit is capped to what the budgets afford, decided and
    /// reserved in one step so no concurrent request can take the room.
    pub fn reserve_capped(
        &mut self,
        id: &str,
        lines: Vec<Line>,
        s: &Sizing,
        expires_at: Timestamp,
    ) -> Result<u64, Denied> {
        let n = self.plan_capped(&lines, s)?;
        self.reserve(id, lines, s.amount(n), expires_at).map(|()| n)
    }

    /// Grows an open reservation by `more` on every line, or on none.
    pub fn extend(&mut self, id: &str, more: Amount) -> Result<Grown, ExtendError> {
        let lines = match self.open.get(id) {
            Some(e) if !e.expired => e.lines.clone(),
            _ => return Err(ExtendError::NotOpen),
        };
        if let Some((i, l)) = lines
            .iter()
            .enumerate()
            .find(|(_, l)| l.enforce && !fits(self.headroom(l), more))
        {
            return Err(ExtendError::Denied(Denied {
                line: i,
                headroom: self.headroom(l),
            }));
        }
        for l in &lines {
            self.book.hold(&l.charge, more, true);
        }
        let e = self.open.get_mut(id).ok_or(ExtendError::NotOpen)?;
        e.amount = e.amount.plus(more);
        Ok(Grown {
            amount: e.amount,
            charges: lines.into_iter().map(|l| l.charge).collect(),
            expires_at: e.expires_at,
        })
    }

    /// Moves an open reservation's deadline to `until`; `false` when it is
    /// no longer open.
    pub fn prolong(&mut self, id: &str, until: Timestamp) -> bool {
        match self.open.get_mut(id) {
            Some(e) if !e.expired => {
                e.expires_at = until;
                true
            }
            _ => false,
        }
    }

    /// Charges `actual` to the reservation's lines and releases it.
    pub fn commit(&mut self, id: &str, actual: Amount, now: Timestamp) -> Settled {
        let Some(e) = self.open.get(id) else {
            return self.unknown_or_settled(id);
        };
        let charges: Vec<CounterKey> = e.lines.iter().map(|l| l.charge.clone()).collect();
        self.commit_to(id, &charges, actual, now)
    }

    /// As [`Self::commit`], but charges `actual` to `charges` instead of the
    /// reservation's own lines (a budget whose period changed while the
    /// request was in flight is charged as it is now).
    pub fn commit_to(
        &mut self,
        id: &str,
        charges: &[CounterKey],
        actual: Amount,
        now: Timestamp,
    ) -> Settled {
        if self.settled.contains_key(id) {
            return Settled::AlreadySettled;
        }
        let Some(e) = self.open.remove(id) else {
            return Settled::Unknown;
        };
        if !e.expired {
            for l in &e.lines {
                self.book.hold(&l.charge, e.amount, false);
            }
        }
        for k in charges {
            self.book.charge(k, actual);
        }
        self.settled.insert(id.to_string(), now);
        Settled::Committed {
            overage: actual.money > e.amount.money || actual.tokens > e.amount.tokens,
        }
    }

    fn unknown_or_settled(&self, id: &str) -> Settled {
        if self.settled.contains_key(id) {
            Settled::AlreadySettled
        } else {
            Settled::Unknown
        }
    }

    /// Gives the whole reservation back.
    pub fn release(&mut self, id: &str, now: Timestamp) -> Settled {
        if self.settled.contains_key(id) {
            return Settled::AlreadySettled;
        }
        let Some(e) = self.open.remove(id) else {
            return Settled::Unknown;
        };
        if !e.expired {
            for l in &e.lines {
                self.book.hold(&l.charge, e.amount, false);
            }
        }
        self.settled.insert(id.to_string(), now);
        Settled::Released
    }

    /// Releases open reservations past their deadline; returns their ids.
    /// They stay known for `grace` so a late commit still charges them.
    /// Settled ids are remembered (for idempotent replays) for `grace` too.
    pub fn expire(&mut self, now: Timestamp, grace: jiff::SignedDuration) -> Vec<String> {
        let mut out = Vec::new();
        let mut forget = Vec::new();
        for (id, e) in self.open.iter_mut() {
            if !e.expired && e.expires_at <= now {
                e.expired = true;
                for l in &e.lines {
                    self.book.hold(&l.charge, e.amount, false);
                }
                out.push(id.clone());
            } else if e.expired && e.expires_at.checked_add(grace).is_ok_and(|t| t <= now) {
                forget.push(id.clone());
            }
        }
        for id in forget {
            self.open.remove(&id);
        }
        self.settled
            .retain(|_, t| t.checked_add(grace).is_ok_and(|t| t > now));
        out
    }

    /// Adds already-committed spend (rebuilding state from the store).
    pub fn restore_spent(&mut self, key: &CounterKey, spent: Amount) {
        self.book.charge(key, spent);
    }

    /// Sets what a counter has spent (a budget's new period).
    pub fn set_spent(&mut self, key: &CounterKey, spent: Amount) {
        self.book.set_spent(key, spent);
    }

    /// Every counter key.
    pub fn keys(&self) -> Vec<CounterKey> {
        self.book.keys().collect()
    }

    /// A rolling group's buckets, oldest first: (start ms, spent).
    pub fn buckets(&self, group: &str) -> Vec<(i64, Amount)> {
        self.book.buckets(group)
    }

    /// Up to `limit` subjects with counters of `budget`, after `after`, in order.
    pub fn subjects(&self, budget: &str, after: Option<&str>, limit: usize) -> Vec<String> {
        self.book.subjects(budget, after, limit)
    }

    pub fn is_open(&self, id: &str) -> bool {
        self.open.get(id).is_some_and(|e| !e.expired)
    }

    pub fn open_count(&self) -> usize {
        self.open.values().filter(|e| !e.expired).count()
    }

    /// Drops counters no window can reach any more (old periods, old buckets).
    pub fn retain_counters(&mut self, keep: impl Fn(&CounterKey) -> bool) {
        self.book.retain(&keep);
    }
}

impl Line {
    /// What is left under this line's limit once `used` is taken.
    pub fn headroom(&self, used: Counter) -> Headroom {
        headroom_of(self, used)
    }
}

/// What is left under `line`'s limit once `used` is taken.
fn headroom_of(line: &Line, used: Counter) -> Headroom {
    let taken = used.spent.plus(used.reserved);
    Headroom {
        money: line
            .limit
            .money
            .map(|l| l.saturating_sub(taken.money).max(Money::ZERO)),
        tokens: line.limit.tokens.map(|l| l.saturating_sub(taken.tokens)),
    }
}

/// The capping decision shared by [`LedgerState`] and [`ShardedLedger`].
fn plan_capped(
    lines: &[Line],
    s: &Sizing,
    mut headroom: impl FnMut(&Line) -> Headroom,
) -> Result<u64, Denied> {
    let (base, per_unit, want, min) = (s.base, s.per_unit, s.want, s.min);
    let mut n = want;
    let mut tightest: Option<(usize, Headroom)> = None;
    for (i, line) in lines.iter().enumerate().filter(|(_, l)| l.enforce) {
        let h = headroom(line);
        let by_money = h
            .money
            .map(|m| afford(m.units(), base.money.units(), per_unit.money.units()));
        let by_tokens = h.tokens.map(|t| {
            afford(
                i128::from(t),
                i128::from(base.tokens),
                i128::from(per_unit.tokens),
            )
        });
        let fit = by_money
            .into_iter()
            .chain(by_tokens)
            .min()
            .unwrap_or(u64::MAX);
        if fit < n || (fit == 0 && !fits(h, base)) {
            n = n.min(fit);
            tightest = Some((i, h));
        }
    }
    let base_fits = tightest.as_ref().is_none_or(|(_, h)| fits(*h, base));
    if !base_fits || n < min.min(want) || (n == 0 && want > 0 && tightest.is_some()) {
        let (line, headroom) = tightest.unwrap_or((0, Headroom::default()));
        return Err(Denied { line, headroom });
    }
    Ok(n)
}

/// `base + n × per_unit`.
pub fn sized(base: Amount, per_unit: Amount, n: u64) -> Amount {
    Amount {
        money: base.money + Money::from_units(per_unit.money.units() * i128::from(n)),
        tokens: base
            .tokens
            .saturating_add(per_unit.tokens.saturating_mul(n)),
    }
}

/// Whether `amount` fits in headroom `h`.
fn fits(h: Headroom, amount: Amount) -> bool {
    h.money.is_none_or(|m| amount.money <= m) && h.tokens.is_none_or(|t| amount.tokens <= t)
}

/// Largest `n` with `base + n × per ≤ room` (`u64::MAX` when `per` is 0
/// and the base fits; 0 when even the base does not fit).
fn afford(room: i128, base: i128, per: i128) -> u64 {
    if base > room {
        return 0;
    }
    if per <= 0 {
        return u64::MAX;
    }
    u64::try_from((room - base) / per).unwrap_or(u64::MAX)
}

mod sharded;
pub use sharded::ShardedLedger;

#[cfg(test)]
mod tests;
