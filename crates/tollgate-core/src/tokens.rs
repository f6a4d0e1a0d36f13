//! Token counting for text Tollgate sees but the provider has not counted:
//! output streamed before a disconnect, and (later) pre-flight estimates.
//!
//! Uses OpenAI's `o200k_base` encoding. For other providers' models it is an
//! estimate; callers that need a bound add their own margin.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

fn bpe() -> &'static CoreBPE {
    static BPE: OnceLock<CoreBPE> = OnceLock::new();
    // The encoding is compiled into the binary; failing to load it is a build bug.
    BPE.get_or_init(|| tiktoken_rs::o200k_base().expect("o200k_base loads"))
}

/// Number of `o200k_base` tokens in `text`.
pub fn count_tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    bpe().encode_ordinary(text).len() as u64
}

/// Text up to this size is bounded by its length instead of counted.
const BOUND_BYTES: usize = 4 * 1024;
/// Text up to this size is counted exactly when estimating.
const EXACT_BYTES: usize = 32 * 1024;
/// Samples taken from longer texts, and their size.
const SAMPLES: usize = 4;
const SAMPLE_BYTES: usize = 8 * 1024;

/// Tokens in `text` for a reservation, at a cost that stops growing with
/// the text:
/// - up to 4 KB, a third of its bytes (o200k averages 4+ bytes a token in
///   prose and about 3 in code; CJK is 3 bytes a character and rarely more
///   than a token each): conservative, and free — counting 1 KB exactly
///   costs ~0.1 ms, most of a small request's overhead, to refine an input
///   cost that the output reservation dwarfs;
/// - up to 32 KB, counted exactly;
/// - beyond, four 8 KB samples spread through the text are counted and the
///   densest one (most tokens per byte) is extrapolated, plus a tenth.
///
/// Text denser than these bounds (emoji, rare scripts) is under-reserved;
/// the provider's own count is charged at settlement and the difference
/// recorded as overspend.
pub fn estimate_tokens(text: &str) -> u64 {
    if text.len() <= BOUND_BYTES {
        return text.len().div_ceil(3) as u64;
    }
    if text.len() <= EXACT_BYTES {
        return count_tokens(text);
    }
    let len = text.len();
    let mut densest: (u64, u64) = (0, 1); // (tokens, bytes) of the densest sample
    for i in 0..SAMPLES {
        let start = floor_boundary(text, (len - SAMPLE_BYTES) * i / (SAMPLES - 1));
        let end = floor_boundary(text, (start + SAMPLE_BYTES).min(len));
        let sample = &text[start..end];
        let tokens = count_tokens(sample);
        let bytes = sample.len().max(1) as u64;
        // Compare tokens/bytes as cross products: integers only.
        if u128::from(tokens) * u128::from(densest.1) > u128::from(densest.0) * u128::from(bytes) {
            densest = (tokens, bytes);
        }
    }
    let est = u128::from(densest.0) * len as u128 / u128::from(densest.1);
    let est = est + est / 10;
    u64::try_from(est).unwrap_or(u64::MAX)
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_is_exact_for_short_text_and_close_above_for_long() {
        let tiny = " the quick brown fox".repeat(100);
        assert!(estimate_tokens(&tiny) >= count_tokens(&tiny));
        let cjk = "東京の天気は晴れです。".repeat(100);
        assert!(
            estimate_tokens(&cjk) >= count_tokens(&cjk),
            "CJK bounded too"
        );
        let short = " the quick brown fox".repeat(1000);
        assert_eq!(estimate_tokens(&short), count_tokens(&short));
        let mixed = "the quick brown fox jumps over the lazy dog, said Émile — 東京 42 times! "
            .repeat(20_000);
        let exact = count_tokens(&mixed);
        let est = estimate_tokens(&mixed);
        assert!(est >= exact, "estimate {est} below exact {exact}");
        assert!(
            est <= exact + exact / 5,
            "estimate {est} far above exact {exact}"
        );
    }

    #[test]
    fn counts_words() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens(" the quick brown fox"), 4);
    }
}
