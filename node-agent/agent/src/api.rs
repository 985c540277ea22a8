//! The local REST API on a unix socket (mode 0600: only root on the node may use it).

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cilium_agent_api::{
    ApiErrorBody, EndpointChangeRequest, EndpointRef, IdentityModel, IpamRequest, MonitorFilter,
    MonitorMessage, NodeModel, PolicyResponse, PrefilterChange, SelectorModel,
};
use cilium_kvstore::KvNode;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixListener;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::agent::{Agent, AgentError};
use crate::clustermesh::ClusterMesh;
use crate::kvstore::Kvstore;
use crate::metrics::StateSample;
use crate::policy::PolicyState;
use crate::sync::Caches;
use crate::{inspect, services};

/// What the API reads besides the agent's own state: the policy engine, the caches of the
/// cluster's objects and the kvstore session.
#[derive(Clone)]
pub struct ApiContext {
    pub agent: Arc<Agent>,
    pub policy: Arc<std::sync::Mutex<PolicyState>>,
    pub caches: Caches,
    pub kvstore: Option<Arc<Kvstore>>,
    /// The remote clusters, with `--clustermesh-config`.
    pub mesh: Option<Arc<ClusterMesh>>,
}

impl ApiContext {
    fn policy(&self) -> std::sync::MutexGuard<'_, PolicyState> {
        self.policy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent's status with the mesh's.
    fn status(&self) -> cilium_agent_api::StatusResponse {
        let mut status = self.agent.status();
        status.cluster_mesh = self.mesh_status();
        status
    }

    /// The mesh's status, with this cluster's global services counted.
    fn mesh_status(&self) -> Option<cilium_agent_api::ClusterMeshStatus> {
        self.mesh
            .as_ref()
            .map(|mesh| mesh.status(&services::local_global(&self.caches.services.state())))
    }

    fn remote_caches(&self) -> Vec<Arc<crate::clustermesh::RemoteCache>> {
        self.mesh.as_ref().map(|m| m.caches()).unwrap_or_default()
    }
}

type Ctx = State<ApiContext>;

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

/// 200 with `result`'s value, or the agent's error.
fn ok_or_error<T: Serialize>(result: Result<T, AgentError>) -> Reply {
    match result {
        Ok(value) => json(StatusCode::OK, &value),
        Err(e) => e.into(),
    }
}

pub fn router(context: ApiContext) -> Router {
    Router::new()
        .route("/v1/healthz", get(healthz))
        .route("/v1/ipam", post(allocate_ip))
        .route("/v1/ipam/{ip}", axum::routing::delete(release_ip))
        .route("/v1/endpoint", get(list_endpoints))
        .route(
            "/v1/endpoint/{reference}",
            get(get_endpoint).put(put_endpoint).delete(delete_endpoint),
        )
        .route("/v1/identity", get(list_identities))
        .route("/v1/identity/{id}", get(get_identity))
        .route("/v1/cluster/nodes", get(list_nodes))
        .route("/v1/service", get(list_services))
        .route("/v1/policy", get(get_policy))
        .route("/v1/policy/selectors", get(list_selectors))
        .route("/v1/map/policy/{id}", get(get_policy_map))
        .route("/v1/map/ipcache", get(list_ipcache))
        .route("/v1/map/endpoints", get(list_bpf_endpoints))
        .route("/v1/map/ct", get(list_ct))
        .route("/v1/map/lb", get(list_lb))
        .route("/v1/kvstore/{key}", get(kvstore_get))
        .route(
            "/v1/prefilter",
            get(get_prefilter)
                .patch(add_prefilter)
                .delete(remove_prefilter),
        )
        .route("/v1/monitor", get(monitor))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such API path (see /v1/healthz, /v1/endpoint, /v1/identity, /v1/policy, ...)"
                    .into(),
            )
        })
        .method_not_allowed_fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{uri} does not take {method}"),
                )
            },
        )
        .with_state(context)
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
        .route(
            "/healthz",
            // The kubelet's probes: not ready (503) until the caches synced, so a node's
            // agent that cannot serve ADD is not reported Ready (the body says why).
            get(|State(agent): State<Arc<Agent>>| async move {
                let code = if agent.is_synced() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json(code, &agent.status())
            }),
        )
        .with_state(agent);
    Ok(cilium_crds::cli::run_if_some(
        listener.map(|listener| axum::serve(listener, app)),
    ))
}

async fn healthz(State(ctx): Ctx) -> Reply {
    json(StatusCode::OK, &ctx.status())
}

async fn list_services(State(ctx): Ctx) -> Reply {
    let node = ctx.agent.node();
    let list = services::service_list(
        &node.cluster_name,
        node.cluster_id,
        &ctx.caches.services.state(),
        &ctx.caches.endpoint_slices.state(),
        &ctx.remote_caches(),
    );
    json(StatusCode::OK, &list)
}

