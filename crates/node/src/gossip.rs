//! Transaction gossip: a transaction admitted from a client at one node is relayed in batches
//! to every validator, so whichever validator leads the next round can include it.
//!
//! Only transactions admitted from clients are relayed, once; transactions received from peers
//! are admitted locally but not relayed again, so nothing circulates forever.

use crate::ledger::Ledger;
use commonware_codec::{Copying, Decode, Encode, RangeCfg};
use commonware_p2p::{Receiver, Recipients, Sender};
use commonware_runtime::{Clock, Handle, Spawner};
use phala_types::SignedTransaction;
use std::{sync::Arc, time::Duration};
use tracing::debug;

/// How often queued transactions are sent.
const INTERVAL: Duration = Duration::from_millis(20);
/// Most transactions in one gossip message (well under the p2p message limit).
pub const MAX_BATCH: usize = 4_096;

/// Starts the sender and receiver loops.
pub fn start<E, Tx, Rx>(
    context: E,
    (mut sender, mut receiver): (Tx, Rx),
    ledger: Arc<Ledger>,
) -> Vec<Handle<()>>
where
    E: Spawner + Clock,
    Tx: Sender,
    Rx: Receiver,
{
    let outgoing = {
        let ledger = ledger.clone();
        context
            .child("gossip_out")
            .spawn(move |context| async move {
                loop {
                    context.sleep(INTERVAL).await;
                    loop {
                        let batch = ledger.take_gossip(MAX_BATCH);
                        if batch.is_empty() {
                            break;
                        }
                        sender.send(Recipients::All, batch.encode(), false);
                    }
                }
            })
    };
    let incoming = context.child("gossip_in").spawn(move |_| async move {
        while let Ok((peer, message)) = receiver.recv().await {
            let cfg = (RangeCfg::new(..=MAX_BATCH), ());
            match Vec::<SignedTransaction>::decode_cfg(Copying(message.as_ref()), &cfg) {
                Ok(batch) => ledger.admit_from_peer(batch),
                Err(error) => debug!(?peer, %error, "undecodable gossip"),
            }
        }
    });
    vec![outgoing, incoming]
}
