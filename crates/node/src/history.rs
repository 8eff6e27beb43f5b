//! What a node keeps of finalized blocks besides their state: each block's header and downward
//! messages by height, and each transaction's status by hash. On disk in commonware's prunable
//! archives, so a restart reads back only what it is asked for, and pruned below a retention
//! (archive mode keeps everything).
//!
//! Invariant: a block is recorded (durably) before its state is committed, so at start the
//! history holds at least every block up to the state's height. A block recorded twice (the
//! node died between the two) is ignored the second time: archives are write-once.

use commonware_codec::{EncodeSize, Error as CodecError, RangeCfg, Read, ReadExt as _, Write};
use commonware_runtime::{Spawner, buffer::paged::CacheRef};
use commonware_storage::{
    Context,
    archive::{Archive as _, Identifier, prunable},
    translator::EightCap,
};
use commonware_utils::{NZU16, NZU64, NZUsize};
use phala_api::rpc::TxStatus;
use phala_chain::commitment::BoxFuture;
use phala_types::{Digest, DownwardMessage, Header, limits};

/// One finalized block as the node records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRecord {
    pub header: HeaderRecord,
    /// The block's downward messages, in outbox order.
    pub messages: Vec<DownwardMessage>,
}

/// A finalized block's header and where its transactions are among all finalized ones: what
/// header-only readers (relayers, light clients) load, without the block's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRecord {
    pub header: Header,
    /// The sequence number of the block's first transaction among all finalized transactions.
    pub first_tx: u64,
    pub transactions: u32,
}

impl HeaderRecord {
    /// The sequence number the next block's first transaction gets.
    pub fn next_tx(&self) -> u64 {
        self.first_tx + u64::from(self.transactions)
    }
}

impl Write for HeaderRecord {
    fn write(&self, buf: &mut impl bytes::BufMut) {
        self.header.write(buf);
        self.first_tx.write(buf);
        self.transactions.write(buf);
    }
}

impl EncodeSize for HeaderRecord {
    fn encode_size(&self) -> usize {
        self.header.encode_size() + self.first_tx.encode_size() + self.transactions.encode_size()
    }
}

impl Read for HeaderRecord {
    type Cfg = ();

    fn read_cfg(buf: &mut impl commonware_codec::Buf, _: &()) -> Result<Self, CodecError> {
        Ok(HeaderRecord {
            header: Header::read(buf)?,
            first_tx: u64::read(buf)?,
            transactions: u32::read(buf)?,
        })
    }
}

/// Why the history failed. Recording a finalized block is part of applying it: a failure there
/// stops the node, which restarts from what is durable.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history archive: {0}")]
    Archive(#[from] commonware_storage::archive::Error),
    #[error("history holds a malformed transaction record")]
    Malformed,
    #[error("history is closed after an earlier failure")]
    Closed,
}

/// The finalized blocks and transaction statuses a node serves.
pub trait History: Send + Sync {
    /// Records a finalized block and its transactions' statuses (in block order), durably.
    fn record(
        &mut self,
        block: BlockRecord,
        statuses: Vec<(Digest, TxStatus)>,
    ) -> BoxFuture<'_, Result<(), HistoryError>>;

    /// The header of the block at `height`, if recorded and not pruned.
    fn header(&self, height: u64) -> BoxFuture<'_, Result<Option<HeaderRecord>, HistoryError>>;

    /// The downward messages of the block at `height`, if recorded and not pruned (a block
    /// without messages: `Some` of none).
    fn messages(
        &self,
        height: u64,
    ) -> BoxFuture<'_, Result<Option<Vec<DownwardMessage>>, HistoryError>>;

    /// A finalized transaction's status, if recorded and not pruned.
    fn transaction(&self, hash: Digest) -> BoxFuture<'_, Result<Option<TxStatus>, HistoryError>>;

    /// Forgets blocks below `height` and their transactions (in whole sections: some older
    /// ones may remain).
    fn prune(&mut self, height: u64) -> BoxFuture<'_, Result<(), HistoryError>>;
}

type Headers<E> = prunable::Archive<EightCap, E, Digest, HeaderRecord>;
type Outboxes<E> = prunable::Archive<EightCap, E, Digest, Vec<DownwardMessage>>;
type Transactions<E> = prunable::Archive<EightCap, E, Digest, Vec<u8>>;

