// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The always-on agent's datapath (see docs/architecture.md, data path): per-node
 * hop-to-hop latencies matched in the kernel and counted in log2 histograms,
 * drops by reason and last step, TCP retransmits by flow. Only packets the
 * consistent sampler picks, and retransmits, become ring records.
 * Never changes a packet's fate: every tc path returns TC_ACT_UNSPEC.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "parse.h"
#define NT_RING_BYTES (1 << 20)
#include "records.h"

#define NT_AF_INET 2
#define NT_AF_INET6 10
#define NT_EGRESS_ORDERS ((1 << NT_ORDER_POD_EGRESS) | (1 << NT_ORDER_TUNNEL_EGRESS) | \
			  (1 << NT_ORDER_UNDERLAY_EGRESS) | (1 << NT_ORDER_BRIDGE_EGRESS) | \
			  (1 << NT_ORDER_VETH_EGRESS))

/* Never used either: puts the enums userspace shares into BTF for the generator. */
struct nt_enums {
	enum nt_order order;
	enum nt_record_kind kind;
	enum nt_hook hook;
	enum nt_map_fail map_fail;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nt_enums);
} nt_enum_layout SEC(".maps");

/*
 * Where each packet was last seen on this node. Per CPU and direct-mapped: one
 * inlined array access, no lock, no allocation (an LRU hash cost a quarter of
 * 64-byte packet throughput). A packet's hops on one node run on one CPU as a
 * rule (veth and VXLAN hand packets on through the same CPU's backlog); one that
 * changes CPU, or whose slot another packet took, is simply not timed.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NT_SEEN_SLOTS);
	__type(key, __u32);
	__type(value, struct nt_seen);
} nt_seen SEC(".maps");

/* [order]: hops that reached `order` 2^b..2^(b+1) ns after the previous hop, and their sum. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NT_ORDER_COUNT);
	__type(key, __u32);
	__type(value, struct nt_latency);
} nt_lat SEC(".maps");

/* [order]: every packet and byte the hook point saw. A per-CPU array with a constant key:
 * the lookup is inlined, two adds a packet, no clock, no hash. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NT_ORDER_COUNT);
	__type(key, __u32);
	__type(value, struct nt_step_count);
} nt_steps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct nt_drop_key);
	__type(value, __u64);
} nt_drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nt_retrans_key);
	__type(value, struct nt_retrans_value);
} nt_retrans SEC(".maps");

/* [enum nt_map_fail]: updates of nt_retrans and nt_drops that failed, so that a full
 * map shows as a metric instead of counts that silently stop growing. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NT_MAP_FAIL_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} nt_map_fail SEC(".maps");

/* DNS queries seen leaving their client, by (client, port, server, id): the time each was seen;
 * an answer takes its query's entry out. Unanswered ones are swept by userspace on scrape. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NT_DNS_PENDING);
	__type(key, struct nt_dns_key);
	__type(value, __u64);
} nt_dns_pending SEC(".maps");

/* DNS latency (query seen -> answer seen, at the client's host veth) per server. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, NT_DNS_SERVERS);
	__type(key, struct nt_dns_server_key);
	__type(value, struct nt_latency);
} nt_dns_lat SEC(".maps");

/* DNS answers per (server, rcode): at most 16 rcodes of NT_DNS_SERVERS servers. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, NT_DNS_SERVERS * 16);
	__type(key, struct nt_dns_rcode_key);
	__type(value, __u64);
} nt_dns_rcodes SEC(".maps");

/* Never written: a zeroed histogram to create nt_dns_lat entries from (too big for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nt_latency);
} nt_dns_zero SEC(".maps");

/* Network namespaces of this node and its pods: tracepoints see the whole kernel. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
} nt_netns SEC(".maps");

static __always_inline __u64 fmix64(__u64 h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/* What the packet carries unchanged on every hop of both nodes (see docs/architecture.md,
 * packet identity). Every node computes the same value, so 1-in-N sampling on it picks
 * the same packets. */
