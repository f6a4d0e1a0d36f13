//! Every request field that limits or multiplies what a provider produces
//! and bills, per wire format, in one table ([`OUTPUT_FIELDS`]).
//!
//! The reservation covers `limit × choices` output tokens (reasoning and
//! thinking tokens are billed as output and count against the same limit
//! at every provider). When Tollgate sets or caps the limit, it writes it to
//! every limit field the upstream could honour, consistently; the caller's
//! contradictory or unbounded combinations are refused, never guessed.

use serde_json::{Map, Value};

use crate::Endpoint;
use crate::request::RequestError;

/// What a field does to the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Output tokens per choice (reasoning included).
    Limit,
    /// How many completions are generated and billed.
    Choices,
    /// Reasoning tokens, within the limit.
    Thinking,
}

/// One field: where it is in the body (each segment with its accepted
/// spellings: Gemini's JSON accepts camelCase and snake_case alike), what
/// it does, and the values accepted.
#[derive(Debug)]
pub struct OutputField {
    pub endpoints: &'static [Endpoint],
    pub path: &'static [&'static [&'static str]],
    pub role: Role,
    pub min: i64,
    pub max: i64,
}

const CHAT: &[Endpoint] = &[Endpoint::ChatCompletions];
const COMPLETIONS: &[Endpoint] = &[Endpoint::Completions];
const CHAT_AND_COMPLETIONS: &[Endpoint] = &[Endpoint::ChatCompletions, Endpoint::Completions];
const RESPONSES: &[Endpoint] = &[Endpoint::Responses];
const MESSAGES: &[Endpoint] = &[Endpoint::Messages];
const GEMINI: &[Endpoint] = &[Endpoint::GenerateContent, Endpoint::StreamGenerateContent];

const GEN_CONFIG: &[&str] = &["generationConfig", "generation_config"];

/// A limit of 0 is refused: some OpenAI-compatible servers read it as "no limit".
const LIMIT_MAX: i64 = i64::MAX;

pub const OUTPUT_FIELDS: &[OutputField] = &[
    // OpenAI chat: both names are honoured (vLLM prefers the newer one,
    // older servers read only `max_tokens`); `n` choices, each billed.
    OutputField {
        endpoints: CHAT,
        path: &[&["max_completion_tokens"]],
        role: Role::Limit,
        min: 1,
        max: LIMIT_MAX,
    },
    OutputField {
        endpoints: CHAT_AND_COMPLETIONS,
        path: &[&["max_tokens"]],
        role: Role::Limit,
        min: 1,
        max: LIMIT_MAX,
    },
    OutputField {
        endpoints: CHAT_AND_COMPLETIONS,
        path: &[&["n"]],
        role: Role::Choices,
        min: 1,
        max: 128,
    },
    // Completions: `best_of` candidates are generated (and billed) server-side.
    OutputField {
        endpoints: COMPLETIONS,
        path: &[&["best_of"]],
        role: Role::Choices,
        min: 1,
        max: 20,
    },
    OutputField {
        endpoints: RESPONSES,
        path: &[&["max_output_tokens"]],
        role: Role::Limit,
        min: 1,
        max: LIMIT_MAX,
    },
    OutputField {
        endpoints: MESSAGES,
        path: &[&["max_tokens"]],
        role: Role::Limit,
        min: 1,
        max: LIMIT_MAX,
    },
    OutputField {
        endpoints: MESSAGES,
        path: &[&["thinking"], &["budget_tokens"]],
        role: Role::Thinking,
        min: 0,
        max: LIMIT_MAX,
    },
    OutputField {
        endpoints: GEMINI,
        path: &[GEN_CONFIG, &["maxOutputTokens", "max_output_tokens"]],
        role: Role::Limit,
        min: 1,
        max: LIMIT_MAX,
    },
    OutputField {
        endpoints: GEMINI,
        path: &[GEN_CONFIG, &["candidateCount", "candidate_count"]],
        role: Role::Choices,
        min: 1,
        max: 8,
    },
    // -1: dynamic thinking (still within maxOutputTokens).
    OutputField {
        endpoints: GEMINI,
        path: &[
            GEN_CONFIG,
            &["thinkingConfig", "thinking_config"],
            &["thinkingBudget", "thinking_budget"],
        ],
        role: Role::Thinking,
        min: -1,
        max: LIMIT_MAX,
    },
];

/// Which field(s) an OpenAI-compatible upstream reads the chat output limit
/// from (`providers[].chat_limit_field`). Tollgate always sends the limit in
/// exactly these and removes the other, so no upstream reads a limit that
/// Tollgate did not size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChatLimitField {
    /// OpenAI's current field; vLLM and most compatible servers read it.
    #[default]
    MaxCompletionTokens,
    /// Older servers (and Mistral) read only this one.
    MaxTokens,
    /// Both, with the same value.
    Both,
}

