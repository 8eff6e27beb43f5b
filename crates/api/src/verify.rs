//! Checks that make a client independent of the node's honesty.

use crate::rpc::{AccountJson, ChainInfo, HeaderJson, HeadersJson, StateValuesJson, parse_digest};
use commonware_codec::{Copying, DecodeExt};
use commonware_consensus::simplex::{
    scheme::bls12381_threshold::standard as threshold, types::Finalization,
};
use commonware_cryptography::{
    bls12381::primitives::{group::G2, variant::MinSig},
    ed25519,
};
use phala_chain::balances::Account;
use phala_types::Digest;
use serde::{Deserialize, Serialize};

type Scheme = threshold::Scheme<ed25519::PublicKey, MinSig>;

/// Why a proof or certificate does not hold.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed input: {0}")]
    Malformed(String),
    #[error("the state proof does not hold: {0}")]
    Proof(String),
    #[error("the proven account differs from the one reported")]
    AccountMismatch,
    #[error("the certificate is for block {certified}, not {expected}")]
    WrongBlock { certified: String, expected: String },
    #[error("the certificate's signature does not verify against the chain's group key")]
    BadSignature,
    #[error("the node serves another chain: its {what} is {found}, the trusted one is {trusted}")]
    OtherChain {
        what: &'static str,
        found: String,
        trusted: String,
    },
    #[error("the headers do not prove block {height}: {reason}")]
    Unproven { height: u64, reason: String },
}

/// What a client trusts about a chain: taken from the user (a chain spec, or remembered at
/// first use), never from the node it is asking, so that a node cannot swap in a group key of
/// its own making.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedChain {
    pub chain_id: String,
    pub genesis_hash: String,
    /// The 96-byte BLS group key (hex) every finality certificate verifies against.
    pub identity: String,
    /// The consensus namespace (hex).
    pub namespace: String,
}

impl TrustedChain {
    /// What a node says of its chain (to remember at first use).
    pub fn from_info(info: &ChainInfo) -> Self {
        TrustedChain {
            chain_id: info.chain_id.clone(),
            genesis_hash: info.genesis_hash.clone(),
            identity: info.identity.clone(),
            namespace: info.namespace.clone(),
        }
    }

    /// Refuses a node whose chain is not this one.
    pub fn check(&self, info: &ChainInfo) -> Result<(), VerifyError> {
        let fields = [
            ("genesis hash", &info.genesis_hash, &self.genesis_hash),
            ("group key", &info.identity, &self.identity),
            ("consensus namespace", &info.namespace, &self.namespace),
        ];
        for (what, found, trusted) in fields {
            if found != trusted {
                return Err(VerifyError::OtherChain {
                    what,
                    found: found.clone(),
                    trusted: trusted.clone(),
                });
            }
        }
        Ok(())
    }

    fn key_bytes(&self) -> Result<(Vec<u8>, Vec<u8>), VerifyError> {
        let malformed = |what: &str| VerifyError::Malformed(format!("trusted {what} is not hex"));
        Ok((
            hex::decode(&self.namespace).map_err(|_| malformed("namespace"))?,
            hex::decode(&self.identity).map_err(|_| malformed("group key"))?,
        ))
    }
}

/// Checks that `headers` prove the header of `height` final under the trusted group key: the
/// first is at `height`, each next one names the previous one's recomputed hash as parent, and
/// the certificate verifies for the last. Returns the proven header.
pub fn verify_headers(
    trust: &TrustedChain,
    height: u64,
    headers: &HeadersJson,
) -> Result<phala_types::Header, VerifyError> {
    let unproven = |reason: &str| VerifyError::Unproven {
        height,
        reason: reason.to_string(),
    };
    let parsed = headers
        .headers
        .iter()
        .map(HeaderJson::to_header)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let (first, last) = match (parsed.first(), parsed.last()) {
        (Some(first), Some(last)) => (first, last),
        _ => return Err(unproven("no headers")),
    };
    if first.height != height {
        return Err(unproven("the first header is at another height"));
    }
    for pair in parsed.windows(2) {
        if pair[1].parent != pair[0].hash() || pair[1].height != pair[0].height + 1 {
            return Err(unproven("the headers do not link by parent hashes"));
        }
    }
    let certificate = hex::decode(&headers.certificate)
        .map_err(|_| VerifyError::Malformed("certificate is not hex".into()))?;
    let (namespace, identity) = trust.key_bytes()?;
    verify_certificate(&namespace, &identity, &last.hash(), &certificate)?;
    Ok(first.clone())
}

