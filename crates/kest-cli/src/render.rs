//! Renderers of `kest viz` and `kest inspect`, over decoded (possibly
//! unverified, possibly hostile) passports.
//!
//! Nothing here slices or indexes a string that came from the input: hashes
//! and names are shortened by characters, never by byte offsets. This file
//! depends only on `std`, `kest_core` and `serde_json`, so the fuzz crate
//! (`fuzz/`) and the stable smoke run (`benches/tests/fuzz_smoke.rs`)
//! include it as it is and feed it arbitrary bytes. The pictures
//! ([`picture`], laid out by [`layout`]) are submodules mounted by path
//! next to this file, so whoever includes it gets them too.

use std::collections::HashMap;
use std::fmt::Write as _;

use kest_core::encoding::b64url_decode;
use kest_core::{EntryHash, Passport, UnverifiedPassport};
use serde_json::{Value, json};

#[path = "layout.rs"]
pub mod layout;
#[path = "picture.rs"]
pub mod picture;

/// Nesting limit when decoding segments for display.
const MAX_DEPTH: usize = 64;

/// At most the first `n` characters of `s` (never splits a character).
pub fn short(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((end, _)) => s.get(..end).unwrap_or(s),
        None => s,
    }
}

/// `n` and the noun in the right number: `1 entry`, `3 entries`.
pub fn count(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// At most `n` characters of `s`, with `…` when something was cut.
pub fn ellipsis(s: &str, n: usize) -> String {
    let head = short(s, n);
    if head.len() < s.len() { format!("{head}…") } else { head.to_owned() }
}

/// An error message that may quote its input between backticks (a baggage
/// member, a key, a value) with every quoted part longer than `n`
/// characters cut to a short prefix and `…`, so a whole passport is never
/// echoed back; the message as a whole is also kept to a few hundred
/// characters.
pub fn clip_quoted(message: &str, n: usize) -> String {
    let mut out = String::with_capacity(message.len().min(512));
    for (i, part) in message.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        // Odd parts are between backticks (a quote never closed is cut too).
        if i % 2 == 1 { out.push_str(&ellipsis(part, n)) } else { out.push_str(part) }
    }
    ellipsis(&out, 400)
}

/// `s` with every control character (newlines, escape sequences, NUL …)
/// replaced by U+FFFD, so a hostile name cannot forge output lines or
/// drive the terminal.
pub fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
}

/// One node as drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Entry hash.
    pub hash: String,
    /// Operation.
    pub operation: String,
    /// Signer.
    pub principal: String,
    /// Trust score.
    pub trust: String,
    /// Taints.
    pub taints: Vec<String>,
    /// Parent hashes.
    pub parents: Vec<String>,
}

/// Nodes of a verified passport.
pub fn nodes_of(passport: &Passport) -> Vec<Node> {
    passport
        .entries()
        .iter()
        .map(|e| Node {
            hash: e.hash().to_string(),
            operation: e.payload().operation.clone(),
            principal: e.principal().to_owned(),
            trust: e.payload().trust_score.to_string(),
            taints: e.payload().taints.clone(),
            parents: e.parents().iter().map(ToString::to_string).collect(),
        })
        .collect()
}

/// Nodes of a passport whose entries were only decoded, not verified:
/// whatever the payloads say, with `?` for what is missing.
pub fn nodes_unverified(passport: &UnverifiedPassport) -> Vec<Node> {
    passport
        .entries()
        .iter()
        .map(|jws| {
            let payload = decode_segment(jws.split('.').nth(1));
            let strings = |v: Option<&Value>| -> Vec<String> {
                v.and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default()
            };
            let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("?").to_owned();
            Node {
                hash: EntryHash::of(jws).to_string(),
                operation: text(payload.get("operation")),
                principal: text(payload.get("labels").and_then(|l| l.get("principal"))),
                trust: payload.get("trust_score").map_or_else(|| "?".to_owned(), Value::to_string),
                taints: strings(payload.get("taints")),
                parents: strings(payload.get("parent_ids")).into_iter().filter(|p| p != "0").collect(),
            }
        })
        .collect()
}

fn label(n: &Node) -> String {
    let taints =
        if n.taints.is_empty() { String::new() } else { format!(" taints=[{}]", n.taints.join(",")) };
    printable(&format!("{} by {} trust={}{}", n.operation, n.principal, n.trust, taints))
}

