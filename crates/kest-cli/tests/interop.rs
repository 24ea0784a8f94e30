//! Interoperability with the Python reference (`kest==0.3.0.post1`), in both
//! directions, plus tampered variants. Needs the reference installed in a
//! Python environment named by `KEST_REF_PYTHON` (`./scripts/test` creates
//! one); without it these tests fail loudly rather than skip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kest_core::encoding::{b64url_decode, b64url_encode};
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    match std::env::var_os("KEST_REF_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "KEST_REF_PYTHON is not set: run ./scripts/test, which installs kest==0.3.0.post1 into a venv \
             and points KEST_REF_PYTHON at its python"
        ),
    }
}

fn kest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kest")).args(args).output().expect("run kest")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

/// Runs the reference generator once per test into a fresh directory.
fn reference_fixtures() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = repo_root().join("tests/interop/reference_generate.py");
    let out = Command::new(python()).arg(&script).arg(dir.path()).output().expect("run python");
    ok(&out, "reference_generate.py");
    let index = read_json(&dir.path().join("index.json"));
    let names: Vec<String> = index["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert!(names.len() >= 8, "expected all scenarios, got {names:?}");
    (dir, names)
}

#[test]
fn reference_passports_verify_and_decode_identically() {
    let (dir, names) = reference_fixtures();
    let jwks = dir.path().join("jwks.json");
    for name in &names {
        let passport = dir.path().join(format!("{name}.passport.json"));
        let p = passport.to_str().unwrap();
        let report: Value = serde_json::from_str(&ok(
            &kest(&["verify", "--keys", jwks.to_str().unwrap(), "--format", "json", p]),
            name,
        ))
        .unwrap();
        assert_eq!(report["valid"], json!(true), "{name}");
        let decoded: Value = serde_json::from_str(&ok(&kest(&["inspect", "--format", "json", p]), name))
            .expect("inspect json");
        let expected = read_json(&dir.path().join(format!("{name}.decoded.json")));
        let ours: Vec<&Value> = decoded.as_array().unwrap().iter().map(|e| &e["payload"]).collect();
        let theirs: Vec<&Value> = expected.as_array().unwrap().iter().collect();
        assert_eq!(ours, theirs, "{name}: our decoding differs from the reference's");
        assert_eq!(report["entries"].as_array().unwrap().len(), theirs.len());
    }
}

#[test]
fn reference_passports_built_by_spec_rules_pass_semantic_checks() {
    let (dir, names) = reference_fixtures();
    let jwks = dir.path().join("jwks.json");
    // hook_flow is produced by the reference's hook, which scores a root with
    // no origin 100 and accumulates taints over the whole passport; the
    // others follow SPEC §4 and carry kest.source_type.
    for name in names.iter().filter(|n| n.as_str() != "hook_flow") {
        let p = dir.path().join(format!("{name}.passport.json"));
        ok(&kest(&["verify", "--semantic", "--keys", jwks.to_str().unwrap(), p.to_str().unwrap()]), name);
    }
}

struct Ours {
    dir: tempfile::TempDir,
    files: Vec<PathBuf>,
    jwks: PathBuf,
}

fn append(dir: &Path, key: &str, passport: &str, extra: &[&str]) {
    let key = dir.join(key);
    let passport = dir.join(passport);
    let mut args = vec!["append", "--key", key.to_str().unwrap(), "--passport", passport.to_str().unwrap()];
    args.extend_from_slice(extra);
    // other signers' keys
    let jwks = dir.join("all.jwks");
    if jwks.exists() {
        args.push("--keys");
        args.push(jwks.to_str().unwrap());
    }
    let out = ok(&kest(&args), "append");
    assert!(out.starts_with("appended ["), "{out}");
}

fn hash_of(dir: &Path, passport: &str, index: usize) -> String {
    let report: Value = serde_json::from_str(&ok(
        &kest(&["inspect", "--format", "json", dir.join(passport).to_str().unwrap()]),
        "inspect",
    ))
    .unwrap();
    report[index]["hash"].as_str().unwrap().to_owned()
}

