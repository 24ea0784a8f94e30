//! The pictures of `kest viz --format svg|html` (SPEC §10): the passport
//! DAG laid out by [`super::layout`], drawn as SVG, and a self-contained
//! HTML page around it that shows each entry's decoded payload on click.
//!
//! Every string from a passport (or from `--denied-operation`) is untrusted:
//! it is written only through [`xml_escape`] (control characters replaced,
//! markup characters escaped) or, for the payloads the page shows, as JSON
//! inside `<script type="application/json">` with `<`, `>` and `&` written
//! as `\u` escapes, read back with `JSON.parse` and shown with
//! `textContent`. The page loads nothing (a Content-Security-Policy of
//! `default-src 'none'` lets only its own inline script and styles run, by
//! hash), so it works offline and cannot call out.
//!
//! Machine-checkable contract: one element of class `node` per entry with
//! `data-entry-hash` and `data-trust`; a denied step (an entry tainted
//! `failed_execution`, or the refused call drawn as a ghost node with an
//! empty `data-entry-hash`) has the class `denied`; the `<svg>` carries
//! `data-entries` (the entry count) and `data-verified`. A failed run is the
//! entry that added the `failed_execution` taint, not its descendants,
//! which inherit the taint.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use kest_core::encoding::b64url_encode;
use kest_core::{EntryHash, Passport, UnverifiedPassport};
use serde_json::{Value, json};

use super::layout::{Point, layout};
use super::{Node, inspect_entries, nodes_of, nodes_unverified, printable, short};

/// The taint that marks an entry recording a failed execution.
pub const FAILED_EXECUTION: &str = "failed_execution";

/// Width and height of a node box, in pixels.
const NODE_W: f64 = 250.0;
const NODE_H: f64 = 96.0;
/// Horizontal distance between slot centres and vertical distance between
/// layer tops.
const COL: f64 = 290.0;
const ROW: f64 = 150.0;
/// Outer margin, banner height, legend height.
const MARGIN: f64 = 24.0;
const BANNER_H: f64 = 46.0;
const LEGEND_H: f64 = 40.0;
/// The picture is at least this wide, so the banner and legend fit.
const MIN_WIDTH: f64 = 760.0;
/// At most this many taint badges per node; the rest are counted.
const MAX_BADGES: usize = 3;

/// A call refused by policy before it ran: drawn as a ghost node (dashed,
/// class `denied`, no entry hash) whose parents are the passport's tips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The operation that was refused (e.g. `send_email`).
    pub operation: String,
    /// Why, if known (e.g. the policy and tier that denied it).
    pub reason: Option<String>,
}

/// A passport ready to be drawn: its nodes, its decoded entries (shown on
/// click), whether it was verified, and an optional refused call.
#[derive(Debug, Clone)]
pub struct Picture {
    nodes: Vec<Node>,
    entries: Vec<Value>,
    verified: bool,
    refused: Option<Refused>,
}

impl Picture {
    /// A verified passport (the banner says VERIFIED).
    pub fn verified(passport: &Passport) -> Picture {
        Picture::build(nodes_of(passport), &passport.to_unverified(), true)
    }

    /// A passport only decoded, not verified (the banner says UNVERIFIED).
    pub fn unverified(passport: &UnverifiedPassport) -> Picture {
        Picture::build(nodes_unverified(passport), passport, false)
    }

    fn build(nodes: Vec<Node>, decoded: &UnverifiedPassport, verified: bool) -> Picture {
        let mut by_hash: HashMap<String, Value> = HashMap::new();
        for entry in inspect_entries(decoded) {
            let hash = entry.get("hash").and_then(Value::as_str).unwrap_or_default().to_owned();
            by_hash.entry(hash).or_insert(entry);
        }
        let entries = nodes
            .iter()
            .map(|n| by_hash.get(&n.hash).cloned().unwrap_or_else(|| json!({ "hash": n.hash })))
            .collect();
        Picture { nodes, entries, verified, refused: None }
    }

    /// Adds a call refused before it ran, drawn after the tips.
    #[must_use]
    pub fn with_refused(mut self, refused: Option<Refused>) -> Picture {
        self.refused = refused;
        self
    }

