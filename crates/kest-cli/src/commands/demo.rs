//! `kest demo`: an AI-agent pipeline under Kest, on embedded defaults (local
//! keys, in-process Rego and Cedar, in-memory decision cache; no servers).
//!
//! A user's question is ingested, then a knowledge base is consulted and a
//! web page fetched (untrusted, tainted) in parallel branches, an "LLM"
//! summarises both (a fan-in), a sanitizer scrubs the
//! taint under a trust override, and `send_email` is guarded by Rego and
//! Cedar policies needing trust ≥ 50 and no `confidential` taint. The run is
//! done twice: once the guard allows; once a confidential document makes it
//! deny, and the e-mail is never sent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use clap::Args;
use kest::identity::{IdentityProvider, LocalEd25519Provider};
use kest::policy::cedar::{CedarEngine, bundled_cedar};
use kest::policy::rego::{RegoEngine, bundled_rego};
use kest::policy::{Decision, PolicyEngine, PolicyError, PolicyInput, RoutedEngine};
use kest::{CallContext, HookError, Kest, KestError, Lineage, Verified};
use kest_core::{Classification, KeySet, Passport, Verifier};

use super::viz::{nodes_of, render_tree};
use crate::render::picture::{Picture, Refused};
use crate::{CliError, Exit};

/// The chain-level requirement the demo checks (`kest verify --require`).
const SANITIZED_EMAIL: &str = include_str!("../../../../policies/requirements/sanitized_email.rego");

/// The files `kest demo` writes into its output directory.
pub const OUTPUT_FILES: [&str; 6] = [
    "passport.json",
    "passport-denied.json",
    "jwks.json",
    "require-sanitized-email.rego",
    "lineage.html",
    "lineage-denied.html",
];

/// The `send_email` guard, as the demo's Rego and Cedar policies state it.
const MIN_TRUST: u8 = 50;
/// The taint the `send_email` guard refuses.
const FORBIDDEN_TAINT: &str = "confidential";

/// Arguments of `kest demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for passport.json, passport-denied.json, jwks.json, require-sanitized-email.rego,
    /// lineage.html and lineage-denied.html (default: a fresh directory under the system temp dir,
    /// printed at the end). Refused if it already holds any of them, unless --force.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// With --out: overwrite the demo's files if the directory already has them.
    #[arg(long, requires = "out")]
    pub force: bool,
    /// Also export the spans of every run (one trace per run) for `kest audit`: `file` writes
    /// OTLP JSON lines to spans.jsonl, `sqlite` the SQLite span store spans.db.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub export: Option<ExportFormat>,
}

/// Where `kest demo --export` writes the spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// OTLP JSON lines (`spans.jsonl`), the Collector's file-exporter format.
    File,
    /// The SQLite span store (`spans.db`).
    Sqlite,
}

impl ExportFormat {
    /// The file name in the output directory.
    pub fn file_name(self) -> &'static str {
        match self {
            ExportFormat::File => "spans.jsonl",
            ExportFormat::Sqlite => "spans.db",
        }
    }

    fn exporter(self, path: PathBuf) -> kest::telemetry::Exporter {
        match self {
            ExportFormat::File => kest::telemetry::Exporter::File(path),
            ExportFormat::Sqlite => kest::telemetry::Exporter::Sqlite(path),
        }
    }
}

/// Runs `body` inside a root span named `name`, so every hook span of the
/// run shares its trace (a no-op without an installed tracer provider).
fn in_trace<T>(name: &'static str, body: impl FnOnce() -> T) -> T {
    use opentelemetry::trace::{TraceContextExt as _, Tracer as _};
    let tracer = opentelemetry::global::tracer("kest.demo");
    let cx = opentelemetry::Context::current_with_span(tracer.start(name));
    let _attached = cx.clone().attach();
    let out = body();
    cx.span().end();
    out
}

/// What a policy saw about the subject of a call it did not allow: the
/// trust score and taints the entry would have had.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    trust: u8,
    taints: Vec<String>,
}

