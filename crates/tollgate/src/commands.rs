//! The CLI's commands. Those that manage keys, prices and reports work on
//! the database the config names, so they run with or without a gateway
//! (a running gateway picks changes up within seconds).

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use tollgate_core::pricing::{Price, PriceSource};
use tollgate_gateway::admin::{self, catalog_json, key_json, parse_time};
use tollgate_gateway::identity::{self, NewKey};
use tollgate_gateway::{Config, Gateway};
use tollgate_store::{GroupBy, ReportFilter, ReportQuery, Store};

use crate::{
    AdminKeysCmd, BudgetsCmd, Command, ConfigArg, Format, KeysCmd, PricingCmd, QuarantineCmd,
    UsageCmd, UsersCmd,
};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn load_config(arg: &ConfigArg) -> Result<Config> {
    let explicit = std::env::var_os("TOLLGATE_CONFIG").is_some()
        || std::env::args().any(|a| a == "--config" || a == "-c" || a.starts_with("--config="));
    let mut config = crate::load::load(&arg.config, explicit, &env)?;
    if let Some(db) = &arg.database {
        config.database = db.clone();
    }
    Ok(config)
}

/// The gateway's state over the configured database, for commands that
/// read budgets and the ledger without serving.
async fn inspect(cfg: &ConfigArg) -> Result<tollgate_gateway::AppState> {
    let config = load_config(cfg)?;
    let store = open_store(&config).await?;
    Ok(Gateway::inspect(config, store).await?)
}

async fn open_store(config: &Config) -> Result<Arc<dyn Store>> {
    tollgate_store::open(&config.database)
        .await
        .with_context(|| format!("opening database {}", config.database))
}

pub async fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Serve(arg) => serve(load_config(&arg)?).await,
        Command::Demo { keep_running } => crate::demo::run(keep_running).await,
        Command::MockProvider {
            listen,
            output_tokens,
            ttfb_ms,
            chunk_delay_ms,
            expect_key,
        } => {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            eprintln!(
                "mock provider listening on http://{}",
                listener.local_addr()?
            );
            let config = tollgate_mock::MockConfig {
                output_tokens,
                ttfb: std::time::Duration::from_millis(ttfb_ms),
                chunk_delay: std::time::Duration::from_millis(chunk_delay_ms),
                expect_key,
            };
            tokio::select! {
                r = tollgate_mock::serve(listener, config) => r.context("mock provider")?,
                _ = shutdown_signal() => {}
            }
            Ok(())
        }
        Command::Keys { action } => keys(action).await,
        Command::Usage { action } => usage(action).await,
        Command::Users { action } => users(action).await,
        Command::AdminKeys { action } => admin_keys(action).await,
        Command::Stats { cfg, format } => stats(&cfg, format).await,
        Command::Pricing { action } => pricing(action).await,
        Command::CheckConfig(arg) => check_config(&arg).await,
        Command::Budgets { action } => budgets(*action).await,
        Command::Quarantine { action } => quarantine(action).await,
        Command::Explain {
            cfg,
            key,
            user,
            tenant,
            role,
            session,
            budget_id,
            model,
            max_tokens,
            input_tokens,
        } => {
            let state = inspect(&cfg).await?;
            let req = admin::ExplainRequest {
                key,
                user,
                tenant,
                role,
                session,
                budget_id,
                model: Some(model),
                max_tokens,
                input_tokens,
                request: None,
            };
            let v = admin::explain_json(&state, &req)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
    }
}

async fn quarantine(action: QuarantineCmd) -> Result<()> {
    match action {
        QuarantineCmd::List { cfg } => {
            let store = open_store(&load_config(&cfg)?).await?;
            for q in store.quarantined().await? {
                let line = tollgate_gateway::api::QuarantinedView {
                    request_id: &q.request_id,
                    quarantined_at: q.quarantined_at.to_string(),
                    reason: &q.reason,
                    record: admin::record_json(&q.record),
                };
                println!("{}", serde_json::to_string(&line)?);
            }
            Ok(())
        }
        QuarantineCmd::Retry { cfg } => {
            let store = open_store(&load_config(&cfg)?).await?;
            let (written, failing) = store.retry_quarantined().await?;
            println!("{written} written, {failing} still refused");
            Ok(())
        }
    }
}

