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
    /// The events that end this stream here, cleanly, as if its output
    /// limit was reached (the format's length stop reason). `usage`: the
    /// counts to report where the format reports them (OpenAI chat only
    /// when the client asked for a usage chunk).
    fn closing(&self, usage: Option<&Usage>) -> Vec<Closing>;
    /// Whether the event just read ends the answer (it carries the stop
    /// reason): a footer goes before it.
    fn last_was_finish(&self) -> bool {
        false
    }
    /// Whether an event that ends the answer has passed.
    fn finished(&self) -> bool;
    /// The events that replace the finish event `finish` (its data) to
    /// add `footer` as the answer's last text; `None` when the answer has
    /// no text to end (tool calls only) or the format takes no footer.
    fn footer_events(&self, _footer: &str, _finish: &[u8]) -> Option<Vec<Closing>> {
        None
    }
}

/// One event of a stream's closing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closing {
    /// The SSE `event:` name, where the format names events.
    pub event: Option<&'static str>,
    pub data: String,
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
    footer: Footer,
}

/// Where a stream is in taking a footer.
enum Footer {
    Off,
    /// Watching for the finish event.
    Armed,
    /// The finish event arrived: it and what follows wait for the footer.
    Holding {
        finish: Vec<u8>,
        finish_len: usize,
        held: BytesMut,
    },
    Done,
}

