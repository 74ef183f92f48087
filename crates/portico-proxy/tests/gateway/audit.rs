//! The audit trail of a running gateway: start, configs applied and refused with their source
//! and changes, admin writes with their caller; and the chain verifies.

use portico_testkit::*;

use crate::{config, empty, req};

#[tokio::test]
async fn changes_and_refusals_and_admin_writes_are_chained_in_the_trail() {
    let up = echo_server().await;
    let dir = temp_dir("audit");
    let trail = dir.join("audit.jsonl");
    let key = dir.join("audit.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    let text = |routes: &str| {
        config(&format!(
            "audit: {{ path: \"{}\", hmac_key_file: \"{}\" }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n{routes}",
            trail.display(),
            key.display(),
            up.url()
        ))
    };
    let gw = gateway_from_file(&dir, &text("  - name: a\n    upstream: u\n")).await;
    let path = gw.path.clone().unwrap();
    let c = client(false, &[]);
    // Applied through the admin API: a route added.
    std::fs::write(
        &path,
        text("  - name: a\n    upstream: u\n  - name: b\n    match: { path: { prefix: /b } }\n    upstream: u\n"),
    )
    .unwrap();
    let got = send(
        &c,
        req("POST", &gw.admin_url("/reload")).body(empty()).unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    // Refused: an unknown upstream.
    std::fs::write(&path, text("  - name: a\n    upstream: nowhere\n")).unwrap();
    assert!(gw.gw.reload_file_from("signal").await.is_err());
    // An admin write that changes targets.
    let got = send(
        &c,
        req("PUT", &gw.admin_url("/upstreams/u/targets"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                "{{\"targets\":[\"{}\"]}}",
                up.url()
            ))))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    // Reads are not recorded.
    assert_eq!(get(&gw.admin_url("/config")).await.status, 200);

    let records: Vec<serde_json::Value> = std::fs::read_to_string(&trail)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "start",
            "config_applied",
            "admin",
            "config_refused",
            "admin"
        ],
        "{records:#?}"
    );
    assert_eq!(records[1]["source"], "admin");
    assert_eq!(records[1]["routes_added"], serde_json::json!(["b"]));
    assert_eq!(records[1]["previous_hash"], records[0]["config_hash"]);
    assert_eq!(records[2]["path"], "/reload");
    assert_eq!(records[2]["status"], 200);
    assert!(
        records[2]["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(records[3]["source"], "signal");
    assert!(
        records[3]["error"]
            .as_str()
            .unwrap()
            .contains("unknown upstream `nowhere`")
    );
    assert_eq!(records[4]["method"], "PUT");
    assert_eq!(records[4]["path"], "/upstreams/u/targets");
    // The chain holds, with the key.
    let k = std::fs::read(&key).unwrap();
    let v = portico_proxy::observe::audit::verify_file(&trail, Some(k.trim_ascii())).unwrap();
    assert_eq!(v.records, 5);
}