static __always_inline __u64 packet_hash(const struct nt_hop_record *r)
{
	__u64 h = 0x9e3779b97f4a7c15ULL;
	__u32 w;

#pragma unroll
	for (int i = 0; i < NT_ADDR_LEN; i += 4) {
		__builtin_memcpy(&w, &r->saddr[i], 4);
		h = (h ^ w) * 0x100000001b3ULL;
		__builtin_memcpy(&w, &r->daddr[i], 4);
		h = (h ^ w) * 0x100000001b3ULL;
	}
	h = (h ^ (((__u64)r->sport << 16) | r->dport)) * 0x100000001b3ULL;
	h = (h ^ (((__u64)r->seq << 32) | r->ack)) * 0x100000001b3ULL;
	h = (h ^ (((__u64)r->ip_id << 32) | ((__u64)r->ip_len << 16) | ((__u64)r->proto << 8) | r->family));
	return fmix64(h);
}

static __always_inline void map_failed(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&nt_map_fail, &which);

	if (n)
		*n += 1;
}

static __always_inline __u32 log2_bucket(__u64 v)
{
	__u32 b = 0;

	if (v >> 32) { v >>= 32; b += 32; }
	if (v >> 16) { v >>= 16; b += 16; }
	if (v >> 8) { v >>= 8; b += 8; }
	if (v >> 4) { v >>= 4; b += 4; }
	if (v >> 2) { v >>= 2; b += 2; }
	if (v >> 1) b += 1;
	return b;
}

static __always_inline void observe(__u32 order, __u64 delta_ns)
{
	struct nt_latency *lat = bpf_map_lookup_elem(&nt_lat, &order);
	__u32 b = log2_bucket(delta_ns);

	if (!lat)
		return;
	if (b < NT_LAT_BUCKETS)
		lat->buckets[b] += 1;
	lat->sum_ns += delta_ns;
}

/* The start of a DNS header: the id and the flags (QR, opcode, ..., RCODE). */
struct nt_dns_hdr { __be16 id; __be16 flags; };

/* A pointer to key's value in a per-CPU hash, adding it from init when it is new; NULL (and
 * counted in nt_map_fail) when the map is full. */
static __always_inline void *dns_slot(void *map, const void *key, const void *init)
{
	void *v = bpf_map_lookup_elem(map, key);

	if (v)
		return v;
	/* another CPU may add the key meanwhile: BPF_NOEXIST fails, the lookup then finds it */
	bpf_map_update_elem(map, key, init, BPF_NOEXIST);
	v = bpf_map_lookup_elem(map, key);
	if (!v)
		map_failed(NT_MAP_FAIL_DNS);
	return v;
}

/*
 * The server that answered, for labels: behind a ClusterIP the answer's source is the ClusterIP
 * again (un-DNATed before the client's veth), and the reply tuple of the connection's conntrack
 * entry names the endpoint kube-proxy chose (the DNS pod). Without an entry: the answer's source.
 */
static __always_inline void dns_server(struct __sk_buff *skb, const struct nt_hop_record *r, __u8 *server)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	/* skb->_nfct: the nf_conn pointer, its low 3 bits the ctinfo (NFCT_PTRMASK) */
	struct nf_conn *ct = (struct nf_conn *)(BPF_CORE_READ(kskb, _nfct) & ~7UL);
	__u32 ep[4] = {};

	__builtin_memcpy(server, r->saddr, NT_ADDR_LEN);
	if (!ct)
		return;
	/* explicit sizes: the destination is what is read into, whole */
	if (r->family == 4)
		bpf_core_read(&ep[0], sizeof(ep[0]), &ct->tuplehash[1].tuple.src.u3.ip);
	else
		bpf_core_read(ep, sizeof(ep), &ct->tuplehash[1].tuple.src.u3.all);
	/* an untracked or template entry has no addresses */
	if (ep[0] | ep[1] | ep[2] | ep[3])
		__builtin_memcpy(server, ep, NT_ADDR_LEN);
}

/*
 * DNS over UDP on a pod's host veth: a query entering it (from its client) is remembered, and
 * its answer leaving it (to the client) is timed against it and counted by rcode. Only these
 * two hooks: each query is timed once, on its client's node. Reads 4 bytes of the DNS header.
 */
