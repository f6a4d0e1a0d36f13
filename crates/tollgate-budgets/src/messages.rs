//! What budgets tell people: warning marks, `warn`'s message past the
//! limit, and refusal texts, rendered from a budget's state.

use tollgate_core::Money;
use tollgate_core::budget::{Action, DEFAULT_WARN_MESSAGE};
use tollgate_core::period::PeriodKind;
use tollgate_core::template::Template;

use crate::engine::{Applied, State};

/// The share of the limit taken (spent and in flight), in hundredths of a
/// percent, for the tighter unit — past 100 % when spend passed the limit
/// (soft budgets let it); `None` when unlimited.
pub fn used_bp(st: &State) -> Option<i128> {
    let taken = st.spent.plus(st.reserved);
    let money = st.limit.money.map(|l| {
        let l = l.units();
        if l <= 0 {
            10_000
        } else {
            taken.money.units() * 10_000 / l
        }
    });
    let tokens = st.limit.tokens.map(|l| {
        if l == 0 {
            10_000
        } else {
            i128::from(taken.tokens) * 10_000 / i128::from(l)
        }
    });
    money.into_iter().chain(tokens).max()
}

fn percent(bp: i128) -> String {
    format!("{}.{:02}", bp / 100, bp % 100)
}

fn period_word(p: PeriodKind) -> String {
    match p {
        PeriodKind::Rolling(_) => p.to_string().replacen(':', " ", 1),
        _ => p.to_string(),
    }
}

fn usd(m: Option<Money>) -> String {
    m.map_or_else(|| "unlimited".into(), |m| m.to_string())
}

/// Renders `t` with `a`'s facts in state `st`.
pub fn render(t: &Template, a: &Applied, st: &State) -> String {
    let b = &a.budget;
    t.render(|fact| match fact {
        "percent_used" => percent(used_bp(st).unwrap_or(0)),
        "period" => period_word(b.period),
        "tokens_used" => st.spent.tokens.to_string(),
        "tokens_limit" => st
            .limit
            .tokens
            .map_or_else(|| "unlimited".into(), |t| t.to_string()),
        "tokens_remaining" => st
            .headroom
            .tokens
            .map_or_else(|| "unlimited".into(), |t| t.to_string()),
        "usd_used" => st.spent.money.to_string(),
        "usd_limit" => usd(st.limit.money),
        "usd_remaining" => usd(st.headroom.money),
        "reset_time" => a
            .resets_at
            .map_or_else(|| "never".into(), |t| t.to_string()),
        "budget" => b.name.clone().unwrap_or_else(|| b.id.clone()),
        _ => String::new(),
    })
}

/// The warning to show for `a` in state `st`, if any: the message of the
/// highest mark passed, or — for a `warn` budget past its limit with no
/// mark at 100 % — the default one. With its share used, for picking the
/// most urgent of several budgets.
pub fn warning(a: &Applied, st: &State) -> Option<(i128, String)> {
    if a.budget.warnings.is_empty() && a.budget.action != Action::Warn {
        return None;
    }
    let bp = used_bp(st)?;
    let over = st.headroom.money.is_some_and(|m| m.units() <= 0) || st.headroom.tokens == Some(0);
    let mark = a
        .budget
        .warnings
        .iter()
        .rev()
        .find(|w| bp >= i128::from(w.at_pct) * 100);
    match mark {
        Some(w) if !(over && a.budget.action == Action::Warn && w.at_pct < 100) => {
            Some((bp, render(&w.message, a, st)))
        }
        _ if over && a.budget.action == Action::Warn => {
            let t = Template::parse(DEFAULT_WARN_MESSAGE).ok()?;
            Some((bp, render(&t, a, st)))
        }
        _ => None,
    }
}

/// The most urgent warning among a request's budgets.
pub fn most_urgent(applied: &[Applied], states: &[State]) -> Option<String> {
    applied
        .iter()
        .zip(states)
        .filter_map(|(a, st)| warning(a, st))
        .max_by_key(|(bp, _)| *bp)
        .map(|(_, m)| m)
}

/// Money as dollars and cents, rounded down (a hint, not a bill).
fn dollars(m: Money) -> String {
    let units = m.units().max(0);
    let cents = units / 10_000_000_000;
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// The budget hint for a low budget: what is left of what, until when,
/// and the advice — deterministic, at most `max_chars` characters.
/// `Budget: $0.42 of $5.00 left (8%) this day; resets
/// 2026-12-02T00:00Z. Budget is low: prefer short answers and cheaper
/// tools.`
pub fn hint(a: &Applied, st: &State, max_chars: usize) -> String {
    let left_bp = 10_000 - used_bp(st).unwrap_or(0).clamp(0, 10_000);
    let amount = match (
        st.limit.money,
        st.headroom.money,
        st.limit.tokens,
        st.headroom.tokens,
    ) {
        (Some(l), Some(h), _, _) => format!("{} of {}", dollars(h), dollars(l)),
        (_, _, Some(l), Some(h)) => format!("{h} of {l} tokens"),
        _ => "some".to_string(),
    };
    let when = match a.budget.period {
        PeriodKind::Daily => "this day".to_string(),
        PeriodKind::Weekly => "this week".to_string(),
        PeriodKind::Monthly => "this month".to_string(),
        PeriodKind::Lifetime => "in total".to_string(),
        p @ PeriodKind::Rolling(_) => {
            let w = p.to_string();
            format!("in the last {}", w.trim_start_matches("rolling:"))
        }
    };
    let reset = a
        .resets_at
        .map(|t| format!("; resets {}", t.strftime("%Y-%m-%dT%H:%MZ")))
        .unwrap_or_default();
    let text = format!(
        "Budget: {amount} left ({}%) {when}{reset}. Budget is low: prefer short answers and cheaper tools.",
        left_bp / 100
    );
    text.chars().take(max_chars).collect()
}
