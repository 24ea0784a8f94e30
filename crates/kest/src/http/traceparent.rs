//! W3C Trace Context `traceparent` (version `00`), parsed strictly.
//!
//! ```
//! use kest::http::traceparent::TraceParent;
//! let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
//! let tp = TraceParent::parse(header).unwrap();
//! assert!(tp.sampled());
//! assert_eq!(tp.to_string(), header);
//!
//! // Upper-case hex, other versions and all-zero ids are refused.
//! assert!(TraceParent::parse(&header.to_uppercase()).is_err());
//! assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_err());
//! assert!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_err());
//! ```

use std::fmt;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

/// The name of the header.
pub const TRACEPARENT: &str = "traceparent";

/// Length of a version-`00` `traceparent` value.
const LEN: usize = 55;

/// Why a `traceparent` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceParentError {
    /// Not exactly 55 bytes.
    #[error("traceparent must be 55 bytes, found {0}")]
    Length(usize),
    /// The version is not `00`.
    #[error("traceparent version must be `00`")]
    Version,
    /// A field is not lowercase hex or a separator is not `-`.
    #[error("traceparent is not `00-<32 hex>-<16 hex>-<2 hex>` in lowercase")]
    Syntax,
    /// The trace id is all zeros.
    #[error("traceparent trace-id is all zeros")]
    ZeroTraceId,
    /// The parent id is all zeros.
    #[error("traceparent parent-id is all zeros")]
    ZeroParentId,
}

/// A version-`00` `traceparent`: trace id, parent (span) id and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn decode_hex<const N: usize>(text: &[u8]) -> Result<[u8; N], TraceParentError> {
    let mut out = [0u8; N];
    if text.len() != 2 * N {
        return Err(TraceParentError::Syntax);
    }
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let (Some(hi), Some(lo)) =
            (pair.first().copied().and_then(hex_digit), pair.get(1).copied().and_then(hex_digit))
        else {
            return Err(TraceParentError::Syntax);
        };
        *byte = (hi << 4) | lo;
    }
    Ok(out)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // A `traceparent` is an identifier, not a secret: should the operating
    // system's generator fail, fall back to the clock rather than fail the
    // request (the all-zero check below still holds).
    if getrandom::fill(&mut out).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(1);
        for (i, b) in out.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8;
        }
    }
    if out.iter().all(|b| *b == 0)
        && let Some(last) = out.last_mut()
    {
        *last = 1;
    }
    out
}

impl TraceParent {
    /// Parses a `traceparent` value: exactly
    /// `00-<32 lowercase hex>-<16 lowercase hex>-<2 lowercase hex>`, with a
    /// non-zero trace id and parent id. Never panics.
    pub fn parse(value: &str) -> Result<TraceParent, TraceParentError> {
        let b = value.as_bytes();
        if b.len() != LEN {
            return Err(TraceParentError::Length(b.len()));
        }
        if b.get(2) != Some(&b'-') || b.get(35) != Some(&b'-') || b.get(52) != Some(&b'-') {
            return Err(TraceParentError::Syntax);
        }
        let version: [u8; 1] = decode_hex(b.get(0..2).unwrap_or_default())?;
        if version != [0] {
            return Err(TraceParentError::Version);
        }
        let trace_id: [u8; 16] = decode_hex(b.get(3..35).unwrap_or_default())?;
        let parent_id: [u8; 8] = decode_hex(b.get(36..52).unwrap_or_default())?;
        let [flags]: [u8; 1] = decode_hex(b.get(53..55).unwrap_or_default())?;
        if trace_id.iter().all(|x| *x == 0) {
            return Err(TraceParentError::ZeroTraceId);
        }
        if parent_id.iter().all(|x| *x == 0) {
            return Err(TraceParentError::ZeroParentId);
        }
        Ok(TraceParent { trace_id, parent_id, flags })
    }

    /// A fresh trace: random trace id and parent id, not sampled.
    pub fn random() -> TraceParent {
        TraceParent { trace_id: random_bytes(), parent_id: random_bytes(), flags: 0 }
    }

    /// The same trace with a fresh random parent id (a new span of this
    /// service under a remote parent).
    pub fn child(&self) -> TraceParent {
        TraceParent { parent_id: random_bytes(), ..*self }
    }

