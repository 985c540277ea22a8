//! TCP forwarding for tests: the byte pipe the node relays use, and a proxy in front of a
//! server that can be made to stall (stop forwarding without closing anything), as a
//! network partition does to one client's connection.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::Error;

/// Copies both ways between two streams on two threads; while `stalled` is set, what was
/// read is held back.
pub fn pipe(a: TcpStream, b: TcpStream, stalled: Option<Arc<AtomicBool>>) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        let stalled = stalled.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        while stalled.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        if to.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    };
    copy(a, b2);
    copy(b, a2);
}

/// Forwards `127.0.0.1:<port>` to `127.0.0.1:<target>` until dropped; [`stall`](Self::stall)
/// makes every connection, open or new, hang.
pub struct StallingProxy {
    pub port: u16,
    stalled: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl StallingProxy {
    pub fn start(target: u16) -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("proxy bind", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("proxy address", e))?
            .port();
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("proxy nonblocking", e))?;
        let stalled = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (stalled_, stop_) = (stalled.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop_.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = TcpStream::connect(("127.0.0.1", target)) {
                            pipe(client, server, Some(stalled_.clone()));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self {
            port,
            stalled,
            stop,
        })
    }

    pub fn stall(&self) {
        self.stalled.store(true, Ordering::Relaxed);
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
