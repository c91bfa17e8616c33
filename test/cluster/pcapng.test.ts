// follow -w on a real two-node Flannel VXLAN cluster: the file tshark and tcpdump read holds one
// interface per node/device/hook seen, one packet per hop follow printed, with its step in the
// comment, and the pods' inner headers decode at every hop, the VXLAN-wrapped ones included.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { interfaceName } from '../../src/export/pcapngFile';
import type { PacketPath } from '../../src/flow/path';
import type { TestbedState } from '../../src/testbed/testbed';
import { jsonLines, nsExec, nsSpawn, sleep, startFollow, withTestbed } from '../helpers/cluster';
import { needsRoot } from '../helpers/privileged';

const A = '10.244.1.5';
const B = '10.244.2.8';

function podNs(tb: TestbedState, name: string): string {
  return tb.pods.find((p) => p.name === name)!.netns;
}

function tempFile(t: TestContext, name: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'nt-pcapng-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, name);
}

const FIELDS = ['frame.interface_name', 'frame.comment', 'frame.len', 'frame.cap_len', 'frame.time_epoch', 'ip.src', 'ip.dst',
  'ip.id', 'icmp.type', 'tcp.srcport', 'tcp.dstport', 'udp.dstport', 'vxlan.vni'] as const;
type Row = Record<(typeof FIELDS)[number], string>;

