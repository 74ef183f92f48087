//! SOAP routes against a real SOAP service (spyne, `crates/portico-testkit/soap/server.py`),
//! driven by the service's own WSDLs (SOAP 1.1 and 1.2) and by a copy whose types live in
//! imported and included XSD files. Without Python's spyne these tests are skipped (reported
//! on stderr) unless `PORTICO_REQUIRE_SOAP=1`, which CI sets, makes that a failure.

use http_body_util::Full;
use portico_testkit::*;
use serde_json::{Value, json};

use crate::{config, req};

async fn call(gw: &TestGateway, path: &str, body: Value) -> Got {
    let c = client(false, &[]);
    send(
        &c,
        req("POST", &gw.url(path))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await
}

fn soap_gateway_config(server: &SoapServer) -> String {
    let dir = soap_dir();
    config(&format!(
        r#"upstreams:
  calc: {{ targets: ["{url}"] }}
routes:
  - name: calc11
    match: {{ path: {{ prefix: /calc11 }} }}
    upstream: calc
    soap:
      wsdl: "{d}/calculator11.wsdl"
      operations:
        GetPerson: {{ method: GET, path: "/people/{{id}}" }}
        Add: {{ method: GET, path: /add }}
        Echo: {{ method: PUT, path: "/echo/{{color}}" }}
  - match: {{ path: {{ prefix: /calc12 }} }}
    upstream: calc
    soap: {{ wsdl: "{d}/calculator12.wsdl" }}
  - match: {{ path: {{ prefix: /split }} }}
    upstream: calc
    soap:
      wsdl: "{d}/split/calculator.wsdl"
      ws_security: {{ username: gateway, password: "s3cret&<" }}
"#,
        url = server.url(),
        d = dir.display()
    ))
}

#[tokio::test]
async fn json_calls_become_soap_calls_and_back() {
    let Some(server) = soap_server() else { return };
    let gw = gateway(&soap_gateway_config(&server)).await;
    for prefix in ["/calc11", "/calc12", "/split"] {
        let got = call(&gw, &format!("{prefix}/Add"), json!({"a": 2, "b": 40})).await;
        assert_eq!(got.status, 200, "{prefix}: {}", got.text());
        assert_eq!(got.header("content-type"), Some("application/json"));
        assert_eq!(got.json(), json!({"AddResult": 42}), "{prefix}");
    }
    // Typed by the schema: numbers, booleans, dates as text, nil as null, attributes, nested
    // records, and arrays of 0, 1 and many (a one-item array stays an array).
    let p3 = call(&gw, "/calc11/GetPerson", json!({"id": 3}))
        .await
        .json();
    let person = &p3["GetPersonResult"];
    assert_eq!(person["id"], 3);
    assert_eq!(person["name"], "Grace Hopper");
    assert_eq!(person["active"], true);
    assert_eq!(person["born"], "1906-12-09");
    assert_eq!(person["balance"], 1000000.01);
    assert_eq!(person["kind"], "customer");
    assert_eq!(
        person["address"],
        json!({"street": "1 Navy Yard", "city": "Arlington"})
    );
    assert_eq!(person["phones"].as_array().unwrap().len(), 3);
    let p2 = call(&gw, "/calc12/GetPerson", json!({"id": 2}))
        .await
        .json();
    assert_eq!(p2["GetPersonResult"]["nickname"], Value::Null);
    assert_eq!(p2["GetPersonResult"]["phones"], json!(["+44 1625 000001"]));
    let p1 = call(&gw, "/split/GetPerson", json!({"id": 1})).await.json();
    assert_eq!(p1["GetPersonResult"]["phones"], json!([]));
    // Arrays in requests, enumerations and restricted integers that fit.
    let got = call(&gw, "/calc11/Sum", json!({"numbers": [1, 2, 3, 4]})).await;
    assert_eq!(got.json(), json!({"SumResult": 10}), "{}", got.text());
    let got = call(
        &gw,
        "/calc12/Echo",
        json!({"text": "ab", "count": 2, "color": "green"}),
    )
    .await;
    assert_eq!(
        got.json(),
        json!({"EchoResult": "abab green"}),
        "{}",
        got.text()
    );
}

#[tokio::test]
async fn faults_become_problems_with_the_fault_inside() {
    let Some(server) = soap_server() else { return };
    let gw = gateway(&soap_gateway_config(&server)).await;
    // SOAP 1.1: a client fault is the client's error (400), with code, string and detail.
    let got = call(&gw, "/calc11/Divide", json!({"a": 10, "b": 0})).await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    let p = got.json();
    assert_eq!(p["code"], "soap_fault");
    assert_eq!(p["faultcode"], "Client.DivideByZero");
    assert_eq!(p["faultstring"], "division by zero");
    assert_eq!(p["faultdetail"]["DivideByZeroDetail"]["dividend"], "10.0");
    // A server fault is the upstream's (502).
    let got = call(&gw, "/calc11/Crash", json!({})).await;
    assert_eq!(got.status, 502, "{}", got.text());
    assert_eq!(got.json()["faultcode"], "Server");
    assert_eq!(got.json()["faultstring"], "backend exploded");
    // SOAP 1.2: Sender with a subcode, Receiver.
    let got = call(&gw, "/calc12/Divide", json!({"a": 1, "b": 0})).await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(got.json()["faultcode"], "Sender");
    assert_eq!(got.json()["subcodes"], json!(["DivideByZero"]));
    assert_eq!(got.json()["faultstring"], "division by zero");
    let got = call(&gw, "/calc12/Crash", json!({})).await;
    assert_eq!(got.status, 502);
    assert_eq!(got.json()["faultcode"], "Receiver");
}

#[tokio::test]
async fn requests_are_checked_against_the_schema_before_anything_is_sent() {
    let Some(server) = soap_server() else { return };
    let gw = gateway(&soap_gateway_config(&server)).await;
    let cases = [
        (
            "/calc11/Add",
            json!({"a": "two", "b": 1}),
            "a",
            "expected an integer",
        ),
        (
            "/calc11/Add",
            json!({"a": 1, "c": 1}),
            "c",
            "is not a field here (expected a, b)",
        ),
        (
            "/calc11/Add",
            json!({"a": [1]}),
            "a",
            "takes one value, not an array",
        ),
        (
            "/calc11/Echo",
            json!({"color": "purple"}),
            "color",
            "is not one of red, green, blue",
        ),
        (
            "/calc11/Echo",
            json!({"count": 11}),
            "count",
            "above the maximum 10",
        ),
        (
            "/calc11/Sum",
            json!({"numbers": [1, "x"]}),
            "numbers[1]",
            "expected an integer",
        ),
        ("/calc11/Add", json!({"a": "-"}), "a", "expected an integer"),
        (
            "/calc11/Echo",
            json!({"text": "a\u{1}b"}),
            "text",
            "cannot carry",
        ),
    ];
    for (path, body, field, words) in cases {
        let got = call(&gw, path, body.clone()).await;
        assert_eq!(got.status, 400, "{body}: {}", got.text());
        let p = got.json();
        assert_eq!(p["code"], "invalid_soap_request", "{body}");
        assert_eq!(p["field"], field, "{body}");
        assert!(p["detail"].as_str().unwrap().contains(words), "{body}: {p}");
    }
    let got = call(&gw, "/calc11/Nope", json!({})).await;
    assert_eq!(got.status, 404);
    assert_eq!(got.json()["code"], "no_soap_operation");
    assert!(
        got.json()["detail"]
            .as_str()
            .unwrap()
            .contains("Add, Divide")
    );
    let c = client(false, &[]);
    let got = send(
        &c,
        req("GET", &gw.url("/calc11/Add"))
            .body(crate::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 405);
    assert_eq!(got.header("allow"), Some("POST"));
    let c2 = client(false, &[]);
    let got = send(
        &c2,
        req("POST", &gw.url("/calc11/Add"))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from_static(b"{\"a\":")))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 400);
    assert_eq!(got.json()["code"], "invalid_json_body");
}

