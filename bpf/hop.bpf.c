// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Stamps every packet of a followed flow at one tc hook, and reports the ones the
 * kernel drops (see docs/architecture.md, data path).
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

/* Flows being followed, keyed by address pair; userspace writes both directions. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct nt_flow_key);
	__type(value, struct nt_flow_rule);
} nt_flows SEC(".maps");

/* Written by userspace while the programs run (struct nt_pair_filter): not const. */
struct nt_pair_filter nt_pairs SEC(".data.pairs");

/* Whether a followed flow may have this address pair (struct nt_pair_filter). */
static __always_inline int pair_maybe(const struct nt_flow_key *k)
{
	const __u32 *s = (const __u32 *)k->saddr, *d = (const __u32 *)k->daddr;
	__u32 bit;

	bit = ((s[0] ^ s[1] ^ s[2] ^ s[3] ^ d[0] ^ d[1] ^ d[2] ^ d[3] ^ k->proto) * 0x9e3779b1U) >> 22;
	return (nt_pairs.bits[(bit >> 6) & 15] >> (bit & 63)) & 1;
}

/* follow -w: where a hop record and the packet's first bytes are put together (too big
 * for the stack beside the parser's buffers). Per CPU: a program runs on one at a time. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nt_hop_capture);
} nt_capture SEC(".maps");

/* r and the packet's first min(snaplen, len) bytes, from where the skb's data starts at this
 * tc hook (the MAC header; the IP header on a device without one), as one record. */
static __always_inline void output_capture(struct __sk_buff *skb, struct nt_hop_record *r)
{
	struct nt_hop_capture *c;
	__u32 zero = 0, cap;

	c = bpf_map_lookup_elem(&nt_capture, &zero);
	if (!c) {
		output(r);
		return;
	}
	__builtin_memcpy(&c->hop, r, sizeof(*r));
	c->dev_type = BPF_CORE_READ((struct sk_buff *)bpf_cast_to_kern_ctx(skb), dev, type);
	cap = skb->len < nt_cfg.snaplen ? skb->len : nt_cfg.snaplen;
	if (cap > NT_SNAPLEN_MAX)
		cap = NT_SNAPLEN_MAX;
	/* the same value for 1..NT_SNAPLEN_MAX (a power of two), in a form whose bounds the
	 * verifier sees on the register passed, whatever copy of cap the compiler checked */
	if (cap == 0 || bpf_skb_load_bytes(skb, 0, c->data, ((cap - 1) & (NT_SNAPLEN_MAX - 1)) + 1))
		cap = 0;
	else
		cap = ((cap - 1) & (NT_SNAPLEN_MAX - 1)) + 1;
	c->cap_len = cap;
	output_sized(c, offsetof(struct nt_hop_capture, data) + cap);
}

#define NT_TCP_FIN 0x01
#define NT_TCP_SYN 0x02
#define NT_TCP_RST 0x04

/* follow --every: whether this TCP packet is one of those kept (struct nt_config). Stateless
 * and on what every hop sees alike: the inner TCP header. */
static __always_inline int every_keeps(const struct nt_hop_record *r)
{
	__u32 h;

	if (!nt_cfg.every_shift || r->proto != IPPROTO_TCP)
		return 1;
	/* data by its bytes only, a FIN on it too: GRO merges a FIN segment into the data before
	 * it, so "has FIN" differs between the nodes; SYN and RST segments are never merged */
	if (r->payload_len && !(r->tcp_flags & (NT_TCP_SYN | NT_TCP_RST)))
		/* [seq, seq + len) holds a multiple of 2^shift iff seq - 1 and its last byte differ
		 * above the shift (32-bit wrap included: 0 is a multiple) */
		return (((r->seq - 1) ^ (r->seq + r->payload_len - 1)) >> nt_cfg.every_shift) != 0;
	/* without data: SYN, FIN, RST always (GRO merges no empty segment) */
	if (r->tcp_flags & (NT_TCP_FIN | NT_TCP_SYN | NT_TCP_RST))
		return 1;
	h = r->ack * 0x9e3779b1U;
	return ((h ^ (h >> 16)) & nt_cfg.every_ack_mask) == 0;
}

