//! `kest.chain_tip`: the tips a sender says its passport ends in.

use std::str::FromStr;

use super::BaggageError;
use crate::hash::EntryHash;

/// Formats `kest.chain_tip`: the tips' lowercase hex hashes joined by `,`,
/// or `"0"` when there are none. (The `,` is percent-encoded in the header.)
///
/// ```
/// use kest_core::{baggage::format_chain_tip, EntryHash};
/// assert_eq!(format_chain_tip(&[]), "0");
/// let tip = EntryHash::of("a.b.c");
/// assert_eq!(format_chain_tip(&[tip, tip]), format!("{tip},{tip}"));
/// ```
pub fn format_chain_tip(tips: &[EntryHash]) -> String {
    if tips.is_empty() {
        return "0".to_owned();
    }
    tips.iter().map(EntryHash::to_string).collect::<Vec<_>>().join(",")
}

/// Parses `kest.chain_tip` strictly: exactly `"0"` (no tips, returned as an
/// empty list) or one or more 64-digit lowercase hex hashes separated by
/// `,`, with no whitespace, empty items or repeats.
///
/// ```
/// use kest_core::{baggage::parse_chain_tip, EntryHash};
/// assert_eq!(parse_chain_tip("0").unwrap(), vec![]);
/// let tip = EntryHash::of("a.b.c");
/// assert_eq!(parse_chain_tip(&tip.to_string()).unwrap(), vec![tip]);
/// assert!(parse_chain_tip(&tip.to_string().to_uppercase()).is_err());
/// assert!(parse_chain_tip(&format!("0,{tip}")).is_err());
/// ```
pub fn parse_chain_tip(value: &str) -> Result<Vec<EntryHash>, BaggageError> {
    if value == "0" {
        return Ok(Vec::new());
    }
    let bad = |reason: String| BaggageError::BadChainTip { value: value.to_owned(), reason };
    let mut tips: Vec<EntryHash> = Vec::new();
    for (i, item) in value.split(',').enumerate() {
        let tip = EntryHash::from_str(item).map_err(|_| {
            if item == "0" {
                bad(format!("item {i}: \"0\" must stand alone"))
            } else {
                bad(format!("item {i} is not 64 lowercase hex digits"))
            }
        })?;
        if tips.contains(&tip) {
            return Err(bad(format!("item {i} repeats {tip}")));
        }
        tips.push(tip);
    }
    Ok(tips)
}
