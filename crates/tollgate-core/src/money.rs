//! Exact money: signed fixed-point integers of 10⁻¹² USD ("picodollars").
//!
//! Why 10⁻¹²: providers publish prices per million tokens with up to six
//! decimals (`"0.0375"` USD/Mtok). One token at that price is
//! 0.0375 × 10⁻⁶ USD = 37 500 × 10⁻¹² USD, so every published price is a
//! whole number of units per token and `tokens × price` is exact. `i128`
//! leaves room for any sum a report could add up.
//!
//! Money enters and leaves as decimal strings (`"0.000150"`), never as floats.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Sub};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Decimal places of one money unit.
pub const SCALE: u32 = 12;
/// Units in one US dollar.
pub const UNITS_PER_USD: i128 = 1_000_000_000_000;

/// An exact amount of US dollars, in units of 10⁻¹² USD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(i128);

/// Why a decimal string was not a valid amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseMoneyError {
    #[error("empty amount")]
    Empty,
    #[error("invalid decimal amount {0:?}")]
    Invalid(String),
    #[error("amount {0:?} has more than 12 decimal places")]
    TooPrecise(String),
    #[error("amount {0:?} is out of range")]
    OutOfRange(String),
}

impl Money {
    pub const ZERO: Money = Money(0);

    /// From raw units of 10⁻¹² USD.
    pub const fn from_units(units: i128) -> Self {
        Money(units)
    }

    /// Raw units of 10⁻¹² USD.
    pub const fn units(self) -> i128 {
        self.0
    }

    pub const fn from_usd(usd: i64) -> Self {
        Money(usd as i128 * UNITS_PER_USD)
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }

    pub fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Parses a decimal USD amount such as `"12.5"`, `"0.000150"` or `"-1"`.
    /// Exactness is the point: more than 12 decimal places is an error, not a rounding.
    pub fn parse_usd(s: &str) -> Result<Money, ParseMoneyError> {
        let d = Decimal::parse(s).map_err(|e| e.with_input(s))?;
        d.to_scaled(SCALE, Rounding::Exact)
            .map(Money)
            .map_err(|e| e.with_input(s))
    }

    /// The amount as a decimal USD string with at least six decimals and no
    /// trailing zeros beyond them: `"0.000150"`, `"1.250000"`, `"0.00000015"`.
    pub fn to_usd_string(self) -> String {
        let neg = self.0 < 0;
        let abs = self.0.unsigned_abs();
        let whole = abs / UNITS_PER_USD as u128;
        let frac = abs % UNITS_PER_USD as u128;
        let mut frac_s = format!("{frac:012}");
        while frac_s.len() > 6 && frac_s.ends_with('0') {
            frac_s.pop();
        }
        format!("{}{whole}.{frac_s}", if neg { "-" } else { "" })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_usd_string())
    }
}

impl FromStr for Money {
    type Err = ParseMoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Money::parse_usd(s)
    }
}

impl Add for Money {
    type Output = Money;
    /// Panics on overflow: 1.7 × 10²⁶ USD is not a sum a gateway meets, and
    /// silently wrapping money would be worse than stopping.
    fn add(self, rhs: Money) -> Money {
        Money(self.0.checked_add(rhs.0).expect("money overflow"))
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, rhs: Money) {
        *self = *self + rhs;
    }
}

impl Sub for Money {
    type Output = Money;
    fn sub(self, rhs: Money) -> Money {
        Money(self.0.checked_sub(rhs.0).expect("money overflow"))
    }
}

impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, |a, b| a + b)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_usd_string())
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Money::parse_usd(&s).map_err(serde::de::Error::custom)
    }
}

/// How to treat digits finer than the target scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// Finer digits are an error.
    Exact,
    /// Round half away from zero (used for imported per-token float prints
    /// like `1.0000000000000001e-07`, whose tail is a float artefact).
    HalfUp,
}

/// A parsed decimal literal: `digits × 10^-scale` (scale may be negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    digits: i128,
    scale: i32,
}

