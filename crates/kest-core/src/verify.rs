//! The strict verifier (SPEC §3).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signature, VerifyingKey};

use crate::cache::{CacheKey, VerifiedEntryCache};
use crate::entry::{
    Classification, KestEntry, LABEL_SOURCE_TYPE, LABEL_TRUST_EVALUATOR, LABEL_TRUST_OVERRIDE, ROOT_PARENT,
};
use crate::error::{EntryError, Segment, VerifyError};
use crate::hash::EntryHash;
use crate::jws::decode_compact;
use crate::keyset::{KeySet, PublicKey};
use crate::passport::{Entry, Limits, Passport, UnverifiedPassport};
use crate::resolve::{KeyResolver, ResolveError};
use crate::trust::{
    MISSING_ROOT_ORIGIN_SCORE, MISSING_SELF_SCORE, OriginMap, TrustEvaluator, WEAKEST_LINK, WeakestLink,
    accumulate_taints,
};

/// Verifies passports against a key set or a [`KeyResolver`].
///
/// Every entry is decoded once, its structure, algorithm, `kid`, signer
/// and links are checked in order, and the signatures of all entries before
/// the first refusal are then checked with `verify_strict` (cofactorless;
/// small-order or non-canonical `R`, non-canonical `s` refused; weak and
/// mixed-order keys are refused when the key set is built), spread over
/// the available cores for larger passports. A refused signature is then
/// examined to name the defect. Signatures are not batch-verified: batching
/// cannot keep the strict semantics cheaply (see `first_bad_signature`).
/// The error reported is always the one a one-by-one verifier would report
/// first. There is no mode that skips a signature.
///
/// ```
/// use kest_core::{Ed25519Signer, EntryDraft, ErrorKind, KeySet, Passport, Signer, TrustRules, Verifier};
/// let signer = Ed25519Signer::from_seed("spiffe://demo/a", [3u8; 32]);
/// let mut p = Passport::new();
/// p.record(&EntryDraft::new("step"), &signer, &TrustRules::default()).unwrap();
///
/// let verifier = Verifier::new(KeySet::new()); // signer unknown
/// let err = verifier.verify_json(&p.to_json()).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::UnknownSigner);
/// assert_eq!(err.index(), Some(0));
/// ```
#[derive(Clone)]
pub struct Verifier {
    resolver: Arc<dyn KeyResolver>,
    /// The static key set, when built with [`Verifier::new`].
    key_set: Option<Arc<KeySet>>,
    semantic: bool,
    limits: Limits,
    origins: OriginMap,
    /// Principals allowed to raise trust; `None` = any marked escalation.
    sanitizers: Option<Arc<BTreeSet<String>>>,
    strict_origins: bool,
    cache: Option<Arc<VerifiedEntryCache>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("key_set", &self.key_set)
            .field("resolver", &if self.key_set.is_some() { "static key set" } else { "custom" })
            .field("semantic", &self.semantic)
            .field("limits", &self.limits)
            .field("origins", &self.origins)
            .field("sanitizers", &self.sanitizers)
            .field("strict_origins", &self.strict_origins)
            .field("cache", &self.cache)
            .finish()
    }
}

/// Keys resolved during one `verify` call: each principal is asked once.
type ResolvedKeys = HashMap<String, Result<Option<PublicKey>, ResolveError>>;

/// From this many signatures on, strict verification is spread over the
/// available cores.
const PARALLEL_THRESHOLD: usize = 32;

/// A signature waiting for the strict check.
struct PendingSignature<'a> {
    index: usize,
    message: &'a [u8],
    signature: Signature,
    key: VerifyingKey,
    principal: String,
    cache_key: CacheKey,
}

impl Verifier {
    /// A verifier for this key set with default limits and semantic checks
    /// off.
    pub fn new(keys: KeySet) -> Verifier {
        let keys = Arc::new(keys);
        Verifier { key_set: Some(keys.clone()), ..Verifier::with_resolver(keys) }
    }

