//! REST/JSON to gRPC transcoding against a real tonic server (the test kit's bookstore).

use portico_testkit::*;
use serde_json::json;

use crate::{config, req};

async fn bookstore_gateway(extra: &str) -> TestGateway {
    let grpc = grpc_bookstore().await;
    let dir = temp_dir("transcode");
    let pb = write_bookstore_descriptor_set(&dir);
    gateway(&config(&format!(
        "upstreams:\n  books: {{ targets: [\"h2c://{grpc}\"] }}\nroutes:\n  - upstream: books\n    grpc_transcode:\n      descriptor_set: \"{}\"\n      forward_headers: [x-user]\n{extra}",
        pb.display()
    )))
    .await
}

async fn call(gw: &TestGateway, method: &str, path: &str, body: Option<serde_json::Value>) -> Got {
    let c = client(false, &[]);
    let mut r = req(method, &gw.url(path)).header("x-user", "ada");
    let body = match body {
        Some(b) => {
            r = r.header("content-type", "application/json");
            b.to_string()
        }
        None => String::new(),
    };
    send(
        &c,
        r.body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn bindings_map_paths_queries_and_bodies_to_methods() {
    let gw = bookstore_gateway("").await;
    // GET without variables; int64 as strings.
    let got = call(&gw, "GET", "/v1/shelves", None).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(
        got.json(),
        json!({"shelves": [{"id": "1", "theme": "fiction"}, {"id": "2", "theme": "history"}]})
    );
    // Path variables, typed by their fields; a forwarded header as metadata.
    let got = call(&gw, "GET", "/v1/shelves/7/books/moby%20dick", None).await;
    assert_eq!(
        got.json(),
        json!({"shelf": "7", "id": "moby dick", "title": "Title moby dick", "author": "ada"})
    );
    // An additional binding with a multi-segment variable.
    let got = call(&gw, "GET", "/v1/shelves/3/books/9", None).await;
    assert_eq!(got.json()["id"], "9");
    let got = call(&gw, "GET", "/v1/shelves/3/books/9/title", None).await;
    assert_eq!(
        got.json(),
        json!("Title 9"),
        "response_body picks one field"
    );
    // body: "shelf"
    let got = call(&gw, "POST", "/v1/shelves", Some(json!({"theme": "poetry"}))).await;
    assert_eq!(got.json(), json!({"id": "99", "theme": "poetry"}));
    // Nested path fields with body: "book".
    let got = call(
        &gw,
        "PATCH",
        "/v1/shelves/5/books/b1",
        Some(json!({"title": "New", "genre": "HISTORY"})),
    )
    .await;
    assert_eq!(
        got.json(),
        json!({"shelf": "5", "id": "b1", "title": "New", "genre": "HISTORY"})
    );
    // A custom method and a `:verb`.
    let got = call(&gw, "PUBLISH", "/v1/shelves/1/books/2", None).await;
    assert_eq!(got.json()["title"], "published", "{}", got.text());
    let got = call(&gw, "POST", "/v1/shelves/1/books/2:archive", None).await;
    assert_eq!(got.json()["title"], "archived");
    // Query parameters: repeated, nested, enum by name, int64, bool, Timestamp, wrapper.
    let got = call(
        &gw,
        "GET",
        "/v1/books:search?query=whales&tags=sea&tags=classic&page.size=20&page.token=abc&genre=FICTION&min_pages=9007199254740993&available=true&published_after=2020-01-02T03:04:05Z&max_results=5",
        None,
    )
    .await;
    assert_eq!(
        got.json(),
        json!({
            "query": "whales",
            "tags": ["sea", "classic"],
            "page": {"size": 20, "token": "abc"},
            "genre": "FICTION",
            "minPages": "9007199254740993",
            "available": true,
            "publishedAfter": "2020-01-02T03:04:05Z",
            "maxResults": 5
        }),
        "{}",
        got.text()
    );
    // Called by name, without an annotation.
    let got = call(
        &gw,
        "POST",
        "/bookstore.Bookstore/Unannotated",
        Some(json!({"text": "hi"})),
    )
    .await;
    assert_eq!(got.json(), json!({"text": "hi"}));
}

#[tokio::test]
async fn proto3_json_mapping_round_trips_through_the_service() {
    let gw = bookstore_gateway("      emit_defaults: false\n").await;
    let sent = json!({
        "i32": -5,
        "i64": "-9223372036854775808",
        "u64": "18446744073709551615",
        "dbl": "NaN",
        "flt": "-Infinity",
        "flag": true,
        "text": "ünïcode ✓",
        "data": "AAEC/w==",
        "genre": "HISTORY",
        "many": ["1", "2"],
        "counts": {"a": 1},
        "at": "2024-02-29T12:00:00.123456789Z",
        "took": "1.500s",
        // Struct numbers are doubles (1 would come back as 1.0).
        "meta": {"k": [1.5, "two", null, {"x": true}]},
        "anything": 3.5,
        "maybe": "42",
        "mask": "book.title,updateMask",
        "extra": {"@type": "type.googleapis.com/bookstore.Shelf", "id": "4", "theme": "t"},
        "nested": {"id": "8"},
        "snakeCaseName": "camel"
    });
    let got = call(&gw, "POST", "/v1/echo", Some(sent.clone())).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json(), sent);
    // Input accepts proto names and enum numbers; output uses lowerCamelCase and names.
    let got = call(
        &gw,
        "POST",
        "/v1/echo",
        Some(json!({"snake_case_name": "x", "genre": 2, "i64": 7, "flag": false})),
    )
    .await;
    assert_eq!(
        got.json(),
        json!({"snakeCaseName": "x", "genre": "HISTORY", "i64": "7"})
    );
}

#[tokio::test]
async fn defaults_are_written_when_asked() {
    let gw = bookstore_gateway("      emit_defaults: true\n").await;
    let got = call(&gw, "POST", "/v1/echo", Some(json!({}))).await;
    let v = got.json();
    assert_eq!(v["i32"], 0);
    assert_eq!(v["i64"], "0");
    assert_eq!(v["flag"], false);
    assert_eq!(v["genre"], "GENRE_UNSPECIFIED");
    assert_eq!(v["many"], json!([]));
}

#[tokio::test]
async fn bad_requests_name_the_field_and_grpc_errors_map_to_http() {
    let gw = bookstore_gateway("").await;
    let bad = |got: &Got, field: Option<&str>| {
        assert_eq!(got.status, 400, "{}", got.text());
        assert_eq!(got.header("content-type"), Some("application/problem+json"));
        let v = got.json();
        assert_eq!(v["code"], "invalid_request_message");
        assert_eq!(v["field"].as_str(), field, "{v}");
    };
    bad(
        &call(&gw, "POST", "/v1/echo", Some(json!({"i32": "x"}))).await,
        Some("i32"),
    );
    bad(
        &call(
            &gw,
            "POST",
            "/v1/echo",
            Some(json!({"nested": {"id": true}})),
        )
        .await,
        Some("nested.id"),
    );
    bad(
        &call(&gw, "POST", "/v1/echo", Some(json!({"nope": 1}))).await,
        None,
    );
    bad(
        &call(&gw, "GET", "/v1/shelves/abc", None).await,
        Some("shelf"),
    );
    bad(
        &call(&gw, "GET", "/v1/books:search?available=maybe", None).await,
        Some("available"),
    );
    bad(
        &call(&gw, "GET", "/v1/books:search?unknown=1", None).await,
        Some("unknown"),
    );
    let got = call(&gw, "POST", "/v1/echo", None).await;
    assert_eq!(got.status, 200, "an empty body is an empty message");
    let c = client(false, &[]);
    let got = send(
        &c,
        req("POST", &gw.url("/v1/echo"))
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"{not json",
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 400);
    assert!(
        got.json()["detail"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    // No binding: 404; a binding for another method: 405.
    assert_eq!(call(&gw, "GET", "/v1/nothing", None).await.status, 404);
    assert_eq!(call(&gw, "DELETE", "/v1/shelves", None).await.status, 405);

    // gRPC statuses become HTTP statuses, with the message and the details.
    let got = call(&gw, "GET", "/v1/shelves/404", None).await;
    assert_eq!(got.status, 404);
    let v = got.json();
    assert_eq!(v["grpc_code"], "NOT_FOUND");
    assert_eq!(v["grpc_status"], 5);
    assert_eq!(v["detail"], "shelf 404 does not exist");
    for (code, status) in [
        (3, 400),
        (7, 403),
        (8, 429),
        (14, 503),
        (16, 401),
        (12, 501),
        (13, 500),
    ] {
        let got = call(
            &gw,
            "POST",
            "/v1/fail",
            Some(json!({"code": code, "message": "no"})),
        )
        .await;
        assert_eq!(got.status.as_u16(), status, "gRPC {code}");
    }
    let got = call(
        &gw,
        "POST",
        "/v1/fail",
        Some(json!({"code": 3, "message": "bad shelf: 100% wrong", "with_details": true})),
    )
    .await;
    let v = got.json();
    assert_eq!(v["detail"], "bad shelf: 100% wrong");
    assert_eq!(
        v["details"][0],
        json!({"@type": "type.googleapis.com/bookstore.FieldViolation", "field": "shelf.theme", "description": "must not be empty"})
    );
    assert_eq!(
        v["details"][1]["@type"],
        "type.googleapis.com/unknown.Thing"
    );
    assert_eq!(v["details"][1]["value"], "AQID");
}

async fn call_accepting(
    gw: &TestGateway,
    method: &str,
    path: &str,
    accept: &str,
    body: &str,
) -> Got {
    let c = client(false, &[]);
    send(
        &c,
        req(method, &gw.url(path))
            .header("accept", accept)
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_owned(),
            )))
            .unwrap(),
    )
    .await
}

