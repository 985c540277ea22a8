//! Real traffic between test namespaces: a TCP echo server and clients that check a line
//! comes back.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use crate::netns::NetNs;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A TCP echo server in `ns` on `port` (IPv4 and IPv6), one thread per connection, for the
/// life of the process.
pub fn serve_echo(ns: &NetNs, port: u16) {
    // `::` takes IPv4 too (bindv6only is off by default).
    let listener = ns
        .run(|| TcpListener::bind(("::", port)))
        .expect("run in the namespace")
        .expect("bind the echo port");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(match stream.try_clone() {
                    Ok(s) => s,
                    Err(_) => return,
                });
                let mut writer = stream;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if writer.write_all(line.as_bytes()).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
}

/// A TCP server in `ns` on `port` that writes `banner` and a newline to every connection
/// and closes it: which backend answered.
pub fn serve_banner(ns: &NetNs, port: u16, banner: &str) {
    let listener = ns
        .run(|| TcpListener::bind(("::", port)))
        .expect("run in the namespace")
        .expect("bind the banner port");
    let line = format!("{banner}\n");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(line.as_bytes());
        }
    });
}

/// The banner line a server at `to:port` sends to a connection from `ns`, if any.
pub fn banner(ns: &NetNs, to: impl Into<IpAddr>, port: u16) -> Option<String> {
    let stream = connect(ns, to, port).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    Some(line.trim_end().to_owned()).filter(|l| !l.is_empty())
}

/// A TCP connection from `ns` to `to:port`, given up after [`CONNECT_TIMEOUT`].
pub fn connect(ns: &NetNs, to: impl Into<IpAddr>, port: u16) -> std::io::Result<TcpStream> {
    let target = SocketAddr::from((to.into(), port));
    ns.run(|| TcpStream::connect_timeout(&target, CONNECT_TIMEOUT))
        .expect("run in the namespace")
}

/// Whether a line sent on `stream` comes back within a second.
pub fn echoes(stream: &mut TcpStream) -> bool {
    if stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .is_err()
        || stream.write_all(b"hello\n").is_err()
    {
        return false;
    }
    let Ok(clone) = stream.try_clone() else {
        return false;
    };
    let mut line = String::new();
    BufReader::new(clone).read_line(&mut line).is_ok() && line == "hello\n"
}

/// Whether `ns` can open a connection to `to:port` and get an echo.
pub fn reaches(ns: &NetNs, to: impl Into<IpAddr>, port: u16) -> bool {
    connect(ns, to, port).is_ok_and(|mut s| echoes(&mut s))
}

/// Runs `check` on every cell at once (a thread each: every dropped probe costs its
/// timeout); the descriptions of the cells that do not hold.
pub fn wrong_cells<T: Sync>(
    cells: &[T],
    check: impl Fn(&T) -> Option<String> + Sync,
) -> Vec<String> {
    std::thread::scope(|scope| {
        let checks: Vec<_> = cells
            .iter()
            .map(|cell| scope.spawn(|| check(cell)))
            .collect();
        checks
            .into_iter()
            .filter_map(|c| c.join().expect("a probe"))
            .collect()
    })
}

/// Waits up to `timeout` until `wrong` finds nothing wrong; how long that took. Panics with
/// what is still wrong.
pub fn until_right(
    what: &str,
    timeout: Duration,
    mut wrong: impl FnMut() -> Vec<String>,
) -> Duration {
    let started = std::time::Instant::now();
    loop {
        let still = wrong();
        if still.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "{what}: after {timeout:?} these cells are still wrong: {still:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A UDP echo server in `ns` on `port` (IPv4 and IPv6), for the life of the process.
pub fn serve_udp_echo(ns: &NetNs, port: u16) {
    let socket = ns
        .run(|| UdpSocket::bind(("::", port)))
        .expect("run in the namespace")
        .expect("bind the UDP echo port");
    std::thread::spawn(move || {
        let mut buffer = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buffer) {
            let _ = socket.send_to(&buffer[..n], from);
        }
    });
}

/// Whether a datagram from `ns` to `to:port` comes back within [`CONNECT_TIMEOUT`].
pub fn udp_reaches(ns: &NetNs, to: impl Into<IpAddr>, port: u16) -> bool {
    let target = SocketAddr::from((to.into(), port));
    ns.run(|| {
        let bind: SocketAddr = match target {
            SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
            SocketAddr::V6(_) => ([0u16; 8], 0).into(),
        };
        let socket = UdpSocket::bind(bind).ok()?;
        socket.set_read_timeout(Some(CONNECT_TIMEOUT)).ok()?;
        socket.send_to(b"hello", target).ok()?;
        let mut buffer = [0u8; 16];
        let (n, from) = socket.recv_from(&mut buffer).ok()?;
        Some(from == target && &buffer[..n] == b"hello")
    })
    .expect("run in the namespace")
    .unwrap_or(false)
}

/// Prints whether each of `clients` reaches `target` on `port`, one line each, as the
/// demos show it (`<namespace>/<name> (<ip>) -> <target>:<port>  connects|times out`).
pub fn print_reachability(
    title: &str,
    target: &crate::cluster::CniPod,
    port: u16,
    clients: &[&crate::cluster::CniPod],
) {
    println!("\n{title}");
    for client in clients {
        let verdict = if reaches(&client.ns, target.ip, port) {
            "connects"
        } else {
            "times out"
        };
        println!(
            "  {:<28} -> {}:{port}  {verdict}",
            format!("{}/{} ({})", client.namespace, client.name, client.ip),
            target.name
        );
    }
}
