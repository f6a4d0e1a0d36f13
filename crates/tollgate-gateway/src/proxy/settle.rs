//! Settlement: turning what was observed of a response into one usage
//! record, exactly once, on every path — complete, upstream error, broken
//! stream, or a client that went away (a drop guard).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use jiff::Timestamp;
use tollgate_budgets::rates::{Admitted, RateLimiter};
use tollgate_core::ledger::Amount;
use tollgate_core::tokens::count_tokens;
use tollgate_core::{Flags, ModelPrice, Money, Usage, UsageRecord};
use tollgate_providers::{ParsedRequest, StreamFilter};

use crate::budgets::{Applied, BudgetEngine, Reserved};
use crate::identity::Caller;

/// Most tokens one usage field is charged: far beyond any model's context
/// or output. A larger report is clamped to it and flagged `usage_suspicious`.
pub const USAGE_CEILING: u64 = 100_000_000;

/// Everything about a request that its record needs, gathered before
/// forwarding, and its reservation. Settles exactly once: through
/// [`Draft::finish`], or on drop (a dropped handler: client gone, panic).
pub struct Draft {
    pub request_id: String,
    pub time: Timestamp,
    pub started: Instant,
    pub caller: Caller,
    pub provider: String,
    pub model_requested: String,
    pub model_served: String,
    pub price: Option<ModelPrice>,
    pub request: Arc<ParsedRequest>,
    pub flags: Flags,
    pub budgets: Arc<BudgetEngine>,
    pub applied: Vec<Applied>,
    pub reserved: Option<Reserved>,
    /// The request went to the provider (from here on, it may be billed).
    pub forwarded: bool,
    /// When the request was sent upstream, and how long the upstream took
    /// to answer in full (for `tollgate_overhead_seconds`).
    upstream_sent: Option<Instant>,
    upstream_took: Option<Duration>,
    /// The input tokens reserved for (a bound when no budget applied).
    pub input_estimate: Option<u64>,
    /// The output limit per choice the upstream was sent (Tollgate's, or
    /// the caller's own when Tollgate set none).
    pub output_limit: Option<u64>,
    /// What the rate limits admitted for this request (settled to its
    /// usage, or given back if it never reached a provider).
    pub rate: Vec<(Arc<RateLimiter>, Admitted)>,
    /// A stream reserved a first slice: top it up by this many output
    /// tokens per choice as it runs.
    pub topup: Option<u64>,
    done: bool,
}

