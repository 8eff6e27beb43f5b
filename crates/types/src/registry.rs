//! What a worker shows the chain to be registered: its keys, the TEE evidence that binds them,
//! and the policy the chain judges that evidence by.
//!
//! The chain only stores and moves bytes here; `phala-attestation` verifies the quotes.

use crate::{Address, namespace};
use bytes::{BufMut, Bytes};
use commonware_codec::{
    Buf, Copying, Decode, Encode, EncodeSize, Error as CodecError, RangeCfg, Read, ReadExt, Write,
};
use commonware_cryptography::{Hasher, Sha256};

/// The kind of trusted execution environment a worker runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeeKind {
    /// No TEE at all: for development chains only, never secure.
    Simulated,
    /// Intel SGX with a DCAP quote (v3, as Gramine produces; dcap-qvl does not take SGX v4).
    SgxDcap,
    /// Intel TDX with a DCAP quote (v4 or v5), as produced through configfs-tsm.
    Tdx,
}

impl TeeKind {
    fn tag(self) -> u8 {
        match self {
            TeeKind::Simulated => 0,
            TeeKind::SgxDcap => 1,
            TeeKind::Tdx => 2,
        }
    }

    fn from_tag(tag: u8) -> Result<Self, CodecError> {
        Ok(match tag {
            0 => TeeKind::Simulated,
            1 => TeeKind::SgxDcap,
            2 => TeeKind::Tdx,
            _ => return Err(CodecError::InvalidEnum(tag)),
        })
    }
}

impl std::fmt::Display for TeeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TeeKind::Simulated => "simulated",
            TeeKind::SgxDcap => "sgx-dcap",
            TeeKind::Tdx => "tdx",
        })
    }
}

impl Write for TeeKind {
    fn write(&self, buf: &mut impl BufMut) {
        self.tag().write(buf);
    }
}

impl EncodeSize for TeeKind {
    fn encode_size(&self) -> usize {
        1
    }
}

impl Read for TeeKind {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        TeeKind::from_tag(u8::read(buf)?)
    }
}

/// Largest quote accepted (real ones are 4-11 KiB).
pub const MAX_QUOTE: usize = 16 * 1024;
/// Largest collateral accepted (Intel's JSON collateral is 14-25 KiB).
pub const MAX_COLLATERAL: usize = 40 * 1024;

/// A TEE's statement about the program it runs and the 64 bytes of report data it chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// Insecure stand-in: the host simply claims a measurement. Accepted on dev chains only.
    Simulated {
        measurement: [u8; 32],
        report_data: [u8; 64],
    },
    /// An SGX DCAP quote and Intel's collateral for it (dcap-qvl's JSON `QuoteCollateralV3`).
    SgxDcap { quote: Bytes, collateral: Bytes },
    /// A TDX DCAP quote and Intel's collateral for it.
    Tdx { quote: Bytes, collateral: Bytes },
}

impl Evidence {
    /// The kind of TEE this evidence claims to come from.
    pub fn kind(&self) -> TeeKind {
        match self {
            Evidence::Simulated { .. } => TeeKind::Simulated,
            Evidence::SgxDcap { .. } => TeeKind::SgxDcap,
            Evidence::Tdx { .. } => TeeKind::Tdx,
        }
    }
}

impl Write for Evidence {
    fn write(&self, buf: &mut impl BufMut) {
        self.kind().write(buf);
        match self {
            Evidence::Simulated {
                measurement,
                report_data,
            } => {
                measurement.write(buf);
                report_data.write(buf);
            }
            Evidence::SgxDcap { quote, collateral } | Evidence::Tdx { quote, collateral } => {
                quote.write(buf);
                collateral.write(buf);
            }
        }
    }
}

impl EncodeSize for Evidence {
    fn encode_size(&self) -> usize {
        1 + match self {
            Evidence::Simulated { .. } => 32 + 64,
            Evidence::SgxDcap { quote, collateral } | Evidence::Tdx { quote, collateral } => {
                quote.encode_size() + collateral.encode_size()
            }
        }
    }
}

