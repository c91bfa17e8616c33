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
#include "nettrace.h"

#define TC_ACT_UNSPEC (-1)
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define NT_IPPROTO_ICMPV6 58

/* Packet headers as on the wire. Declared here, not taken from vmlinux.h,
 * so that reading a stack copy needs no CO-RE relocation. */
struct nt_eth { __u8 dst[6]; __u8 src[6]; __be16 proto; };
struct nt_vlan { __be16 tci; __be16 proto; };
struct nt_ip4 { __u8 vihl; __u8 tos; __be16 tot_len; __be16 id; __be16 frag_off;
		__u8 ttl; __u8 proto; __be16 check; __u8 saddr[4]; __u8 daddr[4]; };
struct nt_ip6 { __be32 vtc_flow; __be16 payload_len; __u8 nexthdr; __u8 hop_limit;
		__u8 saddr[16]; __u8 daddr[16]; };
struct nt_tcp { __be16 sport; __be16 dport; __be32 seq; __be32 ack; __u8 doff; __u8 flags;
		__be16 window; __be16 check; __be16 urg; };
struct nt_udp { __be16 sport; __be16 dport; __be16 len; __be16 check; };
struct nt_icmp { __u8 type; __u8 code; __be16 check; __be16 id; __be16 seq; };
struct nt_vxlan { __be32 flags; __be32 vni; };

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

const volatile struct nt_config nt_cfg = { .vxlan_ports = { 8472, 4789 } };

/* Never used: names the record type in this object's BTF, where the TypeScript
 * decoder is generated from (libbpf 1.1 rejects a value type on a ringbuf). It also
 * keeps nt_cfg the only variable in .rodata, at offset 0. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nt_hop_record);
} nt_record_layout SEC(".maps");

/* Flows being followed, keyed by address pair; userspace writes both directions. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct nt_flow_key);
	__type(value, struct nt_flow_rule);
} nt_flows SEC(".maps");

/* Hop records out to userspace, read in bulk without per-record wakeups. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} nt_records SEC(".maps");

/* [0]: records lost because the ring was full. Per CPU: no contention. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} nt_lost SEC(".maps");


static __always_inline int is_vxlan_port(__u16 port)
{
#pragma unroll
	for (int i = 0; i < NT_MAX_VXLAN_PORTS; i++)
		if (nt_cfg.vxlan_ports[i] && nt_cfg.vxlan_ports[i] == port)
			return 1;
	return 0;
}

#define NT_MAX_HDR_OFF 256

/* len bytes at off: straight from the packet when they are in its linear part
 * (the common case, no helper call), else copied into buf. NULL if too short. */
static __always_inline void *header(struct __sk_buff *skb, __u32 off, void *buf, __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;

	if (off > NT_MAX_HDR_OFF)
		return NULL;
	if (data + off + len <= end)
		return data + off;
	if (bpf_skb_load_bytes(skb, off, buf, len))
		return NULL;
	return buf;
}

/* Ethernet plus up to two VLAN tags; returns the L3 protocol or 0. */
static __always_inline __be16 parse_eth(struct __sk_buff *skb, __u32 *off, __u8 *flags)
{
	struct nt_eth ebuf, *eth;
	struct nt_vlan vbuf, *vlan;
	__be16 proto;

	eth = header(skb, *off, &ebuf, sizeof(ebuf));
	if (!eth)
		return 0;
	proto = eth->proto;
	*off += sizeof(*eth);
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		vlan = header(skb, *off, &vbuf, sizeof(vbuf));
		if (!vlan)
			return 0;
		proto = vlan->proto;
		*off += sizeof(*vlan);
		*flags |= NT_F_VLAN;
	}
	return proto;
}

/* Addresses, protocol, id and length of the IP packet at off into r.
 * Returns the L4 offset, 0 for a later fragment (no L4 header), -1 if not IP. */
static __always_inline int parse_ip(struct __sk_buff *skb, __u32 off, __be16 proto,
				    struct nt_hop_record *r)
{
	__u32 hl;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct nt_ip4 buf, *ip = header(skb, off, &buf, sizeof(buf));

		if (!ip || (ip->vihl >> 4) != 4)
			return -1;
		hl = (ip->vihl & 0xf) * 4;
		if (hl < sizeof(*ip))
			return -1;
		r->family = 4;
		r->proto = ip->proto;
		__builtin_memcpy(r->saddr, ip->saddr, 4);
		__builtin_memcpy(r->daddr, ip->daddr, 4);
		r->ip_id = bpf_ntohs(ip->id);
		r->ip_len = bpf_ntohs(ip->tot_len);
		if (ip->frag_off & bpf_htons(0x1fff))
			return 0;
		return off + hl;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct nt_ip6 buf, *ip6 = header(skb, off, &buf, sizeof(buf));

		if (!ip6 || (ip6->vtc_flow & 0xf0) != 0x60)
			return -1;
		r->family = 6;
		r->proto = ip6->nexthdr;
		__builtin_memcpy(r->saddr, ip6->saddr, 16);
		__builtin_memcpy(r->daddr, ip6->daddr, 16);
		r->ip_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		return off + sizeof(*ip6);
	}
	return -1;
}