async fn allocate_ip(State(ctx): Ctx, bytes: Bytes) -> Reply {
    reply((|| {
        let request: IpamRequest = body(&bytes)?;
        let allocation = ctx.agent.allocate_ip(&request.owner)?;
        Ok(json(StatusCode::CREATED, &allocation))
    })())
}

async fn release_ip(State(ctx): Ctx, UrlPath(ip): UrlPath<String>) -> Reply {
    reply((|| {
        let ip: Ipv4Addr = ip.parse().map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                format!("{ip:?} is not an IPv4 address"),
            )
        })?;
        ctx.agent.release_ip(ip)?;
        Ok(Reply(StatusCode::NO_CONTENT, serde_json::Value::Null))
    })())
}

async fn list_endpoints(State(ctx): Ctx) -> Reply {
    json(StatusCode::OK, &ctx.agent.endpoints())
}

async fn get_endpoint(State(ctx): Ctx, UrlPath(reference): UrlPath<String>) -> Reply {
    reply((|| {
        Ok(json(
            StatusCode::OK,
            &ctx.agent.endpoint(&endpoint_ref(&reference)?)?,
        ))
    })())
}

async fn put_endpoint(State(ctx): Ctx, UrlPath(reference): UrlPath<String>, bytes: Bytes) -> Reply {
    let created = (|| {
        let reference = endpoint_ref(&reference)?;
        let request: EndpointChangeRequest = body(&bytes)?;
        let sync_build = request.sync_build;
        let (model, created) = ctx.agent.put_endpoint(&reference, request)?;
        Ok::<_, Reply>((reference, sync_build, model, created))
    })();
    let (reference, sync_build, model, created) = match created {
        Ok(created) => created,
        Err(e) => return e,
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    if !sync_build {
        return json(status, &model);
    }
    // Cilium's sync build: the pod starts only once its policy is enforced.
    match ctx
        .agent
        .wait_until_ready(&reference, ctx.agent.settings().sync_build_timeout)
        .await
    {
        Ok(model) => json(status, &model),
        Err(e) => {
            // Nothing stays behind: the runtime retries the whole ADD.
            if let Err(undo) = ctx.agent.delete_endpoint(&reference) {
                tracing::warn!(%reference, error = %undo, "removing the endpoint that did not get ready failed");
            }
            e.into()
        }
    }
}

async fn delete_endpoint(State(ctx): Ctx, UrlPath(reference): UrlPath<String>) -> Reply {
    reply((|| {
        ctx.agent.delete_endpoint(&endpoint_ref(&reference)?)?;
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

pub async fn serve(listener: UnixListener, context: ApiContext) -> std::io::Result<()> {
    axum::serve(listener, router(context)).await
}

/// `GET /metrics` on `addr` (Cilium's `--prometheus-serve-addr`).
pub async fn serve_metrics(
    addr: std::net::SocketAddr,
    context: ApiContext,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding {addr}: {e}")))?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(context);
    Ok(async move { axum::serve(listener, app).await })
}

async fn metrics(State(ctx): Ctx) -> Response {
    let sample = {
        let policy = ctx.policy();
        let mut sample = StateSample {
            policy_rules: policy.rule_count(),
            remote_clusters: ctx
                .mesh_status()
                .map(|mesh| mesh.clusters)
                .unwrap_or_default(),
            ..StateSample::default()
        };
        for id in policy.identities().keys() {
            let kind = match *id {
                id if cilium_identity::NumericIdentity(id).is_reserved_range() => "reserved",
                id if id >= cilium_policy::cache::LOCAL_IDENTITY_BASE => "node_local",
                _ => "cluster_local",
            };
            *sample.identities.entry(kind.into()).or_default() += 1;
        }
        sample
    };
    if let Err(e) = ctx.agent.observe_metrics(sample) {
        tracing::warn!(error = %e, "sampling the datapath for metrics failed");
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        ctx.agent.metrics().encode(),
    )
        .into_response()
}

async fn list_identities(State(ctx): Ctx) -> Reply {
    let identities: Vec<IdentityModel> = ctx
        .policy()
        .identities()
        .iter()
        .map(|(id, labels)| IdentityModel {
            id: *id,
            labels: inspect::label_texts(labels),
        })
        .collect();
    json(StatusCode::OK, &identities)
}

async fn get_identity(State(ctx): Ctx, UrlPath(id): UrlPath<String>) -> Reply {
    reply((|| {
        let id: u32 = id.parse().map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                format!("{id:?} is not an identity (a number)"),
            )
        })?;
        let policy = ctx.policy();
        let labels = policy
            .identities()
            .get(&id)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no identity {id}")))?;
        Ok(json(
            StatusCode::OK,
            &IdentityModel {
                id,
                labels: inspect::label_texts(labels),
            },
        ))
    })())
}

async fn list_nodes(State(ctx): Ctx) -> Reply {
    let node = ctx.agent.node();
    let mut nodes: Vec<NodeModel> = ctx
        .caches
        .nodes
        .state()
        .iter()
        .map(|cn| {
            let mut model = inspect::node(&KvNode::from_cilium_node(
                &node.cluster_name,
                node.cluster_id,
                cn,
            ));
            if cn.metadata.name.as_deref() == Some(node.name.as_str()) {
                model.source = cilium_kvstore::node::SOURCE_LOCAL.into();
            }
            model
        })
        .collect();
    for cluster in ctx.remote_caches() {
        nodes.extend(cluster.nodes.values().map(inspect::node));
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    json(StatusCode::OK, &nodes)
}

async fn get_policy(State(ctx): Ctx) -> Reply {
    let (revision, policy) = ctx.policy().rules_json();
    json(StatusCode::OK, &PolicyResponse { revision, policy })
}

async fn list_selectors(State(ctx): Ctx) -> Reply {
    let selectors: Vec<SelectorModel> = ctx
        .policy()
        .selectors()
        .into_iter()
        .map(|(selector, identities)| SelectorModel {
            selector,
            identities,
        })
        .collect();
    json(StatusCode::OK, &selectors)
}

async fn get_policy_map(State(ctx): Ctx, UrlPath(id): UrlPath<String>) -> Reply {
    reply((|| {
        let EndpointRef::Id(id) = endpoint_ref(&id)? else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "policy maps are addressed by endpoint id".into(),
            ));
        };
        let identities = ctx.policy().identities().clone();
        Ok(json(
            StatusCode::OK,
            &ctx.agent.policy_map(id, &identities)?,
        ))
    })())
}

