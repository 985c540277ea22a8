/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one definition of every map's key and value layout, shared by the BPF programs and
 * (through the layout check in node-agent/datapath) by the Rust loader. Layouts follow
 * Cilium's bpf/lib/common.h of the v1.15 era where a counterpart exists; each struct
 * notes where it differs. Changing any layout means bumping PIN_VERSION: the loader pins
 * maps under /sys/fs/bpf/cilium-rs/v<PIN_VERSION> and refuses pins whose shape differs.
 */
#ifndef CILIUM_RS_H
#define CILIUM_RS_H

#include <linux/types.h>

#define PIN_VERSION 1

/* Reserved security identities (Cilium's numbering). */
#define IDENTITY_UNKNOWN 0
#define IDENTITY_HOST 1
#define IDENTITY_WORLD 2

/* Address families as Cilium's ENDPOINT_KEY_IPV4/IPV6. */
#define FAMILY_IPV4 1
#define FAMILY_IPV6 2

/* Traffic direction as seen by the endpoint. */
#define DIR_INGRESS 0
#define DIR_EGRESS 1

/* Drop reasons: Cilium's codes (positive, as in its metrics and monitor). */
#define REASON_FORWARDED 0
#define DROP_INVALID_SIP 132	  /* source IP does not belong to the sending endpoint */
#define DROP_CSUM_L3 138	  /* a translated packet's IP checksum could not be updated */
#define DROP_CSUM_L4 139	  /* ... its TCP/UDP checksum */
#define DROP_WRITE_ERROR 141	  /* ... its addresses or ports could not be written */
#define DROP_POLICY 133		  /* no policy entry allows the flow */
#define DROP_INVALID 134	  /* packet too short or malformed */
#define DROP_CT_INVALID_HDR 135	  /* L4 header could not be read */
#define DROP_FRAG_NOSUPPORT 157	  /* IPv6 fragment: no ports to check */
#define DROP_FRAG_NOT_FOUND 158	  /* IPv4 non-first fragment of a datagram whose first was not seen */
#define DROP_POLICY_DENY 181	  /* an explicit deny entry matched */
#define DROP_UNKNOWN_ENDPOINT 200 /* not Cilium's: no endpoint entry for this veth */

/* ---- ipcache: LPM trie, IP prefix -> security identity and node IP ---------------- */
#define IPCACHE_MAP_SIZE 512000
/* prefixlen counts the 32 bits of pad1/cluster_id/family, then the address bits. */
#define IPCACHE_STATIC_PREFIX 32

struct ipcache_key {
	__u32 prefixlen;
	__u16 pad1;
	__u8 cluster_id;
	__u8 family;
	__u32 addr[4]; /* network byte order; IPv4 in addr[0], the rest zero */
};

struct remote_endpoint_info {
	__u32 sec_identity;
	__u32 tunnel_endpoint; /* IPv4 of the node hosting the IP, network order; 0 = this node */
	__u16 node_id;
	__u8 key;
	__u8 pad;
};

/* ---- endpoints (cilium_lxc): local endpoint IP -> endpoint ------------------------- */
#define ENDPOINTS_MAP_SIZE 65535

struct endpoint_key {
	__u32 addr[4]; /* as in ipcache_key */
	__u8 family;
	__u8 key;
	__u8 cluster_id;
	__u8 pad;
};

struct endpoint_info {
	__u32 ifindex; /* host-side veth */
	__u16 unused;
	__u16 lxc_id; /* endpoint id */
	__u32 flags;
	__u8 mac[6];
	__u8 node_mac[6];
	__u32 sec_id; /* the endpoint's own security identity */
	__u32 pad[3];
};

/* ---- policy: one LPM trie per endpoint, found through cilium_policy_v2 by endpoint id -- */
#define POLICY_MAP_SIZE 16384 /* Cilium's bpf-policy-map-max default; the loader may change it */
#define POLICY_OUTER_MAP_SIZE 65535
#define POLICY_STATIC_PREFIX 40 /* sec_label + egress byte always match exactly */
#define POLICY_PROTO_PREFIX 48	/* ... and the protocol */
#define POLICY_FULL_PREFIX 64	/* ... and the whole port */

struct policy_key {
	__u32 prefixlen;
	__u32 sec_label; /* peer identity; 0 = any */
	__u8 egress;	 /* DIR_INGRESS / DIR_EGRESS */
	__u8 protocol;	 /* IPPROTO_*; 0 = any (then the port is any too) */
	__be16 dport;	 /* network order; 0 with prefixlen 48 = any port; ICMP: the type */
};

#define POLICY_F_DENY 1
#define POLICY_F_WILDCARD_PROTOCOL 2
#define POLICY_F_WILDCARD_DPORT 4

struct policy_entry {
	__be16 proxy_port; /* unused (no L7 proxy yet); kept for Cilium's layout */
	__u8 flags;	   /* POLICY_F_* (Cilium: deny:1, wildcard_protocol:1, wildcard_dport:1) */
	__u8 auth_type;
	__u16 pad1;
	__u16 pad2;
	__u64 packets; /* packets this entry decided, updated atomically by the datapath */
	__u64 bytes;
};

/* ---- connection tracking: LRU hash, one entry per (connection, endpoint direction) --- */
#define CT_MAP_SIZE 262144
#define CT_F_EGRESS 1  /* created by an endpoint's egress: the tuple is pod -> peer */
#define CT_F_INGRESS 2 /* created by an endpoint's ingress: the tuple is peer -> pod */