impl Decimal {
    /// Parses `[-+]digits[.digits][e[-+]digits]`.
    pub fn parse(s: &str) -> Result<Decimal, ParseMoneyError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(ParseMoneyError::Empty);
        }
        let bad = || ParseMoneyError::Invalid(s.to_string());
        let (neg, rest) = match t.as_bytes()[0] {
            b'-' => (true, &t[1..]),
            b'+' => (false, &t[1..]),
            _ => (false, t),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<i32>().map_err(|_| bad())?),
            None => (rest, 0),
        };
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((a, b)) => (a, b),
            None => (mantissa, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let mut digits: i128 = 0;
        for c in int_part.bytes().chain(frac_part.bytes()) {
            if !c.is_ascii_digit() {
                return Err(bad());
            }
            digits = digits
                .checked_mul(10)
                .and_then(|d| d.checked_add(i128::from(c - b'0')))
                .ok_or_else(|| ParseMoneyError::OutOfRange(s.to_string()))?;
        }
        let frac_len = i32::try_from(frac_part.len()).map_err(|_| bad())?;
        Ok(Decimal {
            digits: if neg { -digits } else { digits },
            scale: frac_len - exp,
        })
    }

    /// The value as an integer count of `10^-target` units.
    pub fn to_scaled(self, target: u32, rounding: Rounding) -> Result<i128, ParseMoneyError> {
        let target = target as i32;
        let oor = || ParseMoneyError::OutOfRange(String::new());
        if self.scale <= target {
            let shift = u32::try_from(target - self.scale).map_err(|_| oor())?;
            let factor = 10i128.checked_pow(shift).ok_or_else(oor)?;
            return self.digits.checked_mul(factor).ok_or_else(oor);
        }
        let shift = u32::try_from(self.scale - target).map_err(|_| oor())?;
        let Some(factor) = 10i128.checked_pow(shift) else {
            // Finer than 10^-38: zero unless exactness was asked for.
            return match (rounding, self.digits) {
                (_, 0) => Ok(0),
                (Rounding::Exact, _) => Err(ParseMoneyError::TooPrecise(String::new())),
                (Rounding::HalfUp, _) => Ok(0),
            };
        };
        let q = self.digits / factor;
        let r = self.digits % factor;
        match rounding {
            Rounding::Exact if r != 0 => Err(ParseMoneyError::TooPrecise(String::new())),
            Rounding::Exact => Ok(q),
            Rounding::HalfUp => {
                let half = factor / 2;
                Ok(if r.abs() >= half && r != 0 {
                    q + r.signum()
                } else {
                    q
                })
            }
        }
    }
}

impl ParseMoneyError {
    fn with_input(self, s: &str) -> Self {
        match self {
            ParseMoneyError::TooPrecise(_) => ParseMoneyError::TooPrecise(s.to_string()),
            ParseMoneyError::OutOfRange(_) => ParseMoneyError::OutOfRange(s.to_string()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd(s: &str) -> Money {
        Money::parse_usd(s).unwrap()
    }

    #[test]
    fn parses_and_prints_decimal_strings() {
        assert_eq!(usd("0.000150").units(), 150_000_000);
        assert_eq!(usd("0.000150").to_string(), "0.000150");
        assert_eq!(usd("10").to_string(), "10.000000");
        assert_eq!(usd("0.00000015").to_string(), "0.00000015");
        assert_eq!(usd("-1.5").to_string(), "-1.500000");
        assert_eq!(usd("1e-12").units(), 1);
        assert_eq!(usd(".5").units(), UNITS_PER_USD / 2);
        assert_eq!(Money::from_units(1).to_string(), "0.000000000001");
    }

    #[test]
    fn rejects_bad_or_too_precise_input() {
        assert_eq!(Money::parse_usd(""), Err(ParseMoneyError::Empty));
        assert!(matches!(
            Money::parse_usd("1.2.3"),
            Err(ParseMoneyError::Invalid(_))
        ));
        assert!(matches!(
            Money::parse_usd("abc"),
            Err(ParseMoneyError::Invalid(_))
        ));
        assert!(matches!(
            Money::parse_usd("0.0000000000001"),
            Err(ParseMoneyError::TooPrecise(_))
        ));
        assert!(matches!(
            Money::parse_usd("1e40"),
            Err(ParseMoneyError::OutOfRange(_))
        ));
    }

    #[test]
    fn half_up_rounding_absorbs_float_artefacts() {
        let d = Decimal::parse("1.0000000000000001e-07").unwrap();
        assert_eq!(d.to_scaled(12, Rounding::HalfUp).unwrap(), 100_000);
        let d = Decimal::parse("2.5e-13").unwrap();
        assert_eq!(d.to_scaled(12, Rounding::HalfUp).unwrap(), 0);
        let d = Decimal::parse("5e-13").unwrap();
        assert_eq!(d.to_scaled(12, Rounding::HalfUp).unwrap(), 1);
    }

    /// The brief's promise: summing a million tiny costs drifts by exactly zero.
    #[test]
    fn a_million_tiny_costs_sum_exactly() {
        let tiny = usd("0.00000015"); // one gpt-4o-mini input token
        let total: Money = std::iter::repeat_n(tiny, 1_000_000).sum();
        assert_eq!(total, usd("0.15"));
        assert_eq!(total.to_string(), "0.150000");
    }

    proptest! {
        #[test]
        fn string_round_trip(units in any::<i64>()) {
            let m = Money::from_units(units.into());
            prop_assert_eq!(Money::parse_usd(&m.to_string()).unwrap(), m);
        }

        #[test]
        fn summing_many_tiny_amounts_never_drifts(
            parts in proptest::collection::vec(0i64..1_000_000, 1..2000),
        ) {
            // Whatever the order or grouping, the total is the integer sum.
            let moneys: Vec<Money> = parts.iter().map(|&p| Money::from_units(p.into())).collect();
            let forward: Money = moneys.iter().copied().sum();
            let backward: Money = moneys.iter().rev().copied().sum();
            let expected: i128 = parts.iter().map(|&p| i128::from(p)).sum();
            prop_assert_eq!(forward, backward);
            prop_assert_eq!(forward.units(), expected);
            let reparsed: Money = moneys.iter().map(|m| Money::parse_usd(&m.to_string()).unwrap()).sum();
            prop_assert_eq!(reparsed, forward);
        }
    }
}