impl Draft {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        request_id: String,
        time: Timestamp,
        started: Instant,
        caller: Caller,
        provider: String,
        model_requested: String,
        model_served: String,
        price: Option<ModelPrice>,
        request: Arc<ParsedRequest>,
        budgets: Arc<BudgetEngine>,
    ) -> Draft {
        Draft {
            request_id,
            time,
            started,
            caller,
            provider,
            model_requested,
            model_served,
            price,
            request,
            flags: Flags::default(),
            budgets,
            applied: Vec::new(),
            reserved: None,
            forwarded: false,
            upstream_sent: None,
            upstream_took: None,
            input_estimate: None,
            output_limit: None,
            rate: Vec::new(),
            topup: None,
            done: false,
        }
    }

    /// The request goes to the provider now.
    pub fn sending(&mut self) {
        self.forwarded = true;
        self.upstream_sent = Some(Instant::now());
    }

    /// The upstream's answer is complete (its body read, its stream
    /// ended or broken): the upstream's part of the request's time ends.
    pub fn upstream_ended(&mut self) {
        if self.upstream_took.is_none() {
            self.upstream_took = self.upstream_sent.map(|t| t.elapsed());
        }
    }

    /// Tollgate's own time on the request: all of it less the upstream's
    /// (still running, when the client left first).
    fn overhead(&self) -> Option<Duration> {
        let sent = self.upstream_sent?;
        let upstream = self.upstream_took.unwrap_or_else(|| sent.elapsed());
        Some(self.started.elapsed().saturating_sub(upstream))
    }

    /// The record for `usage`, not yet written.
    pub fn record(
        &self,
        usage: Usage,
        status: u16,
        ttft: Option<Duration>,
        flags: Flags,
    ) -> UsageRecord {
        let cost = self
            .price
            .as_ref()
            .map_or(Money::ZERO, |p| p.cost(&usage).total());
        UsageRecord {
            request_id: self.request_id.clone(),
            time: self.time,
            key_id: self.caller.key_id.clone(),
            user: self.caller.user.clone(),
            tenant: self.caller.tenant.clone(),
            session: self.caller.session.clone(),
            budgets: self.applied.iter().map(|a| a.budget.id.clone()).collect(),
            provider: self.provider.clone(),
            model_requested: self.model_requested.clone(),
            model_served: self.model_served.clone(),
            usage,
            cost,
            latency_ms: self.started.elapsed().as_millis() as u64,
            ttft_ms: ttft.map(|d| d.as_millis() as u64),
            status,
            flags: Flags {
                usage_estimated: flags.usage_estimated,
                client_disconnected: flags.client_disconnected,
                stream_interrupted: flags.stream_interrupted,
                blocked: flags.blocked,
                usage_suspicious: flags.usage_suspicious,
                ..self.flags
            },
        }
    }

    /// Charges `usage` and writes the record — once. Usage is first held
    /// to what is plausible (see [`Draft::bounded`]).
    pub fn finish(
        &mut self,
        usage: Usage,
        status: u16,
        ttft: Option<Duration>,
        mut flags: Flags,
    ) -> UsageRecord {
        let (usage, suspicious) = self.bounded(usage);
        if suspicious {
            flags.usage_suspicious = true;
            self.budgets
                .suspicious
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(request_id = %self.request_id, ?usage, "implausible usage from the provider; charged up to the ceiling and flagged");
        }
        let rec = self.record(usage, status, ttft, flags);
        if !self.request.endpoint.is_billable() {
            // Free endpoints (count_tokens) are neither charged nor recorded.
            self.done = true;
            return rec;
        }
        if !self.done {
            self.done = true;
            if let Some(d) = self.overhead() {
                self.budgets.metrics.overhead(d);
            }
            let actual = Amount::new(rec.cost, usage.total_tokens());
            self.budgets
                .settle(self.reserved.as_ref(), &self.applied, actual, rec.clone());
            for (rl, a) in self.rate.drain(..) {
                rl.settle(&a, usage.total_tokens());
            }
        }
        rec
    }

    /// Usage as it will be charged: every field at most [`USAGE_CEILING`]
    /// (a provider answer cannot make a cost no store holds), and whether it
    /// is suspicious — clamped, or output far beyond what the request was
    /// allowed (more than twice the granted limit × choices, plus 1,024).
    /// Suspicious usage is still charged as reported up to the ceiling:
    /// the provider bills what it reports.
    fn bounded(&self, mut u: Usage) -> (Usage, bool) {
        let mut clamped = false;
        for t in [
            &mut u.input_tokens,
            &mut u.output_tokens,
            &mut u.cached_input_tokens,
            &mut u.cache_write_5m_tokens,
            &mut u.cache_write_1h_tokens,
            &mut u.reasoning_tokens,
        ] {
            if *t > USAGE_CEILING {
                *t = USAGE_CEILING;
                clamped = true;
            }
        }
        let allowed = self.allowed_output();
        let beyond =
            allowed.is_some_and(|a| u.output_tokens > a.saturating_mul(2).saturating_add(1024));
        (u, clamped || beyond)
    }

    /// Output tokens the upstream was allowed in all: the limit per choice
    /// it was sent (Tollgate's granted limit, or the caller's own) times
    /// the choices; `None` when the request carried no limit at all (the
    /// upstream's default applies).
    pub fn allowed_output(&self) -> Option<u64> {
        self.output_limit
            .map(|l| l.saturating_mul(self.request.choices.max(1)))
    }

    fn counted_input(&self) -> u64 {
        self.input_estimate
            .unwrap_or_else(|| count_tokens(&self.request.prompt_text()))
    }

    /// The most this request can have cost: its input and every allowed
    /// output token of every choice (what a broken or unreadable answer is
    /// charged: the provider may bill the whole generation).
    pub fn worst_case_usage(&self) -> Usage {
        Usage {
            input_tokens: self.counted_input(),
            output_tokens: self.allowed_output().unwrap_or_else(|| {
                self.budgets
                    .default_max_output_tokens
                    .saturating_mul(self.request.choices.max(1))
            }),
            ..Usage::default()
        }
    }

    /// Usage for a complete answer without usage fields: the input counted,
    /// the output counted from the body's text but never more than the
    /// output the request was allowed (a huge body does not make a huge
    /// charge, nor a long count: at most a bounded prefix is read).
    pub fn estimate_from_body(&self, body: &[u8]) -> Usage {
        let allowed = self.allowed_output().unwrap_or(u64::MAX);
        // No token is longer than 64 bytes of text in practice; the prefix
        // bounds the work (and counting stops at 64 KB: beyond, the bytes
        // bound the tokens), the min bounds the charge.
        let prefix = &body[..body
            .len()
            .min(usize::try_from(allowed.saturating_mul(64)).unwrap_or(usize::MAX))];
        let counted = tollgate_core::tokens::estimate_tokens(&String::from_utf8_lossy(prefix));
        Usage {
            input_tokens: self.counted_input(),
            output_tokens: counted.min(allowed),
            ..Usage::default()
        }
    }

    /// Usage when the provider's final count never came: the partial count
    /// if any, input counted from the prompt where the provider said
    /// nothing, output counted from the text that was streamed.
    pub fn estimate(&self, partial: Option<Usage>, output_text: &str) -> Usage {
        let counted_out = count_tokens(output_text);
        let mut u = partial.unwrap_or_default();
        if u.input_tokens == 0 {
            u.input_tokens = count_tokens(&self.request.prompt_text());
        }
        u.output_tokens = u
            .output_tokens
            .max(counted_out.saturating_add(u.reasoning_tokens));
        u
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        if self.done || !self.request.endpoint.is_billable() {
            return;
        }
        if !self.forwarded {
            // Nothing reached a provider: give the reservation back.
            self.done = true;
            if let Some(r) = &self.reserved {
                self.budgets.release(r);
            }
            for (rl, a) in self.rate.drain(..) {
                rl.undo(&a);
            }
            return;
        }
        // Forwarded, then abandoned before a response (the client hung up on
        // a non-streaming request, which drops the upstream call too): the
        // provider saw the prompt, the output is unknown.
        let usage = self.estimate(None, "");
        let flags = Flags {
            usage_estimated: true,
            client_disconnected: true,
            ..Flags::default()
        };
        self.finish(usage, 499, None, flags);
    }
}

