// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * XDP prefilter on a node device: frames whose source address falls in a denied prefix are
 * dropped before the stack sees them (Cilium's cilium_cidr_v4_dyn / v6_dyn), and counted per
 * prefix and in total.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "cilium_rs.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct prefilter_v4_key);
	__type(value, struct prefilter_value);
	__uint(max_entries, PREFILTER_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_cidr_v4_dyn SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct prefilter_v6_key);
	__type(value, struct prefilter_value);
	__uint(max_entries, PREFILTER_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_cidr_v6_dyn SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, PREFILTER_STATS_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_prefilter_stats SEC(".maps");

static __always_inline int verdict(struct prefilter_value *hit, __u32 len)
{
	__u32 slot = hit ? PREFILTER_STATS_DROPPED : PREFILTER_STATS_PASSED;
	__u64 *total = bpf_map_lookup_elem(&cilium_prefilter_stats, &slot);

	if (total)
		*total += 1;
	if (!hit)
		return XDP_PASS;
	__sync_fetch_and_add(&hit->packets, 1);
	__sync_fetch_and_add(&hit->bytes, len);
	return XDP_DROP;
}

SEC("xdp")
int cil_xdp_prefilter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 len = (__u32)(end - data);

	if ((void *)(eth + 1) > end)
		return XDP_PASS;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		struct prefilter_v4_key key = {.prefixlen = 32};
		if ((void *)(ip + 1) > end)
			return XDP_DROP;
		key.addr = ip->saddr;
		return verdict(bpf_map_lookup_elem(&cilium_cidr_v4_dyn, &key), len);
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		struct prefilter_v6_key key = {.prefixlen = 128};
		if ((void *)(ip6 + 1) > end)
			return XDP_DROP;
		__builtin_memcpy(key.addr, &ip6->saddr, 16);
		return verdict(bpf_map_lookup_elem(&cilium_cidr_v6_dyn, &key), len);
	}
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
