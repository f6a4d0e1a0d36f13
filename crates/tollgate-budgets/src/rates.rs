//! Rate limits at run time: which limits apply to a caller and model, and
//! admitting a request's one request and its reserved tokens on all of them
//! at once (or none), then settling the tokens to what it used.
//!
//! Per scope (global, tenant, user, key) an override for the caller's
//! subject that covers the model wins over the scope's default. Each
//! (limit, subject) has two GCRA cells (requests, tokens) in one of 32
//! shards, locked in ascending order for a multi-limit admission. Time is
//! the engine's clock, so tests move it by hand.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tollgate_core::Caller;
use tollgate_core::budget::Scope;
use tollgate_core::rate::{Gcra, RateLimit, Standing, Wait};

use crate::engine::Clock;

const SHARDS: usize = 32;

#[derive(Clone, Copy, Debug, Default)]
struct Cell {
    requests: Gcra,
    tokens: Gcra,
}

/// (limit id, its rates, subject): a limit whose rates change counts
/// afresh (a cell's state is in time at its old pace).
type Key = (Arc<str>, Option<u64>, Option<u64>, Box<str>);

/// One limit as it applies to one request: the limit, and the subject it
/// counts for (`*` for the global one).
#[derive(Clone, Debug)]
pub struct Line {
    pub limit: Arc<RateLimit>,
    pub subject: String,
}

impl Line {
    fn key(&self) -> Key {
        (
            Arc::from(self.limit.id.as_str()),
            self.limit.requests_per_minute,
            self.limit.tokens_per_minute,
            self.subject.as_str().into(),
        )
    }
}

/// What an admitted request holds: one request and `tokens` on each line.
#[derive(Clone, Debug)]
pub struct Admitted {
    pub lines: Vec<Line>,
    pub tokens: u64,
}

/// Why a request was not admitted: the first line that refused, which
/// unit, and how long until it fits (`None`: never — more tokens than the
/// limit allows in a minute).
#[derive(Clone, Debug)]
pub struct Limited {
    pub line: Line,
    pub unit: &'static str,
    pub retry_after_ns: Option<i128>,
    pub requests: Option<Standing>,
    pub tokens: Option<Standing>,
}

pub struct RateLimiter {
    limits: RwLock<Arc<Vec<Arc<RateLimit>>>>,
    shards: Box<[Mutex<HashMap<Key, Cell>>]>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn subject_of(caller: &Caller, scope: Scope) -> Option<String> {
    match scope {
        Scope::Global => Some("*".into()),
        Scope::Tenant => caller.tenant.clone(),
        Scope::User => caller.user.clone(),
        Scope::Key => caller.key_id.clone(),
        _ => None,
    }
}

fn covers(l: &RateLimit, model: &str) -> bool {
    l.models.is_empty()
        || l.models
            .iter()
            .any(|p| p == model || wildmatch::WildMatch::new(p).matches(model))
}

impl RateLimiter {
    pub fn new(limits: Vec<RateLimit>, clock: Arc<dyn Clock>) -> RateLimiter {
        RateLimiter {
            limits: RwLock::new(Arc::new(limits.into_iter().map(Arc::new).collect())),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            clock,
        }
    }

    /// Replaces the limits (config reload, admin changes). Cells of limits
    /// that stay unchanged keep their state; a changed limit counts afresh.
    pub fn replace(&self, limits: Vec<RateLimit>) {
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(limits.into_iter().map(Arc::new).collect());
    }