/// The DAG as an indented tree: each entry under its first parent; an entry
/// with more parents is marked as joining them. Iterative, so a hostile
/// chain of any length cannot exhaust the stack.
pub fn render_tree(nodes: &[Node]) -> String {
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.hash.as_str(), i)).collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut roots = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        // Only an earlier node can be a parent, so the tree has no cycle
        // even if the input names itself or a later entry.
        let parent = n.parents.first().and_then(|p| index.get(p.as_str())).copied().filter(|&p| p < i);
        match parent.and_then(|p| children.get_mut(p)) {
            Some(kids) => kids.push(i),
            None => roots.push(i),
        }
    }
    let mut out = String::new();
    // (node, prefix, last, top), visited depth first.
    let mut stack: Vec<(usize, String, bool, bool)> =
        roots.iter().rev().map(|&r| (r, String::new(), true, true)).collect();
    while let Some((i, prefix, last, top)) = stack.pop() {
        let Some(n) = nodes.get(i) else { continue };
        let branch = if top {
            ""
        } else if last {
            "└─ "
        } else {
            "├─ "
        };
        let joins = if n.parents.len() > 1 {
            let joined = n.parents.iter().map(|p| short(p, 8)).collect::<Vec<_>>().join(" + ");
            format!("  ⇐ joins {}", printable(&joined))
        } else {
            String::new()
        };
        let _ = writeln!(out, "{prefix}{branch}{} [{}]{joins}", label(n), short(&n.hash, 8));
        let child_prefix =
            if top { String::new() } else { format!("{prefix}{}", if last { "   " } else { "│  " }) };
        let kids = children.get(i).map(Vec::as_slice).unwrap_or_default();
        for (k, &c) in kids.iter().enumerate().rev() {
            stack.push((c, child_prefix.clone(), k + 1 == kids.len(), false));
        }
    }
    out
}

/// A Mermaid flowchart.
pub fn render_mermaid(nodes: &[Node]) -> String {
    let mut out = String::from("flowchart TD\n");
    for n in nodes {
        let _ = writeln!(out, "  n{}[\"{}\"]", short(&n.hash, 12), label(n).replace('"', "'"));
    }
    for n in nodes {
        for p in &n.parents {
            let _ = writeln!(out, "  n{} --> n{}", mermaid_id(p), short(&n.hash, 12));
        }
    }
    out
}

/// A parent reference as a Mermaid node id: only the hex digits of its
/// first 12 characters (an unverified parent id may hold anything).
fn mermaid_id(p: &str) -> String {
    short(p, 12).chars().filter(char::is_ascii_alphanumeric).collect()
}

/// Graphviz dot.
pub fn render_dot(nodes: &[Node]) -> String {
    let mut out = String::from("digraph passport {\n  rankdir=TB;\n  node [shape=box];\n");
    for n in nodes {
        let _ = writeln!(out, "  \"{}\" [label=\"{}\"];", short(&n.hash, 12), dot_escape(&label(n)));
    }
    for n in nodes {
        for p in &n.parents {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\";",
                dot_escape(&printable(short(p, 12))),
                short(&n.hash, 12)
            );
        }
    }
    out.push_str("}\n");
    out
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "'")
}

/// Decodes one JWS segment for display: the JSON value, or
/// `{"undecodable": reason}`; `Null` when the segment is absent.
pub fn decode_segment(segment: Option<&str>) -> Value {
    let Some(segment) = segment else { return Value::Null };
    match b64url_decode(segment) {
        Ok(bytes) => match kest_core::json::parse_strict(&bytes, MAX_DEPTH) {
            Ok(v) => v,
            Err(e) => json!({ "undecodable": e.to_string() }),
        },
        Err(_) => json!({ "undecodable": "not unpadded base64url" }),
    }
}

/// `kest inspect --format json`: each entry's index, hash, and header and
/// payload as decoded.
pub fn inspect_entries(passport: &UnverifiedPassport) -> Vec<Value> {
    passport
        .entries()
        .iter()
        .enumerate()
        .map(|(index, jws)| {
            let mut parts = jws.split('.');
            json!({
                "index": index,
                "hash": EntryHash::of(jws).to_string(),
                "header": decode_segment(parts.next()),
                "payload": decode_segment(parts.next()),
            })
        })
        .collect()
}

/// `kest inspect` text output for the decoded entries.
pub fn inspect_text(decoded: &[Value]) -> String {
    let mut out = format!("{} (NOT verified: use `kest verify`)\n", count(decoded.len(), "entry", "entries"));
    let null = Value::Null;
    for entry in decoded {
        let p = entry.get("payload").unwrap_or(&null);
        let text = |v: Option<&Value>| printable(v.and_then(Value::as_str).unwrap_or("?"));
        let raw = |v: Option<&Value>| v.unwrap_or(&null).to_string();
        let _ = writeln!(
            out,
            "[{}] {} {}\n    operation={} principal={} trust={} classification={}\n    parents={} taints={}",
            raw(entry.get("index")),
            text(entry.get("hash")),
            text(p.get("entry_id")),
            text(p.get("operation")),
            text(p.get("labels").and_then(|l| l.get("principal"))),
            raw(p.get("trust_score")),
            text(p.get("classification")),
            raw(p.get("parent_ids")),
            raw(p.get("taints")),
        );
    }
    out
}

/// Every renderer over `text` taken as an unverified passport (what the
/// `render` fuzz target runs; the HTML page holds the SVG picture, with a
/// refused call after the tips): returns `None` when `text` is not a passport
/// document. Never panics.
pub fn render_all(text: &str) -> Option<Vec<String>> {
    let passport = UnverifiedPassport::from_json(text, &kest_core::Limits::default()).ok()?;
    let nodes = nodes_unverified(&passport);
    let decoded = inspect_entries(&passport);
    Some(vec![
        render_tree(&nodes),
        render_mermaid(&nodes),
        render_dot(&nodes),
        picture::Picture::unverified(&passport)
            .with_refused(Some(picture::Refused { operation: "refused".into(), reason: None }))
            .html(),
        inspect_text(&decoded),
        Value::Array(decoded).to_string(),
    ])
}
