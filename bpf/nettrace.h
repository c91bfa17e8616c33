/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one definition of everything the kernel side and userspace share.
 * Fixed-width fields with explicit padding: src/probe/layout.generated.ts is
 * generated from this layout as it lands in the object's BTF (make gen).
 */
#ifndef NETTRACE_H
#define NETTRACE_H

#define NT_ADDR_LEN 16
#define NT_MAX_VXLAN_PORTS 4

enum nt_hook {
	NT_HOOK_INGRESS = 0,
	NT_HOOK_EGRESS = 1,
};

enum nt_direction {
	NT_DIR_REQUEST = 0,
	NT_DIR_REPLY = 1,
};

enum nt_record_kind {
	NT_REC_HOP = 0,		/* a packet seen at a tc hook */
	NT_REC_DROP = 1,	/* a packet freed with a drop reason (tp_btf/kfree_skb) */
	NT_REC_RETRANS = 2,	/* a TCP retransmit (tp_btf/tcp_retransmit_skb); gso_segs = segments */
};

/*
 * The ten hook points of a cross-node path in the order a packet meets them (see
 * docs/architecture.md, hook points and steps); a node sees 0-4 of a packet it
 * sends and 5-9 of one it receives.
 * src/topology/steps.ts maps (role, hook) to these and to steps 1-9.
 */
enum nt_order {
	NT_ORDER_POD_EGRESS = 0,	/* step 1 */
	NT_ORDER_VETH_INGRESS = 1,	/* step 2 */
	NT_ORDER_BRIDGE_INGRESS = 2,	/* step 3 */
	NT_ORDER_TUNNEL_EGRESS = 3,	/* step 4 */
	NT_ORDER_UNDERLAY_EGRESS = 4,	/* step 5 */
	NT_ORDER_UNDERLAY_INGRESS = 5,	/* step 6 */
	NT_ORDER_TUNNEL_INGRESS = 6,	/* step 7 */
	NT_ORDER_BRIDGE_EGRESS = 7,	/* step 8 */
	NT_ORDER_VETH_EGRESS = 8,	/* step 9 */
	NT_ORDER_POD_INGRESS = 9,	/* step 9 */
	NT_ORDER_COUNT = 10,
	NT_ORDER_NONE = 0xff,
};

/* Latency histograms: log2 buckets of nanoseconds, bucket b counts [2^b, 2^(b+1)). */
#define NT_LAT_BUCKETS 64

/* Agent: one hook point's histogram and its sum, in one per-CPU slot (one lookup a hop). */
struct nt_latency {
	__u64 buckets[NT_LAT_BUCKETS];
	__u64 sum_ns;
};

/* Agent: every packet a hook point sees (not only the timed ones), in one per-CPU slot per
 * hook point. */
struct nt_step_count {
	__u64 packets;	/* wire packets: a GSO/GRO skb counts its gso_segs, so both nodes agree */
	__u64 bytes;	/* skb->len: from the Ethernet header, encapsulation included */
};

enum nt_record_flags {
	NT_F_ENCAP = 1,	/* seen through a VXLAN header: the key is the inner packet's */
	NT_F_VLAN = 2,	/* an 802.1Q/802.1ad tag was skipped */
};

/* Key of the followed-flow map: an address pair, one entry per direction. */
struct nt_flow_key {
	__u8 saddr[NT_ADDR_LEN];	/* IPv4 in the first 4 bytes, rest zero */
	__u8 daddr[NT_ADDR_LEN];
	__u8 family;			/* 4 or 6 */
	__u8 proto;			/* IPPROTO_* */
	__u16 _pad;
};

/* Address pairs of followed flows as bits of a hash (the hop object's nt_pairs, section .data.pairs):
 * a packet whose bit is clear is of no followed flow, known without the hash lookup of
 * nt_flows, which is most of what a packet of another flow costs. Bit
 * (((fold ^ proto) * 0x9e3779b1) >> 22), where fold XORs the eight 32-bit words of the
 * key's saddr and daddr as loaded in host order: both directions of a pair share a bit.
 * Userspace sets a rule's bit before it adds the rule, and never clears one. */
struct nt_pair_filter {
	__u64 bits[16];
};

struct nt_flow_rule {
	__u16 sport;		/* host order; 0 matches any */
	__u16 dport;
	__u32 flow_id;
	__u8 direction;		/* enum nt_direction */
	__u8 _pad[3];
};

/* One packet seen at one hook. */
struct nt_hop_record {
	__u64 ts_ns;		/* bpf_ktime_get_ns() */
	__u32 netns_ino;	/* with ifindex, names the device */
	__u32 ifindex;
	__u32 flow_id;
	__u32 skb_len;
	__u8 saddr[NT_ADDR_LEN];	/* inner packet */
	__u8 daddr[NT_ADDR_LEN];
	__u16 sport;		/* host order; ICMP: echo id */
	__u16 dport;
	__u32 seq;		/* TCP seq; ICMP: echo seq */
	__u32 ack;
	__u16 ip_id;
	__u16 ip_len;		/* inner L3 length (IPv6: payload length + 40) */
	__u16 payload_len;	/* L4 payload bytes: the TCP byte range is [seq, seq + payload_len) */
	__u16 gso_segs;
	__u32 vni;		/* VXLAN id when NT_F_ENCAP */
	__u8 family;
	__u8 proto;
	__u8 hook;		/* enum nt_hook */
	__u8 direction;		/* enum nt_direction */
	__u8 flags;		/* enum nt_record_flags */
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 kind;		/* enum nt_record_kind */
	__u16 reason;		/* NT_REC_DROP: the kernel's enum skb_drop_reason */
	__u8 order;		/* agent: the hook's place on the path (NT_ORDER_*), NT_ORDER_NONE if off it */
	__u8 _pad[5];
};

