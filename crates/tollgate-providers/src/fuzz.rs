//! Fuzzing on stable Rust: proptest over arbitrary bytes and over
//! JSON-shaped requests, for the request parser, the output-bound rewriter,
//! the input sizer, the SSE and JSON-array framers and every stream meter.
//!
//! CI runs a few hundred cases per target. A long run (minutes) is
//!
//! ```sh
//! TOLLGATE_FUZZ_CASES=200000 cargo test --release -p tollgate-providers fuzz
//! ```
//!
//! What a run finds is fixed and kept as a named test below.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value, json};

use crate::bounds::{self, ChatLimitField};
use crate::{Endpoint, ParsedRequest, StreamFilter, input};

const ENDPOINTS: [Endpoint; 9] = [
    Endpoint::ChatCompletions,
    Endpoint::Completions,
    Endpoint::Embeddings,
    Endpoint::Responses,
    Endpoint::Messages,
    Endpoint::CountTokens,
    Endpoint::GenerateContent,
    Endpoint::StreamGenerateContent,
    Endpoint::GeminiCountTokens,
];

fn cases() -> u32 {
    std::env::var("TOLLGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Keys a request body may have, so generated objects hit the fields read.
const KEYS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "best_of",
    "stream",
    "max_output_tokens",
    "thinking",
    "budget_tokens",
    "generationConfig",
    "generation_config",
    "maxOutputTokens",
    "candidateCount",
    "thinkingConfig",
    "thinkingBudget",
    "contents",
    "parts",
    "text",
    "content",
    "type",
    "image_url",
    "url",
    "detail",
    "inlineData",
    "data",
    "mimeType",
    "input",
    "prompt",
    "tools",
    "stream_options",
    "include_usage",
    "user",
    "metadata",
    "user_id",
    "previous_response_id",
    "source",
    "role",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (0u64..300_000).prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z0-9 ./:#%-]{0,24}".prop_map(Value::String),
        Just(json!(
            "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ"
        )),
        Just(json!("gpt-4o")),
        Just(json!("image/png")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn request_object() -> impl Strategy<Value = Value> {
    (json_value(), prop::option::of(0u64..100_000)).prop_map(|(v, limit)| {
        let mut m = match v {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("messages".into(), other);
                m
            }
        };
        m.entry("model").or_insert(json!("gpt-4o"));
        if let Some(l) = limit {
            m.insert("max_tokens".into(), json!(l));
        }
        Value::Object(m)
    })
}

proptest! {
    #![proptest_config(Config { cases: cases(), failure_persistence: None, ..Config::default() })]

    /// The parser never panics on any bytes, for any route.
    #[test]
    fn fuzz_request_parser_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512), ep in 0usize..8) {
        let _ = ParsedRequest::parse(ENDPOINTS[ep], Some("gemini-2.5-pro"), Bytes::from(bytes.clone()));
        let _ = ParsedRequest::parse(ENDPOINTS[ep], None, Bytes::from(bytes));
    }

    /// On JSON-shaped requests: parsing, sizing and rewriting never panic,
    /// and whenever Tollgate sets a limit, the body it sends says exactly
    /// that limit in every field the upstream reads — and re-parses to it.
    #[test]
    fn fuzz_rewritten_limits_are_what_was_reserved(v in request_object(), ep in 0usize..8, set in 1u64..50_000, chat in 0usize..3) {
        let ep = ENDPOINTS[ep];
        let chat = [ChatLimitField::MaxCompletionTokens, ChatLimitField::MaxTokens, ChatLimitField::Both][chat];
        let body = Bytes::from(serde_json::to_vec(&v).unwrap());
        let Ok(req) = ParsedRequest::parse(ep, Some("gemini-2.5-pro"), body) else { return Ok(()) };
        let _ = req.input_size("gpt-4o");
        let up = req.upstream_body("gpt-4o", Some(set), chat);
        if matches!(ep, Endpoint::Embeddings | Endpoint::CountTokens | Endpoint::GeminiCountTokens) {
            return Ok(());
        }
        let sent = ParsedRequest::parse(ep, Some("gemini-2.5-pro"), up.body.clone())
            .map_err(|e| TestCaseError::fail(format!("rewritten body refused: {e}: {}", String::from_utf8_lossy(&up.body))))?;
        prop_assert_eq!(sent.max_output_tokens, Some(set));
        prop_assert_eq!(sent.choices, req.choices);
        let map = match crate::json::from_slice(&up.body) { Ok(Value::Object(m)) => m, _ => unreachable!() };
        prop_assert!(bounds::limit_is(ep, &map, chat, set), "{}", String::from_utf8_lossy(&up.body));
    }

    /// The image header reader never panics or loops on any bytes.
    #[test]
    fn fuzz_image_headers(bytes in prop::collection::vec(any::<u8>(), 0..256), prefix in 0usize..4) {
        let mut b = [&b"\x89PNG\r\n\x1a\n"[..], b"GIF89a", b"RIFF\0\0\0\0WEBPVP8X", b"\xff\xd8"][prefix].to_vec();
        b.extend_from_slice(&bytes);
        let _ = input::image_dims(&b);
        let _ = input::image_dims(&bytes);
    }

    /// Every stream meter and framer on arbitrary bytes, split anywhere:
    /// no panic, and the same bytes split differently forward the same
    /// bytes and meter the same usage.
    #[test]
    fn fuzz_stream_filters_are_split_invariant(
        events in prop::collection::vec(stream_piece(), 0..12),
        splits in prop::collection::vec(1usize..64, 1..8),
        ep in 0usize..8,
        sse in any::<bool>(),
    ) {
        let ep = ENDPOINTS[ep];
        let whole: Vec<u8> = events.concat();
        let run = |chunks: &[&[u8]]| {
            let mut f = StreamFilter::new(ep, true, sse);
            let mut out = Vec::new();
            for c in chunks {
                match f.push(c) {
                    Ok(b) => out.extend_from_slice(&b),
                    Err(_) => return (out, None, true),
                }
            }
            out.extend_from_slice(&f.finish());
            (out, f.usage(), false)
        };
        let one = run(&[&whole]);
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut rest = &whole[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = splits[i % splits.len()].min(rest.len());
            chunks.push(&rest[..n]);
            rest = &rest[n..];
            i += 1;
        }
        let many = run(&chunks);
        prop_assert_eq!(one, many);
    }
}

/// Stream pieces: well-formed events of every format, junk, and splits of them.
fn stream_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n".to_vec()),
        Just(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}\n\n".to_vec()),
        Just(b"data: [DONE]\n\n".to_vec()),
        Just(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n".to_vec()),
        Just(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":18446744073709551615}}\n\n".to_vec()),
        Just(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":-4}}}\n\n".to_vec()),
        Just(b"[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}],\"usageMetadata\":{\"promptTokenCount\":2,\"candidatesTokenCount\":3}}".to_vec()),
        Just(b",\r\n{\"usageMetadata\":{\"promptTokenCount\":1e400}}]".to_vec()),
        Just(b": keep-alive\r\n\r\n".to_vec()),
        Just(b"data: {not json\n\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
    ]
}