    /// The `traceparent` of an OpenTelemetry context, when its span context
    /// is valid. A *remote* span context (one restored from an incoming
    /// request, with no local span under it) gets a fresh parent id, so the
    /// next hop does not claim the caller's span as its parent.
    pub fn from_context(cx: &opentelemetry::Context) -> Option<TraceParent> {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return None;
        }
        let tp = TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            parent_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        };
        Some(if sc.is_remote() { tp.child() } else { tp })
    }

    /// The current OpenTelemetry context's `traceparent` when valid, else a
    /// fresh random one.
    pub fn current_or_random() -> TraceParent {
        TraceParent::from_context(&opentelemetry::Context::current()).unwrap_or_else(TraceParent::random)
    }

    /// This value as a remote OpenTelemetry span context.
    pub fn to_span_context(&self) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.parent_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        )
    }

    /// The trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The parent (span) id.
    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the `sampled` flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        for b in self.trace_id {
            write!(f, "{b:02x}")?;
        }
        f.write_str("-")?;
        for b in self.parent_id {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-{:02x}", self.flags)
    }
}

impl std::str::FromStr for TraceParent {
    type Err = TraceParentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TraceParent::parse(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn strict() {
        let tp = TraceParent::parse(GOOD).unwrap();
        assert_eq!(tp.flags(), 1);
        assert_eq!(tp.parent_id(), [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(TraceParent::parse("").unwrap_err(), TraceParentError::Length(0));
        assert_eq!(TraceParent::parse(&format!("{GOOD}-")).unwrap_err(), TraceParentError::Length(56));
        assert_eq!(TraceParent::parse(&GOOD.replacen("00", "ff", 1)).unwrap_err(), TraceParentError::Version);
        assert_eq!(TraceParent::parse(&GOOD.replace('-', "_")).unwrap_err(), TraceParentError::Syntax);
        assert_eq!(TraceParent::parse(&GOOD.replace('b', "B")).unwrap_err(), TraceParentError::Syntax);
        assert_eq!(TraceParent::parse(&GOOD.replace('4', "g")).unwrap_err(), TraceParentError::Syntax);
        assert_eq!(TraceParent::parse(&GOOD.replacen("0", "+", 2)).unwrap_err(), TraceParentError::Syntax);
        let zero_trace = format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32));
        assert_eq!(TraceParent::parse(&zero_trace).unwrap_err(), TraceParentError::ZeroTraceId);
        let zero_parent = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", "0".repeat(16));
        assert_eq!(TraceParent::parse(&zero_parent).unwrap_err(), TraceParentError::ZeroParentId);
        // Multi-byte characters at the positions of separators.
        assert!(TraceParent::parse(&format!("0é{}", &GOOD[3..])).is_err());
    }

    #[test]
    fn random_and_child() {
        let a = TraceParent::random();
        assert_eq!(TraceParent::parse(&a.to_string()).unwrap(), a);
        assert!(!a.sampled());
        let c = a.child();
        assert_eq!(c.trace_id(), a.trace_id());
        assert_ne!(c.parent_id(), a.parent_id());
        assert_ne!(TraceParent::random().trace_id(), a.trace_id());
    }

    #[test]
    fn otel_context() {
        assert!(TraceParent::from_context(&opentelemetry::Context::new()).is_none());
        let tp = TraceParent::parse(GOOD).unwrap();
        let cx = opentelemetry::Context::new().with_remote_span_context(tp.to_span_context());
        let out = TraceParent::from_context(&cx).unwrap();
        assert_eq!(out.trace_id(), tp.trace_id());
        assert_eq!(out.flags(), tp.flags());
        assert_ne!(out.parent_id(), tp.parent_id(), "a remote parent gets a fresh span id");
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = TraceParent::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_near_misses(s in "[0-9a-fA-F\\-é]{50,60}") {
            if let Ok(tp) = TraceParent::parse(&s) {
                prop_assert_eq!(tp.to_string(), s);
            }
        }

        #[test]
        fn round_trip(t in any::<[u8; 16]>(), p in any::<[u8; 8]>(), f in any::<u8>()) {
            let tp = TraceParent { trace_id: t, parent_id: p, flags: f };
            let text = tp.to_string();
            match TraceParent::parse(&text) {
                Ok(back) => prop_assert_eq!(back, tp),
                Err(e) => prop_assert!(t == [0; 16] || p == [0; 8], "{e}"),
            }
        }
    }
}
