// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * Endpoint datapath: two TC programs on the host side of every endpoint's veth.
 *
 *   cil_from_container  TC ingress of the host veth = packets leaving the pod  = its egress
 *   cil_to_container    TC egress of the host veth  = packets entering the pod = its ingress
 *
 * One program serves every endpoint: the endpoint is found in cilium_lxc by the pod's IP and
 * must sit behind the veth the packet uses. The peer's identity comes from the ipcache (world
 * when absent). Connection tracking lets replies and related ICMP errors through; every
 * forward packet is checked against the policy again (as Cilium does), so removing an allow
 * cuts live connections. Anything unexpected is dropped: the datapath fails closed.
 *
 * A pod's connection to a service frontend (a ClusterIP) is translated to one backend on its
 * way out, before the egress policy and connection tracking see it, so both meet the backend
 * (its identity, its port) as in Cilium; replies get the frontend back as their source on the
 * way in. The choice is remembered per connection (cilium_lb_conn).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "cilium_rs.h"

#define NSEC_PER_SEC 1000000000ULL

/* ICMP and ICMPv6 share this first part (linux/icmp.h drags in libc headers). */
struct icmp_head {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__be16 echo_id;
	__be16 echo_sequence;
};

#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
#define ICMPV6_PARAMPROB 4
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129
#define ICMPV6_ROUTER_SOLICITATION 133
#define ICMPV6_REDIRECT 137

