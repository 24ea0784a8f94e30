//! Stable smoke run of the cargo-fuzz targets (`fuzz/`, which needs
//! nightly): each target body from `fuzz/src/targets.rs` gets its seed
//! corpus (`fuzz/seeds/<target>/`) and a few thousand deterministic
//! pseudo-random inputs derived from it — byte-level mutations, re-signed
//! structural mutations of passports and generated JSON.
//!
//! `KEST_FUZZ_SMOKE_ITERS` scales the number of inputs (default 2000 per
//! target). The seed corpus is regenerated, byte for byte, by
//! `cargo test -p kest-benches --test fuzz_smoke -- --ignored regenerate_seed_corpus`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../fuzz/src/targets.rs"]
mod targets;

// The CLI's renderers, mounted where `targets::render` expects them.
#[allow(dead_code)]
#[path = "../../crates/kest-cli/src/render.rs"]
mod render;

use std::fs;
use std::path::{Path, PathBuf};

use kest_core::encoding::{b64url_decode, b64url_encode};
use kest_core::jws::{header_json, signing_input};
use kest_core::{
    Classification, Ed25519Signer, EntryDraft, KestEntry, Parents, Passport, Signer, TrustRules, Verifier,
    sign_entry,
};
use serde_json::{Value, json};

const TARGETS: [&str; 3] = ["jws_decode", "passport_verify", "canonicalize_roundtrip"];

/// splitmix64: small, seeded, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn pick_str(&mut self, items: &[&'static str]) -> &'static str {
        items[self.below(items.len())]
    }
}

fn iterations() -> usize {
    std::env::var("KEST_FUZZ_SMOKE_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

fn seeds_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target)
}

fn load_seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = seeds_dir(target);
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {} missing: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let seeds: Vec<Vec<u8>> = paths.iter().map(|p| fs::read(p).unwrap()).collect();
    assert!(seeds.len() >= 3, "seed corpus {} has only {} files", dir.display(), seeds.len());
    seeds
}

// ---------------------------------------------------------------- mutations

/// Bytes that matter to JSON, base64url and JWS syntax.
const INTERESTING: &[u8] = b"\"\\.,:[]{}0123456789eE+-_ ABZaz/=\x00\xff\xc3\xa9\n";

fn mutate_bytes(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(8) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = *rng.pick(INTERESTING);
            }
            2 => out.insert(at, *rng.pick(INTERESTING)),
            3 if at < out.len() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at..end);
            }
            4 if at < out.len() => {
                let end = (at + 1 + rng.below(32)).min(out.len());
                let chunk = out[at..end].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, chunk);
            }
            5 if !other.is_empty() => {
                // Splice: our head, the other input's tail.
                let from = rng.below(other.len());
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            6 => out.truncate(at),
            _ => out.insert(at, u8::try_from(rng.below(256)).unwrap()),
        }
    }
    out
}

fn mutate_value(rng: &mut Rng, value: &mut Value, depth: usize) {
    match value {
        Value::Object(map) if !map.is_empty() && depth < 3 && rng.chance(60) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            if let Some(v) = map.get_mut(&key) {
                mutate_value(rng, v, depth + 1);
            }
        }
        Value::Object(map) if !map.is_empty() && rng.chance(30) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            map.remove(rng.pick(&keys).as_str());
        }
        Value::Array(items) if !items.is_empty() && rng.chance(50) => {
            let i = rng.below(items.len());
            if rng.chance(30) {
                items.remove(i);
            } else {
                mutate_value(rng, &mut items[i], depth + 1);
            }
        }
        _ => *value = random_value(rng, 1),
    }
}

/// Splits `h.p.s` into (header JSON, payload value).
fn split_jws(jws: &str) -> Option<(String, Value)> {
    let mut parts = jws.split('.');
    let header = String::from_utf8(b64url_decode(parts.next()?).ok()?).ok()?;
    let payload = serde_json::from_slice(&b64url_decode(parts.next()?).ok()?).ok()?;
    Some((header, payload))
}

