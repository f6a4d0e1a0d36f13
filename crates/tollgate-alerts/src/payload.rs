//! Webhook bodies: the JSON event, and the same facts as a Slack message.

use serde_json::{Value, json};
use tollgate_budgets::{Applied, State};
use tollgate_core::Money;
use tollgate_core::period::PeriodKind;
use tollgate_store::Breakdown;

/// What an alert says about a budget.
pub struct BudgetFacts<'a> {
    pub applied: &'a Applied,
    pub state: &'a State,
    pub breakdown: &'a Breakdown,
}

fn percent(bp: i128) -> String {
    format!("{}.{:02}", bp / 100, bp % 100)
}

/// The JSON body of a budget alert (`budget.*` types).
pub fn budget_body(
    id: &str,
    kind: &str,
    time: jiff::Timestamp,
    severity: &str,
    f: &BudgetFacts<'_>,
    threshold_pct: Option<u8>,
    message: Option<&str>,
) -> Value {
    let b = &f.applied.budget;
    let st = f.state;
    let mut v = json!({
        "id": id,
        "type": kind,
        "time": time.to_string(),
        "severity": severity,
        "budget": {
            "id": b.id,
            "scope": b.scope.as_str(),
            "subject": f.applied.subject,
            "name": b.name,
            "period": b.period.to_string(),
        },
        "threshold_pct": threshold_pct,
        // Spent and reserved by requests in flight: a refusing budget is
        // full of reservations.
        "percent_used": tollgate_budgets::messages::used_bp(st).map(percent),
        "used_usd": st.limit.money.map(|_| st.spent.money.to_string()),
        "reserved_usd": st.limit.money.map(|_| st.reserved.money.to_string()),
        "limit_usd": st.limit.money.map(Money::to_usd_string),
        "used_tokens": st.limit.tokens.map(|_| st.spent.tokens),
        "reserved_tokens": st.limit.tokens.map(|_| st.reserved.tokens),
        "limit_tokens": st.limit.tokens,
        "period_start": (b.period != PeriodKind::Lifetime).then(|| f.applied.period.start.to_string()),
        "resets_at": f.applied.resets_at.map(|t| t.to_string()),
        "top_models": f.breakdown.models.iter().map(|(m, c, n)| json!({
            "model": m, "cost_usd": c.to_string(), "requests": n,
        })).collect::<Vec<_>>(),
        "top_spenders": f.breakdown.spenders.iter().map(|(u, c)| json!({
            "user": u, "cost_usd": c.to_string(),
        })).collect::<Vec<_>>(),
    });
    if let Some(m) = message {
        v["message"] = json!(m);
    }
    v
}

/// A `test` event for a budget's targets.
pub fn test_body(id: &str, time: jiff::Timestamp, f: &BudgetFacts<'_>) -> Value {
    let mut v = budget_body(id, "test", time, "info", f, None, None);
    v["message"] = json!("A test alert from Tollgate: this target receives this budget's alerts.");
    v
}

/// Slack's control characters escaped: a subject named `<!channel>` (user
/// ids can come from callers' headers or tokens) cannot ping a channel or
/// forge a link.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The same facts as a Slack message (`{"text": ...}`, mrkdwn).
pub fn slack_body(body: &Value) -> Value {
    let s = |k: &str| body[k].as_str().unwrap_or("").to_string();
    let mut lines = vec![format!("*Tollgate {}* ({})", s("type"), s("severity"))];
    if let Some(b) = body.get("budget").filter(|b| b.is_object()) {
        let subject = b["subject"].as_str().unwrap_or("");
        let mut line = format!(
            "Budget `{}` ({} {}{}): {}% used",
            b["id"].as_str().unwrap_or(""),
            b["period"].as_str().unwrap_or(""),
            b["scope"].as_str().unwrap_or(""),
            if subject.is_empty() {
                String::new()
            } else {
                format!(" {subject}")
            },
            body["percent_used"].as_str().unwrap_or("?"),
        );
        if let Some(t) = body["threshold_pct"].as_u64() {
            line.push_str(&format!(", past its {t}% threshold"));
        }
        lines.push(line);
        match (body["used_usd"].as_str(), body["limit_usd"].as_str()) {
            (Some(u), Some(l)) => lines.push(format!("${u} of ${l}")),
            _ => {
                if let (Some(u), Some(l)) =
                    (body["used_tokens"].as_u64(), body["limit_tokens"].as_u64())
                {
                    lines.push(format!("{u} of {l} tokens"));
                }
            }
        }
        if let Some(r) = body["resets_at"].as_str() {
            lines.push(format!("Resets {r}"));
        }
    }
    if let Some(m) = body["message"].as_str() {
        lines.push(m.to_string());
    }
    for (list, name, label) in [
        ("top_models", "model", "Top models"),
        ("top_spenders", "user", "Top spenders"),
    ] {
        let items: Vec<String> = body[list]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                format!(
                    "{} ${}",
                    m[name].as_str().unwrap_or(""),
                    m["cost_usd"].as_str().unwrap_or("")
                )
            })
            .collect();
        if !items.is_empty() {
            lines.push(format!("{label}: {}", items.join(", ")));
        }
    }
    lines.push(format!("Alert {} at {}", s("id"), s("time")));
    json!({ "text": slack_escape(&lines.join("\n")) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_cannot_ping_or_link() {
        let body = json!({
            "id": "alt_1", "type": "budget.threshold", "severity": "warn", "time": "t",
            "budget": {"id": "b", "period": "daily", "scope": "user", "subject": "<!channel> & <http://x|y>"},
            "percent_used": "80.00", "threshold_pct": 80,
        });
        let text = slack_body(&body)["text"].as_str().unwrap().to_string();
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
        assert!(
            text.contains("&lt;!channel&gt; &amp; &lt;http://x|y&gt;"),
            "{text}"
        );
        assert!(text.contains("past its 80% threshold"), "{text}");
    }
}
