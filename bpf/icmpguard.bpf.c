// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * icmpguard: drop ICMP to and from blocked addresses.
 *
 * The programs share one classifier and one set of maps:
 *   icmpguard_xdp         XDP, ingress: sees what arrives on the interface;
 *   icmpguard_xdp_atomic  the same for kernels from 5.12 to 5.17 (no
 *                         bpf_xdp_load_bytes, see parse.h);
 *   icmpguard_xdp_compat  the same for kernels before 5.12 (also no
 *                         compare-and-swap for the rate limit, see gcra);
 *                         user space loads one of the three;
 *   icmpguard_tcx         egress, as a tcx link (6.6+) or a tc clsact
 *                         filter: sees what the host itself sends, so that
 *                         a ping to a blocked address never leaves it.
 *
 * A packet is dropped when it is ICMP/ICMPv6 of a type the policy covers and
 * its source or destination is blocked: an exact address, or a prefix of one
 * of the table lengths, in the family's open-addressing table (a memory-
 * mapped array, icmpguard.h), or a prefix of another length in the family's
 * LPM trie; unless its source or destination is allowed (allow entries live
 * in the same tables, marked by IG_ID_ALLOW). An echo request arriving from
 * a source over the echo rate limit is dropped too (`limits`). In a dry run
 * nothing is dropped: the verdict says it would have been. Everything else
 * passes, and non-ICMP traffic passes after a few header reads.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "icmpguard.h"
#include "parse.h"

/* ICMP types (RFC 792, RFC 4443) that the policy talks about. */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ICMP_ECHO 8
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129
#define NDISC_ROUTER_SOLICITATION 133
#define NDISC_REDIRECT 137


/*
 * The rule maps. Sizes are placeholders: user space sets max_entries from
 * the blocklist before loading and grows them by migrating to new maps.
 */
/* The address tables (see icmpguard.h): 2^v4_bits, 2^v6_bits slots. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ig_v4_slot);
} v4_exact SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ig_v6_slot);
} v6_exact SEC(".maps");

/* The hints (see enum ig_hint), written by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 3 * (1 << IG_HINT_BITS) / 8);
	__type(key, __u32);
	__type(value, __u64);
} hints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct ig_v4_lpm_key);
	__type(value, struct ig_rule);
} v4_lpm SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct ig_v6_lpm_key);
	__type(value, struct ig_rule);
} v6_lpm SEC(".maps");

/*
 * Drops per rule, indexed by ig_rule.id. A plain array whose value holds
 * drop_slots counters: user space sets value_size to 8 * drop_slots before
 * loading and sums the slots. Unlike a per-CPU array it is a single
 * allocation, so creating it for a million rules takes milliseconds, not
 * seconds; and its size is bounded, not one counter per CPU whatever the
 * list (see count_drop). (No BTF value type: its size is set at load.)
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u64));
} rule_drops SEC(".maps");

/* Possible CPUs, set by user space before loading. */
const volatile __u32 nr_cpus = 1;

/*
 * Counters of each rule in rule_drops, set by user space before loading:
 * nr_cpus (one per CPU), or a power of two below it (shared by the CPUs;
 * src/kernel/sizes.rs, drop_slots).
 */
const volatile __u32 drop_slots = 1;

/*
 * Nanoseconds of a jiffy (the resolution of CLOCK_MONOTONIC_COARSE), set
 * by user space before loading; 0 when it could not tell. The rate limit's
 * clock (limit_clock).
 */
const volatile __u32 ns_per_jiffy = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ig_settings);
} settings SEC(".maps");

/* One entry per direction (enum ig_direction). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct ig_counters);
} counters SEC(".maps");

/*
 * The echo rate limiter's buckets in sets of IG_LIMIT_WAYS sources (see
 * icmpguard.h); user space sets max_entries from `[limit] sources`. Shared
 * by every CPU, so that a source whose packets land on two CPUs has one
 * bucket, not two. An array, probed without a helper call.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ig_limit_set);
} limits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ig_budget);
} budget SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ig_meta);
} meta SEC(".maps");

/*
 * ICMPGUARD_TEST_VARIANT builds a program whose ring buffer has another
 * size: what an upgrade that changes a map definition looks like. The test
 * suite builds it to prove that such an upgrade migrates without a gap.
 */
#ifdef ICMPGUARD_TEST_VARIANT
#define EVENTS_RING_BYTES (1 << 21)
#else
#define EVENTS_RING_BYTES (1 << 20)
#endif

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_RING_BYTES);
} events SEC(".maps");

