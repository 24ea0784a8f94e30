//! Differential check of the policy library (SPEC §12) against the
//! reference's own policy files (issue 9, item 4).
//!
//! The reference's `*.rego` / `*.cedar` files (and `advanced/`) are read at
//! run time from the installed reference package, located through the
//! Python named by `KEST_REF_PYTHON` (`./scripts/test` sets it); nothing of
//! their text is copied into this repository. A missing `KEST_REF_PYTHON` or
//! missing files fail the test.
//!
//! Each reference file runs in *our* engines: Rego with
//! `RegoEngineBuilder::rego_v0(true)` (the reference writes Rego v0), the
//! decision being its package's `allow` rule, as the reference's own
//! `RegoLocalEngine` queries it; Cedar with the request action
//! `Action::"<the context's action>"` (the reference's policy tests use the
//! action that way; our engine's action is the policy name, so the file is
//! loaded under the action's name). Every case is one SPEC §6.1 context;
//! `reference_input` translates it to the reference's input shape. On the
//! cases where the models coincide all decisions must be equal; on the
//! documented difference cases every decision must be exactly the one the
//! table "Differences from the reference's policies" in `policies/README.md`
//! states (the test reads that table). A reference file that does not parse
//! in our engines is a finding (printed with the parser error), not a
//! failure — but every model must have a decision checked on each engine.
#![cfg(all(feature = "rego", feature = "cedar"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kest::policy::cedar::CedarEngine;
use kest::policy::library::{self, EngineKind, Model};
use kest::policy::rego::RegoEngine;
use kest::policy::{Decision, PolicyError};
use serde_json::{Value, json};

/// The name the reference's Rego module is loaded under (not a library
/// model name, so no derivation is applied).
const REF_REGO: &str = "reference/policy";

// ---------------------------------------------------------------------------
// Outcomes and cases

/// One engine's answer: an evaluation error denies (SPEC §6.2), but the
/// table keeps it apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Allow,
    Deny,
    Error,
}

impl Out {
    fn of<E>(result: Result<Decision, E>) -> Out {
        match result {
            Ok(Decision::Allow) => Out::Allow,
            Ok(_) => Out::Deny,
            Err(_) => Out::Error,
        }
    }

    /// The decision (an error denies).
    fn allows(self) -> bool {
        self == Out::Allow
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Out::Allow => "allow",
            Out::Deny => "deny",
            Out::Error => "error",
        })
    }
}

enum Expect {
    /// The models coincide: every engine, ours and theirs, gives this
    /// decision (an error counting as deny).
    Same(bool),
    /// A documented difference (a row of the README table, by id).
    Differ { id: &'static str, reference_rego: Out, reference_cedar: Out, ours: Out },
}

struct Case {
    name: &'static str,
    context: Value,
    expect: Expect,
}

fn same(name: &'static str, context: Value, allow: bool) -> Case {
    Case { name, context, expect: Expect::Same(allow) }
}

fn differ(id: &'static str, context: Value, reference_rego: Out, reference_cedar: Out, ours: Out) -> Case {
    Case { name: id, context, expect: Expect::Differ { id, reference_rego, reference_cedar, ours } }
}

use Out::{Allow, Deny, Error};

// ---------------------------------------------------------------------------
// Contexts (SPEC §6.1)

/// A full §6.1 context. `attributes` (the call values) also appear at the
/// top level, as SPEC §6.1 puts them there for reference compatibility.
#[allow(clippy::too_many_arguments)]
fn context(
    action: &str,
    user: Option<&str>,
    subject_attributes: Value,
    trust_score: i64,
    taints: &[&str],
    object_attributes: Value,
    attributes: Value,
    ancestors: Value,
) -> Value {
    let mut ctx = json!({
        "subject": {"workload": "spiffe://demo/app", "user": user, "agent": null, "task": null,
                    "trust_score": trust_score, "taints": taints, "attributes": subject_attributes},
        "object": {"id": "res-1", "attributes": object_attributes},
        "environment": {"is_root": false, "source_type": "internal", "parent_hash": "0",
                        "policy_names": [], "policy_tier": "function", "active_deviations": [],
                        "operation": action, "entry_id": "01900000-0000-7000-8000-000000000001"},
        "identity": "spiffe://demo/app", "trust_score": trust_score,
        "principal": "spiffe://demo/app", "is_root": false, "origin": "internal", "chain_tip": "0",
        "user": user.unwrap_or(""), "agent": "", "task": "", "taints": taints,
        "action": action,
        "attributes": attributes.clone(),
        "lineage": {"ancestors": ancestors},
    });
    if let (Value::Object(top), Value::Object(call)) = (&mut ctx, attributes) {
        for (k, v) in call {
            top.entry(k).or_insert(v);
        }
    }
    ctx
}

fn ancestor(
    user: &str,
    action: &str,
    operation: &str,
    resource_id: &str,
    resource_attributes: Value,
) -> Value {
    json!({"operation": operation, "principal": "spiffe://demo/app", "user": user, "action": action,
           "resource_id": resource_id, "resource_attributes": resource_attributes,
           "classification": "internal", "trust_score": 80, "taints": [], "entry_hash": "00"})
}

/// Bell-LaPadula / security style context.
fn levels(action: &str, subject: Value, object: Value, ancestors: Value) -> Value {
    context(action, Some("alice"), subject, 80, &[], object, json!({}), ancestors)
}

// ---------------------------------------------------------------------------
// Translation to the reference's input shape

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k)).filter(|v| !v.is_null())
}

