//! etcd (Debian's `etcd-server`) on loopback, restartable on the same ports and data.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::pki::{Authority, CertFiles};
use crate::process::{Supervised, free_port, wait_until};
use crate::{Error, START_TIMEOUT};

/// Client TLS of an etcd that requires client certificates.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub server: CertFiles,
    /// A client certificate the server accepts.
    pub client: CertFiles,
}

#[derive(Debug)]
pub struct Etcd {
    data_dir: PathBuf,
    log: PathBuf,
    client_port: u16,
    peer_port: u16,
    tls: Option<EtcdTls>,
    process: Option<Supervised>,
}

impl Etcd {
    /// Starts etcd with its data in `dir/etcd`.
    pub fn start(dir: &Path) -> Result<Self, Error> {
        Self::start_with(dir, None)
    }

    /// Starts etcd serving TLS only, requiring client certificates signed by `pki`.
    pub fn start_tls(dir: &Path, pki: &Authority) -> Result<Self, Error> {
        let tls = EtcdTls {
            ca: pki.ca_file(),
            server: pki.issue("etcd-server", "etcd", &["127.0.0.1", "localhost"])?,
            client: pki.issue("etcd-client", "cilium-operator", &[])?,
        };
        Self::start_with(dir, Some(tls))
    }

    fn start_with(dir: &Path, tls: Option<EtcdTls>) -> Result<Self, Error> {
        let mut etcd = Self {
            data_dir: dir.join("etcd"),
            log: dir.join("etcd.log"),
            client_port: free_port()?,
            peer_port: free_port()?,
            tls,
            process: None,
        };
        etcd.resume()?;
        Ok(etcd)
    }

    /// `http://127.0.0.1:<port>` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn tls(&self) -> Option<&EtcdTls> {
        self.tls.as_ref()
    }

    /// Kills etcd (as a crash would); its data stays for [`Etcd::resume`].
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts etcd again on the same ports and data.
    pub fn resume(&mut self) -> Result<(), Error> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new("etcd");
        command
            .arg("--name=bed")
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=bed={peer}"))
            .arg("--log-level=warn")
            .arg("--quota-backend-bytes=4294967296");
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cert-file={}", tls.server.cert.display()))
                .arg(format!("--key-file={}", tls.server.key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        let mut process = Supervised::spawn("etcd", command, &self.log)?;
        let port = self.client_port;
        if self.tls.is_some() {
            wait_until("etcd health over TLS", START_TIMEOUT, &mut process, || {
                self.etcdctl(&["endpoint", "health"]).is_ok()
            })?;
        } else {
            wait_until("etcd /health", START_TIMEOUT, &mut process, || {
                healthy(port)
            })?;
        }
        self.process = Some(process);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::pid)
    }

    /// Runs `etcdctl` (v3 API) against this etcd and returns its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, Error> {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()));
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cacert={}", tls.ca.display()))
                .arg(format!("--cert={}", tls.client.cert.display()))
                .arg(format!("--key={}", tls.client.key.display()));
        }
        let output = command
            .args(args)
            .output()
            .map_err(|e| Error::io("etcdctl", e))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(Error::Command {
                command: format!("etcdctl {}", args.join(" ")),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }
}

fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains("\"health\":\"true\"")
}
