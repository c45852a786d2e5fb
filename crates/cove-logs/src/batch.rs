//! The rules `PutLogEvents` applies to a batch: the ones that refuse the whole
//! call ([`check_batch`]) and the ones that skip single events and report them
//! in `rejectedLogEventsInfo` ([`classify`]).

use std::ops::Range;

/// Most events in one batch.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// Largest batch: the UTF-8 bytes of every message plus 26 bytes per event.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// What AWS counts for each event on top of its message.
pub const EVENT_OVERHEAD: usize = 26;
/// Widest time span one batch may cover.
pub const MAX_SPAN_MS: i64 = 24 * 3600 * 1000;
/// Events older than this are never stored.
pub const MAX_AGE_MS: i64 = 14 * DAY_MS;
/// Events further in the future than this are never stored.
pub const MAX_FUTURE_MS: i64 = 2 * 3600 * 1000;
pub const DAY_MS: i64 = 24 * 3600 * 1000;

/// The retention periods `PutRetentionPolicy` accepts, in days.
pub const RETENTION_DAYS: [i64; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// The bytes an event counts for in batch and response limits.
pub fn event_size(message: &str) -> usize {
    message.len() + EVENT_OVERHEAD
}

/// Checks the rules that refuse a whole batch; the error is the message of
/// an `InvalidParameterException`.
pub fn check_batch<S: AsRef<str>>(events: &[(i64, S)]) -> Result<(), String> {
    if events.len() > MAX_BATCH_EVENTS {
        return Err(format!(
            "A batch can contain at most {MAX_BATCH_EVENTS} log events; this one has {}.",
            events.len()
        ));
    }
    if events.windows(2).any(|w| w[1].0 < w[0].0) {
        return Err(
            "Log events in a single PutLogEvents request must be in chronological order.".into(),
        );
    }
    let size: usize = events.iter().map(|(_, m)| event_size(m.as_ref())).sum();
    if size > MAX_BATCH_BYTES {
        return Err(format!(
            "Upload too large: {size} bytes exceeds limit of {MAX_BATCH_BYTES}"
        ));
    }
    if let (Some(first), Some(last)) = (events.first(), events.last()) {
        if last.0.saturating_sub(first.0) > MAX_SPAN_MS {
            return Err(
                "The batch of log events in a single PutLogEvents request cannot span more than 24 hours."
                    .into(),
            );
        }
    }
    Ok(())
}

/// The events of a batch that are skipped, as AWS's `rejectedLogEventsInfo`
/// reports them (indexes into the batch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejected {
    /// The first event more than 2 hours in the future; it and every later one are skipped.
    pub too_new_start: Option<usize>,
    /// The last event older than 14 days; it and every earlier one are skipped.
    pub too_old_end: Option<usize>,
    /// The last event older than the group's retention period.
    pub expired_end: Option<usize>,
}

impl Rejected {
    pub fn any(&self) -> bool {
        self.too_new_start.is_some() || self.too_old_end.is_some() || self.expired_end.is_some()
    }
}

/// Splits a chronological batch into the range of events to store and the
/// rejected ones, at `now_ms` for a group keeping events `retention_days`.
pub fn classify(
    timestamps: &[i64],
    now_ms: i64,
    retention_days: Option<i64>,
) -> (Range<usize>, Rejected) {
    let too_old_before = now_ms.saturating_sub(MAX_AGE_MS);
    let expired_before = retention_days.map(|d| now_ms.saturating_sub(d.saturating_mul(DAY_MS)));
    let too_new_after = now_ms.saturating_add(MAX_FUTURE_MS);
    let mut rejected = Rejected::default();
    for (i, &ts) in timestamps.iter().enumerate() {
        if ts < too_old_before {
            rejected.too_old_end = Some(i);
        }
        if expired_before.is_some_and(|cut| ts < cut) {
            rejected.expired_end = Some(i);
        }
        if ts > too_new_after && rejected.too_new_start.is_none() {
            rejected.too_new_start = Some(i);
        }
    }
    let start = [rejected.too_old_end, rejected.expired_end]
        .into_iter()
        .flatten()
        .map(|i| i + 1)
        .max()
        .unwrap_or(0);
    let end = rejected
        .too_new_start
        .unwrap_or(timestamps.len())
        .max(start);
    (start..end, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn whole_batch_rules() {
        assert!(check_batch(&[(1, "a"), (1, "b"), (2, "c")]).is_ok());
        assert!(check_batch::<&str>(&[]).is_ok());
        let err = check_batch(&[(2, "a"), (1, "b")]).unwrap_err();
        assert_eq!(
            err,
            "Log events in a single PutLogEvents request must be in chronological order."
        );
        let err = check_batch(&[(0, "a"), (MAX_SPAN_MS + 1, "b")]).unwrap_err();
        assert!(err.contains("cannot span more than 24 hours"), "{err}");
        assert!(check_batch(&[(0, "a"), (MAX_SPAN_MS, "b")]).is_ok());
    }

    #[test]
    fn batch_size_counts_utf8_bytes_plus_26() {
        // Exactly at the limit: one event of 1,048,550 bytes.
        let exact = "x".repeat(MAX_BATCH_BYTES - EVENT_OVERHEAD);
        assert!(check_batch(&[(0, exact.as_str())]).is_ok());
        let over = "x".repeat(MAX_BATCH_BYTES - EVENT_OVERHEAD + 1);
        let err = check_batch(&[(0, over.as_str())]).unwrap_err();
        assert_eq!(
            err,
            "Upload too large: 1048577 bytes exceeds limit of 1048576"
        );
        // Multi-byte characters count by bytes.
        assert_eq!(event_size("é"), 28);
        let many: Vec<(i64, String)> = (0..MAX_BATCH_EVENTS + 1)
            .map(|i| (i64::try_from(i).unwrap(), "m".into()))
            .collect();
        assert!(check_batch(&many).unwrap_err().contains("at most 10000"));
    }

    #[test]
    fn too_old_too_new_and_expired_events_are_skipped() {
        let old = NOW - MAX_AGE_MS - 1;
        let new = NOW + MAX_FUTURE_MS + 1;
        let (range, rej) = classify(&[old, old, NOW, NOW, new, new], NOW, None);
        assert_eq!(range, 2..4);
        assert_eq!(
            rej,
            Rejected {
                too_new_start: Some(4),
                too_old_end: Some(1),
                expired_end: None
            }
        );
        // The boundaries themselves are accepted.
        let (range, rej) = classify(&[NOW - MAX_AGE_MS, NOW + MAX_FUTURE_MS], NOW, None);
        assert_eq!((range, rej.any()), (0..2, false));
        // Retention: a 1-day group refuses a 2-day-old event as expired.
        let (range, rej) = classify(&[NOW - 2 * DAY_MS, NOW], NOW, Some(1));
        assert_eq!(range, 1..2);
        assert_eq!(rej.expired_end, Some(0));
        assert_eq!(rej.too_old_end, None);
        // Everything rejected leaves an empty range.
        let (range, _) = classify(&[old, new], NOW, None);
        assert!(range.is_empty());
    }
}
