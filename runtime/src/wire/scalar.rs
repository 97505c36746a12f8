//! The string forms the schema's scalar types take on the typed wires (gRPC): decimals,
//! dates, RFC 3339 times and durations. Each parser names the field (`path`) it failed on.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::wire::service::Duration;

/// A decimal, exactly as written (no rounding, surrounding spaces ignored).
pub fn decimal_from(s: String, path: &str) -> Result<Decimal, String> {
    Decimal::from_str_exact(s.trim()).map_err(|_| format!("`{path}`: `{s}` is not a decimal"))
}

/// A date as `YYYY-MM-DD`.
pub fn date_from(s: &str, path: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("`{path}`: `{s}` is not a date (YYYY-MM-DD)"))
}

/// An RFC 3339 time, converted to UTC.
pub fn datetime_from(s: &str, path: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("`{path}`: `{s}` is not an RFC 3339 time"))
}

/// A duration as seconds with an `s` suffix (see [`Duration`]).
pub fn duration_from(s: &str, path: &str) -> Result<Duration, String> {
    s.parse().map_err(|e| format!("`{path}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_forms_name_their_field() {
        assert_eq!(
            decimal_from("1.50".into(), "amount").map(|d| d.to_string()),
            Ok("1.50".into())
        );
        assert!(decimal_from("1,5".into(), "amount").is_err_and(|e| e.contains("`amount`")));
        assert!(date_from("2024-02-30", "day").is_err_and(|e| e.contains("`day`")));
        assert!(datetime_from("2024-01-01T00:00:00+02:00", "t").is_ok());
        assert!(duration_from("5", "delta").is_err_and(|e| e.contains("`delta`")));
    }
}
