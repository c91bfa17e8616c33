/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one definition of everything the kernel side and userspace share.
 * Fixed-width fields with explicit padding: src/flow/record.generated.ts is
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
	__u8 _pad;
};

/* Read-only settings, fixed before load. */
struct nt_config {
	__u16 vxlan_ports[NT_MAX_VXLAN_PORTS];	/* host order; 0 = unused */
};

#endif
