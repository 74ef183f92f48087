//! Checking bench/order-1k.json (1,007 bytes) against bench/contract.yaml's `Order` schema:
//! Portico's validator, and for comparison serde_json alone (skipping the values, and building
//! a `serde_json::Value`) and the `jsonschema` crate on a `Value` (docs/decisions/0021).
//!
//!     cargo bench -p portico-contract --bench validate

use criterion::{Criterion, criterion_group, criterion_main};
use portico_contract::{Compiler, Dialect, Direction, Scratch, validate_json, validate_streaming};
use serde_json::{Value, json};

/// bench/contract.yaml's schemas, as JSON.
fn document() -> Value {
    json!({ "components": { "schemas": {
        "Order": {
            "type": "object", "additionalProperties": false,
            "required": ["id", "name", "email", "items"],
            "properties": {
                "id": { "type": "integer", "minimum": 1 },
                "name": { "type": "string", "maxLength": 100 },
                "email": { "type": "string", "format": "email" },
                "tags": { "type": "array", "items": { "type": "string" }, "maxItems": 20 },
                "address": { "type": "object", "properties": {
                    "street": { "type": "string" }, "city": { "type": "string" },
                    "zip": { "type": "string", "pattern": "^[0-9]{5}$" } } },
                "items": { "type": "array", "items": { "$ref": "#/components/schemas/Item" } },
                "note": { "type": "string" }
            }
        },
        "Item": {
            "type": "object", "required": ["sku", "qty"],
            "properties": {
                "sku": { "type": "string" },
                "qty": { "type": "integer", "minimum": 1 },
                "price": { "type": "number" }
            }
        }
    } } })
}

fn bench(c: &mut Criterion) {
    let body = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/order-1k.json"),
    )
    .expect("bench/order-1k.json");
    let doc = document();
    let mut compiler = Compiler::new(&doc, Dialect::Oas31);
    let id = compiler.schema("/components/schemas/Order");
    let (schemas, errors) = compiler.finish();
    assert!(errors.is_empty(), "{errors:?}");
    let mut scratch = Scratch::default();
    assert!(
        validate_json(
            &schemas,
            id,
            &body,
            &mut scratch,
            64,
            20,
            Direction::Request
        )
        .unwrap()
        .is_empty()
    );

    let mut wrapped = doc.clone();
    wrapped["$ref"] = json!("#/components/schemas/Order");
    let reference = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&wrapped)
        .expect("jsonschema compiles the schema");

    assert_eq!(
        validate_streaming(&schemas, id, &body, 64, Direction::Request),
        Some(true)
    );

    let mut g = c.benchmark_group("order-1k");
    // What a request pays: the schema streams, so the body is checked as it is read.
    g.bench_function("portico streaming", |b| {
        b.iter(|| {
            validate_streaming(
                &schemas,
                id,
                std::hint::black_box(&body),
                64,
                Direction::Request,
            )
        })
    });
    // The tree checker, which a refused body (or a schema with alternatives) goes through.
    g.bench_function("portico", |b| {
        b.iter(|| {
            validate_json(
                &schemas,
                id,
                std::hint::black_box(&body),
                &mut scratch,
                64,
                20,
                Direction::Request,
            )
            .unwrap()
        })
    });
    g.bench_function("serde_json skip", |b| {
        b.iter(|| {
            serde_json::from_slice::<serde::de::IgnoredAny>(std::hint::black_box(&body)).unwrap()
        })
    });
    // The floor of any check through serde: every value handed to a visitor that does nothing.
    g.bench_function("serde_json visit", |b| {
        b.iter(|| {
            let mut de = serde_json::Deserializer::from_slice(std::hint::black_box(&body));
            serde::de::DeserializeSeed::deserialize(Visit, &mut de).unwrap();
            de.end().unwrap()
        })
    });
    g.bench_function("serde_json Value", |b| {
        b.iter(|| serde_json::from_slice::<Value>(std::hint::black_box(&body)).unwrap())
    });
    g.bench_function("serde_json Value + jsonschema", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(std::hint::black_box(&body)).unwrap();
            reference.is_valid(&v)
        })
    });
    g.finish();
}

/// A seed that reads every value through `deserialize_any` and keeps nothing.
#[derive(Clone, Copy)]
struct Visit;

impl<'de> serde::de::DeserializeSeed<'de> for Visit {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Visit {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        while a.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        while a.next_key_seed(KeyOnly)?.is_some() {
            a.next_value_seed(self)?;
        }
        Ok(())
    }
}

/// A key read as a string (as the checker reads it), not skipped.
struct KeyOnly;

impl<'de> serde::de::DeserializeSeed<'de> for KeyOnly {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(Visit)
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
