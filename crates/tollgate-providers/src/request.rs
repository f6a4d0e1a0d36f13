//! Parsing the caller's request body, and rewriting it for the upstream.
//!
//! The body is parsed once into a JSON map (duplicate keys refused, see
//! [`crate::json`]); the gateway reads what it needs (model, stream flag,
//! output bounds, end user, input size) and the map is re-serialized only
//! when Tollgate must change it (model alias, an injected
//! `stream_options.include_usage`, an output limit it sets or caps).

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::Endpoint;
use crate::bounds::{self, ChatLimitField, OutputBounds};
use crate::error::{ErrorKind, NativeError};
use crate::input::{self, InputSize};

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
    #[error("{0}")]
    Invalid(String),
    #[error("contradictory request: {0}")]
    Contradictory(String),
    #[error("invalid model name {0:?} (a model id has letters, digits, '-', '.' and '_' only)")]
    BadModelName(String),
}

impl RequestError {
    pub fn to_native(&self) -> NativeError {
        let e = NativeError::new(400, ErrorKind::InvalidRequest, self.to_string());
        match self {
            RequestError::MissingModel | RequestError::BadModelName(_) => e.with_param("model"),
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
    /// The caller's output limit per choice, if it set one.
    pub max_output_tokens: Option<u64>,
    /// Completions generated and billed (`n`, `best_of`, `candidateCount`).
    pub choices: u64,
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
        Self::parse_with(endpoint, path_model, body, true)
    }

    /// Parses as a lenient upstream would: duplicate keys (the last wins)
    /// and contradictory output bounds (left unread: `max_output_tokens`
    /// `None`, one choice) are accepted. For the mock provider, which must
    /// serve whatever a gateway forwards, and read its bounds its own way.
    pub fn parse_lenient(
        endpoint: Endpoint,
        path_model: Option<&str>,
        body: Bytes,
    ) -> Result<ParsedRequest, RequestError> {
        Self::parse_with(endpoint, path_model, body, false)
    }

    fn parse_with(
        endpoint: Endpoint,
        path_model: Option<&str>,
        body: Bytes,
        strict: bool,
    ) -> Result<ParsedRequest, RequestError> {
        let value = if strict {
            crate::json::from_slice(&body)
        } else {
            serde_json::from_slice(&body)
        }
        .map_err(|e| RequestError::InvalidJson(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(RequestError::NotAnObject);
        };
        let model = match path_model {
            Some(m) => {
                let m = m.strip_prefix("models/").unwrap_or(m);
                if !is_model_id(m) {
                    return Err(RequestError::BadModelName(m.to_string()));
                }
                m.to_string()
            }
            None => match map.get("model") {
                Some(Value::String(s)) if !s.is_empty() => {
                    if !is_body_model_name(s) {
                        return Err(RequestError::BadModelName(s.clone()));
                    }
                    s.clone()
                }
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
            Endpoint::GenerateContent
            | Endpoint::CountTokens
            | Endpoint::GeminiCountTokens
            | Endpoint::Embeddings => false,
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
        // A background response is billed after this call returns, where no
        // meter sees it (it is fetched from a route Tollgate does not serve).
        if endpoint == Endpoint::Responses && map.get("background") == Some(&Value::Bool(true)) {
            return Err(RequestError::Invalid(
                "background responses are not supported through Tollgate: they are billed after the call returns, where it cannot meter them".into(),
            ));
        }
        let OutputBounds { limit, choices, .. } = match bounds::read(endpoint, &map) {
            Ok(b) => b,
            Err(e) if strict => return Err(e),
            Err(_) => OutputBounds::default(),
        };
        let max_output_tokens = match endpoint {
            Endpoint::Embeddings | Endpoint::CountTokens | Endpoint::GeminiCountTokens => None,
            _ => limit,
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
            choices,
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

    /// Tools in the request that the provider bills per use (see [`crate::tools`]).
    pub fn per_use_tools(&self) -> Vec<String> {
        crate::tools::per_use_tools(self.endpoint, &self.body)
    }

    /// The size of the body as received, in bytes.
    pub fn body_len(&self) -> usize {
        self.original.len()
    }

    /// The input's size as far as Tollgate can know it, for `model` (the
    /// model served: image token formulas are model-specific).
    pub fn input_size(&self, model: &str) -> InputSize {
        input::measure(self.endpoint, model, &self.body)
    }

    /// All prompt text (messages, system, instructions, input, tools), for
    /// token counting. Media and token ids are sized by [`Self::input_size`].
    pub fn prompt_text(&self) -> String {
        self.input_size(&self.model).text
    }

    /// The body to send upstream: the model renamed to `upstream_model`
    /// where the format carries it in the body, `include_usage` injected for
    /// OpenAI streams, and the output limit `max_output` (per choice) written
    /// to every limit field the upstream reads (`chat`: which ones an
    /// OpenAI-compatible chat upstream reads).
    pub fn upstream_body(
        &self,
        upstream_model: &str,
        max_output: Option<u64>,
        chat: ChatLimitField,
    ) -> UpstreamBody {
        self.upstream_body_with(upstream_model, max_output, chat, None)
    }

    /// [`Self::upstream_body`], with `hint` prepended to the system prompt
    /// where the format has one ([`crate::hint`]).
    pub fn upstream_body_with(
        &self,
        upstream_model: &str,
        max_output: Option<u64>,
        chat: ChatLimitField,
        hint: Option<&str>,
    ) -> UpstreamBody {
        let hint = hint.filter(|_| crate::hint::takes_hint(self.endpoint));
        let in_body_model = self.endpoint.format() != crate::WireFormat::Gemini;
        let rename = in_body_model && upstream_model != self.model;
        let inject_usage = self.stream
            && matches!(
                self.endpoint,
                Endpoint::ChatCompletions | Endpoint::Completions
            )
            && !self.client_wants_usage_chunk;
        let set_max = max_output
            .filter(|_| {
                !matches!(
                    self.endpoint,
                    Endpoint::Embeddings | Endpoint::CountTokens | Endpoint::GeminiCountTokens
                )
            })
            .filter(|&m| !bounds::limit_is(self.endpoint, &self.body, chat, m));
        if !rename && !inject_usage && set_max.is_none() && hint.is_none() {
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
        if let Some(max) = set_max {
            bounds::set_limit(self.endpoint, &mut map, chat, max);
        }
        if let Some(h) = hint {
            crate::hint::prepend_system(self.endpoint, &mut map, h);
        }
        UpstreamBody {
            body: Bytes::from(serde_json::to_vec(&Value::Object(map)).unwrap_or_default()),
            drop_usage_chunk: inject_usage,
        }
    }
}

/// A model id as it may appear in a URL path (Gemini): letters, digits,
/// `-`, `.` and `_`, at most 128 bytes, and not `.` or `..`. Nothing that
/// could end, escape or extend the path segment it is put in.
pub fn is_model_id(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= 128
        && m != "."
        && m != ".."
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// A model name in a JSON body (OpenAI-compatible servers use names like
/// `meta-llama/Llama-3.1-8B` or `llama3:8b`): printable ASCII without spaces,
/// at most 256 bytes.
pub fn is_body_model_name(m: &str) -> bool {
    !m.is_empty() && m.len() <= 256 && m.bytes().all(|b| b.is_ascii_graphic())
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
        let up = r.upstream_body("gpt-4o", None, ChatLimitField::default());
        assert!(up.drop_usage_chunk);
        let v: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn body_is_forwarded_untouched_when_nothing_changes() {
        let body = r#"{"model": "gpt-4o",  "messages": []}"#;
        let r = parse(Endpoint::ChatCompletions, body).unwrap();
        let chat = ChatLimitField::default();
        assert_eq!(r.upstream_body("gpt-4o", None, chat).body, body.as_bytes());
        let renamed = r.upstream_body("gpt-4o-2024-08-06", Some(10), chat).body;
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
            Err(RequestError::Invalid(m)) if m.contains("\"max_tokens\" must be an integer of at least 1")
        ));
        assert!(matches!(
            parse(Endpoint::ChatCompletions, r#"{"model":"m","stream":"yes"}"#),
            Err(RequestError::BadField {
                field: "stream",
                ..
            })
        ));
        assert!(matches!(
            parse(Endpoint::ChatCompletions, r#"{"model":"m","model":"n"}"#),
            Err(RequestError::InvalidJson(_))
        ));
        assert!(matches!(
            parse(Endpoint::ChatCompletions, "{\"model\":\"gpt 4o\\n\"}"),
            Err(RequestError::BadModelName(_))
        ));
    }

    #[test]
    fn regression_dual_limit_fields_are_sized_and_sent_as_one() {
        // max_completion_tokens: 1000000 next to max_tokens: 1 was sized on one
        // and honoured on the other; now it is refused, and a single field is
        // always sent in exactly the field(s) the upstream reads.
        assert!(matches!(
            parse(
                Endpoint::ChatCompletions,
                r#"{"model":"m","max_completion_tokens":1000000,"max_tokens":1}"#
            ),
            Err(RequestError::Contradictory(_))
        ));
        let r = parse(
            Endpoint::ChatCompletions,
            r#"{"model":"m","max_tokens":50}"#,
        )
        .unwrap();
        let up = r.upstream_body("m", Some(50), ChatLimitField::MaxCompletionTokens);
        let v: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model": "m", "max_completion_tokens": 50})
        );
        let up = r.upstream_body("m", Some(20), ChatLimitField::Both);
        let v: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(v["max_tokens"], 20);
        assert_eq!(v["max_completion_tokens"], 20);
    }

    #[test]
    fn background_responses_are_refused() {
        assert!(matches!(
            parse(Endpoint::Responses, r#"{"model":"m","input":"hi","background":true}"#),
            Err(RequestError::Invalid(m)) if m.contains("background")
        ));
        assert!(
            parse(
                Endpoint::Responses,
                r#"{"model":"m","input":"hi","background":false}"#
            )
            .is_ok()
        );
    }

    #[test]
    fn regression_n_is_a_multiplier() {
        let r = parse(Endpoint::ChatCompletions, r#"{"model":"m","n":128}"#).unwrap();
        assert_eq!(r.choices, 128);
        let r = parse(Endpoint::Completions, r#"{"model":"m","best_of":5,"n":2}"#).unwrap();
        assert_eq!(r.choices, 5);
        let g = ParsedRequest::parse(
            Endpoint::GenerateContent,
            Some("gemini-2.5-pro"),
            Bytes::from_static(br#"{"generationConfig":{"candidateCount":4}}"#),
        )
        .unwrap();
        assert_eq!(g.choices, 4);
    }

    #[test]
    fn regression_gemini_path_model_is_exact() {
        for bad in [
            "gemini-2.5-pro:generateContent#/gemini-2.5-flash-lite",
            "../tunedModels/x",
            "gemini-2.5-pro/../../upload/v1beta/files",
            "..",
            "gemini%2F",
            "",
        ] {
            let r = ParsedRequest::parse(
                Endpoint::GenerateContent,
                Some(bad),
                Bytes::from_static(b"{}"),
            );
            assert!(
                matches!(r, Err(RequestError::BadModelName(_))),
                "{bad:?}: {r:?}"
            );
        }
        // The `models/` prefix is handled once: a second one is refused.
        assert!(
            ParsedRequest::parse(
                Endpoint::GenerateContent,
                Some("models/models/gemini-2.5-pro"),
                Bytes::from_static(b"{}"),
            )
            .is_err()
        );
    }
}
