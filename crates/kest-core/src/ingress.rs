//! Binding the incoming lineage (SPEC §7.5): what a hop checks, after
//! verifying a passport, before it trusts the lineage a caller sent.
//!
//! Pure: no clock, no I/O. The caller passes the current time, the parsed
//! `kest.chain_tip` (see [`crate::baggage::parse_chain_tip`]) and the
//! identity claims that arrived in baggage. [`bind`] refuses
//!
//! - a `kest.chain_tip` that does not name exactly the passport's tips
//!   (`tip_mismatch`): a sender may neither rewind to a clean ancestor nor
//!   drop a tainted branch; [`IngressRules::allow_tip_subset`] accepts a
//!   non-empty subset of the tips (the reference writes only the last entry),
//!   never an ancestor or an unknown hash;
//! - a passport whose newest tip is older than [`IngressRules::max_age`], or
//!   with a tip dated more than 60 s in the future (`stale_passport`), so an
//!   exported passport cannot be replayed later;
//! - when the calling workload is authenticated ([`IngressRules::peer`]), a
//!   tip signed by anyone else (`tip_not_signed_by_peer`);
//! - identity claims containing control characters (`invalid_identity`).
//!
//! Identity claims are not facts: a claim is kept only when every tip
//! carries a signed `kest.identity` label with the same member; otherwise it
//! is dropped and listed in [`Bound::dropped`].
//!
//! ```
//! use kest_core::ingress::{IdentityClaims, IngressRules, bind};
//! use kest_core::{Ed25519Signer, EntryDraft, ErrorKind, Passport, TrustRules};
//!
//! let signer = Ed25519Signer::from_seed("spiffe://demo/a", [3u8; 32]);
//! let mut p = Passport::new();
//! let root = p.record(&EntryDraft::new("one"), &signer, &TrustRules::default()).unwrap();
//! let tip = p.record(&EntryDraft::new("two"), &signer, &TrustRules::default()).unwrap();
//! let now = p.entries()[1].payload().timestamp_ms + 1_000;
//! let rules = IngressRules::default();
//! let claims = IdentityClaims { user: Some("mallory".into()), ..Default::default() };
//!
//! let bound = bind(&p, Some(&[tip]), &claims, &rules, now).unwrap();
//! assert_eq!(bound.tips, vec![tip]);
//! assert_eq!(bound.dropped, vec!["user"]); // not signed into the tip
//!
//! // Rewinding to the root is refused.
//! let err = bind(&p, Some(&[root]), &claims, &rules, now).unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::TipMismatch);
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::entry::LABEL_IDENTITY;
use crate::error::ErrorKind;
use crate::hash::EntryHash;
use crate::passport::{Entry, Passport};

/// Default maximum age of the newest tip (SPEC §7.5).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

/// How far in the future a tip may be dated (clock skew), in milliseconds.
pub const MAX_FUTURE_SKEW_MS: u64 = 60_000;

/// What [`bind`] enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressRules {
    /// Accept a `kest.chain_tip` naming a non-empty subset of the tips
    /// (compatibility with the reference); never an ancestor.
    pub allow_tip_subset: bool,
    /// Maximum age of the newest tip; `None` turns the age rule (and the
    /// future-date check) off.
    pub max_age: Option<Duration>,
    /// The authenticated calling workload, when known: every tip must be
    /// signed by it.
    pub peer: Option<String>,
}

impl Default for IngressRules {
    /// Exact tips, a maximum age of 300 s, no peer.
    fn default() -> Self {
        IngressRules { allow_tip_subset: false, max_age: Some(DEFAULT_MAX_AGE), peer: None }
    }
}

/// Identity values as they arrived (`kest.user`, `kest.agent`, `kest.task`
/// in baggage), or as [`bind`] kept them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityClaims {
    /// The end user.
    pub user: Option<String>,
    /// The agent.
    pub agent: Option<String>,
    /// The task.
    pub task: Option<String>,
}

