//! Attaching the programs to interfaces: XDP (native or generic) for
//! ingress, through a pinned bpf_link; for egress, a pinned tcx link where
//! the kernel has tcx (6.6+), and before that a tc filter on the clsact
//! qdisc, in direct-action mode.
//!
//! A pinned link keeps its program attached when the daemon exits; a new
//! daemon swaps the program in place with BPF_LINK_UPDATE, so the hook is
//! never empty. A link whose interface went away stays as an object but is
//! detached (the kernel reports ifindex 0); it is replaced when the
//! interface comes back.
//!
//! A tc filter belongs to the qdisc, not to a process, so it outlives the
//! daemon as a link does. icmpguard's sits at a fixed handle and priority
//! (`TC_HANDLE`, `TC_PRIORITY`), and its program is pinned at `tc_egress`:
//! the filter in that slot is ours when it runs the pinned program (or,
//! the pins lost, one named `icmpguard_tcx` where names can be read);
//! any other is someone else's and is never touched. The program is also
//! pinned at `tc_clsact` when icmpguard added the clsact qdisc itself, so
//! that removing the filter also removes that qdisc unless other filters
//! now use it. A new program replaces the old one in the same slot,
//! atomically (NLM_F_REPLACE), as BPF_LINK_UPDATE does for links; it is
//! pinned before the swap and renamed over `tc_egress` after, so that a
//! pin always names the program that runs.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use libbpf_rs::query::{LinkInfo, LinkTypeInfo};

use crate::error::Error;
use crate::kernel::netlink;
use crate::kernel::sys::{self, LinkTarget, TcSlot};
use crate::plan::AttachMode;

/// The tc filter slot icmpguard's egress filter takes on kernels without
/// tcx: priority 1, so that it runs before filters that end classification
/// with TC_ACT_OK, and a handle no tool picks by default.
pub const TC_PRIORITY: u32 = 1;
pub const TC_HANDLE: u32 = 0x1C3D_0001;
/// The program name the kernel records for the egress program (at most 15
/// bytes): how icmpguard recognises its own filter.
pub const EGRESS_PROG_NAME: &str = "icmpguard_tcx";
/// The second pin of the egress program that records an added clsact qdisc.
const TC_CLSACT_MARK: &str = "tc_clsact";

/// Whether a pin is the clsact mark, which goes with its `tc_egress` pin.
pub fn is_mark(file_name: &str) -> bool {
    file_name == TC_CLSACT_MARK
}

fn tc_slot(ifindex: u32) -> TcSlot {
    TcSlot { ifindex, handle: TC_HANDLE, priority: TC_PRIORITY }
}

/// Where a new egress program is pinned before it replaces the filter's,
/// then renamed over `tc_egress`: at every moment a pin holds the program
/// the filter runs, which is how a daemon recognises its own filter.
const TC_NEW: &str = "tc_egress_new";

/// The ids of the egress programs pinned in `dir` (an interface's link
/// directory).
fn pinned_tc_ids(dir: &Path) -> Vec<u32> {
    ["tc_egress", TC_NEW]
        .iter()
        .filter_map(|name| sys::obj_get(&dir.join(name)).ok())
        .filter_map(|fd| sys::prog_id(fd.as_fd()).ok())
        .collect()
}

/// The id of icmpguard's program in the tc egress slot of `ifindex`, if
/// that is where it runs; `Err` names someone else's filter there. Ours is
/// the program pinned in `dir`; without such a pin (pins lost), a program
/// named `icmpguard_tcx`, where the kernel lets us read names (reading
/// another program's name needs CAP_SYS_ADMIN, which the unit lacks).
pub fn tc_ours(ifindex: u32, dir: &Path) -> io::Result<Option<u32>> {
    let Some(id) = sys::tc_query(tc_slot(ifindex))? else { return Ok(None) };
    if pinned_tc_ids(dir).contains(&id) {
        return Ok(Some(id));
    }
    match sys::prog_name_by_id(id) {
        Ok(name) if name == EGRESS_PROG_NAME => Ok(Some(id)),
        Ok(name) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "the tc egress filter at handle {TC_HANDLE:#x} priority {TC_PRIORITY} is another program's (id {id}, name {name:?})"
            ),
        )),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "the tc egress filter at handle {TC_HANDLE:#x} priority {TC_PRIORITY} runs program {id}, which is not pinned in {}",
                dir.display()
            ),
        )),
    }
}

