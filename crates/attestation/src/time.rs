//! The few date formats the collateral uses, read without a date library: RFC 3339 in Intel's
//! JSON (`2025-07-19T10:01:18Z`) and the DER times of a CRL's `nextUpdate`. Only used to name
//! which collateral item is out of date; dcap-qvl enforces the same dates independently.

/// Seconds since the Unix epoch of an RFC 3339 date-time (`Z` or `±hh:mm` offset, optional
/// fraction), or `None` if it is not one or lies before 1970.
pub(crate) fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let seconds = civil_seconds(
        i64::from(digits(&b[0..4])?),
        digits(&b[5..7])?,
        digits(&b[8..10])?,
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    )?;
    let mut rest = &b[19..];
    if let Some((b'.', fraction)) = rest.split_first() {
        let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        rest = &fraction[len..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = i64::from(hours * 3600 + minutes * 60);
            if *sign == b'+' { offset } else { -offset }
        }
        _ => return None,
    };
    u64::try_from(seconds - offset).ok()
}

/// Seconds since the Unix epoch of a DER `UTCTime` (tag 0x17, `YYMMDDHHMMSSZ`) or
/// `GeneralizedTime` (tag 0x18, `YYYYMMDDHHMMSSZ`), as X.509 profiles them.
pub(crate) fn parse_der_time(tag: u8, value: &[u8]) -> Option<u64> {
    let (year, rest) = match (tag, value.len()) {
        (0x17, 13) => {
            let yy = i64::from(digits(&value[..2])?);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &value[2..])
        }
        (0x18, 15) => (i64::from(digits(&value[..4])?), &value[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let seconds = civil_seconds(
        year,
        digits(&rest[0..2])?,
        digits(&rest[2..4])?,
        digits(&rest[4..6])?,
        digits(&rest[6..8])?,
        digits(&rest[8..10])?,
    )?;
    u64::try_from(seconds).ok()
}

/// `2025-07-19T10:01:18Z` for a Unix time, for error messages.
pub(crate) fn format_rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn digits(text: &[u8]) -> Option<u32> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0')))
}

fn civil_seconds(year: i64, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Option<i64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + i64::from(hour * 3600 + min * 60 + sec))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One DER element: its tag, its contents and what follows it; `None` if truncated.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (value, rest) = rest.split_at(len);
    Some((tag, value, rest))
}

/// A DER CRL's `nextUpdate` (RFC 5280 `TBSCertList`), if it has one and it parses.
pub(crate) fn crl_next_update(der: &[u8]) -> Option<u64> {
    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    let (SEQUENCE, certificate_list, _) = der_element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der_element(certificate_list)? else {
        return None;
    };
    let (tag, _, after) = der_element(tbs)?;
    let rest = if tag == INTEGER { after } else { tbs };
    let (SEQUENCE, _, rest) = der_element(rest)? else {
        return None; // signature algorithm
    };
    let (SEQUENCE, _, rest) = der_element(rest)? else {
        return None; // issuer
    };
    let (_, _, rest) = der_element(rest)?; // thisUpdate
    let (tag, next_update, _) = der_element(rest)?;
    parse_der_time(tag, next_update)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        for (text, unix) in [
            ("1970-01-01T00:00:00Z", 0),
            ("2025-07-19T10:01:18Z", 1_752_919_278),
            ("2000-02-29T23:59:59Z", 951_868_799),
        ] {
            assert_eq!(parse_rfc3339(text), Some(unix), "{text}");
            assert_eq!(format_rfc3339(unix), text);
        }
        assert_eq!(
            parse_rfc3339("2025-07-19T12:01:18.5+02:00"),
            Some(1_752_919_278)
        );
        for bad in [
            "",
            "2025-07-19",
            "2025-13-19T10:01:18Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn der_times() {
        assert_eq!(parse_der_time(0x17, b"250719100118Z"), Some(1_752_919_278));
        assert_eq!(
            parse_der_time(0x18, b"20250719100118Z"),
            Some(1_752_919_278)
        );
        assert_eq!(parse_der_time(0x17, b"2507191001Z"), None);
        assert_eq!(crl_next_update(&[0x30, 0x85]), None);
    }
}