    /// The picture as a standalone SVG document.
    pub fn svg(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str(&self.svg_element());
        out.push('\n');
        out
    }

    /// The picture as one self-contained HTML page: the inline SVG, its
    /// styles, the decoded entries as JSON data and a small script that
    /// shows an entry when its node is clicked (or named in the URL
    /// fragment: `page.html#<entry hash>`, `page.html#denied`).
    pub fn html(&self) -> String {
        let data = json!({
            "entries": self.entries,
            "denied": self.refused.as_ref().map(|r| json!({
                "operation": r.operation,
                "reason": r.reason,
                "note": "refused by policy before it ran: no entry was signed, so the passport has no hash for it",
            })),
        });
        let csp = format!(
            "default-src 'none'; script-src '{}'; style-src '{}' '{}'; img-src 'none'; base-uri 'none'; form-action 'none'",
            csp_hash(SCRIPT),
            csp_hash(PAGE_CSS),
            csp_hash(SVG_CSS)
        );
        let (status, status_class) = self.status();
        let mut out = String::with_capacity(16 * 1024);
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>\
             <meta http-equiv=\"Content-Security-Policy\" content=\"{}\"/>\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\
             <title>Kest passport lineage ({}, {})</title><style>{PAGE_CSS}</style></head>\n\
             <body><main><section class=\"canvas\">{}</section>\n\
             <aside><h2 id=\"kest-selected\">Entry</h2>\
             <p class=\"hint\">Click a node to see its decoded entry (header and payload, as signed).</p>\
             <p class=\"status {status_class}\">{}</p>\
             <pre id=\"kest-payload\"></pre></aside></main>\n\
             <script type=\"application/json\" id=\"kest-data\">{}</script>\n<script>{SCRIPT}</script>\n\
             </body></html>\n",
            xml_escape(&csp),
            super::count(self.nodes.len(), "entry", "entries"),
            if self.verified { "verified" } else { "UNVERIFIED" },
            self.svg_element(),
            xml_escape(status),
            script_json(&data),
        );
        out
    }

    fn status(&self) -> (&'static str, &'static str) {
        if self.verified {
            ("✓ VERIFIED: signatures and parent links checked against the given keys", "verified")
        } else {
            ("⚠ UNVERIFIED: decoded only, signatures NOT checked (pass --keys to verify)", "unverified")
        }
    }

    /// The `<svg>` element (no XML declaration), shared by both formats.
    fn svg_element(&self) -> String {
        let n = self.nodes.len();
        let index: HashMap<&str, usize> =
            self.nodes.iter().enumerate().map(|(i, node)| (node.hash.as_str(), i)).collect();
        let mut parents: Vec<Vec<usize>> = self
            .nodes
            .iter()
            .map(|node| node.parents.iter().filter_map(|p| index.get(p.as_str()).copied()).collect())
            .collect();
        if self.refused.is_some() {
            let named: HashSet<usize> = parents.iter().flatten().copied().collect();
            parents.push((0..n).filter(|i| !named.contains(i)).collect());
        }
        let lay = layout(&parents);
        let graph_w = lay.width * COL;
        let width = (graph_w + 2.0 * MARGIN).max(MIN_WIDTH);
        let offset_x = (width - graph_w) / 2.0;
        let top = BANNER_H + 30.0;
        let graph_h = if lay.layers == 0 { 0.0 } else { (lay.layers - 1) as f64 * ROW + NODE_H };
        let height = top + graph_h + 24.0 + LEGEND_H;
        let centre = |p: &Point| (offset_x + p.x * COL, top + p.layer as f64 * ROW);

        let mut out = String::with_capacity(4096 + n * 1024);
        let _ = write!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"kest-lineage\" viewBox=\"0 0 {width:.0} {height:.0}\" \
             width=\"{width:.0}\" height=\"{height:.0}\" role=\"img\" data-entries=\"{n}\" data-verified=\"{}\">\
             <title>Kest passport lineage: {}, {}</title><style>{SVG_CSS}</style>{DEFS}",
            self.verified,
            super::count(n, "entry", "entries"),
            if self.verified { "verified" } else { "UNVERIFIED" },
        );
        self.banner(&mut out, width);
        out.push_str("<g class=\"edges\">");
        for edge in &lay.edges {
            let ghost = edge.to >= n;
            let d = edge_path(&edge.points, &centre);
            let _ = write!(
                out,
                "<path class=\"edge{}\" d=\"{d}\" marker-end=\"url(#{})\"/>",
                if ghost { " to-denied" } else { "" },
                if ghost { "kest-arrow-denied" } else { "kest-arrow" }
            );
        }
        out.push_str("</g><g class=\"nodes\">");
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(p) = lay.nodes.get(i) else { continue };
            let (cx, y) = centre(p);
            let look = Look { failed: self.failed(i), decision: self.decision(i) };
            draw_node(&mut out, i, node, &look, cx - NODE_W / 2.0, y);
        }
        if let (Some(refused), Some(p)) = (&self.refused, lay.nodes.get(n)) {
            let (cx, y) = centre(p);
            draw_refused(&mut out, refused, cx - NODE_W / 2.0, y);
        }
        out.push_str("</g>");
        legend(&mut out, height - LEGEND_H, width);
        out.push_str("</svg>");
        out
    }

    /// Whether entry `i` is a failed run: it added the `failed_execution`
    /// taint itself (its descendants inherit the taint but did not fail);
    /// when the payload does not list its added taints, whether it carries
    /// the taint and none of its parents does.
    fn failed(&self, i: usize) -> bool {
        let Some(node) = self.nodes.get(i) else { return false };
        let added = self.entries.get(i).and_then(|e| e.get("payload")).and_then(|p| p.get("added_taints"));
        match added.and_then(Value::as_array) {
            Some(added) => added.iter().any(|t| t.as_str() == Some(FAILED_EXECUTION)),
            None => {
                let tainted = |n: &Node| n.taints.iter().any(|t| t == FAILED_EXECUTION);
                tainted(node) && !self.nodes.iter().any(|p| node.parents.contains(&p.hash) && tainted(p))
            }
        }
    }

    /// The decision recorded for entry `i`: an entry exists only for a call
    /// its policies allowed, so "allowed by" its function-tier policies.
    fn decision(&self, i: usize) -> String {
        let policies: Vec<&str> = self
            .entries
            .get(i)
            .and_then(|e| e.pointer("/payload/policy_context/function_policies"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if policies.is_empty() {
            "allowed".to_owned()
        } else {
            format!("allowed by {}", policies.join(" + "))
        }
    }

    fn banner(&self, out: &mut String, width: f64) {
        let (text, class) = self.status();
        let tips = self
            .nodes
            .iter()
            .filter(|node| !self.nodes.iter().any(|other| other.parents.contains(&node.hash)))
            .count();
        let roots = self.nodes.iter().filter(|node| node.parents.is_empty()).count();
        let _ = write!(
            out,
            "<g class=\"banner {class}\" id=\"kest-status\"><rect x=\"0\" y=\"0\" width=\"{width:.0}\" height=\"{BANNER_H}\"/>\
             <text class=\"banner-title\" x=\"{MARGIN}\" y=\"20\">{}</text>\
             <text class=\"banner-sub\" x=\"{MARGIN}\" y=\"37\">Kest passport · {} {} · {roots} root{} · {tips} tip{}{}</text></g>",
            xml_escape(text),
            self.nodes.len(),
            if self.nodes.len() == 1 { "entry" } else { "entries" },
            if roots == 1 { "" } else { "s" },
            if tips == 1 { "" } else { "s" },
            if self.refused.is_some() { " · 1 call refused before it ran" } else { "" },
        );
    }
}

/// How an entry is drawn besides its node: failed or not, its decision.
struct Look {
    failed: bool,
    decision: String,
}

/// Draws one entry.
fn draw_node(out: &mut String, index: usize, node: &Node, look: &Look, x: f64, y: f64) {
    let failed = look.failed;
    let trust = node.trust.parse::<f64>().ok();
    let band = match trust {
        Some(t) if t >= 70.0 => "trust-high",
        Some(t) if t >= 40.0 => "trust-mid",
        Some(_) => "trust-low",
        None => "trust-unknown",
    };
    let tooltip = format!(
        "{}\nby {}\ntrust {}\ntaints [{}]\n{}\nentry {}",
        node.operation,
        node.principal,
        node.trust,
        node.taints.join(", "),
        look.decision,
        node.hash
    );
    let _ = write!(
        out,
        "<g class=\"node {band}{}\" data-entry-hash=\"{}\" data-trust=\"{}\" data-index=\"{index}\" \
         data-label=\"{}\" tabindex=\"0\" role=\"button\"><title>{}</title>\
         <rect class=\"box\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"10\"/>",
        if failed { " denied" } else { "" },
        xml_escape(&node.hash),
        xml_escape(&node.trust),
        xml_escape(&format!("{} by {}", node.operation, node.principal)),
        xml_escape(&tooltip),
    );
    // The trust score in a badge at the top right.
    let _ = write!(
        out,
        "<circle class=\"score\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"17\"/><text class=\"score-text\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
        x + NODE_W - 24.0,
        y + 24.0,
        x + NODE_W - 24.0,
        y + 29.0,
        xml_escape(short(&node.trust, 3)),
    );
    let op = if failed { format!("✗ {}", node.operation) } else { node.operation.clone() };
    text(out, "op", x + 12.0, y + 24.0, &ellipsis(&op, 22));
    text(out, "who", x + 12.0, y + 43.0, &ellipsis(&node.principal, 36));
    text(
        out,
        "meta",
        x + 12.0,
        y + 61.0,
        &ellipsis(&format!("#{} · {}", short(&node.hash, 8), look.decision), 40),
    );
    badges(out, &node.taints, x + 12.0, y + 70.0, x + NODE_W - 10.0);
    out.push_str("</g>");
}

/// Draws the refused call: dashed, class `denied`, no entry hash.
fn draw_refused(out: &mut String, refused: &Refused, x: f64, y: f64) {
    let reason = refused.reason.as_deref().unwrap_or("refused by policy");
    let _ = write!(
        out,
        "<g class=\"node denied refused\" data-entry-hash=\"\" data-trust=\"\" data-label=\"{}\" tabindex=\"0\" \
         role=\"button\"><title>{}</title>\
         <rect class=\"box\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"10\"/>",
        xml_escape(&format!("{} (DENIED, never ran)", refused.operation)),
        xml_escape(&format!("{}\nDENIED before it ran: {reason}\nno entry was signed", refused.operation)),
    );
    text(out, "op", x + 12.0, y + 24.0, &ellipsis(&format!("✗ {}", refused.operation), 26));
    text(out, "who denied-text", x + 12.0, y + 43.0, "DENIED: the call never ran");
    let (first, rest) = wrap2(reason, 38);
    text(out, "meta", x + 12.0, y + 61.0, &first);
    text(out, "meta", x + 12.0, y + 78.0, if rest.is_empty() { "no entry signed · no hash" } else { &rest });
    out.push_str("</g>");
}

/// Taint badges from `x` to at most `right`; the ones that do not fit (or
/// past [`MAX_BADGES`]) are counted in a final `+N`.
fn badges(out: &mut String, taints: &[String], x: f64, y: f64, right: f64) {
    let mut at = x;
    for (k, taint) in taints.iter().enumerate() {
        let label = ellipsis(taint, 16);
        let w = 7.0 * label.chars().count() as f64 + 14.0;
        let rest = taints.len() - k;
        if k >= MAX_BADGES || at + w + if rest > 1 { 34.0 } else { 0.0 } > right {
            let _ = write!(
                out,
                "<g class=\"taint more\"><rect x=\"{at:.1}\" y=\"{y:.1}\" width=\"30\" height=\"18\" rx=\"9\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">+{rest}</text></g>",
                at + 6.0,
                y + 13.0
            );
            return;
        }
        let class = if taint == FAILED_EXECUTION { "taint failed" } else { "taint" };
        let _ = write!(
            out,
            "<g class=\"{class}\"><rect x=\"{at:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"18\" rx=\"9\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text></g>",
            at + 7.0,
            y + 13.0,
            xml_escape(&label)
        );
        at += w + 6.0;
    }
}

/// The colour key at the bottom of the picture.
fn legend(out: &mut String, y: f64, width: f64) {
    let _ = write!(
        out,
        "<g class=\"legend\"><rect class=\"legend-bg\" x=\"0\" y=\"{y:.0}\" width=\"{width:.0}\" height=\"{LEGEND_H}\"/>"
    );
    let items = [
        ("high", "trust ≥ 70"),
        ("mid", "40 ≤ trust < 70"),
        ("low", "trust < 40"),
        ("refused", "denied / never ran"),
    ];
    let mut at = MARGIN;
    for (class, label) in items {
        let _ = write!(
            out,
            "<rect class=\"swatch {class}\" x=\"{at:.0}\" y=\"{:.0}\" width=\"22\" height=\"16\" rx=\"4\"/>\
             <text class=\"legend-text\" x=\"{:.0}\" y=\"{:.0}\">{}</text>",
            y + 12.0,
            at + 30.0,
            y + 25.0,
            xml_escape(label)
        );
        at += 160.0;
    }
    let _ = write!(
        out,
        "<g class=\"taint\"><rect x=\"{at:.0}\" y=\"{:.0}\" width=\"44\" height=\"18\" rx=\"9\"/><text x=\"{:.0}\" y=\"{:.0}\">taint</text></g>",
        y + 11.0,
        at + 7.0,
        y + 24.0
    );
    out.push_str("</g>");
}

/// Arrow-head markers (solid for edges, red for the edge to a refused call).
const DEFS: &str = "<defs>\
<marker id=\"kest-arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"9\" markerHeight=\"9\" orient=\"auto\">\
<path d=\"M0,0 L10,5 L0,10 z\" class=\"arrow\"/></marker>\
<marker id=\"kest-arrow-denied\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"9\" markerHeight=\"9\" orient=\"auto\">\
<path d=\"M0,0 L10,5 L0,10 z\" class=\"arrow-denied\"/></marker></defs>";

/// One `<text>` element with escaped content.
fn text(out: &mut String, class: &str, x: f64, y: f64, content: &str) {
    let _ = write!(out, "<text class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\">{}</text>", xml_escape(content));
}

/// An SVG path through an edge's points: from the bottom of the parent to
/// the top of the child, with smooth vertical curves in between.
fn edge_path(points: &[Point], centre: &impl Fn(&Point) -> (f64, f64)) -> String {
    let coords: Vec<(f64, f64)> = points
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let (x, y) = centre(p);
            if k == 0 {
                (x, y + NODE_H)
            } else if k + 1 == points.len() {
                (x, y - 1.0)
            } else {
                (x, y + NODE_H / 2.0)
            }
        })
        .collect();
    let mut d = String::new();
    let mut prev: Option<(f64, f64)> = None;
    for (x, y) in coords {
        match prev {
            None => {
                let _ = write!(d, "M{x:.1},{y:.1}");
            }
            Some((px, py)) => {
                let mid = (py + y) / 2.0;
                let _ = write!(d, " C{px:.1},{mid:.1} {x:.1},{mid:.1} {x:.1},{y:.1}");
            }
        }
        prev = Some((x, y));
    }
    d
}

