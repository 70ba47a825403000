//! Crafted frames for BPF_PROG_TEST_RUN: Ethernet, VLAN tags, IPv4 with
//! options and fragments, IPv6 with extension headers, ICMP/ICMPv6, TCP.
//! Checksums are left zero: the filter never reads them.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

/// An IPv6 extension header to put before the upper layer.
#[derive(Clone, Debug)]
pub enum Ext {
    HopByHop(usize),
    DestOpts(usize),
    Routing(usize),
    /// Mobility header (RFC 6275), laid out as the option headers.
    Mobility(usize),
    /// Fragment header with this offset (in 8-byte units) and M flag.
    Fragment {
        offset: u16,
        more: bool,
    },
    /// Authentication header with this many 32-bit words of ICV.
    Auth(usize),
}

#[derive(Clone, Debug)]
pub enum L4 {
    Icmp {
        icmp_type: u8,
        code: u8,
    },
    Tcp,
    Udp,
    /// Any other protocol number (or ICMP of the wrong family): the number
    /// in the IP header, then only the payload.
    Other {
        proto: u8,
    },
}

#[derive(Clone, Debug)]
pub struct Packet {
    pub vlans: Vec<u16>,
    /// The TPID of each tag, outermost first; tags without one get the
    /// default (802.1ad outside 802.1Q with two tags, 802.1Q otherwise).
    pub tpids: Vec<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 only: option bytes (padded to a multiple of 4).
    pub ipv4_options: usize,
    /// IPv4 only: fragment offset (8-byte units) and MF.
    pub ipv4_frag: (u16, bool),
    /// IPv6 only.
    pub exts: Vec<Ext>,
    pub l4: L4,
    pub payload: usize,
}

impl Packet {
    pub fn icmp(src: &str, dst: &str, icmp_type: u8, code: u8) -> Packet {
        Packet::new(src.parse().expect("address"), dst.parse().expect("address"), L4::Icmp { icmp_type, code })
    }

    /// A packet of either family (both addresses of the same one), without
    /// VLAN tags, options or extension headers, with 32 bytes of payload.
    pub fn new(src: IpAddr, dst: IpAddr, l4: L4) -> Packet {
        Packet {
            vlans: Vec::new(),
            tpids: Vec::new(),
            src,
            dst,
            ipv4_options: 0,
            ipv4_frag: (0, false),
            exts: Vec::new(),
            l4,
            payload: 32,
        }
    }

    /// An echo request (ICMP 8 or ICMPv6 128, from the source family).
    pub fn echo(src: &str, dst: &str) -> Packet {
        let v6 = src.contains(':');
        Packet::icmp(src, dst, if v6 { 128 } else { 8 }, 0)
    }

    pub fn echo_reply(src: &str, dst: &str) -> Packet {
        let v6 = src.contains(':');
        Packet::icmp(src, dst, if v6 { 129 } else { 0 }, 0)
    }

    pub fn tcp(src: &str, dst: &str) -> Packet {
        Packet { l4: L4::Tcp, ..Packet::echo(src, dst) }
    }

    pub fn vlan(mut self, tags: &[u16]) -> Packet {
        self.vlans = tags.to_vec();
        self
    }

    /// VLAN tags with the TPID of each given, outermost first.
    pub fn vlan_tpids(mut self, tags: &[(u16, u16)]) -> Packet {
        self.tpids = tags.iter().map(|t| t.0).collect();
        self.vlans = tags.iter().map(|t| t.1).collect();
        self
    }

    pub fn payload(mut self, bytes: usize) -> Packet {
        self.payload = bytes;
        self
    }

    pub fn options(mut self, bytes: usize) -> Packet {
        self.ipv4_options = bytes;
        self
    }

    pub fn frag(mut self, offset: u16, more: bool) -> Packet {
        self.ipv4_frag = (offset, more);
        self
    }

    pub fn ext(mut self, e: Ext) -> Packet {
        self.exts.push(e);
        self
    }