static __always_inline void dns_hop(const struct nt_src *src, __u32 l4, const struct nt_hop_record *r, const __u32 order)
{
	struct nt_dns_hdr buf, *d;
	struct nt_dns_key k = {};
	struct nt_dns_server_key sk = { .family = r->family };
	__u64 now, *ts, *count, one = 1;
	__u16 flags;

	if (!l4)
		return;
	d = header(src, l4 + sizeof(struct nt_udp), &buf, sizeof(buf));
	if (!d)
		return;
	flags = bpf_ntohs(d->flags);
	k.family = r->family;
	k.id = bpf_ntohs(d->id);
	if (order == NT_ORDER_VETH_INGRESS) {
		if ((flags & 0x8000) || r->dport != NT_DNS_PORT)
			return;
		__builtin_memcpy(k.client, r->saddr, NT_ADDR_LEN);
		__builtin_memcpy(k.server, r->daddr, NT_ADDR_LEN);
		k.client_port = r->sport;
		now = bpf_ktime_get_ns();
		/* a resend with the same id and port restarts the clock, as the client's does */
		if (bpf_map_update_elem(&nt_dns_pending, &k, &now, BPF_ANY))
			map_failed(NT_MAP_FAIL_DNS);
		return;
	}
	if (!(flags & 0x8000) || r->sport != NT_DNS_PORT)
		return;
	__builtin_memcpy(k.client, r->daddr, NT_ADDR_LEN);
	__builtin_memcpy(k.server, r->saddr, NT_ADDR_LEN);
	k.client_port = r->dport;
	{
		struct nt_dns_rcode_key rk = { .family = r->family, .rcode = flags & 0xf };

		if (src->skb)
			dns_server(src->skb, r, rk.server);
		else
			__builtin_memcpy(rk.server, r->saddr, NT_ADDR_LEN);
		__builtin_memcpy(sk.server, rk.server, NT_ADDR_LEN);
		count = bpf_map_lookup_elem(&nt_dns_rcodes, &rk);
		if (count) {
			*count += 1;
		} else if (bpf_map_update_elem(&nt_dns_rcodes, &rk, &one, BPF_NOEXIST)) {
			/* another CPU may have added the key meanwhile; else the map is full */
			count = bpf_map_lookup_elem(&nt_dns_rcodes, &rk);
			if (count)
				*count += 1;
			else
				map_failed(NT_MAP_FAIL_DNS);
		}
	}
	ts = bpf_map_lookup_elem(&nt_dns_pending, &k);
	if (!ts)
		return; /* its query was not seen (the agent started after it, or it was swept) */
	now = bpf_ktime_get_ns();
	if (now >= *ts) {
		__u32 zero = 0;
		struct nt_latency *init = bpf_map_lookup_elem(&nt_dns_zero, &zero);
		struct nt_latency *lat;
		__u64 delta = now - *ts;
		__u32 b = log2_bucket(delta);

		lat = init ? dns_slot(&nt_dns_lat, &sk, init) : NULL;
		if (lat) {
			if (b < NT_LAT_BUCKETS)
				lat->buckets[b] += 1;
			lat->sum_ns += delta;
		}
	}
	bpf_map_delete_elem(&nt_dns_pending, &k);
}

static __always_inline int sampled(__u64 h)
{
	/* a compare, not a 64-bit modulo: this runs for every packet at every hook */
	return (h >> 32) < nt_cfg.sample_below;
}

/* Before parsing: every frame the hook sees counts (ARP and other non-IP too), as the
 * device's own counters would. */
static __always_inline void count_step(struct __sk_buff *skb, __u32 order)
{
	struct nt_step_count *c = bpf_map_lookup_elem(&nt_steps, &order);
	__u32 segs;

	if (!c)
		return;
	segs = skb->gso_segs;
	c->packets += segs ? segs : 1;
	c->bytes += skb->len;
}

