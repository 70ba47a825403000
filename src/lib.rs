//! icmpguard: a declarative ICMP firewall. The file becomes a [`config::Config`],
//! the difference to the kernel a [`reconcile::Plan`], and the [`kernel`]
//! module applies it; events flow back through [`events`] to [`syslog`].

pub mod addr;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod diagnostic;
pub mod error;
pub mod events;
pub mod kernel;
pub mod notify;
pub mod reconcile;
pub mod syslog;
pub mod watch;

/// The skeleton libbpf-cargo generates from bpf/icmpguard.bpf.c: the
/// embedded object and the ABI types of bpf/icmpguard.h.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod skel {
    include!(concat!(env!("OUT_DIR"), "/icmpguard.skel.rs"));
}
