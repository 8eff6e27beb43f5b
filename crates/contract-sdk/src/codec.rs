//! A small canonical binary codec for stored values: little-endian fixed-width integers,
//! u32-length-prefixed bytes, strings and vectors. Decoding never panics: bad bytes are errors.

use std::fmt;

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended early.
    Truncated,
    /// A value was out of range (a bool other than 0/1, invalid UTF-8, an unknown tag).
    Invalid(&'static str),
    /// Bytes were left after the value.
    Trailing,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "input ended early"),
            DecodeError::Invalid(what) => write!(f, "invalid {}", what),
            DecodeError::Trailing => write!(f, "trailing bytes"),
        }
    }
}

/// A value with a canonical encoding.
pub trait Encode {
    fn encode_to(&self, out: &mut Vec<u8>);

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_to(&mut out);
        out
    }
}

/// A value that decodes from its canonical encoding.
pub trait Decode: Sized {
    /// Decodes from the front of `input`, advancing it.
    fn decode_from(input: &mut &[u8]) -> Result<Self, DecodeError>;

    /// Decodes exactly `bytes`.
    fn decode_all(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = bytes;
        let value = Self::decode_from(&mut input)?;
        if input.is_empty() {
            Ok(value)
        } else {
            Err(DecodeError::Trailing)
        }
    }
}

fn take<'a>(input: &mut &'a [u8], len: usize) -> Result<&'a [u8], DecodeError> {
    if input.len() < len {
        return Err(DecodeError::Truncated);
    }
    let (head, rest) = input.split_at(len);
    *input = rest;
    Ok(head)
}

macro_rules! int_codec {
    ($($t:ty),*) => {$(
        impl Encode for $t {
            fn encode_to(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }

        impl Decode for $t {
            fn decode_from(input: &mut &[u8]) -> Result<Self, DecodeError> {
                let mut bytes = [0u8; std::mem::size_of::<$t>()];
                let len = bytes.len();
                bytes.copy_from_slice(take(input, len)?);
                Ok(<$t>::from_le_bytes(bytes))
            }
        }
    )*};
}

int_codec!(u8, u32, u64, u128, i64);

impl Encode for bool {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
}

impl Decode for bool {
    fn decode_from(input: &mut &[u8]) -> Result<Self, DecodeError> {
        match u8::decode_from(input)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("bool")),
        }
    }
}

impl Encode for [u8; 32] {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl Decode for [u8; 32] {
    fn decode_from(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let mut out = [0u8; 32];
        out.copy_from_slice(take(input, 32)?);
        Ok(out)
    }
}

fn decode_len(input: &mut &[u8]) -> Result<usize, DecodeError> {
    let len = u32::decode_from(input)? as usize;
    // A length can never exceed what is left: refuse before allocating.
    if len > input.len() {
        return Err(DecodeError::Truncated);
    }
    Ok(len)
}

impl Encode for String {
    fn encode_to(&self, out: &mut Vec<u8>) {
        (self.len() as u32).encode_to(out);
        out.extend_from_slice(self.as_bytes());
    }
}

impl Decode for String {
    fn decode_from(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let len = decode_len(input)?;
        String::from_utf8(take(input, len)?.to_vec()).map_err(|_| DecodeError::Invalid("UTF-8"))
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn encode_to(&self, out: &mut Vec<u8>) {
        (self.len() as u32).encode_to(out);
        for item in self {
            item.encode_to(out);
        }
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode_from(input: &mut &[u8]) -> Result<Self, DecodeError> {
        // Every item takes at least one byte, so the length is bounded by what is left.
        let len = decode_len(input)?;
        let mut out = Vec::with_capacity(len);
        for _ in 0..len {
            out.push(T::decode_from(input)?);
        }
        Ok(out)
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                value.encode_to(out);
            }
        }
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode_from(input: &mut &[u8]) -> Result<Self, DecodeError> {
        match u8::decode_from(input)? {
            0 => Ok(None),
            1 => Ok(Some(T::decode_from(input)?)),
            _ => Err(DecodeError::Invalid("option tag")),
        }
    }
}

impl<A: Encode, B: Encode> Encode for (A, B) {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.0.encode_to(out);
        self.1.encode_to(out);
    }
}

impl<A: Decode, B: Decode> Decode for (A, B) {
    fn decode_from(input: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok((A::decode_from(input)?, B::decode_from(input)?))
    }
}

impl<A: Encode, B: Encode, C: Encode> Encode for (A, B, C) {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.0.encode_to(out);
        self.1.encode_to(out);
        self.2.encode_to(out);
    }
}

impl<A: Decode, B: Decode, C: Decode> Decode for (A, B, C) {
    fn decode_from(input: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok((
            A::decode_from(input)?,
            B::decode_from(input)?,
            C::decode_from(input)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let value: Vec<(String, Option<u64>)> = vec![("a".into(), Some(7)), ("bc".into(), None)];
        assert_eq!(
            Vec::<(String, Option<u64>)>::decode_all(&value.encode()),
            Ok(value)
        );
        let key = [9u8; 32];
        assert_eq!(<[u8; 32]>::decode_all(&key.encode()), Ok(key));
        assert_eq!(u128::decode_all(&u128::MAX.encode()), Ok(u128::MAX));
    }

    #[test]
    fn bad_bytes_are_errors() {
        assert_eq!(u64::decode_all(&[1, 2]), Err(DecodeError::Truncated));
        assert_eq!(bool::decode_all(&[2]), Err(DecodeError::Invalid("bool")));
        assert_eq!(u8::decode_all(&[1, 2]), Err(DecodeError::Trailing));
        // A huge length prefix is refused without allocating.
        assert_eq!(
            Vec::<u8>::decode_all(&[255, 255, 255, 255]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            String::decode_all(&[1, 0, 0, 0, 0xff]),
            Err(DecodeError::Invalid("UTF-8"))
        );
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37) as u8).collect();
            let _ = Vec::<(String, Option<u64>)>::decode_all(&bytes);
        }
    }
}
