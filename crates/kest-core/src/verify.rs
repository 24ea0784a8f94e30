//! The strict verifier (SPEC §3).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cache::{Cached, KeyId, VerifiedEntryCache};
use crate::encoding::b64url_decode;
use crate::entry::{
    Classification, KestEntry, LABEL_SOURCE_TYPE, LABEL_TRUST_EVALUATOR, LABEL_TRUST_OVERRIDE, ROOT_PARENT,
};
use crate::error::{EntryError, Segment, VerifyError};
use crate::hash::EntryHash;
use crate::jws::decode_compact;
use crate::keyset::{KeySet, PublicKey, SignatureError};
use crate::passport::{Entry, Limits, Passport, UnverifiedPassport};
use crate::pool;
use crate::resolve::{KeyResolver, ResolveError};
use crate::trust::{
    MISSING_ROOT_ORIGIN_SCORE, MISSING_SELF_SCORE, OriginMap, TrustEvaluator, WEAKEST_LINK, WeakestLink,
    accumulate_taints,
};

/// Verifies passports against a key set or a [`KeyResolver`].
///
/// Every entry is decoded once (or found in the verified-entry cache,
/// decoded from the same bytes under the same limits), spread over the
/// available cores; its structure, algorithm, `kid`, signer and links are
/// then checked in order, and every signature of the entries before the
/// first refusal is checked with [`PublicKey::verify`] — the algorithm is
/// fixed by the signer's key type (Ed25519 → `EdDSA`, P-256 → `ES256`, 64-byte
/// `r||s`, DER and out-of-range `r`/`s` refused). Ed25519 uses `verify_strict` (cofactorless; small-order
/// or non-canonical `R`, non-canonical `s` refused; weak and mixed-order
/// keys are refused when the key set is built) — with a static key set
/// while decoding, on all cores, with a resolver once the keys are
/// resolved in order. A refused signature is then examined to name the
/// defect. Signatures are not batch-verified: batching cannot keep the
/// strict semantics cheaply (see `check_pending`). The error reported is
/// always the one a one-by-one verifier would report first. There is no
/// mode that skips a signature, except one the cache saw verify under the
/// very key resolved now.
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
/// Every key valid for the principal (several during a rotation overlap).
type ResolvedKeys = HashMap<String, Result<Vec<PublicKey>, ResolveError>>;

/// Entries in the first wave of pass 1 (see [`Verifier::verify`]).
const FIRST_WAVE: usize = 128;

/// First positions of entries by hash, to tell a dangling parent from one
/// that is merely out of order (and to spot duplicates). Filled as the
/// entries are checked; the rest of the passport is hashed only when a
/// parent is not among the entries seen so far.
struct Positions<'a> {
    jws_list: &'a [String],
    first: HashMap<EntryHash, usize>,
    /// Entries below this index are recorded.
    filled: usize,
}

impl<'a> Positions<'a> {
    fn new(jws_list: &'a [String]) -> Positions<'a> {
        Positions { jws_list, first: HashMap::with_capacity(jws_list.len()), filled: 0 }
    }

    /// Records the entry at `index` (in order; already recorded is a no-op).
    fn record(&mut self, index: usize, hash: EntryHash) {
        if index >= self.filled {
            self.first.entry(hash).or_insert(index);
            self.filled = index + 1;
        }
    }

    /// The first position of `hash` in the whole passport.
    fn first(&mut self, hash: &EntryHash) -> Option<usize> {
        if let Some(&at) = self.first.get(hash) {
            return Some(at);
        }
        for (i, jws) in self.jws_list.iter().enumerate().skip(self.filled) {
            self.first.entry(EntryHash::of(jws)).or_insert(i);
        }
        self.filled = self.jws_list.len();
        self.first.get(hash).copied()
    }
}

/// An entry decoded in pass 1, or found in the entry cache.
struct Decoded {
    entry: Arc<Entry>,
    /// The key the cache saw this entry's signature verify under.
    cached_key: Option<KeyId>,
    /// The raw signature, or the length found when it is not 64 bytes
    /// (`None` for a cache hit: decoded again only if needed).
    signature: Option<Result<[u8; 64], usize>>,
    /// With a static key set: `verify_strict` already run in pass 1 with
    /// the set's key for the principal, and its outcome.
    checked: Option<(KeyId, bool)>,
}

/// Pass 1's result for one entry.
struct Prepared {
    hash: EntryHash,
    /// `None` when skipped because an earlier entry had already failed.
    decoded: Option<Result<Decoded, EntryError>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SignatureState {
    /// `verify_strict` still to run.
    Pending,
    Good,
    Bad,
}

/// The signature of an entry accepted by pass 2 (cache hits excepted).
struct SignatureCheck {
    index: usize,
    entry: Arc<Entry>,
    signature: [u8; 64],
    /// The key the signature is checked with first (after the check: the
    /// one it verified under, if any).
    key: PublicKey,
    key_id: KeyId,
    /// The other keys of the entry's algorithm resolved for its principal
    /// (a rotation overlap), tried when `key` does not verify.
    others: Vec<PublicKey>,
    state: SignatureState,
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

