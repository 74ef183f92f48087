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