/* Makes the event record part of the object's BTF, hence of the skeleton. */
const volatile struct ig_event ig_event_abi = {};
const volatile enum ig_hash_mul ig_hash_mul_abi = IG_HASH_MUL_HI;
const volatile enum ig_slot_tag ig_slot_tag_abi = IG_SLOT_EMPTY;
/* Every enum of icmpguard.h, into the BTF (see there). */
const volatile enum ig_abi ig_abi_abi = ICMPGUARD_ABI_VERSION;
const volatile enum ig_reason ig_reason_abi = IG_REASON_NONE;
const volatile enum ig_log ig_log_abi = IG_LOG_NONE;
const volatile enum ig_verdict ig_verdict_abi = IG_PASS;
const volatile enum ig_direction ig_direction_abi = IG_INGRESS;
const volatile enum ig_match ig_match_abi = IG_MATCH_NONE;
const volatile enum ig_egress_action ig_egress_action_abi = IG_EGRESS_PASS;
const volatile enum ig_hint ig_hint_abi = IG_HINT_EXACT;

/*
 * Whether the policy (the type bitmaps of the settings) drops this message
 * for a blocked address.
 *
 * Neighbour discovery (ICMPv6 133-137) is never dropped: without it the host
 * cannot resolve the link-layer address of a blocked neighbour, and non-ICMP
 * traffic to it would break too. Fragmentation-needed and packet-too-big are
 * never dropped: path-MTU discovery depends on them, and dropping them
 * black-holes TCP connections with that peer (RFC 2923). User space never
 * sets their bits; this holds even if it did.
 */
static __always_inline int droppable(struct ig_settings *s, __u8 family, __u8 type, __u8 code)
{
	__u32 word, bit = 1U << (type & 31);

	if (family == 4) {
		word = s->v4_types[(type >> 5) & (IG_TYPE_WORDS - 1)];
		return (word & bit) && !(type == ICMP_DEST_UNREACH && code == ICMP_FRAG_NEEDED);
	}
	word = s->v6_types[(type >> 5) & (IG_TYPE_WORDS - 1)];
	return (word & bit) && type != ICMPV6_PKT_TOOBIG &&
	       !(type >= NDISC_ROUTER_SOLICITATION && type <= NDISC_REDIRECT);
}

/* A rule that matched: its id and its prefix length. */
struct hit {
	__u32 id;
	__u32 prefixlen;
};

union v4_slot {
	struct ig_v4_slot s;
	__u64 word;
};

union v6_slot {
	struct ig_v6_slot s;
	__u64 w[3];
};

/*
 * An address as the tables key it: IPv4 in the low 32 bits of w[0], as
 * the packet carries it; IPv6 in both words, in memory order.
 */
struct key {
	__u64 w[2];
};

/*
 * What a slot of the `family` table says about (key, len): 1 found (id
 * set), 0 go on, -1 absent. `key` is the address masked to `len`. The one
 * place where the two slot layouts of icmpguard.h differ; `family` is a
 * constant wherever this is inlined, so each program keeps one branch.
 */
static __always_inline int probe(__u8 family, __u32 idx, const struct key *k, __u32 len, __u32 *id)
{
	if (family == 4) {
		union v4_slot *slot = bpf_map_lookup_elem(&v4_exact, &idx);
		union v4_slot v;

		if (!slot)
			return -1;
		/* One 8-byte load: address and tag of the same write. */
		v.word = *(volatile __u64 *)&slot->word;
		if (v.s.tag == IG_SLOT_EMPTY)
			return -1;
		if (v.s.tag != IG_SLOT_TOMBSTONE && v.s.addr == (__u32)k->w[0] &&
		    (v.s.tag & ((1U << IG_V4_LEN_BITS) - 1)) == len) {
			*id = (v.s.tag >> IG_V4_LEN_BITS) - 1;
			return 1;
		}
		return 0;
	} else {
		union v6_slot *slot = bpf_map_lookup_elem(&v6_exact, &idx);
		__u32 tag;

		if (!slot)
			return -1;
		/* The tag first: once it names a rule, the address is written. */
		tag = *(volatile __u32 *)&slot->s.tag;
		if (tag == IG_SLOT_EMPTY)
			return -1;
		if (tag != IG_SLOT_TOMBSTONE && slot->s.prefixlen == len && slot->w[0] == k->w[0] &&
		    slot->w[1] == k->w[1]) {
			*id = tag - IG_SLOT_FIRST_ID;
			return 1;
		}
		return 0;
	}
}

/* The first probes are inlined: nearly every lookup ends within them. */
#define NEAR_PROBES 4