impl IdentityClaims {
    /// The claims with their member names, in `user`, `agent`, `task` order.
    fn named(&self) -> [(&'static str, Option<&str>); 3] {
        [("user", self.user.as_deref()), ("agent", self.agent.as_deref()), ("task", self.task.as_deref())]
    }
}

/// The lineage a hop may build on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The passport's tips, in passport order: the parents of the next
    /// entry. Always every tip, even when a subset was named, so no branch
    /// (and none of its taints) is dropped.
    pub tips: Vec<EntryHash>,
    /// Only the claims equal to the signed `kest.identity` of every tip.
    pub identity: IdentityClaims,
    /// The names (`"user"`, `"agent"`, `"task"`) of the claims dropped as
    /// unverified.
    pub dropped: Vec<&'static str>,
}

/// Why the incoming lineage was refused. Every variant maps to a stable
/// [`ErrorKind`] through [`IngressError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IngressError {
    /// `kest.chain_tip` does not name the passport's tips.
    #[error("kest.chain_tip does not match the passport: {reason}")]
    TipMismatch {
        /// What differs.
        reason: String,
    },
    /// The newest tip is older than the maximum age.
    #[error("passport is stale: its newest tip is {age_ms} ms old, above the maximum of {max_age_ms} ms")]
    Stale {
        /// Age of the newest tip.
        age_ms: u64,
        /// The maximum.
        max_age_ms: u64,
    },
    /// A tip is dated too far ahead of the current time.
    #[error("passport tip {tip} is dated in the future ({ahead_ms} ms ahead)")]
    FutureDated {
        /// The tip.
        tip: EntryHash,
        /// How far ahead of now.
        ahead_ms: u64,
    },
    /// A tip was signed by someone other than the authenticated caller.
    #[error("tip {tip} is signed by `{principal}`, not by the calling workload `{peer}`")]
    TipNotSignedByPeer {
        /// The tip.
        tip: EntryHash,
        /// Its signer.
        principal: String,
        /// The authenticated caller.
        peer: String,
    },
    /// An identity claim contains a control character.
    #[error("identity claim `{0}` contains a control character")]
    InvalidIdentity(&'static str),
}

impl IngressError {
    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            IngressError::TipMismatch { .. } => ErrorKind::TipMismatch,
            IngressError::Stale { .. } | IngressError::FutureDated { .. } => ErrorKind::StalePassport,
            IngressError::TipNotSignedByPeer { .. } => ErrorKind::TipNotSignedByPeer,
            IngressError::InvalidIdentity(_) => ErrorKind::InvalidIdentity,
        }
    }
}

fn mismatch(reason: String) -> IngressError {
    IngressError::TipMismatch { reason }
}

/// Applies the ingress binding rules (see the [module docs](self)) to a
/// verified passport.
///
/// `chain_tip` is the parsed `kest.chain_tip`: `None` when absent (the
/// passport's tips are used), `Some(&[])` for `"0"`. `now_ms` is the
/// current Unix time in milliseconds.
pub fn bind(
    passport: &Passport,
    chain_tip: Option<&[EntryHash]>,
    claims: &IdentityClaims,
    rules: &IngressRules,
    now_ms: u64,
) -> Result<Bound, IngressError> {
    for (name, value) in claims.named() {
        if value.is_some_and(|v| v.chars().any(char::is_control)) {
            return Err(IngressError::InvalidIdentity(name));
        }
    }
    let tips: Vec<EntryHash> = passport.tips().to_vec();
    if let Some(named) = chain_tip {
        check_named_tips(passport, &tips, named, rules.allow_tip_subset)?;
    }
    let tip_entries: Vec<&Entry> = tips.iter().filter_map(|t| passport.get(t)).map(AsRef::as_ref).collect();

    if let Some(max_age) = rules.max_age {
        let max_age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
        for e in &tip_entries {
            let ts = e.payload.timestamp_ms;
            if ts > now_ms.saturating_add(MAX_FUTURE_SKEW_MS) {
                return Err(IngressError::FutureDated { tip: e.hash, ahead_ms: ts.saturating_sub(now_ms) });
            }
        }
        if let Some(newest) = tip_entries.iter().map(|e| e.payload.timestamp_ms).max() {
            let age_ms = now_ms.saturating_sub(newest);
            if age_ms > max_age_ms {
                return Err(IngressError::Stale { age_ms, max_age_ms });
            }
        }
    }

    if let Some(peer) = &rules.peer
        && let Some(e) = tip_entries.iter().find(|e| e.principal() != peer)
    {
        return Err(IngressError::TipNotSignedByPeer {
            tip: e.hash,
            principal: e.principal().to_owned(),
            peer: peer.clone(),
        });
    }

    let signed: Vec<Option<Value>> = tip_entries
        .iter()
        .map(|e| e.payload.label(LABEL_IDENTITY).and_then(|s| serde_json::from_str::<Value>(s).ok()))
        .collect();
    let mut identity = IdentityClaims::default();
    let mut dropped = Vec::new();
    for (name, value) in claims.named() {
        let Some(value) = value else { continue };
        let confirmed = !signed.is_empty()
            && signed
                .iter()
                .all(|s| s.as_ref().and_then(|v| v.get(name)).and_then(Value::as_str) == Some(value));
        if !confirmed {
            dropped.push(name);
            continue;
        }
        let slot = match name {
            "user" => &mut identity.user,
            "agent" => &mut identity.agent,
            _ => &mut identity.task,
        };
        *slot = Some(value.to_owned());
    }
    Ok(Bound { tips, identity, dropped })
}

