//! Token usage in one normalized shape, whatever the wire format said.
//!
//! Conventions (each adapter converts into them; see `../shared/ref/README.md`):
//! - `input_tokens` is *all* input processed, cached reads and cache writes
//!   included; the three cache fields are subsets of it.
//! - `output_tokens` is *all* output, reasoning/thinking included;
//!   `reasoning_tokens` is a subset of it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_5m_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Input tokens billed at the plain input rate: neither read from nor
    /// written to a cache. Saturating so that an inconsistent upstream report
    /// cannot underflow into a huge number.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cached_input_tokens)
            .saturating_sub(self.cache_write_5m_tokens)
            .saturating_sub(self.cache_write_1h_tokens)
    }

    /// Output tokens that are not reasoning tokens.
    pub fn visible_output_tokens(&self) -> u64 {
        self.output_tokens.saturating_sub(self.reasoning_tokens)
    }

    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// Field-wise sum, for totals across requests.
    pub fn add(&self, o: &Usage) -> Usage {
        // Destructured so that a new token kind is a compile error here.
        let Usage {
            input_tokens,
            output_tokens,
            cached_input_tokens,
            cache_write_5m_tokens,
            cache_write_1h_tokens,
            reasoning_tokens,
        } = *o;
        Usage {
            input_tokens: self.input_tokens.saturating_add(input_tokens),
            output_tokens: self.output_tokens.saturating_add(output_tokens),
            cached_input_tokens: self.cached_input_tokens.saturating_add(cached_input_tokens),
            cache_write_5m_tokens: self
                .cache_write_5m_tokens
                .saturating_add(cache_write_5m_tokens),
            cache_write_1h_tokens: self
                .cache_write_1h_tokens
                .saturating_add(cache_write_1h_tokens),
            reasoning_tokens: self.reasoning_tokens.saturating_add(reasoning_tokens),
        }
    }
}
