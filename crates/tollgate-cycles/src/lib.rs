//! The Cycles budget protocol served on Tollgate's own ledger: agents and
//! their tools reserve before they act and commit what it cost, on the
//! same budgets the proxy charges for model calls.
//!
//! - [`protocol`]: the request and response bodies, exactly as the
//!   protocol's OpenAPI document has them.
//! - [`scopes`]: a subject's canonical scope paths, under the caller's
//!   tenant.
//! - [`units`]: microcents and tokens as Tollgate holds them, exactly.
//! - [`service`]: the operations, on the budget engine, with idempotent
//!   replay and expiry.

pub mod protocol;
pub mod scopes;
pub mod service;
pub mod units;

use std::collections::BTreeMap;

use protocol::ErrorCode;
use serde_json::{Map, Value};
use tollgate_core::Money;

/// `cycles:` in the config.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CyclesConfig {
    /// What a tool call costs, by tool name (the action's `name`, for
    /// `tool.*` kinds): the estimate of a reservation or decision that
    /// asks for 0 `USD_MICROCENTS` (clients that do not know their tools'
    /// prices).
    #[serde(default)]
    pub tool_costs: BTreeMap<String, Money>,
    /// Most reservations one tenant may hold open at once (each is memory
    /// and a row until it settles or expires); beyond, 429 `LIMIT_EXCEEDED`.
    #[serde(default = "default_max_open")]
    pub max_open_reservations: usize,
    /// A reservation (or extension) whose hold the ledger cannot make
    /// durable: refused with 500 `INTERNAL_ERROR` (`closed`), or made with
    /// the hold in memory only (`open`).
    #[serde(default)]
    pub fail: tollgate_budgets::FailPolicy,
}

fn default_max_open() -> usize {
    100_000
}

impl Default for CyclesConfig {
    fn default() -> Self {
        CyclesConfig {
            tool_costs: BTreeMap::new(),
            max_open_reservations: default_max_open(),
            fail: Default::default(),
        }
    }
}

impl CyclesConfig {
    /// Every cost a whole, non-negative number of microcents.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.max_open_reservations == 0 {
            return Err((
                "cycles.max_open_reservations".into(),
                "must be at least 1".into(),
            ));
        }
        for (name, cost) in &self.tool_costs {
            if cost.is_negative() || cost.units() % units::UNITS_PER_MICROCENT != 0 {
                return Err((
                    format!("cycles.tool_costs.{name}"),
                    format!(
                        "{} is not a whole number of microcents (10^-8 USD) at or above zero",
                        cost.to_usd_string()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The configured estimate of `action`, in microcents.
    pub fn tool_cost(&self, action: &protocol::Action) -> Option<i64> {
        if !action.kind.starts_with("tool.") {
            return None;
        }
        self.tool_costs
            .get(&action.name)
            .map(|c| units::microcents_down(*c))
    }
}

/// A refusal in the protocol's terms: its code (which fixes the HTTP
/// status), a message, and details where the protocol asks for them.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct CyclesError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Map<String, Value>>,
}

impl CyclesError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> CyclesError {
        CyclesError {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> CyclesError {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn forbidden(message: impl Into<String>) -> CyclesError {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn with_details(mut self, details: Map<String, Value>) -> CyclesError {
        self.details = Some(details);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_costs_are_whole_microcents_for_tool_actions() {
        let c: CyclesConfig =
            serde_json::from_str(r#"{"tool_costs": {"web.search": "0.003"}}"#).unwrap();
        assert_eq!(c.validate(), Ok(()));
        let tool = |kind: &str, name: &str| protocol::Action {
            kind: kind.into(),
            name: name.into(),
            tags: None,
        };
        assert_eq!(
            c.tool_cost(&tool("tool.search", "web.search")),
            Some(300_000)
        );
        assert_eq!(c.tool_cost(&tool("llm.completion", "web.search")), None);
        assert_eq!(c.tool_cost(&tool("tool.search", "other")), None);
        let fine: CyclesConfig =
            serde_json::from_str(r#"{"tool_costs": {"x": "0.000000001"}}"#).unwrap();
        assert_eq!(fine.validate().unwrap_err().0, "cycles.tool_costs.x");
        let open: CyclesConfig = serde_json::from_str(r#"{"fail": "open"}"#).unwrap();
        assert_eq!(open.fail, tollgate_budgets::FailPolicy::Open);
        assert!(serde_json::from_str::<CyclesConfig>(r#"{"fail": "sometimes"}"#).is_err());
    }
}
