//! Typed verification errors with stable, machine-readable kinds.

use std::fmt;

use crate::json::JsonError;

/// Which part of a JWS compact string an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// The protected header (first segment).
    Header,
    /// The payload (second segment).
    Payload,
    /// The signature (third segment).
    Signature,
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Segment::Header => "header",
            Segment::Payload => "payload",
            Segment::Signature => "signature",
        })
    }
}

/// A payload member that is missing, of the wrong type or out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// A required member is absent.
    #[error("required member `{0}` is missing")]
    Missing(String),
    /// A member has the wrong JSON type.
    #[error("member `{name}` must be {expected}")]
    WrongType {
        /// Dotted path of the member.
        name: String,
        /// What was expected, in words.
        expected: &'static str,
    },
    /// A member has the right type but a value the format forbids.
    #[error("member `{name}` is invalid: {reason}")]
    Invalid {
        /// Dotted path of the member.
        name: String,
        /// Why the value is refused.
        reason: String,
    },
}

/// Why one entry of a passport was rejected.
///
/// Every variant maps to a stable [`ErrorKind`] through [`EntryError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The compact string is longer than the configured limit.
    #[error("entry is {size} bytes, above the limit of {limit}")]
    TooLarge {
        /// Size of the entry in bytes.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// Not exactly three `.`-separated segments.
    #[error("a JWS compact string has 3 segments, found {0}")]
    SegmentCount(usize),
    /// A segment is not unpadded base64url.
    #[error("{0} segment is not unpadded base64url")]
    Base64(Segment),
    /// The header or payload is not acceptable JSON (syntax, duplicate
    /// member, nesting).
    #[error("{segment} is not acceptable JSON: {source}")]
    Json {
        /// Which segment.
        segment: Segment,
        /// The parser's refusal.
        source: JsonError,
    },
    /// The header or payload is JSON but not an object.
    #[error("{0} is not a JSON object")]
    NotObject(Segment),
    /// A header or payload member is missing, mistyped or out of range.
    #[error("{segment}: {source}")]
    Field {
        /// Which segment.
        segment: Segment,
        /// The member problem.
        source: FieldError,
    },
    /// The payload bytes are not in RFC 8785 canonical form.
    #[error("payload bytes are not RFC 8785 canonical JSON")]
    NotCanonical,
    /// The signature segment does not decode to 64 bytes.
    #[error("signature must be 64 bytes, found {0}")]
    SignatureLength(usize),
    /// The header's `alg` is not the one the signer's key allows.
    #[error("algorithm `{alg}` is not allowed for `{principal}`, whose key allows only `{allowed}`")]
    AlgorithmNotAllowed {
        /// The `alg` in the header.
        alg: String,
        /// The signer.
        principal: String,
        /// The one algorithm the key set allows for this key.
        allowed: &'static str,
    },
    /// The header's `kid` differs from `labels.principal`.
    #[error("header kid `{kid}` differs from labels.principal `{principal}`")]
    KidMismatch {
        /// The `kid` in the header.
        kid: String,
        /// The principal in the payload.
        principal: String,
    },
    /// No key for the signer in the key set.
    #[error("signer `{0}` is not in the key set")]
    UnknownSigner(String),
    /// The signature encoding is not canonical (non-reduced `s`,
    /// non-canonical or small-order `R`).
    #[error("signature of `{principal}` is malformed: {reason}")]
    MalformedSignature {
        /// The signer.
        principal: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The signature does not verify under the signer's key.
    #[error("signature of `{0}` does not verify")]
    BadSignature(String),
    /// `parent_ids` is empty.
    #[error("parent_ids is empty (a root uses [\"0\"])")]
    EmptyParents,
    /// The root sentinel `"0"` appears with other parents.
    #[error("root sentinel \"0\" mixed with other parents")]
    MixedRootSentinel,
    /// A parent id is neither `"0"` nor 64 lowercase hex digits.
    #[error("parent id `{0}` is neither \"0\" nor a lowercase hex SHA-256 digest")]
    MalformedParent(String),
    /// The same parent is named twice.
    #[error("parent `{0}` is named twice")]
    DuplicateParent(String),
    /// A parent is not in the passport.
    #[error("parent `{0}` is not in the passport")]
    DanglingParent(String),
    /// A parent appears only later in the passport (not topological order;
    /// the only way a cycle could be expressed).
    #[error("parent `{parent}` appears later, at entry {parent_index}: passport is not in topological order")]
    ParentOutOfOrder {
        /// The parent hash.
        parent: String,
        /// Where it appears.
        parent_index: usize,
    },
    /// The entry already appeared earlier.
    #[error("entry duplicates entry {0}")]
    DuplicateEntry(usize),
    /// Semantic: the accumulated taints are not what the parents imply.
    #[error("taints {found:?} differ from the recomputed {expected:?}")]
    TaintMismatch {
        /// Recomputed from parents, added and removed taints.
        expected: Vec<String>,
        /// As written in the entry.
        found: Vec<String>,
    },
    /// Semantic: the trust score differs from the recomputed one.
    #[error("trust_score {found} differs from {expected} required by {rule}")]
    TrustMismatch {
        /// Recomputed score.
        expected: u8,
        /// Score in the entry.
        found: u8,
        /// Which rule recomputed it.
        rule: &'static str,
    },
    /// Semantic: a non-sanitizer entry claims more trust than its parents.
    #[error("trust_score {found} exceeds the parents' minimum {parent_min} without a sanitizer")]
    TrustEscalation {
        /// Score in the entry.
        found: u8,
        /// Lowest parent score.
        parent_min: u8,
    },
    /// Semantic: an entry raises trust above its baseline (the parents'
    /// minimum, or at a root its origin's score) but its signer is not one
    /// of the principals the verifier allows to sanitize.
    #[error("trust_score {found} exceeds {baseline} and `{principal}` is not an allowed sanitizer")]
    UnauthorizedEscalation {
        /// The signer.
        principal: String,
        /// Score in the entry.
        found: u8,
        /// The score it may not exceed (parents' minimum or root origin's score).
        baseline: u8,
    },
    /// The key source could not say whether the signer has a key (stale or
    /// unreachable); the entry is rejected, never skipped.
    #[error("key of `{principal}` is unavailable: {source}")]
    KeyUnavailable {
        /// The signer.
        principal: String,
        /// Why the key source could not answer.
        source: crate::resolve::ResolveError,
    },
    /// A root names (in `kest.source_type`) an origin the verifier does not
    /// know, and the verifier is configured with strict origins.
    #[error("root origin `{0}` is not known to this verifier")]
    UnknownOrigin(String),
}

/// Stable machine-readable error kinds (used by `kest verify --format json`
/// and by test vectors that record expected failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Passport document is not a JSON array of strings.
    MalformedPassport,
    /// Passport or entry above a size/count limit.
    LimitExceeded,
    /// Not three segments.
    SegmentCount,
    /// Bad base64url.
    Base64,
    /// Invalid JSON syntax.
    Json,
    /// Duplicate JSON member.
    DuplicateMember,
    /// Nesting too deep.
    TooDeep,
    /// Header or payload not an object.
    NotObject,
    /// Required member missing.
    MissingMember,
    /// Member of wrong type.
    WrongType,
    /// Member with a forbidden value.
    InvalidValue,
    /// Payload not canonical.
    NotCanonical,
    /// Signature not 64 bytes or not canonical.
    MalformedSignature,
    /// Algorithm not allowed for the key.
    AlgNotAllowed,
    /// kid differs from principal.
    KidMismatch,
    /// Signer not in key set.
    UnknownSigner,
    /// Signature does not verify.
    BadSignature,
    /// Empty parent list.
    EmptyParents,
    /// Root sentinel mixed with parents.
    MixedRoot,
    /// Malformed parent id.
    MalformedParent,
    /// Parent named twice.
    DuplicateParent,
    /// Parent not in passport.
    DanglingParent,
    /// Parent later in passport.
    ParentOutOfOrder,
    /// Entry appears twice.
    DuplicateEntry,
    /// Semantic taint mismatch.
    TaintMismatch,
    /// Semantic trust mismatch.
    TrustMismatch,
    /// Semantic trust escalation.
    TrustEscalation,
    /// A root's origin is unknown to a verifier with strict origins.
    UnknownOrigin,
    /// The key source could not resolve the signer's key.
    KeyUnavailable,
    /// Ingress: `kest.chain_tip` does not name the passport's tips.
    TipMismatch,
    /// Ingress: the newest tip is too old, or a tip is dated in the future.
    StalePassport,
    /// Ingress: a tip is not signed by the authenticated caller.
    TipNotSignedByPeer,
    /// Ingress: an identity claim contains a control character.
    InvalidIdentity,
    /// A chain-level requirement (`kest verify --require`) does not allow
    /// the verified passport.
    RequirementFailed,
}

