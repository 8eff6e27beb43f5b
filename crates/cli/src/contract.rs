//! `phala contract ...`: upload, instantiate, call (encrypted command), query (encrypted, with
//! a signed receipt), verify-receipt, show.

use crate::commands::resolve_signer;
use anyhow::{Context as _, anyhow, bail};
use clap::Subcommand;
use phala_client::{
    Client,
    contract_ops::{self, QueryOutcome},
    receipt,
};
use phala_types::{QueryReceipt, contracts::ContractId};
use serde_json::json;
use std::{path::PathBuf, time::Duration};

/// Default gas of a command: plenty for the example contracts (0.01 PHA at the dev price).
pub const DEFAULT_GAS: u64 = 10_000_000;
/// How long the CLI waits for the chain and the workers.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Subcommand)]
pub enum ContractCommand {
    /// Uploads WebAssembly code to the chain and prints its hash.
    Upload {
        /// Signer: a dev account name or a key file.
        #[arg(long)]
        from: String,
        file: PathBuf,
    },
    /// Instantiates uploaded code on a cluster; waits for the contract's public key.
    Instantiate {
        #[arg(long)]
        from: String,
        /// Code hash (hex) as `upload` printed it.
        #[arg(long)]
        code: String,
        #[arg(long, default_value_t = 0)]
        cluster: u32,
        /// Any text; the same deployer, code, cluster and salt give the same contract id.
        /// Random by default.
        #[arg(long)]
        salt: Option<String>,
        /// Bytes of contract state to buy with a locked deposit (each entry counts its key,
        /// value and 32 bytes); `set-quota` changes it later and returns what is freed.
        #[arg(long, default_value_t = contract_ops::DEFAULT_STORAGE_QUOTA)]
        storage_quota: u64,
        /// The init input (public: it is in the transaction).
        #[arg(long, default_value = "")]
        input: String,
    },
    /// Changes a contract's storage quota (its deployer only): raising it locks more
    /// deposit, lowering it returns the deposit above the new quota.
    SetQuota {
        #[arg(long)]
        from: String,
        contract: String,
        /// The new quota in bytes; not below the state the workers last reported.
        quota: u64,
    },
    /// Sends a command encrypted to the contract (only its cluster's enclaves can read it),
    /// waits until a worker reports its result.
    Call {
        #[arg(long)]
        from: String,
        contract: String,
        input: String,
        #[arg(long, default_value_t = DEFAULT_GAS)]
        gas: u64,
    },
    /// Queries a worker with an encrypted, signed request; prints the answer and its receipt.
    Query {
        #[arg(long)]
        from: String,
        contract: String,
        input: String,
        /// The worker's pRuntime API (`phala dev` prints them).
        #[arg(long, env = "PHALA_WORKER", default_value = "http://127.0.0.1:8004")]
        worker: String,
        /// Refuse answers from a worker more than this many blocks behind the node.
        #[arg(long, default_value_t = 20)]
        max_lag: u64,
        /// Writes the receipt (JSON) here, for `verify-receipt`.
        #[arg(long)]
        receipt_out: Option<PathBuf>,
    },
    /// Checks a query receipt against the chain: worker registered and attested, in the
    /// contract's cluster, running the contract's code.
    VerifyReceipt { file: PathBuf },
    /// What the chain knows of a contract.
    Show { contract: String },
}

