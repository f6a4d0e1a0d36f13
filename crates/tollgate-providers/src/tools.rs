//! Tools a provider bills per use, on top of tokens: OpenAI's hosted web
//! search, file search, code interpreter and image generation, Anthropic's
//! web search and code execution, Gemini's Google Search and Maps
//! grounding. Tollgate prices tokens only, so a request that turns one on
//! could spend what no budget sees; the gateway refuses it unless the
//! provider's `allow_tools` lists it.

use serde_json::{Map, Value};

use crate::Endpoint;

/// OpenAI Responses tool types billed per call.
const OPENAI_PER_USE: &[&str] = &[
    "web_search",
    "web_search_preview",
    "file_search",
    "code_interpreter",
    "image_generation",
];

/// The per-use tools `body` turns on, by the name the provider gives them
/// (a tool `type`, or Gemini's tool key).
pub fn per_use_tools(endpoint: Endpoint, body: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    let tools = body.get("tools").and_then(Value::as_array);
    match endpoint {
        Endpoint::ChatCompletions => {
            // Search models bill each call that carries search options.
            if body.get("web_search_options").is_some_and(|v| !v.is_null()) {
                out.push("web_search_options".to_string());
            }
        }
        Endpoint::Responses => {
            for t in tools.into_iter().flatten() {
                if let Some(kind) = t.get("type").and_then(Value::as_str)
                    && OPENAI_PER_USE
                        .iter()
                        .any(|p| kind == *p || kind.starts_with(&format!("{p}_")))
                {
                    out.push(kind.to_string());
                }
            }
        }
        Endpoint::Messages => {
            for t in tools.into_iter().flatten() {
                if let Some(kind) = t.get("type").and_then(Value::as_str)
                    && (kind.starts_with("web_search_") || kind.starts_with("code_execution_"))
                {
                    out.push(kind.to_string());
                }
            }
        }
        Endpoint::GenerateContent | Endpoint::StreamGenerateContent => {
            for t in tools.into_iter().flatten() {
                let Some(o) = t.as_object() else { continue };
                for k in o.keys() {
                    if matches!(
                        k.as_str(),
                        "googleSearch"
                            | "google_search"
                            | "googleSearchRetrieval"
                            | "google_search_retrieval"
                            | "googleMaps"
                            | "google_maps"
                    ) {
                        out.push(k.clone());
                    }
                }
            }
        }
        Endpoint::Completions
        | Endpoint::Embeddings
        | Endpoint::CountTokens
        | Endpoint::GeminiCountTokens => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tools(ep: Endpoint, v: Value) -> Vec<String> {
        match v {
            Value::Object(m) => per_use_tools(ep, &m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn per_use_tools_are_found_in_every_format() {
        assert_eq!(
            tools(
                Endpoint::Responses,
                json!({"tools": [{"type": "function", "name": "f"}, {"type": "web_search_preview"}, {"type": "file_search"}]})
            ),
            vec!["web_search_preview", "file_search"]
        );
        assert_eq!(
            tools(Endpoint::ChatCompletions, json!({"web_search_options": {}})),
            vec!["web_search_options"]
        );
        assert_eq!(
            tools(
                Endpoint::Messages,
                json!({"tools": [{"name": "f", "input_schema": {}}, {"type": "web_search_20250305", "name": "web_search"}]})
            ),
            vec!["web_search_20250305"]
        );
        assert_eq!(
            tools(
                Endpoint::GenerateContent,
                json!({"tools": [{"functionDeclarations": []}, {"google_search": {}}]})
            ),
            vec!["google_search"]
        );
        assert!(
            tools(
                Endpoint::Responses,
                json!({"tools": [{"type": "function"}]})
            )
            .is_empty()
        );
    }
}