/// Checks an account answer: its proof against the reported state root proves exactly the
/// reported nonce and balance. (That the state root is final is a separate check:
/// [`verify_finalization`] on the header carrying it.)
pub fn verify_account(account: &AccountJson) -> Result<(), VerifyError> {
    let root =
        parse_digest(&account.state_root).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let proof = account
        .proof
        .to_proof()
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let value = proof
        .verify(
            &root,
            &phala_chain::balances::keys::account(&account.address),
        )
        .map_err(|e| VerifyError::Proof(e.to_string()))?;
    let proven = value
        .and_then(|bytes| Account::decode(&bytes))
        .unwrap_or_default();
    if proven.nonce != account.nonce || proven.free != account.free {
        return Err(VerifyError::AccountMismatch);
    }
    Ok(())
}

/// A proven state value (`None`: proven absent).
pub type ProvenValue = Option<Vec<u8>>;

/// Checks a `state_values` answer: one value per key asked, in order, each proven against the
/// answer's state root. Returns that root and the proven values. (That the root is final is a
/// separate check: [`verify_headers`] for the answer's height.)
pub fn verify_values(
    keys: &[Vec<u8>],
    answer: &StateValuesJson,
) -> Result<(Digest, Vec<ProvenValue>), VerifyError> {
    let root =
        parse_digest(&answer.state_root).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    if answer.values.len() != keys.len() {
        return Err(VerifyError::Malformed(format!(
            "{} values for {} keys",
            answer.values.len(),
            keys.len()
        )));
    }
    keys.iter()
        .zip(&answer.values)
        .map(|(key, reported)| {
            let proof = reported
                .proof
                .to_proof()
                .map_err(|e| VerifyError::Malformed(e.to_string()))?;
            let proven = proof
                .verify(&root, key)
                .map_err(|e| VerifyError::Proof(e.to_string()))?;
            if proven.as_ref().map(hex::encode) != reported.value {
                return Err(VerifyError::Proof(format!(
                    "the value reported for key {} is not the proven one",
                    hex::encode(key)
                )));
            }
            Ok(proven)
        })
        .collect::<Result<_, _>>()
        .map(|values| (root, values))
}

/// Checks that `finalization_hex` certifies the block whose header has exactly these fields,
/// with the chain's group key: all a light client needs to trust a block.
pub fn verify_finalization(
    info: &ChainInfo,
    header: &HeaderJson,
    finalization_hex: &str,
) -> Result<(), VerifyError> {
    let malformed = |what: &str| VerifyError::Malformed(what.to_string());
    let bytes = hex::decode(finalization_hex).map_err(|_| malformed("certificate is not hex"))?;
    // The hash is recomputed from the fields: a node cannot pair a real certificate with a
    // forged header.
    let block = header
        .to_header()
        .map_err(|e| VerifyError::Malformed(e.to_string()))?
        .hash();
    let identity = hex::decode(&info.identity).map_err(|_| malformed("identity is not hex"))?;
    let namespace = hex::decode(&info.namespace).map_err(|_| malformed("namespace is not hex"))?;
    verify_certificate(&namespace, &identity, &block, &bytes)
}

/// Checks that the encoded `finalization` certifies the block with digest `block`, under the
/// consensus `namespace` and the chain's group key `identity` (96 bytes): the light-client
/// check, shared by every component that accepts blocks from an untrusted source.
pub fn verify_certificate(
    namespace: &[u8],
    identity: &[u8],
    block: &Digest,
    finalization: &[u8],
) -> Result<(), VerifyError> {
    let finalization = Finalization::<Scheme, Digest>::decode(Copying(finalization))
        .map_err(|e| VerifyError::Malformed(format!("certificate: {e}")))?;
    if finalization.proposal.payload != *block {
        return Err(VerifyError::WrongBlock {
            certified: hex::encode(finalization.proposal.payload),
            expected: hex::encode(block),
        });
    }
    let identity = G2::decode(Copying(identity))
        .map_err(|_| VerifyError::Malformed("identity".to_string()))?;
    let verifier = Scheme::certificate_verifier(namespace, identity);
    let mut rng = commonware_utils::sys_rng();
    if finalization.verify(&mut rng, &verifier, &commonware_parallel::Sequential) {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}
