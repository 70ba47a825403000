//! Generated blocklists and the files that load them: icmpguard's TOML,
//! an nftables ruleset and an ipset restore file holding the same sets.
//!
//! Addresses are generated, never contacted: exact IPv4 addresses in
//! 10.0.0.0/9 and IPv4 prefixes in 10.128.0.0/9, IPv6 in 2001:db8::/32.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The `i`-th generated exact IPv4 address (distinct for i < 2^23).
pub fn v4_exact(i: u32) -> Ipv4Addr {
    // 7919 is odd, hence a bijection of 0..2^23: spread, not sequential.
    let host = i.wrapping_mul(7919).wrapping_add(1) & 0x7f_ffff;
    Ipv4Addr::from(0x0a00_0000 | host)
}

/// The `i`-th generated exact IPv4 address of a list of up to 2^24, in
/// 11.0.0.0/8 (never contacted: the lists of section 3e are only loaded).
pub fn v4_wide(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0b00_0000 | (i.wrapping_mul(7919).wrapping_add(1) & 0xff_ffff))
}

/// The `i`-th generated IPv4 /24 (distinct for i < 2^15).
pub fn v4_prefix(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a80_0000 | ((i.wrapping_mul(31) & 0x7fff) << 8))
}

/// The `i`-th generated exact IPv6 address, in 2001:db8:1::/48.
pub fn v6_exact(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, (i >> 16) as u16, i as u16)
}

/// The `i`-th generated IPv6 /64 (distinct for i < 2^16), in 2001:db8:2::/48.
pub fn v6_prefix(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 2, i as u16, 0, 0, 0, 0)
}

/// The `i`-th generated IPv4 /16 (distinct for i < 2^12), in 240.0.0.0/4
/// (reserved, never routed).
pub fn v4_p16(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xf000_0000 | ((i.wrapping_mul(7) & 0x0fff) << 16))
}

/// The `i`-th generated IPv4 /28 (distinct for i < 2^13), in 198.18.0.0/15
/// (the benchmarking range, RFC 2544).
pub fn v4_p28(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xc612_0000 | ((i.wrapping_mul(37) & 0x1fff) << 4))
}

/// The `i`-th generated IPv6 /36 (distinct for i < 2^16), in 3fff::/20
/// (documentation, RFC 9637).
pub fn v6_p36(i: u32) -> Ipv6Addr {
    let j = i.wrapping_mul(11) & 0xffff;
    Ipv6Addr::new(0x3fff, ((j >> 4) & 0x0fff) as u16, ((j & 0xf) << 12) as u16, 0, 0, 0, 0, 0)
}

/// The `i`-th generated IPv6 /48 (distinct for i < 2^15), from
/// 2001:db8:1000::/48 to 2001:db8:8fff::/48: apart from the exact
/// addresses' 2001:db8:1::/48 and the /64s' 2001:db8:2::/48.
pub fn v6_p48(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x1000 + (i.wrapping_mul(13) & 0x7fff) as u16, 0, 0, 0, 0, 0)
}

