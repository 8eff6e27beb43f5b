//! `pruntime`: runs the enclave program and serves its HTTP API.

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use phala_api::pruntime::{AnchorFile, Mode};
use phala_pruntime::{
    Options, Pruntime, server,
    tee::{GramineSgx, Simulated, TdxConfigfs, Tee},
};
use std::{net::SocketAddr, path::PathBuf};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TeeBackend {
    /// No TEE: INSECURE, accepted by dev chains only.
    Simulated,
    /// SGX under Gramine (`/dev/attestation`).
    GramineSgx,
    /// TDX through configfs-tsm (`/sys/kernel/config/tsm/report`).
    Tdx,
}

/// Whether this pRuntime serves contracts or holds the master key.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Worker,
    Gatekeeper,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Worker => Mode::Worker,
            ModeArg::Gatekeeper => Mode::Gatekeeper,
        }
    }
}

/// The pRuntime: light client, sealed keys, gatekeeper or worker logic.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where sealed keys and checkpoints live.
    #[arg(long)]
    data_dir: PathBuf,
    /// The chain's trust anchor (JSON: chain_id, genesis_hash, identity, namespace,
    /// genesis_block); part of the measured configuration in production.
    #[arg(long)]
    anchor: PathBuf,
    #[arg(long, value_enum, default_value = "worker")]
    mode: ModeArg,
    /// The TEE to run in. Required: nothing falls back to the insecure simulated TEE silently.
    #[arg(long, value_enum)]
    tee: TeeBackend,
    /// Measurement the simulated TEE claims (hex, 32 bytes).
    #[arg(
        long,
        default_value = "00000000000000000000000000000000000000000000000000000000000000aa"
    )]
    simulated_measurement: String,
    /// Intel collateral for DCAP quotes (dcap-qvl JSON), fetched from a PCCS.
    #[arg(long)]
    collateral: Option<PathBuf>,
    /// Cores offered to the network.
    #[arg(long, default_value_t = 1)]
    cores: u32,
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let text = std::fs::read_to_string(&args.anchor)
        .with_context(|| format!("cannot read {}", args.anchor.display()))?;
    let file: AnchorFile = serde_json::from_str(&text).context("malformed anchor file")?;
    let tee: Box<dyn Tee> = match args.tee {
        TeeBackend::Simulated => {
            let bytes = hex::decode(&args.simulated_measurement)?;
            let Ok(measurement) = bytes.try_into() else {
                bail!("--simulated-measurement must be 32 bytes of hex");
            };
            Box::new(Simulated::open(&args.data_dir, measurement)?)
        }
        TeeBackend::GramineSgx => Box::new(GramineSgx::new(
            "/dev/attestation".into(),
            args.collateral.clone(),
        )),
        TeeBackend::Tdx => Box::new(TdxConfigfs::new(
            "/sys/kernel/config/tsm/report".into(),
            args.collateral.clone(),
        )),
    };
    let pruntime = Pruntime::open(
        tee,
        Options {
            data_dir: args.data_dir.clone(),
            anchor: file.anchor,
            genesis_block: file.genesis_block,
            mode: args.mode.into(),
            cores: args.cores,
        },
    )?;
    let info = pruntime.info();
    tracing::info!(identity = %info.identity, mode = ?info.mode, tee = %info.tee, height = info.height, "pRuntime ready");
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "serving the pRuntime API");
    axum::serve(listener, server::router(pruntime))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
