//! Anthropic Messages wire format.
//!
//! Usage facts: total input = `input_tokens + cache_creation_input_tokens +
//! cache_read_input_tokens` (the cache fields are *not* part of
//! `input_tokens`); `cache_creation.ephemeral_5m_input_tokens` /
//! `ephemeral_1h_input_tokens` split the writes by price. In streams,
//! `message_start` carries the input side and `message_delta.usage` is
//! cumulative: keep the last value, never add.

use serde::{Deserialize, Serialize};
use tollgate_core::Usage;

use crate::BodyUsage;
use crate::stream::{Closing, StreamMeter, Verdict};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheCreation {
    #[serde(default)]
    pub ephemeral_5m_input_tokens: u64,
    #[serde(default)]
    pub ephemeral_1h_input_tokens: u64,
}

/// Anthropic's `usage` object. Every field optional on the wire: a
/// `message_delta` may carry only `output_tokens`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation: Option<CacheCreation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
}

impl WireUsage {
    /// Overlays the fields present in `newer` (cumulative semantics).
    pub fn merge(&mut self, newer: &WireUsage) {
        let WireUsage {
            input_tokens,
            cache_creation_input_tokens,
            cache_read_input_tokens,
            cache_creation,
            output_tokens,
        } = newer;
        if input_tokens.is_some() {
            self.input_tokens = *input_tokens;
        }
        if cache_creation_input_tokens.is_some() {
            self.cache_creation_input_tokens = *cache_creation_input_tokens;
        }
        if cache_read_input_tokens.is_some() {
            self.cache_read_input_tokens = *cache_read_input_tokens;
        }
        if cache_creation.is_some() {
            self.cache_creation = cache_creation.clone();
        }
        if output_tokens.is_some() {
            self.output_tokens = *output_tokens;
        }
    }

    pub fn to_usage(&self) -> Usage {
        let writes = self.cache_creation_input_tokens.unwrap_or(0);
        // Without the split, writes are 5-minute writes (the API default).
        let write_1h = self
            .cache_creation
            .as_ref()
            .map_or(0, |c| c.ephemeral_1h_input_tokens)
            .min(writes);
        let reads = self.cache_read_input_tokens.unwrap_or(0);
        Usage {
            input_tokens: self
                .input_tokens
                .unwrap_or(0)
                .saturating_add(writes)
                .saturating_add(reads),
            output_tokens: self.output_tokens.unwrap_or(0),
            cached_input_tokens: reads,
            cache_write_5m_tokens: writes - write_1h,
            cache_write_1h_tokens: write_1h,
            // Thinking tokens are billed as output and not reported apart.
            reasoning_tokens: 0,
        }
    }

    pub fn from_usage(u: &Usage) -> WireUsage {
        let writes = u.cache_write_5m_tokens + u.cache_write_1h_tokens;
        WireUsage {
            input_tokens: Some(u.uncached_input_tokens()),
            cache_creation_input_tokens: Some(writes),
            cache_read_input_tokens: Some(u.cached_input_tokens),
            cache_creation: Some(CacheCreation {
                ephemeral_5m_input_tokens: u.cache_write_5m_tokens,
                ephemeral_1h_input_tokens: u.cache_write_1h_tokens,
            }),
            output_tokens: Some(u.output_tokens),
        }
    }
}

#[derive(Deserialize)]
struct MessageBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

pub(crate) fn usage_from_body(body: &[u8]) -> BodyUsage {
    match serde_json::from_slice::<MessageBody>(body) {
        Ok(b) => BodyUsage {
            usage: b.usage.map(|u| u.to_usage()),
            model: b.model,
        },
        Err(_) => BodyUsage::default(),
    }
}

#[derive(Deserialize)]
struct StreamDelta {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
}

#[derive(Deserialize)]
struct BlockHead {
    #[serde(rename = "type", default)]
    kind: String,
}

