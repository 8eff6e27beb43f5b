//! The user-facing commands. Each prints human-readable text, or one JSON object with `--json`.

use anyhow::{Context as _, anyhow, bail};
use phala_client::{Client, api::TxStatus, verify_account, verify_finalization};
use phala_crypto::Keypair;
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

/// `phala account show`.
pub async fn account_show(client: &Client, who: &str, as_json: bool) -> anyhow::Result<()> {
    let address = resolve_address(client, who).await?;
    let account = client.account(&address).await?;
    verify_account(&account).context("the node's answer does not match its proof")?;
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
            }))?
        );
    } else {
        println!("address  {}", account.address);
        println!("balance  {}", format_pha(account.free));
        println!("nonce    {}", account.nonce);
        println!(
            "as of    block {} (state root {}, proof verified)",
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
        .sign_call(&signer, Call::Transfer { to, amount }, None)
        .await?;
    let hash = client.submit(&stx).await?;
    let status = if no_wait {
        TxStatus::Pending
    } else {
        client.wait_final(&hash, Duration::from_secs(60)).await?
    };
    if let TxStatus::Rejected { reason, .. } = &status {
        bail!("transaction {} rejected: {reason}", hex::encode(hash));
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
pub async fn block(client: &Client, height: Option<u64>, as_json: bool) -> anyhow::Result<()> {
    let info = client.chain_info().await?;
    let block = client.block(height).await?;
    let certificate = match &block.finalization {
        Some(finalization) => {
            verify_finalization(&info, &block.header, finalization)?;
            "verified against the group key"
        }
        None => "none stored (finalized through a descendant)",
    };
    if as_json {
        let mut value = serde_json::to_value(&block)?;
        value["certificate_verified"] = json!(block.finalization.is_some());
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