impl Read for Evidence {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        let kind = TeeKind::read(buf)?;
        if kind == TeeKind::Simulated {
            return Ok(Evidence::Simulated {
                measurement: <[u8; 32]>::read(buf)?,
                report_data: <[u8; 64]>::read(buf)?,
            });
        }
        let quote = Bytes::read_cfg(buf, &RangeCfg::new(..=MAX_QUOTE))?;
        let collateral = Bytes::read_cfg(buf, &RangeCfg::new(..=MAX_COLLATERAL))?;
        Ok(match kind {
            TeeKind::SgxDcap => Evidence::SgxDcap { quote, collateral },
            _ => Evidence::Tdx { quote, collateral },
        })
    }
}

/// The 64 bytes of report data a worker's quote must carry: SHA-256 over the worker's keys,
/// the chain and a recent height (so a quote cannot be reused for other keys, another chain, or
/// long after it was made), followed by the identity key itself so a reader can see whose it is.
pub fn report_data(
    identity: &Address,
    ecdh: &[u8; 32],
    genesis: &[u8],
    freshness: u64,
) -> [u8; 64] {
    let binding = Sha256::hash(&[
        namespace::ATTESTATION,
        &identity.0,
        ecdh,
        genesis,
        &freshness.to_be_bytes(),
    ]);
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(binding.as_ref());
    out[32..].copy_from_slice(&identity.0);
    out
}

/// An SGX enclave the policy accepts: either one exact build, or any build by a signer of a
/// product at or above a security version.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SgxRule {
    MrEnclave {
        #[serde(with = "hex_bytes")]
        mr_enclave: [u8; 32],
    },
    Signer {
        #[serde(with = "hex_bytes")]
        mr_signer: [u8; 32],
        isv_prod_id: u16,
        min_isv_svn: u16,
    },
}

/// A TDX guest the policy accepts: its MRTD and each RTMR that must match (`None`: any value).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TdxRule {
    #[serde(with = "hex_bytes")]
    pub mr_td: [u8; 48],
    pub rtmrs: [Option<HexMeasurement>; 4],
}

/// A 48-byte TDX measurement register, hex in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HexMeasurement(#[serde(with = "hex_bytes")] pub [u8; 48]);

/// Which workers the chain admits, and how much it trusts them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttestationPolicy {
    /// Accept [`Evidence::Simulated`]; only ever true on a dev chain.
    pub allow_simulated: bool,
    /// Simulated measurements accepted (empty: any), so dev chains exercise the same checks.
    #[serde(default)]
    pub simulated: Vec<HexMeasurement32>,
    pub sgx: Vec<SgxRule>,
    pub tdx: Vec<TdxRule>,
    /// Lowest confidence level admitted, 1 (weakest) to 5 (TCB up to date).
    pub min_confidence: u8,
    /// How many blocks old the height bound into a quote may be.
    pub freshness_blocks: u64,
    /// How many blocks a registration stays valid before the worker must attest again.
    pub reattest_blocks: u64,
}

/// A 32-byte measurement, hex in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HexMeasurement32(#[serde(with = "hex_bytes")] pub [u8; 32]);

impl AttestationPolicy {
    /// The policy of a dev chain: simulated TEEs of any measurement, any confidence.
    pub fn dev() -> Self {
        AttestationPolicy {
            allow_simulated: true,
            simulated: Vec::new(),
            sgx: Vec::new(),
            tdx: Vec::new(),
            min_confidence: 1,
            freshness_blocks: 600,
            reattest_blocks: 100_000,
        }
    }
}

const MAX_RULES: usize = 64;

/// Why a policy cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("at most {MAX_RULES} rules of each kind")]
    TooManyRules,
    #[error("min_confidence must be 1 to 5, not {0}")]
    Confidence(u8),
}

impl AttestationPolicy {
    /// Checks what the decoder enforces and what makes sense, so a policy that is accepted can
    /// always be read back.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if [self.simulated.len(), self.sgx.len(), self.tdx.len()]
            .iter()
            .any(|n| *n > MAX_RULES)
        {
            return Err(PolicyError::TooManyRules);
        }
        if !(1..=5).contains(&self.min_confidence) {
            return Err(PolicyError::Confidence(self.min_confidence));
        }
        Ok(())
    }
}

