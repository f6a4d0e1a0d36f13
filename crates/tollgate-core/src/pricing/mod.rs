//! Prices and the cost formula.
//!
//! A [`Price`] is an integer number of money units (10⁻¹² USD) per token, so
//! `tokens × price` is exact. Config and the admin API speak USD per million
//! tokens as decimal strings, like the providers' price pages.
//!
//! The cost formula follows the providers' own billing:
//! uncached input × input + cached reads × cached rate + cache writes (5 min,
//! 1 h) × their rates + visible output × output + reasoning × reasoning rate
//! (the output rate unless priced apart). Above a long-context threshold
//! (counted on all input tokens) every token is priced at the tier's rates.
//! A rate a model does not publish falls back to a rate that is never lower
//! than a real one would be: cached reads and cache writes to the input rate,
//! reasoning to the output rate — never silently free.

pub mod catalog;
#[allow(clippy::all)]
mod catalog_data;

pub use catalog::{CATALOG_EFFECTIVE_DATE, Catalog, CatalogEntry, Fallback, PriceSource};

use serde::{Deserialize, Serialize};

use crate::money::{Decimal, Money, ParseMoneyError, Rounding};
use crate::usage::Usage;

/// Money units (10⁻¹² USD) per token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(u64);

impl Price {
    pub const ZERO: Price = Price(0);

    pub const fn from_units_per_token(units: u64) -> Price {
        Price(units)
    }

    pub const fn units_per_token(self) -> u64 {
        self.0
    }

    /// Parses USD per million tokens (`"0.15"`). Exact: at most six decimals.
    pub fn parse_per_mtok(s: &str) -> Result<Price, ParseMoneyError> {
        // USD/Mtok × 10⁶ = units/token, i.e. the decimal at scale 6.
        let d = Decimal::parse(s)?;
        let v = d.to_scaled(6, Rounding::Exact).map_err(|e| match e {
            ParseMoneyError::TooPrecise(_) => ParseMoneyError::TooPrecise(s.to_string()),
            _ => ParseMoneyError::OutOfRange(s.to_string()),
        })?;
        Self::from_scaled(v, s)
    }

    /// Parses USD per token (the LiteLLM map's `1.5e-07`), rounding to the
    /// nearest unit: the tail beyond 10⁻¹² USD is a float-print artefact.
    pub fn parse_per_token_usd(s: &str) -> Result<Price, ParseMoneyError> {
        let d = Decimal::parse(s)?;
        let v = d
            .to_scaled(crate::money::SCALE, Rounding::HalfUp)
            .map_err(|_| ParseMoneyError::OutOfRange(s.to_string()))?;
        Self::from_scaled(v, s)
    }

    fn from_scaled(v: i128, s: &str) -> Result<Price, ParseMoneyError> {
        if v < 0 {
            return Err(ParseMoneyError::Invalid(s.to_string()));
        }
        u64::try_from(v)
            .map(Price)
            .map_err(|_| ParseMoneyError::OutOfRange(s.to_string()))
    }

    /// USD per million tokens as a decimal string (`"0.15"`).
    pub fn to_per_mtok_string(self) -> String {
        let whole = self.0 / 1_000_000;
        let frac = self.0 % 1_000_000;
        if frac == 0 {
            return whole.to_string();
        }
        let mut f = format!("{frac:06}");
        while f.ends_with('0') {
            f.pop();
        }
        format!("{whole}.{f}")
    }

    pub fn cost(self, tokens: u64) -> Money {
        Money::from_units(i128::from(self.0) * i128::from(tokens))
    }
}

impl Serialize for Price {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_per_mtok_string())
    }
}

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Price::parse_per_mtok(&s).map_err(serde::de::Error::custom)
    }
}

/// Rates above a prompt-size threshold (Gemini 2.5 Pro above 200k tokens).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContextTier {
    /// The tier applies when the request's input tokens exceed this.
    pub above_input_tokens: u64,
    #[serde(rename = "input_per_mtok")]
    pub input: Price,
    #[serde(rename = "output_per_mtok")]
    pub output: Price,
    #[serde(
        rename = "cached_input_per_mtok",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cached_input: Option<Price>,
    #[serde(
        rename = "cache_write_5m_per_mtok",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_write_5m: Option<Price>,
    #[serde(
        rename = "cache_write_1h_per_mtok",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_write_1h: Option<Price>,
    #[serde(
        rename = "reasoning_per_mtok",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub reasoning: Option<Price>,
}

