//! The local REST API on a unix socket (mode 0600: only root on the node may use it).

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cilium_agent_api::{ApiErrorBody, EndpointChangeRequest, EndpointRef, IpamRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixListener;

use crate::agent::{Agent, AgentError};

/// An answer: JSON with a status, or an error as `{"error": "..."}`.
struct Reply(StatusCode, serde_json::Value);

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        if self.0 == StatusCode::NO_CONTENT {
            return self.0.into_response();
        }
        (self.0, axum::Json(self.1)).into_response()
    }
}

impl From<AgentError> for Reply {
    fn from(e: AgentError) -> Self {
        error(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.to_string(),
        )
    }
}

fn error(status: StatusCode, message: String) -> Reply {
    if status.is_server_error() {
        tracing::warn!(%status, %message, "API request failed");
    }
    let body = serde_json::to_value(ApiErrorBody { error: message }).unwrap_or_default();
    Reply(status, body)
}

fn json(status: StatusCode, value: &impl Serialize) -> Reply {
    match serde_json::to_value(value) {
        Ok(body) => Reply(status, body),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer: {e}"),
        ),
    }
}

/// The request body as `T`, or a 400 naming what is wrong with it.
fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Reply> {
    serde_json::from_slice(bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("request body: {e}")))
}

fn endpoint_ref(text: &str) -> Result<EndpointRef, Reply> {
    text.parse().map_err(|e: cilium_agent_api::BadEndpointRef| {
        error(StatusCode::BAD_REQUEST, e.to_string())
    })
}

fn reply(result: Result<Reply, Reply>) -> Reply {
    result.unwrap_or_else(|e| e)
}

pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/healthz", get(healthz))
        .route("/v1/ipam", post(allocate_ip))
        .route("/v1/ipam/{ip}", axum::routing::delete(release_ip))
        .route("/v1/endpoint", get(list_endpoints))
        .route(
            "/v1/endpoint/{reference}",
            get(get_endpoint).put(put_endpoint).delete(delete_endpoint),
        )
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such API path (see /v1/healthz, /v1/endpoint, /v1/ipam)".into(),
            )
        })
        .with_state(agent)
}

/// `GET /healthz` on 127.0.0.1:`port` for the kubelet's probes (the socket is not
/// reachable from a probe); a future that never ends when `port` is 0.
pub async fn serve_health(
    port: u16,
    agent: Arc<Agent>,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let listener = match port {
        0 => None,
        port => Some(
            tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
                .await
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("binding 127.0.0.1:{port}: {e}"))
                })?,
        ),
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .with_state(agent);
    Ok(async move {
        match listener {
            Some(listener) => axum::serve(listener, app).await,
            None => std::future::pending().await,
        }
    })
}

async fn healthz(State(agent): State<Arc<Agent>>) -> Reply {
    json(StatusCode::OK, &agent.status())
}

async fn allocate_ip(State(agent): State<Arc<Agent>>, bytes: Bytes) -> Reply {
    reply((|| {
        let request: IpamRequest = body(&bytes)?;
        let allocation = agent.allocate_ip(&request.owner)?;
        Ok(json(StatusCode::CREATED, &allocation))
    })())
}

async fn release_ip(State(agent): State<Arc<Agent>>, UrlPath(ip): UrlPath<String>) -> Reply {
    reply((|| {
        let ip: Ipv4Addr = ip.parse().map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                format!("{ip:?} is not an IPv4 address"),
            )
        })?;
        agent.release_ip(ip)?;
        Ok(Reply(StatusCode::NO_CONTENT, serde_json::Value::Null))
    })())
}

async fn list_endpoints(State(agent): State<Arc<Agent>>) -> Reply {
    json(StatusCode::OK, &agent.endpoints())
}

async fn get_endpoint(
    State(agent): State<Arc<Agent>>,
    UrlPath(reference): UrlPath<String>,
) -> Reply {
    reply((|| {
        Ok(json(
            StatusCode::OK,
            &agent.endpoint(&endpoint_ref(&reference)?)?,
        ))
    })())
}

async fn put_endpoint(
    State(agent): State<Arc<Agent>>,
    UrlPath(reference): UrlPath<String>,
    bytes: Bytes,
) -> Reply {
    reply((|| {
        let reference = endpoint_ref(&reference)?;
        let request: EndpointChangeRequest = body(&bytes)?;
        let (model, created) = agent.put_endpoint(&reference, request)?;
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(json(status, &model))
    })())
}

async fn delete_endpoint(
    State(agent): State<Arc<Agent>>,
    UrlPath(reference): UrlPath<String>,
) -> Reply {
    reply((|| {
        agent.delete_endpoint(&endpoint_ref(&reference)?)?;
        Ok(Reply(StatusCode::NO_CONTENT, serde_json::Value::Null))
    })())
}

/// Listens on `path` (its directory created, a stale socket replaced) with mode 0600. The
/// socket is bound under a temporary name and renamed once its mode is set, so it is never
/// reachable with looser permissions.
pub fn listen(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension(format!("{}.tmp", std::process::id()));
    match std::fs::remove_file(&temporary) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&temporary)?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&temporary, path)?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, agent: Arc<Agent>) -> std::io::Result<()> {
    axum::serve(listener, router(agent)).await
}
