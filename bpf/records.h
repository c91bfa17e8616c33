/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-packet records out to userspace, shared by every object: where the packet was
 * seen, one ring read in bulk without per-record wakeups, and a per-CPU count of what
 * did not fit. The includer sets NT_RING_BYTES before including, after vmlinux.h and
 * bpf_core_read.h.
 */
#ifndef NETTRACE_RECORDS_H
#define NETTRACE_RECORDS_H

#include "nettrace.h"

/* Never used: names the record type in this object's BTF, where the TypeScript
 * decoder is generated from (libbpf 1.1 rejects a value type on a ringbuf). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nt_hop_record);
} nt_record_layout SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, NT_RING_BYTES);
} nt_records SEC(".maps");

/* [0]: records lost because the ring was full. Per CPU: no contention. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} nt_lost SEC(".maps");

/* A tc program's context as the kernel's sk_buff, for what __sk_buff does not show. */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/* The network namespace a packet is in: its device's, else its socket's; 0 if neither. */
static __always_inline __u32 netns_of(struct net_device *dev, const struct sock *sk)
{
	if (dev)
		return BPF_CORE_READ(dev, nd_net.net, ns.inum);
	if (sk)
		return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	return 0;
}

/* Where a tc program saw the packet: the device, named by netns inode and ifindex
 * (ifindexes repeat across namespaces), and the skb's size. */
static __always_inline void stamp_tc(struct __sk_buff *skb, struct nt_hop_record *r)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);

	/* plain loads through the trusted kernel pointer (the verifier makes them fault-safe):
	 * BPF_CORE_READ would call bpf_probe_read_kernel once per pointer, three calls */
	r->netns_ino = kskb->dev->nd_net.net->ns.inum;
	r->ifindex = skb->ifindex;
	r->skb_len = skb->len;
	r->gso_segs = skb->gso_segs;
}

/* The same for a tracing program's sk_buff, which may have no device any more. */
static __always_inline void stamp_kernel(struct sk_buff *skb, struct nt_hop_record *r)
{
	struct net_device *dev = BPF_CORE_READ(skb, dev);

	r->netns_ino = netns_of(dev, BPF_CORE_READ(skb, sk));
	r->ifindex = dev ? BPF_CORE_READ(dev, ifindex) : 0;
	r->skb_len = BPF_CORE_READ(skb, len);
}

/* size bytes at data as one record (a hop record, or one with packet bytes after it) */
static __always_inline void output_sized(void *data, __u64 size)
{
	__u32 zero = 0;
	__u64 *lost;

	/* never a wakeup: the reader drains the mapped ring on a timer, and a wakeup
	 * (irq_work) per record costs more than the rest of a program */
	if (bpf_ringbuf_output(&nt_records, data, size, BPF_RB_NO_WAKEUP)) {
		lost = bpf_map_lookup_elem(&nt_lost, &zero);
		if (lost)
			*lost += 1;
	}
}

static __always_inline void output(struct nt_hop_record *r)
{
	output_sized(r, sizeof(*r));
}

#endif