/* Connection-tracking lifetimes (Cilium's defaults); the loader may override them. */
volatile const __u64 CT_LIFETIME_TCP_NS = 21600 * NSEC_PER_SEC;
volatile const __u64 CT_SYN_TIMEOUT_NS = 60 * NSEC_PER_SEC;
volatile const __u64 CT_CLOSE_TIMEOUT_NS = 10 * NSEC_PER_SEC;
volatile const __u64 CT_LIFETIME_NONTCP_NS = 60 * NSEC_PER_SEC;

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct remote_endpoint_info);
	__uint(max_entries, IPCACHE_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(max_entries, ENDPOINTS_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_lxc SEC(".maps");

/* Sizes rather than types: clang leaves the key/value types of an inner map declaration as
 * forward declarations in BTF, which the loader cannot size. */
struct policy_map {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(key_size, sizeof(struct policy_key));
	__uint(value_size, sizeof(struct policy_entry));
	__uint(max_entries, POLICY_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, POLICY_OUTER_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct policy_map);
} cilium_policy_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, CT_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_ct_global SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_ports);
	__uint(max_entries, FRAG_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_ipv4_frag_datagrams SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct metrics_key);
	__type(value, struct metrics_value);
	__uint(max_entries, METRICS_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_metrics SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_RING_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, EVENTS_LOST_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_events_lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb_service_key);
	__type(value, struct lb_service);
	__uint(max_entries, LB_SERVICE_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_lb_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb_backend);
	__uint(max_entries, LB_BACKEND_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_lb_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct lb_conn);
	__uint(max_entries, LB_CONN_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_lb_conn SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb_affinity_key);
	__type(value, struct lb_affinity);
	__uint(max_entries, LB_CONN_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_lb_affinity SEC(".maps");

/* What parse() found. */
struct flow {
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport;
	__be16 dport;
	__be16 policy_port; /* dport, or the ICMP type */
	__u8 protocol;
	__u8 family;
	__u8 tcp_flags;
	__u8 has_related; /* an ICMP error: `related` holds the tuple it quotes */
	__u16 l4_off;	  /* from the start of the frame */
	struct ct_key related;
};

#define PARSE_OK 0
#define PARSE_PASS 1 /* not IP, or IPv6 from a link-local or the unspecified source */
#define PARSE_ND 2   /* neighbour discovery: not subject to policy, but to the source check */

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04

enum ct_status { CT_NEW, CT_ESTABLISHED, CT_REPLY, CT_RELATED };

/* Reads the L4 ports of a quoted packet (inside an ICMP error) into `k`. */
static __always_inline int quoted_ports(struct ct_key *k, void *l4, void *end)
{
	if (k->protocol == IPPROTO_TCP || k->protocol == IPPROTO_UDP) {
		__be16 *ports = l4;
		if ((void *)(ports + 2) > end)
			return -DROP_CT_INVALID_HDR;
		k->sport = ports[0];
		k->dport = ports[1];
	} else if (k->protocol == IPPROTO_ICMP || k->protocol == IPPROTO_ICMPV6) {
		struct icmp_head *ic = l4;
		if ((void *)(ic + 1) > end)
			return -DROP_CT_INVALID_HDR;
		/* Only an echo request can be quoted back to its sender. */
		k->sport = ic->echo_id;
	}
	return 0;
}

static __always_inline int parse_quoted_v4(struct flow *f, void *inner, void *end)
{
	struct iphdr *ip = inner;
	if ((void *)(ip + 1) > end)
		return -DROP_CT_INVALID_HDR;
	f->related.family = FAMILY_IPV4;
	f->related.saddr[0] = ip->saddr;
	f->related.daddr[0] = ip->daddr;
	f->related.protocol = ip->protocol;
	f->has_related = 1;
	return quoted_ports(&f->related, (void *)ip + (ip->ihl & 0xf) * 4, end);
}

static __always_inline int parse_quoted_v6(struct flow *f, void *inner, void *end)
{
	struct ipv6hdr *ip6 = inner;
	if ((void *)(ip6 + 1) > end)
		return -DROP_CT_INVALID_HDR;
	f->related.family = FAMILY_IPV6;
	__builtin_memcpy(f->related.saddr, &ip6->saddr, 16);
	__builtin_memcpy(f->related.daddr, &ip6->daddr, 16);
	f->related.protocol = ip6->nexthdr;
	f->has_related = 1;
	return quoted_ports(&f->related, ip6 + 1, end);
}

static __always_inline int parse_l4(struct flow *f, void *l4, void *end)
{
	switch (f->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > end)
			return -DROP_CT_INVALID_HDR;
		f->sport = th->source;
		f->dport = th->dest;
		f->policy_port = th->dest;
		f->tcp_flags = ((__u8 *)th)[13];
		return PARSE_OK;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		/* SCTP's common header starts with the two ports, as UDP's does. */
		struct udphdr *uh = l4;
		if ((void *)(uh + 1) > end)
			return -DROP_CT_INVALID_HDR;
		f->sport = uh->source;
		f->dport = uh->dest;
		f->policy_port = uh->dest;
		return PARSE_OK;
	}
	case IPPROTO_ICMP: {
		struct icmp_head *ic = l4;
		if ((void *)(ic + 1) > end)
			return -DROP_CT_INVALID_HDR;
		f->policy_port = bpf_htons(ic->type);
		switch (ic->type) {
		case ICMP_ECHO:
			f->sport = ic->echo_id;
			return PARSE_OK;
		case ICMP_ECHOREPLY:
			f->dport = ic->echo_id;
			return PARSE_OK;
		case ICMP_DEST_UNREACH:
		case ICMP_TIME_EXCEEDED:
		case ICMP_PARAMETERPROB:
			return parse_quoted_v4(f, ic + 1, end);
		}
		return PARSE_OK;
	}
	case IPPROTO_ICMPV6: {
		struct icmp_head *ic = l4;
		if ((void *)(ic + 1) > end)
			return -DROP_CT_INVALID_HDR;
		f->policy_port = bpf_htons(ic->type);
		/* Neighbour discovery (router/neighbour solicitation and advertisement, redirect)
		 * keeps the link working whatever the policy, as in Cilium; from a global source
		 * it must still come from that address's endpoint (no spoofing past the check). */
		if (ic->type >= ICMPV6_ROUTER_SOLICITATION && ic->type <= ICMPV6_REDIRECT)
			return PARSE_ND;
		switch (ic->type) {
		case ICMPV6_ECHO_REQUEST:
			f->sport = ic->echo_id;
			return PARSE_OK;
		case ICMPV6_ECHO_REPLY:
			f->dport = ic->echo_id;
			return PARSE_OK;
		case ICMPV6_DEST_UNREACH:
		case ICMPV6_PKT_TOOBIG:
		case ICMPV6_TIME_EXCEED:
		case ICMPV6_PARAMPROB:
			return parse_quoted_v6(f, ic + 1, end);
		}
		return PARSE_OK;
	}
	}
	/* Other protocols have no ports: only rules without a port apply. */
	return PARSE_OK;
}

/*
 * An IPv4 packet's L4 part. Fragments are tracked as Cilium does: the first fragment's
 * ports are remembered per datagram (addresses, id, protocol) and every later fragment is
 * checked with them; a later fragment whose first was not seen is dropped.
 */
