//! Appending a usage footer to a whole (non-streamed) answer, as text in
//! the last text part of each choice or candidate, in each wire format.
//!
//! The rule: only answers that carry text get one — a choice that is only
//! tool calls, a JSON-mode request (whose output must parse as JSON), and
//! an embedding, count or error are left exactly as they are.

use serde_json::{Map, Value};

use crate::Endpoint;

/// Whether the request asked for JSON output (a footer would break it).
pub fn wants_json(endpoint: Endpoint, request: &Map<String, Value>) -> bool {
    fn kind(v: Option<&Value>) -> Option<&str> {
        v.and_then(|f| f.get("type")).and_then(Value::as_str)
    }
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Completions => matches!(
            kind(request.get("response_format")),
            Some("json_object" | "json_schema")
        ),
        Endpoint::Responses => matches!(
            kind(request.get("text").and_then(|t| t.get("format"))),
            Some("json_object" | "json_schema")
        ),
        Endpoint::GenerateContent | Endpoint::StreamGenerateContent => {
            let cfg = request
                .get("generationConfig")
                .or_else(|| request.get("generation_config"));
            cfg.is_some_and(|c| {
                c.get("responseMimeType")
                    .or_else(|| c.get("response_mime_type"))
                    .and_then(Value::as_str)
                    == Some("application/json")
                    || c.get("responseSchema").is_some()
                    || c.get("response_schema").is_some()
            })
        }
        _ => false,
    }
}

fn append(text: &mut Value, footer: &str) -> bool {
    match text {
        Value::String(s) if !s.is_empty() => {
            s.push_str("\n\n");
            s.push_str(footer);
            true
        }
        _ => false,
    }
}

/// The last element of `parts` with a `text` field for which `take`
/// holds, appended to.
fn append_last(parts: &mut [Value], footer: &str, take: impl Fn(&Value) -> bool) -> bool {
    parts
        .iter_mut()
        .rev()
        .find(|p| p.get("text").is_some() && take(p))
        .and_then(|p| p.get_mut("text"))
        .is_some_and(|t| append(t, footer))
}

/// Appends `footer` to `answer` (a whole response of `endpoint` to
/// `request`); whether anything was appended.
pub fn append_footer(
    endpoint: Endpoint,
    request: &Map<String, Value>,
    answer: &mut Value,
    footer: &str,
) -> bool {
    if wants_json(endpoint, request) {
        return false;
    }
    let mut any = false;
    match endpoint {
        Endpoint::ChatCompletions => {
            for c in answer
                .get_mut("choices")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(content) = c.get_mut("message").and_then(|m| m.get_mut("content")) {
                    any |= append(content, footer);
                }
            }
        }
        Endpoint::Responses => {
            let msg = answer
                .get_mut("output")
                .and_then(Value::as_array_mut)
                .and_then(|o| {
                    o.iter_mut()
                        .rev()
                        .find(|i| i.get("type").and_then(Value::as_str) == Some("message"))
                });
            if let Some(parts) = msg
                .and_then(|m| m.get_mut("content"))
                .and_then(Value::as_array_mut)
            {
                any = append_last(parts, footer, |p| {
                    p.get("type").and_then(Value::as_str) == Some("output_text")
                });
            }
        }
        Endpoint::Messages => {
            if let Some(parts) = answer.get_mut("content").and_then(Value::as_array_mut) {
                any = append_last(parts, footer, |p| {
                    p.get("type").and_then(Value::as_str) == Some("text")
                });
            }
        }
        Endpoint::GenerateContent => {
            for c in answer
                .get_mut("candidates")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(parts) = c
                    .get_mut("content")
                    .and_then(|c| c.get_mut("parts"))
                    .and_then(Value::as_array_mut)
                {
                    // Thought summaries are not the answer.
                    any |= append_last(parts, footer, |p| {
                        p.get("thought").and_then(Value::as_bool) != Some(true)
                    });
                }
            }
        }
        _ => {}
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn text_answers_get_the_footer_in_each_format() {
        let mut chat = json!({"choices": [{"message": {"role": "assistant", "content": "Hi."}},
                                          {"message": {"role": "assistant", "content": null, "tool_calls": []}}]});
        assert!(append_footer(
            Endpoint::ChatCompletions,
            &Map::new(),
            &mut chat,
            "F"
        ));
        assert_eq!(chat["choices"][0]["message"]["content"], "Hi.\n\nF");
        assert_eq!(chat["choices"][1]["message"]["content"], Value::Null);
        let mut resp = json!({"output": [{"type": "reasoning"}, {"type": "message",
            "content": [{"type": "output_text", "text": "A"}, {"type": "output_text", "text": "B"}]}]});
        assert!(append_footer(
            Endpoint::Responses,
            &Map::new(),
            &mut resp,
            "F"
        ));
        assert_eq!(resp["output"][1]["content"][1]["text"], "B\n\nF");
        let mut ant =
            json!({"content": [{"type": "text", "text": "T"}, {"type": "tool_use", "id": "x"}]});
        assert!(append_footer(
            Endpoint::Messages,
            &Map::new(),
            &mut ant,
            "F"
        ));
        assert_eq!(ant["content"][0]["text"], "T\n\nF");
        let mut gem = json!({"candidates": [{"content": {"parts": [{"text": "G"}, {"text": "th", "thought": true}]}}]});
        assert!(append_footer(
            Endpoint::GenerateContent,
            &Map::new(),
            &mut gem,
            "F"
        ));
        assert_eq!(
            gem["candidates"][0]["content"]["parts"][0]["text"],
            "G\n\nF"
        );
    }

    #[test]
    fn tool_only_and_json_mode_answers_are_left_alone() {
        let mut ant = json!({"content": [{"type": "tool_use", "id": "x"}]});
        assert!(!append_footer(
            Endpoint::Messages,
            &Map::new(),
            &mut ant,
            "F"
        ));
        let json_mode = req(json!({"response_format": {"type": "json_object"}}));
        let mut chat = json!({"choices": [{"message": {"content": "{}"}}]});
        assert!(!append_footer(
            Endpoint::ChatCompletions,
            &json_mode,
            &mut chat,
            "F"
        ));
        assert_eq!(chat["choices"][0]["message"]["content"], "{}");
        let gem_json = req(json!({"generationConfig": {"responseMimeType": "application/json"}}));
        let mut gem = json!({"candidates": [{"content": {"parts": [{"text": "{}"}]}}]});
        assert!(!append_footer(
            Endpoint::GenerateContent,
            &gem_json,
            &mut gem,
            "F"
        ));
    }
}
