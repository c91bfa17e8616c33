/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * One packet parser for every program, so every hook and node computes the same
 * packet key (see docs/architecture.md): Ethernet, two VLAN tags, IPv4/IPv6,
 * TCP/UDP/ICMP, and through VXLAN on the configured ports or IPIP to the inner packet. It reads from a tc context (struct __sk_buff) or, in tracing
 * programs, from kernel memory; the choice is constant after inlining.
 */
#ifndef NETTRACE_PARSE_H
#define NETTRACE_PARSE_H

#include "nettrace.h"

#define TC_ACT_UNSPEC (-1)
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define NT_IPPROTO_ICMPV6 58
#define NT_MAX_HDR_OFF 256

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

const volatile struct nt_config nt_cfg = { .vxlan_ports = { 8472, 4789 } };

/* Where the bytes come from: a tc context, or kernel memory at kbase. */
struct nt_src {
	struct __sk_buff *skb;
	const void *kbase;
};

static __always_inline int is_vxlan_port(__u16 port)
{
#pragma unroll
	for (int i = 0; i < NT_MAX_VXLAN_PORTS; i++)
		if (nt_cfg.vxlan_ports[i] && nt_cfg.vxlan_ports[i] == port)
			return 1;
	return 0;
}

/* len bytes at off: straight from the packet when they are in its linear part
 * (the common case, no helper call), else copied into buf. NULL if too short. */
static __always_inline void *header(const struct nt_src *src, __u32 off, void *buf, __u32 len)
{
	if (off > NT_MAX_HDR_OFF)
		return NULL;
	if (src->skb) {
		void *data = (void *)(long)src->skb->data;
		void *end = (void *)(long)src->skb->data_end;

		if (data + off + len <= end)
			return data + off;
		if (bpf_skb_load_bytes(src->skb, off, buf, len))
			return NULL;
		return buf;
	}
	if (bpf_probe_read_kernel(buf, len, src->kbase + off))
		return NULL;
	return buf;
}