static __always_inline int parse_v4_l4(struct flow *f, struct iphdr *ip, void *end)
{
	__u16 frag_off = bpf_ntohs(ip->frag_off);
	struct frag_key key = {
		.saddr = ip->saddr, .daddr = ip->daddr, .id = ip->id, .protocol = ip->protocol};
	int reason;

	if (frag_off & 0x1fff) {
		struct frag_ports *ports = bpf_map_lookup_elem(&cilium_ipv4_frag_datagrams, &key);
		if (!ports)
			return -DROP_FRAG_NOT_FOUND;
		f->sport = ports->sport;
		f->dport = ports->dport;
		f->policy_port = ports->policy_port;
		return PARSE_OK;
	}
	reason = parse_l4(f, (void *)ip + (ip->ihl & 0xf) * 4, end);
	if (reason == PARSE_OK && (frag_off & 0x2000)) {
		struct frag_ports ports = {
			.sport = f->sport, .dport = f->dport, .policy_port = f->policy_port};
		bpf_map_update_elem(&cilium_ipv4_frag_datagrams, &key, &ports, BPF_ANY);
	}
	return reason;
}

static __always_inline int parse(struct __sk_buff *skb, struct flow *f)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return -DROP_INVALID;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->ihl < 5)
			return -DROP_INVALID;
		f->family = FAMILY_IPV4;
		f->saddr[0] = ip->saddr;
		f->daddr[0] = ip->daddr;
		f->protocol = ip->protocol;
		f->l4_off = ETH_HLEN + (ip->ihl & 0xf) * 4;
		return parse_v4_l4(f, ip, end);
	}

	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return -DROP_INVALID;
		/* Traffic from a link-local source (neighbour discovery, MLD) or the unspecified one
		 * (duplicate address detection) stays on the veth's link: it names no endpoint. */
		if ((ip6->saddr.in6_u.u6_addr8[0] == 0xfe && (ip6->saddr.in6_u.u6_addr8[1] & 0xc0) == 0x80) ||
		    (ip6->saddr.in6_u.u6_addr32[0] == 0 && ip6->saddr.in6_u.u6_addr32[1] == 0 &&
		     ip6->saddr.in6_u.u6_addr32[2] == 0 && ip6->saddr.in6_u.u6_addr32[3] == 0))
			return PARSE_PASS;
		f->family = FAMILY_IPV6;
		__builtin_memcpy(f->saddr, &ip6->saddr, 16);
		__builtin_memcpy(f->daddr, &ip6->daddr, 16);
		f->protocol = ip6->nexthdr;
		f->l4_off = ETH_HLEN + sizeof(*ip6);
		if (f->protocol == IPPROTO_FRAGMENT)
			return -DROP_FRAG_NOSUPPORT;
		return parse_l4(f, ip6 + 1, end);
	}

	return PARSE_PASS;
}

static __always_inline void count(__u16 endpoint_id, __u8 dir, __u8 reason, __u32 len)
{
	struct metrics_key key = {.endpoint_id = endpoint_id, .direction = dir, .reason = reason};
	struct metrics_value *v = bpf_map_lookup_elem(&cilium_metrics, &key);

	if (v) {
		v->packets += 1;
		v->bytes += len;
	} else {
		struct metrics_value first = {.packets = 1, .bytes = len};
		bpf_map_update_elem(&cilium_metrics, &key, &first, BPF_NOEXIST);
	}
}

static __always_inline void emit(struct __sk_buff *skb, const struct flow *f, __u8 type, __u8 dir,
				 __u16 endpoint_id, __u16 reason, __u32 src_identity, __u32 dst_identity)
{
	struct verdict_event *e = bpf_ringbuf_reserve(&cilium_events, sizeof(*e), 0);

	if (!e) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&cilium_events_lost, &zero);
		if (lost)
			*lost += 1;
		return;
	}
	e->timestamp_ns = bpf_ktime_get_ns();
	e->type = type;
	e->direction = dir;
	e->family = f->family;
	e->protocol = f->protocol;
	e->endpoint_id = endpoint_id;
	e->reason = reason;
	e->src_identity = src_identity;
	e->dst_identity = dst_identity;
	__builtin_memcpy(e->saddr, f->saddr, 16);
	__builtin_memcpy(e->daddr, f->daddr, 16);
	e->sport = f->sport;
	e->dport = f->dport;
	e->ifindex = skb->ifindex;
	e->packet_len = skb->len;
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline __u32 peer_identity(const __u32 *addr, __u8 family)
{
	struct ipcache_key key = {};
	struct remote_endpoint_info *info;

	key.prefixlen = IPCACHE_STATIC_PREFIX + (family == FAMILY_IPV4 ? 32 : 128);
	key.family = family;
	__builtin_memcpy(key.addr, addr, 16);
	info = bpf_map_lookup_elem(&cilium_ipcache, &key);
	return info ? info->sec_identity : IDENTITY_WORLD;
}

