//! Starting the processes under test and running the measurements.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;

use crate::load::{self, Job, Outcome, Target};
use crate::report::{Report, Row, Summary};

/// Which cores run what.
#[derive(Clone, Debug)]
pub struct Pinning {
    pub cores: usize,
    pub proxy: Option<String>,
    pub others: Option<String>,
}

impl Pinning {
    pub fn plan(cores: usize) -> Pinning {
        // After pinning itself, this process sees fewer cores: the parent
        // passes the machine's count down.
        let cores = std::env::var("TOLLGATE_BENCH_CORES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cores);
        let taskset = Command::new("taskset").arg("--version").output().is_ok();
        if cores < 2 || !taskset {
            return Pinning {
                cores,
                proxy: None,
                others: None,
            };
        }
        Pinning {
            cores,
            proxy: Some("0".into()),
            others: Some(format!("1-{}", cores - 1)),
        }
    }

    pub fn describe(&self) -> String {
        match (&self.proxy, &self.others) {
            (Some(p), Some(o)) => format!(
                "{} cores; the proxy under test (nginx or Tollgate) pinned to core {p}, load generator and upstream to cores {o} (taskset)",
                self.cores
            ),
            _ => format!(
                "{} core(s); no pinning (taskset missing or a single core): numbers include contention",
                self.cores
            ),
        }
    }

    /// Re-runs this process pinned to the non-proxy cores, once.
    pub fn reexec_pinned(&self) -> anyhow::Result<Option<i32>> {
        let Some(cores) = &self.others else {
            return Ok(None);
        };
        if std::env::var_os("TOLLGATE_BENCH_PINNED").is_some() {
            return Ok(None);
        }
        let status = Command::new("taskset")
            .arg("-c")
            .arg(cores)
            .arg(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env("TOLLGATE_BENCH_PINNED", "1")
            .env("TOLLGATE_BENCH_CORES", self.cores.to_string())
            .status()?;
        Ok(Some(status.code().unwrap_or(1)))
    }

    fn command(&self, program: &str, on_proxy_core: bool) -> Command {
        let cores = if on_proxy_core {
            &self.proxy
        } else {
            &self.others
        };
        match cores {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.arg("-c").arg(c).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }
}

pub struct Options {
    pub quick: bool,
    pub dur: Duration,
    /// Seconds of steady load on the 100k setup, sampling its RSS (0: none).
    pub soak: u64,
    pub tollgate: PathBuf,
    /// Another tollgate binary (an earlier build) run as `tollgate-full
    /// (baseline)` beside the others: before/after in one run.
    pub baseline: Option<PathBuf>,
    pub plan: Pinning,
}

/// A child process killed on drop.
pub(crate) struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn rss_kib(&self) -> u64 {
        rss_of(self.child.id())
    }
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Spawns `cmd` and waits for a stdout line containing `marker`; returns
/// what follows it.
pub(crate) fn spawn_until(mut cmd: Command, marker: &str) -> anyhow::Result<(Proc, String)> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let out = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = marker.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(i) = line.find(&wanted) {
                let _ = tx.send(line[i + wanted.len()..].trim().to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(v) => Ok((Proc { child }, v)),
        Err(_) => {
            let _ = child.kill();
            bail!("{cmd:?} did not print {marker:?}")
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn host_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

fn nginx(
    plan: &Pinning,
    upstream: &str,
    dir: &std::path::Path,
) -> anyhow::Result<Option<(Proc, String)>> {
    let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(bin) = bin else { return Ok(None) };
    let port = free_port()?;
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\npid {pid};\nerror_log {log} error;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_max_body_size 64m;\n  client_body_buffer_size 2m;\n  proxy_buffering off;\n  keepalive_requests 10000000;\n  upstream up {{ server {upstream}; keepalive 256; keepalive_requests 10000000; }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://up;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            log = std::env::temp_dir()
                .join("tollgate-bench-nginx-error.log")
                .display(),
        ),
    )?;
    let mut cmd = plan.command(bin, true);
    cmd.arg("-c")
        .arg(&conf)
        .arg("-g")
        .arg("daemon off;")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().context("starting nginx")?;
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        if Instant::now() > deadline {
            bail!("nginx did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Some((Proc { child }, addr)))
}

/// A Tollgate instance set up one way.
struct Gw {
    proc: Proc,
    target: Target,
    idle_rss: u64,
    /// (budgets that apply, target): keys of the full setup with 0, 1 and
    /// 10 budgets (its main key has 3).
    by_budgets: Vec<(usize, Target)>,
}

/// One Tollgate instance to start: its name, whether it authenticates and
/// budgets (`full`), how many extra keys and budgets it loads, the period
/// of its key budget, and the binary.
struct Setup<'a> {
    name: &'a str,
    full: bool,
    extra: usize,
    key_period: &'a str,
    bin: &'a std::path::Path,
}

async fn tollgate(
    opts: &Options,
    dir: &std::path::Path,
    upstream: &str,
    setup: Setup<'_>,
) -> anyhow::Result<Gw> {
    let Setup {
        name,
        full,
        extra,
        key_period,
        bin,
    } = setup;
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let db = dir.join(format!("{stem}.db"));
    let db_url = format!("sqlite://{}", db.display());
    let store = tollgate_store::open(&db_url).await?;
    let mut headers = Vec::new();
    let mut budgets = String::new();
    let mut by_budgets = Vec::new();
    if full {
        let (rec, key) = tollgate_gateway::identity::create_key(
            &*store,
            tollgate_gateway::identity::NewKey {
                user: Some("alice".into()),
                tenant: Some("acme".into()),
                ..Default::default()
            },
        )
        .await?;
        headers.push(("authorization".to_string(), format!("Bearer {key}")));
        if extra == 0 {
            // Keys whose users have 0, 1 and 10 budgets (no tenant, so only
            // their user budgets apply): cost per budget per request.
            for (n, user) in [(0usize, "dave"), (1, "carol"), (10, "bob")] {
                let (_, key) = tollgate_gateway::identity::create_key(
                    &*store,
                    tollgate_gateway::identity::NewKey {
                        user: Some(user.into()),
                        ..Default::default()
                    },
                )
                .await?;
                for b in 0..n {
                    let input: tollgate_core::budget::BudgetInput = serde_json::from_value(
                        serde_json::json!({
                            "scope": "user", "subject": user, "limit_usd": "100000000", "period": "monthly"
                        }),
                    )?;
                    store
                        .put_budget(&tollgate_store::StoredBudget {
                            id: format!("{user}-{b}"),
                            input,
                            created_at: jiff::Timestamp::now(),
                        })
                        .await?;
                }
                by_budgets.push((
                    n,
                    Target {
                        name: format!("{n} budgets"),
                        host: String::new(),
                        headers: vec![("authorization".into(), format!("Bearer {key}"))],
                    },
                ));
            }
        }
        budgets = format!(
            "budgets:\n  overrides:\n    - {{ scope: tenant, subject: acme, limit_usd: \"100000000\", period: monthly }}\n    - {{ scope: user, subject: alice, limit_usd: \"100000000\", period: daily }}\n    - {{ scope: key, subject: {}, limit_usd: \"100000000\", period: \"{key_period}\" }}\n",
            rec.id
        );
        for i in 0..extra {
            let (_r, _k) = tollgate_gateway::identity::create_key(
                &*store,
                tollgate_gateway::identity::NewKey {
                    user: Some(format!("u{i}")),
                    tenant: Some(format!("t{}", i % 1000)),
                    ..Default::default()
                },
            )
            .await?;
            let input: tollgate_core::budget::BudgetInput = serde_json::from_value(
                serde_json::json!({
                    "scope": "user", "subject": format!("u{i}"), "limit_usd": "10", "period": "monthly"
                }),
            )?;
            store
                .put_budget(&tollgate_store::StoredBudget {
                    id: format!("bud-{i}"),
                    input,
                    created_at: jiff::Timestamp::now(),
                })
                .await?;
        }
    }
    drop(store);
    let config = dir.join(format!("{stem}.yaml"));
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndatabase: {db_url}\nrequire_auth: {auth}\nmax_body_bytes: 67108864\nproviders:\n  - {{ name: up, kind: openai, base_url: \"http://{upstream}/v1\" }}\nmodels:\n  - {{ match: \"gpt-*\", provider: up }}\n{budgets}",
            auth = full,
        ),
    )?;
    let mut cmd = opts.plan.command(&bin.display().to_string(), true);
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "error");
    let (proc, url) = spawn_until(cmd, "tollgate listening on ")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = proc.rss_kib();
    let host = host_of(&url);
    for (_, t) in &mut by_budgets {
        t.host = host.clone();
    }
    if full {
        by_budgets.push((
            3,
            Target {
                name: "3 budgets".into(),
                host: host.clone(),
                headers: headers.clone(),
            },
        ));
        by_budgets.sort_by_key(|(n, _)| *n);
    }
    Ok(Gw {
        proc,
        target: Target {
            name: name.into(),
            host,
            headers,
        },
        idle_rss,
        by_budgets,
    })
}

fn chat_body(prompt_bytes: usize, stream: bool) -> Bytes {
    // Words of the prompt: realistic text for the tokenizer, not one long run.
    let words = "the quick brown fox jumps over the lazy dog ";
    let text: String = words.repeat(prompt_bytes / words.len() + 1)[..prompt_bytes].to_string();
    Bytes::from(
        serde_json::json!({"model": "gpt-4o-mini", "max_tokens": 128, "stream": stream, "messages": [{"role": "user", "content": text}]})
            .to_string(),
    )
}

fn summary(h: &hdrhistogram::Histogram<u64>) -> Summary {
    Summary {
        p50: h.value_at_quantile(0.50),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        n: h.len(),
    }
}

pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let dir = std::env::temp_dir().join(format!("tollgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let me = std::env::current_exe()?;
    let up_port = free_port()?;
    let mut cmd = opts.plan.command(&me.display().to_string(), false);
    cmd.arg("upstream")
        .arg("--listen")
        .arg(format!("127.0.0.1:{up_port}"));
    let (_upstream, up_url) = spawn_until(cmd, "upstream listening on ")?;
    let up = host_of(&up_url);

    let nginx = nginx(&opts.plan, &up, &dir)?;
    let extra = if opts.quick { 200 } else { 100_000 };
    let bin = opts.tollgate.clone();
    let setup = |name, full, extra, key_period| Setup {
        name,
        full,
        extra,
        key_period,
        bin: &bin,
    };
    let meter = tollgate(
        &opts,
        &dir,
        &up,
        setup("tollgate-metering", false, 0, "lifetime"),
    )
    .await?;
    let full = tollgate(
        &opts,
        &dir,
        &up,
        setup("tollgate-full", true, 0, "lifetime"),
    )
    .await?;
    let baseline = match &opts.baseline {
        Some(b) => {
            let s = Setup {
                bin: b,
                ..setup("tollgate-full (baseline)", true, 0, "lifetime")
            };
            Some(tollgate(&opts, &dir, &up, s).await?)
        }
        None => None,
    };
    // The same three budgets with the key's over a rolling hour.
    let rolling = tollgate(
        &opts,
        &dir,
        &up,
        setup("tollgate-full-rolling", true, 0, "rolling:1h"),
    )
    .await?;
    let scaled = tollgate(
        &opts,
        &dir,
        &up,
        setup("tollgate-full-100k", true, extra, "lifetime"),
    )
    .await?;

    let direct = Target {
        name: "direct".into(),
        host: up.clone(),
        headers: vec![],
    };
    let mut targets = vec![direct.clone()];
    if let Some((_, addr)) = &nginx {
        targets.push(Target {
            name: "nginx".into(),
            host: addr.clone(),
            headers: vec![],
        });
    }
    targets.push(meter.target.clone());
    // The baseline goes before the build measured, so a slot's position in
    // the A B A B rounds never favours the newer build.
    if let Some(b) = &baseline {
        targets.push(b.target.clone());
    }
    targets.push(full.target.clone());
    targets.push(rolling.target.clone());
    targets.push(scaled.target.clone());

    let job = Job {
        path: "/v1/chat/completions",
        body: chat_body(1024, false),
    };
    let conns = if opts.quick { 4 } else { 64 };
    let rounds = 2;
    let mut report = Report::new(&opts, nginx.is_some(), extra);

    // Warm up every target (connections, caches, first-period budget state).
    for t in &targets {
        load::closed(t, &job, 2, Duration::from_millis(200)).await?;
    }

    // 1. Max throughput, A B A B.
    let mut tput: Vec<Outcome> = targets.iter().map(|_| Outcome::default()).collect();
    let mut load_rss = 0;
    for _ in 0..rounds {
        for (i, t) in targets.iter().enumerate() {
            let o = load::closed(t, &job, conns, opts.dur).await?;
            if t.name == "tollgate-full" {
                load_rss = load_rss.max(full.proc.rss_kib());
            }
            tput[i].merge(&o);
        }
    }
    for (t, o) in targets.iter().zip(&tput) {
        report.throughput.push(Row {
            name: t.name.clone(),
            rps: o.requests as f64 / o.elapsed.as_secs_f64().max(1e-9),
            errors: o.errors,
            lat: summary(&o.latency),
        });
    }

    // 2. Latency at concurrency 1.
    let mut c1: Vec<Outcome> = targets.iter().map(|_| Outcome::default()).collect();
    for _ in 0..rounds {
        for (i, t) in targets.iter().enumerate() {
            c1[i].merge(&load::closed(t, &job, 1, opts.dur).await?);
        }
    }
    for (t, o) in targets.iter().zip(&c1) {
        report.latency_c1.push(Row {
            name: t.name.clone(),
            rps: o.rps(),
            errors: o.errors,
            lat: summary(&o.latency),
        });
    }

    // 3. Latency at a fixed rate: half of nginx's max (direct's without nginx).
    let base = report
        .throughput
        .iter()
        .find(|r| r.name == "nginx")
        .or(report.throughput.first())
        .map_or(100.0, |r| r.rps);
    let rate = (base / 2.0).max(10.0);
    report.fixed_rate = rate;
    let fixed_conns = if opts.quick { 4 } else { 32 };
    let mut fr: Vec<Outcome> = targets.iter().map(|_| Outcome::default()).collect();
    for _ in 0..rounds {
        for (i, t) in targets.iter().enumerate() {
            fr[i].merge(&load::open(t, &job, fixed_conns, rate, opts.dur).await?);
        }
    }
    for (t, o) in targets.iter().zip(&fr) {
        report.latency_fixed.push(Row {
            name: t.name.clone(),
            rps: o.requests as f64 / o.elapsed.as_secs_f64().max(1e-9),
            errors: o.errors,
            lat: summary(&o.latency),
        });
    }

    // 4. Streaming, 100 chunks, concurrency 1: first and last byte.
    let stream_job = Job {
        path: "/v1/chat/completions",
        body: chat_body(1024, true),
    };
    let mut st: Vec<Outcome> = targets.iter().map(|_| Outcome::default()).collect();
    for _ in 0..rounds {
        for (i, t) in targets.iter().enumerate() {
            st[i].merge(&load::closed(t, &stream_job, 1, opts.dur).await?);
        }
    }
    for (t, o) in targets.iter().zip(&st) {
        report.streaming.push((
            t.name.clone(),
            summary(&o.ttfb),
            summary(&o.latency),
            o.errors,
        ));
    }

    // 5. Prompt size: the cost of counting input tokens for the reservation.
    let sizes: &[(usize, &str)] = if opts.quick {
        &[(1024, "1 KB"), (100 * 1024, "100 KB")]
    } else {
        &[
            (1024, "1 KB"),
            (100 * 1024, "100 KB"),
            (1024 * 1024, "1 MB"),
        ]
    };
    let full_t = full.target.clone();
    for (bytes, label) in sizes {
        let job = Job {
            path: "/v1/chat/completions",
            body: chat_body(*bytes, false),
        };
        let mut d = Outcome::default();
        let mut n = Outcome::default();
        let mut g = Outcome::default();
        for _ in 0..rounds {
            d.merge(&load::closed(&direct, &job, 1, opts.dur).await?);
            if let Some((_, addr)) = &nginx {
                n.merge(
                    &load::closed(
                        &Target {
                            name: "nginx".into(),
                            host: addr.clone(),
                            headers: vec![],
                        },
                        &job,
                        1,
                        opts.dur,
                    )
                    .await?,
                );
            }
            g.merge(&load::closed(&full_t, &job, 1, opts.dur).await?);
        }
        report.prompts.push((
            label.to_string(),
            summary(&d.latency),
            (n.len_opt()).then(|| summary(&n.latency)),
            summary(&g.latency),
            d.errors + n.errors + g.errors,
        ));
    }

    report.rss.push((
        "tollgate-metering".into(),
        meter.idle_rss,
        meter.proc.rss_kib(),
    ));
    report.rss.push((
        "tollgate-full".into(),
        full.idle_rss,
        load_rss.max(full.proc.rss_kib()),
    ));
    report.rss.push((
        format!("tollgate-full-100k ({extra} keys + budgets)"),
        scaled.idle_rss,
        scaled.proc.rss_kib(),
    ));
    if let Some((p, _)) = &nginx {
        report
            .rss
            .push(("nginx (master)".into(), p.rss_kib(), p.rss_kib()));
    }

    growth(
        &opts,
        &mut report,
        nginx.as_ref().map(|(_, a)| a.as_str()),
        &direct,
        &full,
    )
    .await?;
    if opts.soak > 0 {
        report.soak = soak(&opts, &scaled, &job).await?;
    }

    report.ledger = crate::report::ledger_bench(opts.quick);
    report.ingest = crate::report::ingest_bench(&dir, opts.quick).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

/// How overhead grows with concurrency, budgets per request and stream
/// length (prompt size and keys in the system have their own tables).
async fn growth(
    opts: &Options,
    report: &mut Report,
    nginx: Option<&str>,
    direct: &Target,
    full: &Gw,
) -> anyhow::Result<()> {
    let job = Job {
        path: "/v1/chat/completions",
        body: chat_body(1024, false),
    };
    let base = match nginx {
        Some(addr) => Target {
            name: "nginx".into(),
            host: addr.to_string(),
            headers: vec![],
        },
        None => direct.clone(),
    };
    let levels: &[usize] = if opts.quick {
        &[1, 8]
    } else {
        &[1, 10, 100, 1000]
    };
    for &conns in levels {
        let mut b = Outcome::default();
        let mut g = Outcome::default();
        for _ in 0..2 {
            b.merge(&load::closed(&base, &job, conns, opts.dur / 2).await?);
            g.merge(&load::closed(&full.target, &job, conns, opts.dur / 2).await?);
        }
        report
            .by_concurrency
            .push((conns, row(&base.name, &b), row("tollgate-full", &g)));
    }
    let conns = if opts.quick { 4 } else { 64 };
    for (n, t) in &full.by_budgets {
        let mut c1 = Outcome::default();
        let mut max = Outcome::default();
        for _ in 0..2 {
            c1.merge(&load::closed(t, &job, 1, opts.dur / 2).await?);
            max.merge(&load::closed(t, &job, conns, opts.dur / 2).await?);
        }
        report
            .by_budgets
            .push((*n, row(&t.name, &c1), row(&t.name, &max)));
    }
    let stream_job = Job {
        path: "/v1/chat/completions",
        body: chat_body(1024, true),
    };
    let lengths: &[usize] = if opts.quick {
        &[10, 100]
    } else {
        &[10, 100, 1000]
    };
    for &n in lengths {
        let with = |t: &Target| {
            let mut t = t.clone();
            t.headers.push(("x-bench-chunks".into(), n.to_string()));
            t
        };
        let (d_t, g_t) = (with(direct), with(&full.target));
        let mut d = Outcome::default();
        let mut g = Outcome::default();
        for _ in 0..2 {
            d.merge(&load::closed(&d_t, &stream_job, 1, opts.dur / 2).await?);
            g.merge(&load::closed(&g_t, &stream_job, 1, opts.dur / 2).await?);
        }
        report
            .by_stream
            .push((n, row("direct", &d), row("tollgate-full", &g)));
    }
    Ok(())
}

fn row(name: &str, o: &Outcome) -> Row {
    Row {
        name: name.to_string(),
        rps: o.rps(),
        errors: o.errors,
        lat: summary(&o.latency),
    }
}

/// Steady load (1,000 req/s, open loop, records persisted) on the
/// 100k setup for `opts.soak` seconds; RSS sampled ten times.
async fn soak(opts: &Options, gw: &Gw, job: &Job) -> anyhow::Result<crate::report::Soak> {
    let total = Duration::from_secs(opts.soak);
    let step = total / 10;
    let rate = if opts.quick { 50.0 } else { 1_000.0 };
    let mut out = crate::report::Soak {
        rate,
        samples: vec![(0, gw.proc.rss_kib())],
        ..Default::default()
    };
    let start = Instant::now();
    for _ in 0..10 {
        let o = load::open(&gw.target, job, 16, rate, step).await?;
        out.requests += o.requests;
        out.errors += o.errors;
        out.samples
            .push((start.elapsed().as_secs(), gw.proc.rss_kib()));
    }
    Ok(out)
}

trait LenOpt {
    fn len_opt(&self) -> bool;
}

impl LenOpt for Outcome {
    fn len_opt(&self) -> bool {
        self.requests > 0
    }
}
