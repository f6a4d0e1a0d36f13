//! How the mock reads a request's output bounds: from the raw JSON, the way
//! the providers document each field, and where several could apply, the
//! most generous reading (an upstream that honours whichever field allows
//! more). Deliberately independent of `tollgate_providers::bounds`, so a
//! test that compares the mock's bill with Tollgate's reservation checks
//! Tollgate's reading against the providers', not against itself.

use serde_json::Value;
use tollgate_providers::Endpoint;

/// What the mock will generate: per-choice output limit and choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Honoured {
    pub limit: Option<u64>,
    pub choices: u64,
}

fn uint(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_u64)
}

/// Either spelling of a Gemini field (its JSON accepts camelCase and snake_case).
fn either<'a>(o: &'a Value, camel: &str, snake: &str) -> Vec<&'a Value> {
    [o.get(camel), o.get(snake)].into_iter().flatten().collect()
}

pub fn output(endpoint: Endpoint, body: &Value) -> Honoured {
    let max = |vals: Vec<Option<u64>>| vals.into_iter().flatten().max();
    match endpoint {
        Endpoint::ChatCompletions => Honoured {
            limit: max(vec![
                uint(body.get("max_tokens")),
                uint(body.get("max_completion_tokens")),
            ]),
            choices: uint(body.get("n")).unwrap_or(1).max(1),
        },
        Endpoint::Completions => Honoured {
            limit: uint(body.get("max_tokens")),
            choices: max(vec![uint(body.get("n")), uint(body.get("best_of"))])
                .unwrap_or(1)
                .max(1),
        },
        Endpoint::Responses => Honoured {
            limit: uint(body.get("max_output_tokens")),
            choices: 1,
        },
        Endpoint::Messages => Honoured {
            limit: uint(body.get("max_tokens")),
            choices: 1,
        },
        Endpoint::GenerateContent | Endpoint::StreamGenerateContent => {
            let configs = either(body, "generationConfig", "generation_config");
            let limit = max(configs
                .iter()
                .flat_map(|g| either(g, "maxOutputTokens", "max_output_tokens"))
                .map(|v| v.as_u64())
                .collect());
            let choices = max(configs
                .iter()
                .flat_map(|g| either(g, "candidateCount", "candidate_count"))
                .map(|v| v.as_u64())
                .collect());
            Honoured {
                limit,
                choices: choices.unwrap_or(1).max(1),
            }
        }
        Endpoint::Embeddings | Endpoint::CountTokens | Endpoint::GeminiCountTokens => Honoured {
            limit: Some(0),
            choices: 1,
        },
    }
}

