//! The stream filter: frames a streamed response, lets the format's meter
//! read each event, and returns the bytes to forward.

use bytes::{Bytes, BytesMut};
use tollgate_core::Usage;

use crate::sse::{FrameTooLarge, JsonArrayFramer, SseEvent, SseFramer};
use crate::{Endpoint, WireFormat, anthropic, gemini, openai};

/// Largest single stream event accepted from an upstream.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// What a meter wants done with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// Drop it: the usage-only chunk Tollgate asked for, not the client.
    Drop,
}

/// Reads one wire format's stream events.
pub trait StreamMeter: Send {
    fn on_event(&mut self, event: Option<&str>, data: &[u8]) -> Verdict;
    /// The provider's own usage, if it arrived (latest cumulative value).
    fn usage(&self) -> Option<Usage>;
    /// Whether [`usage`](Self::usage) is the provider's final count, as
    /// opposed to a partial one (Anthropic's `message_start` alone, a
    /// Gemini stream cut before its last chunk).
    fn usage_is_final(&self) -> bool;
    /// Output text seen so far, for counting when usage never arrives.
    fn output_text(&self) -> &str;
    fn model(&self) -> Option<&str>;
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    TooLarge(#[from] FrameTooLarge),
}

enum Framer {
    Sse(SseFramer),
    JsonArray(JsonArrayFramer),
}

/// A stream in flight: push upstream bytes in, get client bytes out.
pub struct StreamFilter {
    framer: Framer,
    meter: Box<dyn StreamMeter>,
    events: u64,
}

impl StreamFilter {
    /// `drop_usage_chunk`: Tollgate added `stream_options.include_usage`
    /// itself, so the usage-only chunk must not reach the client.
    /// `sse`: false for Gemini's JSON-array stream (no `alt=sse`).
    pub fn new(endpoint: Endpoint, drop_usage_chunk: bool, sse: bool) -> StreamFilter {
        let meter: Box<dyn StreamMeter> = match endpoint.format() {
            WireFormat::OpenAi if endpoint == Endpoint::Responses => {
                Box::new(openai::ResponsesMeter::default())
            }
            WireFormat::OpenAi => Box::new(openai::ChatMeter::new(drop_usage_chunk)),
            WireFormat::Anthropic => Box::new(anthropic::MessagesMeter::default()),
            WireFormat::Gemini => Box::new(gemini::GeminiMeter::default()),
        };
        let framer = if sse {
            Framer::Sse(SseFramer::new(MAX_EVENT_BYTES))
        } else {
            Framer::JsonArray(JsonArrayFramer::new(MAX_EVENT_BYTES))
        };
        StreamFilter {
            framer,
            meter,
            events: 0,
        }
    }

    /// Feeds upstream bytes; returns what to send to the client now
    /// (possibly empty while an event is incomplete).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, StreamError> {
        match &mut self.framer {
            Framer::Sse(f) => {
                let events = f.push(chunk)?;
                Ok(self.forward(events))
            }
            Framer::JsonArray(f) => {
                for obj in f.push(chunk)? {
                    self.events += 1;
                    self.meter.on_event(None, &obj);
                }
                Ok(Bytes::copy_from_slice(chunk))
            }
        }
    }

    /// The upstream ended: flush a trailing unterminated event.
    pub fn finish(&mut self) -> Bytes {
        match &mut self.framer {
            Framer::Sse(f) => {
                let ev: Vec<SseEvent> = f.finish().into_iter().collect();
                self.forward(ev)
            }
            Framer::JsonArray(_) => Bytes::new(),
        }
    }

    fn forward(&mut self, events: Vec<SseEvent>) -> Bytes {
        if events.len() == 1 {
            let ev = events.into_iter().next().expect("one event");
            self.events += 1;
            return match self.meter.on_event(ev.event.as_deref(), &ev.data) {
                Verdict::Forward => ev.raw,
                Verdict::Drop => Bytes::new(),
            };
        }
        let mut out = BytesMut::new();
        for ev in events {
            self.events += 1;
            if self.meter.on_event(ev.event.as_deref(), &ev.data) == Verdict::Forward {
                out.extend_from_slice(&ev.raw);
            }
        }
        out.freeze()
    }

    pub fn usage(&self) -> Option<Usage> {
        self.meter.usage()
    }

    pub fn usage_is_final(&self) -> bool {
        self.meter.usage_is_final()
    }

    pub fn output_text(&self) -> &str {
        self.meter.output_text()
    }

    pub fn model(&self) -> Option<&str> {
        self.meter.model()
    }

    pub fn events(&self) -> u64 {
        self.events
    }
}
