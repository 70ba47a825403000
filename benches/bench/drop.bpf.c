// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The floor of the benchmark: an XDP program that drops every packet and
 * does nothing else. No includes, so that it builds with clang alone.
 */
#define XDP_DROP 1

__attribute__((section("xdp"), used)) int xdp_drop_all(void *ctx)
{
	return XDP_DROP;
}

char LICENSE[] __attribute__((section("license"), used)) = "Dual BSD/GPL";