/// Builds the same shapes as the reference fixtures with our CLI.
fn our_passports() -> Ours {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for who in ["ingest", "agent", "tool"] {
        let key = d.join(format!("{who}.jwk"));
        ok(
            &kest(&[
                "keygen",
                "--principal",
                &format!("spiffe://kest.test/{who}"),
                "--out",
                key.to_str().unwrap(),
            ]),
            "keygen",
        );
    }
    let keys: Vec<String> = ["ingest", "agent", "tool"]
        .iter()
        .map(|w| d.join(format!("{w}.jwk")).to_str().unwrap().to_owned())
        .collect();
    let mut jwks_args = vec!["jwks"];
    jwks_args.extend(keys.iter().map(String::as_str));
    let jwks_text = ok(&kest(&jwks_args), "jwks");
    std::fs::write(d.join("all.jwks"), &jwks_text).unwrap();

    append(d, "ingest.jwk", "single_root.json", &["--operation", "start", "--source-type", "system"]);

    for op in ["root", "a", "b"] {
        append(d, "ingest.jwk", "linear_chain.json", &["--operation", op, "--source-type", "internal"]);
    }

    append(d, "ingest.jwk", "fan_out.json", &["--operation", "root", "--source-type", "verified_rag"]);
    let root = hash_of(d, "fan_out.json", 0);
    append(d, "agent.jwk", "fan_out.json", &["--operation", "left", "--parent", &root]);
    append(
        d,
        "tool.jwk",
        "fan_out.json",
        &["--operation", "right", "--parent", &root, "--source-type", "third_party_api"],
    );
    std::fs::copy(d.join("fan_out.json"), d.join("fan_in.json")).unwrap();
    append(d, "agent.jwk", "fan_in.json", &["--operation", "join"]);

    for (key, op) in
        [("ingest.jwk", "ingest"), ("agent.jwk", "plan"), ("tool.jwk", "call_tool"), ("agent.jwk", "answer")]
    {
        append(d, key, "multi_principal.json", &["--operation", op, "--source-type", "internal"]);
    }

    append(
        d,
        "ingest.jwk",
        "taints.json",
        &["--operation", "load", "--source-type", "user_input", "--taint", "unverified", "--taint", "pii"],
    );
    append(
        d,
        "agent.jwk",
        "taints.json",
        &["--operation", "browse", "--source-type", "internet", "--taint", "internet"],
    );
    append(
        d,
        "tool.jwk",
        "taints.json",
        &["--operation", "redact", "--classification", "sanitizer", "--remove-taint", "pii"],
    );

    append(
        d,
        "tool.jwk",
        "sanitizer_override.json",
        &["--operation", "fetch", "--source-type", "internet", "--taint", "unverified"],
    );
    append(
        d,
        "agent.jwk",
        "sanitizer_override.json",
        &[
            "--operation",
            "scrub",
            "--classification",
            "sanitizer",
            "--remove-taint",
            "unverified",
            "--trust-override",
            "90",
        ],
    );

    let files = [
        "single_root",
        "linear_chain",
        "fan_out",
        "fan_in",
        "multi_principal",
        "taints",
        "sanitizer_override",
    ]
    .iter()
    .map(|n| d.join(format!("{n}.json")))
    .collect();
    let jwks = d.join("all.jwks");
    Ours { dir, files, jwks }
}

#[test]
fn our_passports_pass_the_reference_verifier_byte_for_byte() {
    let ours = our_passports();
    // Sanity: shapes are what we meant, and our own strict + semantic verifier agrees.
    let fan_in: Value = serde_json::from_str(&ok(
        &kest(&[
            "verify",
            "--semantic",
            "--format",
            "json",
            "--keys",
            ours.jwks.to_str().unwrap(),
            ours.files[3].to_str().unwrap(),
        ]),
        "verify fan_in",
    ))
    .unwrap();
    assert_eq!(fan_in["entries"][3]["parents"].as_array().unwrap().len(), 2, "fan-in joins both branches");
    assert_eq!(fan_in["tips"].as_array().unwrap().len(), 1);
    for f in &ours.files {
        ok(
            &kest(&["verify", "--semantic", "--keys", ours.jwks.to_str().unwrap(), f.to_str().unwrap()]),
            "self-verify",
        );
    }
    let script = repo_root().join("tests/interop/reference_verify.py");
    let mut cmd = Command::new(python());
    cmd.arg(&script).arg("--jwks").arg(&ours.jwks).args(&ours.files);
    let out = cmd.output().expect("run python");
    let stdout = ok(&out, "reference_verify.py");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok ")).count(), ours.files.len(), "{stdout}");
    drop(ours.dir);
}

// ---- tampered variants of a reference passport -------------------------

fn entries(path: &Path) -> Vec<String> {
    serde_json::from_value(read_json(path)).unwrap()
}

fn verify_kind(jwks: &Path, entries: &[String]) -> (i32, Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.json");
    std::fs::write(&file, serde_json::to_string(entries).unwrap()).unwrap();
    let out = kest(&["verify", "--format", "json", "--keys", jwks.to_str().unwrap(), file.to_str().unwrap()]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), report)
}

fn expect_rejected(jwks: &Path, entries: &[String], kind: &str, index: usize) {
    let (code, report) = verify_kind(jwks, entries);
    assert_eq!(code, 1, "expected exit 1 for {kind}: {report}");
    assert_eq!(report["valid"], json!(false));
    assert_eq!(report["error"]["kind"], json!(kind), "{report}");
    assert_eq!(report["error"]["index"], json!(index), "{report}");
}

fn with_payload(jws: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = jws.split('.').collect();
    let mut payload: Value = serde_json::from_slice(&b64url_decode(parts[1]).unwrap()).unwrap();
    edit(&mut payload);
    let bytes = kest_core::json::canonicalize(&payload).unwrap();
    format!("{}.{}.{}", parts[0], b64url_encode(&bytes), parts[2])
}

