//! The HTTP API: `GET /info`, `POST /registration`, `POST /sync`, `GET /egress?from=N`,
//! `POST /query` (encrypted contract queries, see `query`), `GET /metrics` (Prometheus text).

use crate::{
    query::{QueryError, QueryView, Session},
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
use phala_api::{
    pruntime::{ApiError, Egress, RegistrationRequest, RegistrationResponse, SyncBatch},
    query::{QueryRequest, QueryResponse, SessionOpened, SessionQuery},
};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};
use serde::Deserialize;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

/// Largest request body: a sync batch, which pherry builds to fit.
const MAX_BODY: usize = phala_api::pruntime::MAX_SYNC_BODY;
/// Largest query body: a 32 KiB input is about 66 KiB of hex JSON; more is refused (413)
/// before any decoding or decryption.
const MAX_QUERY_BODY: usize = 256 * 1024;
/// Query sessions a worker keeps at once, and for how long each.
const MAX_SESSIONS: usize = 10_000;
const SESSION_LIFETIME: Duration = Duration::from_secs(600);

/// Open query sessions by id, each with its expiry.
type Sessions = HashMap<[u8; 32], (Arc<Session>, Instant)>;

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
    /// Open query sessions by id, with their expiry; in memory only (a restart forgets them).
    sessions: Mutex<Sessions>,
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
        sessions: Mutex::new(HashMap::new()),
        metrics,
        registry,
    });
    Router::new()
        .route("/info", get(info))
        .route("/registration", post(registration))
        .route("/sync", post(sync))
        .route("/egress", get(egress))
        .route(
            "/query",
            post(query).layer(DefaultBodyLimit::max(MAX_QUERY_BODY)),
        )
        .route(
            "/session",
            post(open_session).layer(DefaultBodyLimit::max(MAX_QUERY_BODY)),
        )
        .route(
            "/session/query",
            post(session_query).layer(DefaultBodyLimit::max(MAX_QUERY_BODY)),
        )
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
    let view = current_view(&shared);
    shared.metrics.queries.inc();
    let answer = tokio::task::spawn_blocking(move || view.answer(&request)).await;
    query_response(&shared, answer)
}

async fn open_session(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<QueryRequest>,
) -> Response {
    let view = current_view(&shared);
    let opened = match tokio::task::spawn_blocking(move || view.open_session(&request)).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => return query_error(&shared, e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let (id, session) = opened;
    let mut sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
    admit(&mut sessions, id, session, Instant::now());
    Json(SessionOpened {
        session: hex::encode(id),
        expires_in_secs: SESSION_LIFETIME.as_secs(),
    })
    .into_response()
}

/// Keeps a new session, dropping expired ones when the table is full, and then the oldest:
/// nobody can lock callers out by opening sessions, and a caller whose session was dropped
/// gets `404` and opens another.
fn admit<S>(
    sessions: &mut HashMap<[u8; 32], (Arc<S>, Instant)>,
    id: [u8; 32],
    session: S,
    now: Instant,
) {
    if sessions.len() >= MAX_SESSIONS {
        sessions.retain(|_, (_, expires)| *expires > now);
    }
    if sessions.len() >= MAX_SESSIONS {
        let oldest = sessions
            .iter()
            .min_by_key(|(_, (_, expires))| *expires)
            .map(|(id, _)| *id);
        if let Some(oldest) = oldest {
            sessions.remove(&oldest);
        }
    }
    sessions.insert(id, (Arc::new(session), now + SESSION_LIFETIME));
}

async fn session_query(
    State(shared): State<Arc<Shared>>,
    Json(query): Json<SessionQuery>,
) -> Response {
    shared.metrics.queries.inc();
    let id: Option<[u8; 32]> = hex::decode(&query.session)
        .ok()
        .and_then(|bytes| bytes.try_into().ok());
    let session = id.and_then(|id| {
        let sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .get(&id)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(session, _)| (id, session.clone()))
    });
    let Some((id, session)) = session else {
        return query_error(&shared, QueryError::UnknownSession);
    };
    let view = current_view(&shared);
    let answer =
        tokio::task::spawn_blocking(move || view.answer_in_session(&id, &session, &query)).await;
    query_response(&shared, answer)
}

fn current_view(shared: &Shared) -> Arc<QueryView> {
    shared
        .view
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

fn query_response(
    shared: &Shared,
    answer: Result<Result<QueryResponse, QueryError>, tokio::task::JoinError>,
) -> Response {
    match answer {
        Ok(Ok(response)) => Json(response).into_response(),
        Ok(Err(e)) => query_error(shared, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn query_error(shared: &Shared, e: QueryError) -> Response {
    shared.metrics.refused_queries.inc();
    let status = match e {
        QueryError::UnknownContract(_) | QueryError::UnknownSession => StatusCode::NOT_FOUND,
        QueryError::Stale { .. } | QueryError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        QueryError::BadSignature => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e)
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    let mut text = String::new();
    match encode(&mut text, &shared.registry) {
        Ok(()) => text.into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> [u8; 32] {
        let mut id = [0; 32];
        id[..8].copy_from_slice(&(n as u64).to_be_bytes());
        id
    }

    #[test]
    fn a_full_session_table_drops_expired_sessions_then_the_oldest() {
        let start = Instant::now();
        let mut sessions = HashMap::new();
        for n in 0..MAX_SESSIONS {
            admit(
                &mut sessions,
                id(n),
                n,
                start + Duration::from_millis(n as u64),
            );
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        // All alive: the oldest (0) makes room.
        admit(
            &mut sessions,
            id(MAX_SESSIONS),
            MAX_SESSIONS,
            start + Duration::from_secs(20),
        );
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(!sessions.contains_key(&id(0)) && sessions.contains_key(&id(1)));
        // Later, every session but the newest has expired: they all go.
        let later = start + SESSION_LIFETIME + Duration::from_secs(19);
        admit(&mut sessions, id(0), 0, later);
        assert_eq!(sessions.len(), 2);
        assert!(sessions.contains_key(&id(0)) && sessions.contains_key(&id(MAX_SESSIONS)));
    }
}