/// The demo's engine, remembering the subject of every evaluation that did
/// not allow (by the entry id the call would have had), so a denial can say
/// which condition failed.
#[derive(Debug)]
struct Witness {
    inner: RoutedEngine,
    refused: Mutex<HashMap<String, Seen>>,
}

impl Witness {
    fn seen(&self, entry_id: &str) -> Option<Seen> {
        self.refused.lock().unwrap_or_else(PoisonError::into_inner).get(entry_id).cloned()
    }
}

impl PolicyEngine for Witness {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn evaluate(&self, policy: &str, input: &PolicyInput) -> Result<Decision, PolicyError> {
        let decision = self.inner.evaluate(policy, input);
        if !matches!(decision, Ok(Decision::Allow)) {
            let context = input.context();
            let seen = Seen { trust: context.subject.trust_score, taints: context.subject.taints.clone() };
            self.refused
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(context.environment.entry_id.clone(), seen);
        }
        decision
    }
}

/// Which condition of the `send_email` guard (trust ≥ 50, no `confidential`
/// taint) the context fails, e.g. "trust 36 < 50; taint `confidential`
/// present".
fn guard_failures(seen: &Seen) -> String {
    let mut failed = Vec::new();
    if seen.trust < MIN_TRUST {
        failed.push(format!("trust {} < {MIN_TRUST}", seen.trust));
    }
    if seen.taints.iter().any(|t| t == FORBIDDEN_TAINT) {
        failed.push(format!("taint `{FORBIDDEN_TAINT}` present"));
    }
    if failed.is_empty() {
        // Not the guard's conditions (e.g. an enterprise policy refused).
        return format!("trust {} and taints [{}] meet the guard", seen.trust, seen.taints.join(", "));
    }
    failed.join("; ")
}

/// The subject a policy saw for `step` in `flow` when no evaluation was
/// witnessed (a cached decision): the would-be entry's trust and taints,
/// from its parents (the flow's tips) the way the hook computes them for a
/// step that declares no origin and adds no taint, as `send_email` here.
fn seen_from_tips(flow: &Lineage) -> Seen {
    flow.with_passport(|passport| {
        let tips: Vec<&Arc<kest_core::Entry>> =
            passport.tips().iter().filter_map(|h| passport.get(h)).collect();
        let trust = tips.iter().map(|e| e.payload().trust_score).min().unwrap_or(100);
        let taints =
            kest_core::accumulate_taints(tips.iter().map(|e| e.payload().taints.as_slice()), &[], &[]);
        Seen { trust, taints }
    })
}

struct Actors {
    agent: Arc<dyn IdentityProvider>,
    web: Arc<dyn IdentityProvider>,
    sanitizer: Arc<dyn IdentityProvider>,
}

fn provider(id: &str) -> Result<Arc<dyn IdentityProvider>, CliError> {
    Ok(Arc::new(LocalEd25519Provider::with_workload_id(id).map_err(CliError::from_display)?))
}

fn runtime(actors: &Actors) -> Result<(Arc<Kest>, Arc<Witness>), CliError> {
    let rego = RegoEngine::new(bundled_rego()).map_err(CliError::from_display)?;
    let cedar = CedarEngine::new(bundled_cedar()).map_err(CliError::from_display)?;
    let engine = RoutedEngine::new().route("rego", Arc::new(rego)).route("cedar", Arc::new(cedar));
    let witness = Arc::new(Witness { inner: engine, refused: Mutex::new(HashMap::new()) });
    let kest = Kest::builder()
        .identity(Arc::clone(&actors.agent))
        .engine(Arc::clone(&witness) as Arc<dyn PolicyEngine>)
        .enterprise_policies(["rego:kest/no_pii_egress"])
        .build()
        .map_err(CliError::from_display)?;
    Ok((Arc::new(kest), witness))
}

/// One pipeline step: the hook and who signs it.
struct Step {
    hook: Verified,
    identity: Arc<dyn IdentityProvider>,
    note: &'static str,
}

