//! fos over HTTP: the search API and the web page, served by axum.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/search` | multipart `background` (image file) + `query` (JSON `{"box", "category", "k", "patterns", "rerank"}`) -> the JSON of `fos search --json` |
//! | `POST /v1/composite` | multipart `background` + `query` (`{"box", "id"}`) -> PNG |
//! | `GET /v1/categories` | `[{"name", "cutouts"}]` |
//! | `GET /v1/foregrounds/{id}` | the cut-out PNG |
//! | `GET /healthz` | liveness, never waits for model work |
//! | `GET /openapi.json` | OpenAPI 3 description |
//! | `GET /` | the web page (no external scripts or fonts) |
//!
//! Errors are `{"error": {"code", "message"}}` with the matching status.
//! Limits: upload size (413), image pixels (413), a per-request timeout (408),
//! and a cap on concurrent model work (requests queue for it).
//!
//! ```no_run
//! # async fn demo(searcher: fos_search::Searcher) -> std::io::Result<()> {
//! let app = fos_server::router(fos_server::AppState::new(searcher, fos_server::Limits::default()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

#![warn(missing_docs)]

mod api;
pub mod client;
mod openapi;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use fos_image::decode::DecodeOptions;
use fos_search::Searcher;
use tokio::sync::Semaphore;

pub use api::{parse_search_request, ApiError};

/// Server limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body in bytes.
    pub max_upload: usize,
    /// Largest image in pixels (checked from the header before decoding).
    pub max_pixels: u64,
    /// Time allowed for a whole request, upload included.
    pub timeout: Duration,
    /// Model computations running at once; others wait.
    pub max_concurrent: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_upload: 20 << 20,
            max_pixels: 40_000_000,
            timeout: Duration::from_secs(30),
            max_concurrent: 2,
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    searcher: Arc<Searcher>,
    limits: Limits,
    work: Arc<Semaphore>,
}

impl AppState {
    /// State over a searcher.
    pub fn new(searcher: Searcher, limits: Limits) -> Self {
        let work = Arc::new(Semaphore::new(limits.max_concurrent.max(1)));
        AppState {
            searcher: Arc::new(searcher),
            limits,
            work,
        }
    }

    fn decode(&self) -> DecodeOptions {
        DecodeOptions {
            max_pixels: self.limits.max_pixels,
        }
    }
}

/// The page, served from the binary.
pub const INDEX_HTML: &str = include_str!("../web/index.html");

/// All routes.
pub fn router(state: AppState) -> Router {
    let limit = state.limits.max_upload;
    Router::new()
        .route("/", get(api::index))
        .route("/healthz", get(api::healthz))
        .route("/openapi.json", get(api::openapi))
        .route("/v1/categories", get(api::categories))
        .route("/v1/foregrounds/{id}", get(api::foreground))
        .route("/v1/search", post(api::search))
        .route("/v1/composite", post(api::composite))
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves until SIGINT or SIGTERM, then finishes the requests in flight.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
