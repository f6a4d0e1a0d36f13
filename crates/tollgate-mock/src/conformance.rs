//! The shared adapter conformance suite: every wire format's stream and body
//! reader runs the same cases against the mock's exact rendering — usage
//! exact, streams split anywhere, usage chunks hidden, hostile streams and
//! truncation. A new format joins by adding one `conformance!` line.

use bytes::Bytes;
use tollgate_core::Usage;
use tollgate_core::tokens::count_tokens;
use tollgate_providers::{Endpoint, StreamFilter, usage_from_body};

use crate::render::{self, Plan};

fn plan(endpoint: Endpoint, sse: bool) -> Plan {
    Plan {
        endpoint,
        model: "m-1".into(),
        sse,
        usage: Usage {
            input_tokens: 1_000,
            output_tokens: 12 + 5,
            cached_input_tokens: 300,
            cache_write_5m_tokens: if endpoint.format() == tollgate_providers::WireFormat::Anthropic
            {
                100
            } else {
                0
            },
            cache_write_1h_tokens: if endpoint.format() == tollgate_providers::WireFormat::Anthropic
            {
                50
            } else {
                0
            },
            reasoning_tokens: if endpoint.format() == tollgate_providers::WireFormat::Anthropic {
                0
            } else {
                5
            },
        },
        output_words: 12,
        choices: 1,
        hit_limit: false,
        include_usage: true,
        omit_usage: false,
        garbage: false,
        embedding_inputs: 1,
        embedding_base64: false,
        id: "t1".into(),
        created: 0,
        tool_call: None,
    }
}

/// The model calls a function: its arguments are the whole output.
fn tool_plan(endpoint: Endpoint) -> Plan {
    let mut p = plan(endpoint, true);
    fix_anthropic(&mut p);
    let arguments = r#"{"query":"the quick brown fox"}"#.to_string();
    let tokens = count_tokens(&arguments);
    p.usage.output_tokens = p.usage.reasoning_tokens + tokens;
    p.output_words = 0;
    p.tool_call = Some(render::ToolCall {
        name: "search".into(),
        arguments,
        tokens,
    });
    p
}

/// A tool call is metered like text: exact usage from the body and from
/// the stream however split, and a stream cut short counts the arguments
/// it carried (a client that hangs up on a tool call still pays for it).
fn tool_call_is_metered(endpoint: Endpoint) {
    let p = tool_plan(endpoint);
    let body = render::body(&p).to_string();
    assert!(body.contains("search"), "{body}");
    assert_eq!(
        usage_from_body(endpoint, body.as_bytes()).usage,
        Some(p.usage)
    );
    let bytes = whole(&p);
    for step in [1usize, 5, 4096] {
        let pieces: Vec<Bytes> = bytes.chunks(step).map(Bytes::copy_from_slice).collect();
        let (f, _) = run(&p, false, &pieces);
        assert_eq!(f.usage(), Some(p.usage), "step {step}");
    }
    cut_everywhere(&p, |_, _| {});
}

/// Runs the stream cut after every piece: the text read always counts the
/// tokens sent; `also` sees each cut's reader and piece count.
fn cut_everywhere(p: &Plan, also: impl Fn(&StreamFilter, usize)) {
    let pieces = render::stream(p);
    for cut in 0..pieces.len() {
        let sent: u64 = pieces[..cut].iter().map(|x| x.tokens).sum();
        let bytes: Vec<Bytes> = pieces[..cut].iter().map(|x| x.bytes.clone()).collect();
        let (f, _) = run(p, false, &bytes);
        assert_eq!(
            count_tokens(f.output_text()),
            sent,
            "cut after {cut} pieces"
        );
        also(&f, cut);
    }
}

#[test]
fn openai_chat_tool_call_is_metered() {
    tool_call_is_metered(Endpoint::ChatCompletions)
}

#[test]
fn anthropic_tool_use_is_metered() {
    tool_call_is_metered(Endpoint::Messages)
}

fn fix_anthropic(p: &mut Plan) {
    // Anthropic reports thinking inside output_tokens, not apart.
    if p.endpoint.format() == tollgate_providers::WireFormat::Anthropic {
        p.usage.output_tokens = 12;
    }
}

fn run(p: &Plan, drop_usage: bool, pieces: &[Bytes]) -> (StreamFilter, Vec<u8>) {
    let mut f = StreamFilter::new(p.endpoint, drop_usage, p.sse);
    let mut out = Vec::new();
    for c in pieces {
        out.extend_from_slice(&f.push(c).expect("no oversize event"));
    }
    out.extend_from_slice(&f.finish());
    (f, out)
}

fn whole(p: &Plan) -> Vec<u8> {
    render::stream(p)
        .into_iter()
        .flat_map(|x| x.bytes.to_vec())
        .collect()
}

pub(crate) fn body_usage_is_exact(endpoint: Endpoint) {
    let mut p = plan(endpoint, true);
    fix_anthropic(&mut p);
    let body = render::body(&p).to_string();
    let got = usage_from_body(endpoint, body.as_bytes());
    assert_eq!(got.usage, Some(p.usage));
    assert_eq!(got.model.as_deref(), Some("m-1"));
}

pub(crate) fn stream_usage_is_exact_however_split(endpoint: Endpoint, sse: bool) {
    let mut p = plan(endpoint, sse);
    fix_anthropic(&mut p);
    let bytes = whole(&p);
    for step in [1usize, 3, 7, 64, 4096] {
        let pieces: Vec<Bytes> = bytes.chunks(step).map(Bytes::copy_from_slice).collect();
        let (f, out) = run(&p, false, &pieces);
        assert_eq!(f.usage(), Some(p.usage), "step {step}");
        assert!(f.usage_is_final());
        assert_eq!(out, bytes, "bytes pass through unchanged (step {step})");
        assert_eq!(count_tokens(f.output_text()), 12);
    }
}