async fn budgets(action: BudgetsCmd) -> Result<()> {
    match action {
        BudgetsCmd::List { cfg, format } => {
            let state = inspect(&cfg).await?;
            let (instances, _) = state
                .budgets
                .instances_page(None, usize::MAX, &Default::default())
                .await;
            let entries = state.budgets.entries();
            let rows: Vec<tollgate_gateway::api::BudgetView> = instances
                .iter()
                .map(|(a, st)| {
                    let source = entries.get(&a.budget.id).map(|e| e.source);
                    admin::budget_json(a, st, source)
                })
                .collect();
            if format == Format::Json {
                let page = tollgate_gateway::api::BudgetPage {
                    budgets: rows,
                    next_cursor: None,
                };
                println!("{}", serde_json::to_string_pretty(&page)?);
                return Ok(());
            }
            println!(
                "{:<20} {:<8} {:<14} {:<12} {:>14} {:>14} {:>14}  {:<10} RESETS",
                "ID", "SCOPE", "SUBJECT", "PERIOD", "LIMIT", "USED", "REMAINING", "STATUS"
            );
            let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            for r in rows {
                let (limit, used, rem) = match &r.limit_usd {
                    Some(l) => (
                        format!("${l}"),
                        format!("${}", r.used_usd),
                        format!("${}", dash(r.remaining_usd.clone())),
                    ),
                    None => (
                        dash(r.limit_tokens.map(|t| t.to_string())),
                        r.used_tokens.to_string(),
                        dash(r.remaining_tokens.map(|t| t.to_string())),
                    ),
                };
                println!(
                    "{:<20} {:<8} {:<14} {:<12} {:>14} {:>14} {:>14}  {:<10} {}",
                    r.id,
                    r.scope,
                    r.subject.as_deref().unwrap_or("-"),
                    r.period,
                    limit,
                    used,
                    rem,
                    r.status,
                    dash(r.resets_at.clone())
                );
            }
        }
        BudgetsCmd::Set {
            cfg,
            id,
            scope,
            subject,
            name,
            limit_usd,
            limit_tokens,
            period,
            timezone,
            reset_time,
            reset_weekday,
            reset_day,
            action,
            downgrade_to,
            throttle_rpm,
            throttle_tpm,
            refusal_status,
            refusal_message,
            low_threshold_pct,
            low_threshold_usd,
            low_threshold_tokens,
            warnings,
            footer,
            models,
            rollover_cap_usd,
        } => {
            let money = |flag: &str, v: &Option<String>| -> Result<Option<tollgate_core::Money>> {
                v.as_deref()
                    .map(|x| {
                        tollgate_core::Money::parse_usd(x).with_context(|| {
                            format!("{flag} {x:?}: expected decimal USD like 10.00")
                        })
                    })
                    .transpose()
            };
            let id = id.unwrap_or_else(|| format!("bud_{}", &identity::generate_key_id()[4..]));
            let input = tollgate_core::budget::BudgetInput {
                id: Some(id.clone()),
                name,
                scope: Some(scope),
                subject,
                limit_usd: money("--limit-usd", &limit_usd)?,
                limit_tokens,
                period,
                timezone,
                reset_time,
                reset_weekday,
                reset_day,
                action,
                downgrade_to,
                throttle: (throttle_rpm.is_some() || throttle_tpm.is_some()).then_some(
                    tollgate_core::budget::ThrottleInput {
                        requests_per_minute: throttle_rpm,
                        tokens_per_minute: throttle_tpm,
                    },
                ),
                refusal_status,
                messages: refusal_message.map(|m| tollgate_core::budget::MessagesInput {
                    refusal: Some(m),
                }),
                low_threshold_pct,
                low_threshold_usd: money("--low-threshold-usd", &low_threshold_usd)?,
                low_threshold_tokens,
                warnings: warnings
                    .iter()
                    .map(|w| {
                        let (pct, message) = w.split_once(':').with_context(|| {
                            format!("--warning {w:?}: expected PCT:MESSAGE, like 75:You've used {{percent_used}}%")
                        })?;
                        Ok(tollgate_core::budget::WarningInput {
                            at_pct: pct.trim().parse().with_context(|| {
                                format!("--warning {w:?}: {pct:?} is not a percentage")
                            })?,
                            message: message.to_string(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
                footer,
                alert_thresholds: None,
                webhook_url: None,
                models,
                rollover: money("--rollover-cap-usd", &rollover_cap_usd)?.map(|c| {
                    tollgate_core::budget::RolloverInput {
                        cap_usd: Some(c),
                        cap_tokens: None,
                    }
                }),
                ..Default::default()
            };
            let state = inspect(&cfg).await?;
            if let Ok(b) = tollgate_core::budget::Budget::from_input(
                id.clone(),
                &input,
                tollgate_core::budget::Tier::Override,
                None,
            ) {
                tollgate_gateway::budgets::check_models(&b, &state.router, &state.catalog())
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let store = state.store.clone();
            // A replaced budget keeps its creation time (and so its rollover).
            let created_at = match store.budget(&id).await? {
                Some(old) => old.created_at,
                None => Timestamp::now(),
            };
            let stored = tollgate_store::StoredBudget {
                id: id.clone(),
                input,
                created_at,
            };
            state
                .budgets
                .put(&*store, stored)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("budget {id} saved");
        }
        BudgetsCmd::Delete { cfg, id } => {
            let config = load_config(&cfg)?;
            if config
                .budgets
                .budgets()
                .is_ok_and(|b| b.iter().any(|b| b.id == id))
            {
                bail!("budget {id:?} is declared in the config file; remove it there");
            }
            let store = open_store(&config).await?;
            if !store.delete_budget(&id).await? {
                bail!("no budget with id {id:?}");
            }
            println!("deleted budget {id}");
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn serve(config: Config) -> Result<()> {
    let store = open_store(&config).await?;
    let addr = config.listen_addr();
    let database = config.database.clone();
    let (budgets_fail, cycles_fail) = (config.budgets.fail.as_str(), config.cycles.fail.as_str());
    let gateway = Gateway::new(config, store, &env).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, %database, "tollgate listening");
    // What a hold the ledger cannot make durable does, said once at start.
    tracing::info!(
        budgets_fail,
        cycles_fail,
        "ledger failure policy (closed: refuse; open: go on with the hold in memory)"
    );
    // A plain line on stdout, for scripts and tests that start on port 0.
    println!("tollgate listening on http://{local}");
    gateway
        .serve(listener, async {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing in-flight requests and writing usage records");
        })
        .await
        .context("serving")?;
    tracing::info!("stopped");
    Ok(())
}

fn parse_expiry(s: &Option<String>) -> Result<Option<Timestamp>> {
    s.as_deref()
        .map(|t| {
            t.parse::<Timestamp>()
                .with_context(|| format!("--expires-at {t:?}: expected RFC 3339"))
        })
        .transpose()
}

async fn keys(action: KeysCmd) -> Result<()> {
    match action {
        KeysCmd::Create {
            cfg,
            name,
            user,
            tenant,
            role,
            trusted,
            models,
            expires_at,
            format,
        } => {
            let store = open_store(&load_config(&cfg)?).await?;
            let (rec, key) = identity::create_key(
                &*store,
                NewKey {
                    name,
                    user,
                    tenant,
                    role,
                    trusted,
                    models,
                    expires_at: parse_expiry(&expires_at)?,
                },
            )
            .await?;
            if format == Format::Json {
                let v = tollgate_gateway::api::KeyView::created(&rec, &key);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{key}");
                eprintln!("created key {} (shown once; store it now)", rec.id);
            }
        }
        KeysCmd::List { cfg, format } => {
            let store = open_store(&load_config(&cfg)?).await?;
            let keys = store.list_keys().await?;
            if format == Format::Json {
                let v = tollgate_gateway::api::KeyList {
                    keys: keys.iter().map(key_json).collect(),
                };
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<22} {:<8} {:<12} {:<12} {:<8} {:<8} NAME",
                    "ID", "PREFIX", "USER", "TENANT", "TRUSTED", "STATUS"
                );
                let now = Timestamp::now();
                for k in keys {
                    let status = k.unusable_reason(now).map_or("active", |r| {
                        if r.contains("revoked") {
                            "revoked"
                        } else {
                            "expired"
                        }
                    });
                    println!(
                        "{:<22} {:<8} {:<12} {:<12} {:<8} {:<8} {}",
                        k.id,
                        k.prefix,
                        k.user.as_deref().unwrap_or("-"),
                        k.tenant.as_deref().unwrap_or("-"),
                        k.trusted,
                        status,
                        k.name.as_deref().unwrap_or("")
                    );
                }
            }
        }
        KeysCmd::Revoke { cfg, id } => {
            let store = open_store(&load_config(&cfg)?).await?;
            if !store.revoke_key(&id, Timestamp::now()).await? {
                bail!("no key with id {id:?}");
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}

async fn usage(action: UsageCmd) -> Result<()> {
    let UsageCmd::Report {
        cfg,
        by,
        since,
        until,
        only,
        format,
    } = action;
    let group_by = GroupBy::parse_list(&by).map_err(|e| anyhow::anyhow!("--by: {e}"))?;
    let now = Timestamp::now();
    let t = |s: &Option<String>, flag: &str| -> Result<Option<Timestamp>> {
        s.as_deref()
            .map(|x| parse_time(x, now).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
            .transpose()
    };
    let q = ReportQuery {
        group_by,
        from: t(&since, "--since")?,
        to: t(&until, "--until")?,
        filter: ReportFilter {
            user: only.user,
            tenant: only.tenant,
            session: only.session,
            key_id: only.key,
            model: only.model,
            provider: only.provider,
            budget: only.budget,
        },
        raw_only: false,
    };
    let store = open_store(&load_config(&cfg)?).await?;
    let report = admin::run_report(&*store, &q).await?;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&admin::report_json(&report))?
        ),
        Format::Csv => print!("{}", admin::report_csv(&report)),
        Format::Table => print!("{}", admin::report_table(&report)),
    }
    Ok(())
}

/// An admin view's error as the CLI's.
fn admin_err(e: admin::AdminError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message())
}

async fn admin_keys(action: AdminKeysCmd) -> Result<()> {
    match action {
        AdminKeysCmd::Create {
            cfg,
            tenant,
            name,
            format,
        } => {
            if tenant.trim().is_empty() || tenant.contains('/') {
                bail!("--tenant must be a tenant's name (not empty, no '/')");
            }
            let store = open_store(&load_config(&cfg)?).await?;
            let (rec, key) = identity::create_admin_key(&*store, tenant, name).await?;
            if format == Format::Json {
                let v = tollgate_gateway::api::AdminKeyView::new(&rec, Some(&key));
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("created admin key {} for tenant {}", rec.id, rec.tenant);
                println!("{key}");
                println!(
                    "(shown only now; it sees and changes only tenant {})",
                    rec.tenant
                );
            }
        }
        AdminKeysCmd::List { cfg } => {
            let store = open_store(&load_config(&cfg)?).await?;
            println!(
                "{:<22} {:<10} {:<16} {:<20} REVOKED",
                "ID", "PREFIX", "TENANT", "NAME"
            );
            for k in store.admin_keys().await? {
                println!(
                    "{:<22} {:<10} {:<16} {:<20} {}",
                    k.id,
                    k.prefix,
                    k.tenant,
                    k.name.as_deref().unwrap_or("-"),
                    k.revoked_at.is_some()
                );
            }
        }
        AdminKeysCmd::Revoke { cfg, id } => {
            let store = open_store(&load_config(&cfg)?).await?;
            if !store.revoke_admin_key(&id, Timestamp::now()).await? {
                bail!("no admin key with id {id:?}");
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}

async fn users(action: UsersCmd) -> Result<()> {
    let UsersCmd::List {
        cfg,
        tenant,
        status,
        format,
    } = action;
    let state = inspect(&cfg).await?;
    let mut users = Vec::new();
    let mut after = None;
    // Every page: the CLI lists them all.
    loop {
        let page = admin::users_page(&state, tenant.clone(), status.clone(), 1000, after)
            .await
            .map_err(admin_err)?;
        users.extend(page.users);
        match page.next_cursor {
            Some(_) => {
                let last = users.last().map(|u| (u.user_id.clone(), u.tenant.clone()));
                if last.is_none() {
                    break;
                }
                after = last;
            }
            None => break,
        }
    }
    if format == Format::Json {
        let page = tollgate_gateway::api::UsersPage {
            users,
            next_cursor: None,
        };
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    let cell = |used: &Option<String>, limit: &Option<String>| match (used, limit) {
        (Some(u), Some(l)) => format!("{u} / {l}"),
        (Some(u), None) => u.clone(),
        _ => "-".into(),
    };
    println!(
        "{:<20} {:<12} {:>24} {:>24}  {:<10} BUDGETS",
        "USER", "TENANT", "DAILY USD", "MONTHLY USD", "STATUS"
    );
    for u in &users {
        println!(
            "{:<20} {:<12} {:>24} {:>24}  {:<10} {}",
            u.user_id,
            u.tenant.as_deref().unwrap_or("-"),
            cell(&u.daily_used_usd, &u.daily_limit_usd),
            cell(&u.monthly_used_usd, &u.monthly_limit_usd),
            u.status,
            u.budgets.len()
        );
    }
    Ok(())
}

async fn stats(cfg: &ConfigArg, format: Format) -> Result<()> {
    let state = inspect(cfg).await?;
    let v = admin::stats_view(&state).await.map_err(admin_err)?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<12} {:>10} {:>8} {:>14} {:>14} {:>16}",
        "", "REQUESTS", "REFUSED", "INPUT", "OUTPUT", "COST USD"
    );
    for (name, t) in [
        ("today", &v.today),
        ("this month", &v.this_month),
        ("all time", &v.all_time),
    ] {
        println!(
            "{:<12} {:>10} {:>8} {:>14} {:>14} {:>16}",
            name, t.requests, t.refused, t.input_tokens, t.output_tokens, t.cost_usd
        );
    }
    for (title, rows) in [
        ("Top models this month", &v.top_models),
        ("Top spenders this month", &v.top_spenders),
    ] {
        println!();
        println!("{title}:");
        for r in &rows.rows {
            println!(
                "  {:<30} {:>16}  {} requests",
                r.keys.first().cloned().flatten().unwrap_or_default(),
                r.cost.to_string(),
                r.requests
            );
        }
    }
    Ok(())
}

fn per_mtok(flag: &str, s: &str) -> Result<Price> {
    Price::parse_per_mtok(s)
        .with_context(|| format!("{flag} {s:?}: expected USD per million tokens, e.g. \"0.15\""))
}

async fn pricing(action: PricingCmd) -> Result<()> {
    match action {
        PricingCmd::List {
            cfg,
            filter,
            format,
        } => {
            let config = load_config(&cfg)?;
            let store = open_store(&config).await?;
            let catalog = tollgate_gateway::build_catalog(&config, &*store).await?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&catalog_json(&catalog))?);
                return Ok(());
            }
            println!(
                "catalog effective {}",
                tollgate_core::pricing::CATALOG_EFFECTIVE_DATE
            );
            println!(
                "{:<34} {:<10} {:>9} {:>9} {:>9} {:>9} {:>9}  SOURCE",
                "MODEL", "PROVIDER", "INPUT", "OUTPUT", "CACHED", "WRITE5M", "WRITE1H"
            );
            let opt = |p: Option<Price>| p.map_or("-".to_string(), |p| p.to_per_mtok_string());
            for e in catalog
                .entries()
                .filter(|e| filter.as_deref().is_none_or(|f| e.model.contains(f)))
            {
                let p = &e.price;
                println!(
                    "{:<34} {:<10} {:>9} {:>9} {:>9} {:>9} {:>9}  {}{}",
                    e.model,
                    e.provider.as_deref().unwrap_or("-"),
                    p.input.to_per_mtok_string(),
                    p.output.to_per_mtok_string(),
                    opt(p.cached_input),
                    opt(p.cache_write_5m),
                    opt(p.cache_write_1h),
                    match e.source {
                        PriceSource::Builtin => "builtin",
                        PriceSource::Config => "config",
                        PriceSource::Admin => "set",
                    },
                    if p.long_context.is_some() {
                        " (+long context tier)"
                    } else {
                        ""
                    },
                );
            }
            println!("prices in USD per million tokens");
        }
        PricingCmd::Set {
            cfg,
            model,
            input,
            output,
            provider,
            cached_input,
            cache_write_5m,
            cache_write_1h,
            reasoning,
        } => {
            let mut patch = serde_json::Map::new();
            for (flag, key, v) in [
                ("--input", "input_per_mtok", &input),
                ("--output", "output_per_mtok", &output),
                ("--cached-input", "cached_input_per_mtok", &cached_input),
                (
                    "--cache-write-5m",
                    "cache_write_5m_per_mtok",
                    &cache_write_5m,
                ),
                (
                    "--cache-write-1h",
                    "cache_write_1h_per_mtok",
                    &cache_write_1h,
                ),
                ("--reasoning", "reasoning_per_mtok", &reasoning),
            ] {
                if let Some(v) = v {
                    let p = per_mtok(flag, v)?;
                    patch.insert(key.into(), serde_json::json!(p.to_per_mtok_string()));
                }
            }
            if let Some(p) = provider {
                patch.insert("provider".into(), serde_json::json!(p));
            }
            let config = load_config(&cfg)?;
            let store = open_store(&config).await?;
            let catalog = tollgate_gateway::build_catalog(&config, &*store).await?;
            let stored = tollgate_gateway::admin::merge_price(catalog.get(&model), patch)
                .map_err(|e| anyhow::anyhow!("{model}: {e}"))?;
            store.put_price(&model, &stored).await?;
            println!(
                "{model}: input {} output {} USD/Mtok",
                stored.price.input.to_per_mtok_string(),
                stored.price.output.to_per_mtok_string()
            );
        }
        PricingCmd::Import {
            cfg,
            file,
            provider,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message("reading");
            let report = crate::import::parse(&text, provider.as_deref(), |i, n| {
                bar.set_length(n);
                bar.set_position(i);
            })
            .with_context(|| format!("importing {}", file.display()))?;
            let store = open_store(&load_config(&cfg)?).await?;
            bar.set_message("storing");
            bar.set_length(report.models.len() as u64);
            bar.set_position(0);
            let imported = report.models.len();
            for m in report.models {
                let stored = tollgate_store::StoredPrice {
                    price: m.price,
                    provider: m.provider,
                };
                store.put_price(&m.model, &stored).await?;
                bar.inc(1);
            }
            bar.finish_and_clear();
            println!(
                "imported {} model prices from {} ({} entries without a per-token price skipped)",
                imported,
                file.display(),
                report.skipped.len()
            );
        }
    }
    Ok(())
}

async fn check_config(arg: &ConfigArg) -> Result<()> {
    let config = load_config(arg)?;
    println!("configuration is valid");
    println!("  listen:    {}", config.listen);
    println!("  database:  {}", config.database);
    println!("  admin keys: {}", config.admin_keys.len());
    println!("  require_auth: {}", config.require_auth);
    match config.retention.records_days {
        0 => println!("  retention: usage records kept forever"),
        d => println!("  retention: usage records kept {d} days (hourly rollups kept)"),
    }
    if let Some(l) = &config.metrics.listen {
        let key = if config.metrics.require_admin_key {
            "admin key required"
        } else {
            "no key"
        };
        println!("  metrics: /metrics also on {l} ({key})");
    }
    for p in &config.providers {
        let key = match &p.api_key_env {
            Some(var) if env(var).is_some_and(|v| !v.is_empty()) => format!("key from {var} (set)"),
            Some(var) => format!("key from {var} (NOT SET)"),
            None => "no key".into(),
        };
        println!("  provider {} ({}) {} — {key}", p.name, p.kind, p.base_url);
    }
    for m in &config.models {
        match &m.upstream_model {
            Some(u) => println!("  model {} → {} as {u}", m.pattern, m.provider),
            None => println!("  model {} → {}", m.pattern, m.provider),
        }
    }
    Ok(())
}