pub async fn run(
    client: &Client,
    spec: Option<&std::path::Path>,
    command: ContractCommand,
    as_json: bool,
) -> anyhow::Result<()> {
    match command {
        ContractCommand::Upload { from, file } => {
            let code =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            check_module_size(&file, code.len())?;
            let hash =
                contract_ops::upload_code(client, &resolve_signer(client, &from).await?, &code)
                    .await?;
            print(
                as_json,
                json!({ "code_hash": hex::encode(hash), "size": code.len() }),
                || {
                    format!(
                        "uploaded {} bytes; code hash {}",
                        code.len(),
                        hex::encode(hash)
                    )
                },
            );
        }
        ContractCommand::Instantiate {
            from,
            code,
            cluster,
            salt,
            storage_quota,
            input,
        } => {
            let code = parse_id(&code, "code hash")?;
            let salt = match salt {
                Some(text) => phala_types::contracts::code_hash(text.as_bytes()),
                None => rand::random(),
            };
            let signer = resolve_signer(client, &from).await?;
            let deployment = contract_ops::Deployment {
                code_hash: code,
                cluster,
                salt,
                storage_quota,
                input: input.as_bytes(),
            };
            let record = contract_ops::instantiate(client, &signer, deployment, WAIT).await?;
            let id = hex::encode(record.id);
            print(as_json, serde_json::to_value(&record)?, || {
                format!(
                    "contract {id} on cluster {cluster}, ready for encrypted commands and queries"
                )
            });
        }
        ContractCommand::SetQuota {
            from,
            contract,
            quota,
        } => {
            let id = parse_id(&contract, "contract id")?;
            let signer = resolve_signer(client, &from).await?;
            contract_ops::set_storage_quota(client, &signer, &id, quota).await?;
            let record = client.contract(&id).await?;
            print(as_json, serde_json::to_value(&record)?, || {
                format!(
                    "contract {contract}: storage quota {quota} bytes, {} locked",
                    phala_types::format_pha(record.record.storage_deposit)
                )
            });
        }
        ContractCommand::Call {
            from,
            contract,
            input,
            gas,
        } => {
            let contract = parse_id(&contract, "contract id")?;
            let signer = resolve_signer(client, &from).await?;
            let sent =
                contract_ops::command(client, &signer, &contract, input.as_bytes(), gas).await?;
            let report = contract_ops::wait_report(client, &contract, sent.index, WAIT).await?;
            print(as_json, serde_json::to_value(&report)?, || {
                let outcome = if report.succeeded {
                    "succeeded"
                } else {
                    "FAILED (state unchanged)"
                };
                format!(
                    "command {} {outcome}; gas used {} of {gas} (the rest is refunded); state commitment {}",
                    sent.index,
                    report.gas_used,
                    hex::encode(report.commitment)
                )
            });
            if !report.succeeded {
                bail!("the command failed in the contract (wrong input, refused, or out of gas)");
            }
        }
        ContractCommand::Query {
            from,
            contract,
            input,
            worker,
            max_lag,
            receipt_out,
        } => {
            let contract = parse_id(&contract, "contract id")?;
            let signer = resolve_signer(client, &from).await?;
            let http = reqwest::Client::builder().timeout(WAIT).build()?;
            let outcome = contract_ops::query(
                client,
                &http,
                &worker,
                &signer,
                &contract,
                input.as_bytes(),
                max_lag,
            )
            .await?;
            if let Some(path) = &receipt_out {
                std::fs::write(path, serde_json::to_vec_pretty(&outcome.receipt)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            print_answer(&outcome, as_json);
            if outcome.answer.is_err() {
                bail!("the contract refused the query");
            }
        }
        ContractCommand::VerifyReceipt { file } => {
            let text =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let receipt: QueryReceipt =
                serde_json::from_slice(&text).context("the file is not a query receipt")?;
            let trust = crate::commands::trusted_chain(client, spec).await?;
            let check = receipt::verify_receipt(client, &trust, &receipt).await?;
            print(as_json, serde_json::to_value(&check)?, || {
                format!(
                    "receipt valid: signed by worker {} ({:?}, confidence {}) of cluster {}, code {}, block {}; its state commitment is the one reported for call {} ({} confirmation(s){}); every record proven final at block {}",
                    check.worker,
                    check.tee,
                    check.confidence,
                    check.cluster,
                    check.code_hash,
                    receipt.height,
                    check.reported_call,
                    check.confirmations,
                    if check.reported_by_another || check.confirmations > 1 {
                        ""
                    } else {
                        ", from this worker alone"
                    },
                    check.proven_at,
                )
            });
        }
        ContractCommand::Show { contract } => {
            let info = client
                .contract(&parse_id(&contract, "contract id")?)
                .await?;
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
    }
    Ok(())
}

/// Prints a query's answer and its receipt.
pub fn print_answer(outcome: &QueryOutcome, as_json: bool) {
    let (ok, text) = match &outcome.answer {
        Ok(bytes) => (true, String::from_utf8_lossy(bytes).into_owned()),
        Err(message) => (false, message.clone()),
    };
    print(
        as_json,
        json!({ "ok": ok, "answer": text, "receipt": outcome.receipt }),
        || {
            let label = if ok { "answer" } else { "refused" };
            format!(
                "{label}: {text}\n  receipt: worker {} at block {}, state {}",
                outcome.receipt.worker,
                outcome.receipt.height,
                hex::encode(outcome.receipt.state_commitment)
            )
        },
    );
}

fn print(as_json: bool, value: serde_json::Value, human: impl FnOnce() -> String) {
    if as_json {
        println!("{value}");
    } else {
        println!("{}", human());
    }
}

/// A 32-byte id in hex.
pub fn parse_id(text: &str, what: &str) -> anyhow::Result<ContractId> {
    hex::decode(text.trim().trim_start_matches("0x"))
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| anyhow!("the {what} must be 64 hex characters"))
}

/// Refuses, before anything is signed, a module the chain would refuse for its size, and says
/// how to make it smaller.
fn check_module_size(file: &std::path::Path, size: usize) -> anyhow::Result<()> {
    let limit = phala_types::contracts::MAX_CODE;
    if size > limit {
        anyhow::bail!(
            "{} is {size} bytes; the chain takes contract modules of at most {limit} bytes. \
             Build with the release profile in crates/contract-sdk/README.md \
             (opt-level = \"z\", lto = true, codegen-units = 1, strip = true, panic = \"abort\"), \
             and check that nothing pulls in a large dependency",
            file.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_module_is_refused_with_the_profile_that_fixes_it() {
        let limit = phala_types::contracts::MAX_CODE;
        let file = std::path::Path::new("big.wasm");
        assert!(check_module_size(file, limit).is_ok());
        let error = check_module_size(file, 5 << 20).unwrap_err().to_string();
        assert!(error.contains("at most 196608 bytes"), "{error}");
        assert!(error.contains("opt-level = \"z\""), "{error}");
    }
}