/// How a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Complete,
    UpstreamBroken,
    ClientGone,
    /// Past its output limit by the margin: cut by Tollgate.
    OverLimit,
    /// Still open when the shutdown grace ran out.
    Shutdown,
    /// A budget could not fund the stream's next slice: ended cleanly.
    BudgetCut,
}

/// A stream is cut once its visible output passes what it was allowed by
/// a tenth plus this many tokens (a broken upstream that ignores the limit).
const CUT_MARGIN_TOKENS: u64 = 64;

/// The smallest top-up (per choice) tried when a whole slice does not fit.
const MIN_TOPUP_TOKENS: u64 = 16;

/// The metered stream state; its `Drop` settles a stream the client abandoned.
struct Metering {
    filter: StreamFilter,
    draft: Option<Draft>,
    status: u16,
    first_byte: Option<Duration>,
    /// Output tokens allowed in all (limit × choices), if the request had a limit.
    allowed: Option<u64>,
    /// Output text length at which to count it again (every token is at
    /// least a byte, so below `allowed` bytes nothing needs counting; then
    /// counts are spaced geometrically, a bounded cost per byte).
    next_count_at: usize,
    /// Turns true when the shutdown grace is over.
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// Top-ups (`budgets.streaming: topup`): the slice, the output tokens
    /// seen so far (all choices) and how much of the text they count.
    slice: Option<u64>,
    seen: u64,
    counted_len: usize,
    /// No budget could fund even the smallest top-up: the stream ends
    /// once its coverage is used.
    dry: bool,
    /// A top-up was refused, but the stream could not be closed at that
    /// point (inside a JSON-array element): closed at the next boundary.
    cut_pending: bool,
    /// The stream takes a usage footer before its finish event.
    footer: Option<StreamFooter>,
}