fn ndjson(got: &Got) -> Vec<serde_json::Value> {
    got.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn streams_become_ndjson_or_server_sent_events() {
    let gw = bookstore_gateway("").await;
    // Server streaming, NDJSON by default.
    let got = call_accepting(&gw, "GET", "/v1/shelves/4/books", "*/*", "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("application/x-ndjson"));
    let lines = ndjson(&got);
    assert_eq!(lines.len(), 3, "{}", got.text());
    assert_eq!(
        lines[2],
        json!({"shelf": "4", "id": "3", "title": "Title 3"})
    );
    // SSE when the client asks for it.
    let got = call_accepting(&gw, "GET", "/v1/shelves/4/books", "text/event-stream", "").await;
    assert_eq!(got.header("content-type"), Some("text/event-stream"));
    assert_eq!(got.text().matches("data: {").count(), 3, "{}", got.text());
    assert!(got.text().ends_with("\n\n"));
    // An error after the stream began: the messages so far, then the error as the last line.
    let got = call_accepting(
        &gw,
        "GET",
        "/v1/shelves/13/books",
        "application/x-ndjson",
        "",
    )
    .await;
    let lines = ndjson(&got);
    assert_eq!(lines.len(), 3, "{}", got.text());
    assert_eq!(lines[1]["id"], "2");
    assert_eq!(lines[2]["error"]["grpc_code"], "ABORTED");
    assert_eq!(lines[2]["error"]["message"], "shelf 13 is haunted");
    let got = call_accepting(&gw, "GET", "/v1/shelves/13/books", "text/event-stream", "").await;
    assert!(
        got.text().contains("event: error\ndata: {"),
        "{}",
        got.text()
    );
    // An error before any message is an ordinary problem.
    let got = call_accepting(&gw, "GET", "/v1/shelves/404/books", "*/*", "").await;
    assert_eq!(got.status, 404);
    assert_eq!(got.json()["grpc_code"], "NOT_FOUND");

    // Client streaming from an NDJSON body.
    let body = "{\"title\": \"a\"}\n\n{\"title\": \"b\"}\n{\"title\": \"c\"}\n";
    let got = call_accepting(&gw, "POST", "/v1/books:count", "*/*", body).await;
    assert_eq!(
        got.json(),
        json!({"id": "3", "theme": "a+b+c"}),
        "{}",
        got.text()
    );
    let body = "{\"title\": \"a\"}\n{\"title\": 5}\n";
    let got = call_accepting(&gw, "POST", "/v1/books:count", "*/*", body).await;
    assert_eq!(got.status, 400);
    assert!(
        got.json()["detail"].as_str().unwrap().contains("line 2"),
        "{}",
        got.text()
    );
    // Both ways.
    let body = "{\"title\": \"x\"}\n{\"title\": \"y\"}";
    let got = call_accepting(&gw, "POST", "/v1/books:chat", "*/*", body).await;
    assert_eq!(got.text(), "{\"title\":\"X\"}\n{\"title\":\"Y\"}\n");
}

/// `examples/bookstore.pb` is the test kit's bookstore compiled; this keeps it from drifting.
/// Regenerate with `PORTICO_WRITE_EXAMPLES=1 cargo test -p portico-proxy --test gateway example_descriptor`.
#[test]
fn example_descriptor_set_matches_the_protos() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookstore.pb");
    let fresh = bookstore_descriptor_set();
    if std::env::var_os("PORTICO_WRITE_EXAMPLES").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read(&path).expect("examples/bookstore.pb");
    assert!(
        committed == fresh,
        "examples/bookstore.pb is out of date with crates/portico-testkit/protos; regenerate it (see this test)"
    );
}

/// gRPC-Web frames spelled out from the protocol: `[flag][len u32][payload]`, flag 0x80 for
/// the trailer frame.
fn web_frames(body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut b = body;
    while b.len() >= 5 {
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        out.push((b[0], b[5..5 + len].to_vec()));
        b = &b[5 + len..];
    }
    assert!(b.is_empty(), "trailing bytes");
    out
}

/// Decodes base64 four characters at a time, so independently padded chunks work.
fn b64_pieces(text: &str) -> Vec<u8> {
    use base64::Engine;
    text.as_bytes()
        .chunks(4)
        .flat_map(|c| base64::engine::general_purpose::STANDARD.decode(c).unwrap())
        .collect()
}

#[tokio::test]
async fn grpc_web_clients_reach_a_native_grpc_service() {
    use base64::Engine;
    let grpc = grpc_bookstore().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  web-books: {{ targets: [\"h2c://{grpc}\"] }}\nroutes:\n  - upstream: web-books\n    grpc_web: true\n"
    )))
    .await;
    // GetShelfRequest { shelf: 7 }: field 1, varint 7.
    let request = [0u8, 0, 0, 0, 2, 0x08, 0x07];
    let c = client(false, &[]);
    let web = |ct: &'static str, body: Vec<u8>| {
        req("POST", &gw.url("/bookstore.Bookstore/GetShelf"))
            .header("content-type", ct)
            .header("x-grpc-web", "1")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap()
    };
    // Binary mode, over HTTP/1.1 as browsers often are.
    let got = send(&c, web("application/grpc-web+proto", request.to_vec())).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("content-type"),
        Some("application/grpc-web+proto")
    );
    let frames = web_frames(&got.body);
    assert_eq!(frames.len(), 2, "{frames:?}");
    // Shelf { id: 7, theme: "theme-7" }
    assert_eq!(
        frames[0],
        (0, [&[0x08, 0x07, 0x12, 0x07][..], b"theme-7"].concat())
    );
    assert_eq!(frames[1].0, 0x80);
    let trailers = String::from_utf8(frames[1].1.clone()).unwrap();
    assert!(trailers.contains("grpc-status: 0\r\n"), "{trailers}");

    // Text mode: base64 both ways.
    let body = base64::engine::general_purpose::STANDARD.encode(request);
    let got = send(&c, web("application/grpc-web-text", body.into_bytes())).await;
    assert_eq!(
        got.header("content-type"),
        Some("application/grpc-web-text")
    );
    let frames = web_frames(&b64_pieces(&got.text()));
    assert_eq!(frames[0].1[..2], [0x08, 0x07]);
    assert_eq!(frames[1].0, 0x80);

    // An error status: trailers-only, readable from the headers.
    let missing = [0u8, 0, 0, 0, 3, 0x08, 0x94, 0x03]; // shelf 404
    let got = send(&c, web("application/grpc-web", missing.to_vec())).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("grpc-status"), Some("5"));
    assert!(
        got.header("content-type")
            .is_some_and(|c| c.starts_with("application/grpc-web")),
        "{:?}",
        got.header("content-type")
    );
}