/// The function tool the model calls, if it calls one: the one `tool_choice`
/// forces (`"required"` / Anthropic `any` take the first offered), else the
/// one the `x-mock-tool-call` knob names — only a function the request
/// offers, never under `tool_choice: "none"`, and not when the last turn is
/// already a tool result (the model then answers, so an agent loop ends).
/// Chat Completions and Messages only.
pub fn tool_call(endpoint: Endpoint, body: &Value, knob: Option<&str>) -> Option<String> {
    let tools = body.get("tools")?.as_array()?;
    let offered: Vec<&str> = match endpoint {
        Endpoint::ChatCompletions => tools
            .iter()
            .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
            .filter_map(|t| t.pointer("/function/name")?.as_str())
            .collect(),
        // Server tools (web search and the like) carry a `type`; the caller's
        // own tools do not, or say `custom`.
        Endpoint::Messages => tools
            .iter()
            .filter(|t| {
                t.get("type")
                    .and_then(Value::as_str)
                    .is_none_or(|k| k == "custom")
            })
            .filter_map(|t| t.get("name")?.as_str())
            .collect(),
        _ => return None,
    };
    let last = body.get("messages")?.as_array()?.last()?;
    let answered = match endpoint {
        Endpoint::ChatCompletions => last.get("role").and_then(Value::as_str) == Some("tool"),
        _ => last
            .get("content")
            .and_then(Value::as_array)
            .is_some_and(|parts| {
                parts
                    .iter()
                    .any(|p| p.get("type").and_then(Value::as_str) == Some("tool_result"))
            }),
    };
    if answered || offered.is_empty() {
        return None;
    }
    let choice = body.get("tool_choice");
    let forced = match (endpoint, choice) {
        (_, None) => None,
        (Endpoint::ChatCompletions, Some(Value::String(s))) => match s.as_str() {
            "none" => return None,
            "required" => Some(offered[0]),
            _ => None,
        },
        (Endpoint::ChatCompletions, Some(c)) => c.pointer("/function/name").and_then(Value::as_str),
        (_, Some(c)) => match c.get("type").and_then(Value::as_str) {
            Some("none") => return None,
            Some("any") => Some(offered[0]),
            Some("tool") => c.get("name").and_then(Value::as_str),
            _ => None,
        },
    };
    forced
        .or(knob)
        .filter(|name| offered.contains(name))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_most_generous_reading_wins() {
        let h = output(
            Endpoint::ChatCompletions,
            &json!({"max_tokens": 1, "max_completion_tokens": 500, "n": 3}),
        );
        assert_eq!(
            h,
            Honoured {
                limit: Some(500),
                choices: 3
            }
        );
        let h = output(
            Endpoint::GenerateContent,
            &json!({"generationConfig": {"maxOutputTokens": 5}, "generation_config": {"max_output_tokens": 50, "candidate_count": 2}}),
        );
        assert_eq!(
            h,
            Honoured {
                limit: Some(50),
                choices: 2
            }
        );
        let h = output(Endpoint::Completions, &json!({"n": 2, "best_of": 4}));
        assert_eq!(
            h,
            Honoured {
                limit: None,
                choices: 4
            }
        );
    }

    #[test]
    fn a_tool_is_called_when_forced_or_asked_for_and_never_twice_in_a_row() {
        let chat = |choice: Value, last_role: &str| {
            let mut b = json!({
                "tools": [{"type": "function", "function": {"name": "search"}},
                          {"type": "function", "function": {"name": "fetch"}}],
                "messages": [{"role": last_role, "content": "x"}],
            });
            if !choice.is_null() {
                b["tool_choice"] = choice;
            }
            b
        };
        let ep = Endpoint::ChatCompletions;
        assert_eq!(tool_call(ep, &chat(Value::Null, "user"), None), None);
        assert_eq!(
            tool_call(ep, &chat(json!("required"), "user"), None).as_deref(),
            Some("search")
        );
        let named = json!({"type": "function", "function": {"name": "fetch"}});
        assert_eq!(
            tool_call(ep, &chat(named, "user"), Some("search")).as_deref(),
            Some("fetch")
        );
        assert_eq!(
            tool_call(ep, &chat(Value::Null, "user"), Some("fetch")).as_deref(),
            Some("fetch")
        );
        assert_eq!(
            tool_call(ep, &chat(Value::Null, "user"), Some("other")),
            None
        );
        assert_eq!(
            tool_call(ep, &chat(json!("none"), "user"), Some("fetch")),
            None
        );
        assert_eq!(
            tool_call(ep, &chat(json!("required"), "tool"), Some("fetch")),
            None
        );
        let msgs = |last: Value| {
            json!({
                "tools": [{"type": "web_search_20250305", "name": "web_search"}, {"name": "lookup", "input_schema": {}}],
                "tool_choice": {"type": "any"},
                "messages": [last],
            })
        };
        let ep = Endpoint::Messages;
        assert_eq!(
            tool_call(ep, &msgs(json!({"role": "user", "content": "hi"})), None).as_deref(),
            Some("lookup")
        );
        let result = json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]});
        assert_eq!(tool_call(ep, &msgs(result), None), None);
    }
}
