//! The contract's private key-value state: encrypted at rest by the worker, committed by hash.

use crate::codec::{Decode, Encode};
use crate::host;

/// The value under `key`, if any.
pub fn get(key: &[u8]) -> Option<Vec<u8>> {
    host::storage_get(key)
}

/// Writes `value` under `key` (at most 1 KiB key, 64 KiB value).
pub fn set(key: &[u8], value: &[u8]) {
    host::storage_set(key, value)
}

/// Deletes `key`.
pub fn remove(key: &[u8]) {
    host::storage_remove(key)
}

/// The decoded value under `key`; `Err` if it is stored but does not decode as `T`.
pub fn get_value<T: Decode>(key: &[u8]) -> Result<Option<T>, String> {
    match get(key) {
        None => Ok(None),
        Some(bytes) => T::decode_all(&bytes)
            .map(Some)
            .map_err(|e| format!("stored value is corrupt: {}", e)),
    }
}

/// Encodes and writes `value` under `key`.
pub fn set_value<T: Encode>(key: &[u8], value: &T) {
    set(key, &value.encode())
}