impl Write for AttestationPolicy {
    fn write(&self, buf: &mut impl BufMut) {
        self.allow_simulated.write(buf);
        (self.simulated.len() as u32).write(buf);
        for m in &self.simulated {
            m.0.write(buf);
        }
        (self.sgx.len() as u32).write(buf);
        for rule in &self.sgx {
            match rule {
                SgxRule::MrEnclave { mr_enclave } => {
                    0u8.write(buf);
                    mr_enclave.write(buf);
                }
                SgxRule::Signer {
                    mr_signer,
                    isv_prod_id,
                    min_isv_svn,
                } => {
                    1u8.write(buf);
                    mr_signer.write(buf);
                    isv_prod_id.write(buf);
                    min_isv_svn.write(buf);
                }
            }
        }
        (self.tdx.len() as u32).write(buf);
        for rule in &self.tdx {
            rule.mr_td.write(buf);
            for rtmr in &rule.rtmrs {
                rtmr.map(|m| m.0).write(buf);
            }
        }
        self.min_confidence.write(buf);
        self.freshness_blocks.write(buf);
        self.reattest_blocks.write(buf);
    }
}

impl EncodeSize for AttestationPolicy {
    fn encode_size(&self) -> usize {
        let sgx: usize = self
            .sgx
            .iter()
            .map(|rule| match rule {
                SgxRule::MrEnclave { .. } => 33,
                SgxRule::Signer { .. } => 37,
            })
            .sum();
        let tdx: usize = self
            .tdx
            .iter()
            .map(|rule| {
                48 + rule
                    .rtmrs
                    .iter()
                    .map(|r| 1 + r.map_or(0, |_| 48))
                    .sum::<usize>()
            })
            .sum();
        1 + 4 + 32 * self.simulated.len() + 4 + sgx + 4 + tdx + 1 + 8 + 8
    }
}

fn read_count(buf: &mut impl Buf) -> Result<usize, CodecError> {
    let count = u32::read(buf)? as usize;
    if count > MAX_RULES {
        return Err(CodecError::InvalidLength(count));
    }
    Ok(count)
}

impl Read for AttestationPolicy {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        let allow_simulated = bool::read(buf)?;
        let simulated = (0..read_count(buf)?)
            .map(|_| Ok(HexMeasurement32(<[u8; 32]>::read(buf)?)))
            .collect::<Result<_, CodecError>>()?;
        let sgx = (0..read_count(buf)?)
            .map(|_| match u8::read(buf)? {
                0 => Ok(SgxRule::MrEnclave {
                    mr_enclave: <[u8; 32]>::read(buf)?,
                }),
                1 => Ok(SgxRule::Signer {
                    mr_signer: <[u8; 32]>::read(buf)?,
                    isv_prod_id: u16::read(buf)?,
                    min_isv_svn: u16::read(buf)?,
                }),
                tag => Err(CodecError::InvalidEnum(tag)),
            })
            .collect::<Result<_, CodecError>>()?;
        let tdx = (0..read_count(buf)?)
            .map(|_| {
                let mr_td = <[u8; 48]>::read(buf)?;
                let mut rtmrs = [None; 4];
                for rtmr in &mut rtmrs {
                    *rtmr = Option::<[u8; 48]>::read(buf)?.map(HexMeasurement);
                }
                Ok(TdxRule { mr_td, rtmrs })
            })
            .collect::<Result<_, CodecError>>()?;
        Ok(AttestationPolicy {
            allow_simulated,
            simulated,
            sgx,
            tdx,
            min_confidence: u8::read(buf)?,
            freshness_blocks: u64::read(buf)?,
            reattest_blocks: u64::read(buf)?,
        })
    }
}

/// What a worker asks the chain to record. Signed by the worker's identity key, so nobody can
/// register another worker's quote under their own operator account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerRegistration {
    /// The worker's ed25519 identity key: its upward-message origin and receipt signer.
    pub identity: Address,
    /// The x25519 key secrets are encrypted to (HPKE).
    pub ecdh: [u8; 32],
    /// The account that runs the worker and signs the registration transaction.
    pub operator: Address,
    pub cores: u32,
    /// The pRuntime's own benchmark score, higher is faster.
    pub benchmark: u64,
    /// A recent chain height bound into the report data.
    pub freshness: u64,
    /// Asks to be a gatekeeper; granted only by the chain's gatekeeper set.
    pub gatekeeper: bool,
    pub evidence: Evidence,
}