/// Blocks per archive section (the granularity of pruning).
const BLOCKS_PER_SECTION: u64 = 4_096;
/// Transactions per archive section.
const TXS_PER_SECTION: u64 = 65_536;
/// The largest transaction status record (its events are bounded by the block's size).
const MAX_STATUS_BYTES: usize = limits::MAX_BLOCK_SIZE;

/// A [`History`] in prunable archives on a commonware runtime's storage.
pub struct DiskHistory<E: Context + Spawner> {
    /// `None` once a write failed: archives' mutators consume the handle.
    headers: Option<Headers<E>>,
    /// Only blocks that sent messages have an entry.
    outboxes: Option<Outboxes<E>>,
    transactions: Option<Transactions<E>>,
}

fn archive_config<C>(
    partition: &str,
    items_per_section: u64,
    codec_config: C,
) -> prunable::Config<EightCap, C> {
    prunable::Config {
        translator: EightCap,
        metadata_partition: format!("{partition}-metadata"),
        key_partition: format!("{partition}-keys"),
        key_page_cache: CacheRef::new(NZU16!(4_096), NZUsize!(1_024)),
        value_partition: format!("{partition}-values"),
        compression: None,
        codec_config,
        items_per_section: NZU64!(items_per_section),
        key_write_buffer: NZUsize!(1 << 16),
        value_write_buffer: NZUsize!(1 << 20),
        replay_buffer: NZUsize!(1 << 20),
    }
}

impl<E: Context + Spawner> DiskHistory<E> {
    /// Opens (or creates) the history in partitions prefixed `partition`.
    pub async fn open(context: E, partition: &str) -> Result<Self, HistoryError> {
        let headers = Headers::init(
            context.child("headers"),
            archive_config(&format!("{partition}-headers"), BLOCKS_PER_SECTION, ()),
        )
        .await?;
        let messages_cfg: (RangeCfg<usize>, ()) = ((..=limits::MAX_BLOCK_MESSAGES).into(), ());
        let outboxes = Outboxes::init(
            context.child("outboxes"),
            archive_config(
                &format!("{partition}-outboxes"),
                BLOCKS_PER_SECTION,
                messages_cfg,
            ),
        )
        .await?;
        let status_cfg: (RangeCfg<usize>, ()) = ((..=MAX_STATUS_BYTES).into(), ());
        let transactions = Transactions::init(
            context.child("transactions"),
            archive_config(
                &format!("{partition}-transactions"),
                TXS_PER_SECTION,
                status_cfg,
            ),
        )
        .await?;
        Ok(DiskHistory {
            headers: Some(headers),
            outboxes: Some(outboxes),
            transactions: Some(transactions),
        })
    }

    /// Writes the transactions, then the messages, then the header (what marks the block as
    /// recorded), each durably.
    async fn write(
        &mut self,
        block: BlockRecord,
        statuses: Vec<(Digest, TxStatus)>,
    ) -> Result<(), HistoryError> {
        let BlockRecord { header, messages } = block;
        let height = header.header.height;
        let digest = header.header.hash();
        let mut transactions = self.transactions.take().ok_or(HistoryError::Closed)?;
        for (sequence, (hash, status)) in (header.first_tx..).zip(statuses) {
            let record = serde_json::to_vec(&status).map_err(|_| HistoryError::Malformed)?;
            transactions = transactions.put(sequence, hash, &record).await?;
        }
        self.transactions = Some(transactions.sync().await?);
        if !messages.is_empty() {
            let outboxes = self.outboxes.take().ok_or(HistoryError::Closed)?;
            self.outboxes = Some(outboxes.put_sync(height, digest, &messages).await?);
        }
        let headers = self.headers.take().ok_or(HistoryError::Closed)?;
        self.headers = Some(headers.put_sync(height, digest, &header).await?);
        Ok(())
    }

