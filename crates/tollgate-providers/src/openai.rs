//! OpenAI wire format: chat completions, completions, embeddings and the
//! Responses API. Also spoken by Mistral, vLLM, Ollama and other
//! OpenAI-compatible upstreams.
//!
//! Usage facts: `prompt_tokens_details.cached_tokens` ⊂ `prompt_tokens`;
//! `completion_tokens_details.reasoning_tokens` ⊂ `completion_tokens`; the
//! same holds for the Responses API's `input_tokens` / `output_tokens`.

use serde::{Deserialize, Serialize};
use tollgate_core::Usage;

use crate::stream::{Closing, StreamMeter, Verdict};
use crate::{BodyUsage, Endpoint};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
}

/// `usage` of chat completions, completions and embeddings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

impl WireUsage {
    pub fn to_usage(&self) -> Usage {
        Usage {
            input_tokens: self.prompt_tokens,
            output_tokens: self.completion_tokens,
            cached_input_tokens: self
                .prompt_tokens_details
                .as_ref()
                .map_or(0, |d| d.cached_tokens),
            cache_write_5m_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: self
                .completion_tokens_details
                .as_ref()
                .map_or(0, |d| d.reasoning_tokens),
        }
    }

    pub fn from_usage(u: &Usage) -> WireUsage {
        WireUsage {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.total_tokens(),
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: u.cached_input_tokens,
            }),
            completion_tokens_details: Some(CompletionTokensDetails {
                reasoning_tokens: u.reasoning_tokens,
            }),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
}

/// `usage` of the Responses API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponsesUsage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens_details: Option<InputTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens_details: Option<OutputTokensDetails>,
}

impl ResponsesUsage {
    pub fn to_usage(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cached_input_tokens: self
                .input_tokens_details
                .as_ref()
                .map_or(0, |d| d.cached_tokens),
            cache_write_5m_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: self
                .output_tokens_details
                .as_ref()
                .map_or(0, |d| d.reasoning_tokens),
        }
    }

    pub fn from_usage(u: &Usage) -> ResponsesUsage {
        ResponsesUsage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            total_tokens: u.total_tokens(),
            input_tokens_details: Some(InputTokensDetails {
                cached_tokens: u.cached_input_tokens,
            }),
            output_tokens_details: Some(OutputTokensDetails {
                reasoning_tokens: u.reasoning_tokens,
            }),
        }
    }
}

#[derive(Deserialize)]
struct ChatBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct ResponsesBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<ResponsesUsage>,
}