/** One row a packet, as tshark decodes it with flannel's port as VXLAN. */
function tsharkRows(file: string): Row[] {
  const r = spawnSync('tshark', ['-r', file, '-d', 'udp.port==8472,vxlan', '-T', 'fields', '-E', 'separator=|', ...FIELDS.flatMap((f) => ['-e', f])],
    { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split('\n').map((l) => Object.fromEntries(l.split('|').map((v, i) => [FIELDS[i], v])) as Row);
}

/** tcpdump's packets: one a timestamped line (a VXLAN packet's inner one follows on the next). */
function tcpdumpPackets(file: string): string[] {
  const r = spawnSync('tcpdump', ['-nn', '-r', file], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split(/\n(?=\d\d:\d\d:\d\d\.)/).map((l) => l.replace(/\n/g, ' '));
}

const last = (v: string): string => v.split(',').pop() ?? '';

/** The file against what follow printed: interfaces, one packet a hop in order, comments, times, inner headers. */
function assertFileMatches(rows: Row[], paths: PacketPath[], snaplen: number): void {
  const hops = paths.flatMap((p) => p.steps.map((h) => ({ p, h })));
  assert.equal(rows.length, hops.length, 'one packet block per hop follow reported');
  const names = [...new Set(hops.map(({ h }) => interfaceName(h)))];
  assert.deepEqual([...new Set(rows.map((r) => r['frame.interface_name']))].sort(), names.sort(), 'one interface per node/device/hook');
  hops.forEach(({ p, h }, i) => {
    const r = rows[i]!;
    const what = `packet ${i} (${p.direction} step ${h.step} ${interfaceName(h)})`;
    assert.equal(r['frame.interface_name'], interfaceName(h), what);
    assert.equal(r['frame.comment'], `step ${h.step} ${h.name} (${p.direction})`, what);
    // the kernel's time on the wall clock, in ns: the same instant as the hop's `time` (µs)
    const [sec, frac] = r['frame.time_epoch'].split('.');
    const micros = new Date(Number(sec) * 1000).toISOString().replace(/\.\d{3}Z$/, `.${frac!.slice(0, 6)}Z`);
    assert.equal(micros, h.time, what);
    assert.equal(frac!.length, 9, `${what}: nanoseconds`);
    assert.equal(Number(r['frame.cap_len']), Math.min(snaplen, Number(r['frame.len'])), what);
    // the pods' packet at every hop: after the outer header on the underlay, the inner one
    const [src, dst] = p.direction === 'request' ? [A, B] : [B, A];
    assert.equal(last(r['ip.src']), src, `${what}: inner source`);
    assert.equal(last(r['ip.dst']), dst, `${what}: inner destination`);
    assert.equal(Number(last(r['ip.id'])), p.packet.ip_id, `${what}: inner IP id`);
    if (p.flow.proto === 'icmp') assert.equal(r['icmp.type'], p.direction === 'request' ? '8' : '0', what);
    if (p.flow.proto === 'tcp') assert.deepEqual([r['tcp.srcport'], r['tcp.dstport']].map(Number), [p.packet.sport, p.packet.dport], what);
    const wrapped = h.step === 5 || h.step === 6;
    assert.equal(r['ip.src'].split(',').length, wrapped ? 2 : 1, `${what}: ${wrapped ? 'VXLAN-wrapped' : 'not wrapped'}`);
    if (wrapped) assert.deepEqual([r['udp.dstport'], r['vxlan.vni']], ['8472', '1'], what);
  });
}

test('ICMP: follow -w writes every hop of two pings and their replies; tshark and tcpdump read them', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const file = tempFile(t, 'ping.pcapng');
  const f = await startFollow(t, ['--netns', tb.nodes.map((n) => n.netns).join(','), '-o', 'json', '--flow', `${A} -> ${B}`,
    '--count', '4', '--timeout', '20', '-w', file]);
  assert.equal(nsExec(podNs(tb, 'pod-a'), ['ping', '-c', '2', '-i', '0.2', B]).status, 0);
  assert.equal(await f.exited, 0, f.stderr());
  const paths = jsonLines<PacketPath>(f.stdout());
  assert.equal(paths.length, 4);
  assert.ok(paths.every((p) => p.complete && p.steps.length === 10), JSON.stringify(paths.map((p) => p.steps.length)));
  assert.match(f.stderr(), new RegExp(`^wrote 40 packets to ${file.replace(/[.]/g, '\\.')}$`, 'm'));

  const rows = tsharkRows(file);
  assertFileMatches(rows, paths, 128);
  // both directions cross ten hook points, each with its own hook: 20 interfaces
  assert.equal(new Set(rows.map((r) => r['frame.interface_name'])).size, 20);

  const packets = tcpdumpPackets(file);
  assert.equal(packets.length, 40);
  for (const [i, line] of packets.entries()) {
    const dir = paths[Math.floor(i / 10)]!.direction;
    assert.match(line, dir === 'request' ? /IP 10\.244\.1\.5 > 10\.244\.2\.8: ICMP echo request/ : /IP 10\.244\.2\.8 > 10\.244\.1\.5: ICMP echo reply/, line);
  }
  assert.equal(packets.filter((l) => /\.8472: /.test(l)).length, 8, 'steps 5 and 6 of each packet: VXLAN on the underlay');
});

test('TCP: follow -w --snaplen 100 stopped by SIGINT: the file holds every hop printed, headers decoded', async (t) => {
  if (!needsRoot(t)) return;
  const tb = withTestbed(t);
  const file = tempFile(t, 'http.pcapng');
  nsSpawn(t, podNs(tb, 'pod-b'), ['python3', '-m', 'http.server', '80', '--bind', B]);
  await sleep(800);
  const f = await startFollow(t, ['--netns', tb.nodes.map((n) => n.netns).join(','), '-o', 'json', '--flow', `${A} -> ${B}:80`,
    '--proto', 'tcp', '-w', file, '--snaplen', '100']);
  const r = nsExec(podNs(tb, 'pod-a'), ['curl', '-sS', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', `http://${B}/`]);
  assert.equal(r.stdout, '200', r.stderr);
  await sleep(1500);
  f.child.kill('SIGINT');
  assert.equal(await f.exited, 130, f.stderr());
  const paths = jsonLines<PacketPath>(f.stdout());
  assert.ok(paths.length >= 5, `paths: ${paths.length}`);
  const rows = tsharkRows(file);
  assertFileMatches(rows, paths, 100);
  assert.equal(tcpdumpPackets(file).length, rows.length);
  assert.ok(rows.some((x) => Number(x['frame.len']) > 100 && x['frame.cap_len'] === '100'), 'a packet longer than the snaplen is cut there');
});
