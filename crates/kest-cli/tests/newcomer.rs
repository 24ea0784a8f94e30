//! What a newcomer hit on a fresh clone (issue 8, item 7), one test each:
//! `kest help --help`, exit codes for malformed input, JSON on stdout for
//! I/O errors, no echoed passports, `--origin` named for an unknown
//! `--source-type`, singular counts, and the demo's denial reason and
//! `--out` overwrite guard.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn kest_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kest")).current_dir(dir).args(args).output().expect("run kest")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A directory with a key, its JWKS and a passport of `steps` entries.
fn setup(steps: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(code(&kest_in(d, &["keygen", "--principal", "spiffe://t/a", "--out", "a.jwk"])), 0);
    let jwks = kest_in(d, &["jwks", "a.jwk"]);
    std::fs::write(d.join("jwks.json"), &jwks.stdout).unwrap();
    for i in 0..steps {
        let op = format!("step{i}");
        let mut args = vec!["append", "--key", "a.jwk", "--passport", "p.json", "--operation", &op];
        if i == 0 {
            args.extend(["--source-type", "user_input"]);
        }
        let out = kest_in(d, &args);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    dir
}

#[test]
fn help_subcommand_takes_help_and_names_commands() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    for args in [&["help", "--help"][..], &["help", "-h"], &["help"], &["help", "help"]] {
        let out = kest_in(d, args);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).contains("Usage: kest"), "{args:?}: {}", stdout(&out));
    }
    let out = kest_in(d, &["help", "verify"]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("Usage: kest verify"), "{}", stdout(&out));
    let out = kest_in(d, &["help", "policy", "eval"]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("Usage: kest policy eval"), "{}", stdout(&out));
    let out = kest_in(d, &["help", "no-such-command"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("no command `no-such-command`"), "{}", stderr(&out));
}

#[test]
fn malformed_input_is_exit_1_everywhere_and_io_errors_exit_2() {
    let dir = setup(1);
    let d = dir.path();
    std::fs::write(d.join("junk.json"), "hello, not a passport").unwrap();
    std::fs::write(d.join("junk.txt"), "kest.passport_z=AAAA").unwrap();
    std::fs::write(d.join("nopass.txt"), "other=1").unwrap();
    let cases: [&[&str]; 7] = [
        &["verify", "--keys", "jwks.json", "junk.json"],
        &["verify", "--keys", "jwks.json", "--baggage", "junk.txt"],
        &["verify", "--keys", "jwks.json", "--baggage", "nopass.txt"],
        &["inspect", "junk.json"],
        &["inspect", "--baggage", "junk.txt"],
        &["viz", "junk.json"],
        &["viz", "--keys", "jwks.json", "junk.json"],
    ];
    for args in cases {
        let out = kest_in(d, args);
        assert_eq!(code(&out), 1, "{args:?}: {}{}", stdout(&out), stderr(&out));
        assert!(format!("{}{}", stdout(&out), stderr(&out)).contains("invalid"), "{args:?}");
    }
    // Passport text given as baggage: not baggage, exit 1 (it was 2).
    assert_eq!(code(&kest_in(d, &["verify", "--keys", "jwks.json", "--baggage", "p.json"])), 1);
    assert_eq!(code(&kest_in(d, &["inspect", "--baggage", "p.json"])), 1);
    // I/O and usage errors stay 2.
    for args in [
        &["verify", "--keys", "jwks.json", "missing.json"][..],
        &["verify", "--keys", "jwks.json", "--baggage", "missing.txt"],
        &["inspect", "missing.json"],
        &["viz", "missing.json"],
        &["inspect", "--bogus-flag", "p.json"],
    ] {
        assert_eq!(code(&kest_in(d, args)), 2, "{args:?}");
    }
    // And the valid ones are 0.
    assert_eq!(code(&kest_in(d, &["inspect", "p.json"])), 0);
}

#[test]
fn verify_json_prints_an_object_for_io_errors_and_malformed_baggage() {
    let dir = setup(1);
    let d = dir.path();
    std::fs::create_dir(d.join("a-directory")).unwrap();
    for input in ["missing.json", "a-directory"] {
        let out = kest_in(d, &["verify", "--keys", "jwks.json", "--format", "json", input]);
        assert_eq!(code(&out), 2, "{input}");
        let report: Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON object on stdout");
        assert_eq!(report["valid"], false);
        assert_eq!(report["kind"], "usage");
        assert!(report["message"].as_str().unwrap().contains(input), "{report}");
    }
    // Keys that cannot be read: still an object.
    let out = kest_in(d, &["verify", "--keys", "nokeys.json", "--format", "json", "p.json"]);
    assert_eq!(code(&out), 2);
    let report: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["valid"], false);
    // Malformed baggage: an invalid verdict with its kind.
    std::fs::write(d.join("junk.txt"), "kest.passport_z=AAAA").unwrap();
    let out = kest_in(d, &["verify", "--keys", "jwks.json", "--format", "json", "--baggage", "junk.txt"]);
    assert_eq!(code(&out), 1);
    let report: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (report["valid"].clone(), report["kind"].clone()),
        (Value::Bool(false), "malformed_baggage".into())
    );
}

