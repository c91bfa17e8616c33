import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NettraceError } from '../../../src/errors';
import { formatFlow, parseFlowSpec } from '../../../src/flow/spec';

test('SRC -> DST:PORT, proto from ports', () => {
  assert.deepEqual(parseFlowSpec('10.244.1.5 -> 10.244.2.8:80'), { src: '10.244.1.5', dst: '10.244.2.8', sport: 0, dport: 80, proto: 'tcp', family: 4 });
  assert.equal(parseFlowSpec('10.244.1.5->10.244.2.8').proto, 'icmp');
  assert.equal(parseFlowSpec('10.244.1.5:5000 -> 10.244.2.8:53', 'udp').sport, 5000);
});

test('IPv6 with brackets', () => {
  const f = parseFlowSpec('[fd00::5]:1234 -> fd00::8', 'tcp');
  assert.deepEqual([f.src, f.sport, f.dst, f.dport, f.family], ['fd00::5', 1234, 'fd00::8', 0, 6]);
  assert.equal(formatFlow(f), '[fd00::5]:1234 -> fd00::8 tcp');
});

test('bad input: one clear usage error each, naming what to write', () => {
  const cases: [string, RegExp][] = [
    ['10.244.1.5', /no single "->"/],
    ['a -> b', /"a" is not an IP address/],
    ['10.244.1.5 -> 10.244.2.8:99999', /port "99999"/],
    ['10.244.1.5 -> 10.244.2.8:http', /port "http"/],
    ['10.244.1.5 -> fd00::8', /different IP families/],
    ['1.2.3.4 -> 5.6.7.8 -> 9.9.9.9', /no single "->"/],
  ];
  for (const [text, re] of cases) {
    assert.throws(() => parseFlowSpec(text), (e: unknown) => e instanceof NettraceError && e.code === 'E_USAGE' && e.exitCode === 2 && re.test(e.message) && /--flow '10\.244/.test(e.next), text);
  }
  assert.throws(() => parseFlowSpec('1.2.3.4:1 -> 5.6.7.8:2', 'icmp'), /ICMP has no ports/);
});

test('an IPv4-mapped IPv6 address is the IPv4 address: the packets on the wire are IPv4', () => {
  assert.deepEqual(parseFlowSpec('::ffff:10.244.1.5 -> 10.244.2.8:80'), { src: '10.244.1.5', dst: '10.244.2.8', sport: 0, dport: 80, proto: 'tcp', family: 4 });
  // with a port, in hex, written out in full, upper case: every spelling
  const f = parseFlowSpec('[::ffff:10.244.1.5]:41586 -> [0:0:0:0:0:FFFF:0af4:0208]:80');
  assert.deepEqual([f.src, f.sport, f.dst, f.dport, f.family], ['10.244.1.5', 41586, '10.244.2.8', 80, 4]);
  assert.equal(formatFlow(f), '10.244.1.5:41586 -> 10.244.2.8:80 tcp');
  assert.equal(parseFlowSpec('10.244.1.5 -> ::ffff:a00:1').dst, '10.0.0.1');
  // other IPv6 addresses stay IPv6, and families must still agree
  assert.equal(parseFlowSpec('fd00::ffff:1:2 -> fd00::8').src, 'fd00::ffff:1:2');
  assert.equal(parseFlowSpec('::1 -> ::2').family, 6);
  assert.throws(() => parseFlowSpec('::ffff:10.244.1.5 -> fd00::8'), /different IP families/);
});
