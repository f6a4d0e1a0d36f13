//! Incremental framing of Server-Sent Events and of streamed JSON arrays.
//!
//! Bytes arrive in arbitrary pieces (an event split across reads, a UTF-8
//! character split in two); the framer hands back whole events with their
//! raw bytes, so the gateway can forward each unchanged (or drop one) while
//! the meter reads its payload. Nothing is buffered beyond one event, and an
//! event larger than the limit is an error rather than unbounded memory.

use bytes::{Bytes, BytesMut};

/// One complete SSE event: its raw bytes (terminator included) and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub raw: Bytes,
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream event larger than {limit} bytes")]
pub struct FrameTooLarge {
    pub limit: usize,
}

/// Splits an SSE byte stream into events.
#[derive(Debug)]
pub struct SseFramer {
    buf: BytesMut,
    /// Where the next unscanned line starts.
    scan: usize,
    limit: usize,
}

impl SseFramer {
    pub fn new(limit: usize) -> Self {
        SseFramer {
            buf: BytesMut::new(),
            scan: 0,
            limit,
        }
    }

    /// Appends `chunk` and returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, FrameTooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(nl) = memchr::memchr(b'\n', &self.buf[self.scan..]) {
            let line_end = self.scan + nl;
            let line = &self.buf[self.scan..line_end];
            let blank = line.is_empty() || line == b"\r";
            self.scan = line_end + 1;
            if blank {
                let raw = self.buf.split_to(self.scan).freeze();
                self.scan = 0;
                if let Some(ev) = parse_event(raw) {
                    out.push(ev);
                }
            }
        }
        if self.buf.len() > self.limit {
            return Err(FrameTooLarge { limit: self.limit });
        }
        Ok(out)
    }

    /// The stream ended: whatever is left is a final, unterminated event.
    pub fn finish(&mut self) -> Option<SseEvent> {
        self.scan = 0;
        if self.buf.is_empty() {
            return None;
        }
        let raw = self.buf.split().freeze();
        parse_event(raw)
    }
}

fn parse_event(raw: Bytes) -> Option<SseEvent> {
    let mut event = None;
    let mut data: Vec<u8> = Vec::new();
    let mut has_data = false;
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line[0] == b':' {
            continue;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if has_data {
                    data.push(b'\n');
                }
                data.extend_from_slice(value);
                has_data = true;
            }
            b"event" => event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }
    // A blank-only or comment-only block is still passed on (keep-alives).
    Some(SseEvent { raw, event, data })
}

/// Splits a streamed JSON array (`[{...},\r\n{...}]`, Gemini without
/// `alt=sse`) into its top-level objects, forwarding bytes as they come.
#[derive(Debug)]
pub struct JsonArrayFramer {
    current: Vec<u8>,
    depth: u32,
    in_string: bool,
    escaped: bool,
    limit: usize,
    /// The last byte that is not whitespace at the array's own level.
    last: u8,
}

impl JsonArrayFramer {
    pub fn new(limit: usize) -> Self {
        JsonArrayFramer {
            current: Vec::new(),
            depth: 0,
            in_string: false,
            escaped: false,
            limit,
            last: 0,
        }
    }

    /// What must come before one more object for the bytes seen so far to
    /// stay a valid array (`[`, `,` or nothing); `None` inside an object.
    pub fn next_object_prefix(&self) -> Option<&'static [u8]> {
        match (self.depth, self.in_string, self.last) {
            (0, false, _) => Some(b"["),
            (1, false, b'}') => Some(b","),
            (1, false, _) => Some(b""),
            _ => None,
        }
    }

    /// Scans `chunk`, returning the objects it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, FrameTooLarge> {
        let mut out = Vec::new();
        for &b in chunk {
            // depth 1 is inside the array; objects live at depth ≥ 2.
            if self.depth >= 2 {
                self.current.push(b);
            }
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'[' | b'{' => {
                    self.depth += 1;
                    if self.depth == 2 {
                        self.current.clear();
                        self.current.push(b);
                    }
                }
                b']' | b'}' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 1 && b == b'}' {
                        out.push(std::mem::take(&mut self.current));
                    }
                }
                _ => {}
            }
            if self.depth <= 1 && !b.is_ascii_whitespace() {
                self.last = b;
            }
        }
        if self.current.len() > self.limit {
            return Err(FrameTooLarge { limit: self.limit });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_events(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut f = SseFramer::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(f.push(c).unwrap());
        }
        out.extend(f.finish());
        out
    }

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let stream = b"event: a\ndata: {\"x\":1}\n\ndata: line1\ndata: line2\r\n\r\n: keep-alive\n\ndata: [DONE]\n\n";
        let whole = all_events(&[stream]);
        for split in 1..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(all_events(&[a, b]), whole, "split at {split}");
        }
        assert_eq!(whole.len(), 4);
        assert_eq!(whole[0].event.as_deref(), Some("a"));
        assert_eq!(whole[1].data, b"line1\nline2");
        assert_eq!(whole[3].data, b"[DONE]");
        let raw: Vec<u8> = whole.iter().flat_map(|e| e.raw.to_vec()).collect();
        assert_eq!(raw, stream, "raw bytes pass through unchanged");
    }

    #[test]
    fn split_utf8_survives() {
        let s = "data: {\"t\":\"héllo 世界\"}\n\n".as_bytes();
        let e = all_events(&[&s[..12], &s[12..14], &s[14..]]);
        assert_eq!(e[0].data, "{\"t\":\"héllo 世界\"}".as_bytes());
    }

    #[test]
    fn unterminated_tail_is_flushed_and_oversize_is_an_error() {
        let e = all_events(&[b"data: tail"]);
        assert_eq!(e[0].data, b"tail");
        let mut f = SseFramer::new(8);
        assert!(f.push(b"data: 0123456789").is_err());
    }

    #[test]
    fn json_array_objects_are_found_across_splits() {
        let s = br#"[{"a":"}{[\"","b":{"c":1}}
,{"usageMetadata":{"promptTokenCount":3}}]"#;
        for split in 1..s.len() {
            let mut f = JsonArrayFramer::new(1 << 20);
            let mut objs = f.push(&s[..split]).unwrap();
            objs.extend(f.push(&s[split..]).unwrap());
            assert_eq!(objs.len(), 2, "split at {split}");
            let v: serde_json::Value = serde_json::from_slice(&objs[1]).unwrap();
            assert_eq!(v["usageMetadata"]["promptTokenCount"], 3);
        }
    }
}