#[test]
fn baggage_errors_do_not_echo_the_passport() {
    let dir = setup(3);
    let d = dir.path();
    let passport = std::fs::read_to_string(d.join("p.json")).unwrap();
    let first: Vec<String> = serde_json::from_str(&passport).unwrap();
    for args in [
        &["verify", "--keys", "jwks.json", "--baggage", "p.json"][..],
        &["verify", "--keys", "jwks.json", "--baggage", "--format", "json", "p.json"],
        &["inspect", "--baggage", "p.json"],
    ] {
        let out = kest_in(d, args);
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(code(&out), 1, "{args:?}: {all}");
        assert!(all.contains('…'), "{args:?}: the echoed member is cut: {all}");
        assert!(!all.contains(&first[0]), "{args:?}: echoes a whole entry: {all}");
        assert!(all.len() < 600, "{args:?}: {} bytes: {all}", all.len());
    }
}

#[test]
fn clipping_is_char_safe_and_marks_the_cut() {
    use kest_cli::render::{clip_quoted, count, ellipsis};
    assert_eq!(ellipsis("ééééé", 2), "éé…");
    assert_eq!(ellipsis("éé", 2), "éé");
    assert_eq!(clip_quoted("member 0: `ééééééé` has no '='", 3), "member 0: `ééé…` has no '='");
    assert_eq!(clip_quoted("short `ok` stays", 3), "short `ok` stays");
    let long = format!("x {}", "ü".repeat(5000));
    assert!(clip_quoted(&long, 3).chars().count() <= 401);
    assert_eq!(count(1, "entry", "entries"), "1 entry");
    assert_eq!(count(0, "entry", "entries"), "0 entries");
    assert_eq!(count(2, "tip", "tips"), "2 tips");
}

#[test]
fn unknown_source_type_names_origin() {
    let dir = setup(0);
    let d = dir.path();
    let append = ["append", "--key", "a.jwk", "--passport", "p.json", "--operation", "feed"];
    let mut args = append.to_vec();
    args.extend(["--source-type", "bogus"]);
    let out = kest_in(d, &args);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("unknown origin"), "{err}");
    assert!(err.contains("--origin NAME=SCORE") && err.contains("--origin bogus="), "{err}");
    assert!(err.contains("user_input (40)"), "lists the known origins: {err}");
    assert!(!d.join("p.json").exists(), "nothing written");
    args.extend(["--origin", "bogus=50"]);
    let out = kest_in(d, &args);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("trust=50"), "{}", stdout(&out));
}

#[test]
fn one_entry_is_singular() {
    let dir = setup(1);
    let d = dir.path();
    let outputs = [
        kest_in(d, &["verify", "--keys", "jwks.json", "p.json"]),
        kest_in(d, &["inspect", "p.json"]),
        kest_in(d, &["viz", "p.json"]),
        kest_in(d, &["viz", "--format", "mermaid", "p.json"]),
        kest_in(d, &["viz", "--format", "dot", "p.json"]),
        kest_in(d, &["viz", "--format", "svg", "p.json"]),
        kest_in(d, &["viz", "--format", "html", "p.json"]),
    ];
    for out in &outputs {
        let text = stdout(out);
        assert_eq!(code(out), 0, "{}", stderr(out));
        for wrong in ["1 entries", "1 roots", "1 tips", "root(s)", "tip(s)"] {
            assert!(!text.contains(wrong), "`{wrong}` in: {text}");
        }
        assert!(text.contains("1 entry"), "{text}");
    }
    assert!(stdout(&outputs[0]).starts_with("valid: 1 entry, 1 root, 1 tip"), "{}", stdout(&outputs[0]));
    let three = setup(3);
    let out = kest_in(three.path(), &["verify", "--keys", "jwks.json", "p.json"]);
    assert!(stdout(&out).starts_with("valid: 3 entries, 1 root, 1 tip"), "{}", stdout(&out));
}

#[test]
fn demo_says_why_it_denied_and_never_overwrites_silently() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = kest_in(d, &["demo", "--out", "run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let denial: Vec<&str> =
        text.lines().skip_while(|l| !l.contains("DENIED by rego:kest/send_email")).take(2).collect();
    assert_eq!(denial.len(), 2, "{text}");
    assert!(denial[0].contains("(function tier)") && denial[0].contains("did not run"), "{text}");
    assert!(denial[1].contains("why: taint `confidential` present"), "{text}");
    assert!(denial[1].contains("it saw trust 80"), "{text}");
    assert!(!text.contains("(entry "), "no entry id for a step that never ran: {text}");
    // The denied picture carries the reason too.
    let html = std::fs::read_to_string(d.join("run/lineage-denied.html")).unwrap();
    assert!(html.contains("taint `confidential` present"));

    // A second run into the same directory is refused and changes nothing.
    let before = std::fs::read(d.join("run/passport.json")).unwrap();
    let out = kest_in(d, &["demo", "--out", "run"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--force") && stderr(&out).contains("passport.json"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "refused before running: {}", stdout(&out));
    assert_eq!(std::fs::read(d.join("run/passport.json")).unwrap(), before);
    // Any one of its files is enough to refuse.
    std::fs::create_dir(d.join("other")).unwrap();
    std::fs::write(d.join("other/lineage.html"), "mine").unwrap();
    assert_eq!(code(&kest_in(d, &["demo", "--out", "other"])), 2);
    assert_eq!(std::fs::read_to_string(d.join("other/lineage.html")).unwrap(), "mine");
    // Unrelated files are fine; --force overwrites.
    std::fs::create_dir(d.join("fresh")).unwrap();
    std::fs::write(d.join("fresh/notes.txt"), "x").unwrap();
    assert_eq!(code(&kest_in(d, &["demo", "--out", "fresh"])), 0);
    let out = kest_in(d, &["demo", "--out", "run", "--force"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_ne!(std::fs::read(d.join("run/passport.json")).unwrap(), before);
}
