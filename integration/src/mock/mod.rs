//! Mock upstreams on 127.0.0.1, served by hyper on one background runtime.
//!
//! A [`MockServer`] records every request it receives and answers through a handler that
//! returns a [`MockResponse`]: a full response, a stream of chunks with delays (SSE), a reset
//! mid-stream, or a connection closed before any response. Provider mocks build on this.

pub mod echo;
pub mod llm;
pub mod jwks;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The runtime every mock in this process runs on.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mock-upstream")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
    })
}

/// A request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How a mock answers.
pub enum MockResponse {
    Full { status: u16, headers: Vec<(String, String)>, body: Vec<u8> },
    /// Headers first, then each chunk after its delay; `reset_after` aborts the connection
    /// instead of finishing the body.
    Stream { status: u16, headers: Vec<(String, String)>, chunks: Vec<(Duration, Vec<u8>)>, reset_after: bool },
    /// Close the connection without answering (Envoy sees an upstream reset).
    Reset,
    /// Answer after a delay (a slow upstream).
    Delayed(Duration, Box<MockResponse>),
}

impl MockResponse {
    pub fn json(status: u16, body: &serde_json::Value) -> MockResponse {
        MockResponse::Full {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    pub fn text(status: u16, body: &str) -> MockResponse {
        MockResponse::Full { status, headers: vec![("content-type".into(), "text/plain".into())], body: body.as_bytes().to_vec() }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> MockResponse {
        match &mut self {
            MockResponse::Full { headers, .. } | MockResponse::Stream { headers, .. } => {
                headers.push((name.to_string(), value.to_string()))
            }
            MockResponse::Delayed(_, inner) => {
                let taken = std::mem::replace(inner.as_mut(), MockResponse::Reset);
                **inner = taken.with_header(name, value);
            }
            MockResponse::Reset => {}
        }
        self
    }
}

type Handler = dyn Fn(&RecordedRequest) -> MockResponse + Send + Sync;

/// A running mock. It stops when dropped.
pub struct MockServer {
    pub name: String,
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl MockServer {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.requests().pop()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a mock on 127.0.0.1 with an ephemeral port.
pub fn serve(name: &str, handler: impl Fn(&RecordedRequest) -> MockResponse + Send + Sync + 'static) -> MockServer {
    serve_on(name, "127.0.0.1:0", handler).unwrap_or_else(|e| panic!("mock {name}: {e}"))
}

/// Starts a mock on a given address (the local gateway uses fixed ports).
pub fn serve_on(
    name: &str,
    address: &str,
    handler: impl Fn(&RecordedRequest) -> MockResponse + Send + Sync + 'static,
) -> std::io::Result<MockServer> {
    let rt = runtime();
    let listener = rt.block_on(tokio::net::TcpListener::bind(address))?;
    let addr = listener.local_addr()?;
    let requests = Arc::new(Mutex::new(Vec::new()));
    let handler: Arc<Handler> = Arc::new(handler);
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let recorded = requests.clone();
    rt.spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    // As servers do: without it, a response written in two parts waits for
                    // the peer's delayed ACK (Nagle), and every request takes ~40 ms.
                    let _ = stream.set_nodelay(true);
                    let handler = handler.clone();
                    let recorded = recorded.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| handle(req, handler.clone(), recorded.clone()));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        }
    });
    Ok(MockServer { name: name.to_string(), addr, requests, stop: Some(stop_tx) })
}

#[derive(Debug)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mock resets the connection")
    }
}

impl std::error::Error for ResetConnection {}

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

async fn handle(
    req: Request<Incoming>,
    handler: Arc<Handler>,
    recorded: Arc<Mutex<Vec<RecordedRequest>>>,
) -> Result<Response<Body>, ResetConnection> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let request = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body,
    };
    recorded.lock().unwrap_or_else(|p| p.into_inner()).push(request.clone());
    let mut response = handler(&request);
    loop {
        match response {
            MockResponse::Delayed(delay, inner) => {
                tokio::time::sleep(delay).await;
                response = *inner;
            }
            other => {
                response = other;
                break;
            }
        }
    }
    match response {
        MockResponse::Reset => Err(ResetConnection),
        MockResponse::Full { status, headers, body } => {
            let body: Body = Full::new(Bytes::from(body)).map_err(|e: Infallible| match e {}).boxed();
            Ok(build(status, &headers, body))
        }
        MockResponse::Stream { status, headers, chunks, reset_after } => {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(4);
            tokio::spawn(async move {
                for (delay, chunk) in chunks {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    if tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                        return;
                    }
                }
                if reset_after {
                    // Let the chunks reach the wire first: the upstream dies after them.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = tx.send(Err(Box::new(ResetConnection))).await;
                }
            });
            let stream = tokio_stream_from(rx);
            Ok(build(status, &headers, BodyExt::boxed(StreamBody::new(stream))))
        }
        MockResponse::Delayed(..) => Err(ResetConnection),
    }
}

fn build(status: u16, headers: &[(String, String)], body: Body) -> Response<Body> {
    let mut builder = Response::builder().status(status);
    for (k, v) in headers {
        builder = builder.header(k, v);
    }
    match builder.body(body) {
        Ok(response) => response,
        Err(_) => {
            let mut response = Response::new(Full::new(Bytes::new()).map_err(|e: Infallible| match e {}).boxed());
            *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

/// An mpsc receiver as a `Stream`, without pulling in tokio-stream.
fn tokio_stream_from<T>(mut rx: mpsc::Receiver<T>) -> impl futures_core::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
