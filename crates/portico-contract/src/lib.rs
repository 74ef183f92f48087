//! API contracts for Portico, free of I/O.
//!
//! `portico-config` compiles an OpenAPI operation's parameters, request body and schemas into
//! a [`RequestContract`] when the config loads, so a schema the validator cannot enforce is a
//! config error located in the document; `portico-proxy` checks each request against it after
//! authentication.
//!
//! - `json.rs` — a JSON body read once, by serde_json, into a flat tree borrowing its strings.
//! - `schema.rs` — JSON Schema (OpenAPI 3.0's dialect and 2020-12) compiled to linked nodes.
//! - `validate.rs` — a tree checked against a schema: every failure, with its JSON pointer.
//! - `stream.rs` — the fast path: a body checked while it is read, with no tree, when the
//!   schema allows; it only says "valid", and anything else goes to `validate.rs`.
//! - `format.rs` — the string formats that are checked.
//! - `request.rs` — parameters (every `style`/`explode`), content types and bodies.
//! - `response.rs` — an upstream's answer checked against its operation's `responses`.
//! - `openapi.rs` — an operation of an OpenAPI document compiled into its contracts.

#![forbid(unsafe_code)]

mod format;
mod json;
mod multipart;
mod openapi;
mod request;
mod response;
mod schema;
mod stream;
mod validate;

pub use json::{ReadError, Scratch};
pub use multipart::MAX_PARTS;
pub use openapi::{OperationRef, compile_operation, compile_responses, finish};
pub use request::{
    BodyCheck, BodyKind, BodyPlan, BodyRule, Failure, FieldStyle, In, Limits, MediaRange, Param,
    PartRule, Refusal, RequestContract, RequestParts, Style,
};
pub use response::{ResponseContract, ResponsePlan, ResponseRule, StatusSel};
pub use schema::{CompileError, Compiler, Dialect, SchemaId, Schemas, escape};
pub use validate::{Direction, Violation};

/// The verdict of the checker that reads as it goes, for schemas it takes (`None` for the
/// others): `Some(true)` only when the document is valid. For tests and fuzzing, which hold it
/// to [`validate_json`]'s verdict.
pub fn validate_streaming(
    schemas: &Schemas,
    schema: SchemaId,
    body: &[u8],
    max_depth: u32,
    direction: Direction,
) -> Option<bool> {
    schemas
        .plan
        .streams(schema)
        .then(|| stream::valid_bytes(schemas, schema, body, max_depth, direction))
}

/// Checks a JSON document against one schema: every failure up to `max_errors`, in document
/// order. For tests, fuzzing and tools; requests go through [`RequestContract::check`].
pub fn validate_json(
    schemas: &Schemas,
    schema: SchemaId,
    body: &[u8],
    scratch: &mut Scratch,
    max_depth: u32,
    max_errors: usize,
    direction: Direction,
) -> Result<Vec<Violation>, ReadError> {
    json::read(body, scratch, max_depth)?;
    let tree = json::Tree { body, s: scratch };
    let mut out = Vec::new();
    let mut run = validate::Run::new(tree, schemas, &mut out, max_errors.max(1), direction);
    let root = tree.root();
    let ok = run.check(schema, root);
    if run.exhausted {
        out.push(Violation {
            pointer: String::new(),
            keyword: "cost",
            message: format!(
                "checking this document took more than {} steps",
                validate::MAX_STEPS
            ),
        });
    }
    debug_assert!(ok == out.is_empty() || !ok);
    Ok(out)
}