impl WorkerRegistration {
    /// The report data the evidence must carry for this registration on the given chain.
    pub fn expected_report_data(&self, genesis: &[u8]) -> [u8; 64] {
        report_data(&self.identity, &self.ecdh, genesis, self.freshness)
    }

    /// The bytes the identity key signs.
    pub fn signing_payload(&self) -> Vec<u8> {
        self.encode().to_vec()
    }
}

impl Write for WorkerRegistration {
    fn write(&self, buf: &mut impl BufMut) {
        self.identity.write(buf);
        self.ecdh.write(buf);
        self.operator.write(buf);
        self.cores.write(buf);
        self.benchmark.write(buf);
        self.freshness.write(buf);
        self.gatekeeper.write(buf);
        self.evidence.write(buf);
    }
}

impl EncodeSize for WorkerRegistration {
    fn encode_size(&self) -> usize {
        32 + 32 + 32 + 4 + 8 + 8 + 1 + self.evidence.encode_size()
    }
}

impl Read for WorkerRegistration {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(WorkerRegistration {
            identity: Address::read(buf)?,
            ecdh: <[u8; 32]>::read(buf)?,
            operator: Address::read(buf)?,
            cores: u32::read(buf)?,
            benchmark: u64::read(buf)?,
            freshness: u64::read(buf)?,
            gatekeeper: bool::read(buf)?,
            evidence: Evidence::read(buf)?,
        })
    }
}

/// A registration with the identity key's signature under [`namespace::REGISTRATION`] and the
/// genesis hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRegistration {
    pub registration: WorkerRegistration,
    pub signature: [u8; 64],
}

impl Write for SignedRegistration {
    fn write(&self, buf: &mut impl BufMut) {
        self.registration.write(buf);
        self.signature.write(buf);
    }
}

impl EncodeSize for SignedRegistration {
    fn encode_size(&self) -> usize {
        self.registration.encode_size() + 64
    }
}

impl Read for SignedRegistration {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(SignedRegistration {
            registration: WorkerRegistration::read(buf)?,
            signature: <[u8; 64]>::read(buf)?,
        })
    }
}

/// Topics of the messages between the chain, the gatekeepers and the workers. One place, so
/// that the chain and pRuntime cannot disagree on a spelling.
pub mod topics {
    /// Down to `Gatekeepers`: a gatekeeper joined (payload: [`crate::GatekeeperJoined`]).
    pub const GATEKEEPER_JOINED: &[u8] = b"registry/gatekeeper-joined";
    /// Down to `Gatekeepers`: a worker was assigned to a cluster ([`crate::ClusterAssignment`]).
    pub const WORKER_ASSIGNED: &[u8] = b"registry/worker-assigned";
    /// Down to `Gatekeepers`: make the next master key generation (payload: u32 generation).
    pub const ROTATE_MASTER_KEY: &[u8] = b"registry/rotate-master-key";
    /// Down to `All`: the chain recorded a master public key ([`crate::MasterPublicKey`]).
    pub const MASTER_KEY_PUBLISHED: &[u8] = b"registry/master-key-published";
    /// Up from a gatekeeper: a new master public key ([`crate::MasterPublicKey`]).
    pub const PUBLISH_MASTER_KEY: &[u8] = b"gk/publish-master-key";
    /// Up from a gatekeeper, then down to the recipient: a sealed key ([`crate::KeyDelivery`]).
    pub const DELIVER_KEY: &[u8] = b"gk/deliver-key";
}

/// Reads a fixed-layout payload, refusing trailing bytes.
pub fn decode_payload<T: Decode<Cfg = ()>>(payload: &[u8]) -> Result<T, CodecError> {
    T::decode_cfg(Copying(payload), &())
}

macro_rules! payload_struct {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty),* }

        impl Write for $name {
            fn write(&self, buf: &mut impl BufMut) { $(self.$field.write(buf);)* }
        }

        impl EncodeSize for $name {
            fn encode_size(&self) -> usize { 0 $(+ self.$field.encode_size())* }
        }

        impl Read for $name {
            type Cfg = ();
            fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
                Ok($name { $($field: ReadExt::read(buf)?),* })
            }
        }
    };
}

pub(crate) use payload_struct;