    /// Shares a verified-entry cache (SPEC §11): an entry whose exact bytes
    /// are in it, decoded under the same size and depth limits, is not
    /// decoded again, and skips its `verify_strict` call when the key
    /// resolved now for its principal is the one it verified under. Every
    /// other rule still runs on the whole passport — links, duplicates,
    /// `alg` and `kid` against the key resolved now, the semantic rules —
    /// and the signer's key is still resolved (a key no longer returned
    /// fails the entry). Entries are added after a successful verification
    /// only.
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
    ///
    /// Three passes, with the result of a one-by-one verifier:
    /// 1. every entry is hashed and decoded (structure, strict JSON,
    ///    RFC 8785, payload model) — or found in the entry cache, decoded
    ///    from the same bytes under the same limits — spread over the cores;
    ///    with a static key set its signature is checked there too;
    /// 2. in order, up to the first refusal: signer resolution, `alg`,
    ///    `kid`, signature length, duplicates, links, semantic rules;
    /// 3. the signatures of the entries accepted by pass 2 that were not
    ///    checked in pass 1 (nor found in the cache under the same key),
    ///    spread over the cores. The lowest bad signature before the first
    ///    refusal of pass 2 is reported first, then that refusal.
    ///
    /// Passes 1 and 2 run over waves of entries (128, then doubling), so a
    /// passport refused early costs little more than its accepted prefix.
    pub fn verify(&self, passport: &UnverifiedPassport) -> Result<Passport, VerifyError> {
        let jws_list = passport.entries();
        if jws_list.len() > self.limits.max_entries {
            return Err(crate::error::PassportError::TooManyEntries {
                count: jws_list.len(),
                limit: self.limits.max_entries,
            }
            .into());
        }
        let mut positions = Positions::new(jws_list);
        let mut verified = Passport::new();
        let mut signatures: Vec<SignatureCheck> = Vec::with_capacity(jws_list.len());
        let mut first_error: Option<VerifyError> = None;
        let mut resolved = ResolvedKeys::new();

        // Waves of entries (the first covers common passports whole, the
        // next ones double), so that a passport refused in pass 2 costs at
        // most one wave of work beyond its accepted prefix.
        let mut start = 0;
        'waves: while start < jws_list.len() {
            if signatures.iter().any(|s| s.state == SignatureState::Bad) {
                // A bad signature decides the result already.
                break;
            }
            let end = start.saturating_mul(2).max(FIRST_WAVE).min(jws_list.len());
            let wave = jws_list.get(start..end).unwrap_or_default();
            for ((index, jws), p) in (start..).zip(wave).zip(self.prepare(wave)) {
                positions.record(index, p.hash);
                let decoded = match p.decoded {
                    Some(d) => d,
                    // Skipped because an earlier entry failed in pass 1: a
                    // bad signature before it decides the result already;
                    // without one, decode it now rather than assume anything.
                    None if signatures.iter().any(|s| s.state == SignatureState::Bad) => break 'waves,
                    None => decode_entry(&self.limits, self.key_set.as_deref(), jws, p.hash),
                };
                let outcome = decoded.and_then(|d| {
                    self.check_entry(index, d, &mut positions, &verified, &mut resolved, &mut signatures)
                });
                match outcome {
                    Ok(entry) => {
                        // Cannot fail: duplicates and parents were checked above.
                        if let Err(e) = verified.push(entry) {
                            first_error = Some(VerifyError::Entry {
                                index,
                                source: EntryError::DanglingParent(e.to_string()),
                            });
                            break 'waves;
                        }
                    }
                    Err(source) => {
                        first_error = Some(VerifyError::Entry { index, source });
                        break 'waves;
                    }
                }
            }
            start = end;
        }
        // Signatures of entries before the first refusal decide first: a
        // one-by-one verifier would have stopped at them.
        check_pending(&mut signatures);
        if let Some(bad) = signatures.iter().find(|s| s.state == SignatureState::Bad) {
            return Err(VerifyError::Entry {
                index: bad.index,
                source: signature_error(
                    bad.key.verify(signing_input(bad.entry.jws()), &bad.signature).err(),
                    bad.entry.principal(),
                ),
            });
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if let Some(cache) = &self.cache {
            for s in signatures {
                cache.insert(s.entry, s.key_id, &self.limits);
            }
        }
        Ok(verified)
    }