static __always_inline void ct_forward_key(struct ct_key *k, const struct flow *f, __u8 flags)
{
	__builtin_memcpy(k->saddr, f->saddr, 16);
	__builtin_memcpy(k->daddr, f->daddr, 16);
	k->sport = f->sport;
	k->dport = f->dport;
	k->protocol = f->protocol;
	k->family = f->family;
	k->flags = flags;
}

static __always_inline void ct_reverse_key(struct ct_key *k, const struct flow *f, __u8 flags)
{
	__builtin_memcpy(k->saddr, f->daddr, 16);
	__builtin_memcpy(k->daddr, f->saddr, 16);
	k->sport = f->dport;
	k->dport = f->sport;
	k->protocol = f->protocol;
	k->family = f->family;
	k->flags = flags;
}

static __always_inline __u64 ct_lifetime(__u8 protocol, __u8 state)
{
	if (protocol != IPPROTO_TCP)
		return CT_LIFETIME_NONTCP_NS;
	if (state & CT_SEEN_CLOSE)
		return CT_CLOSE_TIMEOUT_NS;
	if (!(state & CT_SEEN_REPLY))
		return CT_SYN_TIMEOUT_NS;
	return CT_LIFETIME_TCP_NS;
}

/* A live entry for `key`, or NULL; expired entries are removed. */
static __always_inline struct ct_entry *ct_find(struct ct_key *key, __u64 now)
{
	struct ct_entry *e = bpf_map_lookup_elem(&cilium_ct_global, key);

	if (e && e->expires_ns < now) {
		bpf_map_delete_elem(&cilium_ct_global, key);
		return NULL;
	}
	return e;
}

static __always_inline void ct_touch(struct ct_entry *e, const struct flow *f, __u32 len, int reply,
				     __u64 now)
{
	__u8 state = e->state;

	if (reply) {
		state |= CT_SEEN_REPLY;
		__sync_fetch_and_add(&e->reply_packets, 1);
		__sync_fetch_and_add(&e->reply_bytes, len);
	} else {
		__sync_fetch_and_add(&e->packets, 1);
		__sync_fetch_and_add(&e->bytes, len);
	}
	if (f->tcp_flags & (TCP_FIN | TCP_RST))
		state |= CT_SEEN_CLOSE;
	e->state = state;
	e->expires_ns = now + ct_lifetime(f->protocol, state);
}

/* Classifies the packet for the endpoint direction `own` (CT_F_EGRESS or CT_F_INGRESS). */
static __always_inline enum ct_status ct_lookup(const struct flow *f, __u8 own, __u32 len, __u64 now)
{
	__u8 other = own == CT_F_EGRESS ? CT_F_INGRESS : CT_F_EGRESS;
	struct ct_key key = {};
	struct ct_entry *e;

	ct_reverse_key(&key, f, other);
	e = ct_find(&key, now);
	if (e) {
		ct_touch(e, f, len, 1, now);
		return CT_REPLY;
	}
	if (f->has_related) {
		struct ct_key related = f->related;
		related.flags = other;
		if (ct_find(&related, now))
			return CT_RELATED;
	}
	ct_forward_key(&key, f, own);
	e = ct_find(&key, now);
	if (e) {
		ct_touch(e, f, len, 0, now);
		return CT_ESTABLISHED;
	}
	return CT_NEW;
}

static __always_inline void ct_create(const struct flow *f, __u8 own, __u32 peer, __u16 endpoint_id,
				      __u32 len, __u64 now)
{
	struct ct_key key = {};
	struct ct_entry e = {};

	ct_forward_key(&key, f, own);
	e.packets = 1;
	e.bytes = len;
	e.peer_identity = peer;
	e.endpoint_id = endpoint_id;
	if (f->tcp_flags & (TCP_FIN | TCP_RST))
		e.state = CT_SEEN_CLOSE;
	e.expires_ns = now + ct_lifetime(f->protocol, e.state);
	bpf_map_update_elem(&cilium_ct_global, &key, &e, BPF_ANY);
}

