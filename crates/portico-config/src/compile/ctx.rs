//! The state of one compilation and the helpers every part of it uses: the value node under a
//! key and its location, the location of a list's item, and reading a file a config names
//! (bounded, relative to the config's folder).

use std::path::{Path, PathBuf};

use http::HeaderName;

use crate::diag::Sink;
use crate::ir::*;
use crate::tree::{Env, Loc, Node, NodeKind};

pub(crate) struct Ctx<'a> {
    /// Slots of per-policy state handed out so far (`Config::policy_slots`).
    pub(crate) state_slots: usize,
    /// JWKS URLs by slot.
    pub(crate) jwks: Vec<JwksSource>,
    /// Whether any consumer has an API key / Basic credentials.
    pub(crate) have_api_keys: bool,
    pub(crate) have_users: bool,
    /// Header names `jwt` policies forward claims in.
    pub(crate) claim_headers: Vec<HeaderName>,
    /// Whether the file has a `redis` section (for `store: redis`).
    pub(crate) have_redis: bool,
    /// Whether the global chain authenticates (so route `acl` policies have an identity).
    pub(crate) global_auth: bool,
    pub(crate) sink: Sink<'a>,
    pub(crate) base_dir: &'a Path,
    pub(crate) env: Env<'a>,
    /// OpenAPI documents read (`Config::documents`).
    pub(crate) documents: Vec<std::path::PathBuf>,
    /// The `apis` documents read (`Config::apis`).
    pub(crate) apis: Vec<crate::config::ApiDocument>,
    /// While `apis` compile: the slot given to each policy config node, by where it is written
    /// and what it says. An API's or a tag's policy is copied into every operation's route;
    /// its copies share one slot, so one `rate_limit` is one budget for them all and one
    /// `jwt` one token cache, as the config reads.
    pub(crate) shared_slots: Option<std::collections::HashMap<(u32, u32, u64), usize>>,
    /// The scope of each shared slot's `rate_limit` (its counters' identity across reloads
    /// and in Redis), in place of a route's name.
    pub(crate) shared_scopes: std::collections::HashMap<usize, String>,
    /// While `apis` compile: what names a policy node written at a place, by what it belongs
    /// to (`api orders policies[0]`, `api orders tag admin policies[1]`), so that its scope
    /// stays the same when lines above it move.
    pub(crate) shared_labels: std::collections::HashMap<(u32, u32), String>,
}

impl<'a> Ctx<'a> {
    /// The slot of the next policy that keeps state between requests (a limiter, a cache):
    /// its index in the runtime's one list of per-policy state.
    pub(crate) fn next_slot(&mut self) -> usize {
        self.state_slots += 1;
        self.state_slots - 1
    }

    /// A compilation of `text` (named `source` in diagnostics), nothing compiled yet.
    pub(crate) fn new(source: &'a str, text: &'a str, base_dir: &'a Path, env: Env<'a>) -> Self {
        Ctx {
            state_slots: 0,
            have_redis: false,
            jwks: Vec::new(),
            have_api_keys: false,
            have_users: false,
            claim_headers: Vec::new(),
            global_auth: false,
            sink: Sink::new(source, text),
            base_dir,
            env,
            documents: Vec::new(),
            apis: Vec::new(),
            shared_slots: None,
            shared_scopes: std::collections::HashMap::new(),
            shared_labels: std::collections::HashMap::new(),
        }
    }

    /// The slot of the policy written at `node`: a new one, or, while `apis` compile, the one
    /// already given to a copy of the same node.
    pub(crate) fn slot_for(&mut self, node: &Node) -> usize {
        let Some(map) = self.shared_slots.as_mut() else {
            return self.next_slot();
        };
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        node.to_json().to_string().hash(&mut h);
        let key = (node.loc.line, node.loc.column, h.finish());
        if let Some(slot) = map.get(&key) {
            return *slot;
        }
        self.state_slots += 1;
        let slot = self.state_slots - 1;
        if let Some(map) = self.shared_slots.as_mut() {
            map.insert(key, slot);
        }
        // Named by what the policy belongs to where that is known (its settings are in the
        // fingerprint already); else by where it is written and what it says.
        let scope = match self.shared_labels.get(&(key.0, key.1)) {
            Some(label) => label.clone(),
            None => format!("shared {}:{} {:x}", key.0, key.1, key.2),
        };
        self.shared_scopes.insert(slot, scope);
        slot
    }
}

