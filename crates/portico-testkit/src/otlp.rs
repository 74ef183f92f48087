//! A real OpenTelemetry collector's receiving end: OTLP over gRPC (tonic, with the
//! opentelemetry-proto service) and over HTTP (`POST /v1/traces`, protobuf) on one port.
//! It keeps every span it is sent, flattened for assertions.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use tokio::net::TcpListener;

/// One received span, with ids in lower-case hex and attribute values as text.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// `SPAN_KIND_SERVER` is 2, `SPAN_KIND_CLIENT` 3.
    pub kind: i32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: BTreeMap<String, String>,
    /// 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub resource: BTreeMap<String, String>,
    /// Events: name and attributes.
    pub events: Vec<(String, BTreeMap<String, String>)>,
    /// `grpc` or `http`.
    pub transport: &'static str,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A running receiver.
pub struct Collector {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    /// Metadata (gRPC) or headers (HTTP) of the exports received.
    headers: Arc<Mutex<Vec<http::HeaderMap>>>,
}

impl Collector {
    /// `http://127.0.0.1:PORT`, the gRPC endpoint (HTTP posts to this plus `/v1/traces`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// The headers of every export received so far.
    pub fn export_headers(&self) -> Vec<http::HeaderMap> {
        self.headers.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until at least `n` spans have arrived, then returns all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<Span> {
        crate::eventually(&format!("{n} spans at the collector"), async || {
            self.spans.lock().unwrap().len() >= n
        })
        .await;
        self.spans()
    }
}

#[derive(Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    headers: Arc<Mutex<Vec<http::HeaderMap>>>,
}

impl Receiver {
    fn keep(&self, req: ExportTraceServiceRequest, transport: &'static str) {
        let mut out = self.spans.lock().unwrap();
        for rs in req.resource_spans {
            let resource = rs
                .resource
                .map(|r| flatten(&r.attributes))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Span {
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        name: s.name,
                        kind: s.kind,
                        start_unix_nano: s.start_time_unix_nano,
                        end_unix_nano: s.end_time_unix_nano,
                        attributes: flatten(&s.attributes),
                        status_code: s.status.map_or(0, |st| st.code),
                        resource: resource.clone(),
                        events: s
                            .events
                            .iter()
                            .map(|e| (e.name.clone(), flatten(&e.attributes)))
                            .collect(),
                        transport,
                    });
                }
            }
        }
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.headers
            .lock()
            .unwrap()
            .push(request.metadata().clone().into_headers());
        self.keep(request.into_inner(), "grpc");
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn flatten(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> BTreeMap<String, String> {
    attrs
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

type Boxed =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Starts a collector on an ephemeral port of 127.0.0.1.
pub async fn otlp_collector() -> Collector {
    otlp_collector_with_tls(None).await
}

/// Starts a collector that speaks TLS with `tls` (offer ALPN `h2` and `http/1.1`).
pub async fn otlp_collector_with_tls(tls: Option<Arc<rustls::ServerConfig>>) -> Collector {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let rx = Receiver {
        spans: Arc::default(),
        headers: Arc::default(),
    };
    let collector = Collector {
        addr,
        spans: rx.spans.clone(),
        headers: rx.headers.clone(),
    };
    let grpc = hyper_util::service::TowerToHyperService::new(TraceServiceServer::new(rx.clone()));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (grpc, rx) = (grpc.clone(), rx.clone());
            let acceptor = acceptor.clone();
            let svc = service_fn(move |req: Request<Incoming>| {
                let (grpc, rx) = (grpc.clone(), rx.clone());
                async move {
                    if req.uri().path() == "/v1/traces" {
                        return Ok::<_, std::convert::Infallible>(http_export(&rx, req).await);
                    }
                    let resp = grpc.call(req).await.unwrap_or_else(|e| match e {});
                    Ok(resp.map(|b| b.map_err(|e| e.into()).boxed_unsync()))
                }
            });
            tokio::spawn(async move {
                let b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    Some(a) => {
                        if let Ok(t) = a.accept(s).await {
                            let _ = b.serve_connection(TokioIo::new(t), svc).await;
                        }
                    }
                    None => {
                        let _ = b.serve_connection(TokioIo::new(s), svc).await;
                    }
                }
            });
        }
    });
    collector
}

/// OTLP/HTTP: a protobuf `ExportTraceServiceRequest` posted to `/v1/traces`.
async fn http_export(rx: &Receiver, req: Request<Incoming>) -> Response<Boxed> {
    let headers = req.headers().clone();
    let ok_type = headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let status = match (ok_type, body.map(ExportTraceServiceRequest::decode)) {
        (true, Ok(Ok(msg))) => {
            rx.headers.lock().unwrap().push(headers);
            rx.keep(msg, "http");
            StatusCode::OK
        }
        _ => StatusCode::BAD_REQUEST,
    };
    let body = ExportTraceServiceResponse {
        partial_success: None,
    }
    .encode_to_vec();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .unwrap()
}