static __always_inline int wildcards(const struct policy_entry *e)
{
	return (e->flags & POLICY_F_WILDCARD_PROTOCOL ? 2 : 0) + (e->flags & POLICY_F_WILDCARD_DPORT ? 1 : 0);
}

/*
 * The endpoint's policy verdict: 0 to allow, or the drop reason. Two lookups, with the peer's
 * identity and with 0 (any). A deny from either wins; otherwise the more specific L4 entry
 * decides, the identity-specific one on a tie (Cilium's precedence). No entry: drop.
 */
static __always_inline int policy_verdict(__u16 endpoint_id, __u32 peer, __u8 dir, const struct flow *f,
					  __u32 len)
{
	__u32 id = endpoint_id;
	struct policy_key key = {};
	struct policy_entry *specific, *any, *decides;
	void *policy = bpf_map_lookup_elem(&cilium_policy_v2, &id);

	if (!policy)
		return DROP_POLICY;

	key.prefixlen = POLICY_FULL_PREFIX;
	key.sec_label = peer;
	key.egress = dir;
	key.protocol = f->protocol;
	key.dport = f->policy_port;
	specific = bpf_map_lookup_elem(policy, &key);
	key.sec_label = 0;
	any = bpf_map_lookup_elem(policy, &key);

	if (specific && (specific->flags & POLICY_F_DENY))
		decides = specific;
	else if (any && (any->flags & POLICY_F_DENY))
		decides = any;
	else if (specific && any)
		decides = wildcards(any) < wildcards(specific) ? any : specific;
	else
		decides = specific ? specific : any;

	if (!decides)
		return DROP_POLICY;
	__sync_fetch_and_add(&decides->packets, 1);
	__sync_fetch_and_add(&decides->bytes, len);
	return decides->flags & POLICY_F_DENY ? DROP_POLICY_DENY : 0;
}

/*
 * Rewrites the packet's destination (`dst`) or source address and port to `addr`/`port`,
 * with the IP and TCP/UDP checksums. `f` keeps describing the packet as it was.
 */
static __always_inline int rewrite(struct __sk_buff *skb, const struct flow *f, int dst,
				   const __u32 *addr, __be16 port)
{
	__u32 csum_off = f->l4_off + (f->protocol == IPPROTO_TCP ? 16 : 6);
	__u32 l4_flags = f->protocol == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__u32 port_off = f->l4_off + (dst ? 2 : 0);
	__be16 old_port = dst ? f->dport : f->sport;
	__s64 diff;

	if (f->family == FAMILY_IPV4) {
		__u32 old = dst ? f->daddr[0] : f->saddr[0];
		__u32 new = addr[0];
		__u32 addr_off = ETH_HLEN + (dst ? 16 : 12);
		if (bpf_l3_csum_replace(skb, ETH_HLEN + 10, old, new, 4) < 0)
			return -DROP_CSUM_L3;
		if (bpf_l4_csum_replace(skb, csum_off, old, new, BPF_F_PSEUDO_HDR | l4_flags | 4) < 0)
			return -DROP_CSUM_L4;
		if (bpf_skb_store_bytes(skb, addr_off, &new, 4, 0) < 0)
			return -DROP_WRITE_ERROR;
	} else {
		__u32 old[4], new[4];
		__u32 addr_off = ETH_HLEN + (dst ? 24 : 8);
		__builtin_memcpy(old, dst ? f->daddr : f->saddr, 16);
		__builtin_memcpy(new, addr, 16);
		diff = bpf_csum_diff(old, 16, new, 16, 0);
		if (diff < 0)
			return -DROP_CSUM_L4;
		if (bpf_l4_csum_replace(skb, csum_off, 0, diff, BPF_F_PSEUDO_HDR | l4_flags) < 0)
			return -DROP_CSUM_L4;
		if (bpf_skb_store_bytes(skb, addr_off, new, 16, 0) < 0)
			return -DROP_WRITE_ERROR;
	}
	if (port != old_port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, port, l4_flags | 2) < 0)
			return -DROP_CSUM_L4;
		if (bpf_skb_store_bytes(skb, port_off, &port, 2, 0) < 0)
			return -DROP_WRITE_ERROR;
	}
	return 0;
}

