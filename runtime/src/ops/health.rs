//! A node's plain-HTTP health listener: `/metrics` (Prometheus text), `/health` (the process
//! answers) and `/ready` (it knows a leader and has applied what it knows is committed).

use std::sync::Arc;

use crate::raft::node::RaftNode;

/// Serves `/metrics`, `/health` and `/ready` of `node` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    pool: crate::net::conn::Pool,
    node: Arc<RaftNode>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let metrics_node = node.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let node = metrics_node.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        node.metrics().render(&node.status()),
                    )
                }
            }),
        )
        .route("/health", get(|| async { "ok" }))
        .route(
            "/ready",
            get(move || {
                let node = node.clone();
                async move {
                    match node.readiness() {
                        Ok(()) => (StatusCode::OK, "ready".to_string()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                    }
                }
            }),
        );
    axum::serve(
        crate::net::conn::axum_listener(listener, pool, "metrics")?,
        app,
    )
    .with_graceful_shutdown(shutdown)
    .await
}