    /// Pass 1 for `jws_list` (one wave of entries): hashes every entry and decodes it (or finds it in the cache), spread over
    /// the cores. Once an entry fails, later entries are only hashed.
    fn prepare(&self, jws_list: &[String]) -> Vec<Prepared> {
        let mut prepared: Vec<Option<Prepared>> = Vec::with_capacity(jws_list.len());
        let mut todo: Vec<usize> = Vec::new();
        for (i, jws) in jws_list.iter().enumerate() {
            match self.cache.as_ref().and_then(|c| c.get(jws, &self.limits)) {
                Some(Cached { entry, key }) => prepared.push(Some(Prepared {
                    hash: entry.hash(),
                    decoded: Some(Ok(Decoded {
                        entry,
                        cached_key: Some(key),
                        signature: None,
                        checked: None,
                    })),
                })),
                None => {
                    prepared.push(None);
                    todo.push(i);
                }
            }
        }
        // The index of the first entry known to fail.
        let stop = Arc::new(AtomicUsize::new(usize::MAX));
        let items: Vec<(usize, String)> =
            todo.iter().filter_map(|&i| Some((i, jws_list.get(i)?.clone()))).collect();
        // Decoding alone is ~7 µs an entry, with the signature ~45 µs.
        let min_parallel = if self.key_set.is_some() { 2 } else { 8 };
        let extra = if items.len() >= min_parallel { pool::threads() - 1 } else { 0 };
        let (limits, key_set) = (self.limits, self.key_set.clone());
        let shared_stop = stop.clone();
        let work = move |(i, jws): &(usize, String)| {
            let (i, stop) = (*i, &shared_stop);
            let hash = EntryHash::of(jws);
            let decoded = (i <= stop.load(Ordering::Acquire)).then(|| {
                let d = decode_entry(&limits, key_set.as_deref(), jws, hash);
                if !matches!(&d, Ok(Decoded { checked: None | Some((_, true)), .. })) {
                    stop.fetch_min(i, Ordering::AcqRel);
                }
                d
            });
            (i, Prepared { hash, decoded })
        };
        for (i, p) in pool::map(items, extra, work).into_iter().flatten() {
            if let Some(slot) = prepared.get_mut(i) {
                *slot = Some(p);
            }
        }
        // A hole (its helper panicked) is hashed here and decoded in pass 2.
        prepared
            .into_iter()
            .zip(jws_list)
            .map(|(p, jws)| p.unwrap_or_else(|| Prepared { hash: EntryHash::of(jws), decoded: None }))
            .collect()
    }

