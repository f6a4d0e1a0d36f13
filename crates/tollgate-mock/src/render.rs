//! Pure rendering of provider responses from a [`Plan`]: the exact bodies
//! and SSE streams each real API sends, with usage built from the shared
//! wire types in `tollgate-providers`.

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};
use tollgate_core::Usage;
use tollgate_providers::{Endpoint, anthropic, gemini, openai};

/// Words that are one `o200k_base` token each, also when concatenated, so
/// that text counted after a disconnect matches the tokens sent.
pub const WORDS: [&str; 8] = [
    " the", " quick", " brown", " fox", " jumps", " over", " lazy", " dog",
];

/// Everything a response depends on.
#[derive(Clone, Debug)]
pub struct Plan {
    pub endpoint: Endpoint,
    pub model: String,
    /// Gemini only: SSE (`alt=sse`) rather than a JSON array.
    pub sse: bool,
    /// The usage billed if the response completes.
    pub usage: Usage,
    /// Visible output tokens per choice, one word each.
    pub output_words: u64,
    /// Completions generated (`n`, `best_of`, `candidateCount`); each one
    /// carries `output_words`.
    pub choices: u64,
    /// Output stopped at the caller's limit.
    pub hit_limit: bool,
    /// OpenAI streams: send the usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Hostile: end the stream without any usage.
    pub omit_usage: bool,
    /// Hostile: mix comment, blank and garbage lines into the stream.
    pub garbage: bool,
    /// Embeddings: number of inputs, and whether base64 was asked for.
    pub embedding_inputs: usize,
    pub embedding_base64: bool,
    pub id: String,
    pub created: i64,
    /// The model calls this function instead of answering in text (Chat
    /// Completions and Messages): no visible words, its arguments are the
    /// output.
    pub tool_call: Option<ToolCall>,
}

/// A function call the model makes.
#[derive(Clone, Debug)]
pub struct ToolCall {
    pub name: String,
    /// The arguments, JSON text.
    pub arguments: String,
    /// Output tokens the arguments take.
    pub tokens: u64,
}

impl Plan {
    pub fn text(&self) -> String {
        (0..self.output_words).map(word).collect()
    }
}

pub fn word(i: u64) -> &'static str {
    WORDS[(i % WORDS.len() as u64) as usize]
}

/// One piece of a stream and the visible output tokens it carries.
#[derive(Clone, Debug)]
pub struct Piece {
    pub bytes: Bytes,
    pub tokens: u64,
}

fn sse(event: Option<&str>, data: &Value) -> Bytes {
    let mut s = String::new();
    if let Some(e) = event {
        s.push_str("event: ");
        s.push_str(e);
        s.push('\n');
    }
    s.push_str("data: ");
    s.push_str(&data.to_string());
    s.push_str("\n\n");
    Bytes::from(s)
}

fn piece(bytes: Bytes, tokens: u64) -> Piece {
    Piece { bytes, tokens }
}

/// The complete (non-streaming) JSON body (without its usage fields when
/// the plan is hostile with `omit_usage`).
pub fn body(p: &Plan) -> Value {
    let mut v = full_body(p);
    if p.omit_usage
        && let Some(o) = v.as_object_mut()
    {
        o.remove("usage");
        o.remove("usageMetadata");
    }
    v
}

