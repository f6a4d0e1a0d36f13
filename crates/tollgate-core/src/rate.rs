//! Rate limits as GCRA (the generic cell rate algorithm). A limiter of
//! `per_minute` units keeps one instant, its *theoretical arrival time*:
//! when every unit taken so far has been paid back at the limit's pace.
//! `n` units are admitted at `now` when the new arrival time lies within a
//! minute of `now` — so a full minute's units may come in one burst, and
//! then one unit per `60 s / per_minute`. Units can be given back (a
//! request that used fewer tokens than it reserved, or was refused
//! elsewhere after being admitted).
//!
//! Hand-written rather than `governor`: that crate cannot give units back.
//! Time is nanoseconds since an epoch the caller picks; integer only.

const MINUTE_NS: i128 = 60_000_000_000;

/// One limiter's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gcra {
    tat_ns: i128,
}

/// Why units were not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// They fit after this many nanoseconds.
    For(i128),
    /// More units than a minute holds: they never fit.
    Never,
}

/// What a limiter shows callers (OpenAI's `x-ratelimit-*` headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    pub limit: u64,
    pub remaining: u64,
    /// Until every unit is free again.
    pub reset_ns: i128,
}

fn cost(per_minute: u64, n: u64) -> i128 {
    // per_minute > 0 (validated where limits are read).
    i128::from(n) * MINUTE_NS / i128::from(per_minute.max(1))
}

impl Gcra {
    /// Whether `n` units fit at `now`; the state that admits them if so.
    pub fn check(&self, per_minute: u64, n: u64, now: i128) -> Result<Gcra, Wait> {
        if n > per_minute {
            return Err(Wait::Never);
        }
        let tat = self.tat_ns.max(now) + cost(per_minute, n);
        if tat - now <= MINUTE_NS {
            Ok(Gcra { tat_ns: tat })
        } else {
            Err(Wait::For(tat - now - MINUTE_NS))
        }
    }

    /// Takes `n` units whether or not they fit (usage beyond what was
    /// admitted: the next requests wait for it).
    pub fn take(&mut self, per_minute: u64, n: u64, now: i128) {
        self.tat_ns = self.tat_ns.max(now) + cost(per_minute, n);
    }

    /// Gives `n` units back.
    pub fn give_back(&mut self, per_minute: u64, n: u64, now: i128) {
        self.tat_ns = (self.tat_ns - cost(per_minute, n)).max(now);
    }

    pub fn standing(&self, per_minute: u64, now: i128) -> Standing {
        let busy = (self.tat_ns - now).max(0);
        let free = (MINUTE_NS - busy).max(0);
        Standing {
            limit: per_minute,
            remaining: u64::try_from(free * i128::from(per_minute) / MINUTE_NS).unwrap_or(0),
            reset_ns: busy,
        }
    }

    /// Whether the limiter is fully free at `now` (its state can be dropped).
    pub fn is_idle(&self, now: i128) -> bool {
        self.tat_ns <= now
    }
}

/// A duration in OpenAI's reset format: `1s`, `6m0s`, `1h2m3s`, `250ms`.
pub fn openai_duration(ns: i128) -> String {
    let ms = (ns + 999_999) / 1_000_000;
    if ms < 1000 {
        return format!("{}ms", ms.max(0));
    }
    let s = (ms + 999) / 1000;
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

use serde::{Deserialize, Serialize};

use crate::budget::{BudgetError, Scope};

/// A rate limit as written in YAML or sent to the admin API.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `global`, `tenant`, `user` or `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Model globs the limit covers; empty means every model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
}

/// A rate limit, validated: for one subject of a scope (an override), or
/// for every subject of it (a default, `subject: None`), or global.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub id: String,
    pub scope: Scope,
    pub subject: Option<String>,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub models: Vec<String>,
}