/* Ports, sequence numbers and payload length of the L4 header at l4off into r. */
static __always_inline void parse_l4(struct __sk_buff *skb, __u32 l3off, __u32 l4off,
				     struct nt_hop_record *r)
{
	__u32 l3_end = l3off + r->ip_len;

	if (r->proto == IPPROTO_TCP) {
		struct nt_tcp buf, *th = header(skb, l4off, &buf, sizeof(buf));
		__u32 data_off;

		if (!th)
			return;
		r->sport = bpf_ntohs(th->sport);
		r->dport = bpf_ntohs(th->dport);
		r->seq = bpf_ntohl(th->seq);
		r->ack = bpf_ntohl(th->ack);
		r->tcp_flags = th->flags;
		data_off = l4off + (th->doff >> 4) * 4;
		if (l3_end > data_off)
			r->payload_len = l3_end - data_off;
	} else if (r->proto == IPPROTO_UDP) {
		struct nt_udp buf, *uh = header(skb, l4off, &buf, sizeof(buf));

		if (!uh)
			return;
		r->sport = bpf_ntohs(uh->sport);
		r->dport = bpf_ntohs(uh->dport);
		if (bpf_ntohs(uh->len) > sizeof(*uh))
			r->payload_len = bpf_ntohs(uh->len) - sizeof(*uh);
	} else if (r->proto == IPPROTO_ICMP || r->proto == NT_IPPROTO_ICMPV6) {
		struct nt_icmp buf, *ih = header(skb, l4off, &buf, sizeof(buf));

		if (!ih)
			return;
		r->icmp_type = ih->type;
		/* echo request/reply: id and seq tell packets apart */
		if (ih->type == 0 || ih->type == 8 || ih->type == 128 || ih->type == 129) {
			r->sport = bpf_ntohs(ih->id);
			r->seq = bpf_ntohs(ih->seq);
		}
		if (l3_end > l4off + sizeof(*ih))
			r->payload_len = l3_end - l4off - sizeof(*ih);
	}
}

/* If the packet is VXLAN on one of our ports, parse the inner packet into r
 * instead. Returns the inner L3 offset and updates *l4off, or 0. */
static __always_inline __u32 parse_vxlan(struct __sk_buff *skb, int *l4off, struct nt_hop_record *r)
{
	struct nt_udp ubuf, *uh;
	struct nt_vxlan vbuf, *vx;
	__be16 proto;
	__u32 off;
	__u8 flags;

	uh = header(skb, *l4off, &ubuf, sizeof(ubuf));
	if (!uh || !is_vxlan_port(bpf_ntohs(uh->dport)))
		return 0;
	off = *l4off + sizeof(*uh);
	vx = header(skb, off, &vbuf, sizeof(vbuf));
	if (!vx || !(vx->flags & bpf_htonl(0x08000000)))
		return 0; /* no VNI flag: keep the outer packet's key */
	flags = r->flags | NT_F_ENCAP;
	__builtin_memset(r, 0, sizeof(*r));
	r->flags = flags;
	r->vni = bpf_ntohl(vx->vni) >> 8;
	off += sizeof(*vx);
	proto = parse_eth(skb, &off, &r->flags);
	*l4off = parse_ip(skb, off, proto, r);
	return off;
}

static __always_inline void emit(struct __sk_buff *skb, struct nt_hop_record *r)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	__u32 zero = 0;
	__u64 *lost;

	r->ts_ns = bpf_ktime_get_ns();
	r->netns_ino = BPF_CORE_READ(kskb, dev, nd_net.net, ns.inum);
	r->ifindex = skb->ifindex;
	r->skb_len = skb->len;
	r->gso_segs = skb->gso_segs;
	/* never a wakeup: the reader drains the mapped ring on a timer, and a wakeup
	 * (irq_work) per record costs more than the rest of the program */
	if (bpf_ringbuf_output(&nt_records, r, sizeof(*r), BPF_RB_NO_WAKEUP)) {
		lost = bpf_map_lookup_elem(&nt_lost, &zero);
		if (lost)
			*lost += 1;
	}
}

static __always_inline int handle(struct __sk_buff *skb, __u8 hook)
{
	struct nt_hop_record r = {};
	struct nt_flow_key key = {};
	struct nt_flow_rule *rule;
	__u32 off = 0, inner;
	__be16 proto;
	int l4off;

	proto = parse_eth(skb, &off, &r.flags);
	l4off = parse_ip(skb, off, proto, &r);
	if (l4off < 0)
		return TC_ACT_UNSPEC;
	if (r.proto == IPPROTO_UDP && l4off > 0) {
		inner = parse_vxlan(skb, &l4off, &r);
		if (inner) {
			if (l4off < 0)
				return TC_ACT_UNSPEC;
			off = inner;
		}
	}
	/* the address pair decides before any L4 work: a miss costs one lookup */
	__builtin_memcpy(key.saddr, r.saddr, sizeof(key.saddr));
	__builtin_memcpy(key.daddr, r.daddr, sizeof(key.daddr));
	key.family = r.family;
	key.proto = r.proto;
	rule = bpf_map_lookup_elem(&nt_flows, &key);
	if (!rule)
		return TC_ACT_UNSPEC;
	if (l4off > 0)
		parse_l4(skb, off, l4off, &r);
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

char LICENSE[] SEC("license") = "Dual BSD/GPL";