pub(crate) fn injected_usage_chunk_is_hidden(endpoint: Endpoint) {
    let mut p = plan(endpoint, true);
    p.include_usage = true;
    let pieces: Vec<Bytes> = render::stream(&p).into_iter().map(|x| x.bytes).collect();
    let (f, out) = run(&p, true, &pieces);
    assert_eq!(f.usage(), Some(p.usage));
    let out = String::from_utf8(out).unwrap();
    assert!(!out.contains("\"usage\":{"), "usage chunk leaked: {out}");
    assert!(out.ends_with("data: [DONE]\n\n"));
}

pub(crate) fn missing_usage_leaves_text_to_count(endpoint: Endpoint, sse: bool) {
    let mut p = plan(endpoint, sse);
    p.omit_usage = true;
    let pieces: Vec<Bytes> = render::stream(&p).into_iter().map(|x| x.bytes).collect();
    let (f, _) = run(&p, false, &pieces);
    assert!(!f.usage_is_final());
    assert_eq!(count_tokens(f.output_text()), 12);
}

pub(crate) fn hostile_stream_still_metered(endpoint: Endpoint, sse: bool) {
    let mut p = plan(endpoint, sse);
    fix_anthropic(&mut p);
    p.garbage = sse; // JSON-array streams cannot carry SSE junk lines
    let pieces: Vec<Bytes> = render::stream(&p).into_iter().map(|x| x.bytes).collect();
    let (f, _) = run(&p, false, &pieces);
    assert_eq!(f.usage(), Some(p.usage));
}

pub(crate) fn truncated_stream_counts_what_was_sent(endpoint: Endpoint, sse: bool) {
    let mut p = plan(endpoint, sse);
    fix_anthropic(&mut p);
    let total = render::stream(&p).len();
    cut_everywhere(&p, |f, cut| {
        if cut + 1 < total && f.usage_is_final() {
            // Only OpenAI's trailing chunks come after the final usage.
            assert!(endpoint.format() == tollgate_providers::WireFormat::OpenAi);
        }
    });
}

macro_rules! conformance {
    ($name:ident, $endpoint:expr, sse = $sse:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn body_usage_is_exact() {
                super::body_usage_is_exact($endpoint)
            }
            #[test]
            fn stream_usage_is_exact_however_split() {
                super::stream_usage_is_exact_however_split($endpoint, $sse)
            }
            #[test]
            fn missing_usage_leaves_text_to_count() {
                super::missing_usage_leaves_text_to_count($endpoint, $sse)
            }
            #[test]
            fn hostile_stream_still_metered() {
                super::hostile_stream_still_metered($endpoint, $sse)
            }
            #[test]
            fn truncated_stream_counts_what_was_sent() {
                super::truncated_stream_counts_what_was_sent($endpoint, $sse)
            }
        }
    };
}

conformance!(openai_chat, Endpoint::ChatCompletions, sse = true);
conformance!(openai_completions, Endpoint::Completions, sse = true);
conformance!(openai_responses, Endpoint::Responses, sse = true);
conformance!(anthropic_messages, Endpoint::Messages, sse = true);
conformance!(gemini_sse, Endpoint::StreamGenerateContent, sse = true);
conformance!(
    gemini_json_array,
    Endpoint::StreamGenerateContent,
    sse = false
);

#[test]
fn openai_chat_hides_injected_usage_chunk() {
    injected_usage_chunk_is_hidden(Endpoint::ChatCompletions)
}

#[test]
fn openai_completions_hides_injected_usage_chunk() {
    injected_usage_chunk_is_hidden(Endpoint::Completions)
}

#[test]
fn embeddings_usage_is_input_only() {
    let mut p = plan(Endpoint::Embeddings, true);
    p.usage = Usage {
        input_tokens: 42,
        ..Usage::default()
    };
    let body = render::body(&p).to_string();
    assert_eq!(
        usage_from_body(Endpoint::Embeddings, body.as_bytes()).usage,
        Some(p.usage)
    );
}

/// Regression (LiteLLM #37923, #40100): a streamed call whose usage arrives
/// in the last chunk, after the finish chunk, must not be recorded as zero.
#[test]
fn regression_usage_after_finish_chunk_is_read() {
    let p = plan(Endpoint::ChatCompletions, true);
    let pieces: Vec<Bytes> = render::stream(&p).into_iter().map(|x| x.bytes).collect();
    let (f, _) = run(&p, true, &pieces);
    assert_eq!(f.usage().map(|u| u.output_tokens), Some(17));
}

/// Anthropic's `message_delta.usage` is cumulative: two deltas must not add.
#[test]
fn anthropic_cumulative_deltas_are_not_summed() {
    let s = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"c\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n",
    );
    let p = plan(Endpoint::Messages, true);
    let (f, _) = run(&p, false, &[Bytes::from_static(s.as_bytes())]);
    assert_eq!(
        f.usage().map(|u| (u.input_tokens, u.output_tokens)),
        Some((10, 9))
    );
}

/// Gemini: a chunk without `usageMetadata` must not reset the running total.
#[test]
fn gemini_chunk_without_usage_does_not_reset() {
    let s = concat!(
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}],\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":1,\"thoughtsTokenCount\":4}}\r\n\r\n",
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]},\"finishReason\":\"STOP\"}]}\r\n\r\n",
    );
    let p = plan(Endpoint::StreamGenerateContent, true);
    let (f, _) = run(&p, false, &[Bytes::from_static(s.as_bytes())]);
    let u = f.usage().unwrap();
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.reasoning_tokens),
        (7, 5, 4)
    );
}
