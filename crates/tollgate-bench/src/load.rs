//! The load generator: HTTP/1.1 keep-alive connections driven by tokio,
//! latency in HDR histograms (microseconds).
//!
//! - closed loop: `conns` connections each send the next request when the
//!   last completes — maximum throughput;
//! - open loop at a fixed rate: requests are *scheduled* at fixed intervals
//!   and latency is measured from the scheduled time, so a stall counts for
//!   every request it delayed (coordinated-omission safe).

use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub host: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct Job {
    pub path: &'static str,
    pub body: Bytes,
}

pub struct Outcome {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latency to the last byte.
    pub latency: Histogram<u64>,
    /// Latency to the first body byte.
    pub ttfb: Histogram<u64>,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            requests: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            ttfb: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
        }
    }

    pub fn merge(&mut self, o: &Outcome) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.elapsed += o.elapsed;
        let _ = self.latency.add(&o.latency);
        let _ = self.ttfb.add(&o.ttfb);
    }

    pub fn rps(&self) -> f64 {
        // Reporting only: rates are not money.
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome::new()
    }
}

pub(crate) type Sender = http1::SendRequest<Full<Bytes>>;

pub(crate) async fn connect(t: &Target) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(&t.host).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A JSON POST to `path` on `t`, with its headers.
pub(crate) fn post_to(t: &Target, path: &str) -> hyper::http::request::Builder {
    let mut b = Request::post(path)
        .header("host", &t.host)
        .header("content-type", "application/json");
    for (k, v) in &t.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b
}

/// One request; returns (ttfb, total) or an error.
async fn one(
    sender: &mut Sender,
    t: &Target,
    job: &Job,
) -> anyhow::Result<(Duration, Duration, u16)> {
    let start = Instant::now();
    let b = post_to(t, job.path);
    sender.ready().await?;
    let resp = sender
        .send_request(b.body(Full::new(job.body.clone()))?)
        .await?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if first.is_none() && frame.data_ref().is_some_and(|d| !d.is_empty()) {
            first = Some(start.elapsed());
        }
    }
    let total = start.elapsed();
    Ok((first.unwrap_or(total), total, status))
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// Closed loop: `conns` connections as fast as they go for `dur`.
pub async fn closed(t: &Target, job: &Job, conns: usize, dur: Duration) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + dur;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (t, job) = (t.clone(), job.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::new();
            let mut sender = connect(&t).await?;
            let started = Instant::now();
            while Instant::now() < deadline {
                match one(&mut sender, &t, &job).await {
                    Ok((ttfb, total, 200)) => {
                        out.requests += 1;
                        let _ = out.latency.record(micros(total));
                        let _ = out.ttfb.record(micros(ttfb));
                    }
                    Ok(_) => out.errors += 1,
                    Err(_) => {
                        out.errors += 1;
                        sender = connect(&t).await?;
                    }
                }
            }
            out.elapsed = started.elapsed();
            anyhow::Ok(out)
        }));
    }
    let mut total = Outcome::new();
    let mut max_elapsed = Duration::ZERO;
    for task in tasks {
        let o = task.await??;
        max_elapsed = max_elapsed.max(o.elapsed);
        total.merge(&o);
    }
    total.elapsed = max_elapsed;
    Ok(total)
}

/// Open loop at `rate` requests/second over `conns` connections.
pub async fn open(
    t: &Target,
    job: &Job,
    conns: usize,
    rate: f64,
    dur: Duration,
) -> anyhow::Result<Outcome> {
    let per_conn = Duration::from_secs_f64(conns as f64 / rate.max(1.0));
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::new();
    for i in 0..conns {
        let (t, job) = (t.clone(), job.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::new();
            let mut sender = connect(&t).await?;
            // Stagger the connections across one interval.
            let mut next = start + per_conn.mul_f64(i as f64 / conns as f64);
            let end = start + dur;
            while next < end {
                tokio::time::sleep_until(next.into()).await;
                match one(&mut sender, &t, &job).await {
                    Ok((_, _, 200)) => {
                        out.requests += 1;
                        // From the *scheduled* time: includes any queueing.
                        let _ = out.latency.record(micros(next.elapsed()));
                    }
                    Ok(_) => out.errors += 1,
                    Err(_) => {
                        out.errors += 1;
                        sender = connect(&t).await?;
                    }
                }
                next += per_conn;
            }
            out.elapsed = dur;
            anyhow::Ok(out)
        }));
    }
    let mut total = Outcome::new();
    for task in tasks {
        total.merge(&task.await??);
    }
    total.elapsed = dur;
    Ok(total)
}
