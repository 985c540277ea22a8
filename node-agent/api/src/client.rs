use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::{
    ApiErrorBody, BpfEndpointModel, CtEntryModel, EndpointChangeRequest, EndpointModel,
    EndpointRef, IdentityModel, IpamAllocation, IpamRequest, IpcacheEntryModel, KvPair,
    MonitorFilter, MonitorMessage, NodeModel, PolicyMapModel, PolicyResponse, PrefilterChange,
    PrefilterModel, SelectorModel, ServiceModel, StatusResponse,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{}", unreachable(path, cause))]
    Unreachable {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The agent answered with an error status.
    #[error("cilium-agent: {message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error("cilium-agent at {}: {reason}", path.display())]
    Protocol { path: PathBuf, reason: String },
}

/// Why the socket could not be opened, in the words a person acts on.
fn unreachable(path: &Path, cause: &std::io::Error) -> String {
    let path = path.display();
    match cause.kind() {
        std::io::ErrorKind::NotFound => format!(
            "cilium-agent is not running: no socket at {path} (start the agent, or pick its socket with -H)"
        ),
        std::io::ErrorKind::ConnectionRefused => {
            format!("cilium-agent is not running: nothing listens on {path}")
        }
        std::io::ErrorKind::PermissionDenied => format!(
            "permission denied on {path}: the agent's socket is for root only (run as root)"
        ),
        _ => format!("cannot reach cilium-agent at {path}: {cause}"),
    }
}

impl ClientError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, .. })
    }
}