/* The rest of a long probe sequence: the rule id plus one, or 0. */
static __always_inline int table_far(__u8 family, __u64 a0, __u64 a1, __u32 len, __u32 home, __u32 mask)
{
	struct key k = { .w = { a0, a1 } };
	__u32 i, id = 0;

	/* Unrolled: without CAP_PERFMON the verifier also walks a loop's exit
	 * branch as a mispredicted one, and a counted loop then never ends. */
#pragma unroll
	for (i = NEAR_PROBES; i < IG_MAX_PROBE; i++) {
		int r = probe(family, (home + i) & mask, &k, len, &id);

		if (r > 0)
			return id + 1;
		if (r < 0)
			return 0;
	}
	return 0;
}

/*
 * Global functions, one per family, so that the verifier walks each far
 * loop once, not at every call site (its cost, a real call, is paid only
 * by the rare long sequences). They take scalars: what a global function
 * may be given.
 */
__noinline int v4_table_far(__u64 a0, __u32 len, __u32 home, __u32 mask)
{
	return table_far(4, a0, 0, len, home, mask);
}

__noinline int v6_table_far(__u64 a0, __u64 a1, __u32 len, __u32 home, __u32 mask)
{
	return table_far(6, a0, a1, len, home, mask);
}

/*
 * The home slot of (key, len), as icmpguard.h defines it: one 64-bit
 * multiplication for IPv4, two for IPv6; the top `bits` bits.
 */
static __always_inline __u32 table_home(__u8 family, __u32 seed, const struct key *k, __u32 len, __u32 bits)
{
	__u64 h;

	if (family == 4) {
		h = ((__u64)((__u32)k->w[0] ^ seed) << 32 | len) * IG_HASH_MUL;
	} else {
		h = (k->w[0] ^ ((__u64)seed << 32 | seed)) * IG_HASH_MUL;
		h = (h ^ k->w[1] ^ len) * IG_HASH_MUL;
	}
	return h >> (64 - bits);
}

/* Looks (key, len) up in the family's table: at most IG_MAX_PROBE slots. */
static __always_inline int table_lookup(struct ig_settings *s, __u8 family, const struct key *k, __u32 len,
					struct hit *hit)
{
	__u32 bits = family == 4 ? s->v4_bits : s->v6_bits;
	__u32 seed = family == 4 ? s->v4_seed : s->v6_seed;
	__u32 mask, home, i, id = 0;
	int r;

	if (bits == 0 || bits > 31)
		return 0;
	mask = (1U << bits) - 1;
	home = table_home(family, seed, k, len, bits);
#pragma unroll
	for (i = 0; i < NEAR_PROBES; i++) {
		r = probe(family, (home + i) & mask, k, len, &id);
		if (r < 0)
			return 0;
		if (r > 0)
			goto found;
	}
	if (family == 4)
		r = v4_table_far(k->w[0], len, home, mask);
	else
		r = v6_table_far(k->w[0], k->w[1], len, home, mask);
	if (!r)
		return 0;
	id = r - 1;
found:
	hit->id = id;
	hit->prefixlen = len;
	return 1;
}

static __always_inline int from_rule(struct ig_rule *rule, struct hit *hit)
{
	if (!rule)
		return 0;
	hit->id = rule->id;
	hit->prefixlen = rule->prefixlen;
	return 1;
}

/* `addr` masked to `len`, as the key's words sit in memory. */
static __always_inline void masked(__u8 family, const struct key *addr, __u32 len, struct key *out)
{
	if (family == 4) {
		out->w[0] = len ? (__u32)addr->w[0] & bpf_htonl(0xFFFFFFFFU << (32 - len)) : 0;
		out->w[1] = 0;
	} else if (len <= 64) {
		out->w[0] = addr->w[0] & (len ? bpf_cpu_to_be64(~0ULL << (64 - len)) : 0);
		out->w[1] = 0;
	} else {
		out->w[0] = addr->w[0];
		out->w[1] = addr->w[1] & bpf_cpu_to_be64(~0ULL << (128 - len));
	}
}

/*
 * The hint byte of `bucket` in `part` of the hints map (icmpguard.h, enum
 * ig_hint): which lookups can find anything there. All bits when
 * unreadable.
 */
static __always_inline __u32 hint_byte(__u32 part, __u32 bucket)
{
	__u32 word = part * ((1U << IG_HINT_BITS) / 8) + bucket / 8;
	__u64 *w = bpf_map_lookup_elem(&hints, &word);

	if (!w)
		return 0xFF;
	return (*w >> ((bucket % 8) * 8)) & 0xFF;
}