#[tokio::test]
async fn the_admin_port_serves_an_openapi_document_per_soap_route() {
    let Some(server) = soap_server() else { return };
    let gw = gateway(&soap_gateway_config(&server)).await;
    let c = client(false, &[]);
    let get = |p: &str| {
        send(
            &c,
            req("GET", &gw.admin_url(p)).body(crate::empty()).unwrap(),
        )
    };
    let list = get("/openapi").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["calc11"], "/openapi/calc11");
    let doc = get("/openapi/calc11").await.json();
    assert_eq!(doc["openapi"], "3.0.3");
    let add = &doc["paths"]["/calc11/Add"]["post"];
    assert_eq!(add["operationId"], "Add");
    assert_eq!(
        add["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Add"
    );
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Add"]["properties"]["a"]["type"], "integer");
    assert_eq!(schemas["Add"]["additionalProperties"], false);
    let person = &schemas["Person"]["properties"];
    assert_eq!(
        person["phones"]["type"], "array",
        "array wrappers are arrays: {person}"
    );
    assert_eq!(person["phones"]["items"]["type"], "string");
    assert_eq!(person["born"]["format"], "date");
    assert_eq!(person["kind"]["type"], "string");
    assert_eq!(schemas["Color"]["enum"], json!(["red", "green", "blue"]));
    // Every reference resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r.clone());
                }
                o.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(schemas.get(name).is_some(), "{r} does not resolve");
    }
    let missing = get("/openapi/nope").await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn operations_can_have_their_own_methods_and_paths() {
    let Some(server) = soap_server() else { return };
    let gw = gateway(&soap_gateway_config(&server)).await;
    let c = client(false, &[]);
    let get = |p: &str| send(&c, req("GET", &gw.url(p)).body(crate::empty()).unwrap());
    // Path parameters and query parameters fill in the fields, typed by the schema.
    let got = get("/calc11/people/3").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["GetPersonResult"]["name"], "Grace Hopper");
    let got = get("/calc11/add?a=20&b=22").await;
    assert_eq!(got.json(), json!({"AddResult": 42}), "{}", got.text());
    let got = get("/calc11/add?a=x").await;
    assert_eq!(got.status, 400);
    assert_eq!(got.json()["field"], "a");
    let got = send(
        &c,
        req("PUT", &gw.url("/calc11/echo/blue"))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from_static(
                b"{\"text\": \"hi\", \"count\": 1}",
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(
        got.json(),
        json!({"EchoResult": "hi blue"}),
        "{}",
        got.text()
    );
    // A query parameter wins over the body's field of the same name.
    let got = send(
        &c,
        req("PUT", &gw.url("/calc11/echo/red?text=yo"))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from_static(
                b"{\"text\": \"hi\", \"count\": 2}",
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(
        got.json(),
        json!({"EchoResult": "yoyo red"}),
        "{}",
        got.text()
    );
    // The default route of every operation stays.
    let got = call(&gw, "/calc11/GetPerson", json!({"id": 1})).await;
    assert_eq!(got.json()["GetPersonResult"]["name"], "Ada Lovelace");
    // The document shows the bound paths with their parameters.
    let doc = send(
        &c,
        req("GET", &gw.admin_url("/openapi/calc11"))
            .body(crate::empty())
            .unwrap(),
    )
    .await
    .json();
    let people = &doc["paths"]["/calc11/people/{id}"]["get"];
    assert_eq!(people["parameters"][0]["name"], "id");
    assert_eq!(people["parameters"][0]["in"], "path");
    assert_eq!(people["parameters"][0]["schema"]["type"], "integer");
    let add = &doc["paths"]["/calc11/add"]["get"]["parameters"];
    assert_eq!(add.as_array().unwrap().len(), 2);
    assert!(doc["paths"]["/calc11/echo/{color}"]["put"]["requestBody"].is_object());
}

/// Needs no SOAP service: an upstream that answers with entity attacks or the wrong thing.
#[tokio::test]
async fn hostile_or_broken_answers_become_502_problems() {
    let up = serve(|req| async move {
        let body = match req.uri().path() {
            "/xxe/soap11" => "<!DOCTYPE e [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><e>&x;</e>",
            "/laughs/soap11" => {
                "<!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]><l>&b;</l>"
            }
            "/other/soap11" => {
                "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><Surprise/></s:Body></s:Envelope>"
            }
            "/v12/soap11" => {
                "<e:Envelope xmlns:e=\"http://www.w3.org/2003/05/soap-envelope\"><e:Body/></e:Envelope>"
            }
            _ => "not xml at all",
        };
        let mut r = http::Response::new(full(body));
        r.headers_mut()
            .insert("content-type", "text/xml".parse().unwrap());
        r
    })
    .await;
    let wsdl = soap_dir().join("calculator11.wsdl");
    let gw = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n{}",
        up.url(),
        ["xxe", "laughs", "v12", "junk", "other"]
            .iter()
            .map(|n| format!(
                "  - match: {{ path: {{ prefix: /{n} }} }}\n    upstream: u\n    soap: {{ wsdl: \"{}\", path: /{n}/soap11 }}\n",
                wsdl.display()
            ))
            .collect::<String>()
    )))
    .await;
    for (prefix, words) in [
        ("/xxe", "DTD"),
        ("/laughs", "DTD"),
        ("/v12", "a SOAP 1.2 envelope"),
        ("/junk", "line 1"),
        ("/other", "not the operation's answer <AddResponse>"),
    ] {
        let got = call(&gw, &format!("{prefix}/Add"), json!({"a": 1, "b": 2})).await;
        assert_eq!(got.status, 502, "{prefix}: {}", got.text());
        assert_eq!(got.json()["code"], "upstream_invalid_soap");
        assert!(
            got.json()["detail"].as_str().unwrap().contains(words),
            "{prefix}: {}",
            got.text()
        );
        assert!(!got.text().contains("root:"));
    }
}

