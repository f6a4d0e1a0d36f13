use super::*;
use crate::money::Money;

fn usd(s: &str) -> Money {
    Money::parse_usd(s).unwrap()
}

fn price(model: &str) -> ModelPrice {
    Catalog::builtin().price_of(model).unwrap().clone()
}

#[test]
fn every_builtin_row_parses_and_has_input_and_output() {
    let c = Catalog::builtin();
    assert!(c.entries().count() >= 30);
    for e in c.entries() {
        assert!(
            e.price.input > Price::ZERO,
            "{} has no input price",
            e.model
        );
    }
}

#[test]
fn per_mtok_parsing_is_exact() {
    assert_eq!(
        Price::parse_per_mtok("0.15").unwrap().units_per_token(),
        150_000
    );
    assert_eq!(
        Price::parse_per_mtok("0.0375").unwrap().units_per_token(),
        37_500
    );
    assert_eq!(
        Price::parse_per_mtok("15").unwrap().to_per_mtok_string(),
        "15"
    );
    assert_eq!(
        Price::parse_per_mtok("0.075").unwrap().to_per_mtok_string(),
        "0.075"
    );
    assert!(Price::parse_per_mtok("0.0000001").is_err());
    assert!(Price::parse_per_mtok("-1").is_err());
    assert_eq!(
        Price::parse_per_token_usd("1.5e-07").unwrap(),
        Price::parse_per_mtok("0.15").unwrap()
    );
}

/// Regression: cached input tokens charged at the full input rate, and
/// reasoning tokens not charged (LiteLLM #11364, #10567).
#[test]
fn openai_cached_input_at_cached_rate_and_reasoning_charged() {
    // o4-mini: $1.10 in, $0.275 cached, $4.40 out (reasoning billed as output).
    let u = Usage {
        input_tokens: 10_000,
        cached_input_tokens: 4_000,
        output_tokens: 2_000,
        reasoning_tokens: 1_500,
        ..Usage::default()
    };
    let c = price("o4-mini").cost(&u);
    assert_eq!(c.input, usd("0.0066")); // 6000 × 1.10/M
    assert_eq!(c.cached_input, usd("0.0011")); // 4000 × 0.275/M
    assert_eq!(c.output, usd("0.0022")); // 500 × 4.40/M
    assert_eq!(c.reasoning, usd("0.0066")); // 1500 × 4.40/M
    assert_eq!(c.total(), usd("0.0165"));
}

/// Regression: Anthropic cache-creation tokens charged twice or at the wrong
/// rate, 5-minute and 1-hour writes confused (LiteLLM #9812, #6575).
#[test]
fn anthropic_cache_writes_each_at_their_own_rate_once() {
    // claude-sonnet-4-5: $3 in, $0.30 read, $3.75 write 5m, $6 write 1h, $15 out.
    let u = Usage {
        input_tokens: 100 + 2_000 + 1_000 + 5_000,
        cache_write_5m_tokens: 2_000,
        cache_write_1h_tokens: 1_000,
        cached_input_tokens: 5_000,
        output_tokens: 300,
        reasoning_tokens: 0,
    };
    let c = price("claude-sonnet-4-5").cost(&u);
    assert_eq!(c.input, usd("0.0003"));
    assert_eq!(c.cache_write, usd("0.0075") + usd("0.006"));
    assert_eq!(c.cached_input, usd("0.0015"));
    assert_eq!(c.output, usd("0.0045"));
    assert_eq!(c.total(), usd("0.0198"));
}

/// Regression: long-context tiers ignored (a 300k-token Gemini prompt priced
/// at the short-prompt rate).
#[test]
fn long_context_tier_applies_above_threshold() {
    let p = price("gemini-2.5-pro");
    let short = Usage {
        input_tokens: 200_000,
        output_tokens: 1_000,
        ..Usage::default()
    };
    let long = Usage {
        input_tokens: 300_000,
        output_tokens: 1_000,
        ..Usage::default()
    };
    assert_eq!(p.cost(&short).total(), usd("0.25") + usd("0.01"));
    let c = p.cost(&long);
    assert!(c.long_context);
    assert_eq!(c.total(), usd("0.75") + usd("0.015"));
    assert_eq!(p.worst_case(300_000, 1_000), usd("0.765"));
}

