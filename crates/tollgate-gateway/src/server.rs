//! The HTTP/1.1 server in front of the app, with limits, so slow, idle or
//! half-open clients cannot starve the gateway:
//!
//! - **header read timeout** — a connection must send a complete request
//!   head within `connections.header_read_timeout_ms` of opening (and of
//!   starting each next request);
//! - **body rate** — a request body must arrive within
//!   `connections.body_timeout_ms` plus its size at
//!   `connections.body_min_bytes_per_sec` (a trickled body is cut);
//! - **idle keep-alive timeout** — a connection with no request in flight
//!   for `connections.idle_timeout_ms` is closed;
//! - **open connections** at most `connections.max`: at the limit the
//!   oldest connection with no request in flight (idle, or still sending
//!   its head) is closed to make room — an attacker holding thousands of
//!   half-open connections cannot lock ordinary clients out — and when
//!   every connection is busy, accepting waits (logged);
//! - **accept errors** (out of file descriptors) back off and shed an idle
//!   connection instead of failing the loop;
//! - **bounded memory per connection**: the read buffer holds at most
//!   64 KiB (request heads larger than that are refused).
//!
//! Graceful shutdown stops accepting, lets connections finish, and closes
//! idle ones at once.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tower::ServiceExt;

/// `connections:` in the config.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max: usize,
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout_ms: u64,
    /// Time every request body gets, on top of its size at the minimum rate.
    pub body_timeout_ms: u64,
    pub body_min_bytes_per_sec: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max: 10_000,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            body_timeout_ms: 10_000,
            body_min_bytes_per_sec: 64 * 1024,
        }
    }
}

/// Most bytes of a request head (and of one read) held per connection.
const MAX_BUF: usize = 64 * 1024;

/// One open connection, as the accept loop sees it.
struct Open {
    /// Requests in flight on it (a response body still streaming counts).
    inflight: Arc<AtomicUsize>,
    /// Tells its task to drop the connection.
    evict: Arc<Notify>,
}

#[derive(Default)]
struct Table {
    next: u64,
    /// By id: ids grow, so the first entries are the oldest connections.
    open: BTreeMap<u64, Open>,
}

impl Table {
    /// Closes the oldest connection with no request in flight; `false` if
    /// every connection is busy.
    fn evict_oldest_idle(&mut self) -> bool {
        let Some(id) = self
            .open
            .iter()
            .find(|(_, c)| c.inflight.load(Ordering::Acquire) == 0)
            .map(|(id, _)| *id)
        else {
            return false;
        };
        if let Some(c) = self.open.remove(&id) {
            c.evict.notify_one();
        }
        true
    }
}

/// Logs at most once per ten seconds per kind (a flood must not flood the log).
struct RateLimitedLog(AtomicU64);

