//! `kest verify`: the JSON error object, --sanitizer / --strict-origins,
//! the ingress rules with --baggage, and renderers over hostile input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use kest_core::baggage::{Baggage, KEST_CHAIN_TIP, format_chain_tip};
use kest_core::encoding::b64url_encode;
use kest_core::{
    Ed25519Signer, EntryDraft, EntryHash, KeySet, Parents, Passport, Signer, TrustRules, sign_entry,
};
use serde_json::{Value, json};

const A: &str = "spiffe://t/a";
const B: &str = "spiffe://t/b";

fn kest_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kest")).current_dir(dir).args(args).output().expect("run kest")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_out(out: &Output) -> Value {
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

fn signer(p: &str) -> Ed25519Signer {
    Ed25519Signer::from_seed(p, if p == A { [1; 32] } else { [2; 32] })
}

/// A directory with `jwks.json` for A and B.
fn dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = KeySet::new();
    for p in [A, B] {
        keys.insert(p, signer(p).public_key().unwrap()).unwrap();
    }
    std::fs::write(dir.path().join("jwks.json"), keys.to_jwks().to_string()).unwrap();
    dir
}

/// Records `draft` by `who`, optionally back-dated to `timestamp_ms`.
fn record(p: &mut Passport, draft: &EntryDraft, who: &str, timestamp_ms: Option<u64>) -> EntryHash {
    let mut entry = p.prepare(draft, who, &TrustRules::default()).unwrap();
    if let Some(ts) = timestamp_ms {
        entry.timestamp_ms = ts;
    }
    p.append(sign_entry(entry, &signer(who)).unwrap()).unwrap()
}

