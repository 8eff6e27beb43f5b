//! The user-facing commands. Each prints human-readable text, or one JSON object with `--json`.

use anyhow::{Context as _, anyhow, bail};
use phala_api::{TrustedChain, rpc::TxStatus, verify_account, verify_finalization};
use phala_client::Client;
use phala_crypto::Keypair;
use phala_types::BalancesCall;
use phala_types::{Address, Call, format_pha, parse_pha};
use serde_json::json;
use std::{path::Path, time::Duration};

/// An address, or a dev account name such as `alice` (on a dev chain only).
pub async fn resolve_address(client: &Client, text: &str) -> anyhow::Result<Address> {
    if let Ok(address) = text.parse::<Address>() {
        return Ok(address);
    }
    if is_dev_name(text) {
        require_dev_chain(client, text).await?;
        return Ok(Keypair::dev(text).address());
    }
    Err(anyhow!(
        "`{text}` is neither an address (pha1...) nor a dev account name ({})",
        dev_names()
    ))
}

/// A key file, or a dev account name (on a dev chain only).
pub async fn resolve_signer(client: &Client, text: &str) -> anyhow::Result<Keypair> {
    if is_dev_name(text) {
        require_dev_chain(client, text).await?;
        return Ok(Keypair::dev(text));
    }
    let path = Path::new(text);
    if path.exists() {
        return Ok(Keypair::load(path)?);
    }
    Err(anyhow!(
        "`{text}` is neither a key file nor a dev account name ({})",
        dev_names()
    ))
}

/// Dev names stand for keys anyone can compute: they mean something on dev chains only.
async fn require_dev_chain(client: &Client, name: &str) -> anyhow::Result<()> {
    if !client.chain_info().await?.dev {
        bail!(
            "`{name}` is a dev account, and this is not a dev chain: name an address or a key file"
        );
    }
    Ok(())
}

fn is_dev_name(text: &str) -> bool {
    phala_node::spec::DEV_ACCOUNTS.contains(&text)
}

fn dev_names() -> String {
    phala_node::spec::DEV_ACCOUNTS.join(", ")
}

/// The chain answers are checked against: the spec the user names, or the chain remembered
/// for the node's genesis hash since first use (`$PHALA_HOME/chains/<genesis>.json`).
pub async fn trusted_chain(client: &Client, spec: Option<&Path>) -> anyhow::Result<TrustedChain> {
    let trust = match spec {
        Some(path) => {
            let spec = phala_node::spec::ChainSpec::load(path)?;
            TrustedChain {
                chain_id: spec.chain_id.clone(),
                genesis_hash: hex::encode(spec.hash()),
                identity: spec.identity.clone(),
                namespace: hex::encode(spec.namespace()),
            }
        }
        None => remembered_chain(client).await?,
    };
    client.check_chain(&trust).await?;
    Ok(trust)
}

/// The chain remembered for the node's genesis hash, remembering it at first use.
async fn remembered_chain(client: &Client) -> anyhow::Result<TrustedChain> {
    let info = client.chain_info().await?;
    let home = std::env::var_os("PHALA_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".phala")))
        .context("set PHALA_HOME (or HOME) to remember chains, or name one with --spec")?;
    let dir = home.join("chains");
    let path = dir.join(format!("{}.json", info.genesis_hash));
    if let Ok(text) = std::fs::read_to_string(&path) {
        return serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt", path.display()));
    }
    let trust = TrustedChain::from_info(&info);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(&path, serde_json::to_string_pretty(&trust)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(trust)
}

/// `phala account show`: the balance with its proof against a state root that a finality
/// certificate under the trusted group key covers.
pub async fn account_show(
    client: &Client,
    trust: &TrustedChain,
    who: &str,
    as_json: bool,
) -> anyhow::Result<()> {
    let address = resolve_address(client, who).await?;
    let account = client.account(&address).await?;
    let lied = |reason: String| anyhow!("the node at {} lied: {reason}", client.url());
    verify_account(&account)
        .map_err(|e| lied(format!("its answer does not match its proof: {e}")))?;
    let header = client.prove_final(trust, account.height).await?;
    if hex::encode(header.state_root) != account.state_root {
        return Err(lied(format!(
            "block {}'s certified state root is not the one its proof is against",
            account.height
        )));
    }
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "address": account.address,
                "free": account.free.to_string(),
                "free_pha": format_pha(account.free),
                "nonce": account.nonce,
                "height": account.height,
                "state_root": account.state_root,
                "proof_verified": true,
                "state_root_certified": true,
            }))?
        );
    } else {
        println!("address  {}", account.address);
        println!("balance  {}", format_pha(account.free));
        println!("nonce    {}", account.nonce);
        println!(
            "as of    block {} (state root {}, proof verified, root certified)",
            account.height,
            &account.state_root[..16]
        );
    }
    Ok(())
}