/// `s` on at most two lines of `n` characters, broken at a space when
/// there is one; the second line ends with `…` when cut.
fn wrap2(s: &str, n: usize) -> (String, String) {
    if s.chars().count() <= n {
        return (s.to_owned(), String::new());
    }
    let head = short(s, n);
    let first = head.rfind(' ').filter(|&i| i > 0).and_then(|i| head.get(..i)).unwrap_or(head);
    let rest = s.get(first.len()..).unwrap_or_default().trim_start();
    (first.to_owned(), ellipsis(rest, n))
}

/// At most `n` characters of `s`, with `…` when cut.
fn ellipsis(s: &str, n: usize) -> String {
    let cut = short(s, n);
    if cut.len() < s.len() { format!("{}…", short(s, n.saturating_sub(1))) } else { s.to_owned() }
}

/// Escapes untrusted text for XML and HTML content and attribute values:
/// control characters (and the non-characters U+FFFE/U+FFFF, not allowed in
/// XML) become U+FFFD, and `& < > " '` become entities.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in printable(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `value` as JSON safe to place inside `<script type="application/json">`
/// (HTML or XML): `<`, `>`, `&`, control characters, U+2028/U+2029 and
/// U+FFFE/U+FFFF are written as `\u` escapes. They can only occur inside
/// JSON strings, where the escape means the same character, so
/// `JSON.parse` returns exactly `value`.
pub fn script_json(value: &Value) -> String {
    let raw = value.to_string();
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}') || c.is_control()
        {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// A CSP source for an inline script or style: `sha256-<base64>`.
/// [`EntryHash::of`] is plain SHA-256 of the string's bytes.
fn csp_hash(text: &str) -> String {
    let b64url = b64url_encode(EntryHash::of(text).as_bytes());
    let mut b64: String = b64url
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !b64.len().is_multiple_of(4) {
        b64.push('=');
    }
    format!("sha256-{b64}")
}

/// Styles of the picture (inside the `<svg>`, so a standalone SVG keeps
/// them). No `<` or `&`, so the page stays well-formed XML too.
const SVG_CSS: &str = "\
.kest-lineage{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;background:#fafafa}\
.kest-lineage .banner.verified rect{fill:#1b5e20}.kest-lineage .banner.unverified rect{fill:#b71c1c}\
.kest-lineage .banner text{fill:#fff}.kest-lineage .banner-title{font-size:16px;font-weight:700}\
.kest-lineage .banner-sub{font-size:12px;opacity:.9}\
.kest-lineage .edge{fill:none;stroke:#546e7a;stroke-width:2}\
.kest-lineage .edge.to-denied{stroke:#c62828;stroke-dasharray:6 4}\
.kest-lineage .arrow{fill:#546e7a}.kest-lineage .arrow-denied{fill:#c62828}\
.kest-lineage .node{cursor:pointer}.kest-lineage .node .box{stroke-width:2}\
.kest-lineage .node.trust-high .box{fill:#e8f5e9;stroke:#2e7d32}.kest-lineage .trust-high .score{fill:#2e7d32}\
.kest-lineage .node.trust-mid .box{fill:#fff8e1;stroke:#ef8f00}.kest-lineage .trust-mid .score{fill:#ef8f00}\
.kest-lineage .node.trust-low .box{fill:#ffebee;stroke:#c62828}.kest-lineage .trust-low .score{fill:#c62828}\
.kest-lineage .node.trust-unknown .box{fill:#eceff1;stroke:#607d8b}.kest-lineage .trust-unknown .score{fill:#607d8b}\
.kest-lineage .node.denied .box{stroke:#b71c1c;stroke-width:3.5}\
.kest-lineage .node.refused .box{fill:#fff;stroke-dasharray:8 5}\
.kest-lineage .node:hover .box,.kest-lineage .node:focus .box{stroke-width:4}\
.kest-lineage .node.selected .box{stroke-width:4;filter:drop-shadow(0 0 5px #1565c0)}\
.kest-lineage .node:focus{outline:none}\
.kest-lineage .score-text{fill:#fff;font-size:13px;font-weight:700;text-anchor:middle}\
.kest-lineage .op{font-size:15px;font-weight:700;fill:#212121}\
.kest-lineage .refused .op,.kest-lineage .denied-text{fill:#b71c1c}\
.kest-lineage .who{font-size:11.5px;fill:#37474f}.kest-lineage .meta{font-size:11px;fill:#607d8b}\
.kest-lineage .taint rect{fill:#6a1b9a}.kest-lineage .taint text{fill:#fff;font-size:11px;font-family:ui-monospace,'DejaVu Sans Mono',monospace}\
.kest-lineage .taint.failed rect{fill:#b71c1c}.kest-lineage .taint.more rect{fill:#9e9e9e}\
.kest-lineage .legend-bg{fill:#eceff1}.kest-lineage .legend-text{font-size:12px;fill:#37474f}\
.kest-lineage .swatch{stroke-width:2}.kest-lineage .swatch.high{fill:#e8f5e9;stroke:#2e7d32}\
.kest-lineage .swatch.mid{fill:#fff8e1;stroke:#ef8f00}.kest-lineage .swatch.low{fill:#ffebee;stroke:#c62828}\
.kest-lineage .swatch.refused{fill:#fff;stroke:#b71c1c;stroke-dasharray:4 3}";

/// Styles of the page around the picture.
const PAGE_CSS: &str = "\
html,body{margin:0;height:100%;font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;color:#212121}\
main{display:flex;height:100%}\
.canvas{flex:1;overflow:auto;background:#fafafa;padding:12px}\
.canvas svg{max-width:100%;height:auto}\
aside{width:440px;border-left:1px solid #cfd8dc;padding:12px 16px;overflow:auto;background:#fff}\
aside h2{font-size:16px;margin:4px 0 8px;word-break:break-all}\
.hint{font-size:13px;color:#546e7a;margin:0 0 8px}\
.status{font-size:13px;font-weight:700;padding:6px 8px;border-radius:4px;color:#fff}\
.status.verified{background:#1b5e20}.status.unverified{background:#b71c1c}\
pre{font-size:12px;white-space:pre-wrap;word-break:break-all;background:#f5f5f5;padding:8px;border-radius:4px}";

/// The page's only script: reads the JSON data block with `JSON.parse`,
/// shows an entry with `textContent` (never as HTML). Written without `<`
/// and `&` so the page stays well-formed XML.
const SCRIPT: &str = r#"(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("kest-data").textContent);
  var panel = document.getElementById("kest-payload");
  var heading = document.getElementById("kest-selected");
  var nodes = Array.prototype.slice.call(document.querySelectorAll("svg .node[data-entry-hash]"));
  function select(node) {
    nodes.forEach(function (n) { n.classList.remove("selected"); });
    node.classList.add("selected");
    var i = node.getAttribute("data-index");
    var item = i === null ? data.denied : data.entries[Number(i)];
    heading.textContent = node.getAttribute("data-label");
    panel.textContent = JSON.stringify(item, null, 2);
  }
  nodes.forEach(function (n) {
    n.addEventListener("click", function () { select(n); });
    n.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(n); }
    });
  });
  var wanted = decodeURIComponent(location.hash.replace(/^#/, ""));
  nodes.forEach(function (n) {
    var hash = n.getAttribute("data-entry-hash");
    if (hash === wanted || (wanted === "denied" ? hash === "" : false)) { select(n); }
  });
})();"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_controls_and_script_data() {
        assert_eq!(
            xml_escape("<a href='x'>&\"\u{1b}\u{ffff}"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;\u{fffd}\u{fffd}"
        );
        let v = json!({"op": "</script><!--&\u{2028}"});
        let s = script_json(&v);
        assert!(!s.contains('<') && !s.contains('&'), "{s}");
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
    }

    #[test]
    fn wrap2_breaks_at_spaces_by_characters() {
        assert_eq!(wrap2("short", 10), ("short".to_owned(), String::new()));
        assert_eq!(
            wrap2("denied by rego:kest/x (function tier)", 20),
            ("denied by".to_owned(), "rego:kest/x (functi…".to_owned())
        );
        assert_eq!(wrap2("ééééééé", 3), ("ééé".to_owned(), "éé…".to_owned()));
    }

    #[test]
    fn csp_hash_is_base64_sha256() {
        // SHA-256("") in base64.
        assert_eq!(csp_hash(""), "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    }

    #[test]
    fn script_and_styles_stay_xml_safe() {
        for s in [SCRIPT, SVG_CSS, PAGE_CSS] {
            assert!(!s.contains('<') && !s.contains('&') && !s.contains("]]>"));
        }
    }
}