/// Pins `prog` at `path` through a temporary pin renamed over it, so that
/// `path` never goes missing.
fn repin(prog: std::os::fd::BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let tmp = path.with_file_name(format!("{}_new", path.file_name().and_then(|n| n.to_str()).unwrap_or("tc")));
    let _ = std::fs::remove_file(&tmp);
    sys::obj_pin(prog, &tmp)?;
    std::fs::rename(&tmp, path)
}

/// What a pinned link file is, from its name.
pub fn target_of(file_name: &str) -> Option<LinkTarget> {
    match file_name {
        "xdp_native" => Some(LinkTarget::XdpNative),
        "xdp_generic" => Some(LinkTarget::XdpGeneric),
        "tcx_egress" => Some(LinkTarget::TcxEgress),
        "tc_egress" => Some(LinkTarget::TcEgress),
        _ => None,
    }
}

pub fn file_name(target: LinkTarget) -> &'static str {
    match target {
        LinkTarget::XdpNative => "xdp_native",
        LinkTarget::XdpGeneric => "xdp_generic",
        LinkTarget::TcxEgress => "tcx_egress",
        LinkTarget::TcEgress => "tc_egress",
    }
}

impl fmt::Display for LinkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkTarget::XdpNative => "xdp native",
            LinkTarget::XdpGeneric => "xdp generic",
            LinkTarget::TcxEgress => "tcx egress",
            LinkTarget::TcEgress => "tc egress",
        })
    }
}

/// A pinned link (or, for a tc filter, its pinned program) and what the
/// kernel says about it.
pub struct PinnedLink {
    pub target: LinkTarget,
    pub path: PathBuf,
    /// The link; for a tc filter, the program pinned beside it.
    pub fd: OwnedFd,
    /// 0 when the interface is gone (or, for tc, our filter is not there).
    pub ifindex: u32,
    /// The program attached now.
    pub prog_id: u32,
    /// 0 for a tc filter, which is no link.
    pub link_id: u32,
}

impl PinnedLink {
    /// Opens the pin at `path`; `iface_index` is the index of the interface
    /// the pin directory names (a tc filter is found through it).
    pub fn open(path: &Path, target: LinkTarget, iface_index: Option<u32>) -> io::Result<PinnedLink> {
        let fd = sys::obj_get(path)?;
        if target == LinkTarget::TcEgress {
            let pinned = sys::prog_id(fd.as_fd())?;
            let dir = path.parent().unwrap_or(Path::new("/"));
            let attached = match iface_index {
                Some(i) => tc_ours(i, dir).ok().flatten().map(|id| (i, id)),
                None => None,
            };
            let (ifindex, prog_id) = attached.unwrap_or((0, pinned));
            return Ok(PinnedLink { target, path: path.to_path_buf(), fd, ifindex, prog_id, link_id: 0 });
        }
        // libbpf sets errno on failure (libbpf-rs keeps the number to itself).
        let info = LinkInfo::from_fd(fd.as_fd()).map_err(|_| io::Error::last_os_error())?;
        let ifindex = match info.info {
            LinkTypeInfo::Xdp(x) => x.ifindex,
            LinkTypeInfo::Tcx(t) => t.ifindex,
            _ => 0,
        };
        Ok(PinnedLink { target, path: path.to_path_buf(), fd, ifindex, prog_id: info.prog_id, link_id: info.id })
    }

    /// Whether the link is attached to interface `ifindex` now.
    pub fn attached_to(&self, ifindex: u32) -> bool {
        if self.target == LinkTarget::TcEgress {
            let dir = self.path.parent().unwrap_or(Path::new("/"));
            return tc_ours(ifindex, dir).ok().flatten().is_some();
        }
        let Ok(info) = LinkInfo::from_fd(self.fd.as_fd()) else { return false };
        match info.info {
            LinkTypeInfo::Xdp(x) => x.ifindex == ifindex,
            LinkTypeInfo::Tcx(t) => t.ifindex == ifindex,
            _ => false,
        }
    }

