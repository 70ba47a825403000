/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Bounds-checked cursor parsers for the headers icmpguard looks at:
 * Ethernet with up to two VLAN tags, IPv4 (any header length), IPv6 with a
 * bounded walk over extension headers, and the first bytes of ICMP/ICMPv6.
 *
 * Every read is bounds-checked first; a parser returns -1 when the packet
 * is too short or not what it claims to be, and callers treat -1 as "not
 * ours": the packet passes untouched and the kernel stack decides what a
 * malformed packet deserves.
 *
 * Two ways of reading. The common layouts (Ethernet, VLAN tags, a 20-byte
 * IPv4 header, the fixed IPv6 header) sit at constant offsets and are read
 * through packet pointers. Headers of variable length (IPv4 options, IPv6
 * extension headers) move the cursor by an amount known only at run time;
 * past them the cursor keeps just the offset and reads with a load-bytes
 * helper (bpf_skb_load_bytes on egress, bpf_xdp_load_bytes on ingress),
 * which costs a helper call only on packets that carry such headers.
 *
 * bpf_xdp_load_bytes arrived in 5.18. For older kernels the object holds
 * two more XDP programs (with and without BPF atomics, for the rate
 * limit), built with the cursor's `xdp_load_bytes` a compile-time 0, that
 * reach such headers with bpf_xdp_adjust_head
 * instead (4.10+): it moves the start of the packet to just before the
 * bytes wanted (a helper may take a run-time amount, where pointer
 * arithmetic may not without CAP_PERFMON), reads them at a constant
 * offset, and moves the start back. Packet pointers taken before that are
 * void afterwards, so the classifier copies the addresses out before any
 * read by offset. User space loads one of the three. (A branch on a load-time
 * constant would not do: without CAP_PERFMON the verifier also walks the
 * branch not taken, as a mispredicted one, and would meet the unknown
 * helper there.)
 *
 * The few header layouts are written out here instead of including
 * <linux/ip.h> & co, which pull glibc's 32-bit stubs into a BPF build.
 */
#ifndef ICMPGUARD_PARSE_H
#define ICMPGUARD_PARSE_H

#include <linux/types.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8

#define IPPROTO_ICMP_ 1
#define IPPROTO_ICMPV6_ 58

/*
 * IPv6 extension headers we step over (RFC 8200 section 4), the same set
 * as xdp-tools' parser: the mobility header (RFC 6275) shares the
 * length rule of the option headers.
 */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
#define NEXTHDR_MOBILITY 135

#define VLAN_MAX_DEPTH 2
/* Enough for hop-by-hop, routing, fragment, two destination options and AH. */
#define IPV6_EXT_MAX 6

#define IP_MF 0x2000
#define IP_OFFMASK 0x1FFF
#define IP6_OFFMASK 0xFFF8

struct ig_ethhdr {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct ig_vlanhdr {
	__be16 tci;
	__be16 proto;
};

struct ig_iphdr {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
};

struct ig_ipv6hdr {
	__be32 ver_tc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

/* Common start of hop-by-hop, routing, destination-options and AH. */
struct ig_ipv6_opt {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct ig_ipv6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 id;
};

/* Type and code: all we need of ICMP and ICMPv6 alike. */
struct ig_icmphdr {
	__u8 type;
	__u8 code;
};

struct cursor {
	void *pos;      /* where the next header starts, while by_offset is 0 */
	void *end;
	__u32 off;      /* the same place, as an offset from the start of the packet */
	void *ctx;      /* the program's context, for the load-bytes helpers */
	__u8 egress;    /* which helper: bpf_skb_load_bytes (egress) or an XDP one */
	__u8 xdp_load_bytes; /* a compile-time constant: XDP may call bpf_xdp_load_bytes */
	__u8 by_offset; /* past a header of run-time length: `pos` is stale */
};

/*
 * bpf_xdp_adjust_head keeps at least an Ethernet header's length between
 * the new start and the end: the start goes that far before the bytes.
 */
#define IG_ADJUST_SLACK 14
/* The largest offset read that way: far beyond any header chain we walk. */
#define IG_ADJUST_MAX_OFF 0x3FFF

/* Reads `len` bytes at offset `off` by moving the start of the packet; 0 or -1. */
static __always_inline long load_by_adjust(struct cursor *c, __u32 off, void *buf, __u32 len)
{
	struct xdp_md *ctx = c->ctx;
	long ret = -1;
	void *data, *end;
	int delta;

	if (off < IG_ADJUST_SLACK || off > IG_ADJUST_MAX_OFF)
		return -1;
	delta = off - IG_ADJUST_SLACK;
	/* Fails, changing nothing, when the packet ends before `off`. */
	if (bpf_xdp_adjust_head(ctx, delta))
		return -1;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + IG_ADJUST_SLACK + len <= end) {
		__builtin_memcpy(buf, data + IG_ADJUST_SLACK, len);
		ret = 0;
	}
	/* Back to where the packet started: undoing a move that succeeded
	 * cannot fail. */
	bpf_xdp_adjust_head(ctx, -delta);
	return ret;
}

/* Copies `len` bytes at offset `off` of the packet; 0 or a negative error. */
static __always_inline long load_bytes(struct cursor *c, __u32 off, void *buf, __u32 len)
{
	if (c->egress)
		return bpf_skb_load_bytes(c->ctx, off, buf, len);
	if (c->xdp_load_bytes)
		return bpf_xdp_load_bytes(c->ctx, off, buf, len);
	return load_by_adjust(c, off, buf, len);
}

/* Returns the EtherType after at most VLAN_MAX_DEPTH tags, or -1. */
static __always_inline int parse_eth(struct cursor *c)
{
	struct ig_ethhdr *eth = c->pos;
	__u16 proto;
	int i;

	if ((void *)(eth + 1) > c->end)
		return -1;
	c->pos = eth + 1;
	c->off = sizeof(*eth);
	proto = eth->proto;

#pragma unroll
	for (i = 0; i < VLAN_MAX_DEPTH; i++) {
		struct ig_vlanhdr *vlan = c->pos;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > c->end)
			return -1;
		c->pos = vlan + 1;
		c->off += sizeof(*vlan);
		proto = vlan->proto;
	}
	return bpf_ntohs(proto);
}