    /// Pass 2 for one entry: everything that depends on the key resolved
    /// now and on the rest of the passport.
    fn check_entry(
        &self,
        index: usize,
        decoded: Decoded,
        positions: &mut Positions<'_>,
        verified: &Passport,
        resolved: &mut ResolvedKeys,
        signatures: &mut Vec<SignatureCheck>,
    ) -> Result<Arc<Entry>, EntryError> {
        let Decoded { mut entry, cached_key, signature, checked } = decoded;
        let principal = entry.principal();

        // Cryptographic preconditions: signer known, alg fixed by key type,
        // kid consistent.
        let found = match resolved.get(principal) {
            Some(found) => found.clone(),
            None => {
                let found = self.resolver.resolve_all(principal);
                resolved.insert(principal.to_owned(), found.clone());
                found
            }
        };
        let keys = match found {
            Ok(keys) => keys,
            Err(source) => {
                return Err(EntryError::KeyUnavailable { principal: principal.to_owned(), source });
            }
        };
        let Some(first) = keys.first() else {
            return Err(EntryError::UnknownSigner(principal.to_owned()));
        };
        // The algorithm is fixed by key type: only keys of the entry's
        // algorithm are candidates (a rotation overlap may offer several).
        let mut candidates: Vec<PublicKey> = Vec::with_capacity(keys.len());
        for key in &keys {
            if entry.header.alg == key.allowed_alg() && !candidates.contains(key) {
                candidates.push(key.clone());
            }
        }
        if candidates.is_empty() {
            return Err(EntryError::AlgorithmNotAllowed {
                alg: entry.header.alg.clone(),
                principal: principal.to_owned(),
                allowed: first.allowed_alg(),
            });
        }
        if let Some(kid) = &entry.header.kid
            && kid != principal
        {
            return Err(EntryError::KidMismatch { kid: kid.clone(), principal: principal.to_owned() });
        }
        // The key the cache saw it verify under, else the one pass 1
        // checked (a static key set), else the first candidate.
        let position =
            |wanted: Option<KeyId>| wanted.and_then(|id| candidates.iter().position(|k| KeyId::of(k) == id));
        let cache_hit = position(cached_key).is_some();
        let primary = position(cached_key).or(position(checked.map(|(id, _)| id))).unwrap_or(0);
        let key = candidates.swap_remove(primary);
        let others = candidates;
        let key_id = KeyId::of(&key);
        let pending = if cache_hit {
            // These bytes verified under this very key before.
            None
        } else {
            let raw = match signature {
                Some(s) => s,
                None => signature_bytes(entry.jws())?,
            }
            .map_err(EntryError::SignatureLength)?;
            let state = match checked {
                Some((checked_with, true)) if checked_with == key_id => SignatureState::Good,
                // Refused under the only candidate; with others, try them.
                Some((checked_with, false)) if checked_with == key_id && others.is_empty() => {
                    SignatureState::Bad
                }
                _ => SignatureState::Pending,
            };
            Some((raw, key, others, state))
        };

        // Linkage.
        if let Some(first) = positions.first(&entry.hash)
            && first < index
        {
            return Err(EntryError::DuplicateEntry(first));
        }
        let parents = self.check_links(index, &entry.payload, positions)?;
        if parents != entry.parents {
            // Not reached (both come from the same list); keep the checked one.
            Arc::make_mut(&mut entry).parents = parents;
        }
        if self.semantic {
            self.check_semantics(&entry, verified)?;
        }
        if let Some(cache) = &self.cache {
            cache.count(cache_hit);
        }
        if let Some((signature, key, others, state)) = pending {
            signatures.push(SignatureCheck {
                index,
                entry: entry.clone(),
                signature,
                key,
                key_id,
                others,
                state,
            });
        }
        Ok(entry)
    }

