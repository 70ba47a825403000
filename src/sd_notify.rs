//! systemd's readiness protocol (sd_notify), without libsystemd: one
//! datagram to $NOTIFY_SOCKET per state change. Without the variable (no
//! systemd, or Type=simple) every call does nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    // Never block the daemon on a listener that does not read: a state
    // change it misses is replaced by the next one.
    if let (Ok(sock), Ok(addr)) = (UnixDatagram::unbound(), addr) {
        if sock.set_nonblocking(true).is_ok() {
            let _ = sock.send_to_addr(state.as_bytes(), &addr);
        }
    }
}

/// The filter enforces the file.
pub fn ready() {
    send("READY=1\nSTATUS=enforcing");
}

/// A reload starts (systemd 253+ wants the monotonic time with it).
pub fn reloading() {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0);
    send(&format!("RELOADING=1\nMONOTONIC_USEC={now}"));
}

pub fn stopping() {
    send("STOPPING=1");
}