/// Needs no SOAP service: the WSDL and the schemas it imports are served over HTTP and fetched
/// while the config loads. (Loading blocks its thread, so the file server needs another one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wsdl_named_by_url_is_fetched_with_its_schemas_at_load() {
    let files = serve(|req| async move {
        let name = req.uri().path().trim_start_matches('/').to_owned();
        let dir = soap_dir().join("split");
        match std::fs::read(dir.join(&name)) {
            Ok(b) if !name.contains("..") => http::Response::new(full(b)),
            _ => {
                let mut r = http::Response::new(full("no such file"));
                *r.status_mut() = http::StatusCode::NOT_FOUND;
                r
            }
        }
    })
    .await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"http://127.0.0.1:9\"] }}\nroutes:\n  - name: remote\n    match: {{ path: {{ prefix: /r }} }}\n    upstream: u\n    soap: {{ wsdl: \"{}/calculator.wsdl\" }}\n",
        files.url()
    )))
    .await;
    assert!(
        files.hits() >= 3,
        "the WSDL, types.xsd and common.xsd were fetched"
    );
    let c = client(false, &[]);
    let doc = send(
        &c,
        req("GET", &gw.admin_url("/openapi/remote"))
            .body(crate::empty())
            .unwrap(),
    )
    .await
    .json();
    assert_eq!(
        doc["components"]["schemas"]["Color"]["enum"],
        json!(["red", "green", "blue"])
    );
    // A WSDL that is not there is a config error naming the URL.
    let text = format!(
        "upstreams:\n  u: {{ targets: [\"http://127.0.0.1:9\"] }}\nroutes:\n  - match: {{ path: {{ prefix: /r }} }}\n    upstream: u\n    soap: {{ wsdl: \"{}/missing.wsdl\" }}\n",
        files.url()
    );
    let err = portico_config::load_str("t.yaml", &text, std::path::Path::new("."), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("/missing.wsdl: cannot fetch it"), "{err}");
}
