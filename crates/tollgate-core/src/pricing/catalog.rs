//! The price catalog: built-in list prices plus overrides, and the lookup
//! that decides what a model costs (or that it has no price).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{LongContextTier, ModelPrice, Price};

/// The date the built-in list prices were taken from the providers' pages.
pub const CATALOG_EFFECTIVE_DATE: &str = "2026-08-05";

/// One row of the generated built-in table (prices in USD per Mtok).
pub(super) struct CatalogRow {
    pub model: &'static str,
    pub provider: &'static str,
    pub input: Option<&'static str>,
    pub output: Option<&'static str>,
    pub cached_input: Option<&'static str>,
    pub cache_write_5m: Option<&'static str>,
    pub cache_write_1h: Option<&'static str>,
    pub reasoning: Option<&'static str>,
    pub long_context: Option<LongRow>,
    /// Most input tokens the model accepts.
    pub context_window: Option<u64>,
}

pub(super) struct LongRow {
    pub above_input_tokens: u64,
    pub input: Option<&'static str>,
    pub output: Option<&'static str>,
    pub cached_input: Option<&'static str>,
}

/// Where a model's price came from; shown by `pricing list` and the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceSource {
    Builtin,
    Config,
    Admin,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CatalogEntry {
    pub model: String,
    pub provider: Option<String>,
    pub source: PriceSource,
    #[serde(flatten)]
    pub price: ModelPrice,
    /// Most input tokens the model accepts, where known: what a request
    /// with input only the provider can size reserves by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
}

/// What to do with a model that has no price.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Fallback {
    /// Refuse the request (the default): never silently free.
    #[default]
    Strict,
    /// Charge this price.
    Price(ModelPrice),
}

#[derive(Clone, Debug)]
pub struct Catalog {
    entries: BTreeMap<String, CatalogEntry>,
    fallback: Fallback,
}

/// A model has no price and the fallback is strict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model {0:?} has no price (add it under pricing.models, or set pricing.fallback)")]
pub struct Unpriced(pub String);

fn p(s: Option<&str>) -> Option<Price> {
    // The generated table is checked by a unit test; a bad row is a build bug.
    s.map(|s| Price::parse_per_mtok(s).expect("built-in price parses"))
}

impl Catalog {
    /// The built-in list prices, strict fallback.
    pub fn builtin() -> Catalog {
        let mut entries = BTreeMap::new();
        for row in super::catalog_data::ROWS {
            let price = ModelPrice {
                input: p(row.input).unwrap_or(Price::ZERO),
                output: p(row.output).unwrap_or(Price::ZERO),
                cached_input: p(row.cached_input),
                cache_write_5m: p(row.cache_write_5m),
                cache_write_1h: p(row.cache_write_1h),
                reasoning: p(row.reasoning),
                long_context: row.long_context.as_ref().map(|l| LongContextTier {
                    above_input_tokens: l.above_input_tokens,
                    input: p(l.input).unwrap_or(Price::ZERO),
                    output: p(l.output).unwrap_or(Price::ZERO),
                    cached_input: p(l.cached_input),
                    cache_write_5m: None,
                    cache_write_1h: None,
                    reasoning: None,
                }),
            };
            entries.insert(
                row.model.to_string(),
                CatalogEntry {
                    model: row.model.to_string(),
                    provider: Some(row.provider.to_string()),
                    source: PriceSource::Builtin,
                    price,
                    context_window: row.context_window,
                },
            );
        }
        Catalog {
            entries,
            fallback: Fallback::Strict,
        }
    }

    pub fn empty() -> Catalog {
        Catalog {
            entries: BTreeMap::new(),
            fallback: Fallback::Strict,
        }
    }

    pub fn set_fallback(&mut self, fallback: Fallback) {
        self.fallback = fallback;
    }

    pub fn fallback(&self) -> &Fallback {
        &self.fallback
    }

    /// Adds or replaces a model's price; later sources win.
    pub fn set(&mut self, model: &str, price: ModelPrice, source: PriceSource) {
        self.set_for(model, price, source, None);
    }

    /// [`Self::set`], naming the provider (`None` keeps the one known).
    pub fn set_for(
        &mut self,
        model: &str,
        price: ModelPrice,
        source: PriceSource,
        provider: Option<String>,
    ) {
        let known = self.entries.get(model);
        let provider = provider.or_else(|| known.and_then(|e| e.provider.clone()));
        let context_window = known.and_then(|e| e.context_window);
        self.entries.insert(
            model.to_string(),
            CatalogEntry {
                model: model.to_string(),
                provider,
                source,
                price,
                context_window,
            },
        );
    }

    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.values()
    }

    pub fn get(&self, model: &str) -> Option<&CatalogEntry> {
        self.entries.get(model)
    }

    /// The model's context window, where the catalog knows it.
    pub fn context_window(&self, model: &str) -> Option<u64> {
        self.entries.get(model).and_then(|e| e.context_window)
    }

    /// The price of `model` by its exact name (the name sent upstream),
    /// else the fallback. No prefix is stripped and no snapshot guessed
    /// from its base name: the model priced is the model served.
    pub fn price_of(&self, model: &str) -> Result<&ModelPrice, Unpriced> {
        if let Some(e) = self.entries.get(model) {
            return Ok(&e.price);
        }
        match &self.fallback {
            Fallback::Price(p) => Ok(p),
            Fallback::Strict => Err(Unpriced(model.to_string())),
        }
    }
}
