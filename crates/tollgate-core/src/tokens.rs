//! Token counting for text Tollgate sees but the provider has not counted:
//! output streamed before a disconnect, and pre-flight estimates.
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

/// Text up to this size is counted exactly when estimating.
const EXACT_BYTES: usize = 64 * 1024;

/// Tokens in `text` for a reservation: never fewer than `o200k_base`
/// counts, at a cost that stops growing with the text:
/// - up to 64 KB, counted exactly (about 1.3 ms at the limit);
/// - beyond, its length in bytes: every token covers at least one byte, so
///   no text, however dense (emoji, rare scripts, adversarial), can hold
///   more. Callers cap the total at the model's context window, which is
///   what a provider accepts at most.
///
/// (A cheaper bound by a third of the bytes, and sampling of long texts,
/// were used before; both could be beaten by dense text placed where they
/// did not look, which let input escape its reservation.)
pub fn estimate_tokens(text: &str) -> u64 {
    if text.len() <= EXACT_BYTES {
        return count_tokens(text);
    }
    text.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_is_exact_up_to_64k_and_a_hard_bound_above() {
        let tiny = " the quick brown fox".repeat(100);
        assert_eq!(estimate_tokens(&tiny), count_tokens(&tiny));
        let cjk = "東京の天気は晴れです。".repeat(100);
        assert_eq!(estimate_tokens(&cjk), count_tokens(&cjk));
        let mixed = "the quick brown fox jumps over the lazy dog, said Émile — 東京 42 times! "
            .repeat(20_000);
        assert!(estimate_tokens(&mixed) >= count_tokens(&mixed));
    }

    /// Regression: dense text (one token per byte or more per character)
    /// placed where the old estimate did not look was under-reserved.
    #[test]
    fn regression_dense_text_is_never_under_reserved() {
        let dense = "a b c d e f g 1 2 3 ! ? 🎉🎈🧨 ".repeat(300);
        assert!(dense.len() <= EXACT_BYTES);
        assert!(estimate_tokens(&dense) >= count_tokens(&dense));
        let prose = " the quick brown fox".repeat(4_000);
        let hidden = format!("{prose}{}{prose}", "🎉x".repeat(20_000));
        assert!(hidden.len() > EXACT_BYTES);
        assert!(estimate_tokens(&hidden) >= count_tokens(&hidden));
    }

    #[test]
    fn counts_words() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens(" the quick brown fox"), 4);
    }
}
