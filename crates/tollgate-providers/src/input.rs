//! What a request's input weighs before the provider counts it.
//!
//! Text is collected for counting (prompts, system blocks, and tools, JSON
//! schemas and tool results as their whole JSON text). Everything else is
//! bounded, never free:
//! - token-id arrays (completions `prompt`, embeddings `input`) count their
//!   length;
//! - images by each provider's published formula: OpenAI tiles by `detail`
//!   (or 32-px patches for the patch-priced models), Anthropic by pixel
//!   area (at most 1,600 tokens), Gemini 258 tokens per 768-px tile; the
//!   size is read from the image's own header when the request carries the
//!   bytes, else the format's maximum is assumed;
//! - input whose size only the provider knows (a `previous_response_id`, a
//!   conversation, a stored prompt, Gemini `cachedContent`, file ids and
//!   URIs, PDFs, audio and video) is counted in [`InputSize::unknown_parts`]:
//!   the gateway reserves a configured allowance for it.

use base64::Engine;
use serde_json::{Map, Value};

use crate::{Endpoint, WireFormat};

/// The input side of a request, as far as Tollgate can know it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InputSize {
    /// Text to count with a tokenizer.
    pub text: String,
    /// Tokens known without counting: token ids, images by formula.
    pub fixed_tokens: u64,
    /// Message-like items (chat framing costs a few tokens each).
    pub items: u64,
    /// Parts whose size only the provider knows.
    pub unknown_parts: u64,
}

impl InputSize {
    /// The input tokens a provider of `format` can bill, `text_tokens` being
    /// the text counted with `o200k_base`: Anthropic's and Gemini's
    /// tokenizers can split finer, so a quarter is added for them; each
    /// message-like item costs framing, and the request a little more; the
    /// fixed tokens (ids, images) as they are. Parts only the provider can
    /// size are not in it (see [`InputSize::unknown_parts`]).
    pub fn billable_tokens(&self, format: crate::WireFormat, text_tokens: u64) -> u64 {
        let text = match format {
            crate::WireFormat::OpenAi => text_tokens,
            _ => text_tokens + text_tokens.div_ceil(4),
        };
        text + 4 * self.items + 16 + self.fixed_tokens
    }
}

/// Fields whose whole JSON text counts (definitions the provider renders
/// into the prompt: keys, types and descriptions alike).
const JSON_TEXT_FIELDS: &[&str] = &[
    "tools",
    "functions",
    "tool_choice",
    "response_format",
    "toolConfig",
    "tool_config",
    "text",
];

/// Top-level fields that hold prompt content.
const CONTENT_FIELDS: &[&str] = &[
    "messages",
    "system",
    "instructions",
    "input",
    "prompt",
    "contents",
    "systemInstruction",
    "system_instruction",
];

/// Top-level fields that pull in context only the provider can size.
const UNKNOWN_CONTEXT_FIELDS: &[&str] = &[
    "previous_response_id",
    "conversation",
    "cachedContent",
    "cached_content",
    "container",
    "mcp_servers",
];