/*
 * Returns the protocol of an IPv4 packet whose transport header follows, or
 * -1 when the header is short or malformed, or the packet is a non-first
 * fragment (it carries no ICMP header to classify).
 */
static __always_inline int parse_ipv4(struct cursor *c, struct ig_iphdr **out)
{
	struct ig_iphdr *ip = c->pos;
	__u32 hlen;

	if ((void *)(ip + 1) > c->end)
		return -1;
	if ((ip->ver_ihl >> 4) != 4)
		return -1;
	hlen = (ip->ver_ihl & 0x0F) * 4;
	if (hlen < sizeof(*ip))
		return -1;
	if (ip->frag_off & bpf_htons(IP_OFFMASK))
		return -1;
	*out = ip;
	if (hlen == sizeof(*ip))
		c->pos = ip + 1;
	else
		c->by_offset = 1; /* options: the rest is read by offset */
	c->off += hlen;
	return ip->protocol;
}

/*
 * Checks the fixed IPv6 header; returns its next-header field, or -1 when
 * the header is short or not IPv6.
 */
static __always_inline int parse_ipv6(struct cursor *c, struct ig_ipv6hdr **out)
{
	struct ig_ipv6hdr *ip6 = c->pos;

	if ((void *)(ip6 + 1) > c->end)
		return -1;
	if ((bpf_ntohl(ip6->ver_tc_flow) >> 28) != 6)
		return -1;
	c->pos = ip6 + 1;
	c->off += sizeof(*ip6);
	*out = ip6;
	return ip6->nexthdr;
}

/*
 * Returns the upper-layer protocol after stepping over at most
 * IPV6_EXT_MAX extension headers from `nexthdr`, or -1 when a header is
 * short, the chain is longer than that, or the packet is a non-first
 * fragment. Reads by offset: packet pointers taken before are void after.
 */
static __always_inline int skip_ipv6_ext(struct cursor *c, __u8 nexthdr)
{
	int i;

#pragma unroll
	for (i = 0; i < IPV6_EXT_MAX; i++) {
		/* Eight bytes: a fragment header, or the start of the others. */
		struct ig_ipv6_frag h;
		__u32 len;

		switch (nexthdr) {
		case NEXTHDR_HOP:
		case NEXTHDR_ROUTING:
		case NEXTHDR_DEST:
		case NEXTHDR_MOBILITY:
		case NEXTHDR_AUTH:
			/* Next header, then the length byte (`reserved` here). */
			if (load_bytes(c, c->off, &h, 2) < 0)
				return -1;
			if (nexthdr == NEXTHDR_AUTH)
				len = ((__u32)h.reserved + 2) * 4;
			else
				len = ((__u32)h.reserved + 1) * 8;
			nexthdr = h.nexthdr;
			break;
		case NEXTHDR_FRAGMENT:
			if (load_bytes(c, c->off, &h, sizeof(h)) < 0)
				return -1;
			if (h.frag_off & bpf_htons(IP6_OFFMASK))
				return -1;
			len = sizeof(h);
			nexthdr = h.nexthdr;
			break;
		default:
			return nexthdr;
		}
		/* Past a header of run-time length: read by offset from here. */
		c->by_offset = 1;
		c->off += len;
	}
	/* Still an extension header after the walk: too long a chain. */
	switch (nexthdr) {
	case NEXTHDR_HOP:
	case NEXTHDR_ROUTING:
	case NEXTHDR_DEST:
	case NEXTHDR_MOBILITY:
	case NEXTHDR_AUTH:
	case NEXTHDR_FRAGMENT:
		return -1;
	}
	return nexthdr;
}

static __always_inline int parse_icmp(struct cursor *c, struct ig_icmphdr *out)
{
	struct ig_icmphdr *icmp = c->pos;

	if (!c->by_offset) {
		if ((void *)(icmp + 1) > c->end)
			return -1;
		*out = *icmp;
		return 0;
	}
	return load_bytes(c, c->off, out, sizeof(*out)) < 0 ? -1 : 0;
}

#endif /* ICMPGUARD_PARSE_H */
