//! `kest policy list | eval | test` (SPEC §10, §12).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn kest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kest")).args(args).output().expect("run kest")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/models")
}

fn write(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, value.to_string()).unwrap();
    path.display().to_string()
}

#[test]
fn list_names_every_model_with_both_engines_and_its_contract() {
    let out = kest(&["policy", "list", "--format", "json"]);
    assert_eq!(code(&out), 0);
    let list: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    for model in
        ["bell_lapadula", "biba", "brewer_nash", "clark_wilson", "goguen_meseguer", "financial", "security"]
    {
        let item = list.iter().find(|i| i["name"] == format!("kest/{model}")).unwrap();
        assert_eq!(item["engines"], json!(["rego", "cedar"]), "{model}");
        assert!(!item["contract"].as_array().unwrap().is_empty(), "{model}");
    }
    assert!(stdout(&kest(&["policy", "list"])).contains("kest/security [rego, cedar]"));
}

#[test]
fn eval_exit_codes_are_0_allow_1_deny_2_error() {
    let dir = tempfile::tempdir().unwrap();
    let context = |clearance: Value| {
        json!({"action": "read",
               "subject": {"workload": "spiffe://t/a", "user": "alice", "trust_score": 60,
                           "attributes": {"clearance": clearance, "categories": []}},
               "object": {"id": "doc", "attributes": {"classification": "secret", "categories": []}}})
    };
    let allow = write(dir.path(), "allow.json", &context(json!("top_secret")));
    let deny = write(dir.path(), "deny.json", &context(json!(1)));
    for engine in ["rego", "cedar"] {
        for policy in ["kest/bell_lapadula", "kest/security"] {
            let out = kest(&["policy", "eval", "--engine", engine, "--policy", policy, "--input", &allow]);
            assert_eq!(code(&out), 0, "{engine} {policy}: {}", stdout(&out));
            assert!(stdout(&out).starts_with("allow"));
            let out = kest(&["policy", "eval", "--engine", engine, "--policy", policy, "--input", &deny]);
            assert_eq!(code(&out), 1, "{engine} {policy}");
            assert!(stdout(&out).starts_with("deny"));
        }
        // As a file: the derivation still applies (named by the file stem).
        let file = models().join(format!("{engine}/security.{engine}")).display().to_string();
        let out = kest(&["policy", "eval", "--engine", engine, "--policy", &file, "--input", &allow]);
        assert_eq!(code(&out), 0, "{engine} file: {}", stdout(&out));
        let out = kest(&["policy", "eval", "--engine", engine, "--policy", "kest/none", "--input", &allow]);
        assert_eq!(code(&out), 2, "unknown policy");
        let out =
            kest(&["policy", "eval", "--engine", engine, "--policy", "biba", "--input", "missing.json"]);
        assert_eq!(code(&out), 2, "missing input");
    }
    let out = kest(&["policy", "eval", "--engine", "opa", "--policy", "biba", "--input", &allow]);
    assert_eq!(code(&out), 2);
    let out = kest(&[
        "policy", "eval", "--engine", "cedar", "--policy", "biba", "--input", &allow, "--format", "json",
    ]);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!((report["decision"].as_str(), report["engine"].as_str()), (Some("deny"), Some("cedar")));
}

#[test]
fn test_runs_the_bundled_cases_and_reports_failures() {
    let out = kest(&["policy", "test", models().join("tests").to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(stdout(&out).contains(" 0 failed"));

    let dir = tempfile::tempdir().unwrap();
    let input = json!({"action": "read", "subject": {"attributes": {"integrity": 1}},
                       "object": {"attributes": {"integrity": 0}}});
    write(dir.path(), "biba.json", &json!([{"name": "read down", "input": input, "expect": "allow"}]));
    let out = kest(&["policy", "test", dir.path().to_str().unwrap(), "--engine", "rego"]);
    assert_eq!(code(&out), 1);
    assert!(stdout(&out).contains("FAIL biba / read down [rego]"), "{}", stdout(&out));

    write(dir.path(), "biba.json", &json!([{"name": "x", "input": {}, "expect": "maybe"}]));
    assert_eq!(code(&kest(&["policy", "test", dir.path().to_str().unwrap()])), 2);
    write(dir.path(), "biba.json", &json!([{"name": "x", "input": {}, "expect": "deny", "extra": 1}]));
    assert_eq!(code(&kest(&["policy", "test", dir.path().to_str().unwrap()])), 2);
    assert_eq!(code(&kest(&["policy", "test", "no-such-dir"])), 2);
}