fn full_body(p: &Plan) -> Value {
    let text = p.text();
    match p.endpoint {
        Endpoint::ChatCompletions => json!({
            "id": p.id, "object": "chat.completion", "created": p.created, "model": p.model,
            "choices": (0..p.choices.max(1)).map(|i| match &p.tool_call {
                Some(t) => json!({
                    "index": i,
                    "message": {"role": "assistant", "content": null, "refusal": null, "tool_calls": [{
                        "id": format!("call_{}_{i}", p.id), "type": "function",
                        "function": {"name": t.name, "arguments": t.arguments},
                    }]},
                    "logprobs": null,
                    "finish_reason": "tool_calls",
                }),
                None => json!({
                    "index": i,
                    "message": {"role": "assistant", "content": text, "refusal": null},
                    "logprobs": null,
                    "finish_reason": if p.hit_limit { "length" } else { "stop" },
                }),
            }).collect::<Vec<_>>(),
            "usage": openai::WireUsage::from_usage(&p.usage),
            "system_fingerprint": "fp_mock",
        }),
        Endpoint::Completions => json!({
            "id": p.id, "object": "text_completion", "created": p.created, "model": p.model,
            "choices": (0..p.choices.max(1)).map(|i| json!({
                "index": i, "text": text, "logprobs": null,
                "finish_reason": if p.hit_limit { "length" } else { "stop" },
            })).collect::<Vec<_>>(),
            "usage": openai::WireUsage::from_usage(&p.usage),
        }),
        Endpoint::Embeddings => {
            let data: Vec<Value> = (0..p.embedding_inputs.max(1))
                .map(|i| {
                    let v: Vec<f32> = (0..8).map(|k| ((i + k) as f32) / 8.0).collect();
                    let emb = if p.embedding_base64 {
                        let raw: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                        Value::String(base64::engine::general_purpose::STANDARD.encode(raw))
                    } else {
                        json!(v)
                    };
                    json!({"object": "embedding", "index": i, "embedding": emb})
                })
                .collect();
            json!({
                "object": "list", "data": data, "model": p.model,
                "usage": {"prompt_tokens": p.usage.input_tokens, "total_tokens": p.usage.input_tokens},
            })
        }
        Endpoint::Responses => responses_object(p, "completed", &text, true),
        Endpoint::Messages => json!({
            "id": p.id, "type": "message", "role": "assistant", "model": p.model,
            "content": match &p.tool_call {
                Some(t) => json!([{"type": "tool_use", "id": format!("toolu_{}", p.id), "name": t.name,
                                   "input": serde_json::from_str::<Value>(&t.arguments).unwrap_or_else(|_| json!({}))}]),
                None => json!([{"type": "text", "text": text}]),
            },
            "stop_reason": if p.tool_call.is_some() { "tool_use" } else if p.hit_limit { "max_tokens" } else { "end_turn" },
            "stop_sequence": null,
            "usage": anthropic::WireUsage::from_usage(&p.usage),
        }),
        Endpoint::CountTokens => json!({"input_tokens": p.usage.input_tokens}),
        Endpoint::GeminiCountTokens => json!({"totalTokens": p.usage.input_tokens}),
        Endpoint::GenerateContent | Endpoint::StreamGenerateContent => json!({
            "candidates": (0..p.choices.max(1)).map(|i| json!({
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": if p.hit_limit { "MAX_TOKENS" } else { "STOP" },
                "index": i,
            })).collect::<Vec<_>>(),
            "usageMetadata": gemini::UsageMetadata::from_usage(&p.usage),
            "modelVersion": p.model,
            "responseId": p.id,
        }),
    }
}