static __always_inline struct lb_backend *lb_backend(__u32 id)
{
	return id ? bpf_map_lookup_elem(&cilium_lb_backends, &id) : NULL;
}

/* A backend for a new connection: the client's affine one if it has one, else a random slot. */
static __always_inline __u32 lb_choose(const struct flow *f, struct lb_service_key *key,
				       const struct lb_service *svc, __u64 now)
{
	struct lb_affinity_key ak = {};
	struct lb_affinity *affine = NULL;
	struct lb_service *slot;
	__u32 id;

	if (svc->flags & LB_F_AFFINITY) {
		__builtin_memcpy(ak.client, f->saddr, 16);
		ak.family = f->family;
		ak.rev_nat_index = svc->rev_nat_index;
		affine = bpf_map_lookup_elem(&cilium_lb_affinity, &ak);
		if (affine && now - affine->last_used_ns <= (__u64)svc->affinity_timeout_s * NSEC_PER_SEC &&
		    lb_backend(affine->backend_id)) {
			affine->last_used_ns = now;
			return affine->backend_id;
		}
	}
	key->slot = (bpf_get_prandom_u32() % svc->count) + 1;
	slot = bpf_map_lookup_elem(&cilium_lb_services, key);
	key->slot = 0;
	id = slot ? slot->backend_id : 0;
	if (id && (svc->flags & LB_F_AFFINITY)) {
		struct lb_affinity fresh = {.last_used_ns = now, .backend_id = id};
		bpf_map_update_elem(&cilium_lb_affinity, &ak, &fresh, BPF_ANY);
	}
	return id;
}

/*
 * A pod's packet to a service frontend goes to one of its backends: the one its connection
 * already has, or a new choice. Afterwards `f` describes the translated packet. Frontends
 * with no backends are left alone (kube-proxy, if present, rejects them).
 */
static __always_inline int lb_translate(struct __sk_buff *skb, struct flow *f, __u64 now)
{
	struct lb_service_key key = {};
	struct ct_key conn_key = {};
	struct lb_service *svc;
	struct lb_backend *backend = NULL;
	struct lb_conn *conn;
	__u32 backend_id = 0;
	int err;

	if (f->protocol != IPPROTO_TCP && f->protocol != IPPROTO_UDP)
		return 0;
	__builtin_memcpy(key.addr, f->daddr, 16);
	key.dport = f->dport;
	key.protocol = f->protocol;
	key.family = f->family;
	svc = bpf_map_lookup_elem(&cilium_lb_services, &key);
	if (!svc || svc->count == 0)
		return 0;

	ct_forward_key(&conn_key, f, LB_CONN_FORWARD);
	conn = bpf_map_lookup_elem(&cilium_lb_conn, &conn_key);
	if (conn && conn->rev_nat_index == svc->rev_nat_index) {
		backend_id = conn->backend_id;
		backend = lb_backend(backend_id);
	}
	if (!backend) {
		/* A new connection, or its backend is gone: choose (again). */
		backend_id = lb_choose(f, &key, svc, now);
		backend = lb_backend(backend_id);
		if (!backend)
			return 0;
		struct lb_conn forward = {
			.backend_id = backend_id, .rev_nat_index = svc->rev_nat_index, .created_ns = now};
		bpf_map_update_elem(&cilium_lb_conn, &conn_key, &forward, BPF_ANY);
	}

	/* Replies (backend -> pod) get the frontend back as their source. */
	struct lb_conn reverse = {.port = f->dport, .rev_nat_index = svc->rev_nat_index, .created_ns = now};
	__builtin_memcpy(reverse.addr, f->daddr, 16);
	struct ct_key reply_key = {};
	__builtin_memcpy(reply_key.saddr, backend->addr, 16);
	__builtin_memcpy(reply_key.daddr, f->saddr, 16);
	reply_key.sport = backend->port;
	reply_key.dport = f->sport;
	reply_key.protocol = f->protocol;
	reply_key.family = f->family;
	reply_key.flags = LB_CONN_REVERSE;
	if (!conn || !bpf_map_lookup_elem(&cilium_lb_conn, &reply_key))
		bpf_map_update_elem(&cilium_lb_conn, &reply_key, &reverse, BPF_ANY);

	err = rewrite(skb, f, 1, backend->addr, backend->port);
	if (err)
		return err;
	__builtin_memcpy(f->daddr, backend->addr, 16);
	f->dport = backend->port;
	f->policy_port = backend->port;
	return 0;
}