    /// Runs `prog` (whose id is `prog_id`) in this link's hook instead,
    /// atomically; returns the link as it is then.
    pub fn update(self, prog: std::os::fd::BorrowedFd<'_>, prog_id: u32) -> io::Result<PinnedLink> {
        if self.prog_id == prog_id {
            return Ok(self);
        }
        if self.target != LinkTarget::TcEgress {
            sys::link_update(self.fd.as_fd(), prog)?;
            return Ok(PinnedLink { prog_id, ..self });
        }
        if self.ifindex == 0 {
            return Err(io::Error::new(io::ErrorKind::NotFound, "the tc egress filter is gone"));
        }
        // Pinned first: from the swap on, a pin names the program it runs.
        let new = self.path.with_file_name(TC_NEW);
        let _ = std::fs::remove_file(&new);
        sys::obj_pin(prog, &new)?;
        sys::tc_attach(tc_slot(self.ifindex), prog, true)?;
        std::fs::rename(&new, &self.path)?;
        // The mark holds the program too: the old one must not stay
        // referenced (with its maps) by it.
        let mark = self.path.with_file_name(TC_CLSACT_MARK);
        if mark.exists() {
            repin(prog, &mark)?;
        }
        let fd = prog.try_clone_to_owned()?;
        Ok(PinnedLink { fd, prog_id, ..self })
    }

    /// Detaches from the hook and removes the pin. Once the pin and this
    /// descriptor are gone the kernel releases a link anyway, so a detach
    /// that fails (a defunct link) is not an error. A tc filter goes with
    /// the clsact qdisc icmpguard added for it, unless another filter uses
    /// that qdisc now.
    pub fn remove(self) -> io::Result<()> {
        if self.target != LinkTarget::TcEgress {
            let _ = sys::link_detach(self.fd.as_fd());
            return std::fs::remove_file(&self.path);
        }
        let mark = self.path.with_file_name(TC_CLSACT_MARK);
        if self.ifindex != 0 {
            match sys::tc_detach(tc_slot(self.ifindex)) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOENT as i32) => {}
                Err(e) => return Err(e),
            }
            if mark.exists() && clsact_unused(self.ifindex)? {
                sys::tc_clsact_destroy(self.ifindex)?;
            }
        }
        if mark.exists() {
            std::fs::remove_file(&mark)?;
        }
        std::fs::remove_file(&self.path)
    }
}