/// An object of the present (non-null) members.
fn obj(pairs: &[(&str, Option<&Value>)]) -> Value {
    Value::Object(pairs.iter().filter_map(|(k, v)| v.map(|v| ((*k).to_owned(), v.clone()))).collect())
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The §6.1 context in the reference's shape, as a caller of the reference
/// would supply it: `(Rego input, Cedar context)`. The Cedar files read
/// pre-computed facts the Rego files compute themselves
/// (`history_in_conflict_class`, `is_certified_triple`,
/// `is_non_interfering`); they are computed here exactly as the reference's
/// Rego computes them. Values are passed through untranslated (a level name
/// stays a string): the reference has no level names.
fn reference_input(model: Model, ctx: &Value) -> (Value, Value) {
    let action = get(ctx, &["action"]);
    let sa = |k: &str| get(ctx, &["subject", "attributes", k]);
    let oa = |k: &str| get(ctx, &["object", "attributes", k]);
    let call = |k: &str| get(ctx, &["attributes", k]);
    let user = get(ctx, &["subject", "user"]);
    match model {
        Model::BellLapadula => {
            let input = obj(&[
                ("action", action),
                ("subject", Some(&obj(&[("clearance", sa("clearance"))]))),
                ("object", Some(&obj(&[("classification", oa("classification"))]))),
            ]);
            (input.clone(), input)
        }
        Model::Biba => {
            let input = obj(&[
                ("action", action),
                ("subject", Some(&obj(&[("integrity", sa("integrity"))]))),
                ("object", Some(&obj(&[("integrity", oa("integrity"))]))),
            ]);
            (input.clone(), input)
        }
        Model::BrewerNash => {
            // The subject's history: the same user's ancestors that touched
            // a resource of some conflict class.
            let history: Vec<Value> = get(ctx, &["lineage", "ancestors"])
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|a| user.is_some() && get(a, &["user"]) == user)
                .filter_map(|a| {
                    let class = get(a, &["resource_attributes", "conflict_class"])?;
                    Some(obj(&[
                        ("conflict_class", Some(class)),
                        ("company_id", get(a, &["resource_attributes", "dataset"])),
                    ]))
                })
                .collect();
            let object = obj(&[("conflict_class", oa("conflict_class")), ("company_id", oa("dataset"))]);
            let in_class: Vec<&Value> =
                history.iter().filter(|h| h.get("conflict_class") == object.get("conflict_class")).collect();
            let input = json!({"subject": {"history": history}, "object": object});
            let count = json!(in_class.len());
            let cedar = json!({
                "subject": obj(&[("history_in_conflict_class", Some(&count)),
                                 ("accessed_company_id", in_class.first().and_then(|h| h.get("company_id")))]),
                "object": object,
            });
            (input, cedar)
        }
        Model::ClarkWilson => {
            let operation = get(ctx, &["environment", "operation"]);
            let cdi = oa("cdi");
            let triples: Vec<Value> = strings(sa("authorized_tps"))
                .iter()
                .flat_map(|tp| {
                    strings(call("certified_cdis"))
                        .into_iter()
                        .map(move |c| json!({"subject": user, "program": tp, "object": c}))
                })
                .collect();
            let certified = triples.iter().any(|t| {
                user.is_some()
                    && Some(&t["subject"]) == user
                    && Some(&t["program"]) == operation
                    && Some(&t["object"]) == cdi
            });
            let input = obj(&[
                ("subject", Some(&obj(&[("id", user)]))),
                ("program", Some(&obj(&[("id", operation)]))),
                ("object", Some(&obj(&[("id", cdi)]))),
                ("certified_triples", Some(&Value::from(triples))),
            ]);
            (input, json!({"is_certified_triple": certified}))
        }
        Model::GoguenMeseguer => {
            // The subject's domain: its single `domain:<d>` taint.
            let domains: Vec<Value> = strings(get(ctx, &["subject", "taints"]))
                .iter()
                .filter_map(|t| t.strip_prefix("domain:").map(Value::from))
                .collect();
            assert!(domains.len() <= 1, "the reference has one domain per subject");
            let domain = oa("domain");
            let mappings: Vec<Value> = strings(oa("may_be_influenced_by"))
                .into_iter()
                .map(|from| json!({"from_domain": from, "to_domain": domain}))
                .collect();
            let non_interfering = domains.first().is_some_and(|d| {
                mappings.iter().any(|m| &m["from_domain"] == d && Some(&m["to_domain"]) == domain)
            });
            let subject = obj(&[("domain", domains.first())]);
            let object = obj(&[("domain", domain)]);
            let input = json!({"subject": subject, "object": object, "non_interference_mappings": mappings});
            let cedar = json!({"subject": subject, "object": object, "is_non_interfering": non_interfering});
            (input, cedar)
        }
        Model::Financial => {
            let input = obj(&[
                ("action", action),
                ("amount", call("amount")),
                ("mfa_present", call("mfa_present")),
                ("risk_score", call("risk_score")),
            ]);
            (input.clone(), input)
        }
        Model::Security => {
            let input = obj(&[
                ("action", action),
                ("trust_score", get(ctx, &["subject", "trust_score"])),
                ("role", call("role")),
                ("country", call("country")),
            ]);
            (input.clone(), input)
        }
    }
}

