//! The HTTP API: `GET /info`, `POST /registration`, `POST /sync`, `GET /egress?from=N`,
//! `POST /query` (encrypted contract queries, see `query`), `GET /metrics` (Prometheus text).

use crate::{
    api::{ApiError, Egress, RegistrationRequest, RegistrationResponse, SyncBatch},
    query::{QueryError, QueryView},
    runtime::{Pruntime, PruntimeError},
};
use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use commonware_codec::Encode;
use phala_client::contracts::QueryRequest;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};
use serde::Deserialize;
use std::sync::{Arc, Mutex, RwLock};

/// Largest request body (a batch of 20,000 headers is about 10 MiB of JSON).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Counters operators watch.
#[derive(Default)]
struct Metrics {
    height: Gauge,
    batches: Counter,
    refused: Counter,
    messages: Counter,
    egress_next: Gauge,
    queries: Counter,
    refused_queries: Counter,
}

struct Shared {
    pruntime: Mutex<Pruntime>,
    /// What queries read: replaced after each accepted batch, never locked during a query.
    view: RwLock<Arc<QueryView>>,
    metrics: Metrics,
    registry: Registry,
}

/// The API's router over a pRuntime.
pub fn router(pruntime: Pruntime) -> Router {
    let metrics = Metrics::default();
    let mut registry = Registry::with_prefix("pruntime");
    registry.register("height", "last verified block", metrics.height.clone());
    registry.register("batches", "sync batches accepted", metrics.batches.clone());
    registry.register(
        "refused_batches",
        "sync batches refused",
        metrics.refused.clone(),
    );
    registry.register(
        "messages",
        "chain messages processed",
        metrics.messages.clone(),
    );
    registry.register(
        "egress_next",
        "next upward sequence",
        metrics.egress_next.clone(),
    );
    registry.register("queries", "queries received", metrics.queries.clone());
    registry.register(
        "refused_queries",
        "queries refused before reaching a contract",
        metrics.refused_queries.clone(),
    );
    metrics.height.set(pruntime.height() as i64);
    let view = RwLock::new(Arc::new(pruntime.query_view()));
    let shared = Arc::new(Shared {
        view,
        pruntime: Mutex::new(pruntime),
        metrics,
        registry,
    });
    Router::new()
        .route("/info", get(info))
        .route("/registration", post(registration))
        .route("/sync", post(sync))
        .route("/egress", get(egress))
        .route("/query", post(query))
        .route("/metrics", get(metrics_text))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

fn error(status: StatusCode, error: impl ToString) -> Response {
    (
        status,
        Json(ApiError {
            error: error.to_string(),
        }),
    )
        .into_response()
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Pruntime> {
    // A panic while holding the lock cannot leave a half-applied batch (state is swapped in
    // whole), so a poisoned lock is still consistent.
    shared.pruntime.lock().unwrap_or_else(|p| p.into_inner())
}

async fn info(State(shared): State<Arc<Shared>>) -> Response {
    Json(lock(&shared).info()).into_response()
}

async fn registration(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<RegistrationRequest>,
) -> Response {
    match lock(&shared).registration(&request) {
        Ok(signed) => Json(RegistrationResponse {
            registration: hex::encode(signed.encode()),
        })
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn sync(State(shared): State<Arc<Shared>>, Json(batch): Json<SyncBatch>) -> Response {
    let worker = shared.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut pruntime = lock(&worker);
        let outcome = pruntime.sync(&batch);
        if outcome.is_ok() {
            let view = Arc::new(pruntime.query_view());
            *worker.view.write().unwrap_or_else(|p| p.into_inner()) = view;
        }
        outcome
    })
    .await;
    let metrics = &shared.metrics;
    match result {
        Ok(Ok(outcome)) => {
            metrics.batches.inc();
            metrics.messages.inc_by(outcome.messages as u64);
            metrics.height.set(outcome.height as i64);
            metrics.egress_next.set(outcome.egress_next as i64);
            Json(outcome).into_response()
        }
        Ok(Err(e)) => {
            metrics.refused.inc();
            tracing::warn!(error = %e, "sync batch refused");
            let status = match e {
                PruntimeError::Sync(_) => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[derive(Deserialize)]
struct EgressQuery {
    from: u64,
}

async fn egress(State(shared): State<Arc<Shared>>, Query(query): Query<EgressQuery>) -> Response {
    match lock(&shared).egress(query.from) {
        Ok(messages) => Json(Egress {
            messages: messages.iter().map(|m| hex::encode(m.encode())).collect(),
        })
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn query(State(shared): State<Arc<Shared>>, Json(request): Json<QueryRequest>) -> Response {
    let view = shared
        .view
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    shared.metrics.queries.inc();
    match tokio::task::spawn_blocking(move || view.answer(&request)).await {
        Ok(Ok(response)) => Json(response).into_response(),
        Ok(Err(e)) => {
            shared.metrics.refused_queries.inc();
            let status = match e {
                QueryError::UnknownContract(_) => StatusCode::NOT_FOUND,
                QueryError::Stale { .. } | QueryError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
                QueryError::BadSignature => StatusCode::UNAUTHORIZED,
                _ => StatusCode::BAD_REQUEST,
            };
            error(status, e)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    let mut text = String::new();
    match encode(&mut text, &shared.registry) {
        Ok(()) => text.into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
