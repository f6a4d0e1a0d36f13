//! `POST /admin/budgets/{id}/fund`: the Cycles governance funding
//! operations on one budget's allocation (its limit), for set-ups scripted
//! against the reference quickstart. Debt is spend past the limit, so
//! adding to the limit repays debt first, as the protocol says.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tollgate_core::Money;
use tollgate_core::ledger::Amount as Held;
use tollgate_cycles::protocol::{Amount, SignedAmount, Unit};
use tollgate_cycles::units;

use super::{AdminError, AdminScope};
use crate::AppState;

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    /// Add to the allocation (repaying debt first).
    Credit,
    /// Take from the allocation; refused if the room left would go below 0.
    Debit,
    /// Set the allocation to exactly `amount`.
    Reset,
    /// Reduce debt by up to `amount` (the allocation grows by what is repaid).
    RepayDebt,
    /// A new period: the allocation set to `amount`, spend to `spent` (0).
    ResetSpent,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FundRequest {
    operation: Operation,
    /// `{"unit": "USD_MICROCENTS" | "TOKENS", "amount": N}`.
    #[schema(value_type = Object)]
    amount: Amount,
    /// For `RESET_SPENT`: spend to start the period at.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    spent: Option<Amount>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FundResponse {
    operation: Operation,
    #[schema(value_type = Object)]
    previous_allocated: Amount,
    #[schema(value_type = Object)]
    new_allocated: Amount,
    #[schema(value_type = Object)]
    previous_remaining: SignedAmount,
    #[schema(value_type = Object)]
    new_remaining: SignedAmount,
    #[schema(value_type = Object)]
    previous_debt: Amount,
    #[schema(value_type = Object)]
    new_debt: Amount,
    #[schema(value_type = Object)]
    previous_spent: Amount,
    #[schema(value_type = Object)]
    new_spent: Amount,
}

/// A budget's figures in one unit's smallest amount.
#[derive(Clone, Copy)]
struct Figures {
    allocated: i128,
    spent: i128,
    reserved: i128,
}

impl Figures {
    fn debt(self) -> i128 {
        (self.spent - self.allocated).max(0)
    }

    fn remaining(self) -> i128 {
        self.allocated - self.spent - self.reserved
    }
}

/// `n` (money units or tokens) as a Cycles amount of `unit`.
fn shown(unit: Unit, n: i128) -> i64 {
    match unit {
        Unit::Tokens => i64::try_from(n).unwrap_or(i64::MAX),
        _ => {
            let m = Money::from_units(n);
            if n >= 0 {
                units::microcents_down(m)
            } else {
                -units::microcents_up(Money::from_units(-n))
            }
        }
    }
}

#[utoipa::path(post, path = "/budgets/{id}/fund", tag = "budgets", params(("id" = String, Path, description = "Budget id")), request_body = FundRequest, responses((status = 200, description = "OK", body = FundResponse), (status = 400, description = "Invalid request", body = crate::api::ErrorBody), (status = 404, description = "No such object", body = crate::api::ErrorBody), (status = 409, description = "Conflict (a budget of many subjects, declared in the config, or the room would go below 0)", body = crate::api::ErrorBody)))]
pub(super) async fn fund_budget(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Path(id): Path<String>,
    Json(req): Json<FundRequest>,
) -> Result<Response, AdminError> {
    let stored = super::budgets::editable(&s, &scope, &id).await?;
    let Some(entry) = s.budgets.entries().get(&id).cloned() else {
        return Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("no budget with id {id:?}"),
        ));
    };
    let Some(subject) = entry.budget.subject.clone() else {
        return Err(AdminError(
            StatusCode::CONFLICT,
            "only a budget of one subject has an allocation to fund".into(),
        ));
    };
    let unit = req.amount.unit;
    let to_held = |a: Amount| -> Result<i128, AdminError> {
        if a.unit != unit {
            return Err(AdminError::bad_request(
                "amount and spent are in different units",
            ));
        }
        let h = units::held(a).map_err(|e| AdminError::bad_request(e.message))?;
        Ok(match unit {
            Unit::Tokens => i128::from(h.tokens),
            _ => h.money.units(),
        })
    };
    let amount = to_held(req.amount)?;
    let a = s
        .budgets
        .applied(entry.budget.clone(), subject, s.budgets.now())
        .await;
    let st = s.budgets.state(&a).await;
    let before = match unit {
        Unit::Tokens => st.limit.tokens.map(|l| Figures {
            allocated: i128::from(l),
            spent: i128::from(st.spent.tokens),
            reserved: i128::from(st.reserved.tokens),
        }),
        _ => st.limit.money.map(|l| Figures {
            allocated: l.units(),
            spent: st.spent.money.units(),
            reserved: st.reserved.money.units(),
        }),
    }
    .ok_or_else(|| {
        AdminError::bad_request(format!("budget {id:?} has no limit in {}", unit.as_str()))
    })?;
    let mut after = before;
    match req.operation {
        Operation::Credit => after.allocated += amount,
        Operation::Debit => {
            if before.remaining() - amount < 0 {
                return Err(AdminError(
                    StatusCode::CONFLICT,
                    "a debit may not take the room left below 0".into(),
                ));
            }
            after.allocated -= amount;
        }
        Operation::Reset => after.allocated = amount,
        Operation::RepayDebt => after.allocated += amount.min(before.debt()),
        Operation::ResetSpent => {
            after.allocated = amount;
            after.spent = req.spent.map(to_held).transpose()?.unwrap_or(0);
        }
    }
    let mut input = stored.input.clone();
    match unit {
        Unit::Tokens => input.limit_tokens = Some(u64::try_from(after.allocated).unwrap_or(0)),
        _ => input.limit_usd = Some(Money::from_units(after.allocated)),
    }
    if after.spent != before.spent {
        // A new period: the counter starts at the spend given (records
        // stay as they are; reports are unaffected).
        let spent = match unit {
            Unit::Tokens => Held::new(st.spent.money, u64::try_from(after.spent).unwrap_or(0)),
            _ => Held::new(Money::from_units(after.spent), st.spent.tokens),
        };
        s.budgets.set_spent(&a, spent).await;
    }
    super::budgets::store_budget(&s, id.clone(), input, stored.created_at).await?;
    tracing::info!(budget = %id, operation = ?req.operation, reason = req.reason.as_deref().unwrap_or(""), "budget funded");
    let amt = |n: i128| Amount::new(unit, shown(unit, n).max(0));
    let signed = |n: i128| SignedAmount {
        unit,
        amount: shown(unit, n),
    };
    Ok(Json(FundResponse {
        operation: req.operation,
        previous_allocated: amt(before.allocated),
        new_allocated: amt(after.allocated),
        previous_remaining: signed(before.remaining()),
        new_remaining: signed(after.remaining()),
        previous_debt: amt(before.debt()),
        new_debt: amt(after.debt()),
        previous_spent: amt(before.spent),
        new_spent: amt(after.spent),
    })
    .into_response())
}