    /// A verifier that asks `resolver` for each signer's key (SPEC §8: key
    /// rotation, refreshed JWKS, trust bundles), once per principal per
    /// [`Verifier::verify`] call. A resolver error rejects the entry
    /// (`key_unavailable`); a missing key rejects it (`unknown_signer`).
    pub fn with_resolver(resolver: Arc<dyn KeyResolver>) -> Verifier {
        Verifier {
            resolver,
            key_set: None,
            semantic: false,
            limits: Limits::default(),
            origins: OriginMap::default(),
            sanitizers: None,
            strict_origins: false,
            cache: None,
        }
    }

    /// Turns the semantic (lineage over assertion) checks on or off.
    pub fn semantic(mut self, on: bool) -> Verifier {
        self.semantic = on;
        self
    }

    /// Replaces the size limits.
    pub fn limits(mut self, limits: Limits) -> Verifier {
        self.limits = limits;
        self
    }

    /// Origins known to the semantic checks (defaults plus deployment ones).
    pub fn origins(mut self, origins: OriginMap) -> Verifier {
        self.origins = origins;
        self
    }

    /// Restricts who may raise trust (SPEC §3): with this set, every
    /// *escalation* — an entry whose `trust_score` exceeds the minimum of
    /// its parents' scores, or at a root the score of its origin
    /// (`kest.source_type` in the verifier's [`OriginMap`]; 10 when it has
    /// no origin or an unknown one) — signed by a principal outside the set
    /// is rejected (`trust_escalation`), whether it is marked by the
    /// override label or the `sanitizer` classification or not at all.
    /// Lowering trust is always allowed. An empty set forbids every
    /// escalation. Without this call a marked escalation is accepted.
    ///
    /// Checked only with [`Verifier::semantic`] on.
    pub fn sanitizers<I, S>(mut self, principals: I) -> Verifier
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.sanitizers = Some(Arc::new(principals.into_iter().map(Into::into).collect()));
        self
    }

    /// Rejects a root whose `kest.source_type` label names an origin
    /// unknown to the verifier's [`OriginMap`] (`unknown_origin`); a label
    /// that is not a string counts as unknown. Unlabelled roots stay
    /// unconstrained. Off by default.
    ///
    /// Checked only with [`Verifier::semantic`] on.
    pub fn strict_origins(mut self, on: bool) -> Verifier {
        self.strict_origins = on;
        self
    }

    /// Shares a verified-entry cache (SPEC §11): an entry whose (hash, key)
    /// is in it skips only its `verify_strict` call; every other rule still
    /// runs on the whole passport, and the signer's key is still resolved
    /// (a key no longer returned fails the entry). Entries whose signature
    /// was checked are added after a successful verification only.
    pub fn entry_cache(mut self, cache: Arc<VerifiedEntryCache>) -> Verifier {
        self.cache = Some(cache);
        self
    }

    /// Where this verifier finds signers' keys.
    pub fn resolver(&self) -> &Arc<dyn KeyResolver> {
        &self.resolver
    }

    /// The static key set, when the verifier was built with
    /// [`Verifier::new`] (`None` with [`Verifier::with_resolver`]).
    pub fn key_set(&self) -> Option<&KeySet> {
        self.key_set.as_deref()
    }

    /// Parses and verifies a serialized passport.
    pub fn verify_json(&self, text: &str) -> Result<Passport, VerifyError> {
        let unverified = UnverifiedPassport::from_json(text, &self.limits)?;
        self.verify(&unverified)
    }

    /// Verifies every entry; returns the verified passport or the first
    /// error (with the entry index).
    pub fn verify(&self, passport: &UnverifiedPassport) -> Result<Passport, VerifyError> {
        let jws_list = passport.entries();
        if jws_list.len() > self.limits.max_entries {
            return Err(crate::error::PassportError::TooManyEntries {
                count: jws_list.len(),
                limit: self.limits.max_entries,
            }
            .into());
        }
        // Positions of every entry by hash, to tell a dangling parent from
        // one that is merely out of order (and to spot duplicates).
        let hashes: Vec<EntryHash> = jws_list.iter().map(|j| EntryHash::of(j)).collect();
        let mut first_position: HashMap<EntryHash, usize> = HashMap::with_capacity(hashes.len());
        for (i, h) in hashes.iter().enumerate() {
            first_position.entry(*h).or_insert(i);
        }

        let mut verified = Passport::new();
        let mut pending: Vec<PendingSignature<'_>> = Vec::with_capacity(jws_list.len());
        let mut first_error: Option<VerifyError> = None;
        let mut resolved = ResolvedKeys::new();

        for ((index, jws), hash) in jws_list.iter().enumerate().zip(hashes.iter().copied()) {
            match self.check_entry(index, jws, hash, &first_position, &verified, &mut resolved) {
                Ok((entry, sig)) => {
                    pending.push(sig);
                    // Cannot fail: duplicates and parents were checked above.
                    if let Err(e) = verified.push(Arc::new(entry)) {
                        first_error = Some(VerifyError::Entry {
                            index,
                            source: EntryError::DanglingParent(e.to_string()),
                        });
                        break;
                    }
                }
                Err(source) => {
                    first_error = Some(VerifyError::Entry { index, source });
                    break;
                }
            }
        }
        // Signatures this cache has seen verified under the same key need
        // not be checked again; everything else above ran regardless.
        if let Some(cache) = &self.cache {
            pending.retain(|p| !cache.check(&p.cache_key));
        }
        // Signatures of entries before the first structural error decide
        // first: a one-by-one verifier would have stopped at them.
        if let Some(bad) = first_bad_signature(&pending) {
            return Err(bad);
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if let Some(cache) = &self.cache {
            for p in &pending {
                cache.insert(p.cache_key);
            }
        }
        Ok(verified)
    }

    fn check_entry<'a>(
        &self,
        index: usize,
        jws: &'a str,
        hash: EntryHash,
        first_position: &HashMap<EntryHash, usize>,
        verified: &Passport,
        resolved: &mut ResolvedKeys,
    ) -> Result<(Entry, PendingSignature<'a>), EntryError> {
        if jws.len() > self.limits.max_entry_bytes {
            return Err(EntryError::TooLarge { size: jws.len(), limit: self.limits.max_entry_bytes });
        }
        let decoded = decode_compact(jws, self.limits.max_json_depth)?;
        let payload = KestEntry::from_json(decoded.payload)
            .map_err(|source| EntryError::Field { segment: Segment::Payload, source })?;
        let principal = payload.principal().to_owned();

        // Cryptographic preconditions: signer known, alg fixed by key type,
        // kid consistent.
        let key = match resolved
            .entry(principal.clone())
            .or_insert_with(|| self.resolver.resolve(&principal))
            .clone()
        {
            Ok(Some(key)) => key,
            Ok(None) => return Err(EntryError::UnknownSigner(principal)),
            Err(source) => return Err(EntryError::KeyUnavailable { principal, source }),
        };
        if decoded.header.alg != key.allowed_alg() {
            return Err(EntryError::AlgorithmNotAllowed {
                alg: decoded.header.alg.clone(),
                principal,
                allowed: key.allowed_alg(),
            });
        }
        if let Some(kid) = &decoded.header.kid
            && *kid != principal
        {
            return Err(EntryError::KidMismatch { kid: kid.clone(), principal });
        }
        let cache_key = CacheKey::new(hash, &key);
        let PublicKey::Ed25519(vk) = key;
        // The signing input is everything before the last `.` (decoding
        // checked there are exactly three segments).
        let message =
            jws.rsplit_once('.').map(|(input, _)| input.as_bytes()).ok_or(EntryError::SegmentCount(1))?;
        debug_assert_eq!(message.len(), decoded.signing_input_len);
        let raw: [u8; 64] = decoded
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| EntryError::SignatureLength(decoded.signature.len()))?;
        let signature = Signature::from_bytes(&raw);

        // Linkage.
        if let Some(&first) = first_position.get(&hash)
            && first < index
        {
            return Err(EntryError::DuplicateEntry(first));
        }
        let parents = self.check_links(index, &payload, first_position)?;

        let entry = Entry { jws: jws.to_owned(), hash, header: decoded.header, payload, parents };
        if self.semantic {
            self.check_semantics(&entry, verified)?;
        }
        let sig = PendingSignature {
            index,
            message,
            signature,
            key: vk,
            principal: entry.principal().to_owned(),
            cache_key,
        };
        Ok((entry, sig))
    }

    fn check_links(
        &self,
        index: usize,
        payload: &KestEntry,
        first_position: &HashMap<EntryHash, usize>,
    ) -> Result<Vec<EntryHash>, EntryError> {
        let ids = &payload.parent_ids;
        if ids.is_empty() {
            return Err(EntryError::EmptyParents);
        }
        if ids.iter().any(|p| p == ROOT_PARENT) {
            return if ids.len() == 1 { Ok(Vec::new()) } else { Err(EntryError::MixedRootSentinel) };
        }
        let mut parents = Vec::with_capacity(ids.len());
        for id in ids {
            let hash: EntryHash = id.parse().map_err(|_| EntryError::MalformedParent(id.clone()))?;
            if parents.contains(&hash) {
                return Err(EntryError::DuplicateParent(id.clone()));
            }
            match first_position.get(&hash) {
                Some(&at) if at < index => {}
                Some(&at) => {
                    return Err(EntryError::ParentOutOfOrder { parent: id.clone(), parent_index: at });
                }
                None => return Err(EntryError::DanglingParent(id.clone())),
            }
            parents.push(hash);
        }
        Ok(parents)
    }

    fn check_semantics(&self, entry: &Entry, verified: &Passport) -> Result<(), EntryError> {
        let payload = &entry.payload;
        let parents: Vec<&Arc<Entry>> = entry.parents.iter().filter_map(|p| verified.get(p)).collect();

        let expected = accumulate_taints(
            parents.iter().map(|p| p.payload.taints.as_slice()),
            &payload.added_taints,
            &payload.removed_taints,
        );
        let found: BTreeSet<&str> = payload.taints.iter().map(String::as_str).collect();
        if !found.iter().copied().eq(expected.iter().map(String::as_str)) {
            let mut found_sorted: Vec<String> = payload.taints.clone();
            found_sorted.sort();
            return Err(EntryError::TaintMismatch { expected, found: found_sorted });
        }

        let parent_scores: Vec<u8> = parents.iter().map(|p| p.payload.trust_score).collect();
        if self.strict_origins
            && entry.is_root()
            && let Some(raw) = payload.labels.get(LABEL_SOURCE_TYPE)
            && raw.as_str().and_then(|o| self.origins.score(o)).is_none()
        {
            let name = raw.as_str().map_or_else(|| raw.to_string(), str::to_owned);
            return Err(EntryError::UnknownOrigin(name));
        }
        self.check_trust(entry, &parent_scores)?;
        self.check_escalation(entry, &parent_scores)
    }

    /// Only principals in the sanitizer set (when there is one) may raise
    /// trust above the baseline.
    fn check_escalation(&self, entry: &Entry, parent_scores: &[u8]) -> Result<(), EntryError> {
        let Some(sanitizers) = &self.sanitizers else { return Ok(()) };
        let payload = &entry.payload;
        let baseline = match parent_scores.iter().copied().min() {
            Some(min) => min,
            None => payload
                .label(LABEL_SOURCE_TYPE)
                .and_then(|o| self.origins.score(o))
                .unwrap_or(MISSING_ROOT_ORIGIN_SCORE),
        };
        if payload.trust_score > baseline && !sanitizers.contains(entry.principal()) {
            return Err(EntryError::UnauthorizedEscalation {
                principal: entry.principal().to_owned(),
                found: payload.trust_score,
                baseline,
            });
        }
        Ok(())
    }

    /// The trust-score rules of SPEC §3 (override label, recomputation,
    /// the bound for entries that cannot be recomputed).
    fn check_trust(&self, entry: &Entry, parent_scores: &[u8]) -> Result<(), EntryError> {
        let payload = &entry.payload;
        let score = payload.trust_score;
        if let Some(raw) = payload.labels.get(LABEL_TRUST_OVERRIDE) {
            let declared = raw
                .as_str()
                .and_then(|s| s.parse::<u8>().ok().filter(|v| *v <= 100 && v.to_string() == s))
                .ok_or_else(|| EntryError::Field {
                    segment: Segment::Payload,
                    source: crate::error::FieldError::Invalid {
                        name: format!("labels.{LABEL_TRUST_OVERRIDE}"),
                        reason: format!("{raw} is not a decimal score 0..=100"),
                    },
                })?;
            return expect(score, declared, "the trust override label");
        }
        let evaluator = payload.label(LABEL_TRUST_EVALUATOR);
        let weakest = matches!(evaluator, None | Some(WEAKEST_LINK));
        let origin = payload.label(LABEL_SOURCE_TYPE);
        let origin_score = origin.and_then(|o| self.origins.score(o));
        // Recompute when the entry says how its score was obtained with the
        // default evaluator: a known origin, or (our writer) the evaluator
        // label with no origin at all.
        let recomputable = weakest && (origin_score.is_some() || (evaluator.is_some() && origin.is_none()));
        if recomputable {
            return if entry.is_root() {
                expect(score, origin_score.unwrap_or(MISSING_ROOT_ORIGIN_SCORE), "the origin map at a root")
            } else {
                let expected =
                    WeakestLink.calculate(origin_score.unwrap_or(MISSING_SELF_SCORE), parent_scores);
                expect(score, expected, "weakest-link propagation")
            };
        }
        if let Some(parent_min) = parent_scores.iter().copied().min()
            && score > parent_min
            && payload.classification != Classification::Sanitizer
        {
            return Err(EntryError::TrustEscalation { found: score, parent_min });
        }
        Ok(())
    }
}

