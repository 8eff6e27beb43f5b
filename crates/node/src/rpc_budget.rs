//! Request budgets: anyone may call a node's RPC, so no connection may make it work without
//! bound. A call costs what it took: the time its handler ran (awaits included, since a call
//! that waits still holds the server's resources), in [`UNIT`]s. Each client holds a bucket of
//! [`BUDGET_PER_SECOND`] units (refilled continuously, holding at most [`BURST`]), and all
//! clients together one of [`SERVER_BUDGET_PER_SECOND`], so opening more connections buys no
//! more work. A client is a remote address (an IPv6 one by its /64), whatever number of
//! connections it opens; one on this host (local tools, a proxy in front of the node) is each
//! of its connections.
//!
//! A call first reserves what its worst case may cost ([`reserve`]), so one connection cannot
//! start more work at once than its budget could pay; when it ends, the reservation is
//! settled against the time it took, and a call that took longer than it reserved leaves its
//! buckets in debt, paid off before the next call runs. A call its buckets cannot reserve is
//! refused with [`code::OVER_BUDGET`] and the wait that would pay it. Clocks here are wall
//! clocks: the RPC is not consensus.

use crate::rpc::code;
use jsonrpsee::{
    ConnectionId, MethodResponse,
    server::middleware::rpc::{Batch, BatchEntry, Notification, RpcServiceT},
    types::{ErrorObject, Request},
};
use std::{
    collections::HashMap,
    future::Future,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// One unit of budget: ten microseconds of a handler's time.
pub const UNIT: Duration = Duration::from_micros(10);
/// Units a connection regains each second: a quarter of a second of handler time.
pub const BUDGET_PER_SECOND: u32 = 25_000;
/// Most units a connection may hold (what an idle connection may spend at once).
pub const BURST: u32 = 50_000;
/// Units all connections together regain each second: one and a half seconds of handler
/// time, three quarters of the RPC's two threads, whatever the number of connections.
pub const SERVER_BUDGET_PER_SECOND: u32 = 150_000;
/// Most units all connections together may hold.
pub const SERVER_BURST: u32 = 300_000;
/// Clients whose buckets are remembered before full ones are forgotten.
const MAX_TRACKED: usize = 4 * crate::rpc::MAX_CONNECTIONS as usize;

/// Bytes of a `submit_transactions` request that reserve one more unit: signature checks and
/// admission grow with the transactions (a batch of 4,096 transfers, 1.5 MB of hex, took
/// 107 ms in `benches/rpc_worst_case.rs` and reserves 114 ms).
pub const SUBMIT_BYTES_PER_UNIT: usize = 128;

/// What a call of `method` whose params are `params_bytes` long reserves before it runs, in
/// units: about its worst case as `benches/rpc_worst_case.rs` measures it, and never more than
/// a connection's [`BURST`], so that any call can run from a full bucket.
pub fn reserve(method: &str, params_bytes: usize) -> u32 {
    let units = match method {
        "submit_transactions" => 10 + params_bytes / SUBMIT_BYTES_PER_UNIT,
        // Up to 128 proofs, a whole block, thousands of headers or messages with proofs.
        "state_values" | "block" | "headers" | "stream_messages" | "stream_witness" => 10_000,
        // A whole block's outbox with proofs, or a scan of every worker.
        "outbox" | "workers" => 2_000,
        "code" => 200,
        // Lookups with one proof, answers from memory, subscriptions.
        _ => 10,
    };
    units.min(BURST as usize) as u32
}

/// The units a call that ran for `took` costs (at least one).
pub fn units(took: Duration) -> u32 {
    (took.as_nanos() / UNIT.as_nanos()).clamp(1, u32::MAX as u128) as u32
}

/// A bucket of units, refilled continuously; it may fall into debt when a call took more than
/// it reserved (also the node's quote-verification throttle).
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

    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.updated).as_secs_f64();
        self.units = (self.units + elapsed * self.per_second).min(self.burst);
        self.updated = now;
    }

    /// Takes `cost` units, or says how long until the bucket could pay them.
    pub(crate) fn take(&mut self, cost: u32) -> Result<(), Duration> {
        self.refill();
        let cost = cost as f64;
        if self.units >= cost {
            self.units -= cost;
            return Ok(());
        }
        let missing = cost - self.units;
        Err(Duration::from_secs_f64(missing / self.per_second))
    }

    /// Gives back a reservation of `reserved` units and takes the `spent` ones instead, into
    /// debt if need be.
    fn settle(&mut self, reserved: u32, spent: u32) {
        self.refill();
        self.units = (self.units + reserved as f64 - spent as f64).min(self.burst);
    }

    /// Whether the bucket is back to its burst (forgetting it forgives nothing).
    fn is_full(&mut self) -> bool {
        self.refill();
        self.units >= self.burst
    }
}

/// The address a request came from: the server puts it in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub IpAddr);