/// The pipeline in stages; the steps of one stage run as parallel branches
/// (fan-out) and the next stage joins them (fan-in).
fn stages(actors: &Actors, confidential: bool) -> Result<Vec<Vec<Step>>, CliError> {
    let cfg = |e: kest::runtime::ConfigError| CliError(e.to_string());
    let mut retrieve =
        Verified::builder("retrieve_knowledge").policy("cedar:invoke").source_type("verified_rag");
    if confidential {
        retrieve = retrieve.added_taint("confidential");
    }
    Ok(vec![
        vec![Step {
            hook: Verified::builder("ingest_question")
                .policy("cedar:invoke")
                .source_type("user_input")
                .build()
                .map_err(cfg)?,
            identity: Arc::clone(&actors.agent),
            note: "the user's question",
        }],
        vec![
            Step {
                hook: retrieve.build().map_err(cfg)?,
                identity: Arc::clone(&actors.agent),
                note: if confidential { "a CONFIDENTIAL design document" } else { "the public FAQ" },
            },
            Step {
                hook: Verified::builder("fetch_web_page")
                    .policy("cedar:invoke")
                    .source_type("internet")
                    .added_taint("unverified")
                    .build()
                    .map_err(cfg)?,
                identity: Arc::clone(&actors.web),
                note: "a page from the open web",
            },
        ],
        vec![Step {
            hook: Verified::builder("summarise")
                .policy("cedar:invoke")
                .source_type("llm")
                .build()
                .map_err(cfg)?,
            identity: Arc::clone(&actors.agent),
            note: "an LLM drafts the answer",
        }],
        vec![Step {
            hook: Verified::builder("sanitize")
                .policy("rego:kest/allow")
                .classification(Classification::Sanitizer)
                .removed_taint("unverified")
                .trust_override(80)
                .build()
                .map_err(cfg)?,
            identity: Arc::clone(&actors.sanitizer),
            note: "fact-checked and scrubbed",
        }],
        vec![Step {
            hook: Verified::builder("send_email")
                .policies(["rego:kest/send_email", "cedar:send_email"])
                .build()
                .map_err(cfg)?,
            identity: Arc::clone(&actors.agent),
            note: "e-mail the answer to the user",
        }],
    ])
}

/// Runs one step in `flow` and prints it; the refusal when a policy refused
/// it (the step did not run, so the passport has no entry for it).
fn run_step(
    kest: &Arc<Kest>,
    witness: &Witness,
    flow: &Lineage,
    number: &str,
    step: &Step,
) -> Result<Option<Refused>, CliError> {
    let call = CallContext::new().runtime(kest).identity(Arc::clone(&step.identity)).agent("support-agent");
    let result = flow.enter(|| step.hook.call(call, || Ok::<_, std::convert::Infallible>(step.note)));
    let policies = step.hook.policies().join(" + ");
    match result {
        Ok(_) => {
            let passport = flow.passport();
            let Some(entry) = passport.entries().last() else {
                return Err(CliError("the hook recorded nothing".into()));
            };
            let p = entry.payload();
            println!(
                "  {number} ✓ {:<19} {:<31} trust {:>3}  taints [{}]",
                step.hook.operation(),
                entry.principal(),
                p.trust_score,
                p.taints.join(", ")
            );
            println!("        {} — allowed by {policies}", step.note);
            Ok(None)
        }
        Err(HookError::Kest(e @ (KestError::Denied { .. } | KestError::PolicyFailed { .. }))) => {
            let (policy, tier) = e.policy().unwrap_or(("?", kest::policy::Tier::Function));
            // Why, from what the guard saw — not the error's text, which
            // names the entry id the call would have had: it never ran.
            let (reason, why) = match &e {
                KestError::Denied { entry_id, .. } => {
                    let seen = witness.seen(entry_id).unwrap_or_else(|| seen_from_tips(flow));
                    let failed = guard_failures(&seen);
                    let why = format!(
                        "{failed} (the guard needs trust ≥ {MIN_TRUST} and no `{FORBIDDEN_TAINT}` taint; it saw \
                         trust {}, taints [{}])",
                        seen.trust,
                        seen.taints.join(", ")
                    );
                    (failed, why)
                }
                KestError::PolicyFailed { source, .. } => {
                    ("not evaluable".to_owned(), format!("the policy could not be evaluated: {source}"))
                }
                _ => ("refused".to_owned(), e.to_string()),
            };
            println!(
                "  {number} ✗ {:<19} DENIED by {policy} ({tier} tier): the step did not run",
                step.hook.operation()
            );
            println!("        why: {why}");
            Ok(Some(Refused {
                operation: step.hook.operation().to_owned(),
                reason: Some(format!("denied by {policy} ({tier} tier): {reason}")),
            }))
        }
        Err(HookError::Kest(e)) => Err(CliError(format!("{}: {e}", step.hook.operation()))),
        Err(HookError::Operation(never)) => match never {},
    }
}