fn expect(found: u8, expected: u8, rule: &'static str) -> Result<(), EntryError> {
    if found == expected { Ok(()) } else { Err(EntryError::TrustMismatch { expected, found, rule }) }
}

/// Names why `verify_strict` refused a signature when the encoding itself is
/// at fault (it is only consulted after a refusal, since `verify_strict`
/// makes the same checks): a non-reduced `s`, and an `R` that is
/// not a canonical encoding of a point or is of small order.
fn precheck_signature(signature: &Signature, principal: &str) -> Result<(), EntryError> {
    let malformed = |reason| EntryError::MalformedSignature { principal: principal.to_owned(), reason };
    if Option::<Scalar>::from(Scalar::from_canonical_bytes(*signature.s_bytes())).is_none() {
        return Err(malformed("scalar s is not reduced"));
    }
    let r = CompressedEdwardsY(*signature.r_bytes());
    let point = r.decompress().ok_or_else(|| malformed("R is not a curve point"))?;
    if point.compress() != r {
        return Err(malformed("R is not canonically encoded"));
    }
    if point.is_small_order() {
        return Err(malformed("R has small order"));
    }
    Ok(())
}

/// Verifies the pending signatures one by one with `verify_strict`
/// (cofactorless, no small-order `R` or key) and returns the first bad one.
///
/// Not `ed25519_dalek::verify_batch`: its random-weight equation is
/// cofactorless, so a signature whose defect `R - sB + hA` is a torsion
/// point (a torsion component in `R`, which the signer can choose) drops out
/// of the sum whenever the torsion order divides its weight — half the time
/// for order 2, and the weights are derived from the passport, so they can
/// be ground. Batching would then accept entries `verify_strict` refuses,
/// and whether an entry verifies would depend on its neighbours. Ruling
/// that out needs a prime-order-subgroup check of every `R`, which costs
/// more than the batch saves (tests/batch_strictness.rs).
fn first_bad_signature(pending: &[PendingSignature<'_>]) -> Option<VerifyError> {
    let bad = |p: &PendingSignature<'_>| p.key.verify_strict(p.message, &p.signature).is_err();
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(8);
    let first = if threads < 2 || pending.len() < PARALLEL_THRESHOLD {
        pending.iter().find(|p| bad(p))
    } else {
        // Strict verification is independent per entry: split the work over
        // the cores and keep the lowest failing index, as one-by-one would.
        let chunk = pending.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> =
                pending.chunks(chunk).map(|part| scope.spawn(move || part.iter().find(|p| bad(p)))).collect();
            // A worker cannot panic (verify_strict does not), but if one did
            // its chunk would be unverified: treat that chunk's first entry
            // as bad rather than accept.
            workers
                .into_iter()
                .zip(pending.chunks(chunk))
                .find_map(|(w, part)| w.join().unwrap_or_else(|_| part.first()))
        })
    };
    // Name the defect: a malformed encoding, or simply a wrong signature.
    first.map(|p| VerifyError::Entry {
        index: p.index,
        source: precheck_signature(&p.signature, &p.principal)
            .err()
            .unwrap_or_else(|| EntryError::BadSignature(p.principal.clone())),
    })
}
