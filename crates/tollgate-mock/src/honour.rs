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
}