/* The IPv6 bucket of the /`len` of the address whose first 8 bytes are w0. */
static __always_inline __u32 v6_bucket(__u64 w0, __u32 len)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	__u64 net = w0 & ((1ULL << len) - 1);
#else
	__u64 net = w0 & ~((1ULL << (64 - len)) - 1);
#endif
	return (net * IG_HASH_MUL) >> (64 - IG_HINT_BITS);
}

/*
 * The hint of `addr` (icmpguard.h, enum ig_hint): which lookups can find
 * anything for it. All bits when unreadable.
 */
static __always_inline __u32 hint_of(__u8 family, const struct key *addr)
{
	if (family == 4)
		return hint_byte(0, (__u16)addr->w[0]);
	return hint_byte(1, v6_bucket(addr->w[0], IG_HINT_V6_LONG)) |
	       hint_byte(2, v6_bucket(addr->w[0], IG_HINT_V6_SHORT));
}

/*
 * The exact address, then the table's prefix lengths (longest first),
 * then the trie (the other, shorter lengths): the most specific rule. The
 * hint of the address's bucket skips the lookups that cannot match.
 */
static __always_inline int match_family(struct ig_settings *s, __u8 family, const struct key *addr,
					struct hit *hit)
{
	__u32 exact = family == 4 ? 32 : 128;
	__u32 hint = hint_of(family, addr);
	int k;

	if ((hint & IG_HINT_EXACT) && table_lookup(s, family, addr, exact, hit))
		return 1;
#pragma unroll
	for (k = 0; k < IG_TABLE_LENS; k++) {
		__u32 len = family == 4 ? s->v4_lens[k] : s->v6_lens[k];
		struct key net;

		if (len >= exact || !(hint & (IG_HINT_LEN << k)))
			continue; /* unused (IG_NO_LEN), or nothing of it here */
		masked(family, addr, len, &net);
		if (table_lookup(s, family, &net, len, hit))
			return 1;
	}
	if (!(hint & IG_HINT_TRIE))
		return 0;
	if (family == 4 && s->v4_prefixes) {
		struct ig_v4_lpm_key key = { .prefixlen = 32, .addr = (__u32)addr->w[0] };

		return from_rule(bpf_map_lookup_elem(&v4_lpm, &key), hit);
	}
	if (family == 6 && s->v6_prefixes) {
		struct ig_v6_lpm_key key = { .prefixlen = 128 };

		__builtin_memcpy(key.addr, addr->w, 16);
		return from_rule(bpf_map_lookup_elem(&v6_lpm, &key), hit);
	}
	return 0;
}

/* ::ffff:a.b.c.d (RFC 4291 2.5.5.2) is the IPv4 address a.b.c.d. */
static __always_inline int v4_mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000FFFF);
}

/*
 * The key an address of the packet is looked up by (`family`: the packet's):
 * IPv4 and IPv4-mapped IPv6 (::ffff:a.b.c.d) are the IPv4 address, whose
 * rules and hints they share. Returns the key's family, 4 or 6.
 */
static __always_inline __u8 addr_key(__u8 family, const __u64 *addr, struct key *k)
{
	const __u32 *w = (const __u32 *)addr;

	if (family == 4) {
		k->w[0] = w[0];
		return 4;
	}
	if (v4_mapped((const __u8 *)addr)) {
		k->w[0] = w[3];
		return 4;
	}
	k->w[0] = addr[0];
	k->w[1] = addr[1];
	return 6;
}

/*
 * Matches one address of the packet. IPv4 and IPv4-mapped IPv6 share one
 * path to the IPv4 rules (one inlined copy of the table's probe loop per
 * address, which keeps the verifier's work small).
 */
static __always_inline int match_addr(struct ig_settings *s, __u8 family, const __u64 *addr,
				      struct hit *hit)
{
	struct key k = {};

	if (addr_key(family, addr, &k) == 6)
		return match_family(s, 6, &k, hit);
	return match_family(s, 4, &k, hit);
}

/* What lookup() returns for an address no entry covers. */
#define LOOKUP_NONE 0

/*
 * The most specific entry that covers an address (a0, a1: its 16 bytes,
 * IPv4 in the first 4): 1 << 63 | id << 8 | prefix length, or LOOKUP_NONE.
 * A global function: the verifier walks the lookups once, not once for
 * every way the classifier can reach them (which, without CAP_PERFMON,
 * is more than it allows). It takes and returns scalars, what a global
 * function may on every kernel from 5.10.
 */