async fn list_ipcache(State(ctx): Ctx) -> Reply {
    ok_or_error(ctx.agent.ipcache_entries())
}

async fn list_bpf_endpoints(State(ctx): Ctx) -> Reply {
    ok_or_error(ctx.agent.bpf_endpoints())
}

async fn list_lb(State(ctx): Ctx) -> Reply {
    ok_or_error(ctx.agent.lb_entries())
}

async fn list_ct(State(ctx): Ctx) -> Reply {
    ok_or_error(ctx.agent.ct_entries())
}

async fn kvstore_get(
    State(ctx): Ctx,
    UrlPath(key): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Reply {
    let Some(kvstore) = &ctx.kvstore else {
        return error(
            StatusCode::BAD_REQUEST,
            "no kvstore configured (start the agent with --kvstore etcd)".into(),
        );
    };
    let recursive = match query.as_deref() {
        None | Some("") | Some("recursive=false") => false,
        Some("recursive=true") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown parameter {other:?}"),
            );
        }
    };
    match kvstore.get(&key, recursive).await {
        Ok(pairs) if pairs.is_empty() => error(
            StatusCode::NOT_FOUND,
            format!("no key {key:?} in the kvstore"),
        ),
        Ok(pairs) => json(StatusCode::OK, &pairs),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn get_prefilter(State(ctx): Ctx) -> Reply {
    ok_or_error(ctx.agent.prefilter())
}

async fn change_prefilter(ctx: &ApiContext, bytes: &[u8], deny: bool) -> Reply {
    reply((|| {
        let change: PrefilterChange = body(bytes)?;
        Ok(json(
            StatusCode::OK,
            &ctx.agent.change_prefilter(&change.cidr_list, deny)?,
        ))
    })())
}

async fn add_prefilter(State(ctx): Ctx, bytes: Bytes) -> Reply {
    change_prefilter(&ctx, &bytes, true).await
}

async fn remove_prefilter(State(ctx): Ctx, bytes: Bytes) -> Reply {
    change_prefilter(&ctx, &bytes, false).await
}

/// Streams the datapath's events as newline-delimited [`MonitorMessage`]s until the reader
/// goes away. A reader that falls behind gets a `lost` message instead of what it missed.
async fn monitor(State(ctx): Ctx, RawQuery(query): RawQuery) -> Response {
    let filter = match MonitorFilter::parse_query(query.as_deref().unwrap_or_default()) {
        Ok(filter) => filter,
        Err(e) => return error(StatusCode::BAD_REQUEST, e).into_response(),
    };
    let events = BroadcastStream::new(ctx.agent.subscribe_events()).filter_map(move |item| {
        let message = match item {
            Ok(MonitorMessage::Event(event)) if !event.matches(&filter) => None,
            Ok(message) => Some(message),
            Err(BroadcastStreamRecvError::Lagged(missed)) => Some(MonitorMessage::Lost(missed)),
        };
        let line = message
            .and_then(|m| serde_json::to_vec(&m).ok())
            .map(|mut line| {
                line.push(b'\n');
                Ok::<_, std::convert::Infallible>(Bytes::from(line))
            });
        std::future::ready(line)
    });
    (
        [("content-type", "application/x-ndjson")],
        Body::from_stream(events),
    )
        .into_response()
}