/// `phala transfer`: signs, submits and (unless `no_wait`) waits for finality.
pub async fn transfer(
    client: &Client,
    from: &str,
    to: &str,
    amount: &str,
    no_wait: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let signer = resolve_signer(client, from).await?;
    let to = resolve_address(client, to).await?;
    let amount = parse_pha(amount)?;
    let stx = client
        .sign_call(
            &signer,
            Call::Balances(BalancesCall::Transfer { to, amount }),
            None,
        )
        .await?;
    let hash = client.submit(&stx).await?;
    let status = if no_wait {
        TxStatus::Pending
    } else {
        client.wait_final(&hash, Duration::from_secs(60)).await?
    };
    match &status {
        TxStatus::Rejected { reason, .. } => {
            bail!("transaction {} rejected: {reason}", hex::encode(hash))
        }
        TxStatus::Finalized {
            failed: Some(failure),
            ..
        } => bail!(
            "transaction {} failed (its fee was paid): {}",
            hex::encode(hash),
            failure.reason
        ),
        _ => {}
    }
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "hash": hex::encode(hash),
                "from": signer.address(),
                "to": to,
                "amount": amount.to_string(),
                "fee": stx.tx.fee.to_string(),
                "status": status,
            }))?
        );
    } else {
        println!("transaction {}", hex::encode(hash));
        println!(
            "  {} -> {}: {} (fee {})",
            signer.address(),
            to,
            format_pha(amount),
            format_pha(stx.tx.fee)
        );
        match status {
            TxStatus::Finalized { height, index, .. } => {
                println!("  finalized in block {height} (index {index})")
            }
            other => println!("  {other:?}"),
        }
    }
    Ok(())
}

/// `phala block`.
pub async fn block(
    client: &Client,
    trust: &TrustedChain,
    height: Option<u64>,
    as_json: bool,
) -> anyhow::Result<()> {
    let block = client.block(height).await?;
    let lied = |reason: String| anyhow!("the node at {} lied: {reason}", client.url());
    let certificate = match &block.finalization {
        Some(finalization) => {
            let info = client.chain_info().await?;
            verify_finalization(&info, &block.header, finalization)
                .map_err(|e| lied(e.to_string()))?;
            "verified against the group key"
        }
        None if block.header.height == 0 => "none (the genesis block)",
        None => {
            let header = client.prove_final(trust, block.header.height).await?;
            if block.header.to_header()?.hash() != header.hash() {
                return Err(lied("the certified header is not the block's".into()));
            }
            "verified through a certified descendant"
        }
    };
    if as_json {
        let mut value = serde_json::to_value(&block)?;
        value["certificate_verified"] = json!(block.header.height > 0);
        value.as_object_mut().map(|o| o.remove("raw"));
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let h = &block.header;
    println!("block {}  {}", h.height, h.hash);
    println!("  parent       {}", h.parent);
    println!("  time         {} ms", h.timestamp);
    println!("  proposer     {}", h.proposer);
    println!("  state root   {}", h.state_root);
    println!("  tx root      {}", h.tx_root);
    println!("  outbox root  {}", h.outbox_root);
    println!("  transactions {}", block.transactions.len());
    for tx in &block.transactions {
        println!("    {tx}");
    }
    match &block.finalization {
        Some(f) => println!("  certificate  {} bytes, {certificate}", f.len() / 2),
        None => println!("  certificate  {certificate}"),
    }
    Ok(())
}

/// `phala key generate`.
pub fn key_generate(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        bail!("{} exists; refusing to overwrite a key", out.display());
    }
    let key = Keypair::generate();
    key.save(out)?;
    println!("{}", key.address());
    Ok(())
}
