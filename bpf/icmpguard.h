/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The ABI between the icmpguard BPF programs and user space.
 *
 * This header is the only definition of what the kernel side and the daemon
 * share: map keys and values, the event record, the counters and the
 * constants. The Rust side uses the types that libbpf-cargo generates from
 * the BTF of the compiled object, never a hand-written copy.
 *
 * Bump ICMPGUARD_ABI_VERSION whenever a layout here changes meaning without
 * changing size; the daemon then migrates pinned maps instead of reusing
 * them (a size change is caught by the kernel's own compatibility check).
 */
#ifndef ICMPGUARD_H
#define ICMPGUARD_H

/*
 * Every enum here reaches the object's BTF through an instance in
 * icmpguard.bpf.c, so that the skeleton carries it and user space never
 * writes one of these values by hand (tests/abi.rs checks that each does).
 * Integer constants are enumerators for the same reason; IG_HASH_MUL, 64
 * bits wide, is two enumerators of 32 bits (enum ig_hash_mul), so that
 * user space need not open the object to read it.
 */
enum ig_abi {
	ICMPGUARD_ABI_VERSION = 6,
	/* IPv4 tag of a rule: (rule id + 1) << IG_V4_LEN_BITS | prefix length. */
	IG_V4_LEN_BITS = 6,
	/* Prefix lengths a table holds besides exact addresses. */
	IG_TABLE_LENS = 4,
	/* An unused entry of v4_lens/v6_lens. */
	IG_NO_LEN = 255,
	/* Slots probed at most from an entry's home slot. */
	IG_MAX_PROBE = 32,
	/*
	 * Set in the id of an allow entry wherever the maps hold ids (table
	 * slots, trie values): one lookup says allowed, blocked or neither.
	 * Rule ids stay below it; allow entries have no drop counter.
	 */
	IG_ID_ALLOW = 1 << 25,
	/* 32-bit words of a per-family bitmap of the 256 ICMP types. */
	IG_TYPE_WORDS = 8,
	/* Sources a set of the echo rate limiter holds (struct ig_limit_set). */
	IG_LIMIT_WAYS = 4,
	/* Buckets of each part of the hints (see enum ig_hint), 2^IG_HINT_BITS. */
	IG_HINT_BITS = 16,
	/* The prefix lengths of the IPv6 hint buckets (see enum ig_hint). */
	IG_HINT_V6_LONG = 48,
	IG_HINT_V6_SHORT = 32,
};

/*
 * The hints: which lookups can find anything for an address, so that an
 * address no entry covers costs few probes whatever the blocklist holds.
 * The `hints` map holds three parts of 2^IG_HINT_BITS buckets of one byte,
 * eight to a __u64 word (host order: bucket b of a part is byte b % 8 of
 * the part's word b / 8), the parts one after the other:
 *     part 0, IPv4: bucket = the address's first two bytes as a host-order
 *         __u16 (its /16);
 *     part 1, IPv6 by /48 (IG_HINT_V6_LONG), part 2, IPv6 by /32
 *         (IG_HINT_V6_SHORT): w = the address's first 8 bytes as a
 *         host-order __u64, masked to the part's first 6 or 4 bytes;
 *         bucket = (w * IG_HASH_MUL) >> (64 - IG_HINT_BITS).
 * A bucket's bits say what may cover an address of the bucket: an exact
 * entry (IG_HINT_EXACT), a prefix of table length k (IG_HINT_LEN << k, k
 * the index in v4_lens/v6_lens), a prefix in the trie (IG_HINT_TRIE), and
 * whether any of those is an allow entry (IG_HINT_ALLOW). An
 * IPv4 entry sets its bit in the bucket of every /16 it covers; an IPv6
 * entry of /48 or longer in its part-1 bucket, one from /32 to /47 in its
 * part-2 bucket, a shorter one in every part-2 bucket; an address's hint
 * is its part-0 byte, or its part-1 and part-2 bytes ORed. Bits are set
 * before the entry is written: a clear bit means that no lookup of that
 * kind can match, a set bit only that one may. User space sets bits, and
 * clears them only when a new generation is built.
 */
enum ig_hint {
	IG_HINT_EXACT = 1,
	IG_HINT_LEN = 2, /* bits 1 to IG_TABLE_LENS */
	IG_HINT_TRIE = 1 << 5,
	/* An allow entry covers addresses of the bucket (with its kind's bit). */
	IG_HINT_ALLOW = 1 << 6,
};

/* Which packets become events (`[events] log` key). */
enum ig_log {
	IG_LOG_NONE = 0,
	IG_LOG_BLOCKED = 1,
	IG_LOG_ALL = 2,
};

enum ig_verdict {
	IG_PASS = 0,
	IG_DROP = 1,
	IG_WOULD_DROP = 2, /* dry run: passed, but the policy drops it */
};

/* Why a packet was dropped, or passed although it matched. */
enum ig_reason {
	IG_REASON_NONE = 0,
	IG_REASON_BLOCK = 1, /* a block entry matched (rule_id) */
	IG_REASON_LIMIT = 2, /* its source is over the echo rate limit */
	IG_REASON_ALLOW = 3, /* an allow entry matched (rule_id): passed */
};

enum ig_direction {
	IG_INGRESS = 0,
	IG_EGRESS = 1,
};

/*
 * What the egress program returns: TCX_NEXT/TCX_DROP of tcx (6.6+), which
 * are TC_ACT_UNSPEC/TC_ACT_SHOT of a tc filter in direct-action mode.
 */
enum ig_egress_action {
	IG_EGRESS_PASS = -1,
	IG_EGRESS_DROP = 2,
};

/* Which address of the packet matched a rule. */
enum ig_match {
	IG_MATCH_NONE = 0,
	IG_MATCH_SRC = 1,
	IG_MATCH_DST = 2,
};

/* Key of the IPv4 prefix trie; addr in network byte order. */
struct ig_v4_lpm_key {
	__u32 prefixlen;
	__u32 addr;
};

/* Key of the IPv6 prefix trie. */
struct ig_v6_lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/*
 * The address tables, one per family: open addressing with linear
 * probing in memory-mapped arrays, which user space writes directly (a
 * million addresses load in milliseconds, where a kernel hash map takes
 * seconds) and the programs probe without a helper call. The home slot of
 * an entry (address, prefix length; 32 or 128 for an exact address) is
 * its hash with the table's seed (settings), the top v4_bits/v6_bits bits
 * of h, all arithmetic on 64-bit words (the address's words are read in
 * host order, as the packet carries them):
 *     IPv4: h = ((addr ^ seed) << 32 | len) * IG_HASH_MUL
 *     IPv6: h = ((((w0 ^ s) * IG_HASH_MUL) ^ w1 ^ len) * IG_HASH_MUL
 *           where w0, w1 are the address's two 8-byte words in memory
 *           order, s = seed << 32 | seed
 * and an entry is never stored further than IG_MAX_PROBE slots from it:
 * user space rebuilds a table with another seed rather than break that
 * bound, so a lookup costs at most that many probes whatever the traffic.
 *
 * Besides exact addresses, a table holds the prefixes of up to
 * IG_TABLE_LENS prefix lengths (settings v4_lens/v6_lens: the longest
 * lengths of the blocklist, longest first), keyed by (address masked to
 * the length, length). A lookup probes the exact address, then each table
 * length, then the trie, which holds the prefixes of the remaining,
 * shorter lengths: the most specific rule matches, and a blocklist of a
 * few prefix lengths never walks the trie.
 *
 * Readers never see half an update. An IPv4 slot is one 8-byte word,
 * written in one store. An IPv6 slot is written address first, tag last,
 * and is only ever filled while empty (a deleted slot stays a tombstone
 * until the table is rebuilt), so a reader that sees a rule's tag sees its
 * address.
 */
enum ig_slot_tag {
	IG_SLOT_EMPTY = 0,     /* never used: a lookup stops here */
	IG_SLOT_TOMBSTONE = 1, /* deleted: a lookup goes on */
	IG_SLOT_FIRST_ID = 2,  /* IPv6: tag = rule id + IG_SLOT_FIRST_ID */
};

/* The multiplier of every hash here, in halves: an enumerator holds 32 bits. */
enum ig_hash_mul {
	IG_HASH_MUL_HI = 0x9E3779B9u,
	IG_HASH_MUL_LO = 0x7F4A7C15u,
};
#define IG_HASH_MUL ((__u64)IG_HASH_MUL_HI << 32 | IG_HASH_MUL_LO)

struct ig_v4_slot {
	__u32 addr; /* network byte order */
	__u32 tag;  /* enum ig_slot_tag */
};

struct ig_v6_slot {
	__u8 addr[16];    /* masked to prefixlen */
	__u32 tag;        /* enum ig_slot_tag */
	__u32 prefixlen;  /* written with the tag, in one 8-byte store */
};

/*
 * Value of every rule map. `id` indexes the drop counters in
 * `rule_drops`; user space hands ids out and zeroes the counter before it
 * reuses one. `prefixlen` lets an event name the rule that matched without a
 * second lookup (a trie lookup returns only the value).
 */
struct ig_rule {
	__u32 id;
	__u32 prefixlen;
};

/* Written by user space, read by the programs on every packet. */
struct ig_settings {
	__u32 log;         /* enum ig_log */
	/* Events each CPU may queue per second; 0 means no in-kernel limit. */
	__u32 event_budget;
	/* Entries in the prefix tries; 0 lets the programs skip the lookup. */
	__u32 v4_prefixes;
	__u32 v6_prefixes;
	/* Queued bytes at which the ring buffer wakes the daemon. */
	__u32 wakeup_bytes;
	/* The address tables: 2^bits slots (0: no table), and seeds. */
	__u32 v4_bits;
	__u32 v4_seed;
	__u32 v6_bits;
	__u32 v6_seed;
	/* Prefix lengths in the tables, longest first; IG_NO_LEN unused. */
	__u32 v4_lens[IG_TABLE_LENS];
	__u32 v6_lens[IG_TABLE_LENS];
	/*
	 * The `icmp` policy: bit t of word t / 32 set when ICMP (ICMPv6) type
	 * t is dropped for a blocked address. Path-MTU signals and neighbour
	 * discovery are never dropped, whatever the bits say.
	 */
	__u32 v4_types[IG_TYPE_WORDS];
	__u32 v6_types[IG_TYPE_WORDS];
	/* Allow entries held; 0 lets a blocked source drop without a look at
	 * the destination. */
	__u32 allows;
	/* 1: nothing is dropped; what would be is counted and logged as such. */
	__u32 dry_run;
	/* Sets in the `limits` map (struct ig_limit_set). */
	__u32 limit_sets;
	/*
	 * The echo rate limit per source, a GCRA (a token bucket kept as one
	 * time): a request is admitted when its source's theoretical arrival
	 * time is at most limit_tolerance_ns ahead of now, and moves it
	 * limit_interval_ns on. interval = 1 s / rate (0: no limit), tolerance
	 * = (burst - 1) * interval.
	 */
	__u64 limit_interval_ns;
	__u64 limit_tolerance_ns;
};

/*
 * The echo rate limiter's buckets: for each source, an IPv4 address or
 * the /64 of an IPv6 one, its theoretical arrival time (tat, the clock of
 * bpf_ktime_get_ns), in one way of a set of IG_LIMIT_WAYS (one 64-byte
 * line); the `limits` array holds settings.limit_sets sets.
 *
 * A source's key is 8 bytes in memory order: the /64 of an IPv6 source;
 * ff ff ff ff and the 4 bytes of an IPv4 one (no IPv6 source starts so:
 * ff00::/8 is multicast). Read as a host-order __u64 k, its set is
 *     ((k * IG_HASH_MUL) >> 32) * limit_sets >> 32.
 * A source not in its set takes the way whose tat is the least ahead: the
 * bucket that loses least (an idle source's bucket is full anyway), so
 * that a source over its limit is forgotten last.
 */
struct ig_limit_way {
	__u64 key;
	__u64 tat;
};

struct ig_limit_set {
	struct ig_limit_way way[IG_LIMIT_WAYS];
};

/*
 * Per-CPU packet and event counters, one per direction (enum
 * ig_direction is the key), summed by user space. In a dry run `dropped`
 * and `limited` count what would have been dropped.
 */
struct ig_counters {
	__u64 icmp_seen;         /* ICMP/ICMPv6 packets classified */
	__u64 dropped;           /* ... dropped for a block entry */
	__u64 limited;           /* ... dropped by the echo rate limit */
	__u64 allowed;           /* ... passed for an allow entry */
	__u64 events_queued;     /* events written to the ring buffer */
	__u64 events_lost;       /* ring buffer full: event not written */
	__u64 events_suppressed; /* over the in-kernel budget: not written */
};

/*
 * Per-CPU use of the in-kernel event budget in the current second. The
 * daemon zeroes it once a second (no clock read on the packet path).
 */
struct ig_budget {
	__u64 used;
};

/* One ICMP packet seen on a guarded interface. */
struct ig_event {
	__u64 timestamp_ns;  /* bpf_ktime_get_ns() */
	__u32 ifindex;
	__u32 rule_id;       /* with IG_ID_ALLOW for an allow entry; valid
	                      * for IG_REASON_BLOCK and IG_REASON_ALLOW */
	__u8 family;         /* 4 or 6 */
	__u8 direction;      /* enum ig_direction */
	__u8 verdict;        /* enum ig_verdict */
	__u8 match;          /* enum ig_match: the address of the rule or limit */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 rule_prefixlen; /* of the matched address; IPv4 counts from 0..32 */
	__u8 reason;         /* enum ig_reason */
	__u8 src[16];        /* IPv4 in the first 4 bytes */
	__u8 dst[16];
};

/*
 * State that user space keeps beside the maps, so that `status` and a
 * restarted daemon can read it from the pin directory (bpffs holds no
 * regular files). The programs never read it.
 */
struct ig_meta {
	__u32 abi_version;
	__u32 daemon_pid;         /* 0 when no daemon runs */
	__u64 generation;         /* bumped on every migration */
	__u64 capacity;           /* rule ids available (rule_drops size) */
	__u64 last_reload_unix_ms;
	__u64 last_reload_us;     /* how long the last reload took */
	__u32 last_reload_ok;     /* 1 applied, 0 refused (file kept) */
	__u32 last_reload_added;
	__u32 last_reload_removed;
	__u32 entries;            /* rules enforced */
	__u64 reloads;            /* reloads applied since the filter was created */
	__u64 reloads_refused;    /* ... and refused (invalid file) */
	/*
	 * The programs pinned beside the maps (prog_xdp, prog_tcx): the
	 * identity of the object they were loaded from and which XDP program
	 * (0: icmpguard_xdp, 1: icmpguard_xdp_compat, 2: icmpguard_xdp_atomic).
	 * A daemon of the same object adopts them
	 * without loading and verifying them again.
	 */
	__u64 object_id;
	__u32 xdp_compat;
	__u32 _pad;
	/*
	 * A digest of what the last successful reconcile made the maps hold
	 * (entries and settings; plan.rs, Desired::digest), 0 while a change
	 * is under way or unknown. A restart whose file has the same digest
	 * reports ready before it reads the maps back, and verifies them
	 * right after.
	 */
	__u64 applied_digest;
};

#endif /* ICMPGUARD_H */