/// A stream's footer: the budgets' own, else this global one.
pub struct StreamFooter {
    pub global: Option<tollgate_core::template::Template>,
}

impl Metering {
    /// The held finish event and what followed, with the footer rendered
    /// from the budgets' state now (this stream's reservation counted).
    async fn release_footer(&mut self) -> Bytes {
        let text = match (&self.footer, &self.draft) {
            (Some(f), Some(d)) => {
                let states = d.budgets.states(&d.applied).await;
                super::footer_for(f.global.as_ref(), &d.applied, &states)
            }
            _ => None,
        };
        self.filter.release(text.as_deref())
    }

    /// Tops the reservation up, a slice at a time, while fewer than half a
    /// slice per choice of reserved output is left beyond what was seen.
    /// `false` when a budget cannot fund the next slice.
    async fn top_up(&mut self) -> bool {
        let (Some(slice), Some(draft)) = (self.slice, self.draft.as_mut()) else {
            return true;
        };
        let text = self.filter.output_text();
        if text.len() > self.counted_len {
            // Counted piece by piece: a little above the whole's count,
            // never below it in practice (tops up early, not late).
            self.seen += count_tokens(text.get(self.counted_len..).unwrap_or_default());
            self.counted_len = text.len();
        }
        let choices = draft.request.choices.max(1);
        loop {
            let Some(mut r) = draft.reserved.take() else {
                return true;
            };
            let covered = r.granted.saturating_mul(choices);
            // Topped up half a slice ahead; once no budget can fund more,
            // streamed on until a small guard of what is covered is left
            // (output the provider made that has not arrived yet).
            let ahead = if self.dry {
                (slice / 4).max(MIN_TOPUP_TOKENS) * choices
            } else {
                slice * choices / 2
            };
            if self.seen + ahead < covered {
                draft.reserved = Some(r);
                return true;
            }
            if self.dry {
                draft.reserved = Some(r);
                return false;
            }
            let template = draft.record(
                Usage {
                    input_tokens: draft.input_estimate.unwrap_or(0),
                    ..Usage::default()
                },
                0,
                None,
                Flags::default(),
            );
            // The slice, else smaller pieces, so a budget's last tokens
            // are used before the stream ends.
            let mut more = slice;
            let funded = loop {
                if draft.budgets.extend(&mut r, more, template.clone()).await {
                    break true;
                }
                if more <= MIN_TOPUP_TOKENS {
                    break false;
                }
                more = (more / 2).max(MIN_TOPUP_TOKENS);
            };
            draft.reserved = Some(r);
            self.dry = !funded;
        }
    }

