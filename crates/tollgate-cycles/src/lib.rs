//! The Cycles budget protocol served on Tollgate's own ledger: agents and
//! their tools reserve before they act and commit what it cost, on the
//! same budgets the proxy charges for model calls.
//!
//! - [`protocol`]: the request and response bodies, exactly as the
//!   protocol's OpenAPI document has them.
//! - [`scopes`]: a subject's canonical scope paths, under the caller's
//!   tenant.
//! - [`units`]: microcents and tokens as Tollgate holds them, exactly.
//! - [`service`]: the operations, on the budget engine, with idempotent
//!   replay and expiry.

pub mod protocol;
pub mod scopes;
pub mod service;
pub mod units;

use protocol::ErrorCode;
use serde_json::{Map, Value};

/// A refusal in the protocol's terms: its code (which fixes the HTTP
/// status), a message, and details where the protocol asks for them.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct CyclesError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Map<String, Value>>,
}

impl CyclesError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> CyclesError {
        CyclesError {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> CyclesError {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn forbidden(message: impl Into<String>) -> CyclesError {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn with_details(mut self, details: Map<String, Value>) -> CyclesError {
        self.details = Some(details);
        self
    }
}
