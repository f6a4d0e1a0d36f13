//! Gemini native wire format (`generateContent`, `streamGenerateContent`).
//!
//! Usage facts: `promptTokenCount` includes `cachedContentTokenCount`;
//! `thoughtsTokenCount` is *not* part of `candidatesTokenCount` and is billed
//! at the output rate; `toolUsePromptTokenCount` is billed as input. In
//! streams `usageMetadata` repeats with running totals: the last one wins,
//! and a chunk without it does not reset it.

use serde::{Deserialize, Serialize};
use tollgate_core::Usage;

use crate::BodyUsage;
use crate::stream::{Closing, StreamMeter, Verdict};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    #[serde(default)]
    pub prompt_token_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_content_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thoughts_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_prompt_token_count: Option<u64>,
    #[serde(default)]
    pub total_token_count: u64,
}

impl UsageMetadata {
    pub fn to_usage(&self) -> Usage {
        let thoughts = self.thoughts_token_count.unwrap_or(0);
        Usage {
            input_tokens: self
                .prompt_token_count
                .saturating_add(self.tool_use_prompt_token_count.unwrap_or(0)),
            output_tokens: self
                .candidates_token_count
                .unwrap_or(0)
                .saturating_add(thoughts),
            cached_input_tokens: self.cached_content_token_count.unwrap_or(0),
            cache_write_5m_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: thoughts,
        }
    }

    pub fn from_usage(u: &Usage) -> UsageMetadata {
        UsageMetadata {
            prompt_token_count: u.input_tokens,
            candidates_token_count: Some(u.visible_output_tokens()),
            cached_content_token_count: (u.cached_input_tokens > 0)
                .then_some(u.cached_input_tokens),
            thoughts_token_count: (u.reasoning_tokens > 0).then_some(u.reasoning_tokens),
            tool_use_prompt_token_count: None,
            total_token_count: u.total_tokens(),
        }
    }
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
}

pub(crate) fn usage_from_body(body: &[u8]) -> BodyUsage {
    match serde_json::from_slice::<Response>(body) {
        Ok(r) => BodyUsage {
            usage: r.usage_metadata.map(|u| u.to_usage()),
            model: r.model_version,
        },
        Err(_) => BodyUsage::default(),
    }
}

/// Meter for `streamGenerateContent`, SSE or JSON array.
#[derive(Default)]
pub struct GeminiMeter {
    usage: Option<Usage>,
    finished: bool,
    finish_now: bool,
    text: String,
    model: Option<String>,
}

impl StreamMeter for GeminiMeter {
    fn on_event(&mut self, _event: Option<&str>, data: &[u8]) -> Verdict {
        let Ok(r) = serde_json::from_slice::<Response>(data) else {
            return Verdict::Forward;
        };
        self.finish_now = r.candidates.iter().any(|c| c.finish_reason.is_some());
        for c in &r.candidates {
            for p in c.content.iter().flat_map(|c| &c.parts) {
                if let Some(t) = &p.text {
                    self.text.push_str(t);
                }
            }
            if c.finish_reason.is_some() {
                self.finished = true;
            }
        }
        if let Some(u) = r.usage_metadata {
            self.usage = Some(u.to_usage());
        }
        if r.model_version.is_some() {
            self.model = r.model_version;
        }
        Verdict::Forward
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn usage_is_final(&self) -> bool {
        self.finished && self.usage.is_some()
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
        if self.text.is_empty() {
            return None;
        }
        // The finish chunk often carries the last words: the footer is
        // appended to its last text part, or added as one.
        let mut chunk: serde_json::Value = serde_json::from_slice(finish).ok()?;
        let text = format!("\n\n{footer}");
        for c in chunk.get_mut("candidates")?.as_array_mut()? {
            let content = c
                .as_object_mut()?
                .entry("content")
                .or_insert_with(|| serde_json::json!({"role": "model", "parts": []}));
            let parts = content
                .as_object_mut()?
                .entry("parts")
                .or_insert_with(|| serde_json::json!([]))
                .as_array_mut()?;
            let last_text = parts.iter_mut().rev().find(|p| {
                p.get("text").is_some() && p.get("thought").and_then(|t| t.as_bool()) != Some(true)
            });
            match last_text.and_then(|p| p.get_mut("text")) {
                Some(serde_json::Value::String(s)) => s.push_str(&text),
                _ => parts.push(serde_json::json!({"text": text})),
            }
        }
        Some(vec![Closing {
            event: None,
            data: chunk.to_string(),
        }])
    }

    fn closing(&self, usage: Option<&Usage>) -> Vec<Closing> {
        let mut last = serde_json::json!({
            "candidates": [{
                "content": {"role": "model", "parts": [{"text": ""}]},
                "finishReason": "MAX_TOKENS",
                "index": 0,
            }],
        });
        if let Some(u) = usage {
            last["usageMetadata"] = serde_json::json!({
                "promptTokenCount": u.input_tokens,
                "candidatesTokenCount": u.output_tokens.saturating_sub(u.reasoning_tokens),
                "thoughtsTokenCount": u.reasoning_tokens,
                "totalTokenCount": u.input_tokens + u.output_tokens,
            });
        }
        if let Some(m) = &self.model {
            last["modelVersion"] = m.clone().into();
        }
        vec![Closing {
            event: None,
            data: last.to_string(),
        }]
    }
}