impl RateLimit {
    /// Validates `input`; `scope` overrides the input's (defaults are keyed
    /// by scope in YAML), and `default` says the limit is for every subject.
    pub fn from_input(
        id: String,
        input: &RateLimitInput,
        scope: Option<Scope>,
        default: bool,
    ) -> Result<RateLimit, BudgetError> {
        crate::budget::check_id(&id, "rate limit")?;
        let scope =
            crate::budget::scope_of(scope, input.scope.as_deref(), "global, tenant, user or key")?;
        if matches!(scope, Scope::Session | Scope::Budget) {
            return Err(BudgetError::field(
                "scope",
                format!("rate limits apply to global, tenant, user or key, not {scope}"),
            ));
        }
        let subject = input.subject.clone().filter(|s| !s.is_empty());
        match (scope, &subject, default) {
            (Scope::Global, Some(_), _) => {
                return Err(BudgetError::field(
                    "subject",
                    "the global rate limit has no subject",
                ));
            }
            (s, None, false) if s != Scope::Global => {
                return Err(BudgetError::field(
                    "subject",
                    format!(
                        "a {s} rate limit needs a subject (or goes under rate_limits.defaults)"
                    ),
                ));
            }
            (_, Some(_), true) => {
                return Err(BudgetError::field(
                    "subject",
                    "a default applies to every subject; use an override for one",
                ));
            }
            _ => {}
        }
        for (field, v) in [
            ("requests_per_minute", input.requests_per_minute),
            ("tokens_per_minute", input.tokens_per_minute),
        ] {
            if v == Some(0) {
                return Err(BudgetError::field(
                    field,
                    "must be at least 1 (remove it for no limit)",
                ));
            }
        }
        if input.requests_per_minute.is_none() && input.tokens_per_minute.is_none() {
            return Err(BudgetError::field(
                "requests_per_minute",
                "a rate limit needs requests_per_minute and/or tokens_per_minute",
            ));
        }
        Ok(RateLimit {
            id,
            scope,
            subject,
            requests_per_minute: input.requests_per_minute,
            tokens_per_minute: input.tokens_per_minute,
            models: input.models.clone(),
        })
    }

    pub fn to_input(&self) -> RateLimitInput {
        RateLimitInput {
            id: Some(self.id.clone()),
            scope: Some(self.scope.as_str().into()),
            subject: self.subject.clone(),
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            models: self.models.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: i128 = 1_000_000_000;

    #[test]
    fn a_minute_bursts_then_paces() {
        let mut g = Gcra::default();
        let now = 1_000 * S;
        for _ in 0..60 {
            g = g.check(60, 1, now).unwrap();
        }
        assert_eq!(g.check(60, 1, now), Err(Wait::For(S)));
        assert_eq!(g.standing(60, now).remaining, 0);
        assert!(
            g.check(60, 1, now + S).is_ok(),
            "one a second after the burst"
        );
        assert_eq!(g.check(60, 61, now), Err(Wait::Never));
    }

    #[test]
    fn units_given_back_are_free_again() {
        let now = 5 * S;
        let g = Gcra::default().check(1000, 1000, now).unwrap();
        assert!(g.check(1000, 1, now).is_err());
        let mut g = g;
        g.give_back(1000, 400, now);
        assert_eq!(g.standing(1000, now).remaining, 400);
        assert!(g.check(1000, 400, now).is_ok());
    }

    #[test]
    fn reset_durations_read_like_openai() {
        assert_eq!(openai_duration(S), "1s");
        assert_eq!(openai_duration(360 * S), "6m0s");
        assert_eq!(openai_duration(S / 4), "250ms");
        assert_eq!(openai_duration(3723 * S), "1h2m3s");
    }

    proptest! {
        /// Whatever the arrivals, one instant admits at most a minute's
        /// units (the burst), and no 60 s window more than twice that (a
        /// full burst, then a minute of pacing).
        #[test]
        fn never_more_than_the_rate_allows(
            per_minute in 1u64..500,
            arrivals in prop::collection::vec((0i128..120_000, 1u64..20), 1..300),
        ) {
            let mut arrivals = arrivals;
            arrivals.sort();
            let mut g = Gcra::default();
            let mut admitted: Vec<(i128, u64)> = Vec::new();
            for (ms, n) in arrivals {
                let now = ms * 1_000_000;
                if let Ok(next) = g.check(per_minute, n, now) {
                    g = next;
                    admitted.push((now, n));
                }
            }
            let first_burst: u64 = admitted.iter().filter(|(t, _)| *t == admitted[0].0).map(|(_, n)| n).sum();
            prop_assert!(first_burst <= per_minute);
            for (start, _) in &admitted {
                let within: u64 = admitted
                    .iter()
                    .filter(|(t, _)| *t >= *start && *t < *start + MINUTE_NS)
                    .map(|(_, n)| n)
                    .sum();
                prop_assert!(within <= 2 * per_minute, "{within} in a minute at {per_minute}/min");
            }
        }
    }
}