/// Signs `payload` (canonicalized) under `header` with one of the fixed
/// signers: the JWS verifies cryptographically whenever the chosen key is
/// the one named by `labels.principal`.
fn resign(rng: &mut Rng, header: &str, payload: &Value, signers: &[Ed25519Signer]) -> String {
    let bytes =
        kest_core::json::canonicalize(payload).unwrap_or_else(|_| serde_json::to_vec(payload).unwrap());
    let principal = payload.pointer("/labels/principal").and_then(Value::as_str);
    let signer = match signers.iter().find(|s| Some(s.principal()) == principal) {
        Some(s) if !rng.chance(5) => s,
        _ => rng.pick(signers),
    };
    let mut jws = signing_input(header, &bytes);
    let signature = signer.sign(jws.as_bytes()).unwrap();
    jws.push('.');
    jws.push_str(&b64url_encode(&signature));
    jws
}

/// A structural mutation of a passport: reorder, drop or duplicate entries,
/// or change one payload and re-sign it (so the input gets past the
/// signature to the linkage and semantic checks).
fn mutate_passport(rng: &mut Rng, seed: &[u8], signers: &[Ed25519Signer]) -> Vec<u8> {
    let Ok(mut entries) = serde_json::from_slice::<Vec<String>>(seed) else { return seed.to_vec() };
    if entries.is_empty() {
        return seed.to_vec();
    }
    for _ in 0..=rng.below(2) {
        let i = rng.below(entries.len());
        match rng.below(6) {
            0 => {
                let j = rng.below(entries.len());
                entries.swap(i, j);
            }
            1 if entries.len() > 1 => {
                entries.remove(i);
            }
            2 => {
                let dup = entries[i].clone();
                let at = rng.below(entries.len() + 1);
                entries.insert(at, dup);
            }
            _ => {
                let Some((mut header, mut payload)) = split_jws(&entries[i]) else { continue };
                if !payload.is_object() {
                    payload = json!({});
                }
                match rng.below(10) {
                    0 => {
                        header = header_json(rng.pick_str(&["none", "mock", "EdDSA", "ES256"]), "spiffe://x")
                    }
                    1 => {
                        header = r#"{"alg":"EdDSA","typ":"JWS"}"#.to_owned();
                    }
                    2 => {
                        // Point at another entry (possibly later, or itself).
                        let target: &String = rng.pick(&entries);
                        let other = kest_core::EntryHash::of(target).to_string();
                        payload["parent_ids"] = json!([other]);
                    }
                    3 => payload["trust_score"] = json!(rng.below(130)),
                    4 => payload["taints"] = json!(["pii", "x"]),
                    5 => payload["classification"] = json!("sanitizer"),
                    6 => {
                        let p = rng.pick(&targets::SIGNERS).0;
                        if let Some(labels) = payload.get_mut("labels").and_then(Value::as_object_mut) {
                            labels.insert("principal".into(), json!(p));
                        }
                    }
                    _ => mutate_value(rng, &mut payload, 0),
                }
                entries[i] = resign(rng, &header, &payload, signers);
            }
        }
    }
    serde_json::to_vec(&entries).unwrap()
}

// ------------------------------------------------------------ generated JSON