impl ErrorKind {
    /// The stable snake_case name of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::MalformedPassport => "malformed_passport",
            ErrorKind::LimitExceeded => "limit_exceeded",
            ErrorKind::SegmentCount => "segment_count",
            ErrorKind::Base64 => "base64",
            ErrorKind::Json => "json",
            ErrorKind::DuplicateMember => "duplicate_member",
            ErrorKind::TooDeep => "too_deep",
            ErrorKind::NotObject => "not_object",
            ErrorKind::MissingMember => "missing_member",
            ErrorKind::WrongType => "wrong_type",
            ErrorKind::InvalidValue => "invalid_value",
            ErrorKind::NotCanonical => "not_canonical",
            ErrorKind::MalformedSignature => "malformed_signature",
            ErrorKind::AlgNotAllowed => "alg_not_allowed",
            ErrorKind::KidMismatch => "kid_mismatch",
            ErrorKind::UnknownSigner => "unknown_signer",
            ErrorKind::BadSignature => "bad_signature",
            ErrorKind::EmptyParents => "empty_parents",
            ErrorKind::MixedRoot => "mixed_root",
            ErrorKind::MalformedParent => "malformed_parent",
            ErrorKind::DuplicateParent => "duplicate_parent",
            ErrorKind::DanglingParent => "dangling_parent",
            ErrorKind::ParentOutOfOrder => "parent_out_of_order",
            ErrorKind::DuplicateEntry => "duplicate_entry",
            ErrorKind::TaintMismatch => "taint_mismatch",
            ErrorKind::TrustMismatch => "trust_mismatch",
            ErrorKind::TrustEscalation => "trust_escalation",
            ErrorKind::UnknownOrigin => "unknown_origin",
            ErrorKind::KeyUnavailable => "key_unavailable",
            ErrorKind::TipMismatch => "tip_mismatch",
            ErrorKind::StalePassport => "stale_passport",
            ErrorKind::TipNotSignedByPeer => "tip_not_signed_by_peer",
            ErrorKind::InvalidIdentity => "invalid_identity",
            ErrorKind::RequirementFailed => "requirement_failed",
        }
    }

    /// Whether the kind comes from the opt-in semantic checks.
    pub fn is_semantic(self) -> bool {
        matches!(
            self,
            ErrorKind::TaintMismatch
                | ErrorKind::TrustMismatch
                | ErrorKind::TrustEscalation
                | ErrorKind::UnknownOrigin
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EntryError {
    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EntryError::TooLarge { .. } => ErrorKind::LimitExceeded,
            EntryError::SegmentCount(_) => ErrorKind::SegmentCount,
            EntryError::Base64(_) => ErrorKind::Base64,
            EntryError::Json { source, .. } => match source {
                JsonError::DuplicateMember(_) => ErrorKind::DuplicateMember,
                JsonError::TooDeep(_) => ErrorKind::TooDeep,
                JsonError::Syntax(_) => ErrorKind::Json,
            },
            EntryError::NotObject(_) => ErrorKind::NotObject,
            EntryError::Field { source, .. } => match source {
                FieldError::Missing(_) => ErrorKind::MissingMember,
                FieldError::WrongType { .. } => ErrorKind::WrongType,
                FieldError::Invalid { .. } => ErrorKind::InvalidValue,
            },
            EntryError::NotCanonical => ErrorKind::NotCanonical,
            EntryError::SignatureLength(_) | EntryError::MalformedSignature { .. } => {
                ErrorKind::MalformedSignature
            }
            EntryError::AlgorithmNotAllowed { .. } => ErrorKind::AlgNotAllowed,
            EntryError::KidMismatch { .. } => ErrorKind::KidMismatch,
            EntryError::UnknownSigner(_) => ErrorKind::UnknownSigner,
            EntryError::BadSignature(_) => ErrorKind::BadSignature,
            EntryError::EmptyParents => ErrorKind::EmptyParents,
            EntryError::MixedRootSentinel => ErrorKind::MixedRoot,
            EntryError::MalformedParent(_) => ErrorKind::MalformedParent,
            EntryError::DuplicateParent(_) => ErrorKind::DuplicateParent,
            EntryError::DanglingParent(_) => ErrorKind::DanglingParent,
            EntryError::ParentOutOfOrder { .. } => ErrorKind::ParentOutOfOrder,
            EntryError::DuplicateEntry(_) => ErrorKind::DuplicateEntry,
            EntryError::TaintMismatch { .. } => ErrorKind::TaintMismatch,
            EntryError::TrustMismatch { .. } => ErrorKind::TrustMismatch,
            EntryError::TrustEscalation { .. } | EntryError::UnauthorizedEscalation { .. } => {
                ErrorKind::TrustEscalation
            }
            EntryError::UnknownOrigin(_) => ErrorKind::UnknownOrigin,
            EntryError::KeyUnavailable { .. } => ErrorKind::KeyUnavailable,
        }
    }
}