impl ChatLimitField {
    pub fn parse(s: &str) -> Option<ChatLimitField> {
        match s {
            "max_completion_tokens" => Some(ChatLimitField::MaxCompletionTokens),
            "max_tokens" => Some(ChatLimitField::MaxTokens),
            "both" => Some(ChatLimitField::Both),
            _ => None,
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            ChatLimitField::MaxCompletionTokens => &["max_completion_tokens"],
            ChatLimitField::MaxTokens => &["max_tokens"],
            ChatLimitField::Both => &["max_completion_tokens", "max_tokens"],
        }
    }
}

/// A request's output bounds, read from every field of [`OUTPUT_FIELDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputBounds {
    /// Output tokens per choice, if the caller set a limit.
    pub limit: Option<u64>,
    /// Completions generated and billed (at least 1).
    pub choices: u64,
    /// The caller's thinking budget (`None`: not set, or dynamic).
    pub thinking: Option<u64>,
}

impl Default for OutputBounds {
    fn default() -> Self {
        OutputBounds {
            limit: None,
            choices: 1,
            thinking: None,
        }
    }
}

fn fields(endpoint: Endpoint) -> impl Iterator<Item = &'static OutputField> {
    OUTPUT_FIELDS
        .iter()
        .filter(move |f| f.endpoints.contains(&endpoint))
}

/// The dotted name of a field as the caller spelled it (for messages).
fn dotted(spelled: &[&str]) -> String {
    spelled.join(".")
}

/// Finds the value at `path`, refusing two spellings of one segment in the
/// same object and non-objects on the way.
fn lookup<'a>(
    body: &'a Map<String, Value>,
    path: &[&'static [&'static str]],
) -> Result<Option<(&'a Value, Vec<&'static str>)>, RequestError> {
    let mut map = body;
    let mut spelled = Vec::with_capacity(path.len());
    for (i, names) in path.iter().enumerate() {
        let mut found = None;
        for name in *names {
            if let Some(v) = map.get(*name) {
                if let Some((other, _)) = found {
                    return Err(RequestError::Contradictory(format!(
                        "\"{other}\" and \"{name}\" are the same field; send one"
                    )));
                }
                found = Some((*name, v));
            }
        }
        let Some((name, v)) = found else {
            return Ok(None);
        };
        spelled.push(name);
        if i + 1 == path.len() {
            return Ok(if v.is_null() {
                None
            } else {
                Some((v, spelled))
            });
        }
        match v {
            Value::Object(m) => map = m,
            Value::Null => return Ok(None),
            _ => {
                return Err(RequestError::Invalid(format!(
                    "field \"{}\" must be an object",
                    dotted(&spelled)
                )));
            }
        }
    }
    Ok(None)
}

/// Reads the output bounds of `body` for `endpoint`.
pub fn read(endpoint: Endpoint, body: &Map<String, Value>) -> Result<OutputBounds, RequestError> {
    let mut limit: Option<(u64, String)> = None;
    let mut choices = 1u64;
    let mut by_name: Vec<(String, u64)> = Vec::new();
    let mut thinking = None;
    for f in fields(endpoint) {
        let Some((v, spelled)) = lookup(body, f.path)? else {
            continue;
        };
        let name = dotted(&spelled);
        let n = v
            .as_i64()
            .filter(|n| (f.min..=f.max).contains(n))
            .ok_or_else(|| {
                RequestError::Invalid(if f.max == LIMIT_MAX {
                    format!("field \"{name}\" must be an integer of at least {}", f.min)
                } else {
                    format!(
                        "field \"{name}\" must be an integer from {} to {}",
                        f.min, f.max
                    )
                })
            })?;
        match f.role {
            Role::Limit => {
                let n = n as u64;
                if let Some((prev, prev_name)) = &limit
                    && *prev != n
                {
                    return Err(RequestError::Contradictory(format!(
                        "\"{prev_name}\" ({prev}) and \"{name}\" ({n}) disagree; send one output limit"
                    )));
                }
                limit = Some((n, name));
            }
            Role::Choices => {
                choices = choices.max(n as u64);
                by_name.push((name, n as u64));
            }
            Role::Thinking => thinking = u64::try_from(n).ok(),
        }
    }
    // Completions: `best_of` must be at least `n` (the API refuses otherwise).
    if let (Some((_, n)), Some((_, best))) = (
        by_name.iter().find(|(k, _)| k == "n"),
        by_name.iter().find(|(k, _)| k == "best_of"),
    ) && best < n
    {
        return Err(RequestError::Contradictory(format!(
            "\"best_of\" ({best}) must be at least \"n\" ({n})"
        )));
    }
    Ok(OutputBounds {
        limit: limit.map(|(n, _)| n),
        choices,
        thinking,
    })
}