fn responses_object(p: &Plan, status: &str, text: &str, with_usage: bool) -> Value {
    let output = if status == "in_progress" {
        json!([])
    } else {
        json!([{
            "type": "message", "id": format!("msg_{}", p.id), "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }])
    };
    json!({
        "id": p.id, "object": "response", "created_at": p.created, "status": status,
        "model": p.model, "output": output,
        "incomplete_details": if p.hit_limit && status != "in_progress" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "usage": if with_usage { json!(openai::ResponsesUsage::from_usage(&p.usage)) } else { Value::Null },
        "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "text": {"format": {"type": "text"}},
    })
}

/// The stream, piece by piece, as the real API sends it.
pub fn stream(p: &Plan) -> Vec<Piece> {
    let mut out = match p.endpoint {
        Endpoint::ChatCompletions | Endpoint::Completions => openai_stream(p),
        Endpoint::Responses => responses_stream(p),
        Endpoint::Messages => anthropic_stream(p),
        _ => gemini_stream(p),
    };
    if p.garbage {
        let mut hostile = Vec::with_capacity(out.len() * 2);
        for (i, pc) in out.into_iter().enumerate() {
            if i % 2 == 1 {
                hostile.push(piece(Bytes::from_static(b": keep-alive\n\n"), 0));
                hostile.push(piece(Bytes::from_static(b"data: {not json at all\n\n"), 0));
            }
            // Split each piece in two, through a multi-byte boundary if any.
            let b = pc.bytes;
            let mid = b.len() / 2;
            hostile.push(piece(b.slice(..mid), 0));
            hostile.push(piece(b.slice(mid..), pc.tokens));
        }
        out = hostile;
    }
    out
}

fn openai_stream(p: &Plan) -> Vec<Piece> {
    let chat = p.endpoint == Endpoint::ChatCompletions;
    let object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut v = json!({"id": p.id, "object": object, "created": p.created, "model": p.model, "choices": choices});
        if p.include_usage && !p.omit_usage {
            v["usage"] = usage.unwrap_or(Value::Null);
        }
        sse(None, &v)
    };
    let mut out = Vec::new();
    let n = p.choices.max(1);
    if let (true, Some(t)) = (chat, &p.tool_call) {
        // The call's name and id first, then its arguments.
        for c in 0..n {
            let call = json!({"index": 0, "id": format!("call_{}_{c}", p.id), "type": "function",
                              "function": {"name": t.name, "arguments": ""}});
            out.push(piece(
                chunk(json!([{"index": c, "delta": {"role": "assistant", "content": null, "tool_calls": [call]}, "finish_reason": null}]), None),
                0,
            ));
        }
        for c in 0..n {
            let args = json!({"index": 0, "function": {"arguments": t.arguments}});
            out.push(piece(
                chunk(
                    json!([{"index": c, "delta": {"tool_calls": [args]}, "finish_reason": null}]),
                    None,
                ),
                t.tokens,
            ));
        }
    } else if chat {
        for c in 0..n {
            out.push(piece(
                chunk(json!([{"index": c, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]), None),
                0,
            ));
        }
    }
    // Each choice streams in its own chunks, interleaved as the API does.
    for i in 0..p.output_words {
        for c in 0..n {
            let choice = if chat {
                json!([{"index": c, "delta": {"content": word(i)}, "finish_reason": null}])
            } else {
                json!([{"index": c, "text": word(i), "logprobs": null, "finish_reason": null}])
            };
            out.push(piece(chunk(choice, None), 1));
        }
    }
    let finish = if chat && p.tool_call.is_some() {
        "tool_calls"
    } else if p.hit_limit {
        "length"
    } else {
        "stop"
    };
    for c in 0..n {
        let last = if chat {
            json!([{"index": c, "delta": {}, "finish_reason": finish}])
        } else {
            json!([{"index": c, "text": "", "logprobs": null, "finish_reason": finish}])
        };
        out.push(piece(chunk(last, None), 0));
    }
    if p.include_usage && !p.omit_usage {
        let u = json!(openai::WireUsage::from_usage(&p.usage));
        out.push(piece(chunk(json!([]), Some(u)), 0));
    }
    out.push(piece(Bytes::from_static(b"data: [DONE]\n\n"), 0));
    out
}

fn responses_stream(p: &Plan) -> Vec<Piece> {
    let mut seq = 0u64;
    let mut ev = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(seq);
        seq += 1;
        sse(Some(kind), &data)
    };
    let item_id = format!("msg_{}", p.id);
    let text = p.text();
    let mut out = vec![
        piece(
            ev(
                "response.created",
                json!({"response": responses_object(p, "in_progress", "", false)}),
            ),
            0,
        ),
        piece(
            ev(
                "response.output_item.added",
                json!({"output_index": 0, "item": {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}}),
            ),
            0,
        ),
        piece(
            ev(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
            ),
            0,
        ),
    ];
    for i in 0..p.output_words {
        out.push(piece(
            ev("response.output_text.delta", json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": word(i)})),
            1,
        ));
    }
    out.push(piece(
        ev(
            "response.output_text.done",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": text}),
        ),
        0,
    ));
    let done_kind = if p.hit_limit {
        "response.incomplete"
    } else {
        "response.completed"
    };
    let status = if p.hit_limit {
        "incomplete"
    } else {
        "completed"
    };
    out.push(piece(
        ev(
            done_kind,
            json!({"response": responses_object(p, status, &text, !p.omit_usage)}),
        ),
        0,
    ));
    out
}

fn anthropic_stream(p: &Plan) -> Vec<Piece> {
    let mut start_usage = anthropic::WireUsage::from_usage(&p.usage);
    start_usage.output_tokens = Some(1);
    let mut message = json!({
        "id": p.id, "type": "message", "role": "assistant", "model": p.model, "content": [],
        "stop_reason": null, "stop_sequence": null, "usage": start_usage,
    });
    if p.omit_usage {
        message.as_object_mut().map(|m| m.remove("usage"));
    }
    let mut out = vec![
        piece(
            sse(
                Some("message_start"),
                &json!({"type": "message_start", "message": message}),
            ),
            0,
        ),
        piece(
            sse(
                Some("content_block_start"),
                &json!({"type": "content_block_start", "index": 0, "content_block": match &p.tool_call {
                    Some(t) => json!({"type": "tool_use", "id": format!("toolu_{}", p.id), "name": t.name, "input": {}}),
                    None => json!({"type": "text", "text": ""}),
                }}),
            ),
            0,
        ),
        piece(sse(Some("ping"), &json!({"type": "ping"})), 0),
    ];
    if let Some(t) = &p.tool_call {
        out.push(piece(
            sse(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": t.arguments}})),
            t.tokens,
        ));
    }
    for i in 0..p.output_words {
        out.push(piece(
            sse(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word(i)}})),
            1,
        ));
    }
    out.push(piece(
        sse(
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": 0}),
        ),
        0,
    ));
    let mut delta = json!({
        "type": "message_delta",
        "delta": {"stop_reason": if p.tool_call.is_some() { "tool_use" } else if p.hit_limit { "max_tokens" } else { "end_turn" }, "stop_sequence": null},
        "usage": {"output_tokens": p.usage.output_tokens},
    });
    if p.omit_usage {
        delta.as_object_mut().map(|m| m.remove("usage"));
    }
    out.push(piece(sse(Some("message_delta"), &delta), 0));
    out.push(piece(
        sse(Some("message_stop"), &json!({"type": "message_stop"})),
        0,
    ));
    out
}

fn gemini_stream(p: &Plan) -> Vec<Piece> {
    let n = p.output_words;
    let choices = p.choices.max(1);
    let mut objs: Vec<(Value, u64)> = Vec::new();
    for i in 0..n.max(1) {
        let last = i + 1 >= n;
        let cands: Vec<Value> = (0..choices)
            .map(|c| {
                let mut cand = json!({"content": {"parts": [{"text": if n == 0 { "" } else { word(i) }}], "role": "model"}, "index": c});
                if last {
                    cand["finishReason"] = json!(if p.hit_limit { "MAX_TOKENS" } else { "STOP" });
                }
                cand
            })
            .collect();
        // Running totals: output so far; thoughts are reported in full from the start.
        let mut running = p.usage;
        running.output_tokens = p.usage.reasoning_tokens + (i + 1).min(n) * choices;
        let mut obj = json!({"candidates": cands, "modelVersion": p.model, "responseId": p.id});
        if !p.omit_usage {
            obj["usageMetadata"] = json!(gemini::UsageMetadata::from_usage(if last {
                &p.usage
            } else {
                &running
            }));
        }
        objs.push((obj, u64::from(n > 0) * choices));
    }
    if p.sse {
        objs.into_iter()
            .map(|(o, t)| piece(Bytes::from(format!("data: {o}\r\n\r\n")), t))
            .collect()
    } else {
        let len = objs.len();
        objs.into_iter()
            .enumerate()
            .map(|(i, (o, t))| {
                let prefix = if i == 0 { "[" } else { "," };
                let suffix = if i + 1 == len { "]" } else { "\r\n" };
                piece(Bytes::from(format!("{prefix}{o}{suffix}")), t)
            })
            .collect()
    }
}
