//! Secure workers for a local network: one pRuntime process (simulated TEE) and its pherry per
//! worker, then the admin steps a real network does by governance: admit the gatekeepers and
//! place the workers in a cluster. Used by `phala dev` and the end-to-end tests.

use crate::devnet::sibling_binary;
use anyhow::{Context as _, bail};
use phala_api::pruntime::Info;
use phala_chain::registry;
use phala_client::{
    Client,
    pruntime::{PruntimeClient, anchor_from},
};
use phala_crypto::Keypair;
use phala_types::RegistryCall;
use phala_types::{Address, Call, WorkerRecord};
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// One pRuntime and its relayer.
pub struct WorkerProcess {
    pub name: String,
    pub gatekeeper: bool,
    pub api: String,
    pub data_dir: PathBuf,
    pub node: String,
    pub operator: String,
    pruntime: Option<Child>,
    pherry: Option<Child>,
}

/// The cluster `phala dev` puts its workers in.
pub const DEV_CLUSTER: u32 = 0;

impl WorkerProcess {
    /// The pRuntime's process id while it runs (benchmarks read its CPU time).
    pub fn pruntime_pid(&self) -> Option<u32> {
        self.pruntime.as_ref().map(Child::id)
    }
}

/// The pRuntimes and pherries of a local network.
pub struct Workers {
    dir: PathBuf,
    pub processes: Vec<WorkerProcess>,
}

/// Writes the trust anchor a pRuntime is started with (in production it is part of the
/// measured configuration; here it comes from the local chain).
pub async fn write_anchor(node: &Client, path: &Path) -> anyhow::Result<()> {
    let anchor = anchor_from(node).await?;
    std::fs::write(path, serde_json::to_vec_pretty(&anchor)?)?;
    Ok(())
}

impl Workers {
    /// Starts `gatekeepers` gatekeeper pRuntimes (gatekeeper i relays through node i) and
    /// `workers` worker pRuntimes, APIs on `api_port`, `api_port + 1`, ...
    pub async fn start(
        dir: &Path,
        nodes: &[String],
        gatekeepers: usize,
        workers: usize,
        api_port: u16,
    ) -> anyhow::Result<Self> {
        let anchor = dir.join("anchor.json");
        write_anchor(&Client::new(&nodes[0])?, &anchor).await?;
        let mut set = Workers {
            dir: dir.to_path_buf(),
            processes: Vec::new(),
        };
        for index in 0..gatekeepers + workers {
            set.add(nodes, index < gatekeepers, api_port + index as u16)?;
        }
        Ok(set)
    }

    /// Starts one more pRuntime (and its pherry) with its API on `port`; a worker joins no
    /// cluster until the admin assigns it.
    pub fn add(&mut self, nodes: &[String], gatekeeper: bool, port: u16) -> anyhow::Result<()> {
        let index = self.processes.len();
        let kind_count = self
            .processes
            .iter()
            .filter(|p| p.gatekeeper == gatekeeper)
            .count();
        let name = if gatekeeper {
            format!("gatekeeper-{kind_count}")
        } else {
            format!("worker-{kind_count}")
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!("port {port} is in use; choose others with --worker-port");
        }
        let mut process = WorkerProcess {
            name,
            gatekeeper,
            api: format!("http://127.0.0.1:{port}"),
            data_dir: self.dir.join(format!("pruntime-{index}")),
            node: nodes[index % nodes.len()].clone(),
            operator: format!("operator-{index}"),
            pruntime: None,
            pherry: None,
        };
        // Owned by `self` before the next spawn can fail, so nothing is left running.
        process.pruntime = Some(self.spawn_pruntime(&process)?);
        self.processes.push(process);
        let pherry = self.spawn_pherry(&self.processes[index])?;
        self.processes[index].pherry = Some(pherry);
        Ok(())
    }