fn frame_sse(events: &[Closing], out: &mut BytesMut) {
    for e in events {
        if let Some(name) = e.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\n");
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(e.data.as_bytes());
        out.extend_from_slice(b"\n\n");
    }
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
            footer: Footer::Off,
        }
    }

    /// Holds the finish event for a footer (SSE streams only: a JSON-array
    /// stream is forwarded as it comes and takes none).
    pub fn arm_footer(&mut self) {
        if matches!(self.framer, Framer::Sse(_)) {
            self.footer = Footer::Armed;
        }
    }

    /// Whether the finish event is held, waiting for [`Self::release`].
    pub fn footer_due(&self) -> bool {
        matches!(self.footer, Footer::Holding { .. })
    }

    /// Whether the answer's finish has passed (nothing more to top up).
    pub fn finished(&self) -> bool {
        self.meter.finished()
    }

    /// The held finish event and what followed it, with `footer` as the
    /// answer's last text where the answer has text.
    pub fn release(&mut self, footer: Option<&str>) -> Bytes {
        let Footer::Holding {
            finish,
            finish_len,
            held,
        } = std::mem::replace(&mut self.footer, Footer::Done)
        else {
            return Bytes::new();
        };
        match footer.and_then(|f| self.meter.footer_events(f, &finish)) {
            Some(events) => {
                let mut out = BytesMut::new();
                frame_sse(&events, &mut out);
                out.extend_from_slice(&held[finish_len..]);
                out.freeze()
            }
            None => held.freeze(),
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

    /// Ends the stream here, cleanly: the closing events of the format (see
    /// [`StreamMeter::closing`]), framed as the stream is. `None` for a
    /// JSON-array stream cut inside an object, which nothing can close
    /// validly (the caller ends it as broken).
    pub fn close(&mut self, usage: Option<&Usage>) -> Option<Bytes> {
        let events = self.meter.closing(usage);
        let mut out = BytesMut::new();
        match &self.framer {
            Framer::Sse(_) => frame_sse(&events, &mut out),
            Framer::JsonArray(f) => {
                let mut prefix = f.next_object_prefix()?;
                for e in events {
                    out.extend_from_slice(prefix);
                    out.extend_from_slice(e.data.as_bytes());
                    prefix = b",";
                }
                out.extend_from_slice(b"]");
            }
        }
        Some(out.freeze())
    }

    fn forward(&mut self, events: Vec<SseEvent>) -> Bytes {
        if !matches!(self.footer, Footer::Off | Footer::Done) {
            return self.forward_for_footer(events);
        }
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

    /// [`Self::forward`] while a footer is armed or waiting: the finish
    /// event and everything after it are held.
    fn forward_for_footer(&mut self, events: Vec<SseEvent>) -> Bytes {
        let mut out = BytesMut::new();
        for ev in events {
            self.events += 1;
            if self.meter.on_event(ev.event.as_deref(), &ev.data) == Verdict::Drop {
                continue;
            }
            match &mut self.footer {
                Footer::Holding { held, .. } => held.extend_from_slice(&ev.raw),
                Footer::Armed if self.meter.last_was_finish() => {
                    self.footer = Footer::Holding {
                        finish: ev.data,
                        finish_len: ev.raw.len(),
                        held: BytesMut::from(&ev.raw[..]),
                    };
                }
                _ => out.extend_from_slice(&ev.raw),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn datas(bytes: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(bytes)
            .lines()
            .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
            .collect()
    }

    fn usage(out: u64) -> Usage {
        Usage {
            input_tokens: 7,
            output_tokens: out,
            ..Usage::default()
        }
    }

    /// A stream ended by Tollgate ends the way the format ends one at its
    /// output limit: OpenAI chat with `finish_reason: "length"` on each
    /// choice, the usage chunk when asked, `[DONE]`.
    #[test]
    fn openai_chat_closes_with_length_and_done() {
        let mut f = StreamFilter::new(Endpoint::ChatCompletions, false, true);
        f.push(b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}},{\"index\":1,\"delta\":{\"content\":\"Yo\"}}]}\n\n").unwrap();
        let d = datas(&f.close(Some(&usage(3))).unwrap());
        assert_eq!(d.last().map(String::as_str), Some("[DONE]"));
        let end: Value = serde_json::from_str(&d[0]).unwrap();
        assert_eq!(end["id"], "c1");
        assert_eq!(end["created"], 5);
        assert_eq!(end["choices"][0]["finish_reason"], "length");
        assert_eq!(end["choices"][1]["index"], 1);
        let u: Value = serde_json::from_str(&d[1]).unwrap();
        assert_eq!(u["usage"]["completion_tokens"], 3);
        let d = datas(&f.close(None).unwrap());
        assert_eq!(d.len(), 2, "no usage chunk unless asked");
    }

    #[test]
    fn responses_close_incomplete_with_the_response_so_far() {
        let mut f = StreamFilter::new(Endpoint::Responses, false, true);
        f.push(b"event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"gpt-4.1\",\"output\":[]}}\n\nevent: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"delta\":\"Hi\"}\n\n").unwrap();
        let out = f.close(Some(&usage(2))).unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        assert!(text.starts_with("event: response.incomplete\n"), "{text}");
        let ev: Value = serde_json::from_str(&datas(&out)[0]).unwrap();
        assert_eq!(ev["sequence_number"], 5);
        assert_eq!(ev["response"]["id"], "resp_1");
        assert_eq!(ev["response"]["status"], "incomplete");
        assert_eq!(
            ev["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        assert_eq!(ev["response"]["usage"]["output_tokens"], 2);
    }

    #[test]
    fn anthropic_closes_the_open_block_then_the_message() {
        let mut f = StreamFilter::new(Endpoint::Messages, false, true);
        f.push(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"claude-haiku-4-5\",\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n").unwrap();
        let out = f.close(Some(&usage(4))).unwrap();
        let names: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.strip_prefix("event: ").map(str::to_string))
            .collect();
        assert_eq!(
            names,
            ["content_block_stop", "message_delta", "message_stop"]
        );
        let delta: Value = serde_json::from_str(&datas(&out)[1]).unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
        assert_eq!(delta["usage"]["output_tokens"], 4);
    }

    #[test]
    fn gemini_closes_with_max_tokens_in_either_framing() {
        let chunk = br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hi"}]},"index":0}],"modelVersion":"gemini-2.5-flash"}"#;
        let mut sse = StreamFilter::new(Endpoint::StreamGenerateContent, false, true);
        let mut first = b"data: ".to_vec();
        first.extend_from_slice(chunk);
        first.extend_from_slice(b"\r\n\r\n");
        sse.push(&first).unwrap();
        let last: Value =
            serde_json::from_str(&datas(&sse.close(Some(&usage(2))).unwrap())[0]).unwrap();
        assert_eq!(last["candidates"][0]["finishReason"], "MAX_TOKENS");
        assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 2);
        // A JSON array: what passed plus the closing is one valid array,
        // wherever between objects the cut falls.
        for sent in [
            &b"["[..],
            b"[\n",
            b"[{\"a\":1}",
            b"[{\"a\":1},",
            b"[{\"a\":1},\r\n",
        ] {
            let mut arr = StreamFilter::new(Endpoint::StreamGenerateContent, false, false);
            let mut all = arr.push(sent).unwrap().to_vec();
            all.extend_from_slice(&arr.close(None).unwrap());
            let v: Vec<Value> = serde_json::from_slice(&all)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&all)));
            assert_eq!(
                v.last().unwrap()["candidates"][0]["finishReason"],
                "MAX_TOKENS"
            );
        }
        let mut arr = StreamFilter::new(Endpoint::StreamGenerateContent, false, false);
        arr.push(b"[{\"candidates\":[{\"content\":").unwrap();
        assert!(
            arr.close(None).is_none(),
            "inside an object nothing closes validly"
        );
    }
}
