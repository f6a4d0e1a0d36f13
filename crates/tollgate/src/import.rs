//! `tollgate pricing import FILE`: the LiteLLM `model_prices_and_context_window.json`
//! format. Numbers are read as their literal text (never through a float)
//! and turned into exact per-token prices.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde_json::value::RawValue;
use tollgate_core::pricing::{LongContextTier, ModelPrice, Price};

/// One imported model and its price.
pub struct Imported {
    pub model: String,
    /// LiteLLM's `litellm_provider`.
    pub provider: Option<String>,
    pub price: ModelPrice,
}

/// What an import found.
pub struct ImportReport {
    pub models: Vec<Imported>,
    /// Entries without a per-token input price (image, audio-only, search...).
    pub skipped: Vec<String>,
}

fn price(
    fields: &BTreeMap<String, Box<RawValue>>,
    key: &str,
    model: &str,
) -> Result<Option<Price>> {
    let Some(raw) = fields.get(key) else {
        return Ok(None);
    };
    let text = raw.get().trim().trim_matches('"');
    if text == "null" {
        return Ok(None);
    }
    Price::parse_per_token_usd(text)
        .map(Some)
        .with_context(|| format!("{model}.{key}: invalid price {text:?}"))
}

/// Parses the file's text. `on_progress` is called once per entry.
pub fn parse(
    text: &str,
    provider_filter: Option<&str>,
    mut on_progress: impl FnMut(u64, u64),
) -> Result<ImportReport> {
    let entries: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(text).context("expected a JSON object of model → prices")?;
    let total = entries.len() as u64;
    let mut models = Vec::new();
    let mut skipped = Vec::new();
    for (i, (name, raw)) in entries.into_iter().enumerate() {
        on_progress(i as u64 + 1, total);
        if name == "sample_spec" {
            continue;
        }
        let Ok(fields) = serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(raw.get()) else {
            skipped.push(name);
            continue;
        };
        let provider: Option<String> = fields
            .get("litellm_provider")
            .and_then(|r| serde_json::from_str(r.get()).ok());
        if let Some(p) = provider_filter
            && provider.as_deref() != Some(p)
        {
            continue;
        }
        let f = &fields;
        let Some(input) = price(f, "input_cost_per_token", &name)? else {
            skipped.push(name);
            continue;
        };
        let long_context = f
            .keys()
            .find_map(|k| {
                let n = k
                    .strip_prefix("input_cost_per_token_above_")?
                    .strip_suffix("k_tokens")?;
                n.parse::<u64>().ok().map(|n| (k.clone(), n))
            })
            .map(|(key, thousands)| -> Result<LongContextTier> {
                let sfx = format!("above_{thousands}k_tokens");
                Ok(LongContextTier {
                    above_input_tokens: thousands * 1000,
                    input: price(f, &key, &name)?.unwrap_or(input),
                    output: price(f, &format!("output_cost_per_token_{sfx}"), &name)?
                        .unwrap_or(Price::ZERO),
                    cached_input: price(f, &format!("cache_read_input_token_cost_{sfx}"), &name)?,
                    cache_write_5m: price(
                        f,
                        &format!("cache_creation_input_token_cost_{sfx}"),
                        &name,
                    )?,
                    cache_write_1h: None,
                    reasoning: None,
                })
            })
            .transpose()?;
        let output = price(f, "output_cost_per_token", &name)?.unwrap_or(Price::ZERO);
        let long_context = long_context.map(|mut t| {
            if t.output == Price::ZERO {
                t.output = output;
            }
            t
        });
        models.push(Imported {
            price: ModelPrice {
                input,
                output,
                cached_input: price(f, "cache_read_input_token_cost", &name)?,
                cache_write_5m: price(f, "cache_creation_input_token_cost", &name)?,
                cache_write_1h: price(f, "cache_creation_input_token_cost_above_1hr", &name)?,
                reasoning: price(f, "output_cost_per_reasoning_token", &name)?,
                long_context,
            },
            model: name,
            provider,
        });
    }
    Ok(ImportReport { models, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_litellm_entries_exactly() {
        let text = r#"{
            "sample_spec": {"input_cost_per_token": 0},
            "gemini/gemini-2.5-pro": {
                "litellm_provider": "gemini", "mode": "chat",
                "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05,
                "cache_read_input_token_cost": 1.25e-07,
                "input_cost_per_token_above_200k_tokens": 2.5e-06,
                "output_cost_per_token_above_200k_tokens": 1.5e-05,
                "search_context_cost_per_query": {"search_context_size_low": 0.035}
            },
            "claude-x": {
                "litellm_provider": "anthropic", "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
                "cache_creation_input_token_cost": 3.75e-06, "cache_creation_input_token_cost_above_1hr": 6e-06,
                "cache_read_input_token_cost": 3e-07
            },
            "dall-e": {"litellm_provider": "openai", "input_cost_per_pixel": 1e-08}
        }"#;
        let mut calls = 0;
        let r = parse(text, None, |_, _| calls += 1).unwrap();
        assert_eq!(calls, 4);
        assert_eq!(r.models.len(), 2);
        assert_eq!(r.skipped, ["dall-e"]);
        let claude = &r.models[0];
        assert_eq!(
            claude.price.cache_write_1h.unwrap().to_per_mtok_string(),
            "6"
        );
        let g = &r.models[1];
        assert_eq!(g.price.input.to_per_mtok_string(), "1.25");
        let t = g.price.long_context.as_ref().unwrap();
        assert_eq!(
            (t.above_input_tokens, t.output.to_per_mtok_string()),
            (200_000, "15".into())
        );
        let only = parse(text, Some("anthropic"), |_, _| {}).unwrap();
        assert_eq!(only.models.len(), 1);
    }

    #[test]
    fn the_reference_price_map_imports() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/ref/litellm-model-prices-1.109.1.json"
        );
        let Ok(text) = std::fs::read_to_string(path) else {
            panic!("reference price map missing at {path}");
        };
        let r = parse(&text, None, |_, _| {}).unwrap();
        assert!(r.models.len() > 1000, "imported {}", r.models.len());
        let mini = r.models.iter().find(|m| m.model == "gpt-4o-mini").unwrap();
        assert_eq!(mini.price.input.to_per_mtok_string(), "0.15");
        assert_eq!(
            mini.price.cached_input.unwrap().to_per_mtok_string(),
            "0.075"
        );
    }
}