fn draft(op: &str, parents: Parents) -> EntryDraft {
    let mut d = EntryDraft::new(op);
    d.parents = parents;
    d.labels.insert("kest.identity".into(), r#"{"user":"alice","agent":"bot","task":null}"#.into());
    d
}

fn baggage(p: &Passport, tips: Option<&[EntryHash]>, extra: &[(&str, &str)]) -> String {
    let mut b = Baggage::new();
    b.set("kest.passport", p.to_json()).unwrap();
    if let Some(t) = tips {
        b.set(KEST_CHAIN_TIP, format_chain_tip(t)).unwrap();
    }
    for (k, v) in extra {
        b.set(*k, *v).unwrap();
    }
    b.to_header().unwrap()
}

fn verify(d: &Path, file: &str, content: &str, extra: &[&str]) -> Output {
    std::fs::write(d.join(file), content).unwrap();
    let mut args = vec!["verify", "--keys", "jwks.json", "--format", "json"];
    args.extend(extra);
    args.push(file);
    kest_in(d, &args)
}

#[track_caller]
fn assert_invalid(out: &Output, kind: &str) -> Value {
    assert_eq!(code(out), 1, "{}", stdout(out));
    let r = json_out(out);
    assert_eq!(r["valid"], false);
    assert_eq!(r["kind"], kind, "{r}");
    assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
    assert!(r.get("index").is_some(), "index is always present: {r}");
    r
}

#[test]
fn json_errors_carry_valid_kind_index_message_at_top_level() {
    let d = dir();
    let out = verify(d.path(), "bad.json", "[\"a.b.c\"]", &[]);
    let r = assert_invalid(&out, "base64");
    assert_eq!(r["index"], 0);
    // Not about one entry: index null.
    let out = verify(d.path(), "notjson.json", "hello", &[]);
    let r = assert_invalid(&out, "malformed_passport");
    assert!(r["index"].is_null());
    // A usage/I-O error still prints an object with `valid`, exit 2.
    let out = kest_in(d.path(), &["verify", "--keys", "jwks.json", "--format", "json", "missing.json"]);
    assert_eq!(code(&out), 2);
    let r = json_out(&out);
    assert_eq!((r["valid"].clone(), r["kind"].clone()), (json!(false), json!("usage")));
    assert!(r["index"].is_null());
}

#[test]
fn sanitizer_and_strict_origins_flags() {
    let d = dir();
    let d = d.path();
    let mut p = Passport::new();
    let mut root = draft("ingest", Parents::Root);
    root.source_type = Some("user_input".into());
    record(&mut p, &root, A, None);
    let mut clean = draft("clean", Parents::Tips);
    clean.trust_override = Some(90);
    clean.classification = kest_core::Classification::Sanitizer;
    record(&mut p, &clean, B, None);
    let json = p.to_json();
    assert_eq!(code(&verify(d, "p.json", &json, &["--semantic"])), 0);
    // Only A may sanitize: B's escalation is refused (and --sanitizer implies --semantic).
    let r = assert_invalid(&verify(d, "p.json", &json, &["--sanitizer", A]), "trust_escalation");
    assert_eq!(r["index"], 1);
    assert_eq!(code(&verify(d, "p.json", &json, &["--sanitizer", A, "--sanitizer", B])), 0);

    let mut q = Passport::new();
    let mut partner = draft("feed", Parents::Root);
    partner.source_type = Some("partner_feed".into());
    let rules = {
        let mut r = TrustRules::default();
        r.origins.register("partner_feed", 70).unwrap();
        r
    };
    let e = q.prepare(&partner, A, &rules).unwrap();
    q.append(sign_entry(e, &signer(A)).unwrap()).unwrap();
    let json = q.to_json();
    assert_eq!(code(&verify(d, "q.json", &json, &["--semantic"])), 0);
    let r = assert_invalid(&verify(d, "q.json", &json, &["--strict-origins"]), "unknown_origin");
    assert_eq!(r["index"], 0);
    let out = verify(d, "q.json", &json, &["--strict-origins", "--origin", "partner_feed=70"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
}

#[test]
fn baggage_chain_tip_must_name_exactly_the_tips() {
    let d = dir();
    let d = d.path();
    let mut p = Passport::new();
    let root = record(&mut p, &draft("root", Parents::Root), A, None);
    let clean = record(&mut p, &draft("clean", Parents::Explicit(vec![root])), A, None);
    let mut t = draft("fetch", Parents::Explicit(vec![root]));
    t.added_taints = vec!["web".into()];
    let tainted = record(&mut p, &t, A, None);

    let exact = baggage(&p, Some(&[tainted, clean]), &[]);
    assert_eq!(code(&verify(d, "b.txt", &exact, &["--baggage"])), 0);
    assert_eq!(code(&verify(d, "b.txt", &baggage(&p, None, &[]), &["--baggage"])), 0);
    // Rewind to the root: refused, with or without the subset option.
    for extra in [&["--baggage"][..], &["--baggage", "--allow-tip-subset"][..]] {
        let r = assert_invalid(&verify(d, "b.txt", &baggage(&p, Some(&[root]), &[]), extra), "tip_mismatch");
        assert!(r["index"].is_null());
    }
    // Dropping the tainted branch: only with --allow-tip-subset.
    let dropped = baggage(&p, Some(&[clean]), &[]);
    assert_invalid(&verify(d, "b.txt", &dropped, &["--baggage"]), "tip_mismatch");
    assert_eq!(code(&verify(d, "b.txt", &dropped, &["--baggage", "--allow-tip-subset"])), 0);
    // "0" with a non-empty passport; a malformed chain tip.
    assert_invalid(&verify(d, "b.txt", &baggage(&p, Some(&[]), &[]), &["--baggage"]), "tip_mismatch");
    let bad = baggage(&p, None, &[(KEST_CHAIN_TIP, "zz")]);
    assert_invalid(&verify(d, "b.txt", &bad, &["--baggage"]), "tip_mismatch");
    // The ingress options need --baggage.
    std::fs::write(d.join("p.json"), p.to_json()).unwrap();
    let out = kest_in(d, &["verify", "--keys", "jwks.json", "--allow-tip-subset", "p.json"]);
    assert_eq!(code(&out), 2);
}

#[test]
fn baggage_max_age_refuses_a_replayed_passport() {
    let d = dir();
    let d = d.path();
    let mut p = Passport::new();
    let tip = record(&mut p, &draft("old", Parents::Root), A, Some(1_000_000)); // 1970
    let b = baggage(&p, Some(&[tip]), &[]);
    // Off by default offline.
    assert_eq!(code(&verify(d, "b.txt", &b, &["--baggage"])), 0);
    assert_invalid(&verify(d, "b.txt", &b, &["--baggage", "--max-age", "300"]), "stale_passport");
    // Dated ten days in the future.
    let now_ms = u64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis(),
    )
    .unwrap();
    let mut f = Passport::new();
    let tip = record(&mut f, &draft("future", Parents::Root), A, Some(now_ms + 864_000_000));
    let r = assert_invalid(
        &verify(d, "b.txt", &baggage(&f, Some(&[tip]), &[]), &["--baggage", "--max-age", "300"]),
        "stale_passport",
    );
    assert!(r["message"].as_str().unwrap().contains("dated in the future"), "{r}");
}

#[test]
fn baggage_identity_claims_not_signed_are_reported_unverified() {
    let d = dir();
    let d = d.path();
    let mut p = Passport::new();
    let tip = record(&mut p, &draft("step", Parents::Root), A, None);
    let b = baggage(&p, Some(&[tip]), &[("kest.user", "alice"), ("kest.agent", "mallory-bot")]);
    let out = verify(d, "b.txt", &b, &["--baggage"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let r = json_out(&out);
    assert_eq!(r["valid"], true);
    assert_eq!(r["identity"]["verified"]["user"], "alice");
    assert!(r["identity"]["verified"]["agent"].is_null());
    assert_eq!(r["identity"]["unverified"], json!({"agent": "mallory-bot"}));
    std::fs::write(d.join("b.txt"), &b).unwrap();
    let text = stdout(&kest_in(d, &["verify", "--keys", "jwks.json", "--baggage", "b.txt"]));
    assert!(text.contains("agent=mallory-bot UNVERIFIED"), "{text}");
    assert!(text.contains("user=alice (signed"), "{text}");
    // A control character in a claim is refused.
    let b = baggage(&p, Some(&[tip]), &[("kest.user", "alice\nadmin")]);
    assert_invalid(&verify(d, "b.txt", &b, &["--baggage"]), "invalid_identity");
}

#[test]
fn viz_and_inspect_survive_hostile_strings() {
    let d = dir();
    let d = d.path();
    let payload = json!({
        "operation": "é\"<x>\\", "labels": {"principal": "ü"}, "trust_score": "x",
        "parent_ids": ["é", "ééééééééééééé", "ab"], "taints": [1, "t\n"],
    });
    let jws = format!("e30.{}.AA", b64url_encode(payload.to_string().as_bytes()));
    let doc = serde_json::to_string(&vec![jws, "x".into(), "a.b".into(), "..".into()]).unwrap();
    std::fs::write(d.join("h.json"), doc).unwrap();
    for format in ["tree", "mermaid", "dot", "html"] {
        let out = kest_in(d, &["viz", "--format", format, "h.json"]);
        assert_eq!(code(&out), 0, "{format}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // One line per entry (plus the heading): a newline in a taint forges none.
    let tree = stdout(&kest_in(d, &["viz", "h.json"]));
    assert_eq!(tree.lines().count(), 5, "{tree}");
    for format in ["text", "json"] {
        let out = kest_in(d, &["inspect", "--format", format, "h.json"]);
        assert_eq!(code(&out), 0, "{format}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let all = kest_cli::render::render_all(&std::fs::read_to_string(d.join("h.json")).unwrap()).unwrap();
    assert!(all.iter().all(|s| !s.is_empty()));
    assert_eq!(kest_cli::render::short("ééé", 2), "éé");
    assert_eq!(kest_cli::render::short("ab", 8), "ab");
}

#[test]
fn key_history_accepts_a_principal_with_keys_in_several_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A's key rotated between the two entries: each generation in its own file.
    let (old, new) = (Ed25519Signer::from_seed(A, [7; 32]), Ed25519Signer::from_seed(A, [8; 32]));
    let mut p = Passport::new();
    p.record(&EntryDraft::new("before"), &old, &TrustRules::default()).unwrap();
    p.record(&EntryDraft::new("after"), &new, &TrustRules::default()).unwrap();
    std::fs::write(d.join("p.json"), p.to_json()).unwrap();
    for (name, s) in [("gen-0.json", &old), ("gen-1.json", &new)] {
        let mut keys = KeySet::new();
        keys.insert(A, s.public_key().unwrap()).unwrap();
        std::fs::write(d.join(name), keys.to_jwks().to_string()).unwrap();
    }
    let both = ["--keys", "gen-0.json", "--keys", "gen-1.json"];
    // Without --key-history the same kid twice is a usage error.
    let out = kest_in(d, &[&["verify"][..], &both, &["p.json"]].concat());
    assert_eq!(code(&out), 2, "{}", String::from_utf8_lossy(&out.stderr));
    let out = kest_in(d, &[&["verify", "--key-history", "--semantic"][..], &both, &["p.json"]].concat());
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    // One generation only: the other entry fails, naming the signer.
    for (keys, index) in [("gen-1.json", 0), ("gen-0.json", 1)] {
        let out = kest_in(d, &["verify", "--key-history", "--format", "json", "--keys", keys, "p.json"]);
        assert_eq!(code(&out), 1);
        let report = json_out(&out);
        assert_eq!((report["kind"].as_str(), report["index"].as_u64()), (Some("bad_signature"), Some(index)));
        assert!(report["message"].as_str().unwrap().contains(A), "{report}");
    }
}