fn random_number(rng: &mut Rng) -> String {
    const SPECIAL: &[&str] = &[
        "0",
        "-0",
        "-0.0",
        "0.0",
        "1",
        "1.0",
        "1e0",
        "1E+2",
        "4.50",
        "2e-3",
        "1e21",
        "1e20",
        "1e-7",
        "1e-6",
        "0.000001",
        "0.0000001",
        "9007199254740991",
        "9007199254740992",
        "9007199254740993",
        "-9007199254740993",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "1.7976931348623157e308",
        "5e-324",
        "2.2250738585072014e-308",
        "333333333.33333329",
        "1e400",
        "-1e400",
        "1e-400",
        "123456789012345678901234567890",
        "0.1",
        "100",
        "1e2",
        "12e1",
    ];
    match rng.below(4) {
        0 => (*rng.pick(SPECIAL)).to_owned(),
        1 => {
            let f = f64::from_bits(rng.next());
            if f.is_finite() { format!("{f:e}") } else { "0.5".to_owned() }
        }
        2 => format!("{}", i64::from_ne_bytes(rng.next().to_ne_bytes()) >> rng.below(64)),
        _ => {
            format!("{}.{}e{}", rng.below(1000), rng.below(1000), i64::try_from(rng.below(60)).unwrap() - 30)
        }
    }
}

fn random_string(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "a",
        "b",
        "Z",
        "principal",
        "\\n",
        "\\t",
        "\\\"",
        "\\\\",
        "\\/",
        "\\u0000",
        "\\u001f",
        "\\u007f",
        "\\u00e9",
        "é",
        "€",
        "\\u20ac",
        "\\ud83d\\ude00",
        "😀",
        "\u{10000}",
        "\u{e000}",
        "\u{ffff}",
        "\u{7f}",
        "\\b",
        "\\f",
        "\\r",
        " ",
        "\\ud800",
        "\\udc00",
    ];
    let mut s = String::from("\"");
    for _ in 0..rng.below(5) {
        s.push_str(rng.pick_str(PIECES));
    }
    s.push('"');
    s
}

fn random_json(rng: &mut Rng, depth: usize, out: &mut String) {
    let ws = |rng: &mut Rng, out: &mut String| {
        if rng.chance(20) {
            out.push_str(rng.pick_str(&[" ", "\n", "\t", "\r\n  "]));
        }
    };
    ws(rng, out);
    match if depth >= 5 { rng.below(4) } else { rng.below(7) } {
        0 => out.push_str(rng.pick_str(&["null", "true", "false"])),
        1 | 2 => out.push_str(&random_number(rng)),
        3 => out.push_str(&random_string(rng)),
        4 => {
            out.push('[');
            for i in 0..rng.below(5) {
                if i > 0 {
                    out.push(',');
                }
                random_json(rng, depth + 1, out);
            }
            out.push(']');
        }
        _ => {
            out.push('{');
            for i in 0..rng.below(6) {
                if i > 0 {
                    out.push(',');
                }
                ws(rng, out);
                out.push_str(&random_string(rng));
                out.push(':');
                random_json(rng, depth + 1, out);
            }
            out.push('}');
        }
    }
    ws(rng, out);
}

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    loop {
        let mut text = String::new();
        random_json(rng, depth + 2, &mut text);
        if let Ok(v) = serde_json::from_str(&text) {
            return v;
        }
    }
}

// -------------------------------------------------------------------- tests

/// Fails when too few generated inputs got past kest-core's checks: the
/// run would then only exercise the first refusal.
fn expect_depth(target: &str, accepted: usize, total: usize, min_percent: usize) {
    eprintln!("{target}: {accepted} of {total} generated inputs accepted");
    assert!(
        accepted * 100 >= total * min_percent,
        "{target}: only {accepted} of {total} generated inputs were accepted (want {min_percent}%)"
    );
}

