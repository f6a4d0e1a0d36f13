//! Parsing the caller's request body, and rewriting it for the upstream.
//!
//! The body is parsed once into a JSON map; the gateway reads what it needs
//! (model, stream flag, output limit, end user, prompt text) and the map is
//! re-serialized only when Tollgate must change it (model alias, an injected
//! `stream_options.include_usage`, a capped output limit).

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::Endpoint;
use crate::error::{ErrorKind, NativeError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("missing required field \"model\"")]
    MissingModel,
    #[error("field \"{field}\" must be {expected}")]
    BadField {
        field: &'static str,
        expected: &'static str,
    },
}

impl RequestError {
    pub fn to_native(&self) -> NativeError {
        let e = NativeError::new(400, ErrorKind::InvalidRequest, self.to_string());
        match self {
            RequestError::MissingModel => e.with_param("model"),
            RequestError::BadField { field, .. } => e.with_param(*field),
            _ => e,
        }
    }
}

/// A caller's request, understood.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    pub endpoint: Endpoint,
    /// The model the caller named (before aliasing).
    pub model: String,
    pub stream: bool,
    /// The caller's output limit, if it set one.
    pub max_output_tokens: Option<u64>,
    /// OpenAI's `user` field or Anthropic's `metadata.user_id`.
    pub end_user: Option<String>,
    /// The caller itself asked for a usage chunk in an OpenAI stream.
    pub client_wants_usage_chunk: bool,
    body: Map<String, Value>,
    /// Unchanged original bytes, forwarded as-is when nothing is rewritten.
    original: Bytes,
}

/// The upstream request body and how to read its stream.
#[derive(Debug, Clone)]
pub struct UpstreamBody {
    pub body: Bytes,
    /// Tollgate injected `include_usage`: drop the usage-only chunk.
    pub drop_usage_chunk: bool,
}

impl ParsedRequest {
    /// Parses `body` for `endpoint`. Gemini carries the model in the path
    /// (`path_model`) and streaming in the method name.
    pub fn parse(
        endpoint: Endpoint,
        path_model: Option<&str>,
        body: Bytes,
    ) -> Result<ParsedRequest, RequestError> {
        let value: Value =
            serde_json::from_slice(&body).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(RequestError::NotAnObject);
        };
        let model = match path_model {
            Some(m) => m.strip_prefix("models/").unwrap_or(m).to_string(),
            None => match map.get("model") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::String(_)) | None | Some(Value::Null) => {
                    return Err(RequestError::MissingModel);
                }
                Some(_) => {
                    return Err(RequestError::BadField {
                        field: "model",
                        expected: "a string",
                    });
                }
            },
        };
        let stream = match endpoint {
            Endpoint::StreamGenerateContent => true,
            Endpoint::GenerateContent | Endpoint::CountTokens | Endpoint::Embeddings => false,
            _ => match map.get("stream") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(RequestError::BadField {
                        field: "stream",
                        expected: "a boolean",
                    });
                }
            },
        };
        let max_output_tokens = match endpoint {
            Endpoint::ChatCompletions => {
                uint_field(&map, "max_completion_tokens")?.or(uint_field(&map, "max_tokens")?)
            }
            Endpoint::Completions | Endpoint::Messages => uint_field(&map, "max_tokens")?,
            Endpoint::Responses => uint_field(&map, "max_output_tokens")?,
            Endpoint::GenerateContent | Endpoint::StreamGenerateContent => {
                match map.get("generationConfig") {
                    Some(Value::Object(g)) => uint_field(g, "maxOutputTokens")?,
                    None | Some(Value::Null) => None,
                    Some(_) => {
                        return Err(RequestError::BadField {
                            field: "generationConfig",
                            expected: "an object",
                        });
                    }
                }
            }
            Endpoint::Embeddings | Endpoint::CountTokens => None,
        };
        let end_user = match endpoint.format() {
            crate::WireFormat::OpenAi => map.get("user").and_then(Value::as_str),
            crate::WireFormat::Anthropic => map
                .get("metadata")
                .and_then(|m| m.get("user_id"))
                .and_then(Value::as_str),
            crate::WireFormat::Gemini => None,
        }
        .map(str::to_string);
        let client_wants_usage_chunk = map
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(ParsedRequest {
            endpoint,
            model,
            stream,
            max_output_tokens,
            end_user,
            client_wants_usage_chunk,
            body: map,
            original: body,
        })
    }

    /// The JSON body as parsed.
    pub fn body(&self) -> &Map<String, Value> {
        &self.body
    }

    /// All prompt text (messages, system, instructions, input), for token
    /// counting. Non-text parts (images, audio) are not included.
    pub fn prompt_text(&self) -> String {
        let mut out = String::new();
        for key in [
            "messages",
            "system",
            "instructions",
            "input",
            "prompt",
            "contents",
            "systemInstruction",
            "tools",
        ] {
            if let Some(v) = self.body.get(key) {
                collect_text(v, &mut out);
            }
        }
        out
    }

    /// The body to send upstream: the model renamed to `upstream_model`
    /// where the format carries it in the body, `include_usage` injected for
    /// OpenAI streams, and `max_output` set if given.
    pub fn upstream_body(&self, upstream_model: &str, max_output: Option<u64>) -> UpstreamBody {
        let in_body_model = self.endpoint.format() != crate::WireFormat::Gemini;
        let rename = in_body_model && upstream_model != self.model;
        let inject_usage = self.stream
            && matches!(
                self.endpoint,
                Endpoint::ChatCompletions | Endpoint::Completions
            )
            && !self.client_wants_usage_chunk;
        let set_max = max_output.is_some() && max_output != self.max_output_tokens;
        if !rename && !inject_usage && !set_max {
            return UpstreamBody {
                body: self.original.clone(),
                drop_usage_chunk: false,
            };
        }
        let mut map = self.body.clone();
        if rename {
            map.insert("model".into(), Value::String(upstream_model.to_string()));
        }
        if inject_usage {
            let opts = map
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if !opts.is_object() {
                *opts = Value::Object(Map::new());
            }
            if let Value::Object(o) = opts {
                o.insert("include_usage".into(), Value::Bool(true));
            }
        }
        if let Some(max) = max_output.filter(|_| set_max) {
            self.set_max_output(&mut map, max);
        }
        UpstreamBody {
            body: Bytes::from(serde_json::to_vec(&Value::Object(map)).unwrap_or_default()),
            drop_usage_chunk: inject_usage,
        }
    }

    fn set_max_output(&self, map: &mut Map<String, Value>, max: u64) {
        match self.endpoint {
            Endpoint::ChatCompletions => {
                // Keep whichever name the caller used; newer models reject
                // `max_tokens`.
                let key = if map.contains_key("max_tokens") {
                    "max_tokens"
                } else {
                    "max_completion_tokens"
                };
                map.insert(key.into(), max.into());
            }
            Endpoint::Completions | Endpoint::Messages => {
                map.insert("max_tokens".into(), max.into());
            }
            Endpoint::Responses => {
                map.insert("max_output_tokens".into(), max.into());
            }
            Endpoint::GenerateContent | Endpoint::StreamGenerateContent => {
                let g = map
                    .entry("generationConfig")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(g) = g {
                    g.insert("maxOutputTokens".into(), max.into());
                }
            }
            Endpoint::Embeddings | Endpoint::CountTokens => {}
        }
    }
}

