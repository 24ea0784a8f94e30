//! SPEC §11 benchmarks: raw Ed25519/SHA-256 floors against signing,
//! appending, recording and verifying realistic ~900-byte entries; ES256
//! (P-256) signing and verification for comparison.
//!
//! Run with `cargo bench -p kest-benches -- --noplot`; `scripts/bench-ratios`
//! turns the results into the §11 ratios.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signature, Signer as _};
use kest_benches::{draft, key_set, passport, signer, signing_input};
use kest_core::encoding::b64url_decode;
use kest_core::{KeySet, Passport, Signer, TrustRules, Verifier, sign_entry};
use sha2::{Digest, Sha256};

/// Entries in the passports verified and appended to.
const N: usize = 100;

struct Fixture {
    signer: kest_core::Ed25519Signer,
    keys: KeySet,
    passport: Passport,
    /// Signing input of a typical (non-root) entry.
    message: Vec<u8>,
    /// Its canonical payload (about 900 bytes).
    payload: Vec<u8>,
    /// `(signing input, signature)` of every entry.
    signed: Vec<(Vec<u8>, Signature)>,
}

fn fixture() -> Fixture {
    let signer = signer();
    let keys = key_set(&signer);
    let passport = passport(N, &signer).expect("fixture passport");
    let signed: Vec<(Vec<u8>, Signature)> = passport
        .entries()
        .iter()
        .map(|e| {
            let jws = e.jws();
            let sig = b64url_decode(jws.rsplit_once('.').unwrap().1).unwrap();
            let sig: [u8; 64] = sig.as_slice().try_into().unwrap();
            (signing_input(jws).as_bytes().to_vec(), Signature::from_bytes(&sig))
        })
        .collect();
    let typical = &passport.entries()[N / 2];
    let payload = kest_core::json::canonicalize(typical.payload()).unwrap();
    let message = signed[N / 2].0.clone();
    eprintln!(
        "fixture: {N} entries, typical payload {} B (JCS), signing input {} B, JWS {} B, passport JSON {} B",
        payload.len(),
        message.len(),
        typical.jws().len(),
        passport.to_json().len()
    );
    Fixture { signer, keys, passport, message, payload, signed }
}

fn raw(c: &mut Criterion, f: &Fixture) {
    let sk = f.signer.signing_key();
    let vk = sk.verifying_key();
    let mut g = c.benchmark_group("raw");
    g.bench_function("ed25519_sign_900B", |b| b.iter(|| sk.sign(black_box(&f.message))));
    let sig = sk.sign(&f.message);
    g.bench_function("ed25519_verify_strict_900B", |b| {
        b.iter(|| vk.verify_strict(black_box(&f.message), black_box(&sig)).unwrap())
    });
    let messages: Vec<&[u8]> = f.signed.iter().map(|(m, _)| m.as_slice()).collect();
    let signatures: Vec<Signature> = f.signed.iter().map(|(_, s)| *s).collect();
    let keys = vec![vk; f.signed.len()];
    g.bench_function("ed25519_verify_batch_100", |b| {
        b.iter(|| ed25519_dalek::verify_batch(black_box(&messages), &signatures, &keys).unwrap())
    });
    g.bench_function("sha256_900B", |b| b.iter(|| Sha256::digest(black_box(&f.payload))));
    g.finish();
}

fn entry(c: &mut Criterion, f: &Fixture) {
    let rules = TrustRules::default();
    let next = draft(N);
    let prepared = f.passport.prepare(&next, f.signer.principal(), &rules).unwrap();
    let mut g = c.benchmark_group("entry");
    // Canonicalize + sign + append a prepared entry (Passport::prepare
    // excluded). The passport clone is set-up; it is returned so that its
    // drop is not timed either.
    g.bench_function("sign_append", |b| {
        b.iter_batched(
            || (f.passport.clone(), prepared.clone()),
            |(mut p, e)| {
                let signed = sign_entry(e, &f.signer).unwrap();
                p.append(signed).unwrap();
                p
            },
            BatchSize::SmallInput,
        )
    });
    // prepare + canonicalize + sign + append, end to end.
    g.bench_function("record", |b| {
        b.iter_batched(
            || f.passport.clone(),
            |mut p| {
                p.record(black_box(&next), &f.signer, &rules).unwrap();
                p
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn verify(c: &mut Criterion, f: &Fixture) {
    let unverified = f.passport.to_unverified();
    let plain = Verifier::new(f.keys.clone());
    let semantic = Verifier::new(f.keys.clone()).semantic(true);
    let vk = f.signer.signing_key().verifying_key();
    let mut g = c.benchmark_group("verify");
    g.bench_function("passport_100", |b| b.iter(|| plain.verify(black_box(&unverified)).unwrap()));
    g.bench_function("passport_100_semantic", |b| {
        b.iter(|| semantic.verify(black_box(&unverified)).unwrap())
    });
    g.bench_function("single_strict_x100", |b| {
        b.iter(|| {
            for (message, sig) in &f.signed {
                vk.verify_strict(black_box(message), sig).unwrap();
            }
        })
    });
    g.finish();
}

/// Where verification and signing time goes (not part of the SPEC ratios).
fn parts(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("parts");
    let jws: Vec<&str> = f.passport.entries().iter().map(|e| e.jws()).collect();
    g.bench_function("decode_compact_x100", |b| {
        b.iter(|| {
            for j in &jws {
                kest_core::jws::decode_compact(black_box(j), 64).unwrap();
            }
        })
    });
    let typical = f.passport.entries()[N / 2].payload();
    g.bench_function("jcs_canonicalize_entry", |b| {
        b.iter(|| kest_core::json::canonicalize(black_box(typical)).unwrap())
    });
    // What the verifier's signature pre-check costs per entry: decompress
    // R, re-compress it to compare encodings, small-order test.
    let r = curve25519_dalek::edwards::CompressedEdwardsY(*f.signed[N / 2].1.r_bytes());
    g.bench_function("r_decompress_compress", |b| {
        b.iter(|| {
            let point = black_box(r).decompress().unwrap();
            (point.compress() == r, point.is_small_order())
        })
    });
    g.finish();
}

/// ES256 (P-256, RFC 6979 signing, `PublicKey::verify`) on the same typical
/// signing input, and a 100-entry ES256 passport, to compare with the
/// Ed25519 figures of `raw` and `verify`.
fn es256(c: &mut Criterion, f: &Fixture) {
    let signer = kest_core::Es256Signer::from_scalar(kest_benches::PRINCIPAL, [0x5a; 32]).unwrap();
    let key = signer.public_key().unwrap();
    let mut g = c.benchmark_group("es256");
    g.bench_function("sign_900B", |b| b.iter(|| signer.sign(black_box(&f.message)).unwrap()));
    let sig = signer.sign(&f.message).unwrap();
    g.bench_function("verify_900B", |b| {
        b.iter(|| key.verify(black_box(&f.message), black_box(&sig)).unwrap())
    });
    let rules = TrustRules::default();
    let mut p = Passport::new();
    for i in 0..N {
        p.record(&draft(i), &signer, &rules).unwrap();
    }
    let mut keys = KeySet::new();
    keys.insert(kest_benches::PRINCIPAL, key).unwrap();
    let verifier = Verifier::new(keys);
    let unverified = p.to_unverified();
    g.bench_function("passport_100", |b| b.iter(|| verifier.verify(black_box(&unverified)).unwrap()));
    g.finish();
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    raw(c, &f);
    es256(c, &f);
    entry(c, &f);
    verify(c, &f);
    parts(c, &f);
}

criterion_group! {
    name = core;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(core);
