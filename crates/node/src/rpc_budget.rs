//! Request budgets: anyone may call a node's RPC, so no connection may make it work without
//! bound. Each connection holds a bucket of [`BUDGET_PER_SECOND`] units (refilled
//! continuously, holding at most [`BURST`]), and all connections together one of
//! [`SERVER_BUDGET_PER_SECOND`], so opening more connections buys no more work. Each call costs
//! by what its worst case makes the node do ([`cost`]); a call a bucket cannot pay is refused
//! with [`code::OVER_BUDGET`] and the wait that would pay it. Clocks here are wall clocks: the
//! RPC is not consensus.

use crate::rpc::code;
use jsonrpsee::{
    ConnectionId, MethodResponse,
    server::middleware::rpc::{Batch, BatchEntry, Notification, RpcServiceT},
    types::{ErrorObject, Request},
};
use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// Units a connection regains each second.
pub const BUDGET_PER_SECOND: u32 = 2_000;
/// Most units a connection may hold (what an idle connection may spend at once).
pub const BURST: u32 = 4_000;
/// Units all connections together regain each second: what bounds the RPC's work however many
/// connections a client opens.
pub const SERVER_BUDGET_PER_SECOND: u32 = 40_000;
/// Most units all connections together may hold.
pub const SERVER_BURST: u32 = 80_000;
/// Connections whose buckets are remembered before idle ones are forgotten.
const MAX_TRACKED: usize = 4 * crate::rpc::MAX_CONNECTIONS as usize;

/// Bytes of a `submit_transactions` request that cost one more unit: signature checks and
/// admission grow with the transactions, so a batch pays by its size (a batch of 4,096
/// transfers about 180 units, one of ten transfers 2).
pub const SUBMIT_BYTES_PER_UNIT: usize = 8 * 1024;

/// What a call of `method` whose params are `params_bytes` long costs, in units (about the
/// work of answering a lookup with one state proof).
pub fn cost(method: &str, params_bytes: usize) -> u32 {
    match method {
        "submit_transactions" => 2 + (params_bytes / SUBMIT_BYTES_PER_UNIT).min(1 << 20) as u32,
        "health" | "chain_info" | "transaction_status" | "finalized_head" => 1,
        "subscribe_finalized" | "unsubscribe_finalized" => 1,
        "submit_transaction" | "account" | "state_value" | "contract_report" | "code" => 2,
        "contract" | "outbox" => 8,
        // Up to 128 proofs, a whole block, thousands of headers or messages with proofs.
        "state_values" | "block" | "headers" | "stream_messages" | "stream_witness" => 64,
        // Up to 4,096 signature checks, or a scan of every worker.
        "workers" => 256,
        _ => 1,
    }
}

/// A bucket of units, refilled continuously (also the node's quote-verification throttle).
#[derive(Debug)]
pub(crate) struct Bucket {
    units: f64,
    per_second: f64,
    burst: f64,
    updated: Instant,
}

impl Bucket {
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        Bucket {
            units: burst as f64,
            per_second: per_second as f64,
            burst: burst as f64,
            updated: Instant::now(),
        }
    }

    /// Takes `cost` units, or says how long until the bucket could pay them.
    pub(crate) fn take(&mut self, cost: u32) -> Result<(), Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.updated).as_secs_f64();
        self.units = (self.units + elapsed * self.per_second).min(self.burst);
        self.updated = now;
        let cost = cost as f64;
        if self.units >= cost {
            self.units -= cost;
            return Ok(());
        }
        let missing = cost - self.units;
        Err(Duration::from_secs_f64(missing / self.per_second))
    }
}

/// The buckets of a server: one per connection, and one for all of them together.
#[derive(Debug, Default)]
pub struct Buckets {
    connections: Mutex<HashMap<ConnectionId, Bucket>>,
    all: Mutex<Option<Bucket>>,
}

