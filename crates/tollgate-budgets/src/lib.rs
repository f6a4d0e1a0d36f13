//! The budget engine: which budgets apply to a caller and model (the
//! budget index), what they afford (`plan`), and reserve / extend / commit
//! / release / expire on all of them at once, over the [`Ledger`] trait.
//!
//! Between the domain (`tollgate-core`: budgets, periods, the ledger's
//! pure state machine) and the clients that spend through it — the proxy
//! today; tool reservations and live views next. Nothing here knows HTTP
//! or a wire format. [`MemoryLedger`] is the embedded ledger: the sharded
//! state machine in memory, made durable by the store's reservation log
//! (a reservation, before its request is forwarded) and the [`Journal`]
//! (settlements, releases and counter changes, batched).

pub mod engine;
pub mod events;
pub mod journal;
pub mod ledger;
mod levels;
pub mod messages;
pub mod metrics;
pub mod rates;

pub use engine::*;
pub use events::{Event, Events, Level, Published};
pub use journal::{Journal, JournalStats, WriterHandle};
pub use ledger::{
    FailPolicy, Ledger, LedgerError, MemoryLedger, Orphan, Payload, Reservation, Sizing,
};
