//! The ledger's state machine: reserve on N budgets at once or not at all,
//! commit the actual amount, release the rest, expire the forgotten —
//! pure, so every interleaving can be tested without I/O.
//!
//! Flow for one request:
//! 1. `reserve(id, lines, amount)`: for every enforced line, `spent +
//!    reserved + amount ≤ limit` over the line's window; if any line fails,
//!    nothing changes. Otherwise every line's charge counter gains the
//!    amount as *reserved*.
//! 2. `commit(id, actual)`: each line moves the reserved amount out and adds
//!    `actual` to *spent*. Idempotent: a second commit (a retry, a replay)
//!    changes nothing. `actual > amount` is an overage: recorded as spent
//!    (visible as overspend), never lost.
//! 3. `release(id)`: a request that produced nothing gives its reservation
//!    back. `expire(now)` does that for reservations past their deadline;
//!    a late commit still charges them.
//!
//! Counter keys are opaque strings built by the caller (budget, subject,
//! period start or rolling bucket); a line checks the sum of its window's
//! counters and charges one of them.

use std::collections::HashMap;

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
}

/// A limit in money and/or tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub money: Option<Money>,
    pub tokens: Option<u64>,
}

/// One budget's part in a reservation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The counter this request is charged to.
    pub charge: String,
    /// The counters whose sum is checked against the limit (includes `charge`).
    pub window: Vec<String>,
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

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    lines: Vec<Line>,
    amount: Amount,
    expires_at: Timestamp,
    /// Expired and released; a late commit still charges the lines.
    expired: bool,
}

#[derive(Clone, Debug, Default)]
pub struct LedgerState {
    counters: HashMap<String, Counter>,
    open: HashMap<String, Entry>,
    /// Settled ids and when, for idempotency (pruned by age).
    settled: HashMap<String, Timestamp>,
}

impl LedgerState {
    pub fn counter(&self, key: &str) -> Counter {
        self.counters.get(key).copied().unwrap_or_default()
    }

    /// Spent and reserved over a window.
    pub fn used(&self, window: &[String]) -> Counter {
        used(window, |k| self.counter(k))
    }

    pub fn headroom(&self, line: &Line) -> Headroom {
        headroom(line, |k| self.counter(k))
    }

    fn fits(&self, line: &Line, amount: Amount) -> bool {
        fits(self.headroom(line), amount)
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
        if self.open.contains_key(id) || self.settled.contains_key(id) {
            return Ok(());
        }
        if let Some((i, line)) = lines
            .iter()
            .enumerate()
            .find(|(_, l)| l.enforce && !self.fits(l, amount))
        {
            return Err(Denied {
                line: i,
                headroom: self.headroom(line),
            });
        }
        for l in &lines {
            let c = self.counters.entry(l.charge.clone()).or_default();
            c.reserved = c.reserved.plus(amount);
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

    /// The largest `n ≤ want` (at least `min`) such that `base + n ×
    /// per_unit` fits every enforced line, or the line that refuses.
    pub fn plan_capped(
        &self,
        lines: &[Line],
        base: Amount,
        per_unit: Amount,
        want: u64,
        min: u64,
    ) -> Result<u64, Denied> {
        plan_capped(lines, base, per_unit, want, min, |k| self.counter(k))
    }

    /// Reserves `base + n × per_unit` for the largest `n ≤ want` every
    /// enforced line can afford, provided `n ≥ min`; returns `n`. This is how
    /// an output limit is capped to what the budgets afford, decided and
    /// reserved in one step so no concurrent request can take the room.
    #[allow(clippy::too_many_arguments)]
    pub fn reserve_capped(
        &mut self,
        id: &str,
        lines: Vec<Line>,
        base: Amount,
        per_unit: Amount,
        want: u64,
        min: u64,
        expires_at: Timestamp,
    ) -> Result<u64, Denied> {
        let n = self.plan_capped(&lines, base, per_unit, want, min)?;
        self.reserve(id, lines, sized(base, per_unit, n), expires_at)
            .map(|()| n)
    }

    /// Charges `actual` and releases the reservation.
    pub fn commit(&mut self, id: &str, actual: Amount, now: Timestamp) -> Settled {
        if self.settled.contains_key(id) {
            return Settled::AlreadySettled;
        }
        let Some(e) = self.open.remove(id) else {
            return Settled::Unknown;
        };
        for l in &e.lines {
            let c = self.counters.entry(l.charge.clone()).or_default();
            if !e.expired {
                c.reserved = c.reserved.minus(e.amount);
            }
            c.spent = c.spent.plus(actual);
        }
        self.settled.insert(id.to_string(), now);
        Settled::Committed {
            overage: actual.money > e.amount.money || actual.tokens > e.amount.tokens,
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
                let c = self.counters.entry(l.charge.clone()).or_default();
                c.reserved = c.reserved.minus(e.amount);
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
                    let c = self.counters.entry(l.charge.clone()).or_default();
                    c.reserved = c.reserved.minus(e.amount);
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
    pub fn restore_spent(&mut self, key: &str, spent: Amount) {
        let c = self.counters.entry(key.to_string()).or_default();
        c.spent = c.spent.plus(spent);
    }

    /// Every counter key.
    pub fn keys(&self) -> Vec<String> {
        self.counters.keys().cloned().collect()
    }

    pub fn is_open(&self, id: &str) -> bool {
        self.open.get(id).is_some_and(|e| !e.expired)
    }

    pub fn open_count(&self) -> usize {
        self.open.values().filter(|e| !e.expired).count()
    }

    /// Drops counters no window can reach any more (old periods, old buckets).
    pub fn retain_counters(&mut self, keep: impl Fn(&str) -> bool) {
        self.counters
            .retain(|k, c| keep(k) || c.reserved != Amount::default());
    }
}

/// Spent and reserved summed over `window`, each counter read by `get`.
fn used(window: &[String], get: impl Fn(&str) -> Counter) -> Counter {
    window.iter().fold(Counter::default(), |acc, k| {
        let c = get(k);
        Counter {
            spent: acc.spent.plus(c.spent),
            reserved: acc.reserved.plus(c.reserved),
        }
    })
}

/// What is left under `line`'s limit, its window's counters read by `get`.
fn headroom(line: &Line, get: impl Fn(&str) -> Counter) -> Headroom {
    let u = used(&line.window, get);
    let taken = u.spent.plus(u.reserved);
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
    base: Amount,
    per_unit: Amount,
    want: u64,
    min: u64,
    get: impl Fn(&str) -> Counter,
) -> Result<u64, Denied> {
    let mut n = want;
    let mut tightest: Option<(usize, Headroom)> = None;
    for (i, line) in lines.iter().enumerate().filter(|(_, l)| l.enforce) {
        let h = headroom(line, &get);
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