/// Why a passport document (as a whole) was refused before any entry was
/// examined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PassportError {
    /// The document is larger than the configured limit.
    #[error("passport is {size} bytes, above the limit of {limit}")]
    TooLarge {
        /// Size in bytes.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// More entries than the configured limit.
    #[error("passport has {count} entries, above the limit of {limit}")]
    TooManyEntries {
        /// Number of entries.
        count: usize,
        /// Configured limit.
        limit: usize,
    },
    /// Not a JSON array of strings.
    #[error("passport is not a JSON array of JWS strings: {0}")]
    Malformed(String),
}

impl PassportError {
    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PassportError::TooLarge { .. } | PassportError::TooManyEntries { .. } => ErrorKind::LimitExceeded,
            PassportError::Malformed(_) => ErrorKind::MalformedPassport,
        }
    }
}

/// The first reason a passport failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The document itself was refused.
    #[error(transparent)]
    Passport(#[from] PassportError),
    /// An entry was refused.
    #[error("entry {index}: {source}")]
    Entry {
        /// Zero-based position of the entry in the passport.
        index: usize,
        /// What is wrong with it.
        source: EntryError,
    },
}

impl VerifyError {
    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            VerifyError::Passport(e) => e.kind(),
            VerifyError::Entry { source, .. } => source.kind(),
        }
    }

    /// The index of the offending entry, when the error is about one.
    pub fn index(&self) -> Option<usize> {
        match self {
            VerifyError::Passport(_) => None,
            VerifyError::Entry { index, .. } => Some(*index),
        }
    }
}