/// Sizes the input of `body` for `endpoint`, sent to `model`.
pub fn measure(endpoint: Endpoint, model: &str, body: &Map<String, Value>) -> InputSize {
    let mut m = Measure {
        format: endpoint.format(),
        model,
        out: InputSize::default(),
    };
    for key in CONTENT_FIELDS {
        let Some(v) = body.get(*key) else { continue };
        // Responses' `prompt` is a stored-prompt reference, not text.
        if endpoint == Endpoint::Responses && *key == "prompt" {
            if !v.is_null() {
                m.out.unknown_parts += 1;
            }
            continue;
        }
        if matches!(*key, "messages" | "contents" | "input") {
            m.out.items += v.as_array().map_or(1, |a| a.len() as u64);
        }
        // Completions and embeddings: a token-id array, or arrays of them.
        if matches!(*key, "prompt" | "input")
            && matches!(endpoint, Endpoint::Completions | Endpoint::Embeddings)
        {
            m.token_ids_or_text(v);
        } else {
            m.content(v);
        }
    }
    for key in JSON_TEXT_FIELDS {
        // Responses' `text` is the output format (with its JSON schema).
        if *key == "text" && endpoint != Endpoint::Responses {
            continue;
        }
        if let Some(v) = body.get(*key).filter(|v| !v.is_null()) {
            m.out.text.push_str(&v.to_string());
            m.out.text.push('\n');
        }
    }
    if let Some(Value::Object(g)) = body
        .get("generationConfig")
        .or_else(|| body.get("generation_config"))
    {
        for k in [
            "responseSchema",
            "response_schema",
            "responseJsonSchema",
            "response_json_schema",
        ] {
            if let Some(v) = g.get(k) {
                m.out.text.push_str(&v.to_string());
                m.out.text.push('\n');
            }
        }
    }
    for key in UNKNOWN_CONTEXT_FIELDS {
        if body.get(*key).is_some_and(|v| !v.is_null()) {
            m.out.unknown_parts += 1;
        }
    }
    m.out
}

struct Measure<'a> {
    format: WireFormat,
    model: &'a str,
    out: InputSize,
}