fn with_header(jws: &str, header: &str) -> String {
    let parts: Vec<&str> = jws.split('.').collect();
    format!("{}.{}.{}", b64url_encode(header.as_bytes()), parts[1], parts[2])
}

#[test]
fn tampered_reference_passports_are_rejected_with_the_right_kind() {
    let (dir, _) = reference_fixtures();
    let jwks = dir.path().join("jwks.json");
    let chain = entries(&dir.path().join("multi_principal.passport.json"));
    assert_eq!(chain.len(), 4);
    assert_eq!(verify_kind(&jwks, &chain).0, 0);

    let mut t = chain.clone();
    t[1] = with_payload(&t[1], |p| p["trust_score"] = json!(100));
    expect_rejected(&jwks, &t, "bad_signature", 1);

    // Flip the lowest bit of s: still a canonical scalar, so the signature
    // is well-formed and must fail verification itself.
    let mut t = chain.clone();
    let sig_start = t[2].rfind('.').unwrap() + 1;
    let mut sig = b64url_decode(&t[2][sig_start..]).unwrap();
    sig[32] ^= 1;
    t[2].replace_range(sig_start.., &b64url_encode(&sig));
    expect_rejected(&jwks, &t, "bad_signature", 2);

    // Flip a bit of R: usually no longer a curve point, else a wrong R.
    let mut t = chain.clone();
    let mut sig = b64url_decode(&t[2][sig_start..]).unwrap();
    sig[0] ^= 0x10;
    t[2].replace_range(sig_start.., &b64url_encode(&sig));
    let (code, report) = verify_kind(&jwks, &t);
    assert_eq!(code, 1);
    assert!(
        ["bad_signature", "malformed_signature"].contains(&report["error"]["kind"].as_str().unwrap()),
        "{report}"
    );

    let mut t = chain.clone();
    t.swap(1, 2);
    expect_rejected(&jwks, &t, "parent_out_of_order", 1);

    let mut t = chain.clone();
    t.push(chain[3].clone());
    expect_rejected(&jwks, &t, "duplicate_entry", 4);

    let mut t = chain.clone();
    t.remove(1);
    expect_rejected(&jwks, &t, "dangling_parent", 1);

    // Unknown signer: a key set without the second entry's principal.
    let principal = {
        let parts: Vec<&str> = chain[1].split('.').collect();
        let p: Value = serde_json::from_slice(&b64url_decode(parts[1]).unwrap()).unwrap();
        p["labels"]["principal"].as_str().unwrap().to_owned()
    };
    let mut keys = read_json(&jwks);
    keys["keys"].as_array_mut().unwrap().retain(|k| k["kid"] != json!(principal));
    let partial = dir.path().join("partial.jwks");
    std::fs::write(&partial, keys.to_string()).unwrap();
    expect_rejected(&partial, &chain, "unknown_signer", 1);

    // alg none / mock, and the reference's MockIdentityProvider signature.
    for alg in ["none", "mock", "HS256", "ES256"] {
        let mut t = chain.clone();
        t[0] = with_header(
            &t[0],
            &format!(r#"{{"alg":"{alg}","kid":"spiffe://kest.test/ingest","typ":"JWS"}}"#),
        );
        expect_rejected(&jwks, &t, "alg_not_allowed", 0);
    }
    let mut t = chain.clone();
    t[0] = with_header(&t[0], r#"{"alg":"EdDSA","kid":"spiffe://kest.test/other","typ":"JWS"}"#);
    expect_rejected(&jwks, &t, "kid_mismatch", 0);
}

#[test]
fn demo_passports_verify_here_and_in_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = kest(&["demo", "--out", dir.path().to_str().unwrap()]);
    let text = ok(&out, "kest demo");
    assert!(text.contains("DENIED by rego:kest/send_email"), "{text}");
    assert!(text.contains("⇐ joins"), "the tree shows the fan-in: {text}");
    let jwks = dir.path().join("jwks.json");
    let allowed = dir.path().join("passport.json");
    let denied = dir.path().join("passport-denied.json");
    for p in [&allowed, &denied] {
        ok(
            &kest(&["verify", "--semantic", "--keys", jwks.to_str().unwrap(), p.to_str().unwrap()]),
            "verify demo",
        );
    }
    let script = repo_root().join("tests/interop/reference_verify.py");
    let out = Command::new(python())
        .arg(&script)
        .arg("--jwks")
        .arg(&jwks)
        .arg(&allowed)
        .arg(&denied)
        .output()
        .unwrap();
    let stdout = ok(&out, "reference_verify.py on the demo");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok ")).count(), 2, "{stdout}");
    assert_eq!(entries(&allowed).len(), 6);
    assert_eq!(entries(&denied).len(), 5, "the denied e-mail is not recorded");
}