/// Whom a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    /// A remote address: every connection from it shares the bucket.
    Address(IpAddr),
    /// A connection from this host, or one whose address is unknown.
    Connection(ConnectionId),
}

/// The client a request with these extensions belongs to.
fn client_of(extensions: &jsonrpsee::Extensions) -> Option<Client> {
    let connection = extensions.get::<ConnectionId>().copied();
    match extensions.get::<Peer>().map(|Peer(ip)| ip.to_canonical()) {
        Some(ip) if !ip.is_loopback() => Some(Client::Address(network_of(ip))),
        _ => connection.map(Client::Connection),
    }
}

/// The network a client is known by: an IPv4 address, or an IPv6 /64 (one host commonly holds
/// a whole /64, so counting its addresses apart would multiply its budget).
fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(octets.into())
        }
    }
}

/// The buckets of a server: one per client, and one for all of them together.
#[derive(Debug, Default)]
pub struct Buckets {
    clients: Mutex<HashMap<Client, Bucket>>,
    all: Mutex<Option<Bucket>>,
}

impl Buckets {
    /// Reserves `units` from `client`'s bucket and from the server's.
    fn reserve(&self, client: Option<Client>, units: u32) -> Result<(), Duration> {
        let mut all = lock(&self.all);
        let all = all.get_or_insert_with(|| Bucket::new(SERVER_BUDGET_PER_SECOND, SERVER_BURST));
        if let Some(client) = client {
            let mut clients = lock(&self.clients);
            if clients.len() >= MAX_TRACKED {
                clients.retain(|_, bucket| !bucket.is_full());
            }
            clients
                .entry(client)
                .or_insert_with(|| Bucket::new(BUDGET_PER_SECOND, BURST))
                .take(units)?;
        }
        if let Err(wait) = all.take(units) {
            self.settle_client(client, units, 0);
            return Err(wait);
        }
        Ok(())
    }

    /// Settles on `client`'s bucket a reservation of `reserved` units that `spent` units.
    fn settle_client(&self, client: Option<Client>, reserved: u32, spent: u32) {
        if let Some(client) = client {
            let mut clients = lock(&self.clients);
            let bucket = clients
                .entry(client)
                .or_insert_with(|| Bucket::new(BUDGET_PER_SECOND, BURST));
            bucket.settle(reserved, spent);
        }
    }

    /// Settles a call that ran, on the client's bucket and the server's.
    fn settle(&self, client: Option<Client>, reserved: u32, spent: u32) {
        self.settle_client(client, reserved, spent);
        if let Some(all) = lock(&self.all).as_mut() {
            all.settle(reserved, spent);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The middleware, built for each connection (and, over HTTP, for each request: the client's
/// bucket is found by its address or connection id).
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

    /// Runs `call` if `reserved` units can be reserved for `client`, and settles them
    /// against the time it took, also when the call is dropped half-way (its client went
    /// away); otherwise answers `refused` with the wait. (`call` starts the call: a
    /// synchronous method runs when its future is made, not when it is awaited.)
    async fn metered<F: Future<Output = MethodResponse>>(
        &self,
        client: Option<Client>,
        reserved: u32,
        call: impl FnOnce() -> F,
        refused: impl FnOnce(ErrorObject<'static>) -> MethodResponse,
    ) -> MethodResponse {
        if let Err(wait) = self.buckets.reserve(client, reserved) {
            return refused(over_budget(wait));
        }
        let _settles = Running {
            buckets: &self.buckets,
            client,
            reserved,
            started: Instant::now(),
        };
        call().await
    }
}

/// A call that reserved its budget and runs: settled when it ends, however it ends.
struct Running<'a> {
    buckets: &'a Buckets,
    client: Option<Client>,
    reserved: u32,
    started: Instant,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let spent = units(self.started.elapsed());
        self.buckets.settle(self.client, self.reserved, spent);
    }
}

fn reserve_for(request: &Request<'_>) -> u32 {
    let params_bytes = request
        .params
        .as_ref()
        .map_or(0, |params| params.get().len());
    reserve(request.method_name(), params_bytes)
}

fn over_budget(wait: Duration) -> ErrorObject<'static> {
    let wait_ms = wait.as_millis().max(1) as u64;
    ErrorObject::owned(
        code::OVER_BUDGET,
        format!(
            "this client (or the server) spent its request budget ({BUDGET_PER_SECOND} units of 10 µs a second); retry in {wait_ms} ms"
        ),
        Some(serde_json::json!({ "retry_after_ms": wait_ms })),
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
        let client = client_of(request.extensions());
        let reserved = reserve_for(&request);
        let id = request.id.clone();
        let budget = self.clone();
        async move {
            budget
                .metered(
                    client,
                    reserved,
                    || budget.service.call(request),
                    |error| MethodResponse::error(id, error),
                )
                .await
        }
    }

    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        // A batch reserves for all its calls, or none of it runs; one that reserves more than
        // a connection can ever hold is refused (its calls may be sent one by one).
        let reserved = batch
            .iter()
            .filter_map(|entry| entry.as_ref().ok())
            .map(|entry| match entry {
                BatchEntry::Call(request) => reserve_for(request),
                BatchEntry::Notification(notification) => reserve(notification.method_name(), 0),
            })
            .fold(0u32, u32::saturating_add)
            .max(1);
        let client = batch
            .iter()
            .filter_map(|entry| entry.as_ref().ok())
            .find_map(|entry| client_of(entry.extensions()));
        let budget = self.clone();
        async move {
            if reserved > BURST {
                let error = ErrorObject::owned(
                    jsonrpsee::types::error::INVALID_REQUEST_CODE,
                    format!(
                        "this batch reserves {reserved} units, more than a connection holds ({BURST}); send its calls in smaller batches"
                    ),
                    None::<()>,
                );
                return MethodResponse::error(jsonrpsee::types::Id::Null, error);
            }
            budget
                .metered(
                    client,
                    reserved,
                    || budget.service.batch(batch),
                    |error| MethodResponse::error(jsonrpsee::types::Id::Null, error),
                )
                .await
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
        let heavy = reserve("block", 0);
        for _ in 0..BURST / heavy {
            bucket.take(heavy).expect("within the burst");
        }
        let wait = bucket.take(heavy).expect_err("over budget");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(400),
            "{wait:?}"
        );
    }