/* Ethernet plus up to two VLAN tags; returns the L3 protocol or 0. */
static __always_inline __be16 parse_eth(const struct nt_src *src, __u32 *off, __u8 *flags)
{
	struct nt_eth ebuf, *eth;
	struct nt_vlan vbuf, *vlan;
	__be16 proto;

	eth = header(src, *off, &ebuf, sizeof(ebuf));
	if (!eth)
		return 0;
	proto = eth->proto;
	*off += sizeof(*eth);
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		vlan = header(src, *off, &vbuf, sizeof(vbuf));
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
static __always_inline int parse_ip(const struct nt_src *src, __u32 off, __be16 proto,
				    struct nt_hop_record *r)
{
	__u32 hl;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct nt_ip4 buf, *ip = header(src, off, &buf, sizeof(buf));

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
		struct nt_ip6 buf, *ip6 = header(src, off, &buf, sizeof(buf));

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

/* If the packet is VXLAN on one of our ports, parse the inner packet into r
 * instead. Returns the inner L3 offset and updates *l4off, or 0. */
static __always_inline __u32 parse_vxlan(const struct nt_src *src, int *l4off, struct nt_hop_record *r)
{
	struct nt_udp ubuf, *uh;
	struct nt_vxlan vbuf, *vx;
	__be16 proto;
	__u32 off;
	__u8 flags;

	uh = header(src, *l4off, &ubuf, sizeof(ubuf));
	if (!uh || !is_vxlan_port(bpf_ntohs(uh->dport)))
		return 0;
	off = *l4off + sizeof(*uh);
	vx = header(src, off, &vbuf, sizeof(vbuf));
	if (!vx || !(vx->flags & bpf_htonl(0x08000000)))
		return 0; /* no VNI flag: keep the outer packet's key */
	flags = r->flags | NT_F_ENCAP;
	__builtin_memset(r, 0, sizeof(*r));
	r->flags = flags;
	r->vni = bpf_ntohl(vx->vni) >> 8;
	off += sizeof(*vx);
	proto = parse_eth(src, &off, &r->flags);
	*l4off = parse_ip(src, off, proto, r);
	return off;
}

/* If the packet is IP-in-IP (Calico IPIP), parse the inner IPv4 packet into r instead.
 * Returns the inner L3 offset and updates *l4off, or 0. */
static __always_inline __u32 parse_ipip(const struct nt_src *src, int *l4off, struct nt_hop_record *r)
{
	__u32 off = *l4off;
	__u8 flags = r->flags | NT_F_ENCAP;

	__builtin_memset(r, 0, sizeof(*r));
	r->flags = flags;
	*l4off = parse_ip(src, off, bpf_htons(ETH_P_IP), r);
	return off;
}

/* Where parse_l3 found the packet's headers: its L3 offset (the inner packet's when
 * encapsulated), and its L4 offset or 0 when it has no L4 header (a later fragment). */
struct nt_at {
	__u32 l3;
	__u32 l4;
};

/* Addresses and protocol of the packet at l3off (through VXLAN or IPIP) into r, and
 * where its headers are into at. Returns 0, or -1 if it is not an IP packet. Apart
 * from parse_l4 so that a caller can reject on the address pair before any L4 work. */
static __always_inline int parse_l3(const struct nt_src *src, __u32 l3off, __be16 proto,
				    struct nt_hop_record *r, struct nt_at *at)
{
	int l4off = parse_ip(src, l3off, proto, r);
	__u32 inner;

	if (l4off < 0)
		return -1;
	if (r->proto == IPPROTO_UDP && l4off > 0) {
		inner = parse_vxlan(src, &l4off, r);
		if (inner) {
			if (l4off < 0)
				return -1;
			l3off = inner;
		}
	} else if (r->proto == IPPROTO_IPIP && l4off > 0) {
		l3off = parse_ipip(src, &l4off, r);
		if (l4off < 0)
			return -1;
	}
	at->l3 = l3off;
	at->l4 = l4off;
	return 0;
}

/* Ports, sequence numbers and payload length of the L4 header at->l4 into r; nothing
 * when the packet has none. */
static __always_inline void parse_l4(const struct nt_src *src, const struct nt_at *at,
				     struct nt_hop_record *r)
{
	__u32 l3_end = at->l3 + r->ip_len;
	__u32 l4off = at->l4;

	if (!l4off)
		return;
	if (r->proto == IPPROTO_TCP) {
		struct nt_tcp buf, *th = header(src, l4off, &buf, sizeof(buf));
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
		struct nt_udp buf, *uh = header(src, l4off, &buf, sizeof(buf));

		if (!uh)
			return;
		r->sport = bpf_ntohs(uh->sport);
		r->dport = bpf_ntohs(uh->dport);
		if (bpf_ntohs(uh->len) > sizeof(*uh))
			r->payload_len = bpf_ntohs(uh->len) - sizeof(*uh);
	} else if (r->proto == IPPROTO_ICMP || r->proto == NT_IPPROTO_ICMPV6) {
		struct nt_icmp buf, *ih = header(src, l4off, &buf, sizeof(buf));

		if (!ih)
			return;
		r->icmp_type = ih->type;
		/* echo request/reply: id and seq tell packets apart */
		if (ih->type == 0 || ih->type == 8 || ih->type == 128 || ih->type == 129) {
			r->sport = bpf_ntohs(ih->id);
			r->seq = bpf_ntohs(ih->seq);
		} else if (r->proto == IPPROTO_ICMP && (ih->type == 3 || ih->type == 11 || ih->type == 12)) {
			/* an error (unreachable, time exceeded, parameter problem) quotes the IPv4
			 * header and first 8 bytes of the packet it answers: its ports, swapped, so that
			 * the error keys like a reply of that packet's flow */
			struct nt_ip4 qbuf, *q = header(src, l4off + sizeof(*ih), &qbuf, sizeof(qbuf));

			if (q && (q->vihl >> 4) == 4 && (q->proto == IPPROTO_TCP || q->proto == IPPROTO_UDP)) {
				struct nt_udp pbuf, *ports = header(src, l4off + sizeof(*ih) + (q->vihl & 0xf) * 4, &pbuf, 4);

				if (ports) {
					r->sport = bpf_ntohs(ports->dport);
					r->dport = bpf_ntohs(ports->sport);
				}
			}
		}
		if (l3_end > l4off + sizeof(*ih))
			r->payload_len = l3_end - l4off - sizeof(*ih);
	}
}

/* The whole key of the packet at l3off: parse_l3, then parse_l4. Returns 0, or -1 if
 * it is not an IP packet. */
static __always_inline int parse_packet(const struct nt_src *src, __u32 l3off, __be16 proto,
					struct nt_hop_record *r)
{
	struct nt_at at;

	if (parse_l3(src, l3off, proto, r, &at))
		return -1;
	parse_l4(src, &at, r);
	return 0;
}

#endif
