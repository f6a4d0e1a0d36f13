//! Tollgate's domain: exact money, prices and the cost formula, normalized
//! token usage, token counting, and the usage record.
//!
//! Pure: no I/O, no async, no wire formats. Everything here can be tested
//! with plain values, and the gateway, store and provider crates build on it.

pub mod budget;
pub mod caller;
pub mod keys;
pub mod ledger;
pub mod money;
pub mod period;
pub mod pricing;
pub mod rate;
pub mod record;
pub mod template;
pub mod tokens;
pub mod usage;

pub use caller::{Caller, in_tenant};
pub use keys::KeyRecord;
pub use money::Money;
pub use pricing::{Catalog, ModelPrice, Price};
pub use record::{Flags, UsageRecord};
pub use usage::Usage;