#[derive(Deserialize)]
struct StreamEvent {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    content_block: Option<BlockHead>,
    #[serde(default)]
    message: Option<MessageBody>,
    #[serde(default)]
    delta: Option<StreamDelta>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Meter for Messages streams.
#[derive(Default)]
pub struct MessagesMeter {
    usage: Option<WireUsage>,
    saw_delta_usage: bool,
    text: String,
    model: Option<String>,
    /// The content block started and not yet stopped (a closing stops it).
    open_block: Option<u64>,
    /// The highest block index seen, and whether a text block was.
    max_block: Option<u64>,
    text_block: bool,
    finish_now: bool,
}

impl StreamMeter for MessagesMeter {
    fn on_event(&mut self, _event: Option<&str>, data: &[u8]) -> Verdict {
        let Ok(ev) = serde_json::from_slice::<StreamEvent>(data) else {
            return Verdict::Forward;
        };
        self.finish_now = ev.kind == "message_delta";
        match ev.kind.as_str() {
            "message_start" => {
                if let Some(m) = ev.message {
                    self.model = m.model.or(self.model.take());
                    if let Some(u) = m.usage {
                        self.usage.get_or_insert_with(WireUsage::default).merge(&u);
                    }
                }
            }
            "message_delta" => {
                if let Some(u) = ev.usage {
                    self.saw_delta_usage = true;
                    self.usage.get_or_insert_with(WireUsage::default).merge(&u);
                }
            }
            "content_block_start" => {
                self.open_block = ev.index;
                self.max_block = self.max_block.max(ev.index);
                self.text_block |= ev.content_block.is_some_and(|b| b.kind == "text");
            }
            "content_block_stop" => self.open_block = None,
            "content_block_delta" => {
                if let Some(d) = ev.delta {
                    for t in [d.text, d.thinking, d.partial_json].into_iter().flatten() {
                        self.text.push_str(&t);
                    }
                }
            }
            _ => {}
        }
        Verdict::Forward
    }

    fn usage(&self) -> Option<Usage> {
        // Only `message_delta` carries the final output count; a stream cut
        // after `message_start` has input usage but output still unknown.
        self.usage.as_ref().map(WireUsage::to_usage)
    }

    fn usage_is_final(&self) -> bool {
        self.saw_delta_usage
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
        self.saw_delta_usage
    }

    fn footer_events(&self, footer: &str, finish: &[u8]) -> Option<Vec<Closing>> {
        if !self.text_block {
            return None;
        }
        // A text block of its own, after the answer's last block.
        let k = self.max_block.map_or(0, |m| m + 1);
        let text = format!("\n\n{footer}");
        Some(vec![
            Closing {
                event: Some("content_block_start"),
                data: serde_json::json!({"type": "content_block_start", "index": k,
                    "content_block": {"type": "text", "text": ""}})
                .to_string(),
            },
            Closing {
                event: Some("content_block_delta"),
                data: serde_json::json!({"type": "content_block_delta", "index": k,
                    "delta": {"type": "text_delta", "text": text}})
                .to_string(),
            },
            Closing {
                event: Some("content_block_stop"),
                data: serde_json::json!({"type": "content_block_stop", "index": k}).to_string(),
            },
            Closing {
                event: Some("message_delta"),
                data: String::from_utf8_lossy(finish).into_owned(),
            },
        ])
    }

    fn closing(&self, usage: Option<&Usage>) -> Vec<Closing> {
        let mut out = Vec::new();
        if let Some(i) = self.open_block {
            out.push(Closing {
                event: Some("content_block_stop"),
                data: serde_json::json!({"type": "content_block_stop", "index": i}).to_string(),
            });
        }
        let output = usage.map_or(0, |u| u.output_tokens);
        out.push(Closing {
            event: Some("message_delta"),
            data: serde_json::json!({
                "type": "message_delta",
                "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
                "usage": {"output_tokens": output},
            })
            .to_string(),
        });
        out.push(Closing {
            event: Some("message_stop"),
            data: serde_json::json!({"type": "message_stop"}).to_string(),
        });
        out
    }
}