payload_struct!(
    /// A gatekeeper admitted to the set, with the ECDH key the master key is sealed to.
    GatekeeperJoined {
        identity: Address,
        ecdh: [u8; 32],
        /// True when the chain has no master key yet: this gatekeeper must create it.
        bootstrap: bool,
    }
);

payload_struct!(
    /// A worker placed in a cluster; the gatekeepers send it the cluster key.
    ClusterAssignment {
        worker: Address,
        ecdh: [u8; 32],
        cluster: u32,
    }
);

payload_struct!(
    /// The public half of a master key generation (ed25519, derived from the secret).
    MasterPublicKey {
        generation: u32,
        public_key: [u8; 32],
    }
);

payload_struct!(
    /// A secret sealed with HPKE to the recipient's attested ECDH key.
    KeyDelivery {
        recipient: Address,
        /// 0: master key, else cluster id + 1.
        key_kind: u32,
        generation: u32,
        /// HPKE encapsulated key.
        encapped: [u8; 32],
        /// HPKE ciphertext of the 32-byte secret (with its 16-byte tag).
        ciphertext: [u8; 48],
    }
);

impl KeyDelivery {
    /// `key_kind` of a master key delivery.
    pub const MASTER: u32 = 0;

    /// `key_kind` of a cluster key delivery.
    pub fn cluster(cluster: u32) -> u32 {
        cluster.saturating_add(1)
    }
}

pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(text.trim_start_matches("0x")).map_err(D::Error::custom)?;
        bytes
            .try_into()
            .map_err(|_| D::Error::custom(format!("expected {N} bytes")))
    }
}

/// What the chain knows of a registered worker.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerRecord {
    pub identity: Address,
    #[serde(with = "hex_bytes")]
    pub ecdh: [u8; 32],
    pub operator: Address,
    pub tee: TeeKind,
    /// MRENCLAVE (SGX), MRTD (TDX) or the simulated measurement.
    #[serde(with = "hex_vec")]
    pub measurement: Vec<u8>,
    /// 1 (weakest) to 5 (TCB up to date); see `phala-attestation`.
    pub confidence: u8,
    pub cores: u32,
    pub benchmark: u64,
    pub registered_at: u64,
    pub attested_at: u64,
    /// The pRuntime runs in gatekeeper mode and asked to join the set.
    pub gatekeeper_candidate: bool,
    /// In the gatekeeper set.
    pub gatekeeper: bool,
    pub cluster: Option<u32>,
}

/// Longest measurement (TDX MRTD).
const MAX_MEASUREMENT: usize = 48;

impl Write for WorkerRecord {
    fn write(&self, buf: &mut impl BufMut) {
        self.identity.write(buf);
        self.ecdh.write(buf);
        self.operator.write(buf);
        self.tee.write(buf);
        Bytes::copy_from_slice(&self.measurement).write(buf);
        self.confidence.write(buf);
        self.cores.write(buf);
        self.benchmark.write(buf);
        self.registered_at.write(buf);
        self.attested_at.write(buf);
        self.gatekeeper_candidate.write(buf);
        self.gatekeeper.write(buf);
        self.cluster.write(buf);
    }
}

impl EncodeSize for WorkerRecord {
    fn encode_size(&self) -> usize {
        32 + 32
            + 32
            + 1
            + Bytes::copy_from_slice(&self.measurement).encode_size()
            + 1
            + 4
            + 8
            + 8
            + 8
            + 2
            + self.cluster.encode_size()
    }
}

impl Read for WorkerRecord {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(WorkerRecord {
            identity: Address::read(buf)?,
            ecdh: <[u8; 32]>::read(buf)?,
            operator: Address::read(buf)?,
            tee: TeeKind::read(buf)?,
            measurement: Bytes::read_cfg(buf, &RangeCfg::new(..=MAX_MEASUREMENT))?.to_vec(),
            confidence: u8::read(buf)?,
            cores: u32::read(buf)?,
            benchmark: u64::read(buf)?,
            registered_at: u64::read(buf)?,
            attested_at: u64::read(buf)?,
            gatekeeper_candidate: bool::read(buf)?,
            gatekeeper: bool::read(buf)?,
            cluster: Option::<u32>::read(buf)?,
        })
    }
}

mod hex_vec {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(D::Error::custom)
    }
}
