//! The crate's layers (docs/architecture.md, "Layers"): a file imports only from the layers
//! below its own, and the files of one folder never import each other round a circle. Read
//! from the `crate::` paths of the sources, so a new upward import fails here rather than in a
//! reviewer's head.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom. A root file is a layer of its own; a folder is one layer.
const LAYERS: &[&str] = &[
    "lib.rs",
    "admin.rs",
    "gateway.rs",
    "fuzzing.rs",
    "listen",
    "pipeline",
    "translate",
    "runtime",
    "policy",
    "upstream",
    "body",
    "http1",
    "observe",
    "base",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every source file, as a path relative to `src/` with `/` separators.
fn files() -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![src()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p
                    .strip_prefix(src())
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

/// The layer a file belongs to: its folder, or the file itself at the root.
fn layer(file: &str) -> &str {
    file.split('/').next().unwrap()
}

fn rank(layer: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| *l == layer || l.strip_suffix(".rs") == Some(layer))
        .unwrap_or_else(|| {
            panic!("`{layer}` is in no layer: add it to LAYERS and to docs/architecture.md")
        })
}

/// The code of a file without its comments and its `#[cfg(test)]` module (tests may reach
/// anywhere), then each `crate::a::b` and `super::a` path in it as the file it names.
fn imports(file: &str, all: &BTreeSet<String>) -> BTreeSet<String> {
    let text = std::fs::read_to_string(src().join(file)).unwrap();
    let code: String = text
        .split("\n#[cfg(test)]\nmod ")
        .next()
        .unwrap()
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let path: Vec<&str> = rest
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .next()
            .unwrap()
            .split("::")
            .collect();
        let first = path[0];
        let target = if all.contains(&format!("{first}/mod.rs")) {
            match path.get(1) {
                Some(m) if all.contains(&format!("{first}/{m}.rs")) => format!("{first}/{m}.rs"),
                _ => format!("{first}/mod.rs"),
            }
        } else if all.contains(&format!("{first}.rs")) {
            format!("{first}.rs")
        } else {
            // An item of lib.rs.
            "lib.rs".to_string()
        };
        if target != file {
            out.insert(target);
        }
    }
    // `super::x` in a folder's file names its sibling `x`.
    if let Some((folder, _)) = file.split_once('/') {
        let mut rest = code.as_str();
        while let Some(i) = rest.find("super::") {
            rest = &rest[i + "super::".len()..];
            let m = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap();
            let sibling = format!("{folder}/{m}.rs");
            let target = if all.contains(&sibling) {
                sibling
            } else {
                format!("{folder}/mod.rs")
            };
            if target != file {
                out.insert(target);
            }
        }
    }
    out
}

#[test]
fn imports_point_down_and_folders_have_no_circles() {
    let all: BTreeSet<String> = files().into_iter().collect();
    let mut upward = Vec::new();
    let mut within: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &all {
        let from = layer(file);
        for to in imports(file, &all) {
            let (a, b) = (rank(from), rank(layer(&to)));
            if layer(&to) == from {
                if !to.ends_with("mod.rs") {
                    within.entry(file.clone()).or_default().insert(to);
                }
            } else if b < a {
                upward.push(format!("{file} -> {to}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up the layers (see docs/architecture.md):\n{}",
        upward.join("\n")
    );
    // A circle among the files of one folder: depth-first search for a back edge.
    fn visit(
        f: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(f) {
            Some(1) => {
                let at = path.iter().position(|p| p == f).unwrap();
                let mut c = path[at..].to_vec();
                c.push(f.to_string());
                return Some(c);
            }
            Some(_) => return None,
            None => {}
        }
        state.insert(f.to_string(), 1);
        path.push(f.to_string());
        for n in g.get(f).into_iter().flatten() {
            if let Some(c) = visit(n, g, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(f.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for f in within.keys() {
        if let Some(c) = visit(f, &within, &mut state, &mut Vec::new()) {
            panic!(
                "files that import each other in a circle: {}",
                c.join(" -> ")
            );
        }
    }
}

#[test]
fn every_layer_exists() {
    let all = files();
    for l in LAYERS {
        assert!(
            all.iter().any(|f| layer(f) == *l),
            "LAYERS names `{l}`, which is not in src/"
        );
    }
}
