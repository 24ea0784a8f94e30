//! `kest policy list | eval | test` (SPEC §10, §12): the bundled policies,
//! one evaluation of a §6.1 context, and policy test cases kept as data.
//!
//! For the seven models of the policy library, `eval` and `test` apply the
//! library's derivation ([`kest::policy::library::prepare`]) first, so a
//! caller always supplies the plain §6.1 context.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use kest::policy::cedar::{CedarEngine, bundled_cedar};
use kest::policy::library::{self, EngineKind, Model};
use kest::policy::rego::{RegoEngine, bundled_rego};
use kest::policy::{Decision, PolicyError};
use serde_json::{Value, json};

use super::Format;
use crate::{CliError, Exit};

/// Arguments of `kest policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// The policy subcommand.
    #[command(subcommand)]
    pub command: PolicyCommand,
}

/// The `kest policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List the bundled policies, their engines and input contracts.
    List(ListArgs),
    /// Evaluate one policy on a context (exit 0 allow, 1 deny, 2 error).
    Eval(EvalArgs),
    /// Run policy test cases kept as data (`<model>.json` files in DIR).
    Test(TestArgs),
}

/// Arguments of `kest policy list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Arguments of `kest policy eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The engine: `rego` or `cedar`.
    #[arg(long)]
    pub engine: String,
    /// A bundled policy name (e.g. `kest/bell_lapadula`, or the bare model
    /// name), or a `.rego` / `.cedar` file.
    #[arg(long)]
    pub policy: String,
    /// The SPEC §6.1 context as a JSON file (`-` for stdin).
    #[arg(long)]
    pub input: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Arguments of `kest policy test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// A directory of `<model>.json` files, each an array of
    /// `{"name", "input", "expect": "allow"|"deny"}`.
    pub dir: PathBuf,
    /// Run on one engine only (default: both).
    #[arg(long)]
    pub engine: Option<String>,
}

/// Runs `kest policy`.
pub fn run(args: &PolicyArgs) -> Result<Exit, CliError> {
    match &args.command {
        PolicyCommand::List(a) => list(a),
        PolicyCommand::Eval(a) => eval(a),
        PolicyCommand::Test(a) => test(a),
    }
}

/// `(name, engines, model)` of every bundled policy, sorted by name.
fn bundled() -> Vec<(String, Vec<&'static str>, Option<Model>)> {
    let mut out: Vec<(String, Vec<&'static str>, Option<Model>)> = Vec::new();
    let all = bundled_rego()
        .into_iter()
        .map(|(n, _)| (n, "rego"))
        .chain(bundled_cedar().into_iter().map(|(n, _)| (n, "cedar")));
    for (name, engine) in all {
        match out.iter_mut().find(|(n, _, _)| n == name) {
            Some((_, engines, _)) => engines.push(engine),
            None => out.push((
                name.to_owned(),
                vec![engine],
                Model::from_policy_name(name).filter(|m| m.policy_name() == name),
            )),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn list(args: &ListArgs) -> Result<Exit, CliError> {
    let policies = bundled();
    match args.format {
        Format::Json => {
            let items: Vec<Value> = policies
                .iter()
                .map(|(name, engines, model)| {
                    json!({
                        "name": name,
                        "engines": engines,
                        "model": model.map(Model::name),
                        "rule": model.map(Model::rule),
                        "contract": model.map(|m| m.contract().lines().collect::<Vec<_>>()),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&items).map_err(CliError::from_display)?);
        }
        Format::Text => {
            for (name, engines, model) in &policies {
                println!("{name} [{}]", engines.join(", "));
                if let Some(model) = model {
                    println!("  rule: {}", model.rule());
                    println!("  input:");
                    for line in model.contract().lines() {
                        println!("    {line}");
                    }
                }
            }
        }
    }
    Ok(Exit::Ok)
}

fn engine_kind(name: &str) -> Result<EngineKind, CliError> {
    name.parse::<EngineKind>().map_err(CliError)
}

fn read_json(path: &Path) -> Result<Value, CliError> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).map_err(|e| CliError(format!("cannot read stdin: {e}")))?
    } else {
        std::fs::read_to_string(path).map_err(|e| CliError(format!("cannot read {}: {e}", path.display())))?
    };
    serde_json::from_str(&text).map_err(|e| CliError(format!("{} is not JSON: {e}", path.display())))
}

/// Evaluates `policy` (a bundled name or a file) on `context` with `engine`,
/// applying the model derivation when the policy is one of the models.
fn evaluate(
    engine: EngineKind,
    policy: &str,
    context: &Value,
) -> Result<Result<Decision, PolicyError>, CliError> {
    let path = Path::new(policy);
    let is_file = path.extension().is_some_and(|e| e == "rego" || e == "cedar") && path.is_file();
    if !is_file && let Some(model) = Model::from_policy_name(policy) {
        return Ok(library::evaluate(model, engine, context));
    }
    let model = if is_file {
        path.file_stem().and_then(|s| s.to_str()).and_then(Model::from_policy_name)
    } else {
        None
    };
    let prepared = model.map_or_else(|| context.clone(), |m| library::prepare(m, context));
    let loaded = |e: PolicyError| CliError(e.to_string());
    Ok(match engine {
        EngineKind::Rego => {
            let rego = if is_file {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| CliError(format!("cannot read {}: {e}", path.display())))?;
                RegoEngine::new([(policy, text)]).map_err(loaded)?
            } else {
                RegoEngine::new(bundled_rego()).map_err(loaded)?
            };
            rego.evaluate_json(policy, &prepared)
        }
        EngineKind::Cedar => {
            let cedar = if is_file {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| CliError(format!("cannot read {}: {e}", path.display())))?;
                CedarEngine::new([(policy, text)]).map_err(loaded)?
            } else {
                CedarEngine::new(bundled_cedar()).map_err(loaded)?
            };
            cedar.evaluate_json(policy, &prepared)
        }
        _ => return Err(CliError(format!("engine `{engine}` is not supported here"))),
    })
}

fn eval(args: &EvalArgs) -> Result<Exit, CliError> {
    let engine = engine_kind(&args.engine)?;
    let context = read_json(&args.input)?;
    let outcome = evaluate(engine, &args.policy, &context)?;
    let (decision, exit, reason) = match &outcome {
        Ok(Decision::Allow) => ("allow", Exit::Ok, "the policy allows".to_owned()),
        Ok(Decision::Deny) => ("deny", Exit::Invalid, "the policy does not allow".to_owned()),
        Err(e) => ("error", Exit::Usage, e.to_string()),
    };
    match args.format {
        Format::Json => {
            let report = json!({"policy": args.policy, "engine": engine.name(), "decision": decision, "reason": reason});
            println!("{}", serde_json::to_string_pretty(&report).map_err(CliError::from_display)?);
        }
        Format::Text => println!("{decision}: {reason} ({} on {})", args.policy, engine.name()),
    }
    if outcome.is_err() {
        eprintln!("kest: error: {reason}");
    }
    Ok(exit)
}

/// One test case: `{"name", "input", "expect"}` and nothing else.
#[derive(Debug)]
struct Case {
    name: String,
    input: Value,
    expect: String,
}

fn cases(file: &Path, json: Value) -> Result<Vec<Case>, CliError> {
    let bad = |why: String| CliError(format!("{}: {why}", file.display()));
    let Value::Array(items) = json else {
        return Err(bad("not a list of test cases".into()));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Value::Object(mut members) = item else {
            return Err(bad(format!("case {i} is not an object")));
        };
        if let Some(key) = members.keys().find(|k| !matches!(k.as_str(), "name" | "input" | "expect")) {
            return Err(bad(format!("case {i} has an unknown member `{key}`")));
        }
        let mut text = |key: &str| match members.remove(key) {
            Some(Value::String(s)) => Ok(s),
            _ => Err(bad(format!("case {i} has no string `{key}`"))),
        };
        let (name, expect) = (text("name")?, text("expect")?);
        let input = members.remove("input").ok_or_else(|| bad(format!("case {i} has no `input`")))?;
        out.push(Case { name, input, expect });
    }
    Ok(out)
}

fn test(args: &TestArgs) -> Result<Exit, CliError> {
    let engines: Vec<EngineKind> = match &args.engine {
        Some(name) => vec![engine_kind(name)?],
        None => EngineKind::ALL.to_vec(),
    };
    let unreadable = |e: std::io::Error| CliError(format!("cannot read {}: {e}", args.dir.display()));
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&args.dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(CliError(format!("no test files (*.json) in {}", args.dir.display())));
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in files {
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let model = Model::from_policy_name(stem)
            .ok_or_else(|| CliError(format!("{}: `{stem}` is not a policy model", file.display())))?;
        for case in cases(&file, read_json(&file)?)? {
            let expect = match case.expect.as_str() {
                "allow" => Decision::Allow,
                "deny" => Decision::Deny,
                other => {
                    return Err(CliError(format!(
                        "{} / {}: `expect` is `{other}`, not allow or deny",
                        file.display(),
                        case.name
                    )));
                }
            };
            for engine in &engines {
                let got = library::evaluate(model, *engine, &case.input);
                if got.as_ref().ok() == Some(&expect) {
                    passed += 1;
                } else {
                    failed += 1;
                    let got = match got {
                        Ok(Decision::Allow) => "allow".to_owned(),
                        Ok(Decision::Deny) => "deny".to_owned(),
                        Err(e) => format!("error ({e})"),
                    };
                    println!("FAIL {model} / {} [{engine}]: got {got}, expected {}", case.name, case.expect);
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { Exit::Ok } else { Exit::Invalid })
}
