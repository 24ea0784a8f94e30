//! `kest viz --format svg|html` (SPEC §10): the pictures checked by parsing
//! them — one node per entry with `data-entry-hash` and `data-trust`, the
//! denied step marked, the verified/unverified banner, hostile strings
//! escaped, no network references.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use kest_core::EntryHash;
use kest_core::encoding::b64url_encode;
use serde_json::{Value, json};

fn kest_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kest")).current_dir(dir).args(args).output().expect("run kest")
}

/// Runs kest, asserts exit 0, returns stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = kest_in(dir, args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A key, its JWKS and a fan-out/fan-in passport:
/// ask → (browse [web], lookup [failed_execution]) → answer.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["keygen", "--principal", "spiffe://t/a", "--out", "a.jwk"]);
    let jwks = ok(d, &["jwks", "a.jwk"]);
    std::fs::write(d.join("jwks.json"), jwks).unwrap();
    let append = |extra: &[&str]| {
        let mut args = vec!["append", "--key", "a.jwk", "--passport", "p.json"];
        args.extend(extra);
        ok(d, &args);
    };
    append(&["--operation", "ask", "--source-type", "user_input"]);
    let ask = hashes(d)[0].clone();
    append(&["--operation", "browse", "--taint", "web", "--parent", &ask]);
    append(&["--operation", "lookup", "--taint", "failed_execution", "--parent", &ask]);
    append(&["--operation", "answer"]);
    dir
}

/// Hash of every entry of `p.json`, in order.
fn hashes(d: &Path) -> Vec<String> {
    entries(d).iter().map(|e| e["hash"].as_str().unwrap().to_owned()).collect()
}