pub(crate) fn usage_from_body(endpoint: Endpoint, body: &[u8]) -> BodyUsage {
    if endpoint == Endpoint::Responses {
        return match serde_json::from_slice::<ResponsesBody>(body) {
            Ok(b) => BodyUsage {
                usage: b.usage.map(|u| u.to_usage()),
                model: b.model,
            },
            Err(_) => BodyUsage::default(),
        };
    }
    match serde_json::from_slice::<ChatBody>(body) {
        Ok(b) => BodyUsage {
            usage: b.usage.map(|u| u.to_usage()),
            model: b.model,
        },
        Err(_) => BodyUsage::default(),
    }
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    delta: Option<Delta>,
    /// Legacy completions stream text here.
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    object: Option<String>,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Meter for chat-completion and completion streams.
pub struct ChatMeter {
    drop_usage_chunk: bool,
    usage: Option<Usage>,
    text: String,
    model: Option<String>,
    /// What a closing chunk repeats: id, object, created.
    id: Option<String>,
    object: Option<String>,
    created: Option<i64>,
    /// Choices seen (a closing chunk ends each).
    choices: std::collections::BTreeSet<u64>,
    /// Choices that streamed text (a footer ends each).
    texted: std::collections::BTreeSet<u64>,
    finish_now: bool,
    finished: bool,
}

impl ChatMeter {
    pub fn new(drop_usage_chunk: bool) -> Self {
        ChatMeter {
            drop_usage_chunk,
            usage: None,
            text: String::new(),
            model: None,
            id: None,
            object: None,
            created: None,
            choices: Default::default(),
            texted: Default::default(),
            finish_now: false,
            finished: false,
        }
    }
}

impl StreamMeter for ChatMeter {
    fn on_event(&mut self, _event: Option<&str>, data: &[u8]) -> Verdict {
        if data.is_empty() || data == b"[DONE]" {
            return Verdict::Forward;
        }
        // Anything unparseable is forwarded untouched: the client may know
        // what to do with it, and metering falls back to counting text.
        let Ok(chunk) = serde_json::from_slice::<Chunk>(data) else {
            return Verdict::Forward;
        };
        if self.model.is_none() {
            self.model = chunk.model;
        }
        if self.id.is_none() {
            self.id = chunk.id;
            self.object = chunk.object;
            self.created = chunk.created;
        }
        self.finish_now = chunk.choices.iter().any(|c| c.finish_reason.is_some());
        self.finished |= self.finish_now;
        for c in &chunk.choices {
            self.choices.insert(c.index);
            let texted = c.text.as_deref().is_some_and(|t| !t.is_empty())
                || c.delta
                    .as_ref()
                    .and_then(|d| d.content.as_deref())
                    .is_some_and(|t| !t.is_empty());
            if texted {
                self.texted.insert(c.index);
            }
            if let Some(t) = &c.text {
                self.text.push_str(t);
            }
            if let Some(d) = &c.delta {
                for t in [&d.content, &d.reasoning_content].into_iter().flatten() {
                    self.text.push_str(t);
                }
                for tc in d.tool_calls.iter().flatten() {
                    if let Some(a) = tc.function.as_ref().and_then(|f| f.arguments.as_ref()) {
                        self.text.push_str(a);
                    }
                }
            }
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u.to_usage());
            if self.drop_usage_chunk && chunk.choices.is_empty() {
                return Verdict::Drop;
            }
        }
        Verdict::Forward
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn usage_is_final(&self) -> bool {
        self.usage.is_some()
    }

    fn output_text(&self) -> &str {
        &self.text
    }

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn last_was_finish(&self) -> bool {
        self.finish_now
    }

    fn finished(&self) -> bool {
        self.finished
    }

    fn footer_events(&self, footer: &str, finish: &[u8]) -> Option<Vec<Closing>> {
        if self.texted.is_empty() {
            return None;
        }
        let object = self.object.as_deref().unwrap_or("chat.completion.chunk");
        let text = format!("\n\n{footer}");
        let choices: Vec<serde_json::Value> = self
            .texted
            .iter()
            .map(|i| {
                if object == "text_completion" {
                    serde_json::json!({"index": i, "text": text, "finish_reason": null})
                } else {
                    serde_json::json!({"index": i, "delta": {"content": text}, "finish_reason": null})
                }
            })
            .collect();
        let chunk = serde_json::json!({
            "id": self.id.as_deref().unwrap_or("chatcmpl-tollgate"),
            "object": object,
            "created": self.created.unwrap_or(0),
            "model": self.model.as_deref().unwrap_or(""),
            "choices": choices,
        });
        Some(vec![
            Closing {
                event: None,
                data: chunk.to_string(),
            },
            Closing {
                event: None,
                data: String::from_utf8_lossy(finish).into_owned(),
            },
        ])
    }

    fn closing(&self, usage: Option<&Usage>) -> Vec<Closing> {
        let object = self.object.as_deref().unwrap_or("chat.completion.chunk");
        let legacy = object == "text_completion";
        let base = |choices: serde_json::Value| {
            serde_json::json!({
                "id": self.id.as_deref().unwrap_or("chatcmpl-tollgate"),
                "object": object,
                "created": self.created.unwrap_or(0),
                "model": self.model.as_deref().unwrap_or(""),
                "choices": choices,
            })
        };
        let indices: Vec<u64> = if self.choices.is_empty() {
            vec![0]
        } else {
            self.choices.iter().copied().collect()
        };
        let ends: Vec<serde_json::Value> = indices
            .iter()
            .map(|i| {
                if legacy {
                    serde_json::json!({"index": i, "text": "", "finish_reason": "length"})
                } else {
                    serde_json::json!({"index": i, "delta": {}, "finish_reason": "length"})
                }
            })
            .collect();
        let mut out = vec![Closing {
            event: None,
            data: base(serde_json::Value::Array(ends)).to_string(),
        }];
        if let Some(u) = usage {
            let mut chunk = base(serde_json::json!([]));
            chunk["usage"] = serde_json::json!({
                "prompt_tokens": u.input_tokens,
                "completion_tokens": u.output_tokens,
                "total_tokens": u.input_tokens + u.output_tokens,
            });
            out.push(Closing {
                event: None,
                data: chunk.to_string(),
            });
        }
        out.push(Closing {
            event: None,
            data: "[DONE]".into(),
        });
        out
    }
}

#[derive(Deserialize)]
struct ResponseObj {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<ResponsesUsage>,
}

#[derive(Deserialize)]
struct ResponsesEvent {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    delta: Option<serde_json::Value>,
    #[serde(default)]
    response: Option<ResponseObj>,
    #[serde(default)]
    sequence_number: Option<u64>,
}

/// Meter for Responses API streams: text from `*.delta` events, usage from
/// `response.completed` (or `.incomplete` / `.failed`).
#[derive(Default)]
pub struct ResponsesMeter {
    usage: Option<Usage>,
    text: String,
    model: Option<String>,
    /// The response as the stream last described it (a closing event
    /// repeats it, incomplete), and the last sequence number.
    response: Option<serde_json::Value>,
    sequence: u64,
}

impl StreamMeter for ResponsesMeter {
    fn on_event(&mut self, _event: Option<&str>, data: &[u8]) -> Verdict {
        let Ok(ev) = serde_json::from_slice::<ResponsesEvent>(data) else {
            return Verdict::Forward;
        };
        if ev.kind.ends_with(".delta")
            && let Some(serde_json::Value::String(s)) = &ev.delta
        {
            self.text.push_str(s);
        }
        if let Some(n) = ev.sequence_number {
            self.sequence = self.sequence.max(n);
        }
        if let Some(r) = ev.response {
            if r.model.is_some() {
                self.model = r.model;
            }
            if let Some(u) = r.usage {
                self.usage = Some(u.to_usage());
            }
            // Kept whole only here, where a response object came.
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data)
                && let Some(resp) = v.get("response")
            {
                self.response = Some(resp.clone());
            }
        }
        Verdict::Forward
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn usage_is_final(&self) -> bool {
        self.usage.is_some()
    }

    fn output_text(&self) -> &str {
        &self.text
    }

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn finished(&self) -> bool {
        self.usage.is_some()
    }

    fn closing(&self, usage: Option<&Usage>) -> Vec<Closing> {
        let mut response = self
            .response
            .clone()
            .unwrap_or_else(|| serde_json::json!({"object": "response"}));
        response["status"] = "incomplete".into();
        response["incomplete_details"] = serde_json::json!({"reason": "max_output_tokens"});
        if let Some(u) = usage {
            response["usage"] = serde_json::json!({
                "input_tokens": u.input_tokens,
                "input_tokens_details": {"cached_tokens": u.cached_input_tokens},
                "output_tokens": u.output_tokens,
                "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
                "total_tokens": u.input_tokens + u.output_tokens,
            });
        }
        vec![Closing {
            event: Some("response.incomplete"),
            data: serde_json::json!({
                "type": "response.incomplete",
                "sequence_number": self.sequence + 1,
                "response": response,
            })
            .to_string(),
        }]
    }
}