    async fn prune_below(&mut self, height: u64) -> Result<(), HistoryError> {
        let headers = self.headers.as_ref().ok_or(HistoryError::Closed)?;
        let Some(first_tx) = headers
            .get(Identifier::Index(height))
            .await?
            .map(|record| record.first_tx)
        else {
            return Ok(());
        };
        let headers = self.headers.take().ok_or(HistoryError::Closed)?;
        self.headers = Some(headers.prune(height).await?);
        let outboxes = self.outboxes.take().ok_or(HistoryError::Closed)?;
        self.outboxes = Some(outboxes.prune(height).await?);
        let transactions = self.transactions.take().ok_or(HistoryError::Closed)?;
        self.transactions = Some(transactions.prune(first_tx).await?);
        Ok(())
    }
}

impl<E: Context + Spawner> History for DiskHistory<E> {
    fn record(
        &mut self,
        block: BlockRecord,
        statuses: Vec<(Digest, TxStatus)>,
    ) -> BoxFuture<'_, Result<(), HistoryError>> {
        Box::pin(self.write(block, statuses))
    }

    fn header(&self, height: u64) -> BoxFuture<'_, Result<Option<HeaderRecord>, HistoryError>> {
        Box::pin(async move {
            let headers = self.headers.as_ref().ok_or(HistoryError::Closed)?;
            Ok(headers.get(Identifier::Index(height)).await?)
        })
    }

    fn messages(
        &self,
        height: u64,
    ) -> BoxFuture<'_, Result<Option<Vec<DownwardMessage>>, HistoryError>> {
        Box::pin(async move {
            let headers = self.headers.as_ref().ok_or(HistoryError::Closed)?;
            if !headers.has(Identifier::Index(height)).await? {
                return Ok(None);
            }
            let outboxes = self.outboxes.as_ref().ok_or(HistoryError::Closed)?;
            let messages = outboxes.get(Identifier::Index(height)).await?;
            Ok(Some(messages.unwrap_or_default()))
        })
    }

    fn transaction(&self, hash: Digest) -> BoxFuture<'_, Result<Option<TxStatus>, HistoryError>> {
        Box::pin(async move {
            let transactions = self.transactions.as_ref().ok_or(HistoryError::Closed)?;
            let Some(record) = transactions.get(Identifier::Key(&hash)).await? else {
                return Ok(None);
            };
            serde_json::from_slice(&record)
                .map(Some)
                .map_err(|_| HistoryError::Malformed)
        })
    }

    fn prune(&mut self, height: u64) -> BoxFuture<'_, Result<(), HistoryError>> {
        Box::pin(self.prune_below(height))
    }
}

/// Test-only: a [`History`] in memory.
#[cfg(any(test, feature = "mocks"))]
#[derive(Default)]
pub struct MemoryHistory {
    blocks: std::collections::BTreeMap<u64, BlockRecord>,
    transactions: std::collections::BTreeMap<Digest, (u64, TxStatus)>,
}

