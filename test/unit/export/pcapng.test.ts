// pcapng blocks against the format (SHB, IDB and its options, EPB lengths and padding), the file
// follow -w writes read back by tshark and tcpdump when they are installed, and -w's usage errors.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { interfaceBlock, LINKTYPE, packetBlock, PcapngSection, sectionHeaderBlock } from '../../../src/export/pcapng';
import { hopBlocks, interfaceName, PcapngFile } from '../../../src/export/pcapngFile';
import type { PacketPath } from '../../../src/flow/path';
import { NettraceError } from '../../../src/errors';
import { ether, ipv4, vxlan } from '../../helpers/packets';

/** One block: its type, its total length (checked against the trailing copy), its body. */
function blocks(b: Buffer): { type: number; body: Buffer }[] {
  const out: { type: number; body: Buffer }[] = [];
  for (let off = 0; off < b.length;) {
    const type = b.readUInt32LE(off);
    const total = b.readUInt32LE(off + 4);
    assert.equal(total % 4, 0, `block at ${off}: total length ${total} is not a multiple of 4`);
    assert.equal(b.readUInt32LE(off + total - 4), total, `block at ${off}: trailing length`);
    out.push({ type, body: b.subarray(off + 8, off + total - 4) });
    off += total;
  }
  return out;
}

/** Options from off to opt_endofopt: code -> values; every value padded to 32 bits. */
function opts(body: Buffer, off: number): Map<number, Buffer[]> {
  const m = new Map<number, Buffer[]>();
  for (;;) {
    const code = body.readUInt16LE(off);
    const len = body.readUInt16LE(off + 2);
    if (code === 0) {
      assert.equal(len, 0);
      assert.equal(off + 4, body.length, 'opt_endofopt ends the block');
      return m;
    }
    m.set(code, [...(m.get(code) ?? []), body.subarray(off + 4, off + 4 + len)]);
    off += 4 + ((len + 3) & ~3);
  }
}

test('section header block: magic, version 1.0, unknown section length, the application', () => {
  const [shb, ...rest] = blocks(sectionHeaderBlock('nettrace'));
  assert.equal(rest.length, 0);
  assert.equal(shb!.type, 0x0a0d0d0a);
  assert.equal(shb!.body.readUInt32LE(0), 0x1a2b3c4d);
  assert.deepEqual([shb!.body.readUInt16LE(4), shb!.body.readUInt16LE(6)], [1, 0]);
  assert.equal(shb!.body.readBigInt64LE(8), -1n);
  assert.equal(opts(shb!.body, 16).get(4)?.[0]?.toString(), 'nettrace');
});

test('interface block: link type, snaplen, if_name, if_description, if_tsresol 9 (ns)', () => {
  const [idb] = blocks(interfaceBlock({ name: 'node1/tunl0/egress', description: 'a tunnel', linkType: LINKTYPE.RAW, snaplen: 128 }));
  assert.equal(idb!.type, 1);
  assert.equal(idb!.body.readUInt16LE(0), 101);
  assert.equal(idb!.body.readUInt16LE(2), 0);
  assert.equal(idb!.body.readUInt32LE(4), 128);
  const o = opts(idb!.body, 8);
  assert.equal(o.get(2)?.[0]?.toString(), 'node1/tunl0/egress');
  assert.equal(o.get(3)?.[0]?.toString(), 'a tunnel');
  assert.deepEqual([...o.get(9)![0]!], [9]);
});

test('enhanced packet block: interface, 64-bit ns timestamp, lengths, data padded to 32 bits, comment', () => {
  const ts = 1_764_000_000_123_456_789n;
  for (const n of [0, 1, 2, 3, 4, 5, 98]) {
    const data = Uint8Array.from({ length: n }, (_, i) => i + 1);
    const [epb] = blocks(packetBlock({ interfaceId: 3, timestampNs: ts, data, originalLength: 1500, comment: 'step 4 routing (request)' }));
    assert.equal(epb!.type, 6);
    const b = epb!.body;
    assert.equal(b.readUInt32LE(0), 3);
    assert.equal((BigInt(b.readUInt32LE(4)) << 32n) | BigInt(b.readUInt32LE(8)), ts);
    assert.equal(b.readUInt32LE(12), n, 'captured length');
    assert.equal(b.readUInt32LE(16), 1500, 'original length');
    const padded = (n + 3) & ~3;
    assert.deepEqual([...b.subarray(20, 20 + n)], [...data]);
    assert.ok(b.subarray(20 + n, 20 + padded).every((x) => x === 0), 'padding is zeros');
    assert.equal(opts(b, 20 + padded).get(1)?.[0]?.toString(), 'step 4 routing (request)');
  }
  // the original length is never below what was captured
  const [short] = blocks(packetBlock({ interfaceId: 0, timestampNs: 1n, data: new Uint8Array(8), originalLength: 0 }));
  assert.equal(short!.body.readUInt32LE(16), 8);
  assert.throws(() => packetBlock({ interfaceId: 0, timestampNs: -1n, data: new Uint8Array(0), originalLength: 0 }), RangeError);
});