    fn check_links(
        &self,
        index: usize,
        payload: &KestEntry,
        positions: &mut Positions<'_>,
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
            match positions.first(&hash) {
                Some(at) if at < index => {}
                Some(at) => {
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

/// The structural checks of one entry (a pure function of its bytes and
/// the limits) and, with a static key set, its signature against the
/// set's key for its principal.
fn decode_entry(
    limits: &Limits,
    key_set: Option<&KeySet>,
    jws: &str,
    hash: EntryHash,
) -> Result<Decoded, EntryError> {
    if jws.len() > limits.max_entry_bytes {
        return Err(EntryError::TooLarge { size: jws.len(), limit: limits.max_entry_bytes });
    }
    let decoded = decode_compact(jws, limits.max_json_depth)?;
    let payload = KestEntry::from_json(decoded.payload)
        .map_err(|source| EntryError::Field { segment: Segment::Payload, source })?;
    let signature: Result<[u8; 64], usize> =
        decoded.signature.as_slice().try_into().map_err(|_| decoded.signature.len());
    // Linkage is checked against the passport in pass 2; this is only
    // the parsed list.
    let parents = crate::passport::parse_parent_ids(&payload.parent_ids).unwrap_or_default();
    let entry = Arc::new(Entry { jws: Arc::from(jws), hash, header: decoded.header, payload, parents });
    let checked = match (key_set, &signature) {
        (Some(keys), Ok(raw)) => {
            keys.get(entry.principal()).filter(|key| entry.header.alg == key.allowed_alg()).map(|key| {
                let message = jws.get(..decoded.signing_input_len).unwrap_or_default().as_bytes();
                (KeyId::of(key), key.verify(message, raw).is_ok())
            })
        }
        _ => None,
    };
    Ok(Decoded { entry, cached_key: None, signature: Some(signature), checked })
}

fn expect(found: u8, expected: u8, rule: &'static str) -> Result<(), EntryError> {
    if found == expected { Ok(()) } else { Err(EntryError::TrustMismatch { expected, found, rule }) }
}

/// The raw signature of a compact JWS (its third segment), or the length
/// found when it is not 64 bytes.
fn signature_bytes(jws: &str) -> Result<Result<[u8; 64], usize>, EntryError> {
    let (_, s64) = jws.rsplit_once('.').ok_or(EntryError::SegmentCount(1))?;
    let raw = b64url_decode(s64).map_err(|_| EntryError::Base64(Segment::Signature))?;
    Ok(raw.as_slice().try_into().map_err(|_| raw.len()))
}

/// The entry error for a refused signature (`None`: refused earlier without
/// a reason, reported as a bad signature).
fn signature_error(error: Option<SignatureError>, principal: &str) -> EntryError {
    match error {
        Some(SignatureError::Length(n)) => EntryError::SignatureLength(n),
        Some(SignatureError::Malformed(reason)) => {
            EntryError::MalformedSignature { principal: principal.to_owned(), reason }
        }
        _ => EntryError::BadSignature(principal.to_owned()),
    }
}

/// `BASE64URL(header) "." BASE64URL(payload)` of a decoded entry.
fn signing_input(jws: &str) -> &[u8] {
    jws.rsplit_once('.').map_or(&b""[..], |(input, _)| input.as_bytes())
}

/// The position of the first of `keys` the entry's signature verifies under.
fn first_good(entry: &Entry, signature: &[u8; 64], keys: &[PublicKey]) -> Option<usize> {
    keys.iter().position(|key| key.verify(signing_input(entry.jws()), signature).is_ok())
}

/// Verifies the pending signatures with `verify_strict` (cofactorless, no
/// small-order `R` or key), spread over the cores, and marks each good or
/// bad.
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
fn check_pending(signatures: &mut [SignatureCheck]) {
    let pending: Vec<&SignatureCheck> =
        signatures.iter().filter(|s| s.state == SignatureState::Pending).collect();
    if pending.is_empty() {
        return;
    }
    type Item = (Arc<Entry>, [u8; 64], Vec<PublicKey>);
    let items: Vec<Item> = pending
        .iter()
        .map(|s| {
            let keys = std::iter::once(&s.key).chain(&s.others).cloned().collect();
            (s.entry.clone(), s.signature, keys)
        })
        .collect();
    let extra = if items.len() >= 2 { pool::threads() - 1 } else { 0 };
    let good = pool::map(items, extra, |(entry, signature, keys): &Item| first_good(entry, signature, keys));
    let mut good = good.into_iter();
    for s in signatures.iter_mut().filter(|s| s.state == SignatureState::Pending) {
        let found = match good.next() {
            Some(Some(found)) => found,
            // Lost with a helper that panicked: check it here.
            _ => {
                let keys: Vec<PublicKey> = std::iter::once(&s.key).chain(&s.others).cloned().collect();
                first_good(&s.entry, &s.signature, &keys)
            }
        };
        s.state = match found {
            Some(0) => SignatureState::Good,
            Some(n) => match s.others.get(n - 1) {
                Some(key) => {
                    // Verified under another key of the overlap: that one is
                    // the entry's key (for the cache).
                    s.key = key.clone();
                    s.key_id = KeyId::of(key);
                    SignatureState::Good
                }
                None => SignatureState::Bad,
            },
            None => SignatureState::Bad,
        };
    }
}