    /// Offset of the ICMP header in the frame (where the type byte is).
    pub fn l4_offset(&self) -> usize {
        let mut off = 14 + 4 * self.vlans.len();
        match self.src {
            IpAddr::V4(_) => off += 20 + self.ipv4_options,
            IpAddr::V6(_) => {
                off += 40;
                for e in &self.exts {
                    off += ext_len(e);
                }
            }
        }
        off
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]); // dst MAC
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]); // src MAC
        let family = if self.src.is_ipv4() { ETH_P_IP } else { ETH_P_IPV6 };
        // With two tags the outer is 802.1ad (QinQ), otherwise 802.1Q.
        for (i, tag) in self.vlans.iter().enumerate() {
            let default = if self.vlans.len() == 2 && i == 0 { ETH_P_8021AD } else { ETH_P_8021Q };
            let tpid = self.tpids.get(i).copied().unwrap_or(default);
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tag.to_be_bytes());
        }
        f.extend_from_slice(&family.to_be_bytes());

        let l4 = self.l4_bytes();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.ipv4(&mut f, s, d, &l4),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.ipv6(&mut f, s, d, &l4),
            _ => panic!("mixed families"),
        }
        f
    }

    fn proto(&self) -> u8 {
        match (&self.l4, self.src.is_ipv4()) {
            (L4::Icmp { .. }, true) => 1,
            (L4::Icmp { .. }, false) => 58,
            (L4::Tcp, _) => 6,
            (L4::Udp, _) => 17,
            (L4::Other { proto }, _) => *proto,
        }
    }

    fn l4_bytes(&self) -> Vec<u8> {
        let mut b = match self.l4 {
            L4::Icmp { icmp_type, code } => vec![icmp_type, code, 0, 0, 0, 1, 0, 1],
            L4::Tcp => {
                let mut t = vec![0u8; 20];
                t[0..2].copy_from_slice(&40000u16.to_be_bytes());
                t[2..4].copy_from_slice(&22u16.to_be_bytes());
                t[12] = 5 << 4;
                t
            }
            L4::Udp => vec![0x9c, 0x40, 0, 53, 0, 8, 0, 0],
            L4::Other { .. } => Vec::new(),
        };
        b.extend(std::iter::repeat_n(0xab, self.payload));
        b
    }

    fn ipv4(&self, f: &mut Vec<u8>, s: Ipv4Addr, d: Ipv4Addr, l4: &[u8]) {
        assert!(self.ipv4_options % 4 == 0 && self.ipv4_options <= 40, "options must be 0..=40, multiple of 4");
        let hlen = 20 + self.ipv4_options;
        let total = (hlen + l4.len()) as u16;
        f.push(0x40 | (hlen / 4) as u8);
        f.push(0);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&0x1234u16.to_be_bytes());
        let frag = self.ipv4_frag.0 & 0x1FFF | if self.ipv4_frag.1 { 0x2000 } else { 0 };
        f.extend_from_slice(&frag.to_be_bytes());
        f.push(64);
        f.push(self.proto());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&s.octets());
        f.extend_from_slice(&d.octets());
        // Options: NOPs ending in End of Option List.
        for i in 0..self.ipv4_options {
            f.push(if i + 1 == self.ipv4_options { 0 } else { 1 });
        }
        f.extend_from_slice(l4);
    }

    fn ipv6(&self, f: &mut Vec<u8>, s: Ipv6Addr, d: Ipv6Addr, l4: &[u8]) {
        let ext_total: usize = self.exts.iter().map(ext_len).sum();
        f.extend_from_slice(&0x6000_0000u32.to_be_bytes());
        f.extend_from_slice(&((ext_total + l4.len()) as u16).to_be_bytes());
        f.push(self.exts.first().map_or(self.proto(), ext_code));
        f.push(64);
        f.extend_from_slice(&s.octets());
        f.extend_from_slice(&d.octets());
        for (i, e) in self.exts.iter().enumerate() {
            let next = self.exts.get(i + 1).map_or(self.proto(), ext_code);
            let len = ext_len(e);
            match e {
                Ext::HopByHop(_) | Ext::DestOpts(_) | Ext::Routing(_) | Ext::Mobility(_) => {
                    f.push(next);
                    f.push((len / 8 - 1) as u8);
                    // PadN filling the rest.
                    f.push(1);
                    f.push((len - 4) as u8);
                    f.extend(std::iter::repeat_n(0, len - 4));
                }
                Ext::Fragment { offset, more } => {
                    f.push(next);
                    f.push(0);
                    let v = (offset << 3) | u16::from(*more);
                    f.extend_from_slice(&v.to_be_bytes());
                    f.extend_from_slice(&0xdead_beefu32.to_be_bytes());
                }
                Ext::Auth(_) => {
                    f.push(next);
                    f.push((len / 4 - 2) as u8);
                    f.extend(std::iter::repeat_n(0, len - 2));
                }
            }
        }
        f.extend_from_slice(l4);
    }
}

fn ext_code(e: &Ext) -> u8 {
    match e {
        Ext::HopByHop(_) => 0,
        Ext::Routing(_) => 43,
        Ext::Fragment { .. } => 44,
        Ext::Auth(_) => 51,
        Ext::DestOpts(_) => 60,
        Ext::Mobility(_) => 135,
    }
}

/// Length in bytes; option headers come in 8-byte units, AH in 4.
fn ext_len(e: &Ext) -> usize {
    match e {
        Ext::HopByHop(n) | Ext::DestOpts(n) | Ext::Routing(n) | Ext::Mobility(n) => {
            assert!(*n >= 8 && n % 8 == 0, "option header length must be a multiple of 8");
            *n
        }
        Ext::Fragment { .. } => 8,
        Ext::Auth(words) => 12 + 4 * words,
    }
}
