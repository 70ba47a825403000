//! The one question about tc that libbpf cannot answer: which filters sit
//! on an interface's clsact qdisc. `unload` removes a clsact qdisc that
//! icmpguard added only when no one else's filter uses it; this asks the
//! kernel with one rtnetlink dump per direction (RTM_GETTFILTER).

use std::io;

use nix::sys::socket::{
    bind, recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWTFILTER: u16 = 44;
const RTM_GETTFILTER: u16 = 46;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDRLEN: usize = 16;
const TCMSG_LEN: usize = 20;

/// The clsact qdisc's two filter parents (TC_H_CLSACT with the minor of
/// ingress and of egress).
pub const CLSACT_INGRESS: u32 = 0xFFFF_FFF2;
pub const CLSACT_EGRESS: u32 = 0xFFFF_FFF3;

/// A filter as the dump shows it: its priority and handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter {
    pub priority: u32,
    pub handle: u32,
}

/// The filters under `parent` of interface `ifindex` (the per-priority
/// headers the kernel also sends, with handle 0, are left out).
pub fn filters(ifindex: u32, parent: u32) -> io::Result<Vec<Filter>> {
    let sock = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkRoute)?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&sock), &NetlinkAddr::new(0, 0))?;
    let request = dump_request(ifindex, parent, 1);
    sendto(std::os::fd::AsRawFd::as_raw_fd(&sock), &request, &NetlinkAddr::new(0, 0), MsgFlags::empty())?;

    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = recv(std::os::fd::AsRawFd::as_raw_fd(&sock), &mut buf, MsgFlags::empty())?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "rtnetlink closed the dump"));
        }
        if parse_batch(&buf[..n], &mut out)? {
            return Ok(out);
        }
    }
}

fn dump_request(ifindex: u32, parent: u32, seq: u32) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + TCMSG_LEN) as u32;
    let mut m = Vec::with_capacity(len as usize);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&RTM_GETTFILTER.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    m.extend_from_slice(&[0, 0, 0, 0]); // family AF_UNSPEC, padding
    m.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // handle
    m.extend_from_slice(&parent.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // info
    m
}

fn u32_at(b: &[u8], at: usize) -> io::Result<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short rtnetlink message"))
}

/// Adds the filters of one datagram to `out`; `Ok(true)` once the dump is
/// done.
fn parse_batch(mut b: &[u8], out: &mut Vec<Filter>) -> io::Result<bool> {
    while b.len() >= NLMSG_HDRLEN {
        let len = u32_at(b, 0)? as usize;
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed rtnetlink message"));
        }
        let body = &b[NLMSG_HDRLEN..len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = u32_at(body, 0)? as i32;
                if code == 0 {
                    return Ok(true);
                }
                return Err(io::Error::from_raw_os_error(-code));
            }
            RTM_NEWTFILTER => {
                let handle = u32_at(body, 8)?;
                let info = u32_at(body, 16)?;
                if handle != 0 {
                    out.push(Filter { priority: info >> 16, handle });
                }
            }
            _ => {}
        }
        let aligned = (len + 3) & !3;
        b = b.get(aligned..).unwrap_or_default();
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        m
    }

    fn tcmsg(handle: u32, info: u32) -> Vec<u8> {
        let mut b = vec![0u8; 8];
        b.extend_from_slice(&handle.to_ne_bytes());
        b.extend_from_slice(&CLSACT_EGRESS.to_ne_bytes());
        b.extend_from_slice(&info.to_ne_bytes());
        b
    }

    #[test]
    fn a_dump_lists_filters_and_skips_the_priority_headers() {
        let mut batch = message(RTM_NEWTFILTER, &tcmsg(0, 1 << 16));
        batch.extend(message(RTM_NEWTFILTER, &tcmsg(0x1c9, (1 << 16) | 3)));
        batch.extend(message(RTM_NEWTFILTER, &tcmsg(7, 49152 << 16)));
        let mut out = Vec::new();
        assert!(!parse_batch(&batch, &mut out).unwrap());
        assert!(parse_batch(&message(NLMSG_DONE, &[0; 4]), &mut out).unwrap());
        assert_eq!(out, vec![Filter { priority: 1, handle: 0x1c9 }, Filter { priority: 49152, handle: 7 }]);
    }

    #[test]
    fn an_error_reply_carries_its_errno() {
        let e = parse_batch(&message(NLMSG_ERROR, &(-19i32).to_ne_bytes()), &mut Vec::new()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(19));
        assert!(parse_batch(&message(NLMSG_ERROR, &[0; 4]), &mut Vec::new()).unwrap());
    }

    #[test]
    fn a_truncated_message_is_an_error_not_a_panic() {
        let mut m = message(RTM_NEWTFILTER, &tcmsg(5, 0));
        m.truncate(NLMSG_HDRLEN + 6);
        assert!(parse_batch(&m, &mut Vec::new()).is_err());
    }
}
