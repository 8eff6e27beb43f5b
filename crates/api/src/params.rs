//! The params of the node's RPC methods, decoded from the raw JSON text of a request (what
//! jsonrpsee's `Params::as_str` gives). Every bound a method puts on its params is here, so the
//! node's handlers only act on values already checked, and the `rpc_params` fuzz target
//! reaches every decoder a caller can reach.

use commonware_codec::{Copying, DecodeExt};
use phala_types::{Address, ContractId, Destination, Digest, SignedTransaction, limits};
use serde::de::DeserializeOwned;

/// Most transactions in one `submit_transactions` call.
pub const MAX_SUBMIT_BATCH: usize = 4_096;
/// Most keys one `state_values` call proves.
pub const MAX_STATE_VALUES: usize = 128;
/// Longest key `state_value(s)` takes (every key the chain writes is shorter).
pub const MAX_STATE_KEY: usize = 256;
/// Most streams one `stream_witness` call proves.
pub const MAX_WITNESS_STREAMS: usize = 16;
/// Most backfill messages one `stream_witness` call proves.
pub const MAX_BACKFILL: usize = 10_000;

/// Why a request's params were refused: the message the caller gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("{0}")]
    Invalid(String),
    /// A transaction over the size limit, refused before decoding (`submit_transaction`
    /// answers it as a rejection with code `oversized`).
    #[error("{which} is {size} bytes, the limit is {limit}")]
    Oversized {
        which: String,
        size: usize,
        limit: usize,
    },
}

fn invalid(message: String) -> ParamsError {
    ParamsError::Invalid(message)
}

/// Decodes the whole params array as `T`, or refuses it with what was expected.
fn parse<T: DeserializeOwned>(raw: Option<&str>, expected: &str) -> Result<T, ParamsError> {
    serde_json::from_str(raw.unwrap_or("[]")).map_err(|_| invalid(format!("expected {expected}")))
}

/// Hex (with or without `0x`) of `what`.
pub fn hex_bytes(text: &str, what: &str) -> Result<Vec<u8>, ParamsError> {
    hex::decode(text.trim_start_matches("0x"))
        .map_err(|e| invalid(format!("{what} is not hex: {e}")))
}

/// 32 bytes of hex: a hash or an id.
pub fn hex32(text: &str, what: &str) -> Result<[u8; 32], ParamsError> {
    hex_bytes(text, what)?
        .try_into()
        .map_err(|_| invalid(format!("{what} must be 32 bytes")))
}

fn signed_transaction(text: &str, which: &str) -> Result<SignedTransaction, ParamsError> {
    let bytes = hex_bytes(text, which)?;
    if bytes.len() > limits::MAX_TX_SIZE {
        return Err(ParamsError::Oversized {
            which: which.into(),
            size: bytes.len(),
            limit: limits::MAX_TX_SIZE,
        });
    }
    SignedTransaction::decode(Copying(&bytes[..]))
        .map_err(|e| invalid(format!("{which} is not a signed transaction: {e}")))
}

/// `submit_transaction([hex])`.
pub fn transaction(raw: Option<&str>) -> Result<SignedTransaction, ParamsError> {
    let (text,): (String,) = parse(raw, "[the hex-encoded signed transaction]")?;
    signed_transaction(&text, "the transaction")
}

/// `submit_transactions([[hex, ...]])`.
pub fn transactions(raw: Option<&str>) -> Result<Vec<SignedTransaction>, ParamsError> {
    let (texts,): (Vec<String>,) = parse(raw, "[[hex-encoded signed transaction, ...]]")?;
    if texts.len() > MAX_SUBMIT_BATCH {
        return Err(invalid(format!(
            "at most {MAX_SUBMIT_BATCH} transactions per call"
        )));
    }
    texts
        .iter()
        .enumerate()
        .map(|(index, text)| signed_transaction(text, &format!("transaction {index}")))
        .collect()
}