/* Whether the packet at l3off is of a followed flow and kept by --every: r gets its key, flow
 * and direction.
 * The address pair decides before any L4 work: a miss costs a bit test, or one lookup
 * when another pair shares its bit. */
static __always_inline int followed(const struct nt_src *src, __u32 l3off, __be16 proto,
				    struct nt_hop_record *r)
{
	struct nt_flow_key key = {};
	struct nt_flow_rule *rule;
	struct nt_at at;

	if (parse_l3(src, l3off, proto, r, &at))
		return 0;
	__builtin_memcpy(key.saddr, r->saddr, sizeof(key.saddr));
	__builtin_memcpy(key.daddr, r->daddr, sizeof(key.daddr));
	key.family = r->family;
	key.proto = r->proto;
	if (!pair_maybe(&key))
		return 0;
	rule = bpf_map_lookup_elem(&nt_flows, &key);
	if (!rule)
		return 0;
	parse_l4(src, &at, r);
	if ((rule->sport && rule->sport != r->sport) || (rule->dport && rule->dport != r->dport))
		return 0;
	if (!every_keeps(r))
		return 0;
	r->flow_id = rule->flow_id;
	r->direction = rule->direction;
	return 1;
}

/* capture: a constant; the _cap programs (follow -w) also copy the packet's first bytes */
static __always_inline int handle(struct __sk_buff *skb, __u8 hook, int capture)
{
	struct nt_hop_record r = {};
	struct nt_src src = { .skb = skb };
	__u32 off = 0;
	__be16 proto;

	proto = parse_eth(&src, &off, &r.flags);
	if (!followed(&src, off, proto, &r))
		return TC_ACT_UNSPEC;
	r.hook = hook;
	r.ts_ns = bpf_ktime_get_ns();
	stamp_tc(skb, &r);
	/* the plain programs have no copy at all: without -w, follow costs what it did */
	if (capture)
		output_capture(skb, &r);
	else
		output(&r);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int nt_ingress(struct __sk_buff *skb)
{
	return handle(skb, NT_HOOK_INGRESS, 0);
}

SEC("tc")
int nt_egress(struct __sk_buff *skb)
{
	return handle(skb, NT_HOOK_EGRESS, 0);
}

/* follow -w: the same, and the first nt_cfg.snaplen bytes after each record; userspace
 * loads either these or the two above (autoload), never both */
SEC("tc")
int nt_ingress_cap(struct __sk_buff *skb)
{
	return handle(skb, NT_HOOK_INGRESS, 1);
}

SEC("tc")
int nt_egress_cap(struct __sk_buff *skb)
{
	return handle(skb, NT_HOOK_EGRESS, 1);
}

/*
 * A packet of a followed flow freed with a drop reason: where and why it died.
 * Reads the packet from kernel memory at its network header (outer or inner).
 */
SEC("tp_btf/kfree_skb")
int BPF_PROG(nt_drop, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	struct nt_hop_record r = {};
	struct nt_src src = {};
	__u16 nh;

	if (reason <= SKB_CONSUMED)
		return 0;
	nh = BPF_CORE_READ(skb, network_header);
	if (nh == (__u16)~0U)
		return 0;
	src.kbase = BPF_CORE_READ(skb, head) + nh;
	/* --every: the drops of the kept packets, the only ones the collector has a path to end */
	if (!followed(&src, 0, BPF_CORE_READ(skb, protocol), &r))
		return 0;
	r.kind = NT_REC_DROP;
	r.reason = reason;
	r.order = NT_ORDER_NONE;
	r.ts_ns = bpf_ktime_get_ns();
	stamp_kernel(skb, &r);
	output(&r);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