    /// A call that took longer than it reserved leaves the bucket in debt: the next call
    /// waits until the debt is paid off, however small it is.
    #[test]
    fn a_call_that_overran_its_reservation_is_paid_off_before_the_next() {
        let mut bucket = Bucket::new(BUDGET_PER_SECOND, BURST);
        bucket.take(10).expect("a full bucket");
        bucket.settle(10, BURST + BUDGET_PER_SECOND);
        let wait = bucket.take(1).expect_err("in debt");
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_millis(1_001),
            "{wait:?}"
        );
        // A call that took less than it reserved gets the rest back.
        let mut bucket = Bucket::new(BUDGET_PER_SECOND, BURST);
        bucket.take(BURST).expect("a full bucket");
        bucket.settle(BURST, 1);
        bucket.take(BURST - 2).expect("the reservation came back");
    }

    fn extensions(peer: &str, connection: usize) -> jsonrpsee::Extensions {
        let mut extensions = jsonrpsee::Extensions::new();
        extensions.insert(Peer(peer.parse().expect("an address")));
        extensions.insert(ConnectionId(connection));
        extensions
    }

    /// A remote client is its address: opening more connections buys it no more budget, and
    /// an IPv6 host is its /64. A client on this host (a local tool, a proxy in front of the
    /// node) is each of its connections.
    #[test]
    fn a_client_is_its_address_or_a_local_connection() {
        let client = |peer, connection| client_of(&extensions(peer, connection));
        assert_eq!(client("203.0.113.7", 1), client("203.0.113.7", 2));
        assert_ne!(client("203.0.113.7", 1), client("203.0.113.8", 1));
        assert_eq!(client("2001:db8::1", 1), client("2001:db8::ffff:2", 2));
        assert_ne!(client("2001:db8::1", 1), client("2001:db8:0:1::1", 1));
        assert_eq!(client("::ffff:203.0.113.7", 1), client("203.0.113.7", 2));
        assert_ne!(client("127.0.0.1", 1), client("127.0.0.1", 2));
        assert_ne!(client("::1", 1), client("::1", 2));

        // Two connections from one address share its bucket.
        let buckets = Buckets::default();
        let first = client("198.51.100.1", 1);
        buckets.reserve(first, BURST).expect("a full bucket");
        let wait = buckets
            .reserve(client("198.51.100.1", 2), 10)
            .expect_err("the address spent its budget");
        assert!(wait > Duration::ZERO);
        buckets
            .reserve(client("198.51.100.2", 3), 10)
            .expect("another address has its own");
    }

    #[test]
    fn units_are_handler_time() {
        assert_eq!(units(Duration::ZERO), 1);
        assert_eq!(units(Duration::from_millis(1)), 100);
        assert_eq!(units(Duration::from_secs(1)), 100_000);
    }

    /// Every reservation can be paid from a full bucket, and a batch of transactions reserves
    /// by its size: ten transfers about as much as one, the largest batch most of a burst.
    #[test]
    fn every_reservation_fits_a_burst_and_batches_reserve_by_size() {
        assert!(reserve("state_values", 0) > reserve("state_value", 0));
        let transfer_hex = 356;
        assert!(
            reserve("submit_transactions", 10 * transfer_hex)
                <= 2 * reserve("submit_transaction", transfer_hex) + 20
        );
        let largest = reserve("submit_transactions", 4_096 * transfer_hex);
        assert!((10_000..=20_000).contains(&largest), "{largest}");
        assert_eq!(reserve("submit_transactions", 16 << 20), BURST);
    }
}
