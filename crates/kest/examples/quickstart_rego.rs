//! The reference README's quick start (ingest → fetch_external → validate)
//! with the in-process Rego engine, plus the step it exists for: `publish`
//! needs trust ≥ 70 past the root (`kest/allow`), so it is denied on raw web
//! data and allowed after validation.
//!
//! Run: `cargo run -p kest --example quickstart_rego --features rego`

use std::sync::Arc;

use kest::identity::LocalEd25519Provider;
use kest::policy::rego::RegoEngine;
use kest::{Kest, KestError, Lineage};

const ALLOW: &str = r#"
package kest.allow
import future.keywords
default allow := false
allow if {
    input.trust_score >= 70
    input.is_root == false
}
"#;

const OPEN: &str = "package kest.open\ndefault allow := true\n";

#[kest::verified(policy = "kest/open", source_type = "internal")]
fn ingest_data(payload: &str) -> String {
    payload.trim().to_owned()
}

#[kest::verified(policy = "kest/open", source_type = "internet", added_taints = ["unverified"])]
fn fetch_external(url: &str) -> String {
    format!("<html>contents of {url}</html>")
}

#[kest::verified(policy = "kest/open", classification = "sanitizer", removed_taints = ["unverified"], trust_override = 90)]
fn validate(data: &str) -> bool {
    !data.is_empty()
}

#[kest::verified(policy = "kest/allow")]
fn publish(text: &str) -> usize {
    text.len()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = RegoEngine::new([("kest/allow", ALLOW), ("kest/open", OPEN)])?;
    kest::configure(
        Kest::builder().identity(Arc::new(LocalEd25519Provider::new()?)).engine(Arc::new(engine)).build()?,
    );

    println!(
        "Quick start with Rego: ingest → fetch_external → validate; `publish` needs trust ≥ 70 past the root."
    );
    let flow = Lineage::new();
    flow.enter(|| -> Result<(), KestError> {
        let data = ingest_data("  hello  ")?;
        let page = fetch_external("https://example.org")?;
        println!("\nRun 1 — publish the raw web page (internet origin: trust 10, taint `unverified`); expected: denied");
        match publish(&page) {
            Err(KestError::Denied { policy, .. }) => {
                println!("  publish before validation: denied by {policy} (the call did not run, nothing recorded)")
            }
            other => {
                return Err(KestError::Config(kest::runtime::ConfigError::Invalid(format!(
                    "raw web data must not be published, got {other:?}"
                ))));
            }
        }
        println!(
            "\nRun 2 — validate (a sanitizer: removes `unverified`, trust override 90), then publish again; \
             expected: allowed"
        );
        validate(&format!("{data} {page}"))?;
        println!("  publish after validation: allowed, {} bytes", publish(&page)?);
        Ok(())
    })?;
    let passport = flow.passport();
    println!("\nThe passport — every step that ran, signed, in order (the denied publish has no entry):");
    for entry in passport.entries() {
        let p = entry.payload();
        println!("  {:<15} trust {:>3}  taints {:?}", p.operation, p.trust_score, p.taints);
    }
    assert_eq!(passport.len(), 4, "the denied publish is not recorded");
    Ok(())
}
