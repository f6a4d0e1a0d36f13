//! End-to-end tests: the real `tollgate` binary against the real mock
//! provider binary, over real HTTP, with a real SQLite file. One test
//! binary with modules (link time dominates on small machines).

// Test code: helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used)]

mod harness;

mod jwt;

mod alerts;
mod budgets;
mod cli;
mod connections;
mod cycles;
mod errors;
mod escapes;
mod graphql;
mod metering;
mod prometheus;
mod reports;
mod rough_edges;
mod sdk;
mod streams;
mod tenants;