/// Runs the pipeline once; returns the flow and the refused step, if one
/// was (the run stops there).
fn run_pipeline(
    kest: &Arc<Kest>,
    witness: &Witness,
    actors: &Actors,
    confidential: bool,
) -> Result<(Lineage, Option<Refused>), CliError> {
    let flow = Lineage::new().with_user("alice@example.com");
    for (i, stage) in stages(actors, confidential)?.iter().enumerate() {
        if let [step] = stage.as_slice() {
            if let Some(refused) = run_step(kest, witness, &flow, &format!("{}.", i + 1), step)? {
                return Ok((flow, Some(refused)));
            }
            continue;
        }
        // Parallel branches: each forks the flow; the next step joins them.
        let mut branches = Vec::with_capacity(stage.len());
        for (j, step) in stage.iter().enumerate() {
            let branch = flow.fork();
            let number = format!("{}{}", i + 1, char::from(b'a' + u8::try_from(j).unwrap_or(0)));
            if let Some(refused) = run_step(kest, witness, &branch, &number, step)? {
                return Ok((flow, Some(refused)));
            }
            branches.push(branch);
        }
        flow.join(&branches);
    }
    Ok((flow, None))
}

/// Run 3: four-eyes approval decided from the lineage (the `kest/financial`
/// model, in Rego and in Cedar): alice's transfer above her limit is denied
/// alone and when she approves it herself, allowed once bob approved the
/// same payment earlier in the flow. Returns the decisions, in order.
fn run_four_eyes(kest: &Arc<Kest>) -> Result<Vec<bool>, CliError> {
    let cfg = |e: kest::runtime::ConfigError| CliError(e.to_string());
    let approve =
        Verified::builder("approve_payment").policy("cedar:invoke").action("approve").build().map_err(cfg)?;
    let mut decisions = Vec::new();
    for (label, approver) in
        [("alone", None), ("approved by herself", Some("alice")), ("approved by bob", Some("bob"))]
    {
        for engine in ["rego", "cedar"] {
            let transfer = Verified::builder("transfer")
                .policy(format!("{engine}:kest/financial"))
                .action("transfer")
                .build()
                .map_err(cfg)?;
            let flow = Lineage::new();
            if let Some(user) = approver {
                let call = CallContext::new().runtime(kest).user(user).resource_id("payment-17");
                flow.enter(|| approve.call(call, || Ok::<_, std::convert::Infallible>(())))
                    .map_err(|e| CliError(format!("approve_payment: {e}")))?;
            }
            let call = CallContext::new()
                .runtime(kest)
                .user("alice")
                .resource_id("payment-17")
                .subject_attributes(
                    serde_json::json!({"limit": 1000}).as_object().cloned().unwrap_or_default(),
                )
                .attribute("amount", 5000)
                .attribute("risk_score", "low");
            let allowed = match flow.enter(|| transfer.call(call, || Ok::<_, std::convert::Infallible>(()))) {
                Ok(()) => true,
                Err(HookError::Kest(KestError::Denied { .. })) => false,
                Err(HookError::Kest(e)) => return Err(CliError(format!("transfer: {e}"))),
                Err(HookError::Operation(never)) => match never {},
            };
            println!(
                "  {} transfer of 5000 by alice (limit 1000), {label:<20} {engine:<5} → {}",
                if allowed { "✓" } else { "✗" },
                if allowed { "allowed" } else { "DENIED (four eyes)" }
            );
            decisions.push(allowed);
        }
    }
    Ok(decisions)
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text).map_err(|e| CliError(format!("{}: {e}", path.display())))
}

