//! A deliberately minimal upstream: canned OpenAI chat responses (with
//! usage), streaming and not, straight from hyper with no parsing beyond
//! finding `"stream":true`. It must be far cheaper than anything in front
//! of it, or the benchmark would measure it.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Chunks in a streamed response.
pub const STREAM_CHUNKS: usize = 100;

struct Canned {
    json: Bytes,
    chunks: Vec<Bytes>,
    usage_chunk: Bytes,
}

fn canned() -> Canned {
    let usage = r#"{"prompt_tokens":250,"completion_tokens":100,"total_tokens":350}"#;
    let json = format!(
        r#"{{"id":"chatcmpl-bench","object":"chat.completion","created":1767225600,"model":"gpt-4o-mini","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"finish_reason":"stop"}}],"usage":{usage}}}"#,
        " the".repeat(STREAM_CHUNKS)
    );
    let mut chunks = Vec::with_capacity(STREAM_CHUNKS + 2);
    for _ in 0..STREAM_CHUNKS {
        chunks.push(Bytes::from_static(
            b"data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" the\"},\"finish_reason\":null}]}\n\n",
        ));
    }
    chunks.push(Bytes::from_static(
        b"data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    ));
    let usage_chunk = Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{usage}}}\n\n"
    ));
    Canned {
        json: Bytes::from(json),
        chunks,
        usage_chunk,
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn handle(req: Request<Incoming>, c: &'static Canned) -> Result<Response<Body>, Infallible> {
    // `x-bench-chunks: N` asks for a stream of N content chunks (default 100).
    let n_chunks = req
        .headers()
        .get("x-bench-chunks")
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(STREAM_CHUNKS);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let stream = memchr::memmem::find(&body, b"\"stream\":true").is_some();
    if !stream {
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(c.json.clone()).boxed())
            .unwrap_or_default());
    }
    let include_usage = memchr::memmem::find(&body, b"\"include_usage\":true").is_some();
    let (content, finish) = c.chunks.split_at(STREAM_CHUNKS);
    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = content
        .iter()
        .cycle()
        .take(n_chunks)
        .chain(finish)
        .cloned()
        .map(|b| Ok(Frame::data(b)))
        .collect();
    if include_usage {
        frames.push(Ok(Frame::data(c.usage_chunk.clone())));
    }
    frames.push(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))));
    let body = StreamBody::new(futures_util::stream::iter(frames));
    Ok(Response::builder()
        .header("content-type", "text/event-stream")
        .body(BodyExt::boxed(body))
        .unwrap_or_default())
}

/// Serves forever on `addr` (a single-threaded runtime: the upstream shares
/// a core with the load generator).
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let c: &'static Canned = Box::leak(Box::new(canned()));
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("upstream listening on http://{}", listener.local_addr()?);
        loop {
            let (sock, _) = listener.accept().await?;
            let _ = sock.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, c));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    })
}