/// The value node under `key` in a mapping node.
pub(crate) fn get<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    match &node.kind {
        NodeKind::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// Location of `key`'s value in a mapping node, or of the mapping itself.
pub(crate) fn loc(node: &Node, key: &str) -> Loc {
    get(node, key).map_or(node.loc, |n| n.loc)
}

/// Location of the `i`th item of the list under `key`.
pub(crate) fn item_loc(node: &Node, key: &str, i: usize) -> Loc {
    match get(node, key).map(|n| &n.kind) {
        Some(NodeKind::Seq(items)) => items.get(i).map_or(loc(node, key), |n| n.loc),
        _ => loc(node, key),
    }
}

/// A count that must be greater than 0: the value given, or `default` when absent (or 0,
/// which is reported at `key`).
pub(crate) fn positive(
    cx: &mut Ctx<'_>,
    node: &Node,
    key: &str,
    v: Option<usize>,
    default: usize,
) -> usize {
    match v {
        Some(0) => {
            cx.sink.at(
                loc(node, key),
                format!("`{key}` must be greater than 0"),
                format!("remove it for the default, {default}"),
            );
            default
        }
        Some(n) => n,
        None => default,
    }
}

pub(super) fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

pub(super) const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

pub(super) fn each_item<'n>(
    cx: &mut Ctx<'_>,
    v: &'n Node,
    mut f: impl FnMut(&mut Ctx<'_>, &'n Node),
) {
    match &v.kind {
        NodeKind::Seq(items) => items.iter().for_each(|n| f(cx, n)),
        NodeKind::Null => {}
        _ => cx.sink.at(
            v.loc,
            format!("expected a list, found {}", v.type_name()),
            "start each item with `- `",
        ),
    }
}

pub(crate) fn resolve(cx: &Ctx<'_>, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cx.base_dir.join(p)
    }
}

/// Largest file a config may name (certificates, keys, CA bundles, secrets, descriptor sets).
pub(crate) const MAX_NAMED_FILE: u64 = 64 << 20;

/// Reads a regular file of at most `MAX_NAMED_FILE` bytes: a config that names `/dev/zero`, a
/// FIFO or a huge file must fail with an error, not hang or exhaust memory while loading.
pub(crate) fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_NAMED_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB",
            MAX_NAMED_FILE >> 20
        )));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_NAMED_FILE + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_NAMED_FILE {
        return Err(std::io::Error::other("it grew while being read"));
    }
    Ok(buf)
}

pub(crate) fn read_file(cx: &mut Ctx<'_>, path: &str, at: Loc) -> Option<Vec<u8>> {
    let full = resolve(cx, path);
    match read_bounded(&full) {
        Ok(b) => Some(b),
        Err(e) => {
            cx.sink.at(
                at,
                format!("cannot read `{}`: {e}", full.display()),
                "check the path; relative paths are resolved from the config file's folder",
            );
            None
        }
    }
}

/// What the unit tests of `compile/` share: a context over `text`, and the text parsed.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use super::Ctx;
    use crate::diag::Diagnostic;
    use crate::tree::{Node, parse_document};

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// A context over `text` with no environment and `.` as the base folder.
    pub(crate) fn ctx(text: &str) -> Ctx<'_> {
        Ctx::new("test.yaml", text, Path::new("."), &no_env)
    }

    pub(crate) fn doc(text: &str) -> Node {
        parse_document(text).expect("test YAML parses")
    }

    /// The one diagnostic the context collected.
    pub(crate) fn only_diagnostic(cx: Ctx<'_>) -> Diagnostic {
        let mut d = cx.sink.finish().0;
        assert_eq!(d.len(), 1, "{d:?}");
        d.remove(0)
    }
}
