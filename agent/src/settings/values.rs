//! Values written either as a whole number or as a string with units: sizes and durations.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a size or duration key may hold before it is read.
#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrStr {
    Int(u64),
    Str(String),
}

/// Reads an integer with `from_int` or a string with `from_str`; anything else gets `expected`.
fn int_or_str<'de, D, T>(
    d: D,
    from_int: impl FnOnce(u64) -> T,
    from_str: impl FnOnce(&str) -> Result<T, String>,
    expected: &str,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    match IntOrStr::deserialize(d) {
        Ok(IntOrStr::Int(n)) => Ok(from_int(n)),
        Ok(IntOrStr::Str(s)) => from_str(&s).map_err(serde::de::Error::custom),
        Err(_) => Err(serde::de::Error::custom(expected)),
    }
}

/// A size in bytes, written as an integer or as a string with a K, M, G or T suffix (powers of 1024).
///
/// ```
/// use cc_ci_agent::settings::config::ByteSize;
/// assert_eq!(ByteSize::parse("200G"), Ok(ByteSize(200 * 1024 * 1024 * 1024)));
/// assert!(ByteSize::parse("1.5G").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_or_str(
            d,
            ByteSize,
            ByteSize::parse,
            "expected a size: a whole number of bytes or a string such as \"200G\"",
        )
    }
}

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (digits, shift) = match s.strip_suffix(['K', 'M', 'G', 'T']) {
            Some(d) => (
                d,
                10 * (1 + "KMGT".find(&s[s.len() - 1..]).unwrap_or(0) as u32),
            ),
            None => (s, 0),
        };
        let bad = || format!("size {s:?} must be digits with an optional K, M, G or T suffix");
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        n.checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

/// A duration: whole seconds, or a string such as "120s", "2m", "1h 30m".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_or_str(
            d,
            |n| Seconds(Duration::from_secs(n)),
            |s| {
                humantime::parse_duration(s)
                    .map(Seconds)
                    .map_err(|e| format!("duration {s:?}: {e}"))
            },
            "expected a duration: whole seconds or a string such as \"120s\" or \"2m\"",
        )
    }
}
