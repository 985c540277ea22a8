/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prints the layout of every map key/value in cilium_rs.h and its constants, as the host
 * compiler sees them. The datapath crate's build runs it; a unit test compares each line
 * with the Rust mirror, so a layout change on either side fails the build's tests.
 */
#include <stddef.h>
#include <stdio.h>

#include "cilium_rs.h"

#define SIZE(t) printf("sizeof %s %zu\n", #t, sizeof(struct t))
#define FIELD(t, f) printf("offsetof %s.%s %zu\n", #t, #f, offsetof(struct t, f))
#define CONST(c) printf("const %s %llu\n", #c, (unsigned long long)(c))

int main(void)
{
	SIZE(ipcache_key);
	FIELD(ipcache_key, prefixlen);
	FIELD(ipcache_key, cluster_id);
	FIELD(ipcache_key, family);
	FIELD(ipcache_key, addr);
	SIZE(remote_endpoint_info);
	FIELD(remote_endpoint_info, sec_identity);
	FIELD(remote_endpoint_info, tunnel_endpoint);
	FIELD(remote_endpoint_info, node_id);
	SIZE(endpoint_key);
	FIELD(endpoint_key, addr);
	FIELD(endpoint_key, family);
	SIZE(endpoint_info);
	FIELD(endpoint_info, ifindex);
	FIELD(endpoint_info, lxc_id);
	FIELD(endpoint_info, flags);
	FIELD(endpoint_info, mac);
	FIELD(endpoint_info, node_mac);
	FIELD(endpoint_info, sec_id);
	SIZE(policy_key);
	FIELD(policy_key, prefixlen);
	FIELD(policy_key, sec_label);
	FIELD(policy_key, egress);
	FIELD(policy_key, protocol);
	FIELD(policy_key, dport);
	SIZE(policy_entry);
	FIELD(policy_entry, proxy_port);
	FIELD(policy_entry, flags);
	FIELD(policy_entry, auth_type);
	FIELD(policy_entry, packets);
	FIELD(policy_entry, bytes);
	SIZE(ct_key);
	FIELD(ct_key, saddr);
	FIELD(ct_key, daddr);
	FIELD(ct_key, sport);
	FIELD(ct_key, dport);
	FIELD(ct_key, protocol);
	FIELD(ct_key, flags);
	FIELD(ct_key, family);
	SIZE(ct_entry);
	FIELD(ct_entry, expires_ns);
	FIELD(ct_entry, packets);
	FIELD(ct_entry, bytes);
	FIELD(ct_entry, reply_packets);
	FIELD(ct_entry, reply_bytes);
	FIELD(ct_entry, peer_identity);
	FIELD(ct_entry, endpoint_id);
	FIELD(ct_entry, state);
	SIZE(metrics_key);
	FIELD(metrics_key, endpoint_id);
	FIELD(metrics_key, direction);
	FIELD(metrics_key, reason);
	SIZE(metrics_value);
	FIELD(metrics_value, packets);
	FIELD(metrics_value, bytes);
	SIZE(verdict_event);
	FIELD(verdict_event, timestamp_ns);
	FIELD(verdict_event, type);
	FIELD(verdict_event, direction);
	FIELD(verdict_event, family);
	FIELD(verdict_event, protocol);
	FIELD(verdict_event, endpoint_id);
	FIELD(verdict_event, reason);
	FIELD(verdict_event, src_identity);
	FIELD(verdict_event, dst_identity);
	FIELD(verdict_event, saddr);
	FIELD(verdict_event, daddr);
	FIELD(verdict_event, sport);
	FIELD(verdict_event, dport);
	FIELD(verdict_event, ifindex);
	FIELD(verdict_event, packet_len);
	SIZE(frag_key);
	FIELD(frag_key, saddr);
	FIELD(frag_key, daddr);
	FIELD(frag_key, id);
	FIELD(frag_key, protocol);
	SIZE(frag_ports);
	FIELD(frag_ports, sport);
	FIELD(frag_ports, dport);
	FIELD(frag_ports, policy_port);
	SIZE(prefilter_v4_key);
	FIELD(prefilter_v4_key, addr);
	SIZE(prefilter_v6_key);
	FIELD(prefilter_v6_key, addr);
	SIZE(prefilter_value);
	FIELD(prefilter_value, packets);
	FIELD(prefilter_value, bytes);
	SIZE(lb_service_key);
	FIELD(lb_service_key, addr);
	FIELD(lb_service_key, dport);
	FIELD(lb_service_key, slot);
	FIELD(lb_service_key, protocol);
	FIELD(lb_service_key, family);
	SIZE(lb_service);
	FIELD(lb_service, backend_id);
	FIELD(lb_service, count);
	FIELD(lb_service, rev_nat_index);
	FIELD(lb_service, affinity_timeout_s);
	FIELD(lb_service, flags);
	SIZE(lb_backend);
	FIELD(lb_backend, addr);
	FIELD(lb_backend, port);
	FIELD(lb_backend, family);
	SIZE(lb_conn);
	FIELD(lb_conn, addr);
	FIELD(lb_conn, backend_id);
	FIELD(lb_conn, port);
	FIELD(lb_conn, rev_nat_index);
	FIELD(lb_conn, created_ns);
	SIZE(lb_affinity_key);
	FIELD(lb_affinity_key, client);
	FIELD(lb_affinity_key, rev_nat_index);
	FIELD(lb_affinity_key, family);
	SIZE(lb_affinity);
	FIELD(lb_affinity, last_used_ns);
	FIELD(lb_affinity, backend_id);

	CONST(PIN_VERSION);
	CONST(IDENTITY_WORLD);
	CONST(FAMILY_IPV4);
	CONST(FAMILY_IPV6);
	CONST(DIR_INGRESS);
	CONST(DIR_EGRESS);
	CONST(IPCACHE_MAP_SIZE);
	CONST(IPCACHE_STATIC_PREFIX);
	CONST(ENDPOINTS_MAP_SIZE);
	CONST(POLICY_MAP_SIZE);
	CONST(POLICY_OUTER_MAP_SIZE);
	CONST(POLICY_STATIC_PREFIX);
	CONST(POLICY_PROTO_PREFIX);
	CONST(POLICY_FULL_PREFIX);
	CONST(POLICY_F_DENY);
	CONST(POLICY_F_WILDCARD_PROTOCOL);
	CONST(POLICY_F_WILDCARD_DPORT);
	CONST(CT_MAP_SIZE);
	CONST(CT_F_EGRESS);
	CONST(CT_F_INGRESS);
	CONST(METRICS_MAP_SIZE);
	CONST(EVENTS_RING_SIZE);
	CONST(EVENT_DROP);
	CONST(EVENT_POLICY_VERDICT);
	CONST(PREFILTER_MAP_SIZE);
	CONST(PREFILTER_STATS_SIZE);
	CONST(DROP_INVALID_SIP);
	CONST(DROP_POLICY);
	CONST(DROP_INVALID);
	CONST(DROP_CT_INVALID_HDR);
	CONST(DROP_FRAG_NOSUPPORT);
	CONST(DROP_FRAG_NOT_FOUND);
	CONST(FRAG_MAP_SIZE);
	CONST(DROP_POLICY_DENY);
	CONST(DROP_UNKNOWN_ENDPOINT);
	CONST(DROP_CSUM_L3);
	CONST(DROP_CSUM_L4);
	CONST(DROP_WRITE_ERROR);
	CONST(LB_SERVICE_MAP_SIZE);
	CONST(LB_BACKEND_MAP_SIZE);
	CONST(LB_CONN_MAP_SIZE);
	CONST(LB_F_AFFINITY);
	CONST(LB_CONN_FORWARD);
	CONST(LB_CONN_REVERSE);
	return 0;
}