// ---------------------------------------------------------------------------
// The cases

fn cases(model: Model) -> Vec<Case> {
    let none = json!([]);
    match model {
        Model::BellLapadula => {
            let s = |l: Value, c: Value| json!({"clearance": l, "categories": c});
            let o = |l: Value, c: Value| json!({"classification": l, "categories": c});
            vec![
                same(
                    "read down",
                    levels("read", s(json!(2), json!([])), o(json!(1), json!([])), none.clone()),
                    true,
                ),
                same(
                    "read level",
                    levels("read", s(json!(2), json!([])), o(json!(2), json!([])), none.clone()),
                    true,
                ),
                same(
                    "read up",
                    levels("read", s(json!(1), json!([])), o(json!(3), json!([])), none.clone()),
                    false,
                ),
                same(
                    "write up",
                    levels("write", s(json!(1), json!([])), o(json!(2), json!([])), none.clone()),
                    true,
                ),
                same(
                    "write down",
                    levels("write", s(json!(3), json!([])), o(json!(1), json!([])), none.clone()),
                    false,
                ),
                same(
                    "other action",
                    levels("delete", s(json!(3), json!([])), o(json!(0), json!([])), none.clone()),
                    false,
                ),
                same(
                    "missing clearance",
                    levels("read", json!({"categories": []}), o(json!(0), json!([])), none.clone()),
                    false,
                ),
                differ(
                    "blp-categories",
                    levels("read", s(json!(3), json!([])), o(json!(1), json!(["nato"])), none.clone()),
                    Allow,
                    Allow,
                    Deny,
                ),
                differ(
                    "blp-missing-categories",
                    levels("read", json!({"clearance": 2}), json!({"classification": 1}), none.clone()),
                    Allow,
                    Allow,
                    Deny,
                ),
                differ(
                    "blp-write-down-through-flow",
                    levels(
                        "write",
                        s(json!(1), json!([])),
                        o(json!(1), json!([])),
                        json!([ancestor("alice", "read", "fetch", "doc-9", json!({"classification": 3}))]),
                    ),
                    Allow,
                    Allow,
                    Deny,
                ),
                differ(
                    "blp-append",
                    levels("append", s(json!(1), json!([])), o(json!(2), json!([])), none.clone()),
                    Deny,
                    Deny,
                    Allow,
                ),
                differ(
                    "blp-names-read-up",
                    levels(
                        "read",
                        s(json!("unclassified"), json!([])),
                        o(json!("top_secret"), json!([])),
                        none.clone(),
                    ),
                    Allow,
                    Error,
                    Deny,
                ),
                differ(
                    "blp-names-read-down",
                    levels(
                        "read",
                        s(json!("confidential"), json!([])),
                        o(json!("unclassified"), json!([])),
                        none,
                    ),
                    Deny,
                    Error,
                    Allow,
                ),
            ]
        }
        Model::Biba => {
            let b = |action: &str, s: Value, o: Value| {
                levels(action, json!({"integrity": s}), json!({"integrity": o}), json!([]))
            };
            vec![
                same("read up", b("read", json!(1), json!(2)), true),
                same("read down", b("read", json!(2), json!(1)), false),
                same("write down", b("write", json!(2), json!(1)), true),
                same("write up", b("write", json!(1), json!(2)), false),
                same("other action", b("delete", json!(3), json!(0)), false),
                same(
                    "missing integrity",
                    levels("read", json!({}), json!({"integrity": 1}), json!([])),
                    false,
                ),
                differ("biba-append", b("append", json!(2), json!(1)), Deny, Deny, Allow),
                differ("biba-invoke", b("invoke", json!(2), json!(1)), Deny, Deny, Allow),
                differ(
                    "biba-names-read-down",
                    b("read", json!("confidential"), json!("unclassified")),
                    Allow,
                    Error,
                    Deny,
                ),
            ]
        }
        Model::BrewerNash => {
            let bn = |user: Option<&str>, object: Value, ancestors: Value| {
                context("read", user, json!({}), 80, &[], object, json!({}), ancestors)
            };
            let bank = |d: &str| json!({"dataset": d, "conflict_class": "banks"});
            let seen = |u: &str, class: &str, d: &str| {
                ancestor(u, "read", "fetch", "doc-9", json!({"conflict_class": class, "dataset": d}))
            };
            vec![
                same("no history", bn(Some("alice"), bank("bank-a"), json!([])), true),
                same(
                    "same dataset",
                    bn(Some("alice"), bank("bank-a"), json!([seen("alice", "banks", "bank-a")])),
                    true,
                ),
                same(
                    "competitor",
                    bn(Some("alice"), bank("bank-b"), json!([seen("alice", "banks", "bank-a")])),
                    false,
                ),
                same(
                    "other class",
                    bn(Some("alice"), bank("bank-b"), json!([seen("alice", "oil", "oil-a")])),
                    true,
                ),
                same(
                    "competitor of another user",
                    bn(Some("alice"), bank("bank-b"), json!([seen("bob", "banks", "bank-a")])),
                    true,
                ),
                differ(
                    "bn-public-object",
                    bn(Some("alice"), json!({"dataset": "press"}), json!([seen("alice", "banks", "bank-a")])),
                    Allow,
                    Allow,
                    Deny,
                ),
                differ("bn-no-user", bn(None, bank("bank-a"), json!([])), Allow, Allow, Deny),
            ]
        }
        Model::ClarkWilson => {
            let cw = |tps: Value, cdis: Value, separate: Option<Value>, ancestors: Value| {
                let mut attributes = json!({"certified_cdis": cdis});
                if let Some(s) = separate {
                    attributes["separate_from"] = s;
                }
                context(
                    "post_ledger",
                    Some("alice"),
                    json!({"authorized_tps": tps}),
                    80,
                    &[],
                    json!({"cdi": "ledger"}),
                    attributes,
                    ancestors,
                )
            };
            let sep = || Some(json!(["approve_payment"]));
            vec![
                same("certified", cw(json!(["post_ledger"]), json!(["ledger"]), sep(), json!([])), true),
                same(
                    "uncertified cdi",
                    cw(json!(["post_ledger"]), json!(["journal"]), sep(), json!([])),
                    false,
                ),
                same("unauthorized tp", cw(json!(["audit"]), json!(["ledger"]), sep(), json!([])), false),
                same(
                    "separate duty by another user",
                    cw(
                        json!(["post_ledger"]),
                        json!(["ledger"]),
                        sep(),
                        json!([ancestor("bob", "approve", "approve_payment", "pay-1", json!({}))]),
                    ),
                    true,
                ),
                differ(
                    "cw-separation-of-duty",
                    cw(
                        json!(["post_ledger"]),
                        json!(["ledger"]),
                        sep(),
                        json!([ancestor("alice", "approve", "approve_payment", "pay-1", json!({}))]),
                    ),
                    Allow,
                    Allow,
                    Deny,
                ),
                differ(
                    "cw-missing-separate-from",
                    cw(json!(["post_ledger"]), json!(["ledger"]), None, json!([])),
                    Allow,
                    Allow,
                    Deny,
                ),
            ]
        }
        Model::GoguenMeseguer => {
            let gm = |taints: &[&str], object: Value| {
                context("read", Some("alice"), json!({}), 80, taints, object, json!({}), json!([]))
            };
            vec![
                same("same domain", gm(&["domain:finance"], json!({"domain": "finance"})), true),
                same(
                    "declared influence",
                    gm(&["domain:hr"], json!({"domain": "finance", "may_be_influenced_by": ["hr"]})),
                    true,
                ),
                same(
                    "undeclared influence",
                    gm(&["domain:hr"], json!({"domain": "finance", "may_be_influenced_by": ["legal"]})),
                    false,
                ),
                same("other domain", gm(&["domain:hr"], json!({"domain": "finance"})), false),
                same("object without domain", gm(&["domain:hr"], json!({})), false),
                differ("gm-no-domain-taint", gm(&["pii"], json!({"domain": "finance"})), Deny, Error, Allow),
            ]
        }
        Model::Financial => {
            let f = |action: &str, limit: i64, attributes: Value, ancestors: Value| {
                context(
                    action,
                    Some("alice"),
                    json!({"limit": limit}),
                    80,
                    &[],
                    json!({}),
                    attributes,
                    ancestors,
                )
            };
            let approval = |u: &str| json!([ancestor(u, "approve", "approve_transfer", "res-1", json!({}))]);
            vec![
                same(
                    "transfer within limit",
                    f("transfer", 1000, json!({"amount": 500, "risk_score": "low"}), none.clone()),
                    true,
                ),
                same(
                    "transfer at limit",
                    f("transfer", 1000, json!({"amount": 1000, "risk_score": "low"}), none.clone()),
                    true,
                ),
                same(
                    "transfer above limit",
                    f("transfer", 1000, json!({"amount": 1500, "risk_score": "low"}), none.clone()),
                    false,
                ),
                same(
                    "transfer above limit, self-approved",
                    f("transfer", 1000, json!({"amount": 1500, "risk_score": "low"}), approval("alice")),
                    false,
                ),
                same(
                    "withdrawal with mfa",
                    f("withdrawal", 1000, json!({"mfa_present": true, "risk_score": "low"}), none.clone()),
                    true,
                ),
                same(
                    "withdrawal without mfa",
                    f("withdrawal", 1000, json!({"mfa_present": false, "risk_score": "low"}), none.clone()),
                    false,
                ),
                same(
                    "other action",
                    f("deposit", 1000, json!({"amount": 5, "risk_score": "low"}), none.clone()),
                    false,
                ),
                differ(
                    "fin-high-risk-transfer",
                    f("transfer", 1000, json!({"amount": 500, "risk_score": "high"}), none.clone()),
                    Allow,
                    Deny,
                    Deny,
                ),
                differ(
                    "fin-high-risk-withdrawal",
                    f("withdrawal", 1000, json!({"mfa_present": true, "risk_score": "high"}), none.clone()),
                    Allow,
                    Deny,
                    Deny,
                ),
                differ(
                    "fin-missing-risk-score",
                    f("transfer", 1000, json!({"amount": 500}), none.clone()),
                    Allow,
                    Error,
                    Deny,
                ),
                differ(
                    "fin-four-eyes",
                    f("transfer", 1000, json!({"amount": 1500, "risk_score": "low"}), approval("bob")),
                    Deny,
                    Deny,
                    Allow,
                ),
                differ(
                    "fin-subject-limit-below",
                    f("transfer", 100, json!({"amount": 500, "risk_score": "low"}), none.clone()),
                    Allow,
                    Allow,
                    Deny,
                ),
                differ(
                    "fin-subject-limit-above",
                    f("transfer", 5000, json!({"amount": 2000, "risk_score": "low"}), none),
                    Deny,
                    Deny,
                    Allow,
                ),
            ]
        }
        Model::Security => {
            // The reference's geofence `forbid` reads `country` on every
            // request (an error without it), so the cases carry one.
            let raw = |action: &str, subject: Value, trust: i64, object: Value, attributes: Value| {
                context(action, Some("alice"), subject, trust, &[], object, attributes, json!([]))
            };
            let sec = |action: &str, subject: Value, trust: i64, object: Value, mut attributes: Value| {
                if attributes.get("country").is_none() {
                    attributes["country"] = json!("de");
                }
                raw(action, subject, trust, object, attributes)
            };
            let cleared = || json!({"clearance": 2});
            let doc = || json!({"classification": 1});
            vec![
                same("cleared, trusted", sec("read", cleared(), 90, doc(), json!({})), true),
                same("untrusted", sec("read", cleared(), 30, doc(), json!({})), false),
                differ(
                    "sec-trust-between-50-and-80",
                    sec("read", cleared(), 60, doc(), json!({})),
                    Deny,
                    Deny,
                    Allow,
                ),
                differ(
                    "sec-clearance-below",
                    sec("read", json!({"clearance": 1}), 90, json!({"classification": 3}), json!({})),
                    Allow,
                    Allow,
                    Deny,
                ),
                differ(
                    "sec-suspended",
                    sec("read", json!({"clearance": 2, "suspended": true}), 90, doc(), json!({})),
                    Allow,
                    Allow,
                    Deny,
                ),
                differ(
                    "sec-min-trust",
                    sec("read", cleared(), 90, json!({"classification": 1, "min_trust": 95}), json!({})),
                    Allow,
                    Allow,
                    Deny,
                ),
                differ(
                    "sec-missing-clearance",
                    sec("read", json!({}), 90, doc(), json!({})),
                    Allow,
                    Allow,
                    Deny,
                ),
                differ(
                    "sec-admin-config-change",
                    sec("config_change", cleared(), 10, doc(), json!({"role": "admin"})),
                    Allow,
                    Allow,
                    Deny,
                ),
                differ(
                    "sec-missing-country",
                    raw("read", cleared(), 90, doc(), json!({})),
                    Allow,
                    Error,
                    Allow,
                ),
                differ(
                    "sec-geofence",
                    sec("read", cleared(), 90, doc(), json!({"country": "restricted_country"})),
                    Allow,
                    Deny,
                    Allow,
                ),
            ]
        }
    }
}

