//! Cycles amounts and Tollgate's: `USD_MICROCENTS` (10⁻⁸ USD) are exact
//! in Tollgate's money (10⁻¹² USD); `TOKENS` are tokens. Money that is
//! not a whole number of microcents (a proxied model call's cost) is
//! shown rounded against the caller: spend up, room down.

use tollgate_core::Money;
use tollgate_core::ledger::Amount as Held;

use crate::CyclesError;
use crate::protocol::{Amount, ErrorCode, Unit};

/// Money units in one microcent.
pub const UNITS_PER_MICROCENT: i128 = 10_000;

/// A Cycles amount as Tollgate holds it (`CREDITS` and `RISK_POINTS`
/// have no budgets here).
pub fn held(a: Amount) -> Result<Held, CyclesError> {
    if a.amount < 0 {
        return Err(CyclesError::invalid("amount: must be 0 or more"));
    }
    match a.unit {
        Unit::UsdMicrocents => Ok(Held::new(
            Money::from_units(i128::from(a.amount) * UNITS_PER_MICROCENT),
            0,
        )),
        Unit::Tokens => Ok(Held::new(Money::ZERO, a.amount as u64)),
        Unit::Credits | Unit::RiskPoints => Err(CyclesError::new(
            ErrorCode::UnitMismatch,
            format!("no budget is kept in {}", a.unit.as_str()),
        )),
    }
}

/// Money in microcents, rounded up (spend, holds, debt).
pub fn microcents_up(m: Money) -> i64 {
    let u = m.units();
    let q = u.div_euclid(UNITS_PER_MICROCENT) + i128::from(u.rem_euclid(UNITS_PER_MICROCENT) != 0);
    clamp(q)
}

/// Money in microcents, rounded down (limits, room).
pub fn microcents_down(m: Money) -> i64 {
    clamp(m.units().div_euclid(UNITS_PER_MICROCENT))
}

fn clamp(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// What `h` is in `unit`, rounded up.
pub fn amount_of(unit: Unit, h: Held) -> Amount {
    match unit {
        Unit::Tokens => Amount::new(unit, i64::try_from(h.tokens).unwrap_or(i64::MAX)),
        _ => Amount::new(unit, microcents_up(h.money)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Microcents go into Tollgate's money and back exactly.
        #[test]
        fn microcents_round_trip_exactly(n in 0i64..i64::MAX) {
            let h = held(Amount::new(Unit::UsdMicrocents, n)).unwrap();
            prop_assert_eq!(microcents_up(h.money), n);
            prop_assert_eq!(microcents_down(h.money), n);
        }

        /// Other money rounds against the caller: up for spend, down for room,
        /// never more than one microcent apart.
        #[test]
        fn other_money_rounds_against_the_caller(u in -1_000_000_000_000i128..1_000_000_000_000i128) {
            let m = Money::from_units(u);
            let (up, down) = (microcents_up(m), microcents_down(m));
            prop_assert!(i128::from(up) * UNITS_PER_MICROCENT >= u);
            prop_assert!(i128::from(down) * UNITS_PER_MICROCENT <= u);
            prop_assert!(up - down <= 1);
        }
    }

    #[test]
    fn units_without_budgets_are_a_unit_mismatch() {
        let e = held(Amount::new(Unit::Credits, 1)).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnitMismatch);
        assert_eq!(
            held(Amount::new(Unit::Tokens, -1)).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }
}