/// A client of the agent's unix socket; one connection per request.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.call(Method::GET, "/v1/healthz", None::<&()>).await
    }

    pub async fn allocate_ip(&self, owner: &str) -> Result<IpamAllocation, ClientError> {
        let request = IpamRequest {
            owner: owner.to_owned(),
        };
        self.call(Method::POST, "/v1/ipam", Some(&request)).await
    }

    /// Releases an address; one that is not allocated is not an error.
    pub async fn release_ip(&self, ip: Ipv4Addr) -> Result<(), ClientError> {
        match self
            .call::<(), _>(Method::DELETE, &format!("/v1/ipam/{ip}"), None::<&()>)
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    pub async fn put_endpoint(
        &self,
        request: &EndpointChangeRequest,
    ) -> Result<EndpointModel, ClientError> {
        let reference = EndpointRef::ContainerId(request.container_id.clone());
        self.call(
            Method::PUT,
            &format!("/v1/endpoint/{reference}"),
            Some(request),
        )
        .await
    }

    pub async fn endpoint(&self, reference: &EndpointRef) -> Result<EndpointModel, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/endpoint/{reference}"),
            None::<&()>,
        )
        .await
    }

    pub async fn endpoints(&self) -> Result<Vec<EndpointModel>, ClientError> {
        self.call(Method::GET, "/v1/endpoint", None::<&()>).await
    }

    /// Deletes an endpoint and releases its address; true if there was one.
    pub async fn delete_endpoint(&self, reference: &EndpointRef) -> Result<bool, ClientError> {
        match self
            .call::<(), _>(
                Method::DELETE,
                &format!("/v1/endpoint/{reference}"),
                None::<&()>,
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn identities(&self) -> Result<Vec<IdentityModel>, ClientError> {
        self.get("/v1/identity").await
    }

    pub async fn identity(&self, id: u32) -> Result<IdentityModel, ClientError> {
        self.get(&format!("/v1/identity/{id}")).await
    }

    pub async fn nodes(&self) -> Result<Vec<NodeModel>, ClientError> {
        self.get("/v1/cluster/nodes").await
    }

    pub async fn services(&self) -> Result<Vec<ServiceModel>, ClientError> {
        self.get("/v1/service").await
    }

    pub async fn policy(&self) -> Result<PolicyResponse, ClientError> {
        self.get("/v1/policy").await
    }

    pub async fn selectors(&self) -> Result<Vec<SelectorModel>, ClientError> {
        self.get("/v1/policy/selectors").await
    }

    pub async fn policy_map(&self, endpoint: u16) -> Result<PolicyMapModel, ClientError> {
        self.get(&format!("/v1/map/policy/{endpoint}")).await
    }

    pub async fn ipcache(&self) -> Result<Vec<IpcacheEntryModel>, ClientError> {
        self.get("/v1/map/ipcache").await
    }

    pub async fn bpf_endpoints(&self) -> Result<Vec<BpfEndpointModel>, ClientError> {
        self.get("/v1/map/endpoints").await
    }

    pub async fn lb_entries(&self) -> Result<Vec<crate::LbEntryModel>, ClientError> {
        self.get("/v1/map/lb").await
    }

    pub async fn ct_entries(&self) -> Result<Vec<CtEntryModel>, ClientError> {
        self.get("/v1/map/ct").await
    }

    /// `key`'s value, or with `recursive` every key under the prefix.
    pub async fn kvstore_get(
        &self,
        key: &str,
        recursive: bool,
    ) -> Result<Vec<KvPair>, ClientError> {
        let key = percent_encode(key);
        self.get(&format!("/v1/kvstore/{key}?recursive={recursive}"))
            .await
    }

    pub async fn prefilter(&self) -> Result<PrefilterModel, ClientError> {
        self.get("/v1/prefilter").await
    }

    /// Adds (`deny = true`) or removes source prefixes of the prefilter.
    pub async fn change_prefilter(
        &self,
        change: &PrefilterChange,
        deny: bool,
    ) -> Result<PrefilterModel, ClientError> {
        let method = if deny { Method::PATCH } else { Method::DELETE };
        self.call(method, "/v1/prefilter", Some(change)).await
    }

    /// Streams the datapath's events that pass `filter`.
    pub async fn monitor(&self, filter: &MonitorFilter) -> Result<MonitorStream, ClientError> {
        let response = self
            .send(
                Method::GET,
                &format!("/v1/monitor?{}", filter.query()),
                None::<&()>,
            )
            .await?;
        Ok(MonitorStream {
            body: response.into_body(),
            pending: Vec::new(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(format!("reading the answer to {path}: {e}")))?
            .to_bytes();
        let body = if status == StatusCode::NO_CONTENT || body.is_empty() {
            Bytes::from_static(b"null")
        } else {
            body
        };
        serde_json::from_slice(&body)
            .map_err(|e| self.protocol(format!("decoding the answer to {path}: {e}")))
    }

    fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            path: self.socket.clone(),
            reason,
        }
    }

    /// Sends a request; an error status becomes [`ClientError::Api`] with the agent's message.
    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|cause| ClientError::Unreachable {
                    path: self.socket.clone(),
                    cause,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(format!("handshake: {e}")))?;
        tokio::spawn(connection);
        let bytes = match body {
            Some(body) => serde_json::to_vec(body)
                .map_err(|e| self.protocol(format!("encoding the request: {e}")))?,
            None => Vec::new(),
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| self.protocol(format!("building the request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.protocol(format!("{path}: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(format!("reading the answer to {path}: {e}")))?
            .to_bytes();
        let message = serde_json::from_slice::<ApiErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
        })
    }
}

/// The monitor's stream: one [`MonitorMessage`] per line.
pub struct MonitorStream {
    body: Incoming,
    pending: Vec<u8>,
}

impl MonitorStream {
    /// The next message; `None` when the agent ends the stream.
    pub async fn next(&mut self) -> Option<Result<MonitorMessage, String>> {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Some(
                    serde_json::from_slice(&line[..end])
                        .map_err(|e| format!("undecodable monitor message: {e}")),
                );
            }
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                }
                Err(e) => return Some(Err(format!("monitor stream: {e}"))),
            }
        }
    }
}

/// `key` as one path segment (etcd keys contain `/`); the server's router decodes it.
fn percent_encode(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_path_segment() {
        assert_eq!(
            percent_encode("cilium/state/nodes/v1"),
            "cilium%2Fstate%2Fnodes%2Fv1"
        );
        assert_eq!(percent_encode("a b%c/ü-_.~"), "a%20b%25c%2F%C3%BC-_.~");
    }

    #[test]
    fn unreachable_agents_are_explained() {
        let path = Path::new("/var/run/cilium/cilium.sock");
        let message = |kind| unreachable(path, &std::io::Error::from(kind));
        assert!(message(std::io::ErrorKind::NotFound).contains("not running"));
        assert!(message(std::io::ErrorKind::ConnectionRefused).contains("not running"));
        assert!(message(std::io::ErrorKind::PermissionDenied).contains("permission denied"));
    }
}
