//! [`LedgerState`]'s state machine without a global lock: the ledger the
//! gateway runs. Counters live in shards; a reservation locks the shards
//! of its lines in ascending order (so two reservations never deadlock),
//! decides and applies under those locks (all or nothing), then records
//! itself in the id shard. Requests on unrelated budgets never contend.
//!
//! Lock order: counter shards (ascending), then one id shard. Commit,
//! release and expire take the id shard alone, let it go, and only then
//! lock counters, so the order is never reversed; extend reads its lines
//! under the id shard, lets it go, then takes counters, then the id shard.
//!
//! Sharding key: a counter's group (one budget for one subject), so a
//! line — its counter or its rolling series — lives in one shard.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use jiff::{SignedDuration, Timestamp};

use super::{
    Amount, Book, Counter, CounterKey, Denied, ExtendError, Grown, Headroom, Line, Settled, Sizing,
    fits, plan_capped,
};

const SHARDS: usize = 64;

#[derive(Debug)]
struct Open {
    lines: Vec<Line>,
    amount: Amount,
    expires_at: Timestamp,
    /// Expired and released; a late commit still charges the lines.
    expired: bool,
}

/// One id shard: open reservations, and settled ids kept for idempotent
/// replays. Settled ids are many (every request of the last minute), so
/// they are kept as 128-bit keyed fingerprints with a millisecond time
/// (~40 bytes each instead of ~120).
#[derive(Debug, Default)]
struct Ids {
    open: HashMap<String, Open>,
    settled: HashMap<u128, i64>,
}

#[derive(Debug)]
pub struct ShardedLedger {
    books: Box<[Mutex<Book>]>,
    ids: Box<[Mutex<Ids>]>,
    /// Two independently keyed SipHashes: a fingerprint no caller-chosen id
    /// can be crafted to collide with.
    keys: (RandomState, RandomState),
}

impl Default for ShardedLedger {
    fn default() -> Self {
        ShardedLedger {
            books: (0..SHARDS).map(|_| Mutex::default()).collect(),
            ids: (0..SHARDS).map(|_| Mutex::default()).collect(),
            keys: (RandomState::new(), RandomState::new()),
        }
    }
}

/// FNV-1a: a few nanoseconds for short keys, and stable across runs.
fn hash(bytes: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

fn shard_of(key: &CounterKey) -> usize {
    hash(key.group.as_bytes())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the ledger down with it; every update
    // below is a few field writes that leave the maps consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counter shards held together, in ascending order.
struct Held<'a> {
    shards: Vec<usize>,
    books: Vec<MutexGuard<'a, Book>>,
}

impl Held<'_> {
    fn book(&mut self, key: &CounterKey) -> Option<&mut Book> {
        let i = self.shards.binary_search(&shard_of(key)).ok()?;
        Some(&mut self.books[i])
    }

    fn headroom(&mut self, line: &Line) -> Headroom {
        self.book(&line.charge)
            .map(|b| b.headroom(line))
            .unwrap_or_default()
    }

    fn used(&mut self, line: &Line) -> Counter {
        self.book(&line.charge)
            .map(|b| b.used(line))
            .unwrap_or_default()
    }

    fn with(&mut self, key: &CounterKey, f: impl FnOnce(&mut Book)) {
        match self.book(key) {
            Some(b) => f(b),
            None => debug_assert!(false, "counter {key} updated without its shard held"),
        }
    }
}