static __always_inline int agent_hop(struct __sk_buff *skb, const __u32 order)
{
	struct nt_hop_record r = {};
	struct nt_src src = { .skb = skb };
	struct nt_seen *seen;
	struct nt_at at;
	__u64 now, h;
	__u32 off = 0, slot;
	int timed, traced;
	__be16 proto;

	count_step(skb, order);
	proto = parse_eth(&src, &off, &r.flags);
	if (parse_l3(&src, off, proto, &r, &at))
		return TC_ACT_UNSPEC;
	parse_l4(&src, &at, &r);
	/* DNS on pod veths only: order is a constant, so other hooks do not even compare ports */
	if ((order == NT_ORDER_VETH_INGRESS || order == NT_ORDER_VETH_EGRESS) && r.proto == IPPROTO_UDP &&
	    (r.dport == NT_DNS_PORT || r.sport == NT_DNS_PORT))
		dns_hop(&src, at.l4, &r, order);
	h = packet_hash(&r);
	slot = h & (NT_SEEN_SLOTS - 1);
	seen = bpf_map_lookup_elem(&nt_seen, &slot);
	if (!seen)
		return TC_ACT_UNSPEC;
	timed = (h & nt_cfg.latency_mask) == 0;
	traced = sampled(h);
	if (!timed && !traced) {
		/* where the packet is, for drops; no clock read */
		seen->hash = h;
		seen->order = order;
		seen->ts_ns = 0;
		return TC_ACT_UNSPEC;
	}
	now = bpf_ktime_get_ns();
	if (seen->hash == h) {
		if (timed && seen->ts_ns && seen->order < order && now >= seen->ts_ns)
			observe(order, now - seen->ts_ns);
	} else if (timed && order == NT_ORDER_POD_EGRESS && skb->tstamp && skb->tstamp <= now &&
		   skb->tstamp_type == BPF_SKB_CLOCK_MONOTONIC) {
		/* step 1 starts in the pod's stack: TCP stamps its departure time
		 * (EDT, monotonic clock) on the skb before the device sees it */
		observe(order, now - skb->tstamp);
	}
	seen->hash = h;
	seen->ts_ns = now;
	seen->order = order;
	if (traced) {
		r.kind = NT_REC_HOP;
		r.ts_ns = now;
		r.order = order;
		r.hook = (NT_EGRESS_ORDERS >> order) & 1 ? NT_HOOK_EGRESS : NT_HOOK_INGRESS;
		stamp_tc(skb, &r);
		output(&r);
	}
	return TC_ACT_UNSPEC;
}

/* One program per hook point: the order is a constant, no lookup per packet. */
#define NT_AGENT_PROG(n) \
	SEC("tc") int nt_agent_##n(struct __sk_buff *skb) { return agent_hop(skb, n); }

NT_AGENT_PROG(0)
NT_AGENT_PROG(1)
NT_AGENT_PROG(2)
NT_AGENT_PROG(3)
NT_AGENT_PROG(4)
NT_AGENT_PROG(5)
NT_AGENT_PROG(6)
NT_AGENT_PROG(7)
NT_AGENT_PROG(8)
NT_AGENT_PROG(9)

