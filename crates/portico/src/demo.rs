//! The built-in demo: two small upstream services in this process and a gateway in front of
//! them, so `portico` works on a machine with nothing else installed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_proxy::body::ChannelBody;
use tokio::net::TcpListener;

type DemoBody = Either<Full<Bytes>, ChannelBody>;

pub async fn start(
    port: u16,
    admin_port: u16,
    traffic: bool,
) -> Result<portico_proxy::Gateway, String> {
    let users = serve(users_service).await?;
    let events = serve(events_service).await?;
    let text = config_text(port, admin_port, users, events);
    let cfg = portico_config::load_str("<built-in demo>", &text, std::path::Path::new("."), &|k| {
        std::env::var(k).ok()
    })
    .map_err(|d| d.to_string())?;
    let gw = portico_proxy::Gateway::start(cfg, None)
        .await
        .map_err(|e| e.to_string())?;
    let base = format!("http://127.0.0.1:{port}");
    let admin = gw
        .admin_addr()
        .map_or("off".to_string(), |a| format!("http://{a}"));
    if traffic {
        tokio::spawn(demo_traffic(base.clone()));
    }
    let console = gw
        .admin_addr()
        .map_or("off".to_string(), |a| format!("http://{a}/"));
    let traffic_note = if traffic {
        "  (demo traffic keeps its charts moving; `portico demo --no-traffic` for none)"
    } else {
        ""
    };
    outln!(
        "\nPortico demo is running.\n\n  Console: {console}{traffic_note}\n\nTry:\n\n  curl {base}/hello\n  curl {base}/api/users/42\n  curl -X POST -d '{{\"name\":\"Ada\"}}' {base}/api/users\n  curl -N {base}/events\n  curl -i {base}/old-docs\n  curl -i {base}/nowhere          (a 404 problem+json)\n  curl {admin}/metrics\n  curl {admin}/config\n\nThe demo config (save it as portico.yaml to start your own):\n\n{text}\nCtrl-C to stop.\n"
    );
    Ok(gw)
}

fn config_text(port: u16, admin_port: u16, users: SocketAddr, events: SocketAddr) -> String {
    format!(
        r#"listeners:
  - name: demo
    address: 127.0.0.1:{port}
admin:
  address: 127.0.0.1:{admin_port}
access_log:
  target: stdout
upstreams:
  users:
    targets: ["http://{users}"]
  events:
    targets: ["http://{events}"]
routes:
  - name: hello
    match: {{ path: {{ exact: /hello }} }}
    respond: {{ status: 200, body: "hello from portico\n" }}
  - name: users
    match: {{ path: {{ prefix: /api/users }} }}
    upstream: users
    rewrite: {{ strip_prefix: true }}
    policies:
      - type: headers
        response: {{ set: {{ x-served-by: portico-demo }} }}
  - name: events
    match: {{ path: {{ exact: /events }}, methods: [GET] }}
    upstream: events
  - name: old-docs
    match: {{ path: {{ prefix: /old-docs }} }}
    redirect: {{ to: /hello, status: 301 }}
"#
    )
}

async fn serve<F, Fut>(f: F) -> Result<SocketAddr, String>
where
    F: Fn(Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<DemoBody>> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |req| async move { Ok::<_, Infallible>(f(req).await) });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<DemoBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(v.to_string() + "\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn users_service(req: Request<Incoming>) -> Response<DemoBody> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let forwarded_for = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    match (method.as_str(), path.trim_start_matches('/')) {
        ("GET", id) if !id.is_empty() && !id.contains('/') => json(
            StatusCode::OK,
            serde_json::json!({ "id": id, "name": format!("User {id}"), "seen_by_upstream": { "x-forwarded-for": forwarded_for, "x-request-id": request_id } }),
        ),
        ("POST", "") => {
            let parsed: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            json(
                StatusCode::CREATED,
                serde_json::json!({ "id": "1001", "created": parsed }),
            )
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "no such user endpoint", "path": path }),
        ),
    }
}

async fn events_service(_req: Request<Incoming>) -> Response<DemoBody> {
    let (tx, body) = ChannelBody::new(4);
    tokio::spawn(async move {
        for i in 1..=5 {
            let event = format!("id: {i}\nevent: tick\ndata: {{\"n\":{i}}}\n\n");
            if tx.send(Bytes::from(event)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let mut r = Response::new(Either::Right(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    r
}

/// A few requests a second to the demo's routes (mostly answered, some 404s and redirects),
/// so the console has something to show. Demo mode only.
async fn demo_traffic(base: String) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let paths = [
        "/hello",
        "/api/users/42",
        "/api/users/7",
        "/hello",
        "/nowhere",
        "/old-docs",
    ];
    let mut i = 0usize;
    loop {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let Ok(uri) = format!("{base}{}", paths[i % paths.len()]).parse::<http::Uri>() else {
            return;
        };
        i += 1;
        if let Ok(resp) = client.get(uri).await {
            let _ = resp.into_body().collect().await;
        }
    }
}