struct ct_key {
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport; /* ICMP echo: the identifier as sport of the request */
	__be16 dport;
	__u8 protocol;
	__u8 flags; /* CT_F_* */
	__u8 family;
	__u8 pad;
};

#define CT_SEEN_REPLY 1
#define CT_SEEN_CLOSE 2

struct ct_entry {
	__u64 expires_ns; /* bpf_ktime_get_ns() deadline; an expired entry is a miss */
	__u64 packets;	  /* forward direction */
	__u64 bytes;
	__u64 reply_packets;
	__u64 reply_bytes;
	__u32 peer_identity; /* the peer's identity when the entry was created */
	__u16 endpoint_id;
	__u8 state; /* CT_SEEN_* */
	__u8 pad;
};

/* ---- IPv4 fragments (cilium_ipv4_frag_datagrams): LRU hash, datagram -> its L4 ports ---- */
/* The first fragment carries the ports; the rest are checked with the ports it had. */
#define FRAG_MAP_SIZE 8192

struct frag_key {
	__u32 saddr; /* network order */
	__u32 daddr;
	__be16 id;
	__u8 protocol;
	__u8 pad;
};

struct frag_ports {
	__be16 sport;
	__be16 dport;
	__be16 policy_port; /* dport, or the ICMP type */
	__u16 pad;
};

/* ---- per-endpoint counters: per-CPU hash (endpoint, direction, reason) -> packets ---- */
#define METRICS_MAP_SIZE 65536

struct metrics_key {
	__u16 endpoint_id;
	__u8 direction;
	__u8 reason; /* REASON_FORWARDED or a DROP_* code (all fit in a byte) */
};

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

/* ---- verdict events: ring buffer ------------------------------------------------------ */
#define EVENTS_RING_SIZE (256 * 1024)
#define EVENT_DROP 1
#define EVENT_POLICY_VERDICT 2 /* first packet of a connection the policy allowed */

struct verdict_event {
	__u64 timestamp_ns;
	__u8 type;
	__u8 direction;
	__u8 family;
	__u8 protocol;
	__u16 endpoint_id;
	__u16 reason;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u32 ifindex;
	__u32 packet_len;
	__u32 pad;
};

/* Events that did not fit into the ring (index 0), per CPU. */
#define EVENTS_LOST_SIZE 1

/* ---- XDP prefilter: LPM tries of denied source prefixes ------------------------------- */
#define PREFILTER_MAP_SIZE 65536

struct prefilter_v4_key {
	__u32 prefixlen;
	__u32 addr; /* network order */
};

struct prefilter_v6_key {
	__u32 prefixlen;
	__u32 addr[4];
};

struct prefilter_value {
	__u64 packets; /* dropped by this prefix, updated atomically */
	__u64 bytes;
};

/* Totals per CPU: index 0 = passed, 1 = dropped. */
#define PREFILTER_STATS_PASSED 0
#define PREFILTER_STATS_DROPPED 1
#define PREFILTER_STATS_SIZE 2

/*
 * Service load-balancing (Cilium's model, this layout): a service is keyed by its frontend
 * (address, port, protocol); slot 0 holds the number of backend slots and the frontend's
 * reverse-NAT id, slots 1..count the backend ids. Backends are keyed by id.
 */
#define LB_SERVICE_MAP_SIZE 65536
#define LB_BACKEND_MAP_SIZE 65536
#define LB_CONN_MAP_SIZE 262144

struct lb_service_key {
	__u32 addr[4]; /* network order; IPv4 in addr[0] */
	__be16 dport;
	__u16 slot; /* 0: the service; 1..count: its backends */
	__u8 protocol;
	__u8 family;
	__u16 pad;
};

#define LB_F_AFFINITY 1 /* sessionAffinity: ClientIP */

struct lb_service {
	__u32 backend_id;    /* slot > 0 */
	__u16 count;	     /* slot 0: backend slots */
	__u16 rev_nat_index; /* the frontend's id */
	__u32 affinity_timeout_s;
	__u8 flags; /* LB_F_* */
	__u8 pad[3];
};

struct lb_backend {
	__u32 addr[4];
	__be16 port;
	__u8 family;
	__u8 pad;
};

/*
 * A translated connection, keyed by a ct_key: LB_CONN_FORWARD under the pod's original tuple
 * (pod -> frontend) holds the chosen backend, so the connection stays on it; LB_CONN_REVERSE
 * under the reply's tuple (backend -> pod) holds the frontend its replies come from.
 */
#define LB_CONN_FORWARD 1
#define LB_CONN_REVERSE 2

struct lb_conn {
	__u32 addr[4]; /* reverse: the frontend address */
	__u32 backend_id; /* forward */
	__be16 port;   /* reverse: the frontend port */
	__u16 rev_nat_index;
	__u64 created_ns;
};

/* sessionAffinity: ClientIP: (client address, frontend id) -> backend, with its time. */
struct lb_affinity_key {
	__u32 client[4];
	__u16 rev_nat_index;
	__u8 family;
	__u8 pad;
};

struct lb_affinity {
	__u64 last_used_ns;
	__u32 backend_id;
	__u32 pad;
};

#endif /* CILIUM_RS_H */
