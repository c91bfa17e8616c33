// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Stamps every packet of a followed flow at one tc hook (design §2, §3).
 * Never changes a packet's fate: every path returns TC_ACT_UNSPEC, which
 * under tcx means "next program", under classic tc "continue".
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "parse.h"
#define NT_RING_BYTES (4 << 20)
#include "records.h"

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/* Flows being followed, keyed by address pair; userspace writes both directions. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct nt_flow_key);
	__type(value, struct nt_flow_rule);
} nt_flows SEC(".maps");

/* The followed-flow map's key for the packet in r: its address pair. */
static __always_inline void flow_key(struct nt_flow_key *key, const struct nt_hop_record *r)
{
	__builtin_memcpy(key->saddr, r->saddr, sizeof(key->saddr));
	__builtin_memcpy(key->daddr, r->daddr, sizeof(key->daddr));
	key->family = r->family;
	key->proto = r->proto;
}

static __always_inline void emit(struct __sk_buff *skb, struct nt_hop_record *r)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);

	r->ts_ns = bpf_ktime_get_ns();
	r->netns_ino = BPF_CORE_READ(kskb, dev, nd_net.net, ns.inum);
	r->ifindex = skb->ifindex;
	r->skb_len = skb->len;
	r->gso_segs = skb->gso_segs;
	output(r);
}

static __always_inline int handle(struct __sk_buff *skb, __u8 hook)
{
	struct nt_hop_record r = {};
	struct nt_flow_key key = {};
	struct nt_flow_rule *rule;
	struct nt_src src = { .skb = skb };
	__u32 off = 0, inner;
	__be16 proto;
	int l4off;

	proto = parse_eth(&src, &off, &r.flags);
	l4off = parse_ip(&src, off, proto, &r);
	if (l4off < 0)
		return TC_ACT_UNSPEC;
	if (r.proto == IPPROTO_UDP && l4off > 0) {
		inner = parse_vxlan(&src, &l4off, &r);
		if (inner) {
			if (l4off < 0)
				return TC_ACT_UNSPEC;
			off = inner;
		}
	} else if (r.proto == IPPROTO_IPIP && l4off > 0) {
		off = parse_ipip(&src, &l4off, &r);
		if (l4off < 0)
			return TC_ACT_UNSPEC;
	}
	/* the address pair decides before any L4 work: a miss costs one lookup */
	flow_key(&key, &r);
	rule = bpf_map_lookup_elem(&nt_flows, &key);
	if (!rule)
		return TC_ACT_UNSPEC;
	if (l4off > 0)
		parse_l4(&src, off, l4off, &r);
	if ((rule->sport && rule->sport != r.sport) || (rule->dport && rule->dport != r.dport))
		return TC_ACT_UNSPEC;
	r.flow_id = rule->flow_id;
	r.direction = rule->direction;
	r.hook = hook;
	emit(skb, &r);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int nt_ingress(struct __sk_buff *skb)
{
	return handle(skb, NT_HOOK_INGRESS);
}

SEC("tc")
int nt_egress(struct __sk_buff *skb)
{
	return handle(skb, NT_HOOK_EGRESS);
}

/*
 * A packet of a followed flow freed with a drop reason: where and why it died.
 * Reads the packet from kernel memory at its network header (outer or inner).
 */
SEC("tp_btf/kfree_skb")
int BPF_PROG(nt_drop, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	struct nt_hop_record r = {};
	struct nt_flow_key key = {};
	struct nt_flow_rule *rule;
	struct nt_src src = {};
	struct net_device *dev;
	struct sock *sk;
	__u16 nh;

	if (reason <= SKB_CONSUMED)
		return 0;
	nh = BPF_CORE_READ(skb, network_header);
	if (nh == (__u16)~0U)
		return 0;
	src.kbase = BPF_CORE_READ(skb, head) + nh;
	if (parse_packet(&src, 0, BPF_CORE_READ(skb, protocol), &r, 0))
		return 0;
	flow_key(&key, &r);
	rule = bpf_map_lookup_elem(&nt_flows, &key);
	if (!rule)
		return 0;
	/* the L4 fields, for the packet key and the port rule */
	r.family = 0;
	parse_packet(&src, 0, BPF_CORE_READ(skb, protocol), &r, 1);
	if ((rule->sport && rule->sport != r.sport) || (rule->dport && rule->dport != r.dport))
		return 0;
	dev = BPF_CORE_READ(skb, dev);
	sk = BPF_CORE_READ(skb, sk);
	r.kind = NT_REC_DROP;
	r.reason = reason;
	r.flow_id = rule->flow_id;
	r.direction = rule->direction;
	r.ts_ns = bpf_ktime_get_ns();
	r.netns_ino = dev ? BPF_CORE_READ(dev, nd_net.net, ns.inum) : sk ? BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) : 0;
	r.ifindex = dev ? BPF_CORE_READ(dev, ifindex) : 0;
	r.skb_len = BPF_CORE_READ(skb, len);
	r.order = NT_ORDER_NONE;
	output(&r);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
