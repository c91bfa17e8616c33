/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-packet records out to userspace, shared by every object: one ring read in bulk
 * without per-record wakeups, and a per-CPU count of what did not fit.
 * The includer sets NT_RING_BYTES before including.
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

static __always_inline void output(struct nt_hop_record *r)
{
	__u32 zero = 0;
	__u64 *lost;

	/* never a wakeup: the reader drains the mapped ring on a timer, and a wakeup
	 * (irq_work) per record costs more than the rest of a program */
	if (bpf_ringbuf_output(&nt_records, r, sizeof(*r), BPF_RB_NO_WAKEUP)) {
		lost = bpf_map_lookup_elem(&nt_lost, &zero);
		if (lost)
			*lost += 1;
	}
}

#endif
