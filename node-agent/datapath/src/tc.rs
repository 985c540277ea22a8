//! How the endpoint programs are attached to a veth: TCX links where the kernel has them
//! (6.6+; pinned, swapped atomically by the next agent with `bpf_link_update`), or classic
//! `clsact` qdisc + `cls_bpf` filters through netlink on older kernels (Cilium's way
//! there). A netlink filter is not tied to a descriptor: it stays attached after the agent
//! exits, and the next agent replaces it in place (same priority and handle), so
//! enforcement does not pause either way.

use aya::Ebpf;
use aya::programs::tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle};
use aya::programs::{SchedClassifier, TcAttachType};
use aya::util::KernelVersion;

use crate::Error;

/// The attachment new endpoints get (links found pinned keep theirs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcAttachMode {
    Tcx,
    Netlink,
}

/// The priority and handle of our filter on each hook (one filter per direction).
const PRIORITY: u16 = 1;
const HANDLE: TcHandle = TcHandle::new(0, 1);

impl TcAttachMode {
    /// TCX when `enable_tcx` (Cilium's `--enable-tcx`) and the kernel is 6.6 or newer;
    /// netlink otherwise.
    pub fn probe(enable_tcx: bool) -> Self {
        let tcx_kernel = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
        if enable_tcx && tcx_kernel {
            TcAttachMode::Tcx
        } else {
            TcAttachMode::Netlink
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TcAttachMode::Tcx => "tcx",
            TcAttachMode::Netlink => "tc (clsact, netlink)",
        }
    }
}

fn interface_error(ifname: &str, what: &str) -> impl FnOnce(String) -> Error {
    let (name, what) = (ifname.to_owned(), what.to_owned());
    move |e| Error::Interface {
        name,
        reason: format!("{what}: {e}"),
    }
}

/// Attaches program `name` of `bpf` to `hook` of `ifname` as a netlink filter, replacing
/// the one a previous agent left. The filter outlives this process.
pub(crate) fn attach_netlink(
    bpf: &mut Ebpf,
    name: &'static str,
    ifname: &str,
    hook: TcAttachType,
) -> Result<(), Error> {
    // The clsact qdisc is there already when a previous agent attached.
    if let Err(e) = tc::qdisc_add_clsact(ifname)
        && !matches!(&e, tc::TcError::NetlinkError(n) if n.raw_os_error() == Some(nix::errno::Errno::EEXIST as i32))
    {
        return Err(interface_error(ifname, "adding the clsact qdisc")(
            e.to_string(),
        ));
    }
    let program: &mut SchedClassifier = bpf
        .program_mut(name)
        .ok_or_else(|| interface_error(ifname, "attaching")(format!("no program {name}")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| {
            interface_error(ifname, "attaching")(e.to_string())
        })?;
    let created = program.attach_with_options(
        ifname,
        hook,
        TcAttachOptions::Netlink(NlOptions {
            priority: PRIORITY,
            handle: HANDLE,
            ..Default::default()
        }),
    );
    let link_id = match created {
        Ok(id) => id,
        // Ours from a previous agent: replace it in place.
        Err(_) => {
            let old = SchedClassifierLink::attached(ifname, hook, PRIORITY, HANDLE, None).map_err(
                |e| interface_error(ifname, "finding the attached filter")(e.to_string()),
            )?;
            program
                .attach_to_link(old)
                .map_err(|e| interface_error(ifname, "replacing the TC filter")(e.to_string()))?
        }
    };
    let link = program
        .take_link(link_id)
        .map_err(|e| interface_error(ifname, "taking the TC link")(e.to_string()))?;
    // Dropping a netlink link detaches it; the filter must stay for the next agent.
    std::mem::forget(link);
    Ok(())
}

/// Removes our filters of program `name` from `hook` of `ifname`; an interface that is
/// gone, or one without the filter, is not an error.
pub(crate) fn detach_netlink(ifname: &str, hook: TcAttachType, name: &str) -> Result<(), Error> {
    match tc::qdisc_detach_program(ifname, hook, name) {
        Ok(()) => Ok(()),
        Err(tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        // The veth went with its pod.
        Err(_) if nix::net::if_::if_nametoindex(ifname).is_err() => Ok(()),
        Err(e) => Err(interface_error(ifname, "detaching the TC filter")(
            e.to_string(),
        )),
    }
}
