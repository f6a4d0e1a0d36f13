//! Prepending a budget hint to a request's system prompt, in each wire
//! format's own place for it: OpenAI chat (a leading system or developer
//! message, or a new system message), Responses (`instructions`),
//! Anthropic (`system` as a string or as blocks), Gemini
//! (`systemInstruction.parts`). A malformed place is left alone: the hint
//! is advice, never a reason to change what the caller sent beyond it.

use serde_json::{Map, Value, json};

use crate::Endpoint;

/// Whether `endpoint` has a system prompt to hint in.
pub fn takes_hint(endpoint: Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::ChatCompletions
            | Endpoint::Responses
            | Endpoint::Messages
            | Endpoint::GenerateContent
            | Endpoint::StreamGenerateContent
    )
}

fn prepend_text(existing: &str, hint: &str) -> String {
    if existing.is_empty() {
        hint.to_string()
    } else {
        format!("{hint}\n\n{existing}")
    }
}

/// Prepends `hint` to the system prompt of `body` (a request of `endpoint`).
/// Returns whether it was placed.
pub fn prepend_system(endpoint: Endpoint, body: &mut Map<String, Value>, hint: &str) -> bool {
    match endpoint {
        Endpoint::ChatCompletions => {
            let Some(Value::Array(messages)) = body.get_mut("messages") else {
                return false;
            };
            if let Some(Value::Object(first)) = messages.first_mut()
                && matches!(
                    first.get("role").and_then(Value::as_str),
                    Some("system" | "developer")
                )
            {
                match first.get_mut("content") {
                    Some(Value::String(s)) => {
                        *s = prepend_text(s, hint);
                        return true;
                    }
                    Some(Value::Array(parts)) => {
                        parts.insert(0, json!({"type": "text", "text": hint}));
                        return true;
                    }
                    _ => {}
                }
            }
            messages.insert(0, json!({"role": "system", "content": hint}));
            true
        }
        Endpoint::Responses => match body.get_mut("instructions") {
            Some(Value::String(s)) => {
                *s = prepend_text(s, hint);
                true
            }
            None | Some(Value::Null) => {
                body.insert("instructions".into(), Value::String(hint.into()));
                true
            }
            Some(_) => false,
        },
        Endpoint::Messages => match body.get_mut("system") {
            Some(Value::String(s)) => {
                *s = prepend_text(s, hint);
                true
            }
            Some(Value::Array(blocks)) => {
                blocks.insert(0, json!({"type": "text", "text": hint}));
                true
            }
            None | Some(Value::Null) => {
                body.insert("system".into(), Value::String(hint.into()));
                true
            }
            Some(_) => false,
        },
        Endpoint::GenerateContent | Endpoint::StreamGenerateContent => {
            // Gemini accepts both spellings; the hint goes where the caller
            // already put one.
            let key = if body.contains_key("system_instruction") {
                "system_instruction"
            } else {
                "systemInstruction"
            };
            match body.get_mut(key) {
                Some(Value::Object(si)) => match si.get_mut("parts") {
                    Some(Value::Array(parts)) => {
                        parts.insert(0, json!({"text": hint}));
                        true
                    }
                    None => {
                        si.insert("parts".into(), json!([{"text": hint}]));
                        true
                    }
                    Some(_) => false,
                },
                None | Some(Value::Null) => {
                    body.insert(key.into(), json!({"parts": [{"text": hint}]}));
                    true
                }
                Some(_) => false,
            }
        }
        _ => false,
    }
}

/// The system prompt of `body` as its provider reads it (text parts
/// joined by blank lines), if it has one.
pub fn system_text(endpoint: Endpoint, body: &Map<String, Value>) -> Option<String> {
    fn texts(v: &Value, key: &str) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Array(parts) => Some(
                parts
                    .iter()
                    .filter_map(|p| p.get(key).and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n\n"),
            ),
            _ => None,
        }
    }
    match endpoint {
        Endpoint::ChatCompletions => {
            let first = body.get("messages")?.as_array()?.first()?;
            matches!(first.get("role")?.as_str()?, "system" | "developer")
                .then(|| texts(first.get("content")?, "text"))
                .flatten()
        }
        Endpoint::Responses => body.get("instructions")?.as_str().map(str::to_string),
        Endpoint::Messages => texts(body.get("system")?, "text"),
        Endpoint::GenerateContent | Endpoint::StreamGenerateContent => {
            let si = body
                .get("systemInstruction")
                .or_else(|| body.get("system_instruction"))?;
            texts(si.get("parts")?, "text")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hinted(ep: Endpoint, body: Value) -> Value {
        let Value::Object(mut m) = body else { panic!() };
        assert!(prepend_system(ep, &mut m, "HINT"));
        Value::Object(m)
    }

    #[test]
    fn every_format_gets_the_hint_first_in_its_system_prompt() {
        let chat = hinted(
            Endpoint::ChatCompletions,
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_eq!(
            chat["messages"][0],
            json!({"role": "system", "content": "HINT"})
        );
        let chat = hinted(
            Endpoint::ChatCompletions,
            json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}),
        );
        assert_eq!(chat["messages"][0]["content"], "HINT\n\nBe brief.");
        assert_eq!(chat["messages"].as_array().unwrap().len(), 2);
        let resp = hinted(Endpoint::Responses, json!({"input": "hi"}));
        assert_eq!(resp["instructions"], "HINT");
        let ant = hinted(
            Endpoint::Messages,
            json!({"system": [{"type": "text", "text": "S"}]}),
        );
        assert_eq!(ant["system"][0]["text"], "HINT");
        assert_eq!(ant["system"][1]["text"], "S");
        let ant = hinted(Endpoint::Messages, json!({"system": "S"}));
        assert_eq!(ant["system"], "HINT\n\nS");
        let gem = hinted(Endpoint::GenerateContent, json!({"contents": []}));
        assert_eq!(gem["systemInstruction"]["parts"][0]["text"], "HINT");
        let gem = hinted(
            Endpoint::StreamGenerateContent,
            json!({"system_instruction": {"parts": [{"text": "S"}]}}),
        );
        assert_eq!(gem["system_instruction"]["parts"][0]["text"], "HINT");
        assert!(gem.get("systemInstruction").is_none());
    }

    #[test]
    fn a_malformed_place_is_left_alone() {
        let mut m = Map::new();
        m.insert("system".into(), json!(42));
        assert!(!prepend_system(Endpoint::Messages, &mut m, "HINT"));
        assert_eq!(m["system"], json!(42));
    }
}