/* A reply from a backend to a pod: its source becomes the frontend the pod connected to. */
static __always_inline int lb_reverse(struct __sk_buff *skb, struct flow *f)
{
	struct ct_key key = {};
	struct lb_conn *conn;
	__u32 addr[4];
	__be16 port;

	if (f->protocol != IPPROTO_TCP && f->protocol != IPPROTO_UDP)
		return 0;
	ct_forward_key(&key, f, LB_CONN_REVERSE);
	conn = bpf_map_lookup_elem(&cilium_lb_conn, &key);
	if (!conn)
		return 0;
	__builtin_memcpy(addr, conn->addr, 16);
	port = conn->port;
	return rewrite(skb, f, 0, addr, port);
}

static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	struct flow f = {};
	struct endpoint_key ek = {};
	struct endpoint_info *ep;
	__u32 len = skb->len;
	__u16 endpoint_id = 0;
	__u32 own_identity = 0, peer = 0;
	__u8 own = dir == DIR_EGRESS ? CT_F_EGRESS : CT_F_INGRESS;
	enum ct_status status;
	__u64 now;
	int reason;

	reason = parse(skb, &f);
	if (reason == PARSE_PASS)
		return TC_ACT_OK;

	/* The endpoint behind this veth: the sender on egress, the receiver on ingress. */
	__builtin_memcpy(ek.addr, dir == DIR_EGRESS ? f.saddr : f.daddr, 16);
	ek.family = f.family;
	ep = bpf_map_lookup_elem(&cilium_lxc, &ek);
	if (ep && ep->ifindex == skb->ifindex) {
		endpoint_id = ep->lxc_id;
		own_identity = ep->sec_id;
	}

	if (reason < 0) {
		reason = -reason;
		goto drop;
	}
	/* Neighbour discovery from a global source: the sender must own it; towards the pod
	 * it comes from the host (ND is never routed), to a multicast or the pod's address. */
	if (reason == PARSE_ND) {
		if (dir == DIR_INGRESS || endpoint_id) {
			count(endpoint_id, dir, REASON_FORWARDED, len);
			return TC_ACT_OK;
		}
		reason = DROP_INVALID_SIP;
		goto drop;
	}
	if (!endpoint_id) {
		reason = dir == DIR_EGRESS ? DROP_INVALID_SIP : DROP_UNKNOWN_ENDPOINT;
		goto drop;
	}

	now = bpf_ktime_get_ns();
	if (dir == DIR_EGRESS) {
		reason = lb_translate(skb, &f, now);
		if (reason < 0) {
			reason = -reason;
			goto drop;
		}
	}
	status = ct_lookup(&f, own, len, now);
	if (status == CT_REPLY || status == CT_RELATED) {
		if (status == CT_REPLY && dir == DIR_INGRESS) {
			reason = lb_reverse(skb, &f);
			if (reason < 0) {
				reason = -reason;
				goto drop;
			}
		}
		count(endpoint_id, dir, REASON_FORWARDED, len);
		return TC_ACT_OK;
	}

	/* Forward packets, new or established, meet the policy every time. */
	peer = peer_identity(dir == DIR_EGRESS ? f.daddr : f.saddr, f.family);
	reason = policy_verdict(endpoint_id, peer, dir, &f, len);
	if (reason)
		goto drop;
	if (status == CT_NEW) {
		ct_create(&f, own, peer, endpoint_id, len, now);
		emit(skb, &f, EVENT_POLICY_VERDICT, dir, endpoint_id, 0,
		     dir == DIR_EGRESS ? own_identity : peer, dir == DIR_EGRESS ? peer : own_identity);
	}
	count(endpoint_id, dir, REASON_FORWARDED, len);
	return TC_ACT_OK;

drop:
	count(endpoint_id, dir, reason, len);
	emit(skb, &f, EVENT_DROP, dir, endpoint_id, reason, dir == DIR_EGRESS ? own_identity : peer,
	     dir == DIR_EGRESS ? peer : own_identity);
	return TC_ACT_SHOT;
}

SEC("classifier")
int cil_from_container(struct __sk_buff *skb)
{
	return handle(skb, DIR_EGRESS);
}

SEC("classifier")
int cil_to_container(struct __sk_buff *skb)
{
	return handle(skb, DIR_INGRESS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
