//! etcd (Debian's `etcd-server`) on loopback, restartable on the same ports and data.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{Supervised, free_port, wait_until};
use crate::{Error, START_TIMEOUT};

#[derive(Debug)]
pub struct Etcd {
    data_dir: PathBuf,
    log: PathBuf,
    client_port: u16,
    peer_port: u16,
    process: Option<Supervised>,
}

impl Etcd {
    /// Starts etcd with its data in `dir/etcd`.
    pub fn start(dir: &Path) -> Result<Self, Error> {
        let mut etcd = Self {
            data_dir: dir.join("etcd"),
            log: dir.join("etcd.log"),
            client_port: free_port()?,
            peer_port: free_port()?,
            process: None,
        };
        etcd.resume()?;
        Ok(etcd)
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
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
        let mut process = Supervised::spawn("etcd", command, &self.log)?;
        let port = self.client_port;
        wait_until("etcd /health", START_TIMEOUT, &mut process, || {
            healthy(port)
        })?;
        self.process = Some(process);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::pid)
    }

    /// Runs `etcdctl` (v3 API) against this etcd and returns its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, Error> {
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
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