__noinline __u64 lookup(__u64 a0, __u64 a1, __u32 family)
{
	__u64 addr[2] = { a0, a1 };
	struct ig_settings *s;
	struct hit hit = {};
	__u32 zero = 0;

	s = bpf_map_lookup_elem(&settings, &zero);
	if (!s || !match_addr(s, family == 4 ? 4 : 6, addr, &hit))
		return LOOKUP_NONE;
	return 1ULL << 63 | (__u64)hit.id << 8 | (hit.prefixlen & 0xFF);
}

/* The hit a lookup() found, if it found one. */
static __always_inline int found(__u64 r, struct hit *hit)
{
	if (r == LOOKUP_NONE)
		return 0;
	hit->id = (__u32)(r >> 8);
	hit->prefixlen = r & 0xFF;
	return 1;
}

/*
 * What the classifier learnt about a packet. The addresses are copied out
 * (4 or 16 bytes each; the rest is never read): pointers into the packet
 * at family-dependent offsets lead the compiler to pointer arithmetic with
 * a register, which the verifier allows only with CAP_PERFMON.
 */
struct packet {
	__u64 src[2]; /* 8-byte aligned: the IPv6 table compares words */
	__u64 dst[2];
	__u8 family;
	__u8 type;
	__u8 code;
};

/* The hint of the packet's destination, as lookup() would take it. */
static __always_inline __u32 dst_hint(const struct packet *p)
{
	struct key k = {};

	if (addr_key(p->family, p->dst, &k) == 6)
		return hint_of(6, &k);
	return hint_of(4, &k);
}

/*
 * Whether this CPU may queue one more event in the current second. The
 * daemon starts each second by zeroing the budget, so the path every
 * flooded packet takes reads no clock.
 */
static __always_inline int budget_take(struct ig_settings *s, struct ig_counters *cnt,
				       int *first)
{
	__u32 zero = 0;
	struct ig_budget *b = bpf_map_lookup_elem(&budget, &zero);

	if (!b)
		return 0;
	if (s->event_budget && b->used >= s->event_budget) {
		cnt->events_suppressed++;
		return 0;
	}
	*first = b->used == 0;
	b->used++;
	return 1;
}

static __always_inline void copy_addr(__u8 *dst, const __u8 *src, __u8 family)
{
	if (family == 4) {
		__builtin_memcpy(dst, src, 4);
		__builtin_memset(dst + 4, 0, 12);
	} else {
		__builtin_memcpy(dst, src, 16);
	}
}

/* What the classifier decided about a packet, and why. */
struct decision {
	struct hit hit; /* the rule, for IG_REASON_BLOCK and IG_REASON_ALLOW */
	__u8 verdict;   /* enum ig_verdict */
	__u8 reason;    /* enum ig_reason */
	__u8 match;     /* enum ig_match */
};

static __always_inline void emit(struct ig_settings *s, struct ig_counters *cnt,
				 struct packet *p, void *ctx, __u8 direction, struct decision *d)
{
	struct ig_event *e;
	int first = 0;
	__u64 flags;

	if (s->log == IG_LOG_NONE || (s->log == IG_LOG_BLOCKED && d->verdict == IG_PASS))
		return;
	if (!budget_take(s, cnt, &first))
		return;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		cnt->events_lost++;
		return;
	}
	e->timestamp_ns = bpf_ktime_get_ns();
	/* With `direction` a constant, each program keeps only its branch. */
	if (direction == IG_INGRESS)
		e->ifindex = ((struct xdp_md *)ctx)->ingress_ifindex;
	else
		e->ifindex = ((struct __sk_buff *)ctx)->ifindex;
	e->family = p->family;
	e->direction = direction;
	e->verdict = d->verdict;
	e->match = d->match;
	e->icmp_type = p->type;
	e->icmp_code = p->code;
	e->reason = d->reason;
	if (d->reason == IG_REASON_BLOCK || d->reason == IG_REASON_ALLOW) {
		e->rule_id = d->hit.id;
		e->rule_prefixlen = d->hit.prefixlen;
	} else {
		e->rule_id = 0;
		e->rule_prefixlen = 0;
	}
	copy_addr(e->src, (const __u8 *)p->src, p->family);
	copy_addr(e->dst, (const __u8 *)p->dst, p->family);
	cnt->events_queued++;

	/*
	 * Wake the daemon for the first event of a CPU's second (a lone ping is
	 * logged at once) and when a batch has piled up; otherwise let events
	 * accumulate, so that a flood does not cost a wakeup per packet. The
	 * daemon also drains the ring on a short timer.
	 */
	if (first || bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= s->wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	else
		flags = BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(e, flags);
}

/*
 * Counts a drop for the rule that matched. With a slot per CPU, a plain
 * add in this CPU's own; with fewer slots (a long list on a machine of
 * many CPUs), an atomic add in slot cpu mod drop_slots, which other CPUs
 * share. drop_slots and nr_cpus are load-time constants: each program
 * keeps one branch, and the verifier bounds the index.
 */
