//! The reference README's quick start (ingest → fetch_external → validate)
//! with the in-process Cedar engine.
//!
//! Run: `cargo run -p kest --example quickstart_cedar --features cedar`

use std::sync::Arc;

use kest::identity::LocalEd25519Provider;
use kest::policy::cedar::CedarEngine;
use kest::{Kest, KestError, Lineage};
use kest_core::{KeySet, Signer as _, Verifier};

#[kest::verified(policy = "invoke", source_type = "internal")]
fn ingest_data(payload: &str) -> String {
    payload.trim().to_owned()
}

#[kest::verified(policy = "invoke", source_type = "internet", added_taints = ["unverified"])]
fn fetch_external(url: &str) -> String {
    format!("<html>contents of {url}</html>")
}

#[kest::verified(policy = "invoke", classification = "sanitizer", removed_taints = ["unverified"], trust_override = 90)]
fn validate(data: &str) -> bool {
    !data.is_empty()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let identity = Arc::new(LocalEd25519Provider::new()?);
    let engine =
        CedarEngine::new([("invoke", r#"permit(principal, action == Action::"invoke", resource);"#)])?;
    kest::configure(Kest::builder().identity(identity.clone()).engine(Arc::new(engine)).build()?);

    println!(
        "Quick start with Cedar: ingest → fetch_external → validate, each step allowed by the `invoke` policy."
    );
    println!(
        "\nRun — the three steps in one flow: internal data (trust 100), a web page (trust 10, taint \
         `unverified`), a sanitizer (removes the taint, trust override 90)"
    );
    let flow = Lineage::new();
    flow.enter(|| -> Result<(), KestError> {
        let data = ingest_data("  hello  ")?;
        println!("  ingest_data     allowed");
        let page = fetch_external("https://example.org")?;
        println!("  fetch_external  allowed");
        let valid = validate(&format!("{data} {page}"))?;
        println!("  validate        allowed (returned {valid})");
        Ok(())
    })?;

    let mut keys = KeySet::new();
    keys.insert(identity.principal(), identity.public_key().ok_or("no public key")?)?;
    let passport = Verifier::new(keys).semantic(true).verify_json(&flow.passport().to_json())?;
    println!(
        "\nThe passport, verified offline (signatures, links, recomputed trust and taints) — one signed entry per \
         step:"
    );
    for entry in passport.entries() {
        let p = entry.payload();
        println!("  {:<15} trust {:>3}  taints {:?}", p.operation, p.trust_score, p.taints);
    }
    assert_eq!(passport.len(), 3);
    assert_eq!(passport.entries()[2].payload().trust_score, 90);
    assert!(passport.entries()[2].payload().taints.is_empty());
    Ok(())
}