/// Everything needed to price a model's usage. Field names on the wire are
/// the config's (`input_per_mtok`, ...), values USD per million tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    #[serde(rename = "input_per_mtok")]
    pub input: Price,
    #[serde(rename = "output_per_mtok", default)]
    pub output: Price,
    #[serde(
        rename = "cached_input_per_mtok",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cached_input: Option<Price>,
    #[serde(
        rename = "cache_write_5m_per_mtok",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_write_5m: Option<Price>,
    #[serde(
        rename = "cache_write_1h_per_mtok",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_write_1h: Option<Price>,
    #[serde(
        rename = "reasoning_per_mtok",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub reasoning: Option<Price>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context: Option<LongContextTier>,
}

/// The rates in force for one request, after choosing the tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rates {
    pub input: Price,
    pub output: Price,
    pub cached_input: Price,
    pub cache_write_5m: Price,
    pub cache_write_1h: Price,
    pub reasoning: Price,
}

impl Rates {
    /// Fills unpublished rates: cached reads and 5-minute writes at the input
    /// rate, 1-hour writes at the 5-minute rate, reasoning at the output rate.
    fn with_fallbacks(
        input: Price,
        output: Price,
        [cached, w5m, w1h, reasoning]: [Option<Price>; 4],
    ) -> Rates {
        Rates {
            input,
            output,
            cached_input: cached.unwrap_or(input),
            cache_write_5m: w5m.unwrap_or(input),
            cache_write_1h: w1h.or(w5m).unwrap_or(input),
            reasoning: reasoning.unwrap_or(output),
        }
    }
}

/// A cost and its parts, so a record can show where the money went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    pub input: Money,
    pub cached_input: Money,
    pub cache_write: Money,
    pub output: Money,
    pub reasoning: Money,
    pub long_context: bool,
}

impl Cost {
    pub fn total(&self) -> Money {
        self.input + self.cached_input + self.cache_write + self.output + self.reasoning
    }
}

impl ModelPrice {
    /// Plain input/output pricing with every other rate falling back.
    pub fn simple(input: Price, output: Price) -> ModelPrice {
        ModelPrice {
            input,
            output,
            cached_input: None,
            cache_write_5m: None,
            cache_write_1h: None,
            reasoning: None,
            long_context: None,
        }
    }

    /// The rates that apply to a request with `input_tokens` of input.
    pub fn rates_for(&self, input_tokens: u64) -> Rates {
        match &self.long_context {
            // A tier without its own cache rates scales none down: the
            // tier's input rate is the safe upper bound.
            Some(t) if input_tokens > t.above_input_tokens => Rates::with_fallbacks(
                t.input,
                t.output,
                [
                    t.cached_input,
                    t.cache_write_5m,
                    t.cache_write_1h,
                    t.reasoning,
                ],
            ),
            _ => Rates::with_fallbacks(
                self.input,
                self.output,
                [
                    self.cached_input,
                    self.cache_write_5m,
                    self.cache_write_1h,
                    self.reasoning,
                ],
            ),
        }
    }

    pub fn is_long_context(&self, input_tokens: u64) -> bool {
        matches!(&self.long_context, Some(t) if input_tokens > t.above_input_tokens)
    }

    /// The exact cost of `usage` at these prices.
    pub fn cost(&self, usage: &Usage) -> Cost {
        let r = self.rates_for(usage.input_tokens);
        Cost {
            input: r.input.cost(usage.uncached_input_tokens()),
            cached_input: r.cached_input.cost(usage.cached_input_tokens),
            cache_write: r.cache_write_5m.cost(usage.cache_write_5m_tokens)
                + r.cache_write_1h.cost(usage.cache_write_1h_tokens),
            output: r.output.cost(usage.visible_output_tokens()),
            reasoning: r.reasoning.cost(usage.reasoning_tokens),
            long_context: self.is_long_context(usage.input_tokens),
        }
    }

    /// The per-token rates a reservation must assume for a request with
    /// `input_tokens` of input: input at the highest input-side rate (a
    /// cache hit only lowers it, a cache write may raise it), output at
    /// the higher of the output and reasoning rates.
    pub fn reservation_rates(&self, input_tokens: u64) -> (Price, Price) {
        let r = self.rates_for(input_tokens);
        (
            r.input.max(r.cache_write_5m).max(r.cache_write_1h),
            r.output.max(r.reasoning),
        )
    }

    /// Worst case for a request: every input token at the full input rate
    /// (a cache hit can only lower it) and every output token at the higher
    /// of the output and reasoning rates.
    pub fn worst_case(&self, input_tokens: u64, max_output_tokens: u64) -> Money {
        let (input_rate, output_rate) = self.reservation_rates(input_tokens);
        input_rate.cost(input_tokens) + output_rate.cost(max_output_tokens)
    }
}

#[cfg(test)]
mod tests;