    fn log(&self, name: &str) -> anyhow::Result<(Stdio, Stdio)> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?;
        Ok((log.try_clone()?.into(), log.into()))
    }

    fn spawn_pruntime(&self, process: &WorkerProcess) -> anyhow::Result<Child> {
        let (out, err) = self.log(&process.name)?;
        let binary = sibling_binary("pruntime", "PHALA_PRUNTIME_BIN")?;
        let listen = process.api.trim_start_matches("http://");
        Command::new(&binary)
            .args(["--data-dir", &process.data_dir.display().to_string()])
            .args([
                "--anchor",
                &self.dir.join("anchor.json").display().to_string(),
            ])
            .args([
                "--mode",
                if process.gatekeeper {
                    "gatekeeper"
                } else {
                    "worker"
                },
            ])
            .args(["--tee", "simulated", "--listen", listen])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))
    }

    fn spawn_pherry(&self, process: &WorkerProcess) -> anyhow::Result<Child> {
        let (out, err) = self.log(&format!("pherry-{}", process.name))?;
        let binary = sibling_binary("pherry", "PHALA_PHERRY_BIN")?;
        Command::new(&binary)
            .args(["--node", &process.node, "--pruntime", &process.api])
            .args(["--operator-dev", &process.operator])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))
    }

    /// Each pRuntime's identity, once its API answers.
    pub async fn infos(&self, timeout: Duration) -> anyhow::Result<Vec<Info>> {
        let deadline = Instant::now() + timeout;
        let mut infos = Vec::new();
        for process in &self.processes {
            let client = PruntimeClient::new(&process.api)?;
            loop {
                if let Ok(info) = client.info().await {
                    infos.push(info);
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} did not start; see {}",
                        process.name,
                        self.dir.join(format!("{}.log", process.name)).display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(infos)
    }

    /// The admin's part: waits for every registration, admits the gatekeepers in order, and
    /// assigns the workers to [`DEV_CLUSTER`]; returns once every key has arrived.
    pub async fn bootstrap(
        &self,
        node: &Client,
        admin: &Keypair,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let infos = self.infos(timeout).await?;
        let ids: Vec<Address> = infos.iter().map(|i| i.identity).collect();
        wait_until(deadline, "every worker registered", || async {
            let records = node.workers().await?;
            Ok(ids
                .iter()
                .all(|id| records.iter().any(|r| r.identity == *id)))
        })
        .await?;
        let records = node.workers().await?;
        for (process, info) in self.processes.iter().zip(&infos) {
            let record = find(&records, &info.identity)?;
            if process.gatekeeper && !record.gatekeeper {
                node.execute(
                    admin,
                    Call::Registry(RegistryCall::AddGatekeeper(info.identity)),
                )
                .await?;
            } else if !process.gatekeeper && record.cluster.is_none() {
                let call = Call::Registry(RegistryCall::AssignCluster {
                    worker: info.identity,
                    cluster: DEV_CLUSTER,
                });
                node.execute(admin, call).await?;
            }
        }
        self.wait_for_keys(node, deadline, 1).await
    }

    /// Waits until the chain recorded master generation `generation`, every gatekeeper holds
    /// it and every worker holds the cluster key of that generation.
    pub async fn wait_for_keys(
        &self,
        node: &Client,
        deadline: Instant,
        generation: u32,
    ) -> anyhow::Result<()> {
        let what = format!("the chain to record master key generation {generation}");
        wait_until(deadline, &what, || async {
            let value = node.state_value(registry::keys::MASTER_GENERATION).await?;
            let recorded = value
                .value
                .and_then(|v| hex::decode(v).ok())
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map_or(0, u32::from_be_bytes);
            Ok(recorded >= generation)
        })
        .await?;
        for process in &self.processes {
            let client = PruntimeClient::new(&process.api)?;
            let what = format!("{} to hold generation {generation} keys", process.name);
            wait_until(deadline, &what, || async {
                let info = client.info().await?;
                Ok(if process.gatekeeper {
                    info.master_generations.contains(&generation)
                } else {
                    info.cluster_keys.contains(&(DEV_CLUSTER, generation))
                })
            })
            .await?;
        }
        Ok(())
    }

    /// Kills a pRuntime abruptly (SIGKILL), as a crash would.
    pub fn kill_pruntime(&mut self, index: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.processes[index].pruntime.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts a killed pRuntime again on its data directory.
    pub fn restart_pruntime(&mut self, index: usize) -> anyhow::Result<()> {
        let child = self.spawn_pruntime(&self.processes[index])?;
        self.processes[index].pruntime = Some(child);
        Ok(())
    }

    /// Stops a pherry: its pRuntime falls behind the chain until [`Workers::restart_pherry`].
    pub fn kill_pherry(&mut self, index: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.processes[index].pherry.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts a stopped pherry again (stopping it first if it runs).
    pub fn restart_pherry(&mut self, index: usize) -> anyhow::Result<()> {
        self.kill_pherry(index)?;
        let child = self.spawn_pherry(&self.processes[index])?;
        self.processes[index].pherry = Some(child);
        Ok(())
    }

    pub fn stop(&mut self) {
        for process in &mut self.processes {
            for child in [process.pherry.take(), process.pruntime.take()]
                .into_iter()
                .flatten()
            {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

fn find<'a>(records: &'a [WorkerRecord], identity: &Address) -> anyhow::Result<&'a WorkerRecord> {
    records
        .iter()
        .find(|r| r.identity == *identity)
        .with_context(|| format!("worker {identity} is not registered"))
}

/// Polls `check` until it holds or the deadline passes.
pub async fn wait_until<F, Fut>(deadline: Instant, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let mut last_error = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > deadline {
            match last_error {
                Some(e) => bail!("timed out waiting for {what}: {e:#}"),
                None => bail!("timed out waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `phala worker list`.
pub async fn list(node: &Client, as_json: bool) -> anyhow::Result<()> {
    let records = node.workers().await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    if records.is_empty() {
        println!("no registered workers");
        return Ok(());
    }
    println!(
        "{:<64} {:<10} {:<10} {:>10} {:>7} {:>8} {:>9}",
        "identity", "role", "tee", "confidence", "cluster", "attested", "benchmark"
    );
    for record in records {
        let role = if record.gatekeeper {
            "gatekeeper"
        } else if record.gatekeeper_candidate {
            "candidate"
        } else {
            "worker"
        };
        let cluster = record.cluster.map_or("-".to_string(), |c| c.to_string());
        println!(
            "{:<64} {:<10} {:<10} {:>10} {:>7} {:>8} {:>9}",
            record.identity.to_string(),
            role,
            record.tee.to_string(),
            format!("{}/5", record.confidence),
            cluster,
            record.attested_at,
            record.benchmark
        );
    }
    Ok(())
}