/// Whether the body already says exactly `limit` in the fields `chat`
/// (chat completions) or the endpoint's limit field names, and nothing
/// else: then no rewrite is needed.
pub fn limit_is(
    endpoint: Endpoint,
    body: &Map<String, Value>,
    chat: ChatLimitField,
    limit: u64,
) -> bool {
    let wanted = |name: &str| endpoint != Endpoint::ChatCompletions || chat.names().contains(&name);
    let mut seen = 0;
    for f in fields(endpoint).filter(|f| f.role == Role::Limit) {
        match lookup(body, f.path) {
            Ok(Some((v, spelled))) => {
                if !wanted(spelled[spelled.len() - 1]) || v.as_u64() != Some(limit) {
                    return false;
                }
                seen += 1;
            }
            Ok(None) => {}
            Err(_) => return false,
        }
    }
    let thinking_fits = match fields(endpoint).find(|f| f.role == Role::Thinking) {
        Some(f) => match lookup(body, f.path) {
            Ok(Some((v, _))) => thinking_within(endpoint, v.as_i64(), limit).is_none(),
            _ => true,
        },
        None => true,
    };
    let expected = if endpoint == Endpoint::ChatCompletions {
        chat.names().len()
    } else {
        1
    };
    seen == expected && thinking_fits
}

/// A thinking budget that must be lowered for `limit`, and to what.
fn thinking_within(endpoint: Endpoint, thinking: Option<i64>, limit: u64) -> Option<u64> {
    let t = u64::try_from(thinking?).ok()?;
    match endpoint {
        // Anthropic: budget_tokens must be below max_tokens.
        Endpoint::Messages if t >= limit => Some(limit.saturating_sub(1)),
        Endpoint::GenerateContent | Endpoint::StreamGenerateContent if t > limit => Some(limit),
        _ => None,
    }
}

/// Sets the output limit to `limit` in every limit field the upstream
/// reads (for chat: the provider's `chat` fields, the other name removed),
/// and lowers a thinking budget that no longer fits.
pub fn set_limit(
    endpoint: Endpoint,
    body: &mut Map<String, Value>,
    chat: ChatLimitField,
    limit: u64,
) {
    if endpoint == Endpoint::ChatCompletions {
        body.remove("max_tokens");
        body.remove("max_completion_tokens");
        for name in chat.names() {
            body.insert((*name).into(), limit.into());
        }
        return;
    }
    for f in fields(endpoint) {
        match f.role {
            Role::Limit => {
                set_at(body, f.path, limit.into());
            }
            Role::Thinking => {
                let current = lookup(body, f.path)
                    .ok()
                    .flatten()
                    .and_then(|(v, _)| v.as_i64());
                if let Some(t) = thinking_within(endpoint, current, limit) {
                    set_at(body, f.path, t.into());
                }
            }
            Role::Choices => {}
        }
    }
}

