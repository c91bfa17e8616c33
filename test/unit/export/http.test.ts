// --metrics-addr parsing: what a user types, and the one-line errors for what is wrong.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseListenAddress } from '../../../src/export/http';

test('HOST:PORT, [V6]:PORT and :PORT', () => {
  assert.deepEqual(parseListenAddress('127.0.0.1:9101'), { host: '127.0.0.1', port: 9101 });
  assert.deepEqual(parseListenAddress('[::1]:9101'), { host: '::1', port: 9101 });
  assert.deepEqual(parseListenAddress(':9101'), { host: '0.0.0.0', port: 9101 });
  assert.deepEqual(parseListenAddress('localhost:0'), { host: 'localhost', port: 0 });
});

test('bad addresses name what is wrong and what to give', () => {
  for (const [s, want] of [['9101', /is not HOST:PORT/], ['host:', /is not HOST:PORT/], ['1.2.3.4:65536', /above 65535/],
    ['[nope]:80', /is not HOST:PORT|not an IPv6 address/], ['a b:80', /is not HOST:PORT|not an address/]] as const) {
    assert.throws(() => parseListenAddress(s), (e: Error & { code?: string; next?: string }) => {
      assert.equal(e.code, 'E_USAGE');
      assert.match(e.message, want);
      assert.match(e.next ?? '', /HOST:PORT/);
      return true;
    }, s);
  }
});

test('a malformed request gets a 4xx and the server goes on serving', async () => {
  const { serve } = await import('../../../src/export/http');
  const { connect } = await import('node:net');
  const server = await serve({ host: '127.0.0.1', port: 0 }, { '/healthz': async () => ({ status: 200, type: 'text/plain', body: 'ok\n' }) });
  const port = (server.address() as { port: number }).port;
  const raw = (request: string) => new Promise<string>((resolve) => {
    const s = connect(port, '127.0.0.1', () => s.write(request));
    let out = '';
    s.on('data', (d) => (out += d.toString()));
    s.on('close', () => resolve(out));
    s.setTimeout(2000, () => s.destroy());
  });
  try {
    for (const bad of ['GET http://[/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 'GET //[ HTTP/1.1\r\nConnection: close\r\n\r\n', '\x00\x01garbage\r\n\r\n', 'POST /healthz HTTP/1.1\r\nConnection: close\r\n\r\n']) {
      assert.match(await raw(bad), /^HTTP\/1\.1 4\d\d/, JSON.stringify(bad));
    }
    assert.match(await raw('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 200[\s\S]*ok/);
  } finally {
    server.close();
  }
});
