//! Numeric conversions with their meaning spelt out once, for the cast
//! lints: out-of-range values saturate (and a float's NaN becomes 0, as
//! Rust's float-to-integer `as` defines), which is what every caller wants
//! for sizes, counts and durations.

use std::time::Duration;

/// A non-negative float rounded toward zero, saturating at `u64::MAX`.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // why: `as` saturates.
pub fn f64_to_u64(x: f64) -> u64 {
    x as u64
}

/// A float rounded toward zero, saturating at the `i64` bounds.
#[allow(clippy::cast_possible_truncation)] // why: `as` saturates.
pub fn f64_to_i64(x: f64) -> i64 {
    x as i64
}

/// A non-negative float rounded toward zero, saturating at `usize::MAX`.
pub fn f64_to_usize(x: f64) -> usize {
    u64_to_usize(f64_to_u64(x))
}

pub fn u64_to_usize(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

pub fn usize_to_u32(x: usize) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds for a C `int` timeout, saturating at `i32::MAX`.
pub fn millis_i32(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// A count the request gives, if it is one (a negative number is none, as
/// JSON's `as_u64` reads it).
pub fn count(v: Option<i64>) -> Option<u64> {
    v.and_then(|n| u64::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_saturate() {
        assert_eq!(f64_to_u64(-1.5), 0);
        assert_eq!(f64_to_u64(f64::NAN), 0);
        assert_eq!(f64_to_u64(1e30), u64::MAX);
        assert_eq!(f64_to_i64(-2.7), -2);
        assert_eq!(usize_to_u32(usize::MAX), u32::MAX);
        assert_eq!(millis_i32(Duration::from_secs(u64::MAX)), i32::MAX);
        assert_eq!(micros(Duration::from_millis(3)), 3000);
    }
}