/// Status and body, with the per-request id taken out of problem bodies.
fn comparable(got: &Got) -> (u16, serde_json::Value) {
    let mut v: serde_json::Value =
        serde_json::from_slice(&got.body).unwrap_or(serde_json::Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("request_id");
    }
    (got.status.as_u16(), v)
}

#[tokio::test]
async fn definitions_from_server_reflection_answer_like_the_descriptor_file() {
    let file_gw = bookstore_gateway("").await;
    for version in [Reflection::V1, Reflection::V1Alpha] {
        let grpc = grpc_bookstore_with(version).await;
        let gw = gateway(&config(&format!(
            "upstreams:\n  reflected: {{ targets: [\"h2c://{grpc}\"] }}\nroutes:\n  - upstream: reflected\n    grpc_transcode: {{ reflection: true, forward_headers: [x-user] }}\n"
        )))
        .await;
        // Fetched in the background: until then, 503 with Retry-After.
        let started = std::time::Instant::now();
        loop {
            let got = call(&gw, "GET", "/v1/shelves", None).await;
            if got.status == 200 {
                break;
            }
            assert_eq!(got.status, 503, "{}", got.text());
            assert_eq!(got.json()["code"], "grpc_definitions_unavailable");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{version:?} never loaded"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let requests: Vec<(&str, &str, Option<serde_json::Value>)> = vec![
            ("GET", "/v1/shelves", None),
            ("GET", "/v1/shelves/7/books/moby", None),
            ("GET", "/v1/shelves/3/books/9/title", None),
            ("POST", "/v1/shelves", Some(json!({"theme": "poetry"}))),
            (
                "GET",
                "/v1/books:search?tags=a&tags=b&page.size=2&genre=FICTION",
                None,
            ),
            (
                "POST",
                "/v1/echo",
                Some(
                    json!({"i64": "5", "at": "2024-01-01T00:00:00Z", "extra": {"@type": "type.googleapis.com/bookstore.Shelf", "id": "1"}}),
                ),
            ),
            ("POST", "/v1/echo", Some(json!({"i32": "x"}))),
            ("GET", "/v1/shelves/404", None),
            (
                "POST",
                "/v1/fail",
                Some(json!({"code": 3, "message": "m", "with_details": true})),
            ),
            (
                "POST",
                "/bookstore.Bookstore/Unannotated",
                Some(json!({"text": "t"})),
            ),
            ("GET", "/v1/nothing", None),
        ];
        for (method, path, body) in requests {
            let a = call(&file_gw, method, path, body.clone()).await;
            let b = call(&gw, method, path, body).await;
            assert_eq!(
                comparable(&a),
                comparable(&b),
                "{version:?}: {method} {path}"
            );
        }
        // The gateway's description has the methods reflection brought, as from the file.
        let described = get(&gw.admin_url("/openapi.json")).await.json();
        let from_file = get(&file_gw.admin_url("/openapi.json")).await.json();
        let ops = |d: &serde_json::Value| {
            let mut ids: Vec<String> = d["paths"]
                .as_object()
                .unwrap()
                .values()
                .flat_map(|item| item.as_object().unwrap().values())
                .filter_map(|op| op["summary"].as_str().map(str::to_owned))
                .collect();
            ids.sort();
            ids
        };
        assert!(
            ops(&described).contains(&"gRPC `bookstore.Bookstore.GetBook`".to_owned()),
            "{version:?}: {:?}",
            ops(&described)
        );
        assert_eq!(ops(&described), ops(&from_file), "{version:?}");
    }
}