/// `transaction_status([hash])`.
pub fn tx_hash(raw: Option<&str>) -> Result<Digest, ParamsError> {
    let (text,): (String,) = parse(raw, "[the transaction hash]")?;
    Ok(Digest(hex32(&text, "the hash")?))
}

/// `account([address])`.
pub fn address(raw: Option<&str>) -> Result<Address, ParamsError> {
    let (text,): (String,) = parse(raw, "[the account address]")?;
    text.parse().map_err(|e| invalid(format!("{e}")))
}

fn state_key_of(text: &str) -> Result<Vec<u8>, ParamsError> {
    let key = hex_bytes(text, "a key")?;
    if key.len() > MAX_STATE_KEY {
        return Err(invalid(format!("keys are at most {MAX_STATE_KEY} bytes")));
    }
    Ok(key)
}

/// `state_value([key_hex])`.
pub fn state_key(raw: Option<&str>) -> Result<Vec<u8>, ParamsError> {
    let (text,): (String,) = parse(raw, "[the hex-encoded state key]")?;
    state_key_of(&text)
}

/// `state_values([[key_hex, ...]])`.
pub fn state_keys(raw: Option<&str>) -> Result<Vec<Vec<u8>>, ParamsError> {
    let (texts,): (Vec<String>,) = parse(raw, "[[key_hex, ...]]")?;
    if texts.len() > MAX_STATE_VALUES {
        return Err(invalid(format!("at most {MAX_STATE_VALUES} keys per call")));
    }
    texts.iter().map(|text| state_key_of(text)).collect()
}

/// Which block `block` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockRef {
    /// The finalized head (`null` or no parameter).
    Head,
    Height(u64),
    Hash(Digest),
}

/// `block([height | hash | null])` (or no params).
pub fn block_ref(raw: Option<&str>) -> Result<BlockRef, ParamsError> {
    let args: Vec<serde_json::Value> = parse(raw, "[height | hash | null]")?;
    match args.into_iter().next() {
        None | Some(serde_json::Value::Null) => Ok(BlockRef::Head),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .map(BlockRef::Height)
            .ok_or_else(|| invalid("height is a non-negative integer".into())),
        Some(serde_json::Value::String(text)) => {
            Ok(BlockRef::Hash(Digest(hex32(&text, "the block hash")?)))
        }
        Some(_) => Err(invalid("expected a height, a block hash or null".into())),
    }
}

/// `outbox([height])`.
pub fn height(raw: Option<&str>) -> Result<u64, ParamsError> {
    let (height,): (u64,) = parse(raw, "one parameter: the block height")?;
    Ok(height)
}

/// `contract([id])`.
pub fn contract_id(raw: Option<&str>) -> Result<ContractId, ParamsError> {
    let (text,): (String,) = parse(raw, "[contract_id]")?;
    hex32(&text, "the contract id")
}

/// `code([hash])`.
pub fn code_hash(raw: Option<&str>) -> Result<[u8; 32], ParamsError> {
    let (text,): (String,) = parse(raw, "[code_hash]")?;
    hex32(&text, "the code hash")
}

/// `contract_report([id, index])`.
pub fn contract_report(raw: Option<&str>) -> Result<(ContractId, u64), ParamsError> {
    let (text, index): (String, u64) = parse(raw, "[contract_id, index]")?;
    Ok((hex32(&text, "the contract id")?, index))
}

/// `headers([from_height, limit])`.
pub fn headers(raw: Option<&str>) -> Result<(u64, u64), ParamsError> {
    parse(raw, "[from_height, limit]")
}

/// `stream_messages([destination, from_sequence, to_height])`.
pub fn stream_messages(raw: Option<&str>) -> Result<(Destination, u64, u64), ParamsError> {
    parse(raw, "[destination, from_sequence, to_height]")
}

/// Stream positions: `[[destination, sequence], ...]`.
pub type Streams = Vec<(Destination, u64)>;