#[test]
fn missing_rates_are_never_free() {
    let p = ModelPrice::simple(
        Price::parse_per_mtok("1").unwrap(),
        Price::parse_per_mtok("4").unwrap(),
    );
    let u = Usage {
        input_tokens: 1_000_000,
        cached_input_tokens: 500_000,
        output_tokens: 1_000_000,
        reasoning_tokens: 1_000_000,
        ..Usage::default()
    };
    assert_eq!(p.cost(&u).total(), usd("5"));
}

#[test]
fn unpriced_models_are_refused_unless_a_fallback_is_set() {
    let mut c = Catalog::builtin();
    assert!(c.price_of("my-finetune").is_err());
    // Priced exactly as sent: no prefix is stripped (the model priced is
    // the model served; `x/gpt-4o-mini` must not be charged as gpt-4o-mini).
    assert!(c.price_of("openai/gpt-4o").is_err());
    assert!(
        c.price_of("gemini-2.5-pro:generateContent#/gemini-2.5-flash-lite")
            .is_err()
    );
    let fb = ModelPrice::simple(
        Price::parse_per_mtok("1").unwrap(),
        Price::parse_per_mtok("4").unwrap(),
    );
    c.set_fallback(Fallback::Price(fb.clone()));
    assert_eq!(c.price_of("my-finetune").unwrap(), &fb);
}

#[test]
fn overrides_replace_builtin_prices() {
    let mut c = Catalog::builtin();
    let p = ModelPrice::simple(Price::parse_per_mtok("9").unwrap(), Price::ZERO);
    c.set("gpt-4o", p.clone(), PriceSource::Config);
    assert_eq!(c.price_of("gpt-4o").unwrap(), &p);
    assert_eq!(c.get("gpt-4o").unwrap().source, PriceSource::Config);
    assert_eq!(c.get("gpt-4o").unwrap().provider.as_deref(), Some("openai"));
}

/// Regression (LiteLLM PR #40002): long-context prices ignored when
/// reserving, so concurrent large prompts overspend. The reservation must
/// price a 300k-token prompt at the tier's rates.
#[test]
fn regression_reservation_uses_long_context_tier() {
    let p = price("gemini-2.5-pro");
    let (input, output) = p.reservation_rates(300_000);
    assert_eq!(input, Price::parse_per_mtok("2.50").unwrap());
    assert_eq!(output, Price::parse_per_mtok("15").unwrap());
    let (input, output) = p.reservation_rates(1_000);
    assert_eq!(
        (input, output),
        (
            Price::parse_per_mtok("1.25").unwrap(),
            Price::parse_per_mtok("10").unwrap()
        )
    );
    // Cache writes can cost more than plain input: the reservation assumes them.
    let claude = price("claude-sonnet-4-5");
    assert_eq!(
        claude.reservation_rates(10).0,
        Price::parse_per_mtok("6").unwrap()
    );
}

/// Regression: the built-in catalog priced a handful of models, so configs
/// naming dated snapshots or other current models were refused as unpriced.
#[test]
fn regression_builtin_catalog_prices_current_models_and_dated_aliases() {
    let c = Catalog::builtin();
    assert!(c.entries().count() >= 200);
    for m in [
        "claude-opus-4-7-20260416",
        "claude-haiku-4-5-20251001",
        "gpt-4o-2024-08-06",
        "gpt-5.4-mini-2026-03-17",
        "o3-2025-04-16",
        "text-embedding-ada-002",
        "gemini-embedding-001",
        "gemini-flash-latest",
        "mistral-large-2512",
        "codestral-embed",
        "gpt-3.5-turbo-instruct-0914",
    ] {
        assert!(c.price_of(m).is_ok(), "{m} is not priced");
    }
    // Not metered per token, or listed as free: never priced by default.
    for m in [
        "gpt-4o-audio-preview-2024-12-17",
        "gpt-4o-search-preview",
        "gemini-exp-1114",
    ] {
        assert!(c.get(m).is_none(), "{m} is priced");
    }
}

/// The checked-in table is what the generator makes of the reference map.
#[test]
fn builtin_catalog_is_the_generators_output() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = std::process::Command::new("python3")
        .arg(format!("{root}/scripts/gen-catalog.py"))
        .arg(format!(
            "{root}/../shared/ref/litellm-model-prices-1.109.1.json"
        ))
        .output()
        .expect("python3 runs the catalog generator");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checked_in = include_str!("catalog_data.rs");
    assert!(
        String::from_utf8_lossy(&out.stdout) == checked_in,
        "catalog_data.rs is stale: run scripts/gen-catalog.py"
    );
}
