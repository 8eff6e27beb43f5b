//! Addresses as users see them: bech32m (BIP-350) with the `pha` prefix, as the chain shows.

use crate::Address;

/// Prefix of every address.
pub const HRP: &str = "pha";
const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const BECH32M_CONST: u32 = 0x2bc8_30a3;

fn polymod(values: &[u8]) -> u32 {
    const GEN: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    let mut chk: u32 = 1;
    for value in values {
        let top = chk >> 25;
        chk = ((chk & 0x01ff_ffff) << 5) ^ u32::from(*value);
        for (i, gen) in GEN.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= gen;
            }
        }
    }
    chk
}

fn expand_hrp(hrp: &str) -> Vec<u8> {
    let mut out: Vec<u8> = hrp.bytes().map(|b| b >> 5).collect();
    out.push(0);
    out.extend(hrp.bytes().map(|b| b & 31));
    out
}

/// Regroups bits (8 to 5 or 5 to 8); `None` for non-zero padding when narrowing.
fn convert_bits(data: &[u8], from: u32, to: u32, pad: bool) -> Option<Vec<u8>> {
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    let max = (1u32 << to) - 1;
    let mut out = Vec::new();
    for value in data {
        acc = (acc << from) | u32::from(*value);
        bits += from;
        while bits >= to {
            bits -= to;
            out.push(((acc >> bits) & max) as u8);
        }
    }
    if pad {
        if bits > 0 {
            out.push(((acc << (to - bits)) & max) as u8);
        }
    } else if bits >= from || ((acc << (to - bits)) & max) != 0 {
        return None;
    }
    Some(out)
}

/// Formats an address as `pha1...`.
pub fn format(address: &Address) -> String {
    let data = convert_bits(address, 8, 5, true).unwrap_or_default();
    let mut values = expand_hrp(HRP);
    values.extend_from_slice(&data);
    values.extend_from_slice(&[0; 6]);
    let checksum = polymod(&values) ^ BECH32M_CONST;
    let mut out = String::from(HRP);
    out.push('1');
    for value in data {
        out.push(CHARSET[value as usize] as char);
    }
    for i in 0..6 {
        out.push(CHARSET[((checksum >> (5 * (5 - i))) & 31) as usize] as char);
    }
    out
}

/// Parses a bech32m string with the `pha` prefix into an address.
pub fn parse(text: &str) -> Result<Address, String> {
    let (hrp, data) = decode(text)?;
    if hrp != HRP {
        return Err(format!("address prefix is `{}`, expected `{}`", hrp, HRP));
    }
    let bytes = convert_bits(&data, 5, 8, false).ok_or("address has invalid padding")?;
    let mut address = [0u8; 32];
    if bytes.len() != 32 {
        return Err(format!("address holds {} bytes, expected 32", bytes.len()));
    }
    address.copy_from_slice(&bytes);
    Ok(address)
}

/// Decodes any bech32m string into its prefix and 5-bit data (checksum removed).
pub fn decode(text: &str) -> Result<(String, Vec<u8>), String> {
    let invalid = || format!("`{}` is not a valid address", text);
    if text.len() > 120 || text.bytes().any(|b| !(33..=126).contains(&b)) {
        return Err(invalid());
    }
    let lower = text.to_ascii_lowercase();
    if lower != text && text.to_ascii_uppercase() != text {
        return Err(invalid());
    }
    let separator = lower.rfind('1').ok_or_else(invalid)?;
    if separator == 0 || separator + 7 > lower.len() {
        return Err(invalid());
    }
    let (hrp, rest) = lower.split_at(separator);
    let mut data = Vec::with_capacity(rest.len() - 1);
    for byte in rest[1..].bytes() {
        let value = CHARSET
            .iter()
            .position(|c| *c == byte)
            .ok_or_else(invalid)?;
        data.push(value as u8);
    }
    let mut values = expand_hrp(hrp);
    values.extend_from_slice(&data);
    if polymod(&values) != BECH32M_CONST {
        return Err(format!("`{}` has a bad checksum (a typo?)", text));
    }
    data.truncate(data.len() - 6);
    Ok((hrp.to_string(), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_typos_are_caught() {
        for seed in 0..8u8 {
            let address = [seed.wrapping_mul(31); 32];
            let text = format(&address);
            assert!(text.starts_with("pha1"));
            assert_eq!(parse(&text), Ok(address));
            let bytes = text.as_bytes();
            for i in 4..bytes.len() {
                let mut typo = bytes.to_vec();
                typo[i] = if typo[i] == b'q' { b'p' } else { b'q' };
                assert!(parse(std::str::from_utf8(&typo).unwrap()).is_err());
            }
        }
    }

    #[test]
    fn bip350_vectors() {
        for valid in [
            "A1LQFN3A",
            "a1lqfn3a",
            "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
            "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
            "?1v759aa",
        ] {
            assert!(decode(valid).is_ok(), "{}", valid);
        }
        for invalid in ["A1G7SGD8", "abc1rzg", "1xj0phk", "qyrz8wqd2c9m"] {
            assert!(decode(invalid).is_err(), "{}", invalid);
        }
    }
}