/// Whether the clsact qdisc of `ifindex` holds no filter in either direction.
fn clsact_unused(ifindex: u32) -> io::Result<bool> {
    for parent in [netlink::CLSACT_INGRESS, netlink::CLSACT_EGRESS] {
        if !netlink::filters(ifindex, parent)?.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Removes every pin of interface `iface` (its `files`, as the pin
/// directory lists them), detaching what is attached; the clsact mark goes
/// with its filter. Calls `failed` for each pin that could not be removed,
/// and returns the hooks detached.
pub fn remove_iface_pins(
    iface: &str,
    files: &[(String, PathBuf)],
    mut failed: impl FnMut(&Path, io::Error),
) -> Vec<LinkTarget> {
    let mut detached = Vec::new();
    let has_filter = files.iter().any(|(f, _)| target_of(f).is_some());
    for (file, path) in files {
        if is_mark(file) && has_filter {
            continue; // removed with its filter
        }
        let result = match target_of(file).map(|t| (t, PinnedLink::open(path, t, ifindex(iface)))) {
            Some((target, Ok(link))) => link.remove().map(|()| Some(target)),
            _ => std::fs::remove_file(path).map(|()| None),
        };
        match result {
            Ok(Some(target)) => detached.push(target),
            Ok(None) => {}
            Err(e) => failed(path, e),
        }
    }
    detached
}

/// The interface index of `name` in this network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// Creates a link of `target` for `prog` on `iface` and pins it at `path`
/// (for tc: adds the filter, with the clsact qdisc if there is none, and
/// pins the program).
pub fn attach(
    prog: std::os::fd::BorrowedFd<'_>,
    iface: &str,
    ifindex: u32,
    target: LinkTarget,
    path: &Path,
) -> Result<PinnedLink, Error> {
    let pin_error = |e: io::Error| Error::Attach {
        iface: iface.to_string(),
        errno: e.raw_os_error(),
        msg: format!("cannot pin the {target} link at {}: {e}", path.display()),
        hint: "check that pin_dir is on a bpffs and writable by root".into(),
    };
    if target == LinkTarget::TcEgress {
        attach_tc(prog, ifindex, path).map_err(|e| attach_error(iface, target, &e))?;
    } else {
        let fd = sys::link_create(prog, ifindex, target).map_err(|e| attach_error(iface, target, &e))?;
        sys::obj_pin(fd.as_fd(), path).map_err(pin_error)?;
    }
    PinnedLink::open(path, target, Some(ifindex)).map_err(|e| Error::Attach {
        iface: iface.to_string(),
        errno: e.raw_os_error(),
        msg: format!("cannot read back the {target} link: {e}"),
        hint: String::new(),
    })
}

/// Puts `prog` in icmpguard's tc egress slot of `ifindex` and pins it.
fn attach_tc(prog: std::os::fd::BorrowedFd<'_>, ifindex: u32, path: &Path) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let added_qdisc = sys::tc_clsact_create(ifindex)?;
    // Ours already there (pins lost, or a crash before pinning): replace.
    let replace = tc_ours(ifindex, dir)?.is_some();
    let new = path.with_file_name(TC_NEW);
    let _ = std::fs::remove_file(&new);
    sys::obj_pin(prog, &new)?;
    let attached = sys::tc_attach(tc_slot(ifindex), prog, replace);
    if attached.is_err() {
        let _ = std::fs::remove_file(&new);
    }
    match attached {
        // A filter that is no BPF program (tc_ours found none) holds the slot.
        Err(e) if !replace && e.raw_os_error() == Some(nix::errno::Errno::EEXIST as i32) => {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("the tc egress filter at handle {TC_HANDLE:#x} priority {TC_PRIORITY} is another program's (not a BPF program)"),
            ));
        }
        other => other?,
    }
    std::fs::rename(&new, path)?;
    if added_qdisc {
        repin(prog, &path.with_file_name(TC_CLSACT_MARK))?;
    }
    Ok(())
}

fn attach_error(iface: &str, target: LinkTarget, e: &io::Error) -> Error {
    let errno = e.raw_os_error();
    let errno_or_kind = match (errno, e.kind()) {
        (None, io::ErrorKind::AddrInUse) => nix::errno::Errno::EADDRINUSE,
        _ => nix::errno::Errno::from_raw(errno.unwrap_or(0)),
    };
    let hint = match errno_or_kind {
        nix::errno::Errno::EBUSY | nix::errno::Errno::EEXIST if !target.is_egress() => format!(
            "another XDP program is attached to {iface} (see `ip link show {iface}`); detach it with `ip link set dev {iface} xdp off`, or guard another interface"
        ),
        nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EINVAL if target == LinkTarget::XdpNative => {
            format!("the driver of {iface} lacks native XDP; set mode = \"generic\" or \"auto\"")
        }
        nix::errno::Errno::EPERM => "run as root (CAP_BPF and CAP_NET_ADMIN are needed)".into(),
        nix::errno::Errno::ENODEV => format!("interface {iface} went away; it is attached again when it returns"),
        nix::errno::Errno::EADDRINUSE => format!(
            "remove that filter (`tc filter del dev {iface} egress handle {TC_HANDLE:#x} prio {TC_PRIORITY} bpf`) or guard another interface"
        ),
        _ if target.is_egress() => format!(
            "the kernel ({}) refused the egress hook; `tc qdisc show dev {iface}` and `tc filter show dev {iface} egress` show what is there",
            crate::kernel::probe::facilities().release
        ),
        _ => format!(
            "the driver of {iface} refused XDP; `ip -d link show {iface}` shows what is attached, and `dmesg` may say why"
        ),
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
