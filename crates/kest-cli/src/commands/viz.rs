//! `kest viz`: the passport DAG as a tree, Mermaid, Graphviz dot or HTML.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use kest_core::{EntryHash, Limits, Passport, UnverifiedPassport, Verifier};

use super::load_keys;
use crate::input::read_input;
use crate::{CliError, Exit};

/// Output format of `kest viz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum VizFormat {
    /// An indented tree for the terminal.
    #[default]
    Tree,
    /// A Mermaid flowchart.
    Mermaid,
    /// Graphviz dot.
    Dot,
    /// A standalone HTML page (Mermaid source inside a <pre>, readable offline).
    Html,
}

/// Arguments of `kest viz`.
#[derive(Debug, Args)]
pub struct VizArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = VizFormat::Tree)]
    pub format: VizFormat,
    /// Verify against these keys first (JWKS/JWK; repeatable); without it the graph is drawn from
    /// decoded, unverified entries and says so.
    #[arg(long = "keys", value_name = "JWKS")]
    pub keys: Vec<PathBuf>,
    /// Passport file, or `-` for stdin.
    #[arg(value_name = "PASSPORT")]
    pub input: PathBuf,
}

/// One node as drawn.
#[derive(Debug, Clone)]
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

fn nodes_unverified(passport: &UnverifiedPassport) -> Vec<Node> {
    passport
        .entries()
        .iter()
        .map(|jws| {
            let payload = jws
                .split('.')
                .nth(1)
                .and_then(|p| kest_core::encoding::b64url_decode(p).ok())
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .unwrap_or_default();
            let strings = |v: &serde_json::Value| -> Vec<String> {
                v.as_array()
                    .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default()
            };
            Node {
                hash: EntryHash::of(jws).to_string(),
                operation: payload["operation"].as_str().unwrap_or("?").to_owned(),
                principal: payload["labels"]["principal"].as_str().unwrap_or("?").to_owned(),
                trust: payload["trust_score"].to_string(),
                taints: strings(&payload["taints"]),
                parents: strings(&payload["parent_ids"]).into_iter().filter(|p| p != "0").collect(),
            }
        })
        .collect()
}

fn label(n: &Node) -> String {
    let taints =
        if n.taints.is_empty() { String::new() } else { format!(" taints=[{}]", n.taints.join(",")) };
    format!("{} by {} trust={}{}", n.operation, n.principal, n.trust, taints)
}

/// The DAG as an indented tree: each entry under its first parent; an entry
/// with more parents is marked as joining them.
pub fn render_tree(nodes: &[Node]) -> String {
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.hash.as_str(), i)).collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut roots = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        match n.parents.first().and_then(|p| index.get(p.as_str())) {
            Some(&parent) => children[parent].push(i),
            None => roots.push(i),
        }
    }
    let mut out = String::new();
    fn walk(
        out: &mut String,
        nodes: &[Node],
        children: &[Vec<usize>],
        i: usize,
        prefix: &str,
        last: bool,
        top: bool,
    ) {
        let n = &nodes[i];
        let branch = if top {
            ""
        } else if last {
            "└─ "
        } else {
            "├─ "
        };
        let joins = if n.parents.len() > 1 {
            format!("  ⇐ joins {}", n.parents.iter().map(|p| &p[..8]).collect::<Vec<_>>().join(" + "))
        } else {
            String::new()
        };
        let _ = writeln!(out, "{prefix}{branch}{} [{}]{joins}", label(n), &n.hash[..8]);
        let child_prefix =
            if top { String::new() } else { format!("{prefix}{}", if last { "   " } else { "│  " }) };
        let kids = &children[i];
        for (k, &c) in kids.iter().enumerate() {
            walk(out, nodes, children, c, &child_prefix, k + 1 == kids.len(), false);
        }
    }
    for &r in &roots {
        walk(&mut out, nodes, &children, r, "", true, true);
    }
    out
}

fn render_mermaid(nodes: &[Node]) -> String {
    let mut out = String::from("flowchart TD\n");
    for n in nodes {
        let _ = writeln!(out, "  n{}[\"{}\"]", &n.hash[..12], label(n).replace('"', "'"));
    }
    for n in nodes {
        for p in &n.parents {
            let _ = writeln!(out, "  n{} --> n{}", &p[..12.min(p.len())], &n.hash[..12]);
        }
    }
    out
}

fn render_dot(nodes: &[Node]) -> String {
    let mut out = String::from("digraph passport {\n  rankdir=TB;\n  node [shape=box];\n");
    for n in nodes {
        let _ = writeln!(out, "  \"{}\" [label=\"{}\"];", &n.hash[..12], label(n).replace('"', "'"));
    }
    for n in nodes {
        for p in &n.parents {
            let _ = writeln!(out, "  \"{}\" -> \"{}\";", &p[..12.min(p.len())], &n.hash[..12]);
        }
    }
    out.push_str("}\n");
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Runs `kest viz`.
pub fn run(args: &VizArgs) -> Result<Exit, CliError> {
    let limits = Limits::default();
    let text = read_input(&args.input, limits.max_passport_bytes)?;
    let (nodes, verified) = if args.keys.is_empty() {
        let p = UnverifiedPassport::from_json(&text, &limits).map_err(CliError::from_display)?;
        (nodes_unverified(&p), false)
    } else {
        match Verifier::new(load_keys(&args.keys)?).verify_json(&text) {
            Ok(p) => (nodes_of(&p), true),
            Err(e) => {
                println!("invalid: {e} [{}]", e.kind());
                return Ok(Exit::Invalid);
            }
        }
    };
    let note = if verified { "verified" } else { "NOT verified (pass --keys to verify)" };
    match args.format {
        VizFormat::Tree => {
            println!("passport: {} entries, {note}", nodes.len());
            print!("{}", render_tree(&nodes));
        }
        VizFormat::Mermaid => print!("{}", render_mermaid(&nodes)),
        VizFormat::Dot => print!("{}", render_dot(&nodes)),
        VizFormat::Html => println!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Kest passport</title></head><body>\
             <h1>Kest passport</h1><p>{} entries, {note}</p><pre class=\"mermaid\">{}</pre><pre>{}</pre></body></html>",
            nodes.len(),
            html_escape(&render_mermaid(&nodes)),
            html_escape(&render_tree(&nodes))
        ),
    }
    Ok(Exit::Ok)
}
