//! `tollgate-bench`: Tollgate side by side with direct calls and a plain
//! nginx `proxy_pass`, in one run, on one machine, written to BENCHMARKS.md.
//!
//! Usage: `cargo build --release --workspace && target/release/tollgate-bench [--quick]`
//!
//! Processes: a minimal upstream (this binary, `upstream` subcommand),
//! nginx (if installed), and several `tollgate serve` instances (the
//! release binary next to this one), each set up differently. The proxy
//! under test is pinned to core 0; the load generator and the upstream share
//! the other cores. Targets are measured in turn, A B A B, so drift hits all
//! alike. Results are ratios to the baselines measured in the same run.

mod cycles;
mod load;
mod report;
mod reports;
mod setup;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tollgate-bench",
    about = "Tollgate vs direct vs nginx, in one run"
)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// A few seconds in all, tiny load: checks the benchmark runs and its
    /// numbers are sane (CI), not a measurement.
    #[arg(long)]
    quick: bool,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Also run steady load on the 100k setup for this many seconds and
    /// report its RSS over time (600 checks the "no growth" goal).
    #[arg(long, default_value_t = 0)]
    soak: u64,
    /// Where to write the report (`-` for stdout only).
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// The tollgate binary (default: next to this one).
    #[arg(long)]
    tollgate: Option<PathBuf>,
    /// An earlier tollgate build, measured beside the current one as
    /// `tollgate-full (baseline)`.
    #[arg(long)]
    baseline: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// (internal) run the minimal upstream.
    Upstream {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// The Cycles API under load: reserve latency, reserve + commit per second.
    Cycles {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// The tollgate binary (default: next to this one).
        #[arg(long)]
        tollgate: Option<PathBuf>,
    },
    /// Report times over many records: from the rollups vs the raw records.
    Reports {
        /// How many records to generate.
        #[arg(long, default_value_t = 5_000_000)]
        records: usize,
        /// Where the database is written (deleted afterwards).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// A fresh directory under `parent` for a benchmark's database.
fn tempfile_in(parent: &std::path::Path) -> anyhow::Result<PathBuf> {
    let dir = parent.join(format!("tollgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.cmd {
        Some(Cmd::Upstream { listen }) => return upstream::serve(listen),
        Some(Cmd::Reports { records, dir }) => {
            let dir = tempfile_in(&dir)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let md = rt.block_on(reports::run(&dir, records));
            let _ = std::fs::remove_dir_all(&dir);
            println!("{}", md?);
            return Ok(());
        }
        Some(Cmd::Cycles { seconds, tollgate }) => {
            let tollgate = match tollgate {
                Some(p) => p,
                None => std::env::current_exe()?.with_file_name("tollgate"),
            };
            let dir = tempfile_in(&std::env::temp_dir())?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let md = rt.block_on(cycles::run(
                &tollgate,
                &dir,
                Duration::from_secs_f64(seconds),
            ));
            let _ = std::fs::remove_dir_all(&dir);
            println!("{}", md?);
            return Ok(());
        }
        None => {}
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = setup::Pinning::plan(cores);
    if let Some(reexec) = plan.reexec_pinned()? {
        // This process (the load generator) moves off the proxy's core.
        std::process::exit(reexec);
    }
    let tollgate = match &args.tollgate {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("tollgate"),
    };
    anyhow::ensure!(
        tollgate.exists(),
        "no tollgate binary at {} — build it first: cargo build --release --workspace",
        tollgate.display()
    );
    let dur = if args.quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs_f64(args.seconds)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(setup::run(setup::Options {
        quick: args.quick,
        soak: args.soak,
        dur,
        tollgate,
        baseline: args.baseline.clone(),
        plan,
    }))?;
    let md = report.markdown();
    println!("{md}");
    if args.out.as_os_str() != "-" {
        std::fs::write(&args.out, &md)
            .with_context(|| format!("writing {}", args.out.display()))?;
        eprintln!("wrote {}", args.out.display());
    }
    report.check_sane()
}
