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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens(" the quick brown fox"), 4);
    }
}