impl Measure<'_> {
    fn text(&mut self, s: &str) {
        self.out.text.push_str(s);
        self.out.text.push('\n');
    }

    fn token_ids_or_text(&mut self, v: &Value) {
        match v {
            Value::Number(_) => self.out.fixed_tokens += 1,
            Value::Array(a) => a.iter().for_each(|x| self.token_ids_or_text(x)),
            other => self.content(other),
        }
    }

    /// Walks prompt content: strings are text; media parts are sized by
    /// their provider's formula; parts Tollgate cannot size are counted.
    fn content(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.text(s),
            Value::Array(a) => a.iter().for_each(|x| self.content(x)),
            Value::Object(o) => self.part(o),
            _ => {}
        }
    }

    fn part(&mut self, o: &Map<String, Value>) {
        let kind = o.get("type").and_then(Value::as_str).unwrap_or("");
        match self.format {
            WireFormat::OpenAi => match kind {
                "image_url" => {
                    let img = o.get("image_url");
                    let url = img
                        .and_then(|i| i.get("url").or(Some(i)))
                        .and_then(Value::as_str);
                    let detail = img.and_then(|i| i.get("detail")).and_then(Value::as_str);
                    self.out.fixed_tokens += openai_image_tokens(self.model, detail, url);
                    return;
                }
                "input_image" => {
                    let url = o.get("image_url").and_then(Value::as_str);
                    let detail = o.get("detail").and_then(Value::as_str);
                    if url.is_none() && o.get("file_id").is_some() {
                        // A stored file: its size is still the format's worst case.
                        self.out.fixed_tokens += openai_image_tokens(self.model, detail, None);
                    } else {
                        self.out.fixed_tokens += openai_image_tokens(self.model, detail, url);
                    }
                    return;
                }
                "input_audio" | "input_file" | "file" | "audio" => {
                    self.out.unknown_parts += 1;
                    return;
                }
                _ => {}
            },
            WireFormat::Anthropic => match kind {
                "image" => {
                    let dims = o
                        .get("source")
                        .filter(|s| s.get("type").and_then(Value::as_str) == Some("base64"))
                        .and_then(|s| s.get("data"))
                        .and_then(Value::as_str)
                        .and_then(image_dims_base64);
                    self.out.fixed_tokens += anthropic_image_tokens(dims);
                    return;
                }
                "document" => {
                    let src = o.get("source");
                    match src.and_then(|s| s.get("type")).and_then(Value::as_str) {
                        Some("text") => {
                            if let Some(d) = src.and_then(|s| s.get("data")) {
                                self.content(d);
                            }
                        }
                        Some("content") => {
                            if let Some(c) = src.and_then(|s| s.get("content")) {
                                self.content(c);
                            }
                        }
                        _ => self.out.unknown_parts += 1,
                    }
                    for k in ["title", "context"] {
                        if let Some(Value::String(s)) = o.get(k) {
                            self.text(s);
                        }
                    }
                    return;
                }
                "container_upload" => {
                    self.out.unknown_parts += 1;
                    return;
                }
                _ => {}
            },
            WireFormat::Gemini => {
                if let Some(d) = o.get("inlineData").or_else(|| o.get("inline_data")) {
                    let mime = d
                        .get("mimeType")
                        .or_else(|| d.get("mime_type"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let data = d.get("data").and_then(Value::as_str);
                    match (mime.starts_with("image/"), data.and_then(image_dims_base64)) {
                        (true, Some(dims)) => self.out.fixed_tokens += gemini_image_tokens(dims),
                        // Video, audio, PDFs, or an image whose size is unreadable.
                        _ => self.out.unknown_parts += 1,
                    }
                    return;
                }
                if o.contains_key("fileData") || o.contains_key("file_data") {
                    self.out.unknown_parts += 1;
                    return;
                }
                if let Some(v) = o
                    .get("functionCall")
                    .or_else(|| o.get("function_call"))
                    .or_else(|| o.get("functionResponse"))
                    .or_else(|| o.get("function_response"))
                {
                    self.text(&v.to_string());
                    return;
                }
            }
        }
        // Tool calls: their JSON text counts whole (results are content,
        // and may carry images).
        if matches!(kind, "tool_use" | "function_call" | "server_tool_use") {
            self.text(&Value::Object(o.clone()).to_string());
            return;
        }
        for (k, x) in o {
            match k.as_str() {
                "text" | "content" | "parts" | "input" | "output" | "arguments" | "name"
                | "refusal" | "thinking" | "tool_calls" | "function_call" => self.content(x),
                "function" => self.text(&x.to_string()),
                // Reasoning items carried back into a conversation.
                "encrypted_content" | "summary" | "data"
                    if kind == "reasoning" || kind == "redacted_thinking" =>
                {
                    self.content(x)
                }
                _ => {}
            }
        }
    }
}

/// OpenAI's image cost families (tokens per image are model-specific).
enum OpenAiVision {
    /// 512-px tiles after fitting 2048² and a 768-px short side.
    Tiles { base: u64, tile: u64 },
    /// 32-px patches, at most 1,536, times a multiplier in hundredths.
    Patches { multiplier_pct: u64 },
}

fn openai_vision(model: &str) -> OpenAiVision {
    let m = model.rsplit('/').next().unwrap_or(model);
    let patches = |multiplier_pct| OpenAiVision::Patches { multiplier_pct };
    if m.starts_with("gpt-4o-mini") {
        OpenAiVision::Tiles {
            base: 2833,
            tile: 5667,
        }
    } else if m.starts_with("gpt-4.1-mini") || m.starts_with("gpt-5-mini") {
        patches(162)
    } else if m.starts_with("gpt-4.1-nano") || m.starts_with("gpt-5-nano") {
        patches(246)
    } else if m.starts_with("o4-mini") {
        patches(172)
    } else {
        // gpt-4o, gpt-4.1, gpt-5, o-series (75/150 and 70/140 there) and
        // any OpenAI-compatible model: the highest of the tile prices.
        OpenAiVision::Tiles {
            base: 85,
            tile: 170,
        }
    }
}

/// Tokens for one OpenAI image; `url` may be a data URL whose header gives
/// the size. Unknown sizes cost the family's maximum.
pub fn openai_image_tokens(model: &str, detail: Option<&str>, url: Option<&str>) -> u64 {
    let dims = url
        .and_then(|u| u.strip_prefix("data:"))
        .and_then(|u| u.split_once(";base64,"))
        .and_then(|(_, data)| image_dims_base64(data));
    match openai_vision(model) {
        OpenAiVision::Tiles { base, tile } => {
            if detail == Some("low") {
                return base;
            }
            // Largest tile count: 768 × 2048 → 2 × 4 tiles.
            let (w, h) = dims.unwrap_or((768, 2048));
            let (w, h) = fit(w, h, 2048);
            let short = w.min(h);
            let (w, h) = if short > 768 {
                (
                    (w * 768).div_ceil(short).max(1),
                    (h * 768).div_ceil(short).max(1),
                )
            } else {
                (w, h)
            };
            base + tile * w.div_ceil(512) * h.div_ceil(512)
        }
        OpenAiVision::Patches { multiplier_pct } => {
            let patches = dims.map_or(1536, |(w, h)| (w.div_ceil(32) * h.div_ceil(32)).min(1536));
            (patches * multiplier_pct).div_ceil(100)
        }
    }
}

/// Scales `(w, h)` down to fit a `max` square, keeping the aspect ratio.
fn fit(w: u64, h: u64, max: u64) -> (u64, u64) {
    let long = w.max(h);
    if long <= max {
        return (w.max(1), h.max(1));
    }
    (
        (w * max).div_ceil(long).max(1),
        (h * max).div_ceil(long).max(1),
    )
}

/// Anthropic: `width × height / 750`, images beyond ~1.15 megapixels are
/// scaled down first, so never more than 1,600 tokens.
pub fn anthropic_image_tokens(dims: Option<(u64, u64)>) -> u64 {
    const MAX: u64 = 1600;
    dims.map_or(MAX, |(w, h)| {
        let (w, h) = fit(w, h, 1568);
        (w * h).div_ceil(750).clamp(1, MAX)
    })
}

/// Gemini: 258 tokens when both sides are at most 384 px, else 258 per
/// 768-px tile.
pub fn gemini_image_tokens((w, h): (u64, u64)) -> u64 {
    if w <= 384 && h <= 384 {
        return 258;
    }
    258 * w.div_ceil(768).max(1) * h.div_ceil(768).max(1)
}

/// Width and height from the header of a base64-encoded PNG, JPEG, GIF or
/// WebP image, reading at most the first 64 KiB.
pub fn image_dims_base64(data: &str) -> Option<(u64, u64)> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    // 87,380 base64 characters are 65,535 bytes; a multiple of 4, so a cut
    // prefix decodes on its own.
    let head = data.get(..data.len().min(87_380))?;
    image_dims(&LENIENT.decode(head).ok()?)
}