/// Section 3e's lists: `v4` exact IPv4 addresses (up to 2^24), `v6` exact
/// IPv6 addresses and `prefixes` prefixes of six lengths (IPv4 /16, /24,
/// /28: 4%, 30%, 8%; IPv6 /36, /48, /64: 20%, 18%, 20%; up to 100k), each
/// entry written by `line`, IPv4 first.
pub fn scale_entries(v4: u32, v6: u32, prefixes: u32, mut line: impl FnMut(std::fmt::Arguments<'_>)) {
    let share = |pct: u32| prefixes * pct / 100;
    let (a, b, c, d, e) = (share(4), share(30), share(8), share(20), share(18));
    let f = prefixes - a - b - c - d - e;
    // Each kind: how many, the i-th address, the prefix length after it.
    fn kind<A: std::fmt::Display>(
        n: u32,
        addr: fn(u32) -> A,
        len: &str,
        line: &mut impl FnMut(std::fmt::Arguments<'_>),
    ) {
        for i in 0..n {
            line(format_args!("{}{len}", addr(i)));
        }
    }
    kind(v4, v4_wide, "", &mut line);
    kind(a, v4_p16, "/16", &mut line);
    kind(b, v4_prefix, "/24", &mut line);
    kind(c, v4_p28, "/28", &mut line);
    kind(v6, v6_exact, "", &mut line);
    kind(d, v6_p36, "/36", &mut line);
    kind(e, v6_p48, "/48", &mut line);
    kind(f, v6_prefix, "/64", &mut line);
}

/// A blocklist as text entries, by kind.
#[derive(Default, Clone)]
pub struct Set {
    pub v4: Vec<String>,
    pub v4_prefixes: Vec<String>,
    pub v6: Vec<String>,
    pub v6_prefixes: Vec<String>,
}

impl Set {
    /// `n` exact IPv4 addresses.
    pub fn exact_v4(n: u32) -> Set {
        Set { v4: (0..n).map(|i| v4_exact(i).to_string()).collect(), ..Set::default() }
    }

    /// `n` entries: 40% exact IPv4, 10% IPv4 /24, 40% exact IPv6, 10% IPv6 /64.
    pub fn mixed(n: u32) -> Set {
        let (exact, prefixes) = (n * 2 / 5, n / 10);
        Set {
            v4: (0..exact).map(|i| v4_exact(i).to_string()).collect(),
            v4_prefixes: (0..prefixes).map(|i| format!("{}/24", v4_prefix(i))).collect(),
            v6: (0..exact).map(|i| v6_exact(i).to_string()).collect(),
            v6_prefixes: (0..prefixes).map(|i| format!("{}/64", v6_prefix(i))).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v4_prefixes.len() + self.v6.len() + self.v6_prefixes.len()
    }

    fn all(&self) -> impl Iterator<Item = &String> {
        self.v4.iter().chain(&self.v4_prefixes).chain(&self.v6).chain(&self.v6_prefixes)
    }

    /// icmpguard's configuration file, one entry a line.
    pub fn toml(&self, extra_lines: &[String], pin_dir: &str, socket: &str, events: &str) -> String {
        let mut t = String::with_capacity(self.len() * 20 + 256);
        let _ = writeln!(t, "interfaces = [\"{}\"]\npin_dir = \"{pin_dir}\"\nblock = [", super::world::HOST_IF);
        for e in self.all().chain(extra_lines) {
            let _ = writeln!(t, "  \"{e}\",");
        }
        // Tables last: a key after a table header belongs to the table.
        let _ = writeln!(t, "]\n\n{events}\n[syslog]\nsocket = \"{socket}\"");
        t
    }

    /// The same sets for `nft -f`, with the rules that use them.
    pub fn nft(&self) -> String {
        let mut t = String::with_capacity(self.len() * 20 + 512);
        t.push_str("table inet icmpbench {\n");
        let interval = !self.v4_prefixes.is_empty() || !self.v6_prefixes.is_empty();
        let flags = if interval { " flags interval;" } else { "" };
        for (name, kind, a, b) in
            [("v4", "ipv4_addr", &self.v4, &self.v4_prefixes), ("v6", "ipv6_addr", &self.v6, &self.v6_prefixes)]
        {
            if a.is_empty() && b.is_empty() {
                continue;
            }
            let _ = writeln!(t, "  set {name} {{\n    type {kind};{flags}\n    elements = {{");
            for e in a.iter().chain(b) {
                let _ = writeln!(t, "      {e},");
            }
            t.push_str("    }\n  }\n");
        }
        t.push_str("  chain input {\n    type filter hook input priority 0; policy accept;\n");
        if !self.v4.is_empty() || !self.v4_prefixes.is_empty() {
            t.push_str("    ip saddr @v4 icmp type { echo-request, echo-reply } drop\n");
        }
        if !self.v6.is_empty() || !self.v6_prefixes.is_empty() {
            t.push_str("    ip6 saddr @v6 icmpv6 type { echo-request, echo-reply } drop\n");
        }
        t.push_str("  }\n}\n");
        t
    }

    /// The same sets for `ipset restore`.
    pub fn ipset(&self) -> String {
        let mut t = String::with_capacity(self.len() * 20 + 256);
        let max = (self.len() * 2).max(65536);
        let interval = !self.v4_prefixes.is_empty() || !self.v6_prefixes.is_empty();
        let kind = if interval { "hash:net" } else { "hash:ip" };
        for (name, family, a, b) in
            [("v4", "inet", &self.v4, &self.v4_prefixes), ("v6", "inet6", &self.v6, &self.v6_prefixes)]
        {
            if a.is_empty() && b.is_empty() {
                continue;
            }
            let size = (a.len() + b.len()).next_power_of_two().max(1024);
            let _ = writeln!(t, "create {name} {kind} family {family} hashsize {size} maxelem {max}");
            for e in a.iter().chain(b) {
                let _ = writeln!(t, "add {name} {e}");
            }
        }
        t
    }
}

fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = b.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while s > 0xffff {
        s = (s >> 16) + (s & 0xffff);
    }
    !(s as u16)
}

/// A 60-byte Ethernet frame: an ICMP echo request from `src` to `dst`,
/// with correct checksums (the stack on the receiving side checks them).
pub fn echo_frame(dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut icmp = vec![8u8, 0, 0, 0, 0, 1, 0, 1];
    icmp.extend_from_slice(&[0x61; 18]);
    let c = csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}
