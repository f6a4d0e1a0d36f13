//! [`LedgerState`]'s state machine without a global lock: the ledger the
//! gateway runs. Counters live in shards; a reservation locks the shards
//! of its lines in ascending order (so two reservations never deadlock),
//! decides and applies under those locks (all or nothing), then records
//! itself in the id shard. Requests on unrelated budgets never contend.
//!
//! Lock order: counter shards (ascending), then one id shard. Commit,
//! release and expire take the id shard alone, let it go, and only then
//! lock counters, so the order is never reversed.
//!
//! Sharding key: the counters of one budget line (its charge and the rest
//! of its window) share a shard when their keys share everything before
//! the last `|` — the gateway's keys are `budget|subject|period`.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use jiff::{SignedDuration, Timestamp};

use super::{
    Amount, Counter, Denied, Headroom, Line, Settled, fits, headroom, plan_capped, sized, used,
};

const SHARDS: usize = 64;

type Counters = HashMap<String, Counter>;

#[derive(Debug)]
struct Open {
    charges: Vec<String>,
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
    counters: Box<[Mutex<Counters>]>,
    ids: Box<[Mutex<Ids>]>,
    /// Two independently keyed SipHashes: a fingerprint no caller-chosen id
    /// can be crafted to collide with.
    keys: (RandomState, RandomState),
}

impl Default for ShardedLedger {
    fn default() -> Self {
        ShardedLedger {
            counters: (0..SHARDS).map(|_| Mutex::default()).collect(),
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

fn counter_shard(key: &str) -> usize {
    let group = key.rsplit_once('|').map_or(key, |(g, _)| g);
    hash(group.as_bytes())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the ledger down with it; every update
    // below is a few field writes that leave the maps consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counter shards held together, in ascending order.
struct Held<'a> {
    shards: Vec<usize>,
    maps: Vec<MutexGuard<'a, Counters>>,
}

impl Held<'_> {
    fn map(&self, key: &str) -> Option<&Counters> {
        let i = self.shards.binary_search(&counter_shard(key)).ok()?;
        Some(&self.maps[i])
    }

    fn get(&self, key: &str) -> Counter {
        self.map(key)
            .and_then(|m| m.get(key))
            .copied()
            .unwrap_or_default()
    }

    fn update(&mut self, key: &str, f: impl FnOnce(&mut Counter)) {
        let Ok(i) = self.shards.binary_search(&counter_shard(key)) else {
            debug_assert!(false, "counter {key} updated without its shard held");
            return;
        };
        let map = &mut self.maps[i];
        match map.get_mut(key) {
            Some(c) => f(c),
            None => f(map.entry(key.to_string()).or_default()),
        }
    }
}

impl ShardedLedger {
    fn hold<'k>(&self, keys: impl Iterator<Item = &'k str>) -> Held<'_> {
        let mut shards: Vec<usize> = keys.map(counter_shard).collect();
        shards.sort_unstable();
        shards.dedup();
        let maps = shards.iter().map(|&i| lock(&self.counters[i])).collect();
        Held { shards, maps }
    }

    fn hold_lines(&self, lines: &[Line]) -> Held<'_> {
        self.hold(lines.iter().flat_map(|l| {
            std::iter::once(l.charge.as_str()).chain(l.window.iter().map(String::as_str))
        }))
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

    pub fn counter(&self, key: &str) -> Counter {
        lock(&self.counters[counter_shard(key)])
            .get(key)
            .copied()
            .unwrap_or_default()
    }

    /// Spent and reserved over a window.
    pub fn used(&self, window: &[String]) -> Counter {
        let held = self.hold(window.iter().map(String::as_str));
        used(window, |k| held.get(k))
    }

    pub fn headroom(&self, line: &Line) -> Headroom {
        let held = self.hold_lines(std::slice::from_ref(line));
        headroom(line, |k| held.get(k))
    }

    /// As [`LedgerState::plan_capped`](super::LedgerState::plan_capped).
    pub fn plan_capped(
        &self,
        lines: &[Line],
        base: Amount,
        per_unit: Amount,
        want: u64,
        min: u64,
    ) -> Result<u64, Denied> {
        let held = self.hold_lines(lines);
        plan_capped(lines, base, per_unit, want, min, |k| held.get(k))
    }

    /// As [`LedgerState::reserve_capped`](super::LedgerState::reserve_capped):
    /// decided and applied under the lines' locks, so no concurrent request
    /// can take the room in between.
    #[allow(clippy::too_many_arguments)]
    pub fn reserve_capped(
        &self,
        id: &str,
        lines: &[Line],
        base: Amount,
        per_unit: Amount,
        want: u64,
        min: u64,
        expires_at: Timestamp,
    ) -> Result<u64, Denied> {
        let mut held = self.hold_lines(lines);
        let n = plan_capped(lines, base, per_unit, want, min, |k| held.get(k))?;
        self.apply(&mut held, id, lines, sized(base, per_unit, n), expires_at);
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
            let h = headroom(line, |k| held.get(k));
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

    /// Records the reservation and adds it to the charged counters, unless
    /// the id is already known (an idempotent replay changes nothing).
    fn apply(
        &self,
        held: &mut Held<'_>,
        id: &str,
        lines: &[Line],
        amount: Amount,
        expires_at: Timestamp,
    ) {
        let charges = lines.iter().map(|l| l.charge.clone()).collect();
        if self.insert_open(id, charges, amount, expires_at) {
            for l in lines {
                held.update(&l.charge, |c| c.reserved = c.reserved.plus(amount));
            }
        }
    }

    /// Adds an open reservation to its id shard; `false` if the id is known.
    fn insert_open(
        &self,
        id: &str,
        charges: Vec<String>,
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
                charges,
                amount,
                expires_at,
                expired: false,
            },
        );
        true
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