    /// The closing events that end the stream here, cleanly, if it can be
    /// ended here.
    fn closing(&mut self) -> Option<Bytes> {
        let draft = self.draft.as_ref()?;
        // The usage reported is what the stream is charged: the output its
        // reservation covered (see `settle`).
        let covered = draft.reserved.as_ref().map_or(0, |r| {
            r.granted.saturating_mul(draft.request.choices.max(1))
        });
        let usage = Usage {
            input_tokens: draft.input_estimate.unwrap_or(0),
            output_tokens: self.seen.max(covered),
            ..Usage::default()
        };
        // OpenAI chat reports usage only to a client that asked for it.
        let chat = matches!(
            draft.request.endpoint,
            tollgate_providers::Endpoint::ChatCompletions
                | tollgate_providers::Endpoint::Completions
        );
        let report = (!chat || draft.request.client_wants_usage_chunk).then_some(&usage);
        self.filter.close(report)
    }

    /// Whether the visible output has passed the allowed output by the margin.
    fn over_limit(&mut self) -> bool {
        let Some(allowed) = self.allowed else {
            return false;
        };
        let text = self.filter.output_text();
        if text.len() < self.next_count_at {
            return false;
        }
        self.next_count_at = text.len() + (text.len() / 4).max(256);
        count_tokens(text) > allowed + allowed / 10 + CUT_MARGIN_TOKENS
    }

    fn settle(&mut self, end: End) {
        let Some(mut draft) = self.draft.take() else {
            return;
        };
        draft.upstream_ended();
        let final_usage = self.filter.usage().filter(|_| self.filter.usage_is_final());
        let mut suspicious = false;
        let (usage, estimated) = match final_usage {
            // Ended for its budget: charged what its reservation covered —
            // the provider may have generated that much before it stopped.
            _ if end == End::BudgetCut => {
                let covered = draft.reserved.as_ref().map_or(0, |r| {
                    r.granted.saturating_mul(draft.request.choices.max(1))
                });
                let mut u = draft.estimate(self.filter.usage(), self.filter.output_text());
                u.output_tokens = u.output_tokens.max(covered);
                (u, true)
            }
            Some(mut u) => {
                // Usage far below what visibly streamed is not believed: the
                // stream is charged what it streamed. Counted only when the
                // text is long enough to contradict the report.
                let text = self.filter.output_text();
                let floor = u
                    .output_tokens
                    .saturating_mul(2)
                    .saturating_add(CUT_MARGIN_TOKENS);
                if text.len() as u64 > floor {
                    let streamed = count_tokens(text);
                    if streamed > floor {
                        u.output_tokens = streamed.saturating_add(u.reasoning_tokens);
                        suspicious = true;
                    }
                }
                (u, false)
            }
            None => (
                draft.estimate(self.filter.usage(), self.filter.output_text()),
                true,
            ),
        };
        let flags = Flags {
            usage_estimated: estimated,
            client_disconnected: end == End::ClientGone,
            stream_interrupted: matches!(end, End::UpstreamBroken | End::Shutdown),
            usage_suspicious: suspicious,
            ..Flags::default()
        };
        if matches!(end, End::OverLimit | End::BudgetCut) {
            draft.flags.cut_by_budget = true;
        }
        if estimated && end != End::BudgetCut {
            tracing::warn!(request_id = %draft.request_id, ?end, "stream ended without final usage; counted from streamed text");
        }
        draft.finish(usage, self.status, self.first_byte, flags);
    }
}

impl Drop for Metering {
    fn drop(&mut self) {
        self.settle(End::ClientGone);
    }
}