impl Buckets {
    /// Takes `cost` units from `connection`'s bucket and from the server's.
    fn take(&self, connection: Option<ConnectionId>, cost: u32) -> Result<(), Duration> {
        let mut all = lock(&self.all);
        let all = all.get_or_insert_with(|| Bucket::new(SERVER_BUDGET_PER_SECOND, SERVER_BURST));
        if let Some(connection) = connection {
            let mut connections = lock(&self.connections);
            if connections.len() >= MAX_TRACKED {
                // Forget connections idle long enough to have refilled anyway.
                connections.retain(|_, bucket| bucket.updated.elapsed() < Duration::from_secs(2));
            }
            connections
                .entry(connection)
                .or_insert_with(|| Bucket::new(BUDGET_PER_SECOND, BURST))
                .take(cost)?;
        }
        all.take(cost)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The middleware, built for each connection (and, over HTTP, for each request: the
/// connection's bucket is found by its id).
#[derive(Clone)]
pub struct Budget<S> {
    service: S,
    buckets: Arc<Buckets>,
}

impl<S> Budget<S> {
    /// `service` behind the server's `buckets`.
    pub fn new(service: S, buckets: Arc<Buckets>) -> Self {
        Budget { service, buckets }
    }
}

fn cost_of(request: &Request<'_>) -> u32 {
    let params_bytes = request
        .params
        .as_ref()
        .map_or(0, |params| params.get().len());
    cost(request.method_name(), params_bytes)
}

fn over_budget(wait: Duration) -> ErrorObject<'static> {
    ErrorObject::owned(
        code::OVER_BUDGET,
        format!(
            "this connection spent its request budget ({BUDGET_PER_SECOND} units a second); retry in {} ms",
            wait.as_millis().max(1)
        ),
        Some(serde_json::json!({ "retry_after_ms": wait.as_millis().max(1) as u64 })),
    )
}

impl<S> RpcServiceT for Budget<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Send
        + Sync
        + Clone
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(&self, request: Request<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let connection = request.extensions().get::<ConnectionId>().copied();
        let paid = self.buckets.take(connection, cost_of(&request));
        let service = self.service.clone();
        async move {
            match paid {
                Ok(()) => service.call(request).await,
                Err(wait) => MethodResponse::error(request.id, over_budget(wait)),
            }
        }
    }

    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        // A batch pays for all its calls up front, or none of it runs.
        let total = batch
            .iter()
            .filter_map(|entry| entry.as_ref().ok())
            .map(|entry| match entry {
                BatchEntry::Call(request) => cost_of(request),
                BatchEntry::Notification(notification) => cost(notification.method_name(), 0),
            })
            .fold(0u32, u32::saturating_add);
        let connection = batch
            .iter()
            .filter_map(|entry| entry.as_ref().ok())
            .find_map(|entry| entry.extensions().get::<ConnectionId>().copied());
        let paid = self.buckets.take(connection, total.max(1));
        let service = self.service.clone();
        async move {
            match paid {
                Ok(()) => service.batch(batch).await,
                Err(wait) => MethodResponse::error(jsonrpsee::types::Id::Null, over_budget(wait)),
            }
        }
    }

    fn notification<'a>(
        &self,
        notification: Notification<'a>,
    ) -> impl Future<Output = MethodResponse> + Send + 'a {
        self.service.notification(notification)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_pays_up_to_its_burst_then_names_the_wait() {
        let mut bucket = Bucket::new(BUDGET_PER_SECOND, BURST);
        let heavy = cost("workers", 0);
        for _ in 0..BURST / heavy {
            bucket.take(heavy).expect("within the burst");
        }
        let wait = bucket.take(heavy).expect_err("over budget");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
    }

    #[test]
    fn every_method_has_a_cost_and_proofs_cost_more_than_lookups() {
        assert!(cost("state_values", 0) > cost("state_value", 0));
        assert!(cost("block", 0) <= BURST);
    }

    /// A batch of transactions pays by its size: ten transfers cost as much as one, and the
    /// largest request (16 MiB) still fits a connection's burst, so it can always be paid.
    #[test]
    fn a_transaction_batch_pays_by_its_size() {
        let transfer_hex = 356;
        assert_eq!(
            cost("submit_transactions", 10 * transfer_hex),
            cost("submit_transaction", transfer_hex)
        );
        let largest = cost("submit_transactions", 4_096 * transfer_hex);
        assert!((150..=200).contains(&largest), "{largest}");
        assert!(cost("submit_transactions", 16 << 20) <= BURST);
    }
}
