//! The `Range` request header (RFC 9110 §14.2), for one byte range. A header this server
//! cannot use (another unit, several ranges, bad syntax) is ignored and the whole blob is
//! sent, as RFC 9110 allows; a range that starts past the end is unsatisfiable (416).

use std::ops::Range;

/// What to send for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Requested {
    /// The whole blob (200).
    Whole,
    /// These bytes (206).
    Part(Range<u64>),
    /// Nothing: the range lies outside the blob (416).
    Unsatisfiable,
}

/// Resolves a `Range` header value against a blob of `length` bytes.
pub(super) fn resolve(value: &str, length: u64) -> Requested {
    let Some((unit, spec)) = value.trim().split_once('=') else {
        return Requested::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Requested::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Requested::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // "-N": the last N bytes.
        return match number(last) {
            None => Requested::Whole,
            Some(0) => Requested::Unsatisfiable,
            Some(_) if length == 0 => Requested::Unsatisfiable,
            Some(suffix) => Requested::Part(length - suffix.min(length)..length),
        };
    }
    // "A-" or "A-B".
    let Some(start) = number(first) else {
        return Requested::Whole;
    };
    let last = match (last.is_empty(), number(last)) {
        (true, _) => None,
        (false, Some(last)) if last >= start => Some(last),
        (false, _) => return Requested::Whole,
    };
    if start >= length {
        return Requested::Unsatisfiable;
    }
    let end = last.map_or(length, |last| last.saturating_add(1).min(length));
    Requested::Part(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges_resolve_like_rfc_9110_says() {
        use Requested::*;
        assert_eq!(resolve("bytes=0-9", 100), Part(0..10));
        assert_eq!(resolve("bytes=90-", 100), Part(90..100));
        assert_eq!(resolve("bytes=-10", 100), Part(90..100));
        assert_eq!(
            resolve("bytes=-500", 100),
            Part(0..100),
            "suffix past the start"
        );
        assert_eq!(resolve("bytes=50-500", 100), Part(50..100), "last clamped");
        assert_eq!(resolve("BYTES = 1-1", 100), Part(1..2));
        assert_eq!(resolve("bytes=100-", 100), Unsatisfiable);
        assert_eq!(resolve("bytes=-0", 100), Unsatisfiable);
        assert_eq!(resolve("bytes=0-", 0), Unsatisfiable);
        assert_eq!(resolve("bytes=-1", 0), Unsatisfiable);
        assert_eq!(resolve("bytes=5-2", 100), Whole, "backwards is invalid");
        assert_eq!(resolve("bytes=0-1,5-6", 100), Whole, "several ranges");
        assert_eq!(resolve("items=0-1", 100), Whole, "another unit");
        assert_eq!(resolve("bytes=x-1", 100), Whole);
        assert_eq!(resolve("bytes=1-x", 100), Whole);
        assert_eq!(resolve("bytes=+1-2", 100), Whole);
        assert_eq!(resolve("bytes=-", 100), Whole);
        assert_eq!(resolve("garbage", 100), Whole);
    }
}