// ---------------------------------------------------------------------------
// The reference's files

/// The reference's `kest/core/policies`, from `$KEST_REF_PYTHON`. Fails (never
/// skips) when the variable is unset, Python cannot import `kest`, or a
/// policy file is missing.
fn reference_dir() -> PathBuf {
    let Some(python) = std::env::var_os("KEST_REF_PYTHON") else {
        panic!(
            "KEST_REF_PYTHON is not set: run ./scripts/test, which installs the reference into a venv \
             and points KEST_REF_PYTHON at its python"
        );
    };
    // `kest` is a namespace package in the reference (no `kest/__init__.py`,
    // so `kest.__file__` is `None`): ask the policies package itself. Not
    // from the crate directory either, since Python puts the working
    // directory first on `sys.path` and `crates/kest` would join the
    // namespace package.
    let out = Command::new(&python)
        .current_dir(std::env::temp_dir())
        .args(["-c", "import kest.core.policies as p, os; print(os.path.dirname(p.__file__))"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run KEST_REF_PYTHON={}: {e}", python.to_string_lossy()));
    assert!(
        out.status.success(),
        "KEST_REF_PYTHON={} cannot import kest.core.policies: {}",
        python.to_string_lossy(),
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let mut missing = Vec::new();
    for model in Model::ALL {
        for ext in ["rego", "cedar"] {
            let file = dir.join(format!("{}.{ext}", model.name()));
            if !file.is_file() {
                missing.push(file.display().to_string());
            }
        }
    }
    if !dir.join("advanced").is_dir() {
        missing.push(dir.join("advanced").display().to_string());
    }
    assert!(missing.is_empty(), "the reference's policy files are missing: {}", missing.join(", "));
    dir
}

/// The reference's files for `model` with `ext`: the top-level one and, if
/// present, `advanced/`'s.
fn files(dir: &Path, model: Model, ext: &str) -> Vec<PathBuf> {
    [dir.to_path_buf(), dir.join("advanced")]
        .into_iter()
        .map(|d| d.join(format!("{}.{ext}", model.name())))
        .filter(|f| f.is_file())
        .collect()
}

fn label(dir: &Path, file: &Path) -> String {
    file.strip_prefix(dir).unwrap_or(file).display().to_string()
}

fn rego_engine(text: &str) -> Result<RegoEngine, PolicyError> {
    RegoEngine::builder().rego_v0(true).policy(REF_REGO, text).build()
}

/// The reference's Cedar text under the action's name: our request action
/// is `Action::"<policy name>"`.
fn cedar_engine(text: &str, action: &str) -> Result<CedarEngine, PolicyError> {
    CedarEngine::new([(action, text)])
}

/// The request action for the reference's Cedar: the context's action (as
/// the reference's own policy tests send it).
fn cedar_action(ctx: &Value) -> String {
    get(ctx, &["action"]).and_then(Value::as_str).unwrap_or("execute").to_owned()
}

// ---------------------------------------------------------------------------
// The README table

/// The rows of "Differences from the reference's policies": id →
/// (reference Rego, reference Cedar, ours), as written.
fn readme_rows() -> Vec<(String, [String; 3])> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/README.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find("## Differences from the reference's policies")
        .expect("policies/README.md has no section \"Differences from the reference's policies\"");
    let section = &text[start..];
    let section = section[3..].find("\n## ").map_or(section, |end| &section[..end + 3]);
    section
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split('|').map(str::trim).collect();
            // | `id` | model | input | reference Rego | reference Cedar | ours | why |
            let id = cols.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            if cols.len() < 8 {
                return None;
            }
            let d = |i: usize| cols[i].trim_matches('*').to_owned();
            Some((id.to_owned(), [d(4), d(5), d(6)]))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The test

#[test]
fn reference_policies_differential() {
    let dir = reference_dir();
    let rows = readme_rows();
    let mut failures: Vec<String> = Vec::new();
    let mut findings: Vec<String> = Vec::new();
    let mut documented: BTreeSet<&str> = BTreeSet::new();

    for model in Model::ALL {
        let cases = cases(model);

        // Ours: both engines, from the plain §6.1 context.
        for case in &cases {
            for engine in [EngineKind::Rego, EngineKind::Cedar] {
                let got = Out::of(library::evaluate(model, engine, &case.context));
                let ok = match case.expect {
                    Expect::Same(allow) => got != Out::Error && got.allows() == allow,
                    Expect::Differ { ours, .. } => got == ours,
                };
                if !ok {
                    failures.push(format!("{model} / {} / ours ({engine}): {got}", case.name));
                }
            }
        }

        // Theirs, Rego.
        let mut checked_rego = 0;
        for file in files(&dir, model, "rego") {
            let text = std::fs::read_to_string(&file).unwrap();
            let engine = match rego_engine(&text) {
                Ok(engine) => engine,
                Err(e) => {
                    findings.push(format!(
                        "{} does not compile in our Rego engine (v0): {e}",
                        label(&dir, &file)
                    ));
                    continue;
                }
            };
            for case in &cases {
                let (input, _) = reference_input(model, &case.context);
                let got = Out::of(engine.evaluate_json(REF_REGO, &input));
                let ok = match case.expect {
                    Expect::Same(allow) => got.allows() == allow,
                    Expect::Differ { reference_rego, .. } => got == reference_rego,
                };
                if !ok {
                    failures.push(format!(
                        "{model} / {} / {}: {got} on {input}",
                        case.name,
                        label(&dir, &file)
                    ));
                }
                checked_rego += 1;
            }
        }

        // Theirs, Cedar.
        let mut checked_cedar = 0;
        for file in files(&dir, model, "cedar") {
            let text = std::fs::read_to_string(&file).unwrap();
            if let Err(e) = cedar_engine(&text, "execute") {
                findings.push(format!("{} does not parse in our Cedar engine: {e}", label(&dir, &file)));
                continue;
            }
            for case in &cases {
                let (_, ctx) = reference_input(model, &case.context);
                let action = cedar_action(&case.context);
                let engine = cedar_engine(&text, &action).unwrap();
                let got = Out::of(engine.evaluate_json(&action, &ctx));
                let ok = match case.expect {
                    Expect::Same(allow) => got.allows() == allow,
                    Expect::Differ { reference_cedar, .. } => got == reference_cedar,
                };
                if !ok {
                    failures.push(format!(
                        "{model} / {} / {} (Action::\"{action}\"): {got} on {ctx}",
                        case.name,
                        label(&dir, &file)
                    ));
                }
                checked_cedar += 1;
            }
        }
        assert!(
            checked_rego > 0 && checked_cedar > 0,
            "{model}: no reference decision checked (Rego {checked_rego}, Cedar {checked_cedar})"
        );

        // The README states every difference, with these decisions.
        for case in &cases {
            let Expect::Differ { id, reference_rego, reference_cedar, ours } = case.expect else {
                continue;
            };
            documented.insert(id);
            let expected = [reference_rego.to_string(), reference_cedar.to_string(), ours.to_string()];
            match rows.iter().find(|(row, _)| row == id) {
                None => failures.push(format!("policies/README.md has no row `{id}`")),
                Some((_, cols)) if *cols != expected => failures.push(format!(
                    "policies/README.md row `{id}` says {cols:?}, the engines say {expected:?}"
                )),
                Some(_) => {}
            }
        }
    }
    for (id, _) in &rows {
        if !documented.contains(id.as_str()) {
            failures.push(format!("policies/README.md row `{id}` has no difference case in this test"));
        }
    }

    for finding in &findings {
        eprintln!("finding: {finding}");
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// The reference's own `CedarLocalEngine` sends every request with
/// `Action::"execute"`, so its action-scoped permits (Bell-LaPadula, Biba,
/// financial, security's `config_change`) never apply there: a legitimate
/// read under the reference's Bell-LaPadula is denied.
#[test]
fn reference_cedar_under_execute_action() {
    let dir = reference_dir();
    let text = std::fs::read_to_string(dir.join("bell_lapadula.cedar")).unwrap();
    let ctx = json!({"action": "read", "subject": {"clearance": 3}, "object": {"classification": 0}});
    let as_read = cedar_engine(&text, "read").unwrap().evaluate_json("read", &ctx).unwrap();
    let as_execute = cedar_engine(&text, "execute").unwrap().evaluate_json("execute", &ctx).unwrap();
    assert_eq!((as_read, as_execute), (Decision::Allow, Decision::Deny));
}