fn check_named_tips(
    passport: &Passport,
    tips: &[EntryHash],
    named: &[EntryHash],
    allow_subset: bool,
) -> Result<(), IngressError> {
    if named.is_empty() {
        if tips.is_empty() {
            return Ok(());
        }
        return Err(mismatch(format!("\"0\" (no tips) names none of the passport's {} tip(s)", tips.len())));
    }
    let mut seen = BTreeSet::new();
    for h in named {
        if !seen.insert(*h) {
            return Err(mismatch(format!("{h} is named twice")));
        }
        if !passport.contains(h) {
            return Err(mismatch(format!("{h} is not an entry of the passport")));
        }
        if !tips.contains(h) {
            return Err(mismatch(format!("{h} is an ancestor, not a tip (a sender may not rewind)")));
        }
    }
    if !allow_subset && named.len() != tips.len() {
        return Err(mismatch(format!("names {} of the passport's {} tips", named.len(), tips.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ed25519Signer, EntryDraft, Parents, TrustRules};

    const A: &str = "spiffe://test/a";
    const B: &str = "spiffe://test/b";
    const IDENTITY: &str = r#"{"user":"alice","agent":"bot","task":null}"#;

    fn signer(p: &str) -> Ed25519Signer {
        Ed25519Signer::from_seed(p, if p == A { [1; 32] } else { [2; 32] })
    }

    fn draft(op: &str, parents: Parents, identity: bool) -> EntryDraft {
        let mut d = EntryDraft::new(op);
        d.parents = parents;
        if identity {
            d.labels.insert(LABEL_IDENTITY.into(), IDENTITY.into());
        }
        d
    }

    /// root ─┬─ clean (A)
    ///       └─ tainted (B)        two tips
    fn fan_out() -> (Passport, EntryHash, EntryHash, EntryHash) {
        let rules = TrustRules::default();
        let mut p = Passport::new();
        let root = p.record(&draft("root", Parents::Root, true), &signer(A), &rules).unwrap();
        let clean =
            p.record(&draft("clean", Parents::Explicit(vec![root]), true), &signer(A), &rules).unwrap();
        let mut t = draft("fetch", Parents::Explicit(vec![root]), true);
        t.added_taints = vec!["internet".into()];
        let tainted = p.record(&t, &signer(B), &rules).unwrap();
        (p, root, clean, tainted)
    }

    fn linear() -> (Passport, EntryHash, EntryHash) {
        let rules = TrustRules::default();
        let mut p = Passport::new();
        let root = p.record(&draft("root", Parents::Root, true), &signer(A), &rules).unwrap();
        let tip = p.record(&draft("next", Parents::Tips, true), &signer(A), &rules).unwrap();
        (p, root, tip)
    }

    fn newest(p: &Passport) -> u64 {
        p.entries().iter().map(|e| e.payload.timestamp_ms).max().unwrap()
    }

    fn kind(r: Result<Bound, IngressError>) -> ErrorKind {
        r.unwrap_err().kind()
    }

    fn none() -> IdentityClaims {
        IdentityClaims::default()
    }

    #[test]
    fn exact_tips_accepted_in_any_order() {
        let (p, _, clean, tainted) = fan_out();
        let now = newest(&p);
        let rules = IngressRules::default();
        for named in [vec![clean, tainted], vec![tainted, clean]] {
            let b = bind(&p, Some(&named), &none(), &rules, now).unwrap();
            assert_eq!(b.tips, vec![clean, tainted]);
        }
        let b = bind(&p, None, &none(), &rules, now).unwrap();
        assert_eq!(b.tips, p.tips());
    }

    #[test]
    fn rewinding_to_an_ancestor_is_refused() {
        let (p, root, _) = linear();
        let now = newest(&p);
        for allow_tip_subset in [false, true] {
            let rules = IngressRules { allow_tip_subset, ..IngressRules::default() };
            let err = bind(&p, Some(&[root]), &none(), &rules, now).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::TipMismatch);
            assert!(err.to_string().contains("ancestor"), "{err}");
        }
    }

    #[test]
    fn dropping_a_tainted_tip_needs_allow_tip_subset() {
        let (p, root, clean, tainted) = fan_out();
        let now = newest(&p);
        let exact = IngressRules::default();
        assert_eq!(kind(bind(&p, Some(&[clean]), &none(), &exact, now)), ErrorKind::TipMismatch);
        let subset = IngressRules { allow_tip_subset: true, ..IngressRules::default() };
        let b = bind(&p, Some(&[clean]), &none(), &subset, now).unwrap();
        // The next entry still descends from the tainted branch.
        assert_eq!(b.tips, vec![clean, tainted]);
        // A subset may not mix in an ancestor, repeat a tip or be empty.
        assert_eq!(kind(bind(&p, Some(&[clean, root]), &none(), &subset, now)), ErrorKind::TipMismatch);
        assert_eq!(kind(bind(&p, Some(&[clean, clean]), &none(), &subset, now)), ErrorKind::TipMismatch);
        assert_eq!(kind(bind(&p, Some(&[]), &none(), &subset, now)), ErrorKind::TipMismatch);
    }

    #[test]
    fn unknown_hash_and_zero_sentinel() {
        let (p, _, tip) = linear();
        let now = newest(&p);
        let rules = IngressRules { allow_tip_subset: true, ..IngressRules::default() };
        let stranger = EntryHash::of("x.y.z");
        assert_eq!(kind(bind(&p, Some(&[stranger]), &none(), &rules, now)), ErrorKind::TipMismatch);
        assert_eq!(kind(bind(&p, Some(&[tip, stranger]), &none(), &rules, now)), ErrorKind::TipMismatch);
        // "0" with a non-empty passport.
        assert_eq!(kind(bind(&p, Some(&[]), &none(), &rules, now)), ErrorKind::TipMismatch);
        // An empty passport: "0" or nothing is fine, any named tip is not.
        let empty = Passport::new();
        let b = bind(&empty, Some(&[]), &none(), &IngressRules::default(), now).unwrap();
        assert!(b.tips.is_empty());
        bind(&empty, None, &none(), &IngressRules::default(), now).unwrap();
        assert_eq!(kind(bind(&empty, Some(&[tip]), &none(), &rules, now)), ErrorKind::TipMismatch);
    }

    #[test]
    fn replayed_stale_passport_is_refused() {
        let (p, _, tip) = linear();
        let ts = newest(&p);
        let rules = IngressRules::default();
        bind(&p, Some(&[tip]), &none(), &rules, ts + 300_000).unwrap();
        let err = bind(&p, Some(&[tip]), &none(), &rules, ts + 300_001).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StalePassport);
        // Off when there is no maximum age (offline verification).
        let off = IngressRules { max_age: None, ..IngressRules::default() };
        bind(&p, Some(&[tip]), &none(), &off, ts + 86_400_000).unwrap();
        // The age is measured from the newest tip, boundary included.
        let short = IngressRules { max_age: Some(Duration::from_millis(0)), ..IngressRules::default() };
        bind(&p, None, &none(), &short, ts).unwrap();
    }

    #[test]
    fn future_dated_tip_is_refused() {
        let (p, _, tip) = linear();
        let ts = newest(&p);
        let rules = IngressRules::default();
        bind(&p, Some(&[tip]), &none(), &rules, ts - MAX_FUTURE_SKEW_MS).unwrap();
        let err = bind(&p, Some(&[tip]), &none(), &rules, ts - MAX_FUTURE_SKEW_MS - 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StalePassport);
        assert!(err.to_string().contains("dated in the future"), "{err}");
    }

    #[test]
    fn tips_must_be_signed_by_the_peer() {
        let (p, _, clean, tainted) = fan_out();
        let now = newest(&p);
        let (lin, _, tip) = linear();
        let as_a = IngressRules { peer: Some(A.into()), ..IngressRules::default() };
        bind(&lin, Some(&[tip]), &none(), &as_a, newest(&lin)).unwrap();
        let err = bind(&p, Some(&[clean, tainted]), &none(), &as_a, now).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TipNotSignedByPeer);
        assert!(err.to_string().contains(B), "{err}");
        let as_b = IngressRules { peer: Some(B.into()), ..IngressRules::default() };
        assert_eq!(kind(bind(&lin, None, &none(), &as_b, newest(&lin))), ErrorKind::TipNotSignedByPeer);
    }

    #[test]
    fn identity_claims_kept_only_when_signed_into_every_tip() {
        let (p, _, tip) = linear();
        let now = newest(&p);
        let rules = IngressRules::default();
        let claims = IdentityClaims {
            user: Some("alice".into()),
            agent: Some("mallory-bot".into()), // spoofed
            task: Some("anything".into()),     // signed as null
        };
        let b = bind(&p, Some(&[tip]), &claims, &rules, now).unwrap();
        assert_eq!(b.identity, IdentityClaims { user: Some("alice".into()), agent: None, task: None });
        assert_eq!(b.dropped, vec!["agent", "task"]);
        // A tip without the label: everything dropped.
        let mut q = p.clone();
        q.record(&draft("bare", Parents::Tips, false), &signer(A), &TrustRules::default()).unwrap();
        let b = bind(&q, None, &claims, &rules, newest(&q)).unwrap();
        assert_eq!(b.identity, IdentityClaims::default());
        assert_eq!(b.dropped, vec!["user", "agent", "task"]);
        // An empty passport confirms nothing.
        let b = bind(&Passport::new(), None, &claims, &rules, now).unwrap();
        assert_eq!(b.dropped, vec!["user", "agent", "task"]);
        // No claims: nothing dropped.
        assert!(bind(&p, None, &none(), &rules, now).unwrap().dropped.is_empty());
    }

    #[test]
    fn control_characters_in_claims_are_refused() {
        let (p, _, _) = linear();
        let now = newest(&p);
        for bad in ["al\0ice", "alice\r\nx-admin: 1", "a\nb", "del\u{7f}", "c1\u{85}"] {
            for which in 0..3 {
                let mut c = IdentityClaims::default();
                let slot = [&mut c.user, &mut c.agent, &mut c.task];
                *slot.into_iter().nth(which).unwrap() = Some(bad.into());
                let err = bind(&p, None, &c, &IngressRules::default(), now).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::InvalidIdentity);
                assert!(!err.to_string().contains(bad), "the message does not echo the value");
            }
        }
    }

    #[test]
    fn kind_names_are_stable() {
        assert_eq!(ErrorKind::TipMismatch.as_str(), "tip_mismatch");
        assert_eq!(ErrorKind::StalePassport.as_str(), "stale_passport");
        assert_eq!(ErrorKind::TipNotSignedByPeer.as_str(), "tip_not_signed_by_peer");
        assert_eq!(ErrorKind::InvalidIdentity.as_str(), "invalid_identity");
    }
}