/// What `stream_witness` proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessRequest {
    pub streams: Streams,
    pub origin: Option<Address>,
    pub backfill: Streams,
}

/// `stream_witness([streams, origin | null, backfill?])`.
pub fn stream_witness(raw: Option<&str>) -> Result<WitnessRequest, ParamsError> {
    let expected =
        "[[[destination, sequence], ...], origin | null, [[destination, sequence], ...]?]";
    let (streams, origin, backfill) = parse::<(Streams, Option<Address>, Streams)>(raw, expected)
        .or_else(|_| {
        parse::<(Streams, Option<Address>)>(raw, expected).map(|(s, o)| (s, o, Vec::new()))
    })?;
    if streams.len() > MAX_WITNESS_STREAMS {
        return Err(invalid(format!("at most {MAX_WITNESS_STREAMS} streams")));
    }
    if backfill.len() > MAX_BACKFILL {
        return Err(invalid(format!("at most {MAX_BACKFILL} backfill messages")));
    }
    Ok(WitnessRequest {
        streams,
        origin,
        backfill,
    })
}

/// Runs every decoder on `raw`: what the `rpc_params` fuzz target calls. None may panic.
pub fn decode_all(raw: Option<&str>) {
    let _ = transaction(raw);
    let _ = transactions(raw);
    let _ = tx_hash(raw);
    let _ = address(raw);
    let _ = state_key(raw);
    let _ = state_keys(raw);
    let _ = block_ref(raw);
    let _ = height(raw);
    let _ = contract_id(raw);
    let _ = code_hash(raw);
    let _ = contract_report(raw);
    let _ = headers(raw);
    let _ = stream_messages(raw);
    let _ = stream_witness(raw);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_takes_what_clients_send_and_refuses_the_rest_with_what_it_expected() {
        let hash = "ab".repeat(32);
        assert_eq!(
            block_ref(Some(&format!("[\"0x{hash}\"]"))).unwrap(),
            BlockRef::Hash(Digest([0xab; 32]))
        );
        assert_eq!(block_ref(None).unwrap(), BlockRef::Head);
        assert_eq!(block_ref(Some("[null]")).unwrap(), BlockRef::Head);
        assert_eq!(block_ref(Some("[7]")).unwrap(), BlockRef::Height(7));
        assert!(block_ref(Some("[-1]")).is_err());
        assert_eq!(
            contract_report(Some(&format!("[\"{hash}\", 3]"))).unwrap(),
            ([0xab; 32], 3)
        );
        assert_eq!(
            contract_id(Some("[\"abcd\"]")).unwrap_err().to_string(),
            "the contract id must be 32 bytes"
        );
        assert_eq!(
            headers(Some("[1]")).unwrap_err().to_string(),
            "expected [from_height, limit]"
        );
        let witness = stream_witness(Some(r#"[[[{"kind": "all"}, 3]], null]"#)).unwrap();
        assert_eq!(witness.streams, vec![(Destination::All, 3)]);
        assert!(witness.backfill.is_empty());
    }

    #[test]
    fn bounds_are_checked_before_any_work() {
        let keys: Vec<String> = (0..=MAX_STATE_VALUES).map(|_| "00".into()).collect();
        let raw = serde_json::to_string(&(keys,)).unwrap();
        assert!(state_keys(Some(&raw)).is_err());
        let long = "00".repeat(MAX_STATE_KEY + 1);
        assert!(state_key(Some(&format!("[\"{long}\"]"))).is_err());
        let streams: Vec<(Destination, u64)> = vec![(Destination::All, 0); MAX_WITNESS_STREAMS + 1];
        let raw = serde_json::to_string(&(streams, None::<Address>)).unwrap();
        assert!(stream_witness(Some(&raw)).is_err());
        let huge = "00".repeat(limits::MAX_TX_SIZE + 1);
        assert!(transaction(Some(&format!("[\"{huge}\"]"))).is_err());
    }
}