impl RateLimitedLog {
    fn ready(&self, started: Instant) -> bool {
        let now = started.elapsed().as_secs() + 10;
        let last = self.0.load(Ordering::Relaxed);
        now >= last + 10
            && self
                .0
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Raises the soft limit on open files to the hard limit (the default 1024
/// would be exhausted long before `connections.max`); returns the limit.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let fds = raise_fd_limit();
    // Leave room for the store, upstream connections and the journal.
    let max = limits
        .max
        .min(usize::try_from(fds.saturating_sub(256)).unwrap_or(usize::MAX))
        .max(1);
    if max < limits.max {
        tracing::warn!(
            configured = limits.max,
            open_file_limit = fds,
            "connections.max lowered to what the open-file limit allows: {max}"
        );
    }
    let permits = Arc::new(Semaphore::new(max));
    let table = Arc::new(Mutex::new(Table::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let full_log = RateLimitedLog(AtomicU64::new(0));
    let accept_log = RateLimitedLog(AtomicU64::new(0));
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the limit, make room by closing the oldest idle
        // connection; if all are busy, wait for one to finish.
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let evicted = table
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .evict_oldest_idle();
                if full_log.ready(started) {
                    tracing::warn!(
                        max,
                        "connection limit reached: {}",
                        if evicted {
                            "closing the oldest idle connection"
                        } else {
                            "every connection is busy; new connections wait"
                        }
                    );
                }
                tokio::select! {
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = &mut shutdown => break,
                }
            }
        };
        let (tcp, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    drop(permit);
                    // Out of file descriptors (or memory): shed an idle
                    // connection and back off instead of spinning.
                    if matches!(e.raw_os_error(), Some(23 | 24)) {
                        table.lock().unwrap_or_else(|e| e.into_inner()).evict_oldest_idle();
                    }
                    if accept_log.ready(started) {
                        tracing::warn!(error = %e, "accept failed; backing off");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Streams are many small writes: Nagle's algorithm with delayed ACKs
        // would hold each one for up to 40 ms.
        let _ = tcp.set_nodelay(true);
        let inflight = Arc::new(AtomicUsize::new(0));
        let evict = Arc::new(Notify::new());
        let id = {
            let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
            let id = t.next;
            t.next += 1;
            t.open.insert(
                id,
                Open {
                    inflight: inflight.clone(),
                    evict: evict.clone(),
                },
            );
            id
        };
        let conn = Connection {
            app: app.clone(),
            limits: limits.clone(),
            inflight,
            evict,
            stop: stop_rx.clone(),
        };
        let table = table.clone();
        tokio::spawn(async move {
            conn.run(tcp).await;
            table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .open
                .remove(&id);
            drop(permit);
        });
    }
    // Drain: connections finish their requests; idle ones close at once.
    let _ = stop_tx.send(true);
    let _ = permits.acquire_many(max as u32).await;
    Ok(())
}

struct Connection {
    app: Router,
    limits: ConnectionLimits,
    inflight: Arc<AtomicUsize>,
    evict: Arc<Notify>,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, tcp: tokio::net::TcpStream) {
        let idle = Duration::from_millis(self.limits.idle_timeout_ms);
        let body_limits = BodyLimits {
            base: Duration::from_millis(self.limits.body_timeout_ms),
            min_rate: self.limits.body_min_bytes_per_sec.max(1),
        };
        let idle_since = Arc::new(Mutex::new(Instant::now()));
        let (app, inflight, since) = (self.app.clone(), self.inflight.clone(), idle_since.clone());
        let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let guard = InFlight::enter(&inflight, &since);
            let req = req.map(|b| Body::new(RateLimitedBody::new(b, body_limits)));
            let app = app.clone();
            async move {
                let resp = match app.oneshot(req).await {
                    Ok(r) => r,
                    Err(e) => match e {},
                };
                Ok::<_, Infallible>(resp.map(|b| {
                    Body::new(Guarded {
                        inner: b,
                        _guard: guard,
                    })
                }))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(self.limits.header_read_timeout_ms))
            .max_buf_size(MAX_BUF)
            .keep_alive(true);
        // Upgrades: GraphQL subscriptions are WebSockets. An upgraded
        // connection leaves this loop (and its slot): the subscription
        // handler bounds how many live at once.
        let conn = builder
            .serve_connection(TokioIo::new(tcp), svc)
            .with_upgrades();
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            // Wake when the connection would have been idle long enough,
            // not on a fixed tick: ten thousand idle connections must not
            // mean ten thousand wake-ups a second.
            let quiet = idle_since
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed();
            let wait = if self.inflight.load(Ordering::Acquire) == 0 {
                idle.saturating_sub(quiet)
            } else {
                idle
            };
            let check = tokio::time::sleep(wait.max(Duration::from_millis(50)));
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = self.evict.notified() => return,
                changed = self.stop.changed(), if !closing => {
                    if changed.is_err() || *self.stop.borrow() {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
                _ = check, if !closing => {
                    let quiet = idle_since.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
                    if self.inflight.load(Ordering::Acquire) == 0 && quiet >= idle {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// Counts a request in flight on its connection until its response body
/// is done (or dropped).
struct InFlight {
    n: Arc<AtomicUsize>,
    idle_since: Arc<Mutex<Instant>>,
}

impl InFlight {
    fn enter(n: &Arc<AtomicUsize>, idle_since: &Arc<Mutex<Instant>>) -> InFlight {
        n.fetch_add(1, Ordering::AcqRel);
        InFlight {
            n: n.clone(),
            idle_since: idle_since.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.n.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
    }
}

/// A response body that holds its request's [`InFlight`] guard.
struct Guarded {
    inner: Body,
    _guard: InFlight,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Clone, Copy, Debug)]
struct BodyLimits {
    base: Duration,
    min_rate: u64,
}

/// A request body that must keep a minimum rate: it fails once
/// `base + received / min_rate` has passed since the request started.
struct RateLimitedBody {
    inner: Incoming,
    limits: BodyLimits,
    started: tokio::time::Instant,
    received: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl RateLimitedBody {
    fn new(inner: Incoming, limits: BodyLimits) -> RateLimitedBody {
        let started = tokio::time::Instant::now();
        RateLimitedBody {
            inner,
            limits,
            started,
            received: 0,
            deadline: Box::pin(tokio::time::sleep_until(started + limits.base)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body too slow: fewer than {0} bytes a second")]
pub struct BodyTooSlow(u64);

impl HttpBody for RateLimitedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.received += d.len() as u64;
                    let allowed = this.limits.base
                        + Duration::from_millis(
                            this.received.saturating_mul(1000) / this.limits.min_rate,
                        );
                    this.deadline.as_mut().reset(this.started + allowed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Some(Err(Box::new(BodyTooSlow(this.limits.min_rate)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
