use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::{
    ApiErrorBody, EndpointChangeRequest, EndpointModel, EndpointRef, IpamAllocation, IpamRequest,
    StatusResponse,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach cilium-agent at {}: {cause} (is the agent running?)", path.display())]
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

    async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let protocol = |reason: String| ClientError::Protocol {
            path: self.socket.clone(),
            reason,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|cause| ClientError::Unreachable {
                    path: self.socket.clone(),
                    cause,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| protocol(format!("handshake: {e}")))?;
        tokio::spawn(connection);
        let bytes = match body {
            Some(body) => serde_json::to_vec(body)
                .map_err(|e| protocol(format!("encoding the request: {e}")))?,
            None => Vec::new(),
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| protocol(format!("building the request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| protocol(format!("{path}: {e}")))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| protocol(format!("reading the answer to {path}: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<ApiErrorBody>(&body)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Api {
                status: status.as_u16(),
                message,
            });
        }
        let body = if status == StatusCode::NO_CONTENT || body.is_empty() {
            Bytes::from_static(b"null")
        } else {
            body
        };
        serde_json::from_slice(&body)
            .map_err(|e| protocol(format!("decoding the answer to {path}: {e}")))
    }
}