/// Runs `kest demo`.
pub fn run(args: &DemoArgs) -> Result<Exit, CliError> {
    let spans_file = args.export.map(ExportFormat::file_name);
    let out = match &args.out {
        Some(dir) => {
            let existing: Vec<&str> = OUTPUT_FILES
                .iter()
                .copied()
                .chain(spans_file)
                .filter(|name| std::fs::symlink_metadata(dir.join(name)).is_ok())
                .collect();
            if !existing.is_empty() && !args.force {
                return Err(CliError(format!(
                    "{} already has {}: refusing to overwrite (pass --force to replace them, or choose another \
                     --out)",
                    dir.display(),
                    existing.join(", ")
                )));
            }
            std::fs::create_dir_all(dir).map_err(|e| CliError(format!("{}: {e}", dir.display())))?;
            dir.clone()
        }
        None => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default();
            let dir = std::env::temp_dir().join(format!("kest-demo-{stamp}-{}", std::process::id()));
            std::fs::create_dir(&dir).map_err(|e| CliError(format!("{}: {e}", dir.display())))?;
            dir
        }
    };
    let actors = Actors {
        agent: provider("spiffe://kest.demo/agent")?,
        web: provider("spiffe://kest.demo/web-fetcher")?,
        sanitizer: provider("spiffe://kest.demo/sanitizer")?,
    };
    let (kest, witness) = runtime(&actors)?;
    let telemetry = match args.export {
        None => None,
        Some(format) => {
            let path = out.join(format.file_name());
            // --force: a fresh store, not the previous run's spans and these.
            for stale in [path.clone(), path.with_extension("db-wal"), path.with_extension("db-shm")] {
                match std::fs::remove_file(&stale) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(CliError(format!("{}: {e}", stale.display())));
                    }
                    _ => {}
                }
            }
            let guard = kest::telemetry::init("kest-demo", [format.exporter(path.clone())])
                .map_err(|e| CliError(format!("--export: {e}")))?;
            Some((guard, path))
        }
    };

    println!("Kest demo: an AI support agent answers alice@example.com by e-mail.");
    println!(
        "Every step is policy-checked (in-process Rego and Cedar) before it runs, then signed into the passport.\n"
    );
    println!("Run 1 — public sources:");
    let (allowed, refused) = in_trace("kest.demo.run1", || run_pipeline(&kest, &witness, &actors, false))?;
    if refused.is_some() {
        return Err(CliError("run 1 should have sent the e-mail".into()));
    }
    println!("\nRun 2 — the knowledge base returns a confidential document:");
    let (denied, refused) = in_trace("kest.demo.run2", || run_pipeline(&kest, &witness, &actors, true))?;
    if refused.is_none() {
        return Err(CliError("run 2 should have been denied".into()));
    }

    println!("\nRun 3 — four eyes, decided from the lineage (kest/financial, Rego and Cedar):");
    if in_trace("kest.demo.run3", || run_four_eyes(&kest))? != [false, false, false, false, true, true] {
        return Err(CliError("run 3: the four-eyes rule did not decide as expected".into()));
    }

    let mut keys = KeySet::new();
    for a in [&actors.agent, &actors.web, &actors.sanitizer] {
        let key = a.public_key().ok_or_else(|| CliError("a local key has no public key".into()))?;
        keys.insert(a.principal(), key).map_err(CliError::from_display)?;
    }
    let passport_path = out.join("passport.json");
    let denied_path = out.join("passport-denied.json");
    let jwks_path = out.join("jwks.json");
    write(&passport_path, &allowed.passport().to_json())?;
    write(&denied_path, &denied.passport().to_json())?;
    write(&jwks_path, &serde_json::to_string_pretty(&keys.to_jwks()).map_err(CliError::from_display)?)?;

    let verifier = Verifier::new(keys).semantic(true);
    let verified: Passport = verifier
        .verify_json(&allowed.passport().to_json())
        .map_err(|e| CliError(format!("the demo's own passport does not verify: {e}")))?;
    let verified_denied = verifier
        .verify_json(&denied.passport().to_json())
        .map_err(|e| CliError(format!("the denied run's passport does not verify: {e}")))?;
    println!(
        "\nVerified offline (signatures, links, recomputed trust and taints): {} in run 1, {} in run 2.",
        crate::render::count(verified.len(), "entry", "entries"),
        crate::render::count(denied.passport().len(), "entry", "entries")
    );
    println!("\nThe passport of run 1 as a DAG:");
    print!("{}", render_tree(&nodes_of(&verified)));

    // A chain-level guard over the whole verified passport: the e-mail
    // needs a sanitizer ancestor signed by the sanitizer's key.
    let requirement_path = out.join("require-sanitized-email.rego");
    write(&requirement_path, SANITIZED_EMAIL)?;
    let engine = kest::policy::rego::RegoEngine::new([("sanitized_email", SANITIZED_EMAIL)])
        .map_err(CliError::from_display)?;
    let decision = engine
        .evaluate_json("sanitized_email", &super::verify::requirement_input(&verified))
        .map_err(CliError::from_display)?;
    if !decision.is_allow() {
        return Err(CliError("run 1 should satisfy the sanitized-email requirement".into()));
    }
    println!(
        "\nChain-level requirement {}: every send_email has a sanitizer ancestor signed by {} — satisfied.",
        requirement_path.display(),
        actors.sanitizer.principal()
    );
    println!("\nWrote {}, {} and {}", passport_path.display(), denied_path.display(), jwks_path.display());
    // The pictures: run 1 verified; run 2 with the refused call as a ghost.
    let lineage_path = out.join("lineage.html");
    let lineage_denied_path = out.join("lineage-denied.html");
    write(&lineage_path, &Picture::verified(&verified).html())?;
    write(&lineage_denied_path, &Picture::verified(&verified_denied).with_refused(refused).html())?;
    println!(
        "Wrote the lineage pictures (open in a browser, no network needed): {} (run 1) and {} (run 2, the \
         refused send_email drawn as a denied node)",
        lineage_path.display(),
        lineage_denied_path.display()
    );
    println!(
        "Check it yourself: kest verify --semantic --keys {} --require {} {}",
        jwks_path.display(),
        requirement_path.display(),
        passport_path.display()
    );
    if let Some((guard, path)) = telemetry {
        guard.shutdown().map_err(|e| CliError(format!("--export: flushing the spans: {e}")))?;
        println!(
            "Wrote the spans of the three runs (one trace each) to {}; audit them: kest audit --keys {} {}",
            path.display(),
            jwks_path.display(),
            path.display()
        );
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::{Seen, guard_failures};

    fn seen(trust: u8, taints: &[&str]) -> Seen {
        Seen { trust, taints: taints.iter().map(|t| (*t).to_owned()).collect() }
    }

    #[test]
    fn the_denial_names_each_failed_condition() {
        assert_eq!(guard_failures(&seen(36, &[])), "trust 36 < 50");
        assert_eq!(guard_failures(&seen(80, &["confidential"])), "taint `confidential` present");
        assert_eq!(
            guard_failures(&seen(4, &["confidential", "unverified"])),
            "trust 4 < 50; taint `confidential` present"
        );
        assert_eq!(
            guard_failures(&seen(50, &["unverified"])),
            "trust 50 and taints [unverified] meet the guard"
        );
    }
}
