//! Account addresses: an ed25519 public key, shown as bech32m with the `pha` prefix so that a
//! typo is caught by the checksum instead of sending funds into the void.

use bech32::{Bech32m, Hrp};
use bytes::BufMut;
use commonware_codec::Buf;
use commonware_codec::{Error as CodecError, FixedSize, Read, Write};
use std::{fmt, str::FromStr};
use thiserror::Error;

/// Human-readable prefix of every address.
pub const ADDRESS_HRP: &str = "pha";

/// An account or origin: the 32 bytes of an ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Address(pub [u8; 32]);

/// Why a text is not an address.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("not a bech32m address: {0}")]
    Encoding(String),
    #[error("address prefix is `{0}`, expected `{ADDRESS_HRP}`")]
    Prefix(String),
    #[error("address holds {0} bytes, expected 32")]
    Length(usize),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hrp = Hrp::parse_unchecked(ADDRESS_HRP);
        let text = bech32::encode::<Bech32m>(hrp, &self.0).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (hrp, data) =
            bech32::decode(text.trim()).map_err(|e| AddressError::Encoding(e.to_string()))?;
        if hrp.as_str() != ADDRESS_HRP {
            return Err(AddressError::Prefix(hrp.to_string()));
        }
        let bytes: [u8; 32] = data
            .as_slice()
            .try_into()
            .map_err(|_| AddressError::Length(data.len()))?;
        Ok(Address(bytes))
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Write for Address {
    fn write(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }
}

impl FixedSize for Address {
    const SIZE: usize = 32;
}

impl Read for Address {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(Address(<[u8; 32]>::read_cfg(buf, &())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_catches_typos() {
        let address = Address([7u8; 32]);
        let text = address.to_string();
        assert!(text.starts_with("pha1"));
        assert_eq!(text.parse::<Address>(), Ok(address));
        let mut typo: Vec<char> = text.chars().collect();
        let last = typo.len() - 1;
        typo[last] = if typo[last] == 'q' { 'p' } else { 'q' };
        let typo: String = typo.into_iter().collect();
        assert!(matches!(
            typo.parse::<Address>(),
            Err(AddressError::Encoding(_))
        ));
    }

    #[test]
    fn rejects_foreign_prefix_and_length() {
        let hrp = Hrp::parse_unchecked("btc");
        let foreign = bech32::encode::<Bech32m>(hrp, &[1u8; 32]).unwrap();
        assert_eq!(
            foreign.parse::<Address>(),
            Err(AddressError::Prefix("btc".into()))
        );
        let short = bech32::encode::<Bech32m>(Hrp::parse_unchecked("pha"), &[1u8; 20]).unwrap();
        assert_eq!(short.parse::<Address>(), Err(AddressError::Length(20)));
    }
}