/* follow -w: at most this many of a packet's first bytes are copied after its hop record. */
#define NT_SNAPLEN_MAX 256	/* a power of two: hop.bpf.c bounds lengths by masking */

/*
 * A hop record with the packet's first bytes, from its MAC header at the tc hook (its
 * IP header on a device without one, such as tunl0): sent by hop's _cap programs only
 * (follow -w), cut after data[cap_len - 1], so the ring record is 104 + cap_len bytes.
 * hop.skb_len is the packet's whole length.
 */
struct nt_hop_capture {
	struct nt_hop_record hop;
	__u16 cap_len;		/* bytes of data that follow: min(snaplen, skb_len) */
	__u16 dev_type;		/* the device's ARPHRD_*: 1 Ethernet; 768 (IPIP) has no MAC header */
	__u8 _pad[4];
	__u8 data[NT_SNAPLEN_MAX];
};

/* Agent: drops counted by kernel reason and by where the packet was last seen. */
struct nt_drop_key {
	__u32 reason;		/* enum skb_drop_reason */
	__u8 order;		/* last hook seen on this node, NT_ORDER_NONE if not on a path */
	__u8 _pad[3];
};

/* Agent: TCP retransmits by flow endpoints, from the socket (addresses as in nt_flow_key).
 * No source port: each connection of a client to one service would take an entry of its
 * own and fill the map, and the metrics sum over source ports anyway. */
struct nt_retrans_key {
	__u8 saddr[NT_ADDR_LEN];
	__u8 daddr[NT_ADDR_LEN];
	__u16 dport;		/* host order */
	__u8 family;
	__u8 _pad;
};

/* Agent: index of nt_map_fail, a per-CPU count of map updates that failed (the map was
 * full, or out of memory): what each would have counted is missing from that map. */
enum nt_map_fail {
	NT_MAP_FAIL_RETRANS = 0,	/* nt_retrans: a new flow's retransmit */
	NT_MAP_FAIL_DROPS = 1,		/* nt_drops: a new (reason, order)'s drop */
	NT_MAP_FAIL_DNS = 2,		/* nt_dns_pending, nt_dns_lat, nt_dns_rcodes: a query not timed or an answer not counted */
	NT_MAP_FAIL_COUNT = 3,
};

struct nt_retrans_value {
	__u64 retransmits;	/* tracepoint hits: one per retransmitted skb */
	__u64 segments;		/* sum of their gso_segs: what went on the wire again */
};

/* Agent: where a packet was last seen on this node; a per-CPU, direct-mapped table
 * indexed by the packet hash (NT_SEEN_SLOTS, a power of two). */
#define NT_SEEN_SLOTS 4096

struct nt_seen {
	__u64 hash;		/* which packet holds the slot; 0 = free */
	__u64 ts_ns;
	__u32 order;
	__u32 _pad;
};

/* Agent: DNS over UDP, timed on the client pod's side of its node: a query (QR 0, to port 53)
 * entering the host veth is kept here until its answer (QR 1, from port 53) leaves the host
 * veth towards the same client. The key's server is the address the client asked (a ClusterIP
 * is still one at both hooks); the counts are by the server that answered (for a ClusterIP, the
 * endpoint in the conntrack entry: the DNS pod). */
#define NT_DNS_PENDING 8192
#define NT_DNS_SERVERS 256
#define NT_DNS_PORT 53

struct nt_dns_key {
	__u8 client[NT_ADDR_LEN];	/* as in nt_flow_key */
	__u8 server[NT_ADDR_LEN];
	__u16 client_port;	/* host order */
	__u16 id;		/* the DNS header's id, host order */
	__u8 family;
	__u8 _pad[3];
};

/* Agent: DNS answers per server and response code. */
struct nt_dns_rcode_key {
	__u8 server[NT_ADDR_LEN];
	__u8 family;
	__u8 rcode;		/* the header's 4-bit RCODE */
	__u8 _pad[2];
};

/* Agent: the DNS latency histogram's key (its value is a struct nt_latency). */
struct nt_dns_server_key {
	__u8 server[NT_ADDR_LEN];
	__u8 family;
	__u8 _pad[3];
};

/* Read-only settings, fixed before load. */
struct nt_config {
	__u16 vxlan_ports[NT_MAX_VXLAN_PORTS];	/* host order; 0 = unused */
	/* agent: a packet is sampled iff the top 32 bits of its hash are below this:
	 * 1 in N packets for 2^32 / N, the same packets on every node; 0 = none */
	__u32 sample_below;
	/* agent: a packet's hops are timed iff (hash & latency_mask) == 0, so 1 in
	 * latency_mask + 1 packets pays for clock reads (~30 ns each on this VM) */
	__u32 latency_mask;
	/* hop's _cap programs (follow -w): copy this many of each followed packet's first
	 * bytes (nt_hop_capture), 1 to NT_SNAPLEN_MAX */
	__u32 snaplen;
	/* hop (follow --every N, TCP): 0 keeps every packet. Else a data skb is kept iff it holds
	 * a byte whose sequence number is a multiple of 2^every_shift (N x 64 KiB), which every
	 * hook of both nodes decides alike however TSO/GSO and GRO cut the bytes; a pure ACK iff
	 * its mixed ack number has no bit of every_ack_mask (N - 1) set; SYN, RST and data-less
	 * FIN always; drops by the same rule */
	__u32 every_shift;
	__u32 every_ack_mask;
};

#endif