    /// Charges `actual` and releases the reservation.
    pub fn commit(&self, id: &str, actual: Amount, now: Timestamp) -> Settled {
        match self.close(id, now) {
            Ok(e) => self.charge_closed(&e, &e.charges, actual),
            Err(s) => s,
        }
    }

    /// As [`commit`](Self::commit), but charges `actual` to `charges`
    /// instead of the reservation's own lines (a budget whose period
    /// changed while the request was in flight is charged as it is now).
    pub fn commit_to(
        &self,
        id: &str,
        charges: &[String],
        actual: Amount,
        now: Timestamp,
    ) -> Settled {
        match self.close(id, now) {
            Ok(e) => self.charge_closed(&e, charges, actual),
            Err(s) => s,
        }
    }

    /// Releases a closed reservation's hold on its lines and charges
    /// `actual` to `charges`, with every shard involved held at once.
    fn charge_closed(&self, e: &Open, charges: &[String], actual: Amount) -> Settled {
        let mut held = self.hold(e.charges.iter().chain(charges).map(String::as_str));
        if !e.expired {
            for k in &e.charges {
                held.update(k, |c| c.reserved = c.reserved.minus(e.amount));
            }
        }
        for k in charges {
            held.update(k, |c| c.spent = c.spent.plus(actual));
        }
        Settled::Committed {
            overage: actual.money > e.amount.money || actual.tokens > e.amount.tokens,
        }
    }

    /// Sets what a counter has spent (a budget's new period, counted from
    /// its records).
    pub fn set_spent(&self, key: &str, spent: Amount) {
        let mut held = self.hold(std::iter::once(key));
        held.update(key, |c| c.spent = spent);
    }

    /// Gives the whole reservation back.
    pub fn release(&self, id: &str, now: Timestamp) -> Settled {
        let e = match self.close(id, now) {
            Ok(e) => e,
            Err(s) => return s,
        };
        if !e.expired {
            let mut held = self.hold(e.charges.iter().map(String::as_str));
            for k in &e.charges {
                held.update(k, |c| c.reserved = c.reserved.minus(e.amount));
            }
        }
        Settled::Released
    }

    /// As [`LedgerState::expire`](super::LedgerState::expire).
    pub fn expire(&self, now: Timestamp, grace: SignedDuration) -> Vec<String> {
        let mut out = Vec::new();
        let mut freed: Vec<(Vec<String>, Amount)> = Vec::new();
        let past = |t: Timestamp| t.checked_add(grace).is_ok_and(|t| t <= now);
        let forget_before = now
            .checked_sub(grace)
            .map_or(i64::MIN, |t| t.as_millisecond());
        for shard in self.ids.iter() {
            let mut ids = lock(shard);
            ids.open.retain(|id, e| {
                if !e.expired && e.expires_at <= now {
                    e.expired = true;
                    freed.push((e.charges.clone(), e.amount));
                    out.push(id.clone());
                    true
                } else {
                    !(e.expired && past(e.expires_at))
                }
            });
            ids.settled.retain(|_, at| *at > forget_before);
        }
        for (charges, amount) in freed {
            let mut held = self.hold(charges.iter().map(String::as_str));
            for k in &charges {
                held.update(k, |c| c.reserved = c.reserved.minus(amount));
            }
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
    pub fn restore_spent(&self, key: &str, spent: Amount) {
        let mut held = self.hold(std::iter::once(key));
        held.update(key, |c| c.spent = c.spent.plus(spent));
    }

    /// Re-opens a reservation a previous process left unsettled, without
    /// checking limits: its room was granted then and is still taken.
    pub fn restore_open(
        &self,
        id: &str,
        charges: &[String],
        amount: Amount,
        expires_at: Timestamp,
    ) {
        if self.insert_open(id, charges.to_vec(), amount, expires_at) {
            let mut held = self.hold(charges.iter().map(String::as_str));
            for k in charges {
                held.update(k, |c| c.reserved = c.reserved.plus(amount));
            }
        }
    }

    /// Every counter key.
    pub fn keys(&self) -> Vec<String> {
        self.counters
            .iter()
            .flat_map(|s| lock(s).keys().cloned().collect::<Vec<_>>())
            .collect()
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
    /// buckets); counters holding reservations stay.
    pub fn retain_counters(&self, keep: impl Fn(&str) -> bool) {
        for s in self.counters.iter() {
            lock(s).retain(|k, c| keep(k) || c.reserved != Amount::default());
        }
    }
}