    pub fn limits(&self) -> Arc<Vec<Arc<RateLimit>>> {
        self.limits
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_empty(&self) -> bool {
        self.limits().is_empty()
    }

    fn now_ns(&self) -> i128 {
        self.clock.now().as_nanosecond()
    }

    fn shard(&self, key: &Key) -> usize {
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    /// The limits that apply to `caller` using `model`.
    pub fn applicable(&self, caller: &Caller, model: &str) -> Vec<Line> {
        let limits = self.limits();
        let mut out = Vec::new();
        for scope in [Scope::Global, Scope::Tenant, Scope::User, Scope::Key] {
            let Some(subject) = subject_of(caller, scope) else {
                continue;
            };
            let of_scope = || {
                limits
                    .iter()
                    .filter(|l| l.scope == scope && covers(l, model))
            };
            let overrides: Vec<&Arc<RateLimit>> = of_scope()
                .filter(|l| scope == Scope::Global || l.subject.as_deref() == Some(&subject))
                .collect();
            let chosen = if overrides.is_empty() {
                of_scope().filter(|l| l.subject.is_none()).collect()
            } else {
                overrides
            };
            out.extend(chosen.into_iter().map(|l| Line {
                limit: l.clone(),
                subject: subject.clone(),
            }));
        }
        out
    }

    /// Admits one request and `tokens` on every line, or on none.
    pub fn admit(&self, lines: Vec<Line>, tokens: u64) -> Result<Admitted, Box<Limited>> {
        if lines.is_empty() {
            return Ok(Admitted { lines, tokens });
        }
        let now = self.now_ns();
        let keys: Vec<Key> = lines.iter().map(Line::key).collect();
        let mut order: Vec<usize> = keys.iter().map(|k| self.shard(k)).collect();
        order.sort_unstable();
        order.dedup();
        let mut held: Vec<(usize, MutexGuard<'_, HashMap<Key, Cell>>)> =
            order.iter().map(|&i| (i, lock(&self.shards[i]))).collect();
        let mut next = Vec::with_capacity(lines.len());
        for (line, key) in lines.iter().zip(&keys) {
            let shard = self.shard(key);
            let Some((_, map)) = held.iter().find(|(i, _)| *i == shard) else {
                continue;
            };
            let cell = map.get(key).copied().unwrap_or_default();
            let l = &line.limit;
            let check = |g: Gcra, per: Option<u64>, n: u64| match per {
                Some(p) => g.check(p, n, now).map(Some),
                None => Ok(None),
            };
            let refused = |unit, wait: Wait| {
                Box::new(Limited {
                    line: line.clone(),
                    unit,
                    retry_after_ns: match wait {
                        Wait::For(ns) => Some(ns),
                        Wait::Never => None,
                    },
                    requests: l
                        .requests_per_minute
                        .map(|p| cell.requests.standing(p, now)),
                    tokens: l.tokens_per_minute.map(|p| cell.tokens.standing(p, now)),
                })
            };
            let r = check(cell.requests, l.requests_per_minute, 1)
                .map_err(|w| refused("requests", w))?;
            let t = check(cell.tokens, l.tokens_per_minute, tokens)
                .map_err(|w| refused("tokens", w))?;
            next.push((
                shard,
                key.clone(),
                Cell {
                    requests: r.unwrap_or(cell.requests),
                    tokens: t.unwrap_or(cell.tokens),
                },
            ));
        }
        for (shard, key, cell) in next {
            if let Some((_, map)) = held.iter_mut().find(|(i, _)| *i == shard) {
                map.insert(key, cell);
            }
        }
        Ok(Admitted { lines, tokens })
    }

    fn each(&self, a: &Admitted, mut f: impl FnMut(&RateLimit, &mut Cell, i128)) {
        let now = self.now_ns();
        for line in &a.lines {
            let key = line.key();
            let mut map = lock(&self.shards[self.shard(&key)]);
            let cell = map.entry(key).or_default();
            f(&line.limit, cell, now);
        }
    }

    /// Settles an admitted request's tokens to what it used: the unused
    /// part is given back, usage beyond it is taken (later requests wait).
    pub fn settle(&self, a: &Admitted, used_tokens: u64) {
        if a.lines.is_empty() || used_tokens == a.tokens {
            return;
        }
        self.each(a, |l, cell, now| {
            if let Some(p) = l.tokens_per_minute {
                if used_tokens < a.tokens {
                    cell.tokens.give_back(p, a.tokens - used_tokens, now);
                } else {
                    cell.tokens.take(p, used_tokens - a.tokens, now);
                }
            }
        });
    }

    /// Gives an admitted request back whole (it never reached a provider).
    pub fn undo(&self, a: &Admitted) {
        self.each(a, |l, cell, now| {
            if let Some(p) = l.requests_per_minute {
                cell.requests.give_back(p, 1, now);
            }
            if let Some(p) = l.tokens_per_minute {
                cell.tokens.give_back(p, a.tokens, now);
            }
        });
    }

    /// The standing of the first line (for `x-ratelimit-*` on answers).
    pub fn standing(&self, line: &Line) -> (Option<Standing>, Option<Standing>) {
        let now = self.now_ns();
        let key = line.key();
        let cell = lock(&self.shards[self.shard(&key)])
            .get(&key)
            .copied()
            .unwrap_or_default();
        let l = &line.limit;
        (
            l.requests_per_minute
                .map(|p| cell.requests.standing(p, now)),
            l.tokens_per_minute.map(|p| cell.tokens.standing(p, now)),
        )
    }

    /// Forgets cells that are fully free (their state is the default).
    pub fn prune(&self) {
        let now = self.now_ns();
        for s in self.shards.iter() {
            lock(s).retain(|_, c| !(c.requests.is_idle(now) && c.tokens.is_idle(now)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ManualClock;
    use tollgate_core::rate::RateLimitInput;

    fn limit(
        id: &str,
        scope: &str,
        subject: Option<&str>,
        rpm: Option<u64>,
        tpm: Option<u64>,
    ) -> RateLimit {
        RateLimit::from_input(
            id.into(),
            &RateLimitInput {
                scope: Some(scope.into()),
                subject: subject.map(Into::into),
                requests_per_minute: rpm,
                tokens_per_minute: tpm,
                ..Default::default()
            },
            None,
            subject.is_none() && scope != "global",
        )
        .unwrap()
    }

    fn alice() -> Caller {
        Caller {
            user: Some("alice".into()),
            key_id: Some("key_1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn overrides_win_and_admission_is_all_or_nothing() {
        let clock = Arc::new(ManualClock::new(jiff::Timestamp::UNIX_EPOCH));
        let rl = RateLimiter::new(
            vec![
                limit("d-user", "user", None, Some(100), None),
                limit("alice", "user", Some("alice"), Some(2), None),
                limit("d-key", "key", None, None, Some(1000)),
            ],
            clock.clone(),
        );
        let lines = rl.applicable(&alice(), "gpt-4o");
        let ids: Vec<&str> = lines.iter().map(|l| l.limit.id.as_str()).collect();
        assert_eq!(ids, vec!["alice", "d-key"]);
        let a = rl.admit(lines.clone(), 600).unwrap();
        // The key's tokens would pass the limit: nothing is taken anywhere.
        let refused = rl.admit(lines.clone(), 600).unwrap_err();
        assert_eq!(
            (refused.line.limit.id.as_str(), refused.unit),
            ("d-key", "tokens")
        );
        assert_eq!(rl.standing(&lines[0]).0.unwrap().remaining, 1);
        rl.settle(&a, 100);
        let b = rl.admit(lines.clone(), 600).unwrap();
        let c = rl.admit(lines.clone(), 10).unwrap_err();
        assert_eq!((c.line.limit.id.as_str(), c.unit), ("alice", "requests"));
        assert_eq!(c.retry_after_ns, Some(30_000_000_000));
        rl.undo(&b);
        assert!(rl.admit(lines, 10).is_ok());
    }
}