#[tokio::test]
async fn an_upstream_without_reflection_leaves_the_route_unavailable() {
    let plain = serve(|_req| async { http::Response::new(full("not grpc")) }).await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  no-reflection: {{ targets: [\"h2c://{}\"] }}\nroutes:\n  - upstream: no-reflection\n    grpc_transcode: {{ reflection: true }}\n",
        plain.addr
    )))
    .await;
    let started = std::time::Instant::now();
    loop {
        let m = get(&gw.admin_url("/metrics")).await.text();
        if m.contains("portico_grpc_reflection_total{route=\"route-1\",result=\"error\"}") {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{m}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let got = call(&gw, "GET", "/v1/shelves", None).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.header("retry-after"), Some("1"));
    assert_eq!(got.json()["code"], "grpc_definitions_unavailable");
}

/// `tests/golden/proto3_json.json`: each request sent to `Echo`, and the JSON that must come
/// back, for the edge cases of the proto3 JSON mapping.
#[tokio::test]
async fn proto3_json_golden_cases() {
    let gw = bookstore_gateway("").await;
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/proto3_json.json");
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(cases.len() >= 10);
    let mut failures = Vec::new();
    for case in &cases {
        let got = call(&gw, "POST", "/v1/echo", Some(case["request"].clone())).await;
        let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap_or_default();
        if got.status != 200 || body != case["response"] {
            failures.push(format!(
                "{}: got {} {}, want {}",
                case["name"],
                got.status,
                got.text(),
                case["response"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