/// Width and height from an image's leading bytes.
pub fn image_dims(b: &[u8]) -> Option<(u64, u64)> {
    let be16 = |i: usize| Some(u64::from(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?])));
    let le16 = |i: usize| Some(u64::from(u16::from_le_bytes([*b.get(i)?, *b.get(i + 1)?])));
    let be32 = |i: usize| {
        Some(u64::from(u32::from_be_bytes(
            b.get(i..i + 4)?.try_into().ok()?,
        )))
    };
    let le24 = |i: usize| {
        Some(
            u64::from(*b.get(i)?)
                | u64::from(*b.get(i + 1)?) << 8
                | u64::from(*b.get(i + 2)?) << 16,
        )
    };
    let dims = if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        (be32(16)?, be32(20)?)
    } else if b.starts_with(b"GIF8") {
        (le16(6)?, le16(8)?)
    } else if b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WEBP") {
        match b.get(12..16)? {
            b"VP8 " => (le16(26)? & 0x3fff, le16(28)? & 0x3fff),
            b"VP8L" => {
                let bits = u64::from(u32::from_le_bytes(b.get(21..25)?.try_into().ok()?));
                ((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1)
            }
            b"VP8X" => (le24(24)? + 1, le24(27)? + 1),
            _ => return None,
        }
    } else if b.starts_with(&[0xff, 0xd8]) {
        // JPEG: walk the segments to the first start-of-frame.
        let mut i = 2;
        loop {
            while *b.get(i)? != 0xff {
                i += 1;
            }
            while *b.get(i)? == 0xff {
                i += 1;
            }
            let marker = *b.get(i)?;
            i += 1;
            if matches!(marker, 0xd8 | 0x01 | 0xd0..=0xd7) {
                continue;
            }
            let len = be16(i)? as usize;
            if matches!(marker, 0xc0..=0xcf) && !matches!(marker, 0xc4 | 0xc8 | 0xcc) {
                break (be16(i + 5)?, be16(i + 3)?);
            }
            i += len;
        }
    } else {
        return None;
    };
    (dims.0 > 0 && dims.1 > 0).then_some(dims)
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

    fn png(w: u32, h: u32) -> String {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    #[test]
    fn image_headers_give_their_size() {
        assert_eq!(image_dims_base64(&png(640, 480)), Some((640, 480)));
        let gif = base64::engine::general_purpose::STANDARD.encode(b"GIF89a\x20\x03\x58\x02\0\0");
        assert_eq!(image_dims_base64(&gif), Some((800, 600)));
        // JPEG: SOI, an APP0 segment, then SOF0 with 1200 × 900.
        let jpeg = [
            0xff, 0xd8, 0xff, 0xe0, 0, 4, 0, 0, 0xff, 0xc0, 0, 17, 8, 0x03, 0x84, 0x04, 0xb0, 3,
        ];
        assert_eq!(image_dims(&jpeg), Some((1200, 900)));
        assert_eq!(image_dims(b"not an image"), None);
        assert_eq!(image_dims_base64("%%%"), None);
    }

    #[test]
    fn openai_images_follow_the_tile_formula() {
        // 1024 × 1024, high: fits 2048, short side → 768: 768 × 768 = 4 tiles.
        let url = format!("data:image/png;base64,{}", png(1024, 1024));
        assert_eq!(
            openai_image_tokens("gpt-4o", Some("high"), Some(&url)),
            85 + 170 * 4
        );
        assert_eq!(openai_image_tokens("gpt-4o", Some("low"), Some(&url)), 85);
        // Unknown size: the most tiles an image can have.
        assert_eq!(
            openai_image_tokens("gpt-4o", None, Some("https://x/y.png")),
            85 + 170 * 8
        );
        assert_eq!(
            openai_image_tokens("gpt-4o-mini", None, None),
            2833 + 5667 * 8
        );
        assert_eq!(
            openai_image_tokens("gpt-4.1-mini", None, None),
            (1536 * 162_u64).div_ceil(100)
        );
        assert_eq!(anthropic_image_tokens(None), 1600);
        assert_eq!(anthropic_image_tokens(Some((200, 200))), 54);
        assert_eq!(gemini_image_tokens((300, 300)), 258);
        assert_eq!(gemini_image_tokens((1000, 1000)), 258 * 4);
    }

    #[test]
    fn token_arrays_tools_and_unknown_context_are_all_counted() {
        let m = measure(
            Endpoint::Embeddings,
            "text-embedding-3-small",
            &obj(json!({"input": [[1, 2, 3], [4, 5]]})),
        );
        assert_eq!(m.fixed_tokens, 5);
        let m = measure(
            Endpoint::ChatCompletions,
            "gpt-4o",
            &obj(json!({
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
                ]}],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
            })),
        );
        assert_eq!(m.fixed_tokens, 85);
        assert_eq!(m.unknown_parts, 1);
        assert!(
            m.text.contains("hi") && m.text.contains("\"city\""),
            "{}",
            m.text
        );
        let m = measure(
            Endpoint::Responses,
            "gpt-4o",
            &obj(json!({"input": "more", "previous_response_id": "resp_1"})),
        );
        assert_eq!(m.unknown_parts, 1);
        let m = measure(
            Endpoint::GenerateContent,
            "gemini-2.5-pro",
            &obj(json!({"contents": [{"parts": [
                {"inlineData": {"mimeType": "image/png", "data": png(300, 300)}},
                {"fileData": {"fileUri": "files/abc", "mimeType": "video/mp4"}}
            ]}], "cachedContent": "cachedContents/x"})),
        );
        assert_eq!((m.fixed_tokens, m.unknown_parts), (258, 2));
        let m = measure(
            Endpoint::Messages,
            "claude-sonnet-4-5",
            &obj(json!({"messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": "https://x/a.png"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}
            ]}]})),
        );
        assert_eq!((m.fixed_tokens, m.unknown_parts), (1600, 1));
    }
}
