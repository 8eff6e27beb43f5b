//! The trusted execution environment, behind one trait: quotes over chosen report data, and a
//! sealing key that only this program on this platform can obtain.
//!
//! `Simulated` is for development and is insecure by construction: it says so loudly and only
//! dev chains accept its evidence. `GramineSgx` and `TdxConfigfs` talk to the real kernel and
//! Gramine interfaces; they need the hardware to run.

use bytes::Bytes;
use phala_types::{Evidence, TeeKind};
use std::{
    fs,
    path::{Path, PathBuf},
};
use thiserror::Error;

/// Why the TEE could not do what was asked.
#[derive(Debug, Error)]
pub enum TeeError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TeeError + '_ {
    move |source| TeeError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A TEE the pRuntime runs in.
pub trait Tee: Send + Sync {
    fn kind(&self) -> TeeKind;

    /// Evidence (quote and collateral) over `report_data`.
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, TeeError>;

    /// A key bound to this program's identity on this platform; sealed files are keyed by it.
    fn sealing_key(&self) -> Result<[u8; 32], TeeError>;
}

/// No TEE: a claimed measurement and a sealing key kept in a plain file. INSECURE.
pub struct Simulated {
    measurement: [u8; 32],
    sealing_key: [u8; 32],
}

impl Simulated {
    /// Loads (or creates) the plain-text "sealing" key in `data_dir`.
    pub fn open(data_dir: &Path, measurement: [u8; 32]) -> Result<Self, TeeError> {
        let path = data_dir.join("simulated-sealing.key");
        let sealing_key = match fs::read(&path) {
            Ok(bytes) => bytes.try_into().map_err(|_| {
                TeeError::Unsupported(format!("{} is not a 32-byte key", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                fs::write(&path, key).map_err(io(&path))?;
                key
            }
            Err(e) => return Err(io(&path)(e)),
        };
        tracing::warn!(
            "SIMULATED TEE: no enclave protects this pRuntime's keys or data; \
             only dev chains accept it"
        );
        Ok(Simulated {
            measurement,
            sealing_key,
        })
    }
}

impl Tee for Simulated {
    fn kind(&self) -> TeeKind {
        TeeKind::Simulated
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
        Ok(Evidence::Simulated {
            measurement: self.measurement,
            report_data: *report_data,
        })
    }

    fn sealing_key(&self) -> Result<[u8; 32], TeeError> {
        Ok(self.sealing_key)
    }
}

/// Reads collateral the operator fetched from a PCCS (dcap-qvl's JSON format).
fn read_collateral(path: Option<&Path>) -> Result<Bytes, TeeError> {
    let path = path.ok_or_else(|| {
        TeeError::Unsupported(
            "DCAP evidence needs collateral: fetch it from your PCCS and pass --collateral".into(),
        )
    })?;
    Ok(Bytes::from(fs::read(path).map_err(io(path))?))
}

/// SGX under Gramine: `/dev/attestation` pseudo-files.
pub struct GramineSgx {
    root: PathBuf,
    collateral: Option<PathBuf>,
}

impl GramineSgx {
    /// `root` is `/dev/attestation` inside a Gramine enclave.
    pub fn new(root: PathBuf, collateral: Option<PathBuf>) -> Self {
        GramineSgx { root, collateral }
    }
}

impl Tee for GramineSgx {
    fn kind(&self) -> TeeKind {
        TeeKind::SgxDcap
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
        let user_data = self.root.join("user_report_data");
        fs::write(&user_data, report_data).map_err(io(&user_data))?;
        let quote_path = self.root.join("quote");
        let quote = fs::read(&quote_path).map_err(io(&quote_path))?;
        Ok(Evidence::SgxDcap {
            quote: Bytes::from(quote),
            collateral: read_collateral(self.collateral.as_deref())?,
        })
    }

    fn sealing_key(&self) -> Result<[u8; 32], TeeError> {
        // Gramine's MRENCLAVE-bound sealing key: only this exact build can derive it.
        let path = self.root.join("keys/_sgx_mrenclave");
        let key = fs::read(&path).map_err(io(&path))?;
        Ok(phala_crypto::secrets::derive_key(
            &sha256(&key),
            b"phala/pruntime/gramine-sealing/v1",
            b"",
        ))
    }
}

/// TDX through the kernel's configfs-tsm report interface.
pub struct TdxConfigfs {
    root: PathBuf,
    collateral: Option<PathBuf>,
}

impl TdxConfigfs {
    /// `root` is `/sys/kernel/config/tsm/report`.
    pub fn new(root: PathBuf, collateral: Option<PathBuf>) -> Self {
        TdxConfigfs { root, collateral }
    }
}

impl Tee for TdxConfigfs {
    fn kind(&self) -> TeeKind {
        TeeKind::Tdx
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
        // One report entry per request: create it, write the data, read the quote, remove it.
        let entry = self.root.join(format!("phala-{}", std::process::id()));
        fs::create_dir(&entry).map_err(io(&entry))?;
        let result = (|| {
            let inblob = entry.join("inblob");
            fs::write(&inblob, report_data).map_err(io(&inblob))?;
            let outblob = entry.join("outblob");
            fs::read(&outblob).map_err(io(&outblob))
        })();
        let _ = fs::remove_dir(&entry);
        Ok(Evidence::Tdx {
            quote: Bytes::from(result?),
            collateral: read_collateral(self.collateral.as_deref())?,
        })
    }

    fn sealing_key(&self) -> Result<[u8; 32], TeeError> {
        Err(TeeError::Unsupported(
            "TDX has no hardware sealing key; provisioning one from a key broker is not \
             implemented yet"
                .into(),
        ))
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use commonware_cryptography::{Hasher, Sha256};
    let mut out = [0u8; 32];
    out.copy_from_slice(Sha256::hash(&[bytes]).as_ref());
    out
}
