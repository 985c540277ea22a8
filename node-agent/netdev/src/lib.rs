//! The node's network devices, addresses and routes, through rtnetlink.
//!
//! A [`Netlink`] is a connection to one network namespace: the calling thread's
//! ([`Netlink::connect`]) or the one at a path ([`Netlink::connect_in`], used by the CNI
//! plugin to configure the pod side of a veth). Its operations are idempotent where the
//! callers need them to be (adding an address or route that exists, deleting a link that
//! does not), so a retried CNI call or a restarted agent converges instead of failing.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use ipnet::IpNet;
use nix::sched::{CloneFlags, setns};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// The route protocol of the routes the agent owns (`ip route show proto 193`), so it can
/// tell them from the routes others made and remove only its own.
pub const AGENT_ROUTE_PROTOCOL: u8 = 193;

const EEXIST: i32 = nix::libc::EEXIST;
const ENODEV: i32 = nix::libc::ENODEV;
const ESRCH: i32 = nix::libc::ESRCH;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The causes are part of the message, not `source()`s, so a printed chain of
    // errors names each of them once.
    #[error("{what}: {cause}")]
    Netlink {
        what: String,
        cause: rtnetlink::Error,
    },
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    #[error("no network device named {0:?}")]
    NoSuchLink(String),
}

impl Error {
    fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Self {
        let what = what.into();
        move |cause| Error::Netlink { what, cause }
    }

    /// The errno the kernel answered with, if this is a kernel refusal.
    fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink {
                cause: rtnetlink::Error::NetlinkError(message),
                ..
            } => Some(-message.raw_code()),
            _ => None,
        }
    }
}

/// A network device: its index and MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub mac: [u8; 6],
}

/// A route in the main table: to `destination`, via `gateway` or straight out of `device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
    pub device: Option<u32>,
}

pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A connection to the calling thread's network namespace. Needs a tokio runtime.
    pub fn connect() -> Result<Self, Error> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(|cause| Error::Io {
            what: "opening a netlink socket".into(),
            cause,
        })?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// A connection to the network namespace at `path` (`/var/run/netns/<name>`,
    /// `/proc/<pid>/ns/net`). The socket is opened on a short-lived thread that enters the
    /// namespace; a netlink socket stays in the namespace it was opened in.
    pub fn connect_in(path: &Path) -> Result<Self, Error> {
        let runtime = tokio::runtime::Handle::current();
        let namespace = File::open(path).map_err(|cause| Error::Io {
            what: format!("opening network namespace {}", path.display()),
            cause,
        })?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    setns(&namespace, CloneFlags::CLONE_NEWNET).map_err(|e| Error::Io {
                        what: format!("entering network namespace {}", path.display()),
                        cause: e.into(),
                    })?;
                    let _runtime = runtime.enter();
                    Self::connect()
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(Error::Io {
                        what: "the thread opening the netlink socket panicked".into(),
                        cause: std::io::Error::other("panic"),
                    })
                })
        })
    }

    /// The device named `name`, if there is one.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, Error> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute()
            .try_next()
            .await;
        let message = match found {
            Ok(message) => message,
            Err(e) => {
                let e = Error::netlink(format!("looking up {name}"))(e);
                return match e.errno() {
                    Some(ENODEV) => Ok(None),
                    _ => Err(e),
                };
            }
        };
        Ok(message.map(|m| {
            let mac = m
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
                    _ => None,
                })
                .unwrap_or_default();
            Link {
                index: m.header.index,
                mac,
            }
        }))
    }

    /// The device named `name`, or an error saying it is missing.
    pub async fn require_link(&self, name: &str) -> Result<Link, Error> {
        self.link(name)
            .await?
            .ok_or_else(|| Error::NoSuchLink(name.to_owned()))
    }

    /// Creates a veth pair `name` ↔ `peer` in this namespace.
    pub async fn create_veth(&self, name: &str, peer: &str) -> Result<(), Error> {
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).build())
            .execute()
            .await
            .map_err(Error::netlink(format!("creating veth {name}/{peer}")))
    }

    /// Creates the veth pair `name` ↔ `peer` unless `name` exists, and sets both up (as
    /// Cilium's `cilium_host`/`cilium_net`; a veth needs no kernel module beyond veth).
    pub async fn ensure_veth_pair(&self, name: &str, peer: &str) -> Result<Link, Error> {
        if self.link(name).await?.is_none() {
            match self.create_veth(name, peer).await {
                Err(e) if e.errno() == Some(EEXIST) => {}
                other => other?,
            }
        }
        let link = self.require_link(name).await?;
        self.set_up(link.index).await?;
        if let Some(other) = self.link(peer).await? {
            self.set_up(other.index).await?;
        }
        Ok(link)
    }

    /// Moves the device `index` into the network namespace at `path`.
    pub async fn move_to_namespace(&self, index: u32, path: &Path) -> Result<(), Error> {
        let namespace = File::open(path).map_err(|cause| Error::Io {
            what: format!("opening network namespace {}", path.display()),
            cause,
        })?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .setns_by_fd(namespace.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(Error::netlink(format!(
                "moving device {index} into {}",
                path.display()
            )))
    }

    pub async fn rename(&self, index: u32, name: &str) -> Result<(), Error> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .name(name.to_owned())
                    .build(),
            )
            .execute()
            .await
            .map_err(Error::netlink(format!("renaming device {index} to {name}")))
    }

    pub async fn set_up(&self, index: u32) -> Result<(), Error> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(Error::netlink(format!("setting device {index} up")))
    }

    /// Deletes the device `name`; false if there was none.
    pub async fn delete_link(&self, name: &str) -> Result<bool, Error> {
        let Some(link) = self.link(name).await? else {
            return Ok(false);
        };
        let deleted = self
            .handle
            .link()
            .del(link.index)
            .execute()
            .await
            .map_err(Error::netlink(format!("deleting device {name}")));
        match deleted {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds `address/prefix` to the device `index` unless it is there.
    pub async fn ensure_address(&self, index: u32, address: IpNet) -> Result<(), Error> {
        let added = self
            .handle
            .address()
            .add(index, address.addr(), address.prefix_len())
            .execute()
            .await
            .map_err(Error::netlink(format!(
                "adding {address} to device {index}"
            )));
        match added {
            Err(e) if e.errno() == Some(EEXIST) => Ok(()),
            other => other,
        }
    }

    /// Adds or replaces `route`; with `owned`, it is marked as the agent's
    /// ([`AGENT_ROUTE_PROTOCOL`]).
    pub async fn replace_route(&self, route: &Route, owned: bool) -> Result<(), Error> {
        let message = route_message(route, owned);
        self.handle
            .route()
            .add(message)
            .replace()
            .execute()
            .await
            .map_err(Error::netlink(format!("adding route {}", describe(route))))
    }

    /// Deletes `route`; false if there was none.
    pub async fn delete_route(&self, route: &Route, owned: bool) -> Result<bool, Error> {
        let deleted = self
            .handle
            .route()
            .del(route_message(route, owned))
            .execute()
            .await
            .map_err(Error::netlink(format!(
                "deleting route {}",
                describe(route)
            )));
        match deleted {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(ESRCH) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The routes of the main table marked as the agent's, both families.
    pub async fn owned_routes(&self) -> Result<Vec<Route>, Error> {
        let mut routes = Vec::new();
        for request in [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let mut dump = self.handle.route().get(request).execute();
            while let Some(message) = dump
                .try_next()
                .await
                .map_err(Error::netlink("listing routes"))?
            {
                if message.header.protocol == RouteProtocol::Other(AGENT_ROUTE_PROTOCOL)
                    && message.header.table == RouteHeader::RT_TABLE_MAIN
                    && let Some(route) = parse_route(&message)
                {
                    routes.push(route);
                }
            }
        }
        Ok(routes)
    }
}

fn route_message(route: &Route, owned: bool) -> RouteMessage {
    let destination = route.destination.trunc();
    let mut builder = RouteMessageBuilder::<IpAddr>::new();
    builder = match builder
        .clone()
        .destination_prefix(destination.addr(), destination.prefix_len())
    {
        Ok(b) => b,
        // An IpNet's prefix always fits its family.
        Err(_) => builder,
    };
    if let Some(gateway) = route.gateway {
        builder = match builder.clone().gateway(gateway) {
            Ok(b) => b,
            Err(_) => builder,
        };
    } else {
        builder = builder.scope(RouteScope::Link);
    }
    if let Some(device) = route.device {
        builder = builder.output_interface(device);
    }
    if owned {
        builder = builder.protocol(RouteProtocol::Other(AGENT_ROUTE_PROTOCOL));
    }
    builder.build()
}

fn parse_route(message: &RouteMessage) -> Option<Route> {
    let mut destination = None;
    let mut gateway = None;
    let mut device = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(address) => destination = ip_of(address),
            RouteAttribute::Gateway(address) => gateway = ip_of(address),
            RouteAttribute::Oif(index) => device = Some(*index),
            _ => {}
        }
    }
    let destination = IpNet::new(destination?, message.header.destination_prefix_length).ok()?;
    Some(Route {
        destination,
        gateway,
        device,
    })
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn describe(route: &Route) -> String {
    match (route.gateway, route.device) {
        (Some(gateway), _) => format!("{} via {gateway}", route.destination),
        (None, Some(device)) => format!("{} dev {device}", route.destination),
        (None, None) => route.destination.to_string(),
    }
}