static __always_inline void count_drop(struct hit *hit)
{
	__u32 id = hit->id;
	__u64 *slots = bpf_map_lookup_elem(&rule_drops, &id);
	__u32 cpu = bpf_get_smp_processor_id();

	if (!slots)
		return;
	if (drop_slots >= nr_cpus) {
		if (cpu < nr_cpus)
			slots[cpu]++;
	} else {
		cpu &= drop_slots - 1;
		if (cpu < drop_slots)
			__sync_fetch_and_add(&slots[cpu], 1);
	}
}

static __always_inline int is_echo_request(__u8 family, __u8 type)
{
	return family == 4 ? type == ICMP_ECHO : type == ICMPV6_ECHO_REQUEST;
}

/*
 * Whether the rate limit admits one more echo request from the packet's
 * source. Every CPU updates the source's one bucket: the time moves on
 * with an atomic add (what every kernel from 5.10 has), and a request
 * whose add took the time past the tolerance takes it back and is refused,
 * so CPUs racing on a source can refuse a request too many, never admit
 * one. An idle bucket starts over at `now`: where `atomics` (a constant of
 * each program: BPF's compare-and-swap and fetching add, 5.12+) with a
 * compare-and-swap, and a CPU that loses it charges the bucket another CPU
 * has just started; on older kernels with a plain store, which a CPU
 * delayed since it read the time can make after others have charged the
 * bucket (they are forgiven: the race icmpguard.toml(5) describes). The
 * clock is limit_clock's.
 */
static __always_inline int gcra(struct ig_limit_way *w, __u64 now, __u64 interval, __u64 tolerance, __u8 atomics)
{
	__u64 tat = *(volatile __u64 *)&w->tat;
	__s64 ahead = (__s64)(tat - now);
	__s64 bound = (__s64)(tolerance + interval * (nr_cpus + 1));

	/*
	 * Idle (the bucket is full), or further ahead than the racing CPUs can
	 * ever take it (a bucket from before a change of the limit): start over.
	 */
	if (ahead <= 0 || ahead > bound) {
		if (!atomics) {
			w->tat = now + interval;
			return 1;
		}
		__u64 seen = __sync_val_compare_and_swap(&w->tat, tat, now + interval);

		if (seen == tat)
			return 1;
		/* Another CPU moved the time first: this request is charged as
		 * any other, unless the bucket is still idle. */
		ahead = (__s64)(seen - now);
		if (ahead <= 0 || ahead > bound)
			return 1;
	}
	if ((__u64)ahead > tolerance)
		return 0;
	if (atomics) {
		/* The time this add left, without a second load. */
		tat = __sync_fetch_and_add(&w->tat, interval) + interval;
	} else {
		__sync_fetch_and_add(&w->tat, interval);
		tat = *(volatile __u64 *)&w->tat;
	}
	if ((__s64)(tat - now) > (__s64)(tolerance + interval)) {
		/* Other CPUs got there first: give the time back. */
		__sync_fetch_and_add(&w->tat, -interval);
		return 0;
	}
	return 1;
}

/*
 * The rate limit's clock, in nanoseconds: the jiffies times the length of
 * one (bpf_jiffies64, which the JIT turns into a load of the kernel's
 * counter: no helper call), on every kernel from 5.10. Without the
 * length, bpf_ktime_get_coarse_ns where `atomics` (a constant of each
 * program: the helper came in 5.11, so every kernel with BPF atomics,
 * 5.12+, has it; the same ticks, a helper call), else bpf_ktime_get_ns
 * (the clocksource, 25 ns in a KVM guest). The tick resolution (4 ms at Debian's HZ=250) lets a
 * source's requests through in tick-sized bursts within the tolerance, at
 * the same rate. A limit bucket written by another clock (before an
 * upgrade) looks idle or too far ahead to gcra, which starts it over.
 */
static __always_inline __u64 limit_clock(__u8 atomics)
{
	if (ns_per_jiffy)
		return bpf_jiffies64() * (__u64)ns_per_jiffy;
	return atomics ? bpf_ktime_get_coarse_ns() : bpf_ktime_get_ns();
}

/*
 * The packet's source's way in its set of `limits` (icmpguard.h), or, new
 * there, the way least ahead, given to it; then the bucket's verdict.
 */