impl ShardedLedger {
    fn hold<'k>(&self, keys: impl Iterator<Item = &'k CounterKey>) -> Held<'_> {
        let mut shards: Vec<usize> = keys.map(shard_of).collect();
        shards.sort_unstable();
        shards.dedup();
        let books = shards.iter().map(|&i| lock(&self.books[i])).collect();
        Held { shards, books }
    }

    fn hold_lines(&self, lines: &[Line]) -> Held<'_> {
        self.hold(lines.iter().map(|l| &l.charge))
    }

    fn id_shard(&self, id: &str) -> MutexGuard<'_, Ids> {
        lock(&self.ids[hash(id.as_bytes())])
    }

    fn fingerprint(&self, id: &str) -> u128 {
        (u128::from(self.keys.0.hash_one(id)) << 64) | u128::from(self.keys.1.hash_one(id))
    }

    fn known(&self, ids: &Ids, id: &str) -> bool {
        ids.open.contains_key(id) || ids.settled.contains_key(&self.fingerprint(id))
    }

    pub fn counter(&self, key: &CounterKey) -> Counter {
        lock(&self.books[shard_of(key)]).counter(key)
    }

    /// Spent and reserved over a line's window.
    pub fn used(&self, line: &Line) -> Counter {
        self.hold_lines(std::slice::from_ref(line)).used(line)
    }

    pub fn headroom(&self, line: &Line) -> Headroom {
        self.hold_lines(std::slice::from_ref(line)).headroom(line)
    }

    /// As [`LedgerState::plan_capped`](super::LedgerState::plan_capped).
    pub fn plan_capped(&self, lines: &[Line], s: &Sizing) -> Result<u64, Denied> {
        let mut held = self.hold_lines(lines);
        plan_capped(lines, s, |l| held.headroom(l))
    }

    /// As [`LedgerState::reserve_capped`](super::LedgerState::reserve_capped):
    /// decided and applied under the lines' locks, so no concurrent request
    /// can take the room in between.
    pub fn reserve_capped(
        &self,
        id: &str,
        lines: &[Line],
        s: &Sizing,
        expires_at: Timestamp,
    ) -> Result<u64, Denied> {
        let mut held = self.hold_lines(lines);
        let n = plan_capped(lines, s, |l| held.headroom(l))?;
        self.apply(&mut held, id, lines, s.amount(n), expires_at);
        Ok(n)
    }

    /// As [`LedgerState::reserve`](super::LedgerState::reserve).
    pub fn reserve(
        &self,
        id: &str,
        lines: &[Line],
        amount: Amount,
        expires_at: Timestamp,
    ) -> Result<(), Denied> {
        if self.known(&self.id_shard(id), id) {
            return Ok(());
        }
        let mut held = self.hold_lines(lines);
        for (i, line) in lines.iter().enumerate().filter(|(_, l)| l.enforce) {
            let h = held.headroom(line);
            if !fits(h, amount) {
                return Err(Denied {
                    line: i,
                    headroom: h,
                });
            }
        }
        self.apply(&mut held, id, lines, amount, expires_at);
        Ok(())
    }

    /// Records the reservation and adds it to its lines, unless the id is
    /// already known (an idempotent replay changes nothing).
    fn apply(
        &self,
        held: &mut Held<'_>,
        id: &str,
        lines: &[Line],
        amount: Amount,
        expires_at: Timestamp,
    ) {
        if self.insert_open(id, lines.to_vec(), amount, expires_at) {
            for l in lines {
                held.with(&l.charge, |b| b.hold(&l.charge, amount, true));
            }
        }
    }

    /// Adds an open reservation to its id shard; `false` if the id is known.
    fn insert_open(
        &self,
        id: &str,
        lines: Vec<Line>,
        amount: Amount,
        expires_at: Timestamp,
    ) -> bool {
        let mut ids = self.id_shard(id);
        if self.known(&ids, id) {
            return false;
        }
        ids.open.insert(
            id.to_string(),
            Open {
                lines,
                amount,
                expires_at,
                expired: false,
            },
        );
        true
    }

    /// As [`LedgerState::extend`](super::LedgerState::extend): decided and
    /// applied with the lines' shards and then the id shard held, so the
    /// reservation cannot be settled in between.
    pub fn extend(&self, id: &str, more: Amount) -> Result<Grown, ExtendError> {
        let lines = match self.id_shard(id).open.get(id) {
            Some(e) if !e.expired => e.lines.clone(),
            _ => return Err(ExtendError::NotOpen),
        };
        let mut held = self.hold_lines(&lines);
        let mut ids = self.id_shard(id);
        let Some(e) = ids.open.get_mut(id).filter(|e| !e.expired) else {
            return Err(ExtendError::NotOpen);
        };
        for (i, line) in lines.iter().enumerate().filter(|(_, l)| l.enforce) {
            let h = held.headroom(line);
            if !fits(h, more) {
                return Err(ExtendError::Denied(Denied {
                    line: i,
                    headroom: h,
                }));
            }
        }
        e.amount = e.amount.plus(more);
        for l in &lines {
            held.with(&l.charge, |b| b.hold(&l.charge, more, true));
        }
        Ok(Grown {
            amount: e.amount,
            charges: lines.into_iter().map(|l| l.charge).collect(),
            expires_at: e.expires_at,
        })
    }

    /// Moves an open reservation's deadline to `until`; `false` when it is
    /// no longer open (settled, or already expired).
    pub fn prolong(&self, id: &str, until: Timestamp) -> Option<Grown> {
        let mut ids = self.id_shard(id);
        let e = ids.open.get_mut(id).filter(|e| !e.expired)?;
        e.expires_at = until;
        Some(Grown {
            amount: e.amount,
            charges: e.lines.iter().map(|l| l.charge.clone()).collect(),
            expires_at: until,
        })
    }

    /// Takes `less` back from an open reservation (an extension that could
    /// not be made durable); nothing if it is no longer open.
    pub fn shrink(&self, id: &str, less: Amount) {
        let lines = match self.id_shard(id).open.get(id) {
            Some(e) if !e.expired => e.lines.clone(),
            _ => return,
        };
        let mut held = self.hold_lines(&lines);
        let mut ids = self.id_shard(id);
        let Some(e) = ids.open.get_mut(id).filter(|e| !e.expired) else {
            return;
        };
        e.amount = e.amount.minus(less);
        for l in &lines {
            held.with(&l.charge, |b| b.hold(&l.charge, less, false));
        }
    }

    /// Takes an open reservation out of its id shard, leaving it settled.
    fn close(&self, id: &str, now: Timestamp) -> Result<Open, Settled> {
        let fp = self.fingerprint(id);
        let mut ids = self.id_shard(id);
        if ids.settled.contains_key(&fp) {
            return Err(Settled::AlreadySettled);
        }
        let e = ids.open.remove(id).ok_or(Settled::Unknown)?;
        ids.settled.insert(fp, now.as_millisecond());
        Ok(e)
    }

    /// Charges `actual` to the reservation's lines and releases it.
    pub fn commit(&self, id: &str, actual: Amount, now: Timestamp) -> Settled {
        match self.close(id, now) {
            Ok(e) => self.charge_closed(&e, None, actual),
            Err(s) => s,
        }
    }

    /// As [`commit`](Self::commit), but charges `actual` to `charges`
    /// instead of the reservation's own lines (a budget whose period
    /// changed while the request was in flight is charged as it is now).
    pub fn commit_to(
        &self,
        id: &str,
        charges: &[CounterKey],
        actual: Amount,
        now: Timestamp,
    ) -> Settled {
        match self.close(id, now) {
            Ok(e) => self.charge_closed(&e, Some(charges), actual),
            Err(s) => s,
        }
    }

    /// Releases a closed reservation's hold on its lines and charges
    /// `actual` to `charges`, with every shard involved held at once.
    /// `charges`: `None` for the reservation's own lines.
    fn charge_closed(&self, e: &Open, charges: Option<&[CounterKey]>, actual: Amount) -> Settled {
        let own = || e.lines.iter().map(|l| &l.charge);
        let mut held = self.hold(own().chain(charges.into_iter().flatten()));
        if !e.expired {
            for l in &e.lines {
                held.with(&l.charge, |b| b.hold(&l.charge, e.amount, false));
            }
        }
        match charges {
            Some(c) => c.iter().for_each(|k| held.with(k, |b| b.charge(k, actual))),
            None => own().for_each(|k| held.with(k, |b| b.charge(k, actual))),
        }
        Settled::Committed {
            overage: actual.money > e.amount.money || actual.tokens > e.amount.tokens,
        }
    }

    /// Sets what a counter has spent (a budget's new period, counted from
    /// its records).
    pub fn set_spent(&self, key: &CounterKey, spent: Amount) {
        lock(&self.books[shard_of(key)]).set_spent(key, spent);
    }

    /// Gives the whole reservation back.
    pub fn release(&self, id: &str, now: Timestamp) -> Settled {
        let e = match self.close(id, now) {
            Ok(e) => e,
            Err(s) => return s,
        };
        if !e.expired {
            self.unhold(&e.lines, e.amount);
        }
        Settled::Released
    }

    fn unhold(&self, lines: &[Line], amount: Amount) {
        let mut held = self.hold_lines(lines);
        for l in lines {
            held.with(&l.charge, |b| b.hold(&l.charge, amount, false));
        }
    }

    /// As [`LedgerState::expire`](super::LedgerState::expire).
    pub fn expire(&self, now: Timestamp, grace: SignedDuration) -> Vec<String> {
        let mut out = Vec::new();
        let mut freed: Vec<(Vec<Line>, Amount)> = Vec::new();
        let past = |t: Timestamp| t.checked_add(grace).is_ok_and(|t| t <= now);
        let forget_before = now
            .checked_sub(grace)
            .map_or(i64::MIN, |t| t.as_millisecond());
        for shard in self.ids.iter() {
            let mut ids = lock(shard);
            ids.open.retain(|id, e| {
                if !e.expired && e.expires_at <= now {
                    e.expired = true;
                    freed.push((e.lines.clone(), e.amount));
                    out.push(id.clone());
                    true
                } else {
                    !(e.expired && past(e.expires_at))
                }
            });
            ids.settled.retain(|_, at| *at > forget_before);
        }
        for (lines, amount) in freed {
            self.unhold(&lines, amount);
        }
        out
    }

    /// Forgets settled ids older than `before` sooner than [`Self::expire`]'s
    /// grace would: they are the bulk of the ledger's memory under load
    /// (every request of the window), while expired reservations, kept
    /// for late commits, are few.
    pub fn forget_settled(&self, before: Timestamp) {
        let cut = before.as_millisecond();
        for shard in self.ids.iter() {
            lock(shard).settled.retain(|_, at| *at >= cut);
        }
    }

    /// Adds already-committed spend (rebuilding state from the store).
    pub fn restore_spent(&self, key: &CounterKey, spent: Amount) {
        lock(&self.books[shard_of(key)]).charge(key, spent);
    }

    /// Re-opens a reservation a previous process left unsettled, without
    /// checking limits: its room was granted then and is still taken.
    /// Only its charges are known, so its lines hold the reservation
    /// without a limit (it is settled at start-up).
    pub fn restore_open(
        &self,
        id: &str,
        charges: &[CounterKey],
        amount: Amount,
        expires_at: Timestamp,
    ) {
        let lines: Vec<Line> = charges
            .iter()
            .map(|k| Line {
                charge: k.clone(),
                window: super::Window::Period,
                limit: super::Limit::default(),
                enforce: false,
            })
            .collect();
        let mut held = self.hold_lines(&lines);
        self.apply(&mut held, id, &lines, amount, expires_at);
    }

    /// Every counter key.
    pub fn keys(&self) -> Vec<CounterKey> {
        self.books
            .iter()
            .flat_map(|s| lock(s).keys().collect::<Vec<_>>())
            .collect()
    }

    /// A rolling group's buckets, oldest first: (start ms, spent).
    pub fn buckets(&self, group: &str) -> Vec<(i64, Amount)> {
        lock(&self.books[hash(group.as_bytes())]).buckets(group)
    }

    /// Up to `limit` subjects with counters of `budget`, after `after`, in
    /// order: each shard's next `limit`, merged.
    pub fn subjects(&self, budget: &str, after: Option<&str>, limit: usize) -> Vec<String> {
        let mut out: Vec<String> = self
            .books
            .iter()
            .flat_map(|s| lock(s).subjects(budget, after, limit))
            .collect();
        out.sort_unstable();
        out.dedup();
        out.truncate(limit);
        out
    }

    pub fn is_open(&self, id: &str) -> bool {
        self.id_shard(id).open.get(id).is_some_and(|e| !e.expired)
    }

    pub fn open_count(&self) -> usize {
        self.ids
            .iter()
            .map(|s| lock(s).open.values().filter(|e| !e.expired).count())
            .sum()
    }

    /// Drops counters no window can reach any more (old periods, old
    /// buckets); counters and series holding reservations stay.
    pub fn retain_counters(&self, keep: impl Fn(&CounterKey) -> bool) {
        for s in self.books.iter() {
            lock(s).retain(&keep);
        }
    }
}
