//! PHA amounts: integers of the smallest unit, 12 decimals, parsed and shown as decimal PHA.

use thiserror::Error;

/// An amount of the smallest PHA unit. `u128` because the total supply (1e21 units) exceeds `u64`.
pub type Balance = u128;

/// Decimal places of one PHA.
pub const DECIMALS: u32 = 12;

/// Smallest units in one PHA.
pub const UNIT: Balance = 1_000_000_000_000;

/// The fixed total supply: 1,000,000,000 PHA, minted at genesis and never more.
pub const TOTAL_SUPPLY: Balance = 1_000_000_000 * UNIT;

/// Why a decimal PHA amount could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error("amount `{0}` is not a decimal number")]
    NotDecimal(String),
    #[error("amount `{0}` has more than {DECIMALS} decimals")]
    TooPrecise(String),
    #[error("amount `{0}` exceeds the total supply")]
    TooLarge(String),
}

/// Parses a decimal PHA amount such as `1.5` into smallest units.
pub fn parse_pha(text: &str) -> Result<Balance, AmountError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
        return Err(AmountError::NotDecimal(text.into()));
    }
    if frac.len() > DECIMALS as usize {
        return Err(AmountError::TooPrecise(text.into()));
    }
    let too_large = || AmountError::TooLarge(text.into());
    let whole: Balance = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    let frac_units: Balance = if frac.is_empty() {
        0
    } else {
        frac.parse::<Balance>().map_err(|_| too_large())? * 10u128.pow(DECIMALS - frac.len() as u32)
    };
    let total = whole
        .checked_mul(UNIT)
        .and_then(|w| w.checked_add(frac_units))
        .ok_or_else(too_large)?;
    if total > TOTAL_SUPPLY {
        return Err(too_large());
    }
    Ok(total)
}

/// Formats smallest units as decimal PHA without trailing zeros, e.g. `1.5 PHA`.
pub fn format_pha(amount: Balance) -> String {
    let whole = amount / UNIT;
    let frac = amount % UNIT;
    if frac == 0 {
        return format!("{whole} PHA");
    }
    let frac = format!("{frac:012}");
    format!("{whole}.{} PHA", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        assert_eq!(parse_pha("1.5"), Ok(1_500_000_000_000));
        assert_eq!(parse_pha("0.000000000001"), Ok(1));
        assert_eq!(parse_pha(".25"), Ok(UNIT / 4));
        assert_eq!(parse_pha("1000000000"), Ok(TOTAL_SUPPLY));
        assert_eq!(format_pha(1_500_000_000_000), "1.5 PHA");
        assert_eq!(format_pha(7 * UNIT), "7 PHA");
        assert_eq!(format_pha(1), "0.000000000001 PHA");
    }

    #[test]
    fn rejects_bad_amounts() {
        assert_eq!(parse_pha(""), Err(AmountError::Empty));
        assert!(matches!(
            parse_pha("1.2.3"),
            Err(AmountError::NotDecimal(_))
        ));
        assert!(matches!(parse_pha("-1"), Err(AmountError::NotDecimal(_))));
        assert!(matches!(parse_pha("."), Err(AmountError::NotDecimal(_))));
        assert!(matches!(
            parse_pha("0.0000000000001"),
            Err(AmountError::TooPrecise(_))
        ));
        assert!(matches!(
            parse_pha("1000000000.000000000001"),
            Err(AmountError::TooLarge(_))
        ));
        assert!(matches!(
            parse_pha("99999999999999999999999999999999999999999"),
            Err(AmountError::TooLarge(_))
        ));
    }
}

/// Serializes `u128` amounts as decimal strings: JSON numbers lose precision past 2^53.
pub mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
