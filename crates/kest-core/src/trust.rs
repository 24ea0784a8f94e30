//! Trust scores and taints (SPEC §4): origins, evaluators, recomputation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// The seven protected default origins and their scores.
pub const DEFAULT_ORIGINS: [(&str, u8); 7] = [
    ("system", 100),
    ("internal", 100),
    ("verified_rag", 90),
    ("third_party_api", 60),
    ("user_input", 40),
    ("internet", 10),
    ("llm", 0),
];

/// Score of a root whose origin is missing (pessimistic).
pub const MISSING_ROOT_ORIGIN_SCORE: u8 = 10;
/// Self score of a non-root whose origin is missing.
pub const MISSING_SELF_SCORE: u8 = 100;

/// Why an origin could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginError {
    /// One of the seven defaults cannot be changed.
    #[error("origin `{0}` is a protected default and cannot be overridden")]
    Protected(String),
    /// Scores are 0..=100.
    #[error("origin `{name}` score {score} is outside 0..=100")]
    OutOfRange {
        /// Origin name.
        name: String,
        /// Offending score.
        score: i64,
    },
    /// Empty names are not origins.
    #[error("origin name must not be empty")]
    EmptyName,
}

/// Origin name → bootstrap trust score (`ORIGIN_TRUST_MAP`), with the seven
/// protected defaults always present.
///
/// ```
/// let mut origins = kest_core::OriginMap::default();
/// assert_eq!(origins.score("verified_rag"), Some(90));
/// origins.register("partner_feed", 70).unwrap();
/// assert!(origins.register("internet", 100).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginMap {
    scores: BTreeMap<String, u8>,
}

impl Default for OriginMap {
    fn default() -> Self {
        OriginMap { scores: DEFAULT_ORIGINS.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect() }
    }
}

impl OriginMap {
    /// Adds a deployment origin. Defaults cannot be overridden.
    pub fn register(&mut self, name: &str, score: i64) -> Result<(), OriginError> {
        if name.is_empty() {
            return Err(OriginError::EmptyName);
        }
        if Self::is_default(name) {
            return Err(OriginError::Protected(name.to_owned()));
        }
        let score = u8::try_from(score)
            .ok()
            .filter(|s| *s <= 100)
            .ok_or_else(|| OriginError::OutOfRange { name: name.to_owned(), score })?;
        self.scores.insert(name.to_owned(), score);
        Ok(())
    }

    /// The score of an origin, if known.
    pub fn score(&self, name: &str) -> Option<u8> {
        self.scores.get(name).copied()
    }

    /// Whether `name` is one of the seven protected defaults.
    pub fn is_default(name: &str) -> bool {
        DEFAULT_ORIGINS.iter().any(|(n, _)| *n == name)
    }

    /// All origins, ordered by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u8)> {
        self.scores.iter().map(|(n, s)| (n.as_str(), *s))
    }
}

/// Computes a non-root node's trust from its own origin score and its
/// parents' scores (CARTA). Implementations must return 0..=100.
pub trait TrustEvaluator: fmt::Debug + Send + Sync {
    /// The name recorded in the `kest.trust_evaluator` label.
    fn name(&self) -> &str;
    /// The node's score. `parent_scores` is never empty.
    fn calculate(&self, self_score: u8, parent_scores: &[u8]) -> u8;
}

/// The default evaluator: `min(parents) * self / 100`, integer floor.
///
/// ```
/// use kest_core::{TrustEvaluator, WeakestLink};
/// assert_eq!(WeakestLink.calculate(90, &[40, 100]), 36);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WeakestLink;

/// The name of [`WeakestLink`] in entry labels.
pub const WEAKEST_LINK: &str = "weakest_link";

impl TrustEvaluator for WeakestLink {
    fn name(&self) -> &str {
        WEAKEST_LINK
    }
    fn calculate(&self, self_score: u8, parent_scores: &[u8]) -> u8 {
        let min = parent_scores.iter().copied().min().unwrap_or(100);
        // Both factors are at most 100, so the product fits in u16.
        u8::try_from(u16::from(min) * u16::from(self_score) / 100).unwrap_or(100)
    }
}

/// An example alternative: a weighted mean of the parents' mean and the
/// node's own score, never above the weakest parent.
///
/// ```
/// use kest_core::{TrustEvaluator, WeightedTrust};
/// let w = WeightedTrust { parent_weight: 75 };
/// assert_eq!(w.calculate(40, &[80, 90]), 73); // (85*75 + 40*25) / 100
/// assert_eq!(w.calculate(100, &[60, 80]), 60); // 77, capped at the weakest parent
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightedTrust {
    /// Weight of the parents' mean in percent (0..=100).
    pub parent_weight: u8,
}

impl TrustEvaluator for WeightedTrust {
    fn name(&self) -> &str {
        "weighted"
    }
    fn calculate(&self, self_score: u8, parent_scores: &[u8]) -> u8 {
        let count = u32::try_from(parent_scores.len()).unwrap_or(u32::MAX).max(1);
        let mean = parent_scores.iter().map(|s| u32::from(*s)).sum::<u32>() / count;
        let w = u32::from(self.parent_weight.min(100));
        let score = (mean * w + u32::from(self_score) * (100 - w)) / 100;
        let cap = parent_scores.iter().copied().min().map_or(100, u32::from);
        u8::try_from(score.min(cap)).unwrap_or(100)
    }
}

/// The trust rules of a deployment: origins and the evaluator.
#[derive(Debug, Clone)]
pub struct TrustRules {
    /// Known origins.
    pub origins: OriginMap,
    /// Evaluator for non-root nodes.
    pub evaluator: Arc<dyn TrustEvaluator>,
    /// Origin assumed for a root when the caller names none (`None` = the
    /// pessimistic missing-origin score).
    pub default_root_origin: Option<String>,
}

impl Default for TrustRules {
    fn default() -> Self {
        TrustRules {
            origins: OriginMap::default(),
            evaluator: Arc::new(WeakestLink),
            default_root_origin: None,
        }
    }
}

/// `sorted((∪ parents' taints ∪ added) − removed)` without duplicates.
///
/// ```
/// let t = kest_core::accumulate_taints(
///     [["pii".to_string()].as_slice()],
///     &["internet".to_string()],
///     &["pii".to_string()],
/// );
/// assert_eq!(t, vec!["internet".to_string()]);
/// ```
pub fn accumulate_taints<'a>(
    parents: impl IntoIterator<Item = &'a [String]>,
    added: &[String],
    removed: &[String],
) -> Vec<String> {
    let mut set: BTreeSet<&str> = parents.into_iter().flatten().map(String::as_str).collect();
    set.extend(added.iter().map(String::as_str));
    for r in removed {
        set.remove(r.as_str());
    }
    set.into_iter().map(str::to_owned).collect()
}