/// Wraps an upstream stream: bytes pass through event by event while the
/// filter meters them; the record is written when the stream ends or is
/// dropped. Dropping it also drops the upstream body, which closes the
/// upstream connection and stops generation.
///
/// Complete events that arrived together go out together: after a frame,
/// frames already buffered are drained into the same write (a burst of 100
/// chunks is a few writes to the client, not 100).
pub fn metered_stream(
    body: Incoming,
    filter: StreamFilter,
    draft: Draft,
    status: u16,
    idle: Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
    footer: Option<StreamFooter>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let allowed = draft.allowed_output();
    let slice = draft.topup;
    let m = Metering {
        filter,
        draft: Some(draft),
        status,
        first_byte: None,
        allowed,
        next_count_at: usize::try_from(allowed.unwrap_or(0)).unwrap_or(usize::MAX),
        shutdown,
        slice,
        seen: 0,
        counted_len: 0,
        dry: false,
        cut_pending: false,
        footer,
    };
    futures_util::stream::unfold(
        Flow::Streaming(body, Box::new(m)),
        move |state| async move {
            let (mut body, mut m) = match state {
                Flow::Streaming(body, m) => (body, m),
                Flow::Failed(e) => return Some((Err(e), Flow::Done)),
                Flow::Done => return None,
            };
            let mut out = bytes::BytesMut::new();
            loop {
                let next = if out.is_empty() {
                    let next = tokio::select! {
                        next = tokio::time::timeout(idle, body.frame()) => Some(next),
                        _ = m.shutdown.wait_for(|stop| *stop) => None,
                    };
                    let Some(next) = next else {
                        // The shutdown grace is over: the stream ends here,
                        // cleanly, charged for what passed.
                        m.settle(End::Shutdown);
                        return None;
                    };
                    next
                } else {
                    match futures_util::FutureExt::now_or_never(body.frame()) {
                        Some(frame) => Ok(frame),
                        None => return Some((Ok(out.freeze()), Flow::Streaming(body, m))),
                    }
                };
                let failure = match next {
                    Ok(Some(Ok(frame))) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        if m.first_byte.is_none() {
                            m.first_byte = m.draft.as_ref().map(|d| d.started.elapsed());
                        }
                        match m.filter.push(&data) {
                            Ok(events) => {
                                out.extend_from_slice(&events);
                                if m.filter.footer_due() {
                                    out.extend_from_slice(&m.release_footer().await);
                                }
                                if !m.filter.finished() && (m.cut_pending || !m.top_up().await) {
                                    // A budget cannot fund more: ended here,
                                    // cleanly, and the upstream is dropped.
                                    m.cut_pending = true;
                                    if let Some(closing) = m.closing() {
                                        out.extend_from_slice(&closing);
                                        m.settle(End::BudgetCut);
                                        return Some((Ok(out.freeze()), Flow::Done));
                                    }
                                }
                                if m.over_limit() {
                                    // Past its limit by the margin: cut, charged
                                    // what it streamed; the upstream is dropped.
                                    tracing::warn!("stream past its output limit; cut");
                                    m.settle(End::OverLimit);
                                    return (!out.is_empty())
                                        .then(|| (Ok(out.freeze()), Flow::Done));
                                }
                                continue;
                            }
                            Err(e) => {
                                m.settle(End::UpstreamBroken);
                                std::io::Error::other(e.to_string())
                            }
                        }
                    }
                    Ok(None) => {
                        out.extend_from_slice(&m.filter.finish());
                        if m.filter.footer_due() {
                            out.extend_from_slice(&m.release_footer().await);
                        }
                        m.settle(End::Complete);
                        return (!out.is_empty()).then(|| (Ok(out.freeze()), Flow::Done));
                    }
                    Ok(Some(Err(e))) => {
                        // A partial trailing event is not forwarded: the client's
                        // stream fails the way the upstream's did.
                        m.settle(End::UpstreamBroken);
                        tracing::warn!(error = %e, "upstream stream broke");
                        std::io::Error::other("upstream stream broke")
                    }
                    Err(_) => {
                        m.settle(End::UpstreamBroken);
                        std::io::Error::other("upstream stream idle timeout")
                    }
                };
                // Complete events read before the failure still reach the client.
                return Some(if out.is_empty() {
                    (Err(failure), Flow::Done)
                } else {
                    (Ok(out.freeze()), Flow::Failed(failure))
                });
            }
        },
    )
}

/// Where a metered stream stands between two polls.
enum Flow {
    Streaming(Incoming, Box<Metering>),
    /// Events were forwarded; the failure that followed them comes next.
    Failed(std::io::Error),
    Done,
}