test('a section writes the header once and each interface block the first time its name is seen', () => {
  const s = new PcapngSection('nettrace');
  const eth = { name: 'node1/cni0/ingress', linkType: LINKTYPE.ETHERNET, snaplen: 64 } as const;
  const raw = { name: 'node1/tunl0/egress', linkType: LINKTYPE.RAW, snaplen: 64 } as const;
  const pkt = { timestampNs: 5n, data: new Uint8Array(4), originalLength: 4 };
  const all = Buffer.concat([s.packet(eth, pkt), s.packet(raw, pkt), s.packet(eth, pkt), s.start()]);
  const bs = blocks(all);
  assert.deepEqual(bs.map((b) => b.type), [0x0a0d0d0a, 1, 6, 1, 6, 6]);
  assert.deepEqual(bs.filter((b) => b.type === 6).map((b) => b.body.readUInt32LE(0)), [0, 1, 0]);
  assert.deepEqual(s.interfaces, ['node1/cni0/ingress', 'node1/tunl0/egress']);
});

const A = '10.244.1.5';
const B = '10.244.2.8';

/** A ping's request path of three hops: the pod's eth0, node1's underlay (VXLAN), an IPIP tunnel. */
function pathOf(): PacketPath {
  const hop = (step: number, name: string, node: string, device: string, hook: 'ingress' | 'egress', pod?: string) => ({
    step, name, node, device, hook, ts_ns: step * 1000, latency_ns: 0, ...(pod ? { pod } : {}),
  });
  return {
    flow: { src: A, sport: 0, dst: B, dport: 0, proto: 'icmp' }, direction: 'request',
    packet: { src: A, sport: 0, dst: B, dport: 0, ip_id: 7, len: 84, payload_len: 56, gso_segs: 1 },
    steps: [
      hop(1, 'container sends', 'node1', 'eth0', 'egress', 'pod-a'),
      hop(5, 'encapsulation', 'node1', 'eth0', 'egress'),
      hop(4, 'routing', 'node2', 'tunl0', 'egress'),
    ],
    total_ns: 0, complete: true, drop: null,
  };
}

test('hop blocks: node/device/hook names, the pod beside its eth0, RAW for a device without a MAC header', () => {
  const p = pathOf();
  assert.equal(interfaceName(p.steps[0]!), 'node1/eth0@pod-a/egress');
  assert.equal(interfaceName(p.steps[1]!), 'node1/eth0/egress');
  const raw = hopBlocks(p, p.steps[2]!, { bytes: { data: new Uint8Array(20), originalLength: 84, ethernet: false }, wallNs: 9n }, 128);
  assert.equal(raw.iface.linkType, LINKTYPE.RAW);
  assert.match(raw.iface.description!, /no MAC header/);
  assert.equal(raw.packet.comment, 'step 4 routing (request)');
  const none = hopBlocks(p, p.steps[1]!, { bytes: undefined, wallNs: 9n }, 128);
  assert.equal(none.iface.linkType, LINKTYPE.ETHERNET);
  assert.equal(none.packet.data.length, 0);
  assert.match(none.packet.comment, /bytes not kept/);
});

const has = (tool: string): boolean => spawnSync(tool, ['--version'], { encoding: 'utf8' }).status === 0;

function icmpEcho(): { inner: Buffer; vxlan: Buffer } {
  const inner = ipv4(A, B, { proto: 'icmp', id: 0x1234, icmpSeq: 1, payload: 56 }, { id: 7 });
  // flannel's VXLAN on the underlay: outer Ethernet, IP, UDP to 8472, the VXLAN header (VNI 1), the inner frame
  return { inner, vxlan: vxlan(ether(inner), '192.168.1.101', '192.168.1.102') };
}

