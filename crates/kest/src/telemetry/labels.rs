//! The strings every span of a hook repeats — its name, operation and
//! workload — made once and shared as `'static` strings, so recording a span
//! neither allocates them nor makes two threads contend on a reference count.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashSet;
use std::sync::{OnceLock, RwLock};

use opentelemetry::StringValue;

/// How many distinct strings (span names, operations, workload ids) are
/// interned, i.e. kept for the life of the process; past that, each use
/// allocates its own copy.
const MAX_INTERNED: usize = 4096;

/// `text` as a `'static` string, allocated once per distinct value (at most
/// [`MAX_INTERNED`] of them); `None` once the budget is spent.
///
/// Span names are `Cow<'static, str>` in OpenTelemetry, and operation names
/// and workload ids come from code and configuration, so they repeat from
/// call to call.
fn intern(text: &str) -> Option<&'static str> {
    static INTERNED: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let interned = INTERNED.get_or_init(Default::default);
    if let Some(found) = interned.read().ok().and_then(|set| set.get(text).copied()) {
        return Some(found);
    }
    let mut set = interned.write().ok()?;
    if let Some(found) = set.get(text).copied() {
        return Some(found);
    }
    if set.len() >= MAX_INTERNED {
        return None;
    }
    let leaked: &'static str = Box::leak(Box::from(text));
    set.insert(leaked);
    Some(leaked)
}

/// An interned string as an attribute value, or an owned copy past the
/// interning budget.
fn static_or_owned(text: &str) -> StringValue {
    match intern(text) {
        Some(shared) => StringValue::from(shared),
        None => StringValue::from(text.to_owned()),
    }
}

/// The span name and operation of a hook, computed once when the hook is
/// built.
#[derive(Debug, Clone)]
pub(crate) struct SpanLabels {
    pub(super) name: Cow<'static, str>,
    pub(super) operation: StringValue,
}

impl SpanLabels {
    /// The labels of `kest.verified.<operation>`.
    pub(crate) fn new(operation: &str) -> SpanLabels {
        let name = format!("kest.verified.{operation}");
        SpanLabels {
            name: intern(&name).map_or(Cow::Owned(name), Cow::Borrowed),
            operation: static_or_owned(operation),
        }
    }
}

/// The signing workload as an attribute value: the last one seen on this
/// thread is reused (a service signs as one workload), so the interned set
/// is consulted once per workload and thread.
pub(super) fn workload_value(workload: &str) -> StringValue {
    thread_local! {
        static LAST: Cell<Option<&'static str>> = const { Cell::new(None) };
    }
    LAST.with(|last| match last.get() {
        Some(shared) if shared == workload => StringValue::from(shared),
        _ => match intern(workload) {
            Some(shared) => {
                last.set(Some(shared));
                StringValue::from(shared)
            }
            None => StringValue::from(workload.to_owned()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_strings_are_shared_and_equal() {
        let a = intern("kest.verified.labels-test").unwrap();
        let b = intern(&String::from("kest.verified.labels-test")).unwrap();
        assert_eq!(a, "kest.verified.labels-test");
        assert!(std::ptr::eq(a, b), "one allocation per distinct string");
        let labels = SpanLabels::new("labels-test");
        assert!(matches!(labels.name, Cow::Borrowed(n) if std::ptr::eq(n, a)));
        assert_eq!(labels.operation.as_str(), "labels-test");
    }

    #[test]
    fn the_workload_follows_the_signer() {
        assert_eq!(workload_value("spiffe://t/a").as_str(), "spiffe://t/a");
        assert_eq!(workload_value("spiffe://t/b").as_str(), "spiffe://t/b");
        assert_eq!(workload_value("spiffe://t/a").as_str(), "spiffe://t/a");
    }
}
