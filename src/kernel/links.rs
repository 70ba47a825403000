//! Attaching the programs to interfaces through pinned bpf_links: XDP
//! (native or generic) for ingress, tcx for egress.
//!
//! A pinned link keeps its program attached when the daemon exits; a new
//! daemon swaps the program in place with BPF_LINK_UPDATE, so the hook is
//! never empty. A link whose interface went away stays as an object but is
//! detached (the kernel reports ifindex 0); it is replaced when the
//! interface comes back.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use libbpf_rs::query::{LinkInfo, LinkTypeInfo};

use crate::config::AttachMode;
use crate::error::Error;
use crate::kernel::sys::{self, LinkTarget};

/// What a pinned link file is, from its name.
pub fn target_of(file_name: &str) -> Option<LinkTarget> {
    match file_name {
        "xdp_native" => Some(LinkTarget::XdpNative),
        "xdp_generic" => Some(LinkTarget::XdpGeneric),
        "tcx_egress" => Some(LinkTarget::TcxEgress),
        _ => None,
    }
}

pub fn file_name(target: LinkTarget) -> &'static str {
    match target {
        LinkTarget::XdpNative => "xdp_native",
        LinkTarget::XdpGeneric => "xdp_generic",
        LinkTarget::TcxEgress => "tcx_egress",
    }
}

impl fmt::Display for LinkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkTarget::XdpNative => "xdp native",
            LinkTarget::XdpGeneric => "xdp generic",
            LinkTarget::TcxEgress => "tcx egress",
        })
    }
}

/// A pinned link and what the kernel says about it.
pub struct PinnedLink {
    pub target: LinkTarget,
    pub path: PathBuf,
    pub fd: OwnedFd,
    /// 0 when the interface is gone.
    pub ifindex: u32,
    pub prog_id: u32,
    pub link_id: u32,
}

impl PinnedLink {
    pub fn open(path: &Path, target: LinkTarget) -> io::Result<PinnedLink> {
        let fd = sys::obj_get(path)?;
        let info = LinkInfo::from_fd(fd.as_fd()).map_err(|e| {
            io::Error::from_raw_os_error(crate::error::errno_of(&e).unwrap_or(nix::errno::Errno::EIO as i32))
        })?;
        let ifindex = match info.info {
            LinkTypeInfo::Xdp(x) => x.ifindex,
            LinkTypeInfo::Tcx(t) => t.ifindex,
            _ => 0,
        };
        Ok(PinnedLink { target, path: path.to_path_buf(), fd, ifindex, prog_id: info.prog_id, link_id: info.id })
    }

    /// The interface the link is attached to now (None: detached).
    pub fn current_ifindex(&self) -> Option<u32> {
        let info = LinkInfo::from_fd(self.fd.as_fd()).ok()?;
        match info.info {
            LinkTypeInfo::Xdp(x) if x.ifindex != 0 => Some(x.ifindex),
            LinkTypeInfo::Tcx(t) if t.ifindex != 0 => Some(t.ifindex),
            _ => None,
        }
    }

    /// Detaches from the hook and removes the pin. Once the pin and this
    /// descriptor are gone the kernel releases the link anyway, so a detach
    /// that fails (a defunct link) is not an error.
    pub fn remove(self) -> io::Result<()> {
        let _ = sys::link_detach(self.fd.as_fd());
        std::fs::remove_file(&self.path)
    }
}

/// The interface index of `name` in this network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// Creates a link of `target` for `prog` on `iface` and pins it at `path`.
pub fn attach(
    prog: std::os::fd::BorrowedFd<'_>,
    iface: &str,
    ifindex: u32,
    target: LinkTarget,
    path: &Path,
) -> Result<PinnedLink, Error> {
    let fd = sys::link_create(prog, ifindex, target).map_err(|e| attach_error(iface, target, &e))?;
    sys::obj_pin(fd.as_fd(), path).map_err(|e| Error::Attach {
        iface: iface.to_string(),
        errno: e.raw_os_error(),
        msg: format!("cannot pin the {target} link at {}: {e}", path.display()),
        hint: "check that pin_dir is on a bpffs and writable by root".into(),
    })?;
    PinnedLink::open(path, target).map_err(|e| Error::Attach {
        iface: iface.to_string(),
        errno: e.raw_os_error(),
        msg: format!("cannot read back the {target} link: {e}"),
        hint: String::new(),
    })
}

fn attach_error(iface: &str, target: LinkTarget, e: &io::Error) -> Error {
    let errno = e.raw_os_error();
    let hint = match nix::errno::Errno::from_raw(errno.unwrap_or(0)) {
        nix::errno::Errno::EBUSY | nix::errno::Errno::EEXIST => format!(
            "another XDP program is attached to {iface} (see `ip link show {iface}`); detach it with `ip link set dev {iface} xdp off`, or guard another interface"
        ),
        nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EINVAL if target == LinkTarget::XdpNative => {
            format!("the driver of {iface} lacks native XDP; set mode = \"generic\" or \"auto\"")
        }
        nix::errno::Errno::EPERM => "run as root (CAP_BPF and CAP_NET_ADMIN are needed)".into(),
        nix::errno::Errno::ENODEV => format!("interface {iface} went away; it is attached again when it returns"),
        _ => "see the kernel log (`dmesg`) for the driver's reason".into(),
    };
    Error::Attach { iface: iface.to_string(), errno, msg: format!("cannot attach {target}: {e}"), hint }
}

/// The XDP targets to try, in order, for a configured mode.
pub fn xdp_targets(mode: AttachMode) -> &'static [LinkTarget] {
    match mode {
        AttachMode::Auto => &[LinkTarget::XdpNative, LinkTarget::XdpGeneric],
        AttachMode::Native => &[LinkTarget::XdpNative],
        AttachMode::Generic => &[LinkTarget::XdpGeneric],
    }
}