fn uint_field(map: &Map<String, Value>, field: &'static str) -> Result<Option<u64>, RequestError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(RequestError::BadField {
            field,
            expected: "a non-negative integer",
        }),
    }
}

/// Appends every string under `v` that is prompt text: plain strings,
/// and `text` / `content` / `description` fields of objects.
fn collect_text(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(a) => a.iter().for_each(|x| collect_text(x, out)),
        Value::Object(o) => {
            for (k, x) in o {
                match k.as_str() {
                    "text" | "content" | "parts" | "input" | "description" | "arguments"
                    | "parameters" | "function" | "name" => collect_text(x, out),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(ep: Endpoint, body: &str) -> Result<ParsedRequest, RequestError> {
        ParsedRequest::parse(ep, None, Bytes::from(body.to_string()))
    }

    #[test]
    fn openai_chat_fields() {
        let r = parse(
            Endpoint::ChatCompletions,
            r#"{"model":"gpt-4o","stream":true,"max_tokens":50,"user":"u1","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert_eq!(r.model, "gpt-4o");
        assert!(r.stream);
        assert_eq!(r.max_output_tokens, Some(50));
        assert_eq!(r.end_user.as_deref(), Some("u1"));
        assert_eq!(r.prompt_text(), "hi\n");
        let up = r.upstream_body("gpt-4o", None);
        assert!(up.drop_usage_chunk);
        let v: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn body_is_forwarded_untouched_when_nothing_changes() {
        let body = r#"{"model": "gpt-4o",  "messages": []}"#;
        let r = parse(Endpoint::ChatCompletions, body).unwrap();
        assert_eq!(r.upstream_body("gpt-4o", None).body, body.as_bytes());
        let renamed = r.upstream_body("gpt-4o-2024-08-06", Some(10)).body;
        let v: Value = serde_json::from_slice(&renamed).unwrap();
        assert_eq!(v["model"], "gpt-4o-2024-08-06");
        assert_eq!(v["max_completion_tokens"], 10);
    }

    #[test]
    fn anthropic_user_and_gemini_path_model() {
        let r = parse(
            Endpoint::Messages,
            r#"{"model":"claude-sonnet-4-5","max_tokens":100,"metadata":{"user_id":"bob"},"system":"be brief","messages":[{"role":"user","content":[{"type":"text","text":"hello"}]}]}"#,
        )
        .unwrap();
        assert_eq!(r.end_user.as_deref(), Some("bob"));
        assert_eq!(r.prompt_text(), "hello\nbe brief\n");
        let g = ParsedRequest::parse(
            Endpoint::StreamGenerateContent,
            Some("models/gemini-2.5-pro"),
            Bytes::from_static(br#"{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":7}}"#),
        )
        .unwrap();
        assert_eq!(g.model, "gemini-2.5-pro");
        assert!(g.stream);
        assert_eq!(g.max_output_tokens, Some(7));
    }

    #[test]
    fn bad_bodies_are_clear_errors() {
        assert!(matches!(
            parse(Endpoint::ChatCompletions, "{not json"),
            Err(RequestError::InvalidJson(_))
        ));
        assert_eq!(
            parse(Endpoint::ChatCompletions, "[1]").unwrap_err(),
            RequestError::NotAnObject
        );
        assert_eq!(
            parse(Endpoint::ChatCompletions, r#"{"messages":[]}"#).unwrap_err(),
            RequestError::MissingModel
        );
        assert!(matches!(
            parse(
                Endpoint::ChatCompletions,
                r#"{"model":"m","max_tokens":-1}"#
            ),
            Err(RequestError::BadField {
                field: "max_tokens",
                ..
            })
        ));
        assert!(matches!(
            parse(Endpoint::ChatCompletions, r#"{"model":"m","stream":"yes"}"#),
            Err(RequestError::BadField {
                field: "stream",
                ..
            })
        ));
    }
}