#[cfg(any(test, feature = "mocks"))]
impl History for MemoryHistory {
    fn record(
        &mut self,
        block: BlockRecord,
        statuses: Vec<(Digest, TxStatus)>,
    ) -> BoxFuture<'_, Result<(), HistoryError>> {
        let height = block.header.header.height;
        if !self.blocks.contains_key(&height) {
            for (hash, status) in statuses {
                self.transactions.entry(hash).or_insert((height, status));
            }
            self.blocks.insert(height, block);
        }
        Box::pin(async { Ok(()) })
    }

    fn header(&self, height: u64) -> BoxFuture<'_, Result<Option<HeaderRecord>, HistoryError>> {
        let header = self.blocks.get(&height).map(|b| b.header.clone());
        Box::pin(async move { Ok(header) })
    }

    fn messages(
        &self,
        height: u64,
    ) -> BoxFuture<'_, Result<Option<Vec<DownwardMessage>>, HistoryError>> {
        let messages = self.blocks.get(&height).map(|b| b.messages.clone());
        Box::pin(async move { Ok(messages) })
    }

    fn transaction(&self, hash: Digest) -> BoxFuture<'_, Result<Option<TxStatus>, HistoryError>> {
        let status = self.transactions.get(&hash).map(|(_, s)| s.clone());
        Box::pin(async move { Ok(status) })
    }

    fn prune(&mut self, height: u64) -> BoxFuture<'_, Result<(), HistoryError>> {
        self.blocks.retain(|h, _| *h >= height);
        self.transactions.retain(|_, (h, _)| *h >= height);
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commonware_runtime::{Runner as _, deterministic};
    use phala_types::{Address, Destination};

    fn block(height: u64, first_tx: u64, transactions: u32, messages: usize) -> BlockRecord {
        let header = Header {
            height,
            parent: Digest([height as u8; 32]),
            timestamp: height,
            tx_root: Digest([1; 32]),
            state_root: Digest([2; 32]),
            outbox_root: Digest([3; 32]),
            epoch: 0,
            proposer: Address([4; 32]),
        };
        let message = |sequence| DownwardMessage {
            destination: Destination::All,
            sequence,
            topic: b"t".to_vec().into(),
            payload: b"p".to_vec().into(),
        };
        BlockRecord {
            header: HeaderRecord {
                header,
                first_tx,
                transactions,
            },
            messages: (0..messages as u64).map(message).collect(),
        }
    }

    fn statuses(height: u64, hashes: &[u8]) -> Vec<(Digest, TxStatus)> {
        hashes
            .iter()
            .enumerate()
            .map(|(index, byte)| {
                let status = TxStatus::Finalized {
                    height,
                    index: index as u32,
                    block: "b".into(),
                    failed: None,
                    events: Vec::new(),
                };
                (Digest([*byte; 32]), status)
            })
            .collect()
    }

    /// What is recorded survives a restart; a block recorded again (the node died before its
    /// state committed) changes nothing; pruning forgets whole old sections only.
    #[test]
    fn records_survive_a_restart_and_are_pruned_by_section() {
        let (_, checkpoint) =
            deterministic::Runner::default().start_and_recover(|context| async move {
                let mut history = DiskHistory::open(context, "history").await.unwrap();
                history.record(block(0, 0, 0, 0), vec![]).await.unwrap();
                history
                    .record(block(1, 0, 2, 3), statuses(1, &[7, 8]))
                    .await
                    .unwrap();
            });
        let (_, checkpoint) =
            deterministic::Runner::from(checkpoint).start_and_recover(|context| async move {
                let mut history = DiskHistory::open(context, "history").await.unwrap();
                assert_eq!(
                    history.header(1).await.unwrap(),
                    Some(block(1, 0, 2, 3).header)
                );
                assert_eq!(history.messages(1).await.unwrap().map(|m| m.len()), Some(3));
                assert_eq!(history.messages(0).await.unwrap(), Some(vec![]));
                assert_eq!(history.messages(2).await.unwrap(), None, "not recorded");
                assert_eq!(
                    history.transaction(Digest([8; 32])).await.unwrap(),
                    Some(statuses(1, &[7, 8])[1].1.clone())
                );
                // Recorded again with other contents: the first record stands.
                history
                    .record(block(1, 0, 1, 0), statuses(9, &[7]))
                    .await
                    .unwrap();
                assert_eq!(
                    history.header(1).await.unwrap(),
                    Some(block(1, 0, 2, 3).header)
                );
                assert_eq!(
                    history.transaction(Digest([7; 32])).await.unwrap(),
                    Some(statuses(1, &[7])[0].1.clone())
                );
                // Fill the first section and start the next, then prune below the second.
                for height in 2..=BLOCKS_PER_SECTION {
                    history
                        .record(block(height, 2, 0, 0), vec![])
                        .await
                        .unwrap();
                }
                history.prune(BLOCKS_PER_SECTION).await.unwrap();
            });
        deterministic::Runner::from(checkpoint).start(|context| async move {
            let history = DiskHistory::open(context, "history").await.unwrap();
            assert_eq!(history.header(1).await.unwrap(), None, "pruned");
            assert_eq!(history.messages(1).await.unwrap(), None, "pruned");
            assert!(history.header(BLOCKS_PER_SECTION).await.unwrap().is_some());
        });
    }

    #[test]
    fn a_header_record_has_fixed_bytes() {
        let record = block(5, 9, 2, 0).header;
        let encoded = commonware_codec::Encode::encode(&record);
        assert_eq!(
            hex::encode(&encoded[encoded.len() - 12..]),
            "000000000000000900000002",
            "first_tx then transactions, big-endian, after the header"
        );
        let decoded = <HeaderRecord as commonware_codec::DecodeExt<()>>::decode(encoded).unwrap();
        assert_eq!(decoded, record);
    }
}