/// `kest inspect --format json p.json`.
fn entries(d: &Path) -> Vec<Value> {
    serde_json::from_str::<Value>(&ok(d, &["inspect", "--format", "json", "p.json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn parse(text: &str) -> roxmltree::Document<'_> {
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    roxmltree::Document::parse_with_options(text, options)
        .unwrap_or_else(|e| panic!("not well-formed: {e}\n{text}"))
}

fn has_class(n: &roxmltree::Node<'_, '_>, class: &str) -> bool {
    n.attribute("class").is_some_and(|c| c.split_whitespace().any(|x| x == class))
}

/// The elements carrying `data-entry-hash` (entries and refused calls).
fn nodes<'a, 'i>(doc: &'a roxmltree::Document<'i>) -> Vec<roxmltree::Node<'a, 'i>> {
    doc.descendants().filter(|n| n.attribute("data-entry-hash").is_some()).collect()
}

fn lineage_svg<'a, 'i>(doc: &'a roxmltree::Document<'i>) -> roxmltree::Node<'a, 'i> {
    doc.descendants().find(|n| n.has_tag_name("svg") && n.attribute("data-entries").is_some()).unwrap()
}

/// Every `http://`/`https://` in `text` is the SVG namespace, and no
/// attribute refers to a resource.
fn assert_no_network(text: &str, doc: &roxmltree::Document<'_>) {
    for (at, _) in text.match_indices("http") {
        let rest = &text[at..];
        if rest.starts_with("http://") || rest.starts_with("https://") {
            assert!(
                rest.starts_with("http://www.w3.org/2000/svg\""),
                "a URL: {}",
                &rest[..40.min(rest.len())]
            );
        }
    }
    for n in doc.descendants().filter(roxmltree::Node::is_element) {
        assert!(
            !["img", "iframe", "object", "embed", "link", "image", "use", "foreignObject", "a"]
                .contains(&n.tag_name().name()),
            "<{}>",
            n.tag_name().name()
        );
        for a in n.attributes() {
            assert!(!a.name().starts_with("on"), "event handler {} on <{}>", a.name(), n.tag_name().name());
            assert!(!["href", "src"].contains(&a.name()), "{} on <{}>", a.name(), n.tag_name().name());
        }
    }
}

#[test]
fn svg_has_one_node_per_entry_with_hash_and_trust_and_marks_the_failed_step() {
    let dir = setup();
    let d = dir.path();
    let entries = entries(d);
    let svg = ok(d, &["viz", "--format", "svg", "--keys", "jwks.json", "p.json"]);
    let doc = parse(&svg);
    let root = doc.root_element();
    assert!(root.has_tag_name(("http://www.w3.org/2000/svg", "svg")));
    assert_eq!(root.attribute("data-entries"), Some("4"));
    assert_eq!(root.attribute("data-verified"), Some("true"));
    let nodes = nodes(&doc);
    assert_eq!(nodes.len(), 4);
    for (node, entry) in nodes.iter().zip(&entries) {
        assert_eq!(node.attribute("data-entry-hash"), entry["hash"].as_str());
        assert_eq!(node.attribute("data-trust"), Some(entry["payload"]["trust_score"].to_string().as_str()));
        // The step that failed, not its descendants (which inherit the taint).
        let failed =
            entry["payload"]["added_taints"].as_array().unwrap().iter().any(|t| t == "failed_execution");
        assert_eq!(has_class(node, "denied"), failed, "{entry}");
    }
    assert_eq!(doc.descendants().filter(|n| has_class(n, "denied")).count(), 1);
    // Fan-out from ask, fan-in to answer: four edges, each with an arrowhead.
    let edges: Vec<_> = doc.descendants().filter(|n| has_class(n, "edge")).collect();
    assert_eq!(edges.len(), 4);
    assert!(edges.iter().all(|e| e.attribute("marker-end") == Some("url(#kest-arrow)")));
    // The taint badges.
    let taints: BTreeSet<&str> = doc
        .descendants()
        .filter(|n| has_class(n, "taint") && n.ancestors().any(|a| a.attribute("data-entry-hash").is_some()))
        .filter_map(|n| n.descendants().find(|t| t.has_tag_name("text")).and_then(|t| t.text()))
        .collect();
    assert!(taints.contains("web") && taints.contains("failed_execution"), "{taints:?}");
    let banner = doc.descendants().find(|n| n.attribute("id") == Some("kest-status")).unwrap();
    assert!(has_class(&banner, "verified"));
    assert_no_network(&svg, &doc);
}

#[test]
fn html_is_one_page_whose_data_block_holds_each_entry() {
    let dir = setup();
    let d = dir.path();
    let entries = entries(d);
    let html = ok(d, &["viz", "--format", "html", "--keys", "jwks.json", "p.json"]);
    let doc = parse(&html);
    let svg = lineage_svg(&doc);
    assert_eq!(svg.attribute("data-verified"), Some("true"));
    assert_eq!(nodes(&doc).len(), 4);
    let scripts: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("script")).collect();
    assert_eq!(scripts.len(), 2, "the data block and the page script");
    assert!(scripts.iter().all(|s| s.attribute("src").is_none()));
    let data = scripts.iter().find(|s| s.attribute("type") == Some("application/json")).unwrap();
    let data: Value = serde_json::from_str(data.text().unwrap()).unwrap();
    assert_eq!(data["entries"].as_array().unwrap(), &entries);
    assert!(data["denied"].is_null());
    // Each node says which entry of the data block it is.
    for node in nodes(&doc) {
        let i: usize = node.attribute("data-index").unwrap().parse().unwrap();
        assert_eq!(node.attribute("data-entry-hash"), entries[i]["hash"].as_str());
    }
    let csp = doc
        .descendants()
        .find(|n| n.attribute("http-equiv") == Some("Content-Security-Policy"))
        .and_then(|n| n.attribute("content"))
        .unwrap();
    assert!(csp.starts_with("default-src 'none'; script-src 'sha256-"), "{csp}");
    assert_no_network(&html, &doc);
}

#[test]
fn without_keys_every_format_says_unverified() {
    let dir = setup();
    let d = dir.path();
    for format in ["svg", "html"] {
        let out = ok(d, &["viz", "--format", format, "p.json"]);
        let doc = parse(&out);
        assert_eq!(lineage_svg(&doc).attribute("data-verified"), Some("false"));
        let banner = doc.descendants().find(|n| n.attribute("id") == Some("kest-status")).unwrap();
        assert!(has_class(&banner, "unverified"));
        let text: String = banner.descendants().filter_map(|n| n.text()).collect();
        assert!(text.contains("UNVERIFIED"), "{text}");
        assert_eq!(nodes(&doc).len(), 4);
    }
    for format in ["mermaid", "dot", "tree"] {
        assert!(ok(d, &["viz", "--format", format, "p.json"]).contains("NOT verified"), "{format}");
    }
}

#[test]
fn a_refused_call_is_one_dashed_denied_node_after_the_tips() {
    let dir = setup();
    let d = dir.path();
    let tip = hashes(d)[3].clone();
    for format in ["svg", "html"] {
        let out = ok(
            d,
            &[
                "viz",
                "--format",
                format,
                "--keys",
                "jwks.json",
                "--denied-operation",
                "send_email",
                "--denied-reason",
                "denied by rego:kest/send_email",
                "p.json",
            ],
        );
        let doc = parse(&out);
        let ghosts: Vec<_> =
            nodes(&doc).into_iter().filter(|n| n.attribute("data-entry-hash") == Some("")).collect();
        assert_eq!(ghosts.len(), 1);
        let ghost = ghosts[0];
        assert!(has_class(&ghost, "denied") && has_class(&ghost, "refused"));
        assert_eq!(ghost.attribute("data-trust"), Some(""));
        assert!(ghost.attribute("data-index").is_none());
        let text: String = ghost.descendants().filter_map(|n| n.text()).collect();
        assert!(text.contains("send_email") && text.contains("DENIED"), "{text}");
        // Still one node per entry, plus the ghost; the failed step and the ghost are denied.
        assert_eq!(nodes(&doc).iter().filter(|n| n.attribute("data-entry-hash") != Some("")).count(), 4);
        assert_eq!(doc.descendants().filter(|n| has_class(n, "denied")).count(), 2);
        // One dashed edge, from the only tip.
        let to_ghost: Vec<_> = doc.descendants().filter(|n| has_class(n, "to-denied")).collect();
        assert_eq!(to_ghost.len(), 1);
        assert!(!tip.is_empty());
        if format == "html" {
            let data = doc.descendants().find(|n| n.attribute("id") == Some("kest-data")).unwrap();
            let data: Value = serde_json::from_str(data.text().unwrap()).unwrap();
            assert_eq!(data["denied"]["operation"], "send_email");
            assert_eq!(data["denied"]["reason"], "denied by rego:kest/send_email");
        }
    }
}

/// An unverified passport whose strings try to break out of the markup.
fn hostile(d: &Path) {
    let first = json!({
        "operation": "</script><img src=x onerror=alert(1)>",
        "labels": {"principal": "\"><svg onload=alert(2)>"},
        "trust_score": "\"><script>alert(3)</script>",
        "taints": ["<i>&amp;</i>", "t\u{1b}[31m\n"],
        "parent_ids": [],
    });
    let jws1 = format!("e30.{}.AA", b64url_encode(first.to_string().as_bytes()));
    let second = json!({
        "operation": "\"><svg onload=alert(4)>",
        "labels": {"principal": "<!-- ]]> -->"},
        "trust_score": 90,
        "taints": [],
        "parent_ids": [EntryHash::of(&jws1).to_string(), "\"><x>"],
    });
    let jws2 = format!("e30.{}.AA", b64url_encode(second.to_string().as_bytes()));
    std::fs::write(d.join("h.json"), serde_json::to_string(&vec![jws1, jws2]).unwrap()).unwrap();
}

#[test]
fn hostile_strings_come_out_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    hostile(d);
    let ghost = "</script><script>alert(5)</script>";
    for format in ["svg", "html"] {
        let out = ok(d, &["viz", "--format", format, "--denied-operation", ghost, "h.json"]);
        // Well-formed, with no element or attribute the input tried to add.
        let doc = parse(&out);
        assert_no_network(&out, &doc);
        let scripts = doc.descendants().filter(|n| n.has_tag_name("script")).count();
        assert_eq!(scripts, if format == "html" { 2 } else { 0 }, "{format}");
        assert_eq!(out.matches("<script").count(), scripts, "{format}");
        assert!(!out.contains("<img") && !out.contains("<svg onload") && !out.contains("<i>"), "{format}");
        assert!(!out.contains('\u{1b}'), "control characters are replaced");
        let nodes = nodes(&doc);
        assert_eq!(nodes.len(), 3);
        // The text survives, as text.
        let titles: String = nodes
            .iter()
            .flat_map(|n| n.descendants())
            .filter(|n| n.has_tag_name("title"))
            .filter_map(|n| n.text())
            .collect();
        assert!(titles.contains("</script><img src=x onerror=alert(1)>"), "{titles}");
        assert!(titles.contains("\"><svg onload=alert(4)>"), "{titles}");
        assert!(titles.contains(ghost), "{titles}");
        // An unverified trust score is shown as the JSON it was.
        let trust = json!("\"><script>alert(3)</script>").to_string();
        assert_eq!(nodes[0].attribute("data-trust"), Some(trust.as_str()));
        assert!(has_class(&nodes[0], "trust-unknown"));
        if format == "html" {
            let data = doc.descendants().find(|n| n.attribute("id") == Some("kest-data")).unwrap();
            let raw = data.text().unwrap();
            assert!(!raw.contains('<') && !raw.contains('&'), "{raw}");
            let data: Value = serde_json::from_str(raw).unwrap();
            assert_eq!(data["entries"][0]["payload"]["operation"], "</script><img src=x onerror=alert(1)>");
            assert_eq!(data["entries"][1]["payload"]["labels"]["principal"], "<!-- ]]> -->");
            assert_eq!(data["denied"]["operation"], ghost);
        }
    }
}

#[test]
fn the_demo_writes_both_pictures_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(d, &["demo", "--out", "."]);
    assert!(out.contains("lineage.html") && out.contains("lineage-denied.html"), "{out}");
    for (page, passport, denied) in
        [("lineage.html", "passport.json", 0), ("lineage-denied.html", "passport-denied.json", 1)]
    {
        let html = std::fs::read_to_string(d.join(page)).unwrap();
        let doc = parse(&html);
        assert_eq!(lineage_svg(&doc).attribute("data-verified"), Some("true"), "{page}");
        let entries: Vec<String> =
            serde_json::from_str(&std::fs::read_to_string(d.join(passport)).unwrap()).unwrap();
        let hashes: BTreeSet<String> = entries.iter().map(|j| EntryHash::of(j).to_string()).collect();
        let drawn: BTreeSet<String> = nodes(&doc)
            .iter()
            .filter_map(|n| n.attribute("data-entry-hash"))
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        assert_eq!(drawn, hashes, "{page}");
        let denied_nodes: Vec<_> = doc.descendants().filter(|n| has_class(n, "denied")).collect();
        assert_eq!(denied_nodes.len(), denied, "{page}");
        if let Some(ghost) = denied_nodes.first() {
            assert_eq!(ghost.attribute("data-entry-hash"), Some(""));
            let text: String = ghost.descendants().filter_map(|n| n.text()).collect();
            assert!(text.contains("send_email"), "{text}");
        }
        assert_no_network(&html, &doc);
    }
}