static __always_inline int limit_admits(struct ig_settings *s, struct packet *p, __u8 atomics)
{
	const __u32 *w = (const __u32 *)p->src;
	__u64 now = limit_clock(atomics);
	__u64 interval = s->limit_interval_ns, tolerance = s->limit_tolerance_ns;
	__u32 idx, v4[2] = { 0xFFFFFFFF, 0 };
	struct ig_limit_way *way = NULL;
	struct ig_limit_set *set;
	__u64 key, least;
	int i;

	/* Chosen by branches, not by a pointer into the address: the
	 * verifier refuses the latter without CAP_PERFMON. */
	if (p->family == 4) {
		v4[1] = w[0];
	} else if (v4_mapped((const __u8 *)p->src)) {
		v4[1] = w[3];
	} else {
		key = p->src[0];
		goto look;
	}
	__builtin_memcpy(&key, v4, 8);
look:
	idx = (((key * IG_HASH_MUL) >> 32) * s->limit_sets) >> 32;
	set = bpf_map_lookup_elem(&limits, &idx);
	if (!set)
		return 1;
	/*
	 * Each way's address is taken where its index is a constant (the
	 * barrier keeps the compiler from computing it from a register after
	 * the branches meet: pointer arithmetic with a register, which the
	 * verifier refuses without CAP_PERFMON).
	 */
#pragma unroll
	for (i = 0; i < IG_LIMIT_WAYS; i++) {
		if (set->way[i].key == key) {
			way = &set->way[i];
			asm volatile("" : "+r"(way));
			break;
		}
	}
	if (!way) {
		/* A source not in its set takes the way least ahead. */
		way = &set->way[0];
		least = way->tat;
#pragma unroll
		for (i = 1; i < IG_LIMIT_WAYS; i++) {
			if ((__s64)(set->way[i].tat - least) < 0) {
				way = &set->way[i];
				asm volatile("" : "+r"(way));
				least = way->tat;
			}
		}
		way->key = key;
		if (!atomics) {
			way->tat = now + interval;
			return 1;
		}
		/* Unless another CPU took or charged the way since it was
		 * chosen (this source's first requests on several CPUs): then
		 * this request is charged to the way as it is now. */
		if (__sync_val_compare_and_swap(&way->tat, least, now + interval) == least)
			return 1;
	}
	return gcra(way, now, interval, tolerance, atomics);
}

/*
 * The whole decision for one packet; returns enum ig_verdict. `ctx` is the
 * program's context, read only when an event needs the interface.
 *
 * A packet whose source or destination is allowed passes; otherwise one
 * whose source or destination is blocked is dropped (if its type is in the
 * policy), and an echo request on ingress goes through the rate limit. One
 * lookup per address says allowed, blocked or neither (the most specific
 * entry: user space leaves out block entries inside an allowed prefix);
 * the destination is looked at only when the source settles nothing, or
 * when allow entries could still save a blocked source.
 */