#[test]
fn jws_decode_smoke() {
    let seeds = load_seeds("jws_decode");
    let passports = load_seeds("passport_verify");
    let signers = targets::signers();
    let valid = seeds.iter().filter(|seed| targets::jws_decode(seed)).count();
    assert!(valid >= 4, "only {valid} JWS seeds decode: regenerate the corpus");
    let mut rng = Rng(0x6a77_735f_6465_636f);
    let (mut accepted, total) = (0, iterations());
    for _ in 0..total {
        let seed = rng.pick(&seeds).clone();
        let input = match rng.below(3) {
            0 => {
                let other = rng.pick(&seeds).clone();
                mutate_bytes(&mut rng, &seed, &other)
            }
            1 => {
                // Re-signed payload mutation of an entry of a seed passport.
                let passport: &Vec<u8> = rng.pick(&passports);
                let entries: Vec<String> = serde_json::from_slice(passport).unwrap_or_default();
                if entries.is_empty() {
                    continue;
                }
                let jws: &String = rng.pick(&entries);
                let (header, mut payload) = split_jws(jws).unwrap();
                mutate_value(&mut rng, &mut payload, 0);
                resign(&mut rng, &header, &payload, &signers).into_bytes()
            }
            _ => {
                // Valid base64url segments around arbitrary bytes.
                let junk = mutate_bytes(&mut rng, &seed, b"{}");
                let seg = |b: &[u8]| b64url_encode(b);
                format!("{}.{}.{}", seg(b"{\"alg\":\"EdDSA\"}"), seg(&junk), seg(&[7u8; 64])).into_bytes()
            }
        };
        accepted += usize::from(targets::jws_decode(&input));
    }
    expect_depth("jws_decode", accepted, total, 10);
}

#[test]
fn passport_verify_smoke() {
    let seeds = load_seeds("passport_verify");
    let signers = targets::signers();
    let verifier = Verifier::new(targets::key_set()).semantic(true);
    let mut valid = 0;
    for seed in &seeds {
        targets::passport_verify(seed);
        valid += usize::from(verifier.verify_json(std::str::from_utf8(seed).unwrap()).is_ok());
    }
    assert!(valid >= 4, "only {valid} seed passports verify: the corpus is stale (regenerate it)");
    let mut rng = Rng(0x7061_7373_706f_7274);
    // Verification is the slow target in a debug build: a quarter of the
    // budget still covers every check several hundred times.
    let (mut accepted, total) = (0, iterations() / 4);
    for _ in 0..total {
        let seed = rng.pick(&seeds).clone();
        let other = rng.pick(&seeds).clone();
        let input = if rng.chance(50) {
            mutate_passport(&mut rng, &seed, &signers)
        } else {
            mutate_bytes(&mut rng, &seed, &other)
        };
        accepted += usize::from(targets::passport_verify(&input));
    }
    expect_depth("passport_verify", accepted, total, 5);
}

#[test]
fn canonicalize_roundtrip_smoke() {
    let seeds = load_seeds("canonicalize_roundtrip");
    for seed in &seeds {
        assert!(targets::canonicalize_roundtrip(seed), "seed does not parse: regenerate the corpus");
    }
    let mut rng = Rng(0x6a63_735f_726f_756e);
    let (mut accepted, total) = (0, iterations());
    for _ in 0..total {
        let input = if rng.chance(60) {
            let mut text = String::new();
            random_json(&mut rng, 0, &mut text);
            text.into_bytes()
        } else {
            let seed = rng.pick(&seeds).clone();
            let other = rng.pick(&seeds).clone();
            mutate_bytes(&mut rng, &seed, &other)
        };
        accepted += usize::from(targets::canonicalize_roundtrip(&input));
    }
    expect_depth("canonicalize_roundtrip", accepted, total, 30);
}

// ------------------------------------------------------------ seed corpus

/// Entry ids and timestamps are fixed so that regenerating the corpus gives
/// the same bytes.
fn record_fixed(passport: &mut Passport, draft: &EntryDraft, signer: &Ed25519Signer, n: u64) -> String {
    let mut entry: KestEntry = passport.prepare(draft, signer.principal(), &TrustRules::default()).unwrap();
    entry.entry_id = format!("01900000-0000-7000-8000-{n:012x}");
    entry.timestamp_ms = 1_720_000_000_000 + n;
    let signed = sign_entry(entry, signer).unwrap();
    let jws = signed.entry().jws().to_owned();
    passport.append(signed).unwrap();
    jws
}

