// diagnose --dns's wire format: the query it sends, the answers it accepts (and the bytes it
// refuses), the rcode names labels carry, and the client's output lines read back.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeAnswer, encodeQuery, nameLabels, parseQueryOutcome, rcodeName } from '../../../src/flow/dns';

test('a query: id, RD set, one question, the name as length-prefixed labels, type A class IN', () => {
  const q = encodeQuery(0xbeef, 'iperf.default.svc.cluster.local');
  assert.equal(q.toString('hex'), [
    'beef', '0100', '0001', '0000', '0000', '0000',
    '05' + Buffer.from('iperf').toString('hex'), '07' + Buffer.from('default').toString('hex'), '03' + Buffer.from('svc').toString('hex'),
    '07' + Buffer.from('cluster').toString('hex'), '05' + Buffer.from('local').toString('hex'), '00', '0001', '0001',
  ].join(''));
  assert.ok(encodeQuery(1, 'a.b.').equals(encodeQuery(1, 'a.b')), 'a final dot is the same name');
});

test('names: labels of 1-63 characters, at most 253 in all; anything else is refused before a packet is made', () => {
  assert.deepEqual(nameLabels('10-244-1-5.default.pod.cluster.local'), ['10-244-1-5', 'default', 'pod', 'cluster', 'local']);
  for (const bad of ['', '.', 'a..b', 'x'.repeat(64) + '.local', `${'a.'.repeat(127)}ab`, 'a b.local', 'ünï.local', 'a/b']) {
    assert.equal(nameLabels(bad), null, JSON.stringify(bad));
  }
  assert.throws(() => encodeQuery(1, 'a..b'), RangeError);
});

/** An answer to q: the same id and question, QR set, this rcode and answer count. */
function answerTo(q: Buffer, rcode: number, ancount = 0, tc = false): Buffer {
  const a = Buffer.from(q);
  a.writeUInt16BE(0x8180 | (tc ? 0x0200 : 0) | rcode, 2);
  a.writeUInt16BE(ancount, 6);
  return Buffer.concat([a, Buffer.alloc(16 * ancount, 0xcc)]);
}

test('an answer: rcode, TC and answer count read from its header; the question must be ours (case aside)', () => {
  const q = encodeQuery(0x1234, 'iperf.default.svc.cluster.local');
  assert.deepEqual(decodeAnswer(answerTo(q, 0, 1), q), { id: 0x1234, rcode: 0, truncated: false, answers: 1 });
  assert.deepEqual(decodeAnswer(answerTo(q, 3), q), { id: 0x1234, rcode: 3, truncated: false, answers: 0 });
  assert.equal(decodeAnswer(answerTo(q, 0, 0, true), q)!.truncated, true);
  const upper = answerTo(q, 0, 1);
  upper.write('IPERF', 13, 'ascii');
  assert.equal(decodeAnswer(upper, q)!.rcode, 0, 'names compare case-insensitively (0x20 randomisation)');
});

test('hostile bytes: short, not a response, another id or another question are not our answer', () => {
  const q = encodeQuery(0x1234, 'iperf.default.svc.cluster.local');
  assert.equal(decodeAnswer(Buffer.alloc(11), q), null);
  assert.equal(decodeAnswer(q, q), null, 'QR clear: a query, not an answer');
  const other = answerTo(q, 0);
  other.writeUInt16BE(0x1235, 0);
  assert.equal(decodeAnswer(other, q), null);
  const otherName = answerTo(encodeQuery(0x1234, 'other.default.svc.cluster.local'), 0);
  assert.equal(decodeAnswer(otherName, q), null);
  assert.equal(decodeAnswer(answerTo(q, 0).subarray(0, 20), q), null, 'question cut short');
  const twoQuestions = answerTo(q, 0);
  twoQuestions.writeUInt16BE(2, 4);
  assert.equal(decodeAnswer(twoQuestions, q), null);
});

test('rcode names: the registered ones by name, the rest as their number', () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 9].map(rcodeName), ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED', 'NOTAUTH']);
  assert.equal(rcodeName(11), '11');
  assert.equal(rcodeName(15), '15');
});

test('the client\'s lines are checked when read back: shapes and ranges', () => {
  assert.deepEqual(parseQueryOutcome('{"outcome":"answer","rcode":3,"answers":0,"truncated":false,"latency_ns":1500,"sport":40000}'),
    { outcome: 'answer', rcode: 3, answers: 0, truncated: false, latency_ns: 1500, sport: 40000 });
  assert.deepEqual(parseQueryOutcome('{"outcome":"timeout","sport":1}'), { outcome: 'timeout', sport: 1 });
  assert.deepEqual(parseQueryOutcome('{"outcome":"refused","latency_ns":9,"sport":2}'), { outcome: 'refused', latency_ns: 9, sport: 2 });
  for (const bad of ['', 'null', '[]', '{"outcome":"answer","rcode":16,"answers":0,"truncated":false,"latency_ns":1,"sport":1}',
    '{"outcome":"answer","rcode":0,"answers":0,"truncated":"no","latency_ns":1,"sport":1}', '{"outcome":"timeout","sport":70000}', '{"outcome":"lost","sport":1}']) {
    assert.equal(parseQueryOutcome(bad), null, bad);
  }
});