static __always_inline int classify(void *ctx, void *data, void *data_end, __u8 direction,
				    __u8 xdp_load_bytes, __u8 atomics)
{
	struct cursor c = { .pos = data, .end = data_end, .ctx = ctx, .egress = direction == IG_EGRESS,
			    .xdp_load_bytes = xdp_load_bytes };
	struct ig_settings *s;
	struct ig_counters *cnt;
	struct ig_icmphdr icmp = {};
	struct decision d = { .verdict = IG_PASS };
	struct hit dst = {};
	int want_block, want_limit, src_found, dst_found = 0;
	struct packet p;
	__u32 zero = 0, dir = direction;
	int proto;

	/*
	 * The addresses are copied out before anything is read by offset:
	 * on kernels without bpf_xdp_load_bytes such a read moves the start
	 * of the packet, which voids the header pointers (parse.h).
	 */
	proto = parse_eth(&c);
	if (proto == ETH_P_IP) {
		struct ig_iphdr *ip;

		if (parse_ipv4(&c, &ip) != IPPROTO_ICMP_)
			return IG_PASS;
		p.family = 4;
		/* Only 4 bytes are meaningful; the rest is zeroed because the
		 * verifier wants no uninitialised stack where a 16-byte copy
		 * could look (without CAP_PERFMON). */
		p.src[0] = 0;
		p.src[1] = 0;
		p.dst[0] = 0;
		p.dst[1] = 0;
		__builtin_memcpy(p.src, &ip->saddr, 4);
		__builtin_memcpy(p.dst, &ip->daddr, 4);
	} else if (proto == ETH_P_IPV6) {
		struct ig_ipv6hdr *ip6;
		int next = parse_ipv6(&c, &ip6);

		if (next < 0)
			return IG_PASS;
		p.family = 6;
		__builtin_memcpy(p.src, ip6->saddr, 16);
		__builtin_memcpy(p.dst, ip6->daddr, 16);
		if (skip_ipv6_ext(&c, next) != IPPROTO_ICMPV6_)
			return IG_PASS;
	} else {
		return IG_PASS;
	}
	if (parse_icmp(&c, &icmp) < 0)
		return IG_PASS;

	s = bpf_map_lookup_elem(&settings, &zero);
	cnt = bpf_map_lookup_elem(&counters, &dir);
	if (!s || !cnt)
		return IG_PASS;

	p.type = icmp.type;
	p.code = icmp.code;
	cnt->icmp_seen++;

	want_block = droppable(s, p.family, p.type, p.code);
	want_limit = direction == IG_INGRESS && s->limit_interval_ns && is_echo_request(p.family, p.type);
	if (!want_block && !want_limit)
		goto out;

	src_found = found(lookup(p.src[0], p.src[1], p.family), &d.hit);
	if (src_found && (d.hit.id & IG_ID_ALLOW)) {
		d.reason = IG_REASON_ALLOW;
		d.match = IG_MATCH_SRC;
		goto out;
	}
	if (!(src_found && want_block) || s->allows) {
		/* With the source blocked, only an allow entry of the
		 * destination can change the verdict: it is looked up only
		 * where its hint shows one. */
		if (!(src_found && want_block) || (dst_hint(&p) & IG_HINT_ALLOW))
			dst_found = found(lookup(p.dst[0], p.dst[1], p.family), &dst);
		if (dst_found && (dst.id & IG_ID_ALLOW)) {
			d.hit = dst;
			d.reason = IG_REASON_ALLOW;
			d.match = IG_MATCH_DST;
			goto out;
		}
	}
	if (want_block && src_found) {
		d.reason = IG_REASON_BLOCK;
		d.match = IG_MATCH_SRC;
	} else if (want_block && dst_found) {
		d.hit = dst;
		d.reason = IG_REASON_BLOCK;
		d.match = IG_MATCH_DST;
	} else if (want_limit && !limit_admits(s, &p, atomics)) {
		d.reason = IG_REASON_LIMIT;
		d.match = IG_MATCH_SRC;
	}

out:
	if (d.reason != IG_REASON_NONE) {
		/* Three adds, not one at a chosen field: a pointer to one of
		 * several fields is arithmetic the verifier refuses without
		 * CAP_PERFMON. */
		cnt->dropped += d.reason == IG_REASON_BLOCK;
		cnt->limited += d.reason == IG_REASON_LIMIT;
		cnt->allowed += d.reason == IG_REASON_ALLOW;
		if (d.reason == IG_REASON_BLOCK)
			count_drop(&d.hit);
	}
	if (d.reason == IG_REASON_BLOCK || d.reason == IG_REASON_LIMIT)
		d.verdict = s->dry_run ? IG_WOULD_DROP : IG_DROP;
	emit(s, cnt, &p, ctx, direction, &d);
	return d.verdict;
}

/* The XDP verdict; `xdp_load_bytes` and `atomics` are constants of each program. */
static __always_inline int xdp_verdict(struct xdp_md *ctx, __u8 xdp_load_bytes, __u8 atomics)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (classify(ctx, data, data_end, IG_INGRESS, xdp_load_bytes, atomics) == IG_DROP)
		return XDP_DROP;
	return XDP_PASS;
}

SEC("xdp")
int icmpguard_xdp(struct xdp_md *ctx)
{
	return xdp_verdict(ctx, 1, 1);
}

/*
 * The same for kernels from 5.12 to 5.17, which lack bpf_xdp_load_bytes
 * (see parse.h) but have BPF's compare-and-swap (gcra); user space loads
 * this one there instead.
 */
SEC("xdp")
int icmpguard_xdp_atomic(struct xdp_md *ctx)
{
	return xdp_verdict(ctx, 0, 1);
}

/*
 * The same for kernels before 5.12, which lack both (5.10 refuses a
 * compare-and-swap even where it cannot run): user space loads this one
 * there.
 */
SEC("xdp")
int icmpguard_xdp_compat(struct xdp_md *ctx)
{
	return xdp_verdict(ctx, 0, 0);
}

/*
 * The headers of packets the host sends are in the linear part of the
 * skb (the stack builds them there), so no pull is needed: the fixed
 * headers are read in place, variable-length ones with bpf_skb_load_bytes,
 * which also reads beyond the linear part.
 */
SEC("tcx/egress")
int icmpguard_tcx(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (classify(skb, data, data_end, IG_EGRESS, 0, 0) == IG_DROP)
		return IG_EGRESS_DROP;
	return IG_EGRESS_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
