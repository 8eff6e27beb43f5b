//! A whole local network on 127.0.0.1: genesis in a fresh directory, one `phala-node`
//! process per validator, stopped and cleaned up on drop. Used by `phala dev`, the end-to-end
//! tests and the benchmark.

use anyhow::{Context as _, anyhow, bail};
use phala_client::Client;
use phala_node::spec::{ChainSpec, GenesisOptions, generate};
use phala_types::Address;
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// What to start.
#[derive(Clone)]
pub struct DevnetOptions {
    pub validators: usize,
    /// Validator i serves RPC on `rpc_port + i`.
    pub rpc_port: u16,
    /// Validator i listens for peers on `p2p_port + i`.
    pub p2p_port: u16,
    pub block_interval_ms: u64,
    /// Extra funded accounts (benchmarks).
    pub extra_accounts: Vec<Address>,
    pub extra_balance: u128,
    /// A production (non-dev) chain: no dev accounts, no simulated TEEs, this admin.
    pub production: Option<Production>,
    /// Where the `phala-node` binary is.
    pub node_binary: PathBuf,
}

impl DevnetOptions {
    pub fn new(validators: usize) -> anyhow::Result<Self> {
        Ok(DevnetOptions {
            validators,
            rpc_port: 9944,
            p2p_port: 30333,
            block_interval_ms: 100,
            extra_accounts: Vec::new(),
            extra_balance: 0,
            production: None,
            node_binary: node_binary()?,
        })
    }
}

/// What a production genesis needs that a dev one gets for free.
#[derive(Clone)]
pub struct Production {
    /// The registry admin.
    pub admin: Address,
    /// Genesis balances (the rest goes to the keyless treasury).
    pub allocations: Vec<phala_chain::balances::Allocation>,
}

/// A running local network.
pub struct Devnet {
    dir: tempfile::TempDir,
    spec: ChainSpec,
    children: Vec<Option<Child>>,
    options: DevnetOptions,
}

/// The `phala-node` binary: `$PHALA_NODE_BIN`, or next to this executable.
pub fn node_binary() -> anyhow::Result<PathBuf> {
    sibling_binary("phala-node", "PHALA_NODE_BIN")
}

/// One of the project's binaries: `$env_var`, or next to this executable (or in its parent
/// directory, for test executables under `target/*/deps`).
pub fn sibling_binary(name: &str, env_var: &str) -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var(env_var) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let here = exe.parent().map(Path::to_path_buf);
    let above = here
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    for dir in [here, above].into_iter().flatten() {
        let binary = dir.join(name);
        if binary.is_file() {
            return Ok(binary);
        }
    }
    bail!(
        "cannot find the {name} binary next to {}; build it (`cargo build --release`) or set {env_var}",
        exe.display()
    )
}

/// A free block of `count` consecutive ports on 127.0.0.1 (tests run beside other tests). A
/// block is never handed out twice by one process, even before its user binds it: tests of one
/// binary start their networks at the same time.
pub fn free_ports(count: u16) -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<(u16, u16)>> = std::sync::Mutex::new(Vec::new());
    loop {
        let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let base = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        drop(listener);
        let end = base.saturating_add(count);
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if (1_024..60_000).contains(&base)
            && handed_out.iter().all(|&(b, e)| end <= b || e <= base)
            && (0..count).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            handed_out.push((base, end));
            return base;
        }
    }
}

impl Devnet {
    /// Writes the genesis and starts every validator (returns before they are ready).
    pub fn start(options: DevnetOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("phala-dev-").tempdir()?;
        for i in 0..options.validators {
            let port = options.rpc_port + i as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                bail!(
                    "port {port} is in use (is another `phala dev` running?); choose others with --rpc-port"
                );
            }
        }
        let (spec, keys) = generate(&GenesisOptions {
            chain_id: "phala-dev".into(),
            validators: options.validators,
            host: "127.0.0.1".parse().expect("an IP"),
            base_port: options.p2p_port,
            dev: options.production.is_none(),
            block_interval_ms: options.block_interval_ms,
            extra_accounts: options.extra_accounts.clone(),
            extra_balance: options.extra_balance,
            allocations: options
                .production
                .as_ref()
                .map(|p| p.allocations.clone())
                .unwrap_or_default(),
            admin: options.production.as_ref().map(|p| p.admin),
            timestamp: None,
        })?;
        spec.save(&dir.path().join("spec.json"))?;
        for (i, key) in keys.iter().enumerate() {
            std::fs::write(
                dir.path().join(format!("validator-{i}.json")),
                serde_json::to_string(key)?,
            )?;
        }
        let mut devnet = Devnet {
            dir,
            spec,
            children: Vec::new(),
            options,
        };
        for i in 0..devnet.options.validators {
            let child = devnet.spawn(i)?;
            devnet.children.push(Some(child));
        }
        Ok(devnet)
    }

    fn spawn(&self, index: usize) -> anyhow::Result<Child> {
        let dir = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(index))?;
        Command::new(&self.options.node_binary)
            .arg("run")
            .arg("--spec")
            .arg(dir.join("spec.json"))
            .arg("--key")
            .arg(dir.join(format!("validator-{index}.json")))
            .arg("--data")
            .arg(dir.join(format!("data-{index}")))
            .arg("--rpc")
            .arg(format!(
                "127.0.0.1:{}",
                self.options.rpc_port + index as u16
            ))
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.options.node_binary.display()))
    }

    /// Waits until every validator answers and has finalized at least one block.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.options.validators {
            let client = Client::new(&self.rpc_url(i))?;
            loop {
                if let Some(Some(child)) = self.children.get_mut(i)
                    && let Some(status) = child.try_wait()?
                {
                    bail!(
                        "validator {i} exited ({status}); see {}",
                        self.log_path(i).display()
                    );
                }
                if let Ok(health) = client.health().await
                    && health.finalized_height >= 1
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "validator {i} not ready after {timeout:?}; see {}",
                        self.log_path(i).display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    pub fn rpc_url(&self, index: usize) -> String {
        format!("http://127.0.0.1:{}", self.options.rpc_port + index as u16)
    }

    pub fn log_path(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("node-{index}.log"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn spec(&self) -> &ChainSpec {
        &self.spec
    }

    pub fn validators(&self) -> usize {
        self.options.validators
    }

    /// Kills a validator abruptly (SIGKILL), as a crash would.
    pub fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let mut child = self.children[index]
            .take()
            .ok_or_else(|| anyhow!("validator {index} is not running"))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts a killed validator again on its data directory.
    pub fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        if self.children[index].is_some() {
            bail!("validator {index} is running");
        }
        self.children[index] = Some(self.spawn(index)?);
        Ok(())
    }

    /// Stops every validator (SIGTERM, then SIGKILL after a grace period).
    pub fn stop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            terminate(child);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in self.children.iter_mut() {
            if let Some(mut process) = child.take() {
                while Instant::now() < deadline && matches!(process.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = process.kill();
                let _ = process.wait();
            }
        }
    }
}

fn terminate(child: &Child) {
    // SIGTERM lets the process exit on its own; storage is crash-safe either way.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}

impl Drop for Devnet {
    fn drop(&mut self) {
        self.stop();
    }
}
