//! SPEC §11 "multi-hop verification is O(new entries) per hop": a 100-hop
//! chain through 5 services (round robin), each service verifying the whole
//! passport it receives — all rules, semantic checks on — then signing its
//! own entry. Measured twice in one run: without and with a
//! [`VerifiedEntryCache`] per service, against the cost of one strict
//! signature verification.
//!
//! `cargo run --release -p kest-benches --bin multi-hop-verify [ROUNDS]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use kest_core::{
    Ed25519Signer, EntryDraft, KeySet, Passport, Signer, TrustRules, UnverifiedPassport, VerifiedEntryCache,
    Verifier,
};

const SERVICES: usize = 5;
const HOPS: usize = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(5), |a| a.parse())?;
    let signers: Vec<Ed25519Signer> = (0..SERVICES)
        .map(|i| {
            Ed25519Signer::from_seed(format!("spiffe://bench/svc{i}"), [u8::try_from(i).unwrap_or(0) + 1; 32])
        })
        .collect();
    let mut keys = KeySet::new();
    for s in &signers {
        keys.insert(s.principal(), s.public_key().ok_or("no public key")?)?;
    }
    // What each hop receives: the passport of the hops before it.
    let rules = TrustRules::default();
    let mut passport = Passport::new();
    let mut received: Vec<String> = Vec::with_capacity(HOPS);
    for hop in 0..HOPS {
        received.push(passport.to_json());
        let mut draft = EntryDraft::new(format!("step_{hop}"));
        draft.source_type = (hop == 0).then(|| "internal".to_owned());
        passport.record(&draft, signers.get(hop % SERVICES).ok_or("signer")?, &rules)?;
    }
    let parsed: Vec<UnverifiedPassport> = received
        .iter()
        .map(|j| UnverifiedPassport::from_json(j, &Default::default()))
        .collect::<Result<_, _>>()?;

    // One strict verification, the unit of the target.
    let entries = passport.entries();
    let strict = {
        let start = Instant::now();
        let mut n = 0u32;
        for _ in 0..rounds {
            for e in entries {
                let jws = e.jws();
                let (input, sig) = jws.rsplit_once('.').ok_or("jws")?;
                let sig: [u8; 64] = kest_core::encoding::b64url_decode(sig)?.try_into().map_err(|_| "sig")?;
                let key = match keys.get(e.principal()).ok_or("key")? {
                    kest_core::PublicKey::Ed25519(k) => *k,
                    _ => return Err("only Ed25519 keys here".into()),
                };
                key.verify_strict(input.as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig))?;
                n += 1;
            }
        }
        start.elapsed() / n
    };

    let run = |cached: bool| -> Result<(Duration, usize), Box<dyn std::error::Error>> {
        let mut total = Duration::ZERO;
        let mut new_signatures = 0;
        for _ in 0..rounds {
            let verifiers: Vec<(Verifier, Arc<VerifiedEntryCache>)> = (0..SERVICES)
                .map(|_| {
                    let cache = Arc::new(VerifiedEntryCache::new(4096));
                    let v = Verifier::new(keys.clone()).semantic(true);
                    (if cached { v.entry_cache(cache.clone()) } else { v }, cache)
                })
                .collect();
            let start = Instant::now();
            for (hop, p) in parsed.iter().enumerate() {
                let (verifier, _) = verifiers.get(hop % SERVICES).ok_or("verifier")?;
                verifier.verify(p)?;
            }
            total += start.elapsed();
            new_signatures = verifiers.iter().map(|(_, c)| c.len()).sum();
        }
        Ok((total / u32::try_from(rounds)?, new_signatures))
    };
    let (without, _) = run(false)?;
    let (with, seen) = run(true)?;
    let per_hop = |d: Duration| d / u32::try_from(HOPS).unwrap_or(1);
    let all_signatures: usize = (0..HOPS).sum();
    println!(
        "multi-hop verification: {HOPS} hops through {SERVICES} services, semantic checks on, {rounds} rounds"
    );
    println!("  one strict signature verification:       {:>9.1} µs", strict.as_secs_f64() * 1e6);
    println!(
        "  without the verified-entry cache: {:>9.2} ms per chain, {:>7.1} µs per hop ({all_signatures} signature checks)",
        without.as_secs_f64() * 1e3,
        per_hop(without).as_secs_f64() * 1e6
    );
    println!(
        "  with the verified-entry cache:    {:>9.2} ms per chain, {:>7.1} µs per hop ({seen} signatures not seen before)",
        with.as_secs_f64() * 1e3,
        per_hop(with).as_secs_f64() * 1e6
    );
    let unit = strict.as_secs_f64() * f64::from(u32::try_from(seen)?);
    println!(
        "  speed-up {:.1}x; cached cost = {:.2}x the strict checks of the new signatures",
        without.as_secs_f64() / with.as_secs_f64(),
        with.as_secs_f64() / unit
    );
    Ok(())
}
