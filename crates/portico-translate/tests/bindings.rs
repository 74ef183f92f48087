//! Bindings read from the test kit's bookstore protos (compiled by protox).

use portico_translate::{Options, RequestError, Transcoder};

fn protos() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../portico-testkit/protos")
}

fn bookstore(options: Options) -> Result<Transcoder, Vec<String>> {
    // Encoded by protox itself: prost-types would drop the `google.api.http` options.
    let set = protox::Compiler::new([protos()])
        .unwrap()
        .include_imports(true)
        .open_file("bookstore/bookstore.proto")
        .unwrap()
        .encode_file_descriptor_set();
    Transcoder::new(&set, options)
}

fn opts() -> Options {
    Options {
        services: vec![],
        call_by_name: true,
        emit_defaults: false,
        ignore_unknown_query: false,
    }
}

#[test]
fn annotated_methods_are_bound() {
    let t = bookstore(opts()).unwrap();
    let get = http::Method::GET;
    let c = t.route(&get, "/v1/shelves/3").unwrap();
    assert_eq!(c.method.desc.name(), "GetShelf");
    let c = t.route(&get, "/v1/shelves/3/books/4/title").unwrap();
    assert_eq!(c.method.desc.name(), "GetBookTitle");
    assert_eq!(
        t.route(&http::Method::DELETE, "/v1/shelves").unwrap_err(),
        RequestError::MethodNotAllowed
    );
    assert_eq!(t.route(&get, "/v2/x").unwrap_err(), RequestError::NotFound);
    let c = t
        .route(&http::Method::POST, "/bookstore.Bookstore/Unannotated")
        .unwrap();
    assert_eq!(c.method.desc.name(), "Unannotated");
    let no_names = bookstore(Options {
        call_by_name: false,
        ..opts()
    })
    .unwrap();
    assert!(
        no_names
            .route(&http::Method::POST, "/bookstore.Bookstore/Unannotated")
            .is_err()
    );
}

#[test]
fn unknown_services_are_reported() {
    let e = bookstore(Options {
        services: vec!["nope.Svc".into()],
        ..opts()
    })
    .unwrap_err();
    assert!(
        e[0].contains("service `nope.Svc` is not in the descriptor set"),
        "{e:?}"
    );
}

/// Compiles one extra proto (next to the test kit's) and builds a transcoder from it.
fn compile_one(name: &str, text: &str) -> Result<Transcoder, Vec<String>> {
    let dir = std::env::temp_dir().join(format!("portico-translate-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.proto")), text).unwrap();
    let set = protox::Compiler::new([dir.clone(), protos()])
        .unwrap()
        .include_imports(true)
        .open_file(format!("{name}.proto"))
        .unwrap()
        .encode_file_descriptor_set();
    Transcoder::new(&set, opts())
}

const HEAD: &str = r#"syntax = "proto3";
package t;
import "google/api/annotations.proto";
message Req { int64 id = 1; Inner inner = 2; repeated string tags = 3; }
message Inner { string name = 1; }
message Res { string out = 1; }
"#;

#[test]
fn annotation_problems_name_the_method() {
    let cases = [
        (
            "unknown_field",
            r#"service S { rpc Get(Req) returns (Res) { option (google.api.http) = { get: "/v1/{nope}" }; } }"#,
            "method `t.S.Get`: path template `/v1/{nope}`: no field `nope` in `t.Req`",
        ),
        (
            "message_field",
            r#"service S { rpc Get(Req) returns (Res) { option (google.api.http) = { get: "/v1/{inner}" }; } }"#,
            "field `inner` is a message",
        ),
        (
            "list_field",
            r#"service S { rpc Get(Req) returns (Res) { option (google.api.http) = { get: "/v1/{tags}" }; } }"#,
            "is a list",
        ),
        (
            "bad_template",
            r#"service S { rpc Get(Req) returns (Res) { option (google.api.http) = { get: "/v1/**/x" }; } }"#,
            "`**` must be the last segment",
        ),
        (
            "bad_body",
            r#"service S { rpc Post(Req) returns (Res) { option (google.api.http) = { post: "/v1" body: "missing" }; } }"#,
            "`body: \"missing\"` names no field of `t.Req`",
        ),
        (
            "bad_response_body",
            r#"service S { rpc Get(Req) returns (Res) { option (google.api.http) = { get: "/v1" response_body: "x" }; } }"#,
            "`response_body: \"x\"` names no field of `t.Res`",
        ),
        (
            "conflict",
            r#"service S {
                 rpc A(Req) returns (Res) { option (google.api.http) = { get: "/v1/{id}" }; }
                 rpc B(Req) returns (Res) { option (google.api.http) = { get: "/v1/{id}" }; }
               }"#,
            "methods `t.S.A` and `t.S.B` both bind GET to the same path template",
        ),
    ];
    for (name, service, want) in cases {
        let errors = compile_one(name, &format!("{HEAD}{service}\n")).unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{name}: {errors:?}"
        );
    }
    // A nested field path is fine.
    compile_one(
        "nested_ok",
        &format!(
            "{HEAD}{}\n",
            r#"service S { rpc Get(Req) returns (Res) { option (google.api.http) = { get: "/v1/{inner.name}/{id}" }; } }"#
        ),
    )
    .unwrap();
}

#[test]
fn a_descriptor_set_without_annotations_is_callable_by_name() {
    let t = compile_one(
        "plain",
        r#"syntax = "proto3";
package p;
message M { string a = 1; }
service Plain { rpc Do(M) returns (M); }
"#,
    )
    .unwrap();
    let c = t.route(&http::Method::POST, "/p.Plain/Do").unwrap();
    let framed = t.request(&c, None, br#"{"a": "x"}"#).unwrap();
    assert_eq!(&framed[..], &[0, 0, 0, 0, 3, 10, 1, b'x']);
    assert!(Transcoder::new(b"not a descriptor set", opts()).is_err());
}