SEC("tp_btf/kfree_skb")
int BPF_PROG(nt_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	struct nt_drop_key key = { .reason = reason, .order = NT_ORDER_NONE };
	struct nt_hop_record r = {};
	struct nt_src src = {};
	struct nt_seen *seen;
	__u64 *count, one = 1, h = 0;
	__u32 ino;
	__u16 nh;

	if (reason <= SKB_CONSUMED)
		return 0;
	ino = netns_of(BPF_CORE_READ(skb, dev), BPF_CORE_READ(skb, sk));
	if (!ino || !bpf_map_lookup_elem(&nt_netns, &ino))
		return 0;
	nh = BPF_CORE_READ(skb, network_header);
	if (nh != (__u16)~0U) {
		src.kbase = BPF_CORE_READ(skb, head) + nh;
		if (!parse_packet(&src, 0, BPF_CORE_READ(skb, protocol), &r)) {
			__u32 slot;

			h = packet_hash(&r);
			slot = h & (NT_SEEN_SLOTS - 1);
			seen = bpf_map_lookup_elem(&nt_seen, &slot);
			if (seen && seen->hash == h)
				key.order = seen->order;
		}
	}
	count = bpf_map_lookup_elem(&nt_drops, &key);
	if (count) {
		*count += 1;
	} else if (bpf_map_update_elem(&nt_drops, &key, &one, BPF_NOEXIST)) {
		/* another CPU may have added the key meanwhile; else the map is full */
		count = bpf_map_lookup_elem(&nt_drops, &key);
		if (count)
			*count += 1;
		else
			map_failed(NT_MAP_FAIL_DROPS);
	}
	if (r.family && sampled(h)) {
		r.kind = NT_REC_DROP;
		r.reason = reason;
		r.order = key.order;
		r.ts_ns = bpf_ktime_get_ns();
		stamp_kernel(skb, &r);
		output(&r);
	}
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(nt_tcp_retransmit, const struct sock *sk, const struct sk_buff *skb)
{
	struct nt_retrans_key key = {};
	struct nt_retrans_value *v, fresh;
	struct nt_hop_record r = {};
	struct skb_shared_info *shinfo;
	__u16 family, segs, sport;
	__u32 ino;

	ino = netns_of(NULL, sk);
	if (!ino || !bpf_map_lookup_elem(&nt_netns, &ino))
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family == NT_AF_INET6) {
		BPF_CORE_READ_INTO(&key.saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&key.daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
		key.family = 6;
		/* a dual-stack socket (iperf3 -s, most servers listen on ::) talking to an IPv4 peer:
		 * ::ffff:a.b.c.d; its packets are IPv4, so it is keyed as IPv4, like the pods' addresses */
		if (((__u32 *)key.daddr)[0] == 0 && ((__u32 *)key.daddr)[1] == 0 &&
		    ((__u32 *)key.daddr)[2] == bpf_htonl(0xffff)) {
			__builtin_memset(key.saddr, 0, sizeof(key.saddr));
			__builtin_memset(key.daddr, 0, sizeof(key.daddr));
			family = NT_AF_INET;
		}
	}
	if (family == NT_AF_INET) {
		/* for a v4-mapped AF_INET6 socket these hold the IPv4 addresses too */
		__be32 saddr = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__be32 daddr = BPF_CORE_READ(sk, __sk_common.skc_daddr);

		key.family = 4;
		__builtin_memcpy(key.saddr, &saddr, 4);
		__builtin_memcpy(key.daddr, &daddr, 4);
	} else if (family != NT_AF_INET6) {
		return 0;
	}
	sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	key.dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	/* one call covers a whole GSO skb: what went out again is its segment count */
	shinfo = (struct skb_shared_info *)(BPF_CORE_READ(skb, head) + BPF_CORE_READ(skb, end));
	segs = BPF_CORE_READ(shinfo, gso_segs);
	if (!segs)
		segs = 1;

	v = bpf_map_lookup_elem(&nt_retrans, &key);
	if (v) {
		__sync_fetch_and_add(&v->retransmits, 1);
		__sync_fetch_and_add(&v->segments, segs);
	} else {
		fresh.retransmits = 1;
		fresh.segments = segs;
		if (bpf_map_update_elem(&nt_retrans, &key, &fresh, BPF_NOEXIST)) {
			/* another CPU may have added the key meanwhile; else the map is full */
			v = bpf_map_lookup_elem(&nt_retrans, &key);
			if (v) {
				__sync_fetch_and_add(&v->retransmits, 1);
				__sync_fetch_and_add(&v->segments, segs);
			} else {
				map_failed(NT_MAP_FAIL_RETRANS);
			}
		}
	}

	/* a rare stream: every retransmit becomes a record, for its flow's trace */
	r.kind = NT_REC_RETRANS;
	r.ts_ns = bpf_ktime_get_ns();
	r.netns_ino = ino;
	r.family = key.family;
	r.proto = IPPROTO_TCP;
	__builtin_memcpy(r.saddr, key.saddr, sizeof(r.saddr));
	__builtin_memcpy(r.daddr, key.daddr, sizeof(r.daddr));
	r.sport = sport;
	r.dport = key.dport;
	r.gso_segs = segs;
	r.order = NT_ORDER_NONE;
	bpf_probe_read_kernel(&r.seq, sizeof(r.seq), &((struct tcp_skb_cb *)skb->cb)->seq);
	output(&r);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
