//! `ssu-repo serve-reports DIR --listen ADDR`: the receiving end of report delivery, for tests
//! and for trying it out. An HTTP/1 server (hyper's, already in the tree through reqwest) that
//! takes a POSTed envelope, verifies and stores it with [`crate::repo::fleet::accept`], and
//! answers what `policy::delivery::classify` on the device understands:
//!
//! | answer | when | the device |
//! |---|---|---|
//! | 201 `{"result":"stored","key_id","counter"}` | stored now | removes it from its queue |
//! | 200 `{"result":"duplicate","key_id","counter"}` | the same bytes were stored before | removes it |
//! | 400 / 413 / 422 `{"result":"refused","reason"}` | malformed, too large, signature or counter refused | drops it, logs the reason |
//! | 403 | device not enrolled (without `--allow-unknown`) | keeps it, retries |
//! | 405 | not a POST | keeps it, retries |
//! | 503 | the store could not be written | keeps it, retries |
//!
//! It speaks plain HTTP: TLS is terminated in front of it (nginx; `docs/report.md`), which
//! keeps certificates and their renewal where operators already handle them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use jiff::Timestamp;
use serde_json::json;

use crate::repo::fleet::{self, Accepted, Refused};

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The report store (`DIR/devices/<key id>/…`).
    pub dir: PathBuf,
    /// Enrol unknown devices from their first report (trust on first use).
    pub allow_unknown: bool,
    /// Largest request body read.
    pub max_body: usize,
    /// Longest a client may take to send its request head, and then its body.
    pub read_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
}

impl ServeOptions {
    pub fn new(dir: PathBuf) -> ServeOptions {
        ServeOptions {
            dir,
            allow_unknown: false,
            // A report is a few KiB; the store takes up to this.
            max_body: fleet::MAX_ENVELOPE,
            read_timeout: Duration::from_secs(30),
            max_connections: 64,
        }
    }
}

/// The HTTP status and JSON answer for what the store made of a report.
pub fn answer(result: &Result<Accepted, Refused>) -> (u16, serde_json::Value) {
    match result {
        Ok(Accepted::New { key_id, counter }) => (
            201,
            json!({"result": "stored", "key_id": key_id, "counter": counter}),
        ),
        Ok(Accepted::Duplicate { key_id, counter }) => (
            200,
            json!({"result": "duplicate", "key_id": key_id, "counter": counter}),
        ),
        Err(e) => {
            let status = match e {
                Refused::TooLarge { .. } => 413,
                Refused::Malformed(_) => 400,
                Refused::UnknownDevice { .. } => 403,
                Refused::Storage(_) => 503,
                // Signature, replayed or conflicting counter: these bytes can never be taken.
                _ => 422,
            };
            (
                status,
                json!({"result": "refused", "reason": e.to_string()}),
            )
        }
    }
}

fn respond(status: u16, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn refused(status: u16, reason: String) -> (u16, serde_json::Value) {
    (status, json!({"result": "refused", "reason": reason}))
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    opts: Arc<ServeOptions>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = receive(req, &opts).await;
    let reason = body.get("reason").and_then(|r| r.as_str()).unwrap_or("");
    match status {
        200 | 201 => tracing::info!(%peer, status, "{}", describe(&body)),
        _ => tracing::warn!(%peer, status, "refused: {reason}"),
    }
    Ok(respond(status, &body))
}

fn describe(body: &serde_json::Value) -> String {
    format!(
        "{} report {} of device {}",
        body["result"].as_str().unwrap_or(""),
        body["counter"],
        body["key_id"].as_str().unwrap_or("")
    )
}

async fn receive(req: Request<Incoming>, opts: &ServeOptions) -> (u16, serde_json::Value) {
    if req.method() != Method::POST {
        return refused(
            405,
            "POST a signed report (ssuctl report --json)".to_owned(),
        );
    }
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > opts.max_body as u64) {
        return refused(
            413,
            format!(
                "the report is larger than the {} bytes accepted",
                opts.max_body
            ),
        );
    }
    let limited = Limited::new(req.into_body(), opts.max_body);
    let bytes = match tokio::time::timeout(opts.read_timeout, limited.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return refused(
                413,
                format!(
                    "the report is larger than the {} bytes accepted",
                    opts.max_body
                ),
            );
        }
        Ok(Err(e)) => return refused(400, format!("cannot read the request: {e}")),
        Err(_) => {
            return refused(
                408,
                format!(
                    "the request body did not arrive within {}s",
                    opts.read_timeout.as_secs()
                ),
            );
        }
    };
    let dir = opts.dir.clone();
    let allow_unknown = opts.allow_unknown;
    // File writes, fsyncs and a lock: off the async threads.
    let result = tokio::task::spawn_blocking(move || {
        fleet::accept(&dir, &bytes, allow_unknown, Timestamp::now())
    })
    .await;
    match result {
        Ok(r) => answer(&r),
        Err(e) => refused(503, format!("the store task failed: {e}")),
    }
}

/// Serves on `listener` until `shutdown` completes; connections being served then are
/// dropped (a device whose answer is lost sends the report again and hears "duplicate").
pub async fn run(
    listener: tokio::net::TcpListener,
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let opts = Arc::new(opts);
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let opts = opts.clone();
        let read_timeout = opts.read_timeout;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, peer, opts.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_has_the_answer_the_device_understands() {
        let key = "ab".repeat(32);
        let cases: Vec<(Result<Accepted, Refused>, u16)> = vec![
            (
                Ok(Accepted::New {
                    key_id: key.clone(),
                    counter: 7,
                }),
                201,
            ),
            (
                Ok(Accepted::Duplicate {
                    key_id: key.clone(),
                    counter: 7,
                }),
                200,
            ),
            (Err(Refused::TooLarge { len: 9, max: 1 }), 413),
            (Err(Refused::Malformed("x".into())), 400),
            (
                Err(Refused::UnknownDevice {
                    key_id: key.clone(),
                    why: "enrol it",
                }),
                403,
            ),
            (
                Err(Refused::Replay {
                    counter: 3,
                    highest: 7,
                }),
                422,
            ),
            (Err(Refused::Conflict { counter: 7 }), 422),
            (
                Err(Refused::Storage(fleet::StoreError {
                    path: "/x".into(),
                    reason: "disk full".into(),
                })),
                503,
            ),
        ];
        for (result, status) in cases {
            let (s, body) = answer(&result);
            assert_eq!(s, status, "{result:?}");
            // What the device makes of it (policy::delivery::classify).
            let judged = crate::policy::delivery::classify(s, body.to_string().as_bytes(), &key, 7);
            use crate::policy::delivery::Answer;
            match s {
                200 | 201 => assert_eq!(
                    judged,
                    Answer::Delivered {
                        duplicate: s == 200
                    }
                ),
                400 | 413 | 422 => assert!(matches!(judged, Answer::Refused(_)), "{judged:?}"),
                _ => assert!(matches!(judged, Answer::Retry(_)), "{judged:?}"),
            }
        }
    }
}
