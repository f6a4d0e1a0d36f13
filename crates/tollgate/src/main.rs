//! `tollgate`: the LLM spend firewall's one binary.
//!
//! Thin: parse arguments, load config, call the command, map errors to an
//! exit code. The commands live in [`commands`] and [`demo`].

mod commands;
mod demo;
mod import;
mod load;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

// glibc's allocator spent a fifth of the proxy's CPU under load (records
// are allocated on the request path and freed on the journal thread);
// mimalloc's thread-local free lists cost a fraction of that.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "An LLM spend firewall: meters, prices and budgets every LLM call"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct ConfigArg {
    /// Configuration file (YAML); `TOLLGATE_*` environment variables override it.
    #[arg(
        long,
        short = 'c',
        env = "TOLLGATE_CONFIG",
        default_value = "tollgate.yaml",
        global = true
    )]
    config: PathBuf,
    /// Database URL, overriding the config's `database:` (e.g. sqlite://tollgate.db).
    #[arg(long, global = true)]
    database: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(#[command(flatten)] ConfigArg),
    /// Start a mock provider and the gateway, send a scripted mix of requests, print the report.
    Demo {
        /// Keep serving after the script, until Ctrl-C.
        #[arg(long)]
        keep_running: bool,
    },
    /// Run the mock LLM provider (OpenAI, Anthropic and Gemini wire formats).
    MockProvider {
        #[arg(long, default_value = "127.0.0.1:9999")]
        listen: String,
        /// Visible output tokens per response unless a request says otherwise.
        #[arg(long, default_value_t = 20)]
        output_tokens: u64,
        #[arg(long, default_value_t = 0)]
        ttfb_ms: u64,
        #[arg(long, default_value_t = 0)]
        chunk_delay_ms: u64,
        /// Require this provider key (401 otherwise).
        #[arg(long)]
        expect_key: Option<String>,
    },
    /// Manage virtual keys.
    Keys {
        #[command(subcommand)]
        action: KeysCmd,
    },
    /// Usage reports.
    Usage {
        #[command(subcommand)]
        action: UsageCmd,
    },
    /// Admin keys scoped to one tenant.
    AdminKeys {
        #[command(subcommand)]
        action: AdminKeysCmd,
    },
    /// Users and every budget that applies to them.
    Users {
        #[command(subcommand)]
        action: UsersCmd,
    },
    /// Spend today, this month and all time, top models and spenders.
    Stats {
        #[command(flatten)]
        cfg: ConfigArg,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Prices: list, set, import.
    Pricing {
        #[command(subcommand)]
        action: PricingCmd,
    },
    /// Budgets: list with their state, set, delete.
    Budgets {
        #[command(subcommand)]
        action: Box<BudgetsCmd>,
    },
    /// Why would a request be allowed, capped or refused? Every budget that
    /// applies, its state, and the decision (a dry run: nothing is reserved).
    Explain {
        #[command(flatten)]
        cfg: ConfigArg,
        /// A virtual key (tg-...) or key id (key_...) to act as.
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        session: Option<String>,
        #[arg(long)]
        budget_id: Option<String>,
        #[arg(long)]
        model: String,
        #[arg(long)]
        max_tokens: Option<u64>,
        #[arg(long)]
        input_tokens: Option<u64>,
    },
    /// Records the store refused to write (kept exactly, aside): list them,
    /// or write again those it now accepts.
    Quarantine {
        #[command(subcommand)]
        action: QuarantineCmd,
    },
    /// Validate the configuration and print what it sets up.
    CheckConfig(#[command(flatten)] ConfigArg),
}

#[derive(Subcommand)]
pub enum AdminKeysCmd {
    /// Create an admin key that sees and changes only this tenant (shown once).
    Create {
        #[command(flatten)]
        cfg: ConfigArg,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Tenant admin keys (never their secret).
    List {
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Revoke a tenant admin key by id (at once).
    Revoke {
        #[command(flatten)]
        cfg: ConfigArg,
        id: String,
    },
}

#[derive(Subcommand)]
pub enum UsersCmd {
    /// Users who have made requests, with their daily and monthly budgets.
    List {
        #[command(flatten)]
        cfg: ConfigArg,
        #[arg(long)]
        tenant: Option<String>,
        /// ok, low or over_limit.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

#[derive(Subcommand)]
pub enum QuarantineCmd {
    /// Every quarantined record, with why the store refused it (JSON lines).
    List {
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Writes the quarantined records the store now accepts.
    Retry {
        #[command(flatten)]
        cfg: ConfigArg,
    },
}

// Parsed once per run: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum BudgetsCmd {
    /// Every budget with spend in its current period: used, limit, remaining, status.
    List {
        #[command(flatten)]
        cfg: ConfigArg,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Create or replace a budget (admin-managed; config budgets live in the config).
    Set {
        #[command(flatten)]
        cfg: ConfigArg,
        #[arg(long)]
        id: Option<String>,
        /// global, tenant, user, session, key or budget.
        #[arg(long)]
        scope: String,
        #[arg(long)]
        subject: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// Decimal USD, e.g. 10.00.
        #[arg(long)]
        limit_usd: Option<String>,
        #[arg(long)]
        limit_tokens: Option<u64>,
        /// daily, weekly, monthly, lifetime, rolling:1h, ...
        #[arg(long, default_value = "monthly")]
        period: String,
        #[arg(long)]
        timezone: Option<String>,
        /// HH:MM local time of the reset.
        #[arg(long)]
        reset_time: Option<String>,
        #[arg(long)]
        reset_weekday: Option<String>,
        #[arg(long)]
        reset_day: Option<i64>,
        /// block, warn, shadow, downgrade or throttle.
        #[arg(long)]
        action: Option<String>,
        /// With --action downgrade: the model served instead.
        #[arg(long)]
        downgrade_to: Option<String>,
        /// With --action throttle: requests per minute admitted past the limit.
        #[arg(long)]
        throttle_rpm: Option<u64>,
        /// With --action throttle: tokens per minute admitted past the limit.
        #[arg(long)]
        throttle_tpm: Option<u64>,
        #[arg(long)]
        refusal_status: Option<u16>,
        /// The refusal's text (a template: {period}, {reset_time}, ...).
        #[arg(long)]
        refusal_message: Option<String>,
        #[arg(long)]
        low_threshold_pct: Option<u8>,
        /// Low below this much money left (decimal USD).
        #[arg(long)]
        low_threshold_usd: Option<String>,
        /// Low below this many tokens left.
        #[arg(long)]
        low_threshold_tokens: Option<u64>,
        /// A warning mark, `PCT:MESSAGE` (a template); repeat for several.
        #[arg(long = "warning")]
        warnings: Vec<String>,
        /// A usage footer for whole text answers (a template).
        #[arg(long)]
        footer: Option<String>,
        /// Model glob this budget covers; repeat for several. Default: all.
        #[arg(long = "model")]
        models: Vec<String>,
        /// Carry unused allowance into the next period, up to this (USD).
        #[arg(long)]
        rollover_cap_usd: Option<String>,
    },
    /// Delete an admin-managed budget.
    Delete {
        #[command(flatten)]
        cfg: ConfigArg,
        id: String,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Create a key; prints it once.
    Create {
        #[command(flatten)]
        cfg: ConfigArg,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        role: Option<String>,
        /// May name end user, tenant, session and budget per request.
        #[arg(long)]
        trusted: bool,
        /// Allowed model (glob); repeat for several. Default: all.
        #[arg(long = "model")]
        models: Vec<String>,
        /// Expiry, RFC 3339 (2027-01-01T00:00:00Z).
        #[arg(long)]
        expires_at: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// List keys (never the keys themselves).
    List {
        #[command(flatten)]
        cfg: ConfigArg,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Revoke a key by id.
    Revoke {
        #[command(flatten)]
        cfg: ConfigArg,
        id: String,
    },
}

/// Only records with these values count.
#[derive(clap::Args)]
pub struct ReportFilterArgs {
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub session: Option<String>,
    /// A virtual key id.
    #[arg(long)]
    pub key: Option<String>,
    /// The model served.
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub provider: Option<String>,
    /// Records that charged this budget.
    #[arg(long)]
    pub budget: Option<String>,
}

#[derive(Subcommand)]
pub enum UsageCmd {
    /// Totals grouped by one or several dimensions.
    Report {
        #[command(flatten)]
        cfg: ConfigArg,
        /// user, tenant, session, model, key, provider, budget, day or
        /// hour; several comma-separated (user,model).
        #[arg(long, default_value = "model")]
        by: String,
        /// Start: RFC 3339, YYYY-MM-DD, or a span back from now (7d, 24h).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[command(flatten)]
        only: ReportFilterArgs,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

#[derive(Subcommand)]
pub enum PricingCmd {
    /// Every priced model (built-in, config, set/imported).
    List {
        #[command(flatten)]
        cfg: ConfigArg,
        /// Only models whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Set a model's price (USD per million tokens): the flags given change
    /// the price in force, the others keep their value.
    Set {
        #[command(flatten)]
        cfg: ConfigArg,
        model: String,
        /// Required for a model without a price.
        #[arg(long)]
        input: Option<String>,
        #[arg(long)]
        output: Option<String>,
        /// The provider the price is for (shown in the catalog).
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        cached_input: Option<String>,
        #[arg(long)]
        cache_write_5m: Option<String>,
        #[arg(long)]
        cache_write_1h: Option<String>,
        #[arg(long)]
        reasoning: Option<String>,
    },
    /// Import a LiteLLM model_prices_and_context_window.json file.
    Import {
        #[command(flatten)]
        cfg: ConfigArg,
        file: PathBuf,
        /// Only models of this litellm_provider (openai, anthropic, gemini, ...).
        #[arg(long)]
        provider: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve(_) | Command::MockProvider { .. } => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(commands::run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