fn draft(op: &str) -> EntryDraft {
    let mut d = EntryDraft::new(op);
    d.labels.insert("trace_id".into(), "4bf92f3577b34da6a3ce929d0e0e4736".into());
    d
}

#[test]
#[ignore = "writes fuzz/seeds; run explicitly to regenerate the corpus"]
fn regenerate_seed_corpus() {
    let signers = targets::signers();
    let (a, b) = (&signers[0], &signers[1]);
    let mut files: Vec<(&str, String, Vec<u8>)> = Vec::new();

    // A linear flow from user input.
    let mut linear = Passport::new();
    let mut root = draft("ingest");
    root.source_type = Some("user_input".into());
    root.added_taints = vec!["pii".into(), "unverified".into()];
    let root_jws = record_fixed(&mut linear, &root, a, 1);
    let mut search = draft("web_search");
    search.policy_context.app_policies = vec!["scope".into()];
    search.metadata = json!({"k": [1, 2.5, "x"]});
    let child_jws = record_fixed(&mut linear, &search, a, 2);
    record_fixed(&mut linear, &draft("answer"), a, 3);

    // Two roots by two signers, a fan-in and a sanitizer.
    let mut fan = Passport::new();
    let mut r1 = draft("fetch");
    r1.source_type = Some("internet".into());
    r1.added_taints = vec!["unverified".into()];
    record_fixed(&mut fan, &r1, a, 11);
    let mut r2 = draft("lookup");
    r2.source_type = Some("verified_rag".into());
    r2.parents = Parents::Root;
    record_fixed(&mut fan, &r2, b, 12);
    let join_jws = record_fixed(&mut fan, &draft("merge"), a, 13);
    let mut clean = draft("sanitize");
    clean.classification = Classification::Sanitizer;
    clean.removed_taints = vec!["unverified".into()];
    clean.trust_override = Some(80);
    let clean_jws = record_fixed(&mut fan, &clean, b, 14);

    let json = |p: &Passport| p.to_json().into_bytes();
    files.push(("passport_verify", "empty.json".into(), b"[]".to_vec()));
    files.push(("passport_verify", "linear3.json".into(), json(&linear)));
    files.push(("passport_verify", "fanin_sanitizer.json".into(), json(&fan)));
    files.push(("passport_verify", "merged.json".into(), json(&linear.merge(&fan))));
    let spaced = format!(
        "[{}]",
        linear.entries().iter().map(|e| format!("\"{}\"", e.jws())).collect::<Vec<_>>().join(", ")
    );
    files.push(("passport_verify", "reference_spacing.json".into(), spaced.into_bytes()));
    let mut reversed: Vec<String> = linear.entries().iter().map(|e| e.jws().to_owned()).collect();
    reversed.reverse();
    files.push(("passport_verify", "out_of_order.json".into(), serde_json::to_vec(&reversed).unwrap()));

    files.push(("jws_decode", "root.jws".into(), root_jws.clone().into_bytes()));
    files.push(("jws_decode", "child.jws".into(), child_jws.into_bytes()));
    files.push(("jws_decode", "fanin.jws".into(), join_jws.into_bytes()));
    files.push(("jws_decode", "sanitizer.jws".into(), clean_jws.into_bytes()));
    // The reference's tolerated forms: no kid, non-string label values.
    let (_, mut payload) = split_jws(&root_jws).unwrap();
    payload["labels"]["retries"] = json!(3);
    payload["labels"]["cached"] = json!(true);
    let mut rng = Rng(1);
    let header = r#"{"alg":"EdDSA","typ":"JWS"}"#;
    files.push((
        "jws_decode",
        "reference_style.jws".into(),
        resign(&mut rng, header, &payload, &signers[..1]).into_bytes(),
    ));
    files.push((
        "jws_decode",
        "two_segments.jws".into(),
        root_jws.rsplit_once('.').unwrap().0.as_bytes().to_vec(),
    ));

    let vectors_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testvectors/rfc8785");
    let objects: Value =
        serde_json::from_slice(&fs::read(vectors_dir.join("objects.json")).unwrap()).unwrap();
    for v in objects["vectors"].as_array().unwrap() {
        let (Some(name), Some(input)) = (v["name"].as_str(), v["input"].as_str()) else { continue };
        files.push(("canonicalize_roundtrip", format!("{name}.json"), input.as_bytes().to_vec()));
    }
    let numbers: Value =
        serde_json::from_slice(&fs::read(vectors_dir.join("numbers.json")).unwrap()).unwrap();
    let texts: Vec<&str> = numbers["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["error"] != json!(true))
        .filter_map(|v| v["expected"].as_str())
        .collect();
    files.push((
        "canonicalize_roundtrip",
        "rfc8785-numbers.json".into(),
        format!("[{}]", texts.join(",")).into_bytes(),
    ));
    let entry_payload = kest_core::json::canonicalize(linear.entries()[1].payload()).unwrap();
    files.push(("canonicalize_roundtrip", "kest-payload.json".into(), entry_payload));

    for target in TARGETS {
        let dir = seeds_dir(target);
        if dir.exists() {
            fs::remove_dir_all(&dir).unwrap();
        }
        fs::create_dir_all(&dir).unwrap();
    }
    for (target, name, bytes) in files {
        fs::write(seeds_dir(target).join(name), bytes).unwrap();
    }
}

#[test]
fn baggage_parse_smoke() {
    let seeds = load_seeds("baggage_parse");
    assert!(
        seeds.iter().filter(|seed| targets::baggage_parse(seed)).count() >= 3,
        "baggage seeds must parse"
    );
    let mut rng = Rng(0x6261_6767_6167_6521);
    let (mut accepted, total) = (0, iterations());
    for _ in 0..total {
        let seed = rng.pick(&seeds).clone();
        let other = rng.pick(&seeds).clone();
        let input = mutate_bytes(&mut rng, &seed, &other);
        accepted += usize::from(targets::baggage_parse(&input));
    }
    expect_depth("baggage_parse", accepted, total, 10);
}

/// `render` over the passport seeds, structural and byte mutations of them,
/// and hand-written hostile documents (multi-byte and short parent ids,
/// self-parents, markup in names, undecodable segments).
#[test]
fn render_smoke() {
    let mut seeds = load_seeds("passport_verify");
    let hostile_payload = json!({
        "operation": "é\"<x>\\", "labels": {"principal": "ü"}, "trust_score": "x",
        "parent_ids": ["é", "ééééééééééééé", "ab", "0"], "taints": [1, "t"],
    });
    let hostile = format!("e30.{}.AA", b64url_encode(hostile_payload.to_string().as_bytes()));
    let self_parent = {
        let payload = json!({"operation": "line\nbreak\u{1b}[2J", "parent_ids": ["x"]});
        format!("e30.{}.", b64url_encode(payload.to_string().as_bytes()))
    };
    seeds.push(
        serde_json::to_vec(&vec![hostile, self_parent, "x".into(), "a.b".into(), "..".into()]).unwrap(),
    );
    for seed in &seeds {
        assert!(targets::render(seed), "seed is not a passport document");
    }
    let signers = targets::signers();
    let mut rng = Rng(0x7265_6e64_6572_2121);
    let (mut accepted, total) = (0, iterations() / 2);
    for _ in 0..total {
        let seed = rng.pick(&seeds).clone();
        let other = rng.pick(&seeds).clone();
        let input = if rng.chance(50) {
            mutate_passport(&mut rng, &seed, &signers)
        } else {
            mutate_bytes(&mut rng, &seed, &other)
        };
        accepted += usize::from(targets::render(&input));
    }
    expect_depth("render", accepted, total, 5);
}