test('the file follow -w writes: tshark reads every hop and decodes the inner ICMP, tcpdump a file of Ethernet interfaces', (t) => {
  if (!has('tshark') || !has('tcpdump')) {
    t.skip('tshark or tcpdump not installed (scripts/deps.sh installs both)');
    return;
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'nt-pcapng-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'ping.pcapng');
  const { inner, vxlan } = icmpEcho();
  const at = 1_764_000_000_000_000_000n;
  const w = new PcapngFile(file, 128);
  w.write(pathOf(), [
    { bytes: { data: ether(inner), originalLength: inner.length + 14, ethernet: true }, wallNs: at },
    { bytes: { data: vxlan.subarray(0, 128), originalLength: vxlan.length, ethernet: true }, wallNs: at + 1500n },
    { bytes: { data: inner, originalLength: inner.length, ethernet: false }, wallNs: at + 2001n },
  ]);
  w.close();
  assert.equal(w.packets, 3);

  const ts = spawnSync('tshark', ['-r', file, '-d', 'udp.port==8472,vxlan', '-T', 'fields', '-E', 'separator=|',
    '-e', 'frame.interface_name', '-e', 'frame.comment', '-e', 'frame.len', '-e', 'frame.cap_len', '-e', 'ip.src', '-e', 'ip.dst',
    '-e', 'icmp.type', '-e', 'icmp.ident', '-e', 'frame.time_epoch'], { encoding: 'utf8' });
  assert.equal(ts.status, 0, ts.stderr);
  const rows = ts.stdout.trim().split('\n').map((l) => l.split('|'));
  assert.equal(rows.length, 3);
  assert.deepEqual(rows.map((r) => r[0]), ['node1/eth0@pod-a/egress', 'node1/eth0/egress', 'node2/tunl0/egress']);
  assert.deepEqual(rows.map((r) => r[1]), ['step 1 container sends (request)', 'step 5 encapsulation (request)', 'step 4 routing (request)']);
  assert.deepEqual(rows.map((r) => [r[2], r[3]]), [['98', '98'], [String(vxlan.length), '128'], ['84', '84']]);
  // the outer header's addresses, then the inner one's: every hop decodes to the pods' ICMP echo
  for (const r of rows) {
    assert.equal(r[4]!.split(',').pop(), A);
    assert.equal(r[5]!.split(',').pop(), B);
    assert.equal(r[6], '8');
    assert.equal(r[7], '4660');
  }
  assert.equal(rows[1]![4], '192.168.1.101,10.244.1.5');
  // nanoseconds kept: the third hop is 2.001 µs after the first
  assert.equal(rows[2]![8], '1764000000.000002001');

  // libpcap (tcpdump) reads a section whose interfaces share one link type: a VXLAN path's, all Ethernet
  const ethFile = path.join(dir, 'eth.pcapng');
  const e = new PcapngFile(ethFile, 128);
  const p = pathOf();
  e.write({ ...p, steps: p.steps.slice(0, 2) }, [
    { bytes: { data: ether(inner), originalLength: inner.length + 14, ethernet: true }, wallNs: at },
    { bytes: { data: vxlan.subarray(0, 128), originalLength: vxlan.length, ethernet: true }, wallNs: at + 1500n },
  ]);
  e.close();
  const td = spawnSync('tcpdump', ['-nn', '-r', ethFile], { encoding: 'utf8' });
  assert.equal(td.status, 0, td.stderr);
  // one packet a timestamped line; tcpdump prints a VXLAN packet's inner one on the next line
  const packets = td.stdout.split(/\n(?=\d\d:\d\d:\d\d\.)/).map((l) => l.replace(/\n/g, ' '));
  assert.equal(packets.length, 2, td.stdout);
  assert.match(packets[0]!, /IP 10\.244\.1\.5 > 10\.244\.2\.8: ICMP echo request, id 4660, seq 1/);
  assert.match(packets[1]!, /IP 192\.168\.1\.101\.51000 > 192\.168\.1\.102\.8472: .*IP 10\.244\.1\.5 > 10\.244\.2\.8: ICMP echo request/);
  // and says why it stops at a RAW interface (tunl0) after Ethernet ones: tshark reads those
  const mixed = spawnSync('tcpdump', ['-nn', '-r', file], { encoding: 'utf8' });
  assert.match(mixed.stderr, /different from the type of the first interface/);
});

test('-w FILE that cannot be written: one E_USAGE line, nothing else', (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'nt-pcapng-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, 'file'), '');
  const bad = path.join(dir, 'file', 'x.pcapng');
  assert.throws(() => new PcapngFile(bad, 128), (e: unknown) => e instanceof NettraceError && e.code === 'E_USAGE'
    && /^nettrace: E_USAGE: -w \S+x\.pcapng: cannot write it \(ENOTDIR\); give a file in a directory you can write$/.test(e.line()));
  // an empty follow still leaves a readable file: the section header alone
  const empty = path.join(dir, 'empty.pcapng');
  new PcapngFile(empty, 128).close();
  assert.deepEqual(blocks(readFileSync(empty)).map((b) => b.type), [0x0a0d0d0a]);
  // a follow that never started leaves none
  const never = path.join(dir, 'never.pcapng');
  new PcapngFile(never, 128).discard();
  assert.equal(existsSync(never), false);
});

const MAIN = path.resolve(__dirname, '../../../src/cli/main.js');
const FLOW = ['follow', '--flow', `${A} -> ${B}`];

test('follow -w / --snaplen usage errors: bounds, --snaplen alone, -w through agents', () => {
  const cli = (args: string[]) => spawnSync(process.execPath, [MAIN, ...FLOW, ...args], { encoding: 'utf8', timeout: 30_000 });
  for (const [args, what] of [
    [['-w', '/tmp/x.pcapng', '--snaplen', '0'], /--snaplen takes a whole number of bytes from 1 to 256/],
    [['-w', '/tmp/x.pcapng', '--snaplen', '257'], /--snaplen takes a whole number of bytes from 1 to 256/],
    [['-w', '/tmp/x.pcapng', '--snaplen', '12x'], /--snaplen takes a whole number of bytes from 1 to 256/],
    [['--snaplen', '64'], /^nettrace: E_USAGE: --snaplen goes with -w; give -w FILE too, or leave --snaplen out\n$/],
    [['-w', '/tmp/nt-never.pcapng', '--agents', 'http://127.0.0.1:1', '--token-file', '/dev/null'],
      /^nettrace: E_USAGE: -w is not supported through agents yet; run follow -w on the node itself/],
  ] as const) {
    const r = cli([...args]);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, what);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});