/// Writes `value` at `path`, in the spelling the caller used for each
/// segment (the first spelling where the caller used none), creating
/// objects on the way.
fn set_at(body: &mut Map<String, Value>, path: &[&'static [&'static str]], value: Value) {
    let mut map = body;
    for (i, names) in path.iter().enumerate() {
        let name = names
            .iter()
            .find(|n| map.contains_key(**n))
            .copied()
            .unwrap_or(names[0]);
        if i + 1 == path.len() {
            map.insert(name.into(), value);
            return;
        }
        let next = map.entry(name).or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        let Value::Object(m) = next else { return };
        map = m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn bounds(ep: Endpoint, v: Value) -> Result<OutputBounds, RequestError> {
        read(ep, &obj(v))
    }

    #[test]
    fn every_multiplier_is_read() {
        let b = bounds(Endpoint::ChatCompletions, json!({"max_tokens": 10, "n": 4})).unwrap();
        assert_eq!((b.limit, b.choices), (Some(10), 4));
        let b = bounds(Endpoint::Completions, json!({"n": 2, "best_of": 5})).unwrap();
        assert_eq!((b.limit, b.choices), (None, 5));
        let b = bounds(
            Endpoint::GenerateContent,
            json!({"generation_config": {"max_output_tokens": 7, "candidate_count": 3}}),
        )
        .unwrap();
        assert_eq!((b.limit, b.choices), (Some(7), 3));
        let b = bounds(
            Endpoint::Messages,
            json!({"max_tokens": 3000, "thinking": {"type": "enabled", "budget_tokens": 2048}}),
        )
        .unwrap();
        assert_eq!((b.limit, b.thinking), (Some(3000), Some(2048)));
    }

    #[test]
    fn contradictions_and_unbounded_values_are_refused() {
        for (ep, body) in [
            (
                Endpoint::ChatCompletions,
                json!({"max_tokens": 1, "max_completion_tokens": 1000000}),
            ),
            (Endpoint::ChatCompletions, json!({"n": 129})),
            (Endpoint::ChatCompletions, json!({"n": 0})),
            (Endpoint::ChatCompletions, json!({"max_tokens": 0})),
            (Endpoint::ChatCompletions, json!({"max_tokens": 1.5})),
            (Endpoint::Completions, json!({"n": 3, "best_of": 2})),
            (Endpoint::Completions, json!({"best_of": 21})),
            (
                Endpoint::GenerateContent,
                json!({"generationConfig": {"maxOutputTokens": 5, "max_output_tokens": 50000}}),
            ),
            (
                Endpoint::GenerateContent,
                json!({"generationConfig": {}, "generation_config": {"maxOutputTokens": 5}}),
            ),
            (
                Endpoint::GenerateContent,
                json!({"generationConfig": {"candidateCount": 9}}),
            ),
            (Endpoint::GenerateContent, json!({"generationConfig": 3})),
        ] {
            assert!(bounds(ep, body.clone()).is_err(), "{ep:?} {body}");
        }
        // Equal values in both fields are not a contradiction.
        let b = bounds(
            Endpoint::ChatCompletions,
            json!({"max_tokens": 9, "max_completion_tokens": 9}),
        )
        .unwrap();
        assert_eq!(b.limit, Some(9));
        // Gemini's dynamic thinking.
        let b = bounds(
            Endpoint::GenerateContent,
            json!({"generationConfig": {"thinkingConfig": {"thinkingBudget": -1}}}),
        )
        .unwrap();
        assert_eq!(b.thinking, None);
    }

    #[test]
    fn set_limit_writes_every_field_the_upstream_reads() {
        let mut m = obj(json!({"max_tokens": 100}));
        set_limit(
            Endpoint::ChatCompletions,
            &mut m,
            ChatLimitField::MaxCompletionTokens,
            10,
        );
        assert_eq!(Value::Object(m), json!({"max_completion_tokens": 10}));
        let mut m = obj(json!({"max_completion_tokens": 100}));
        set_limit(Endpoint::ChatCompletions, &mut m, ChatLimitField::Both, 10);
        assert_eq!(
            Value::Object(m),
            json!({"max_completion_tokens": 10, "max_tokens": 10})
        );
        let mut m = obj(
            json!({"generation_config": {"max_output_tokens": 100, "thinking_config": {"thinking_budget": 500}}}),
        );
        set_limit(
            Endpoint::StreamGenerateContent,
            &mut m,
            ChatLimitField::default(),
            64,
        );
        assert_eq!(
            Value::Object(m),
            json!({"generation_config": {"max_output_tokens": 64, "thinking_config": {"thinking_budget": 64}}})
        );
        let mut m = obj(
            json!({"max_tokens": 5000, "thinking": {"type": "enabled", "budget_tokens": 4000}}),
        );
        set_limit(Endpoint::Messages, &mut m, ChatLimitField::default(), 2000);
        assert_eq!(m["thinking"]["budget_tokens"], 1999);
        assert!(limit_is(
            Endpoint::Messages,
            &m,
            ChatLimitField::default(),
            2000
        ));
        assert!(!limit_is(
            Endpoint::Messages,
            &m,
            ChatLimitField::default(),
            1000
        ));
    }

    #[test]
    fn limit_is_knows_when_nothing_changes() {
        let chat = ChatLimitField::MaxCompletionTokens;
        let m = obj(json!({"max_completion_tokens": 10}));
        assert!(limit_is(Endpoint::ChatCompletions, &m, chat, 10));
        let m = obj(json!({"max_tokens": 10}));
        assert!(!limit_is(Endpoint::ChatCompletions, &m, chat, 10));
        assert!(limit_is(
            Endpoint::ChatCompletions,
            &m,
            ChatLimitField::MaxTokens,
            10
        ));
        let m = obj(json!({}));
        assert!(!limit_is(Endpoint::Responses, &m, chat, 10));
    }
}
