// The agent's HTTP endpoint: /metrics for Prometheus, /healthz, and whatever else the
// agent mounts. Listening problems become one clear error, before anything is attached.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { isIP } from 'node:net';
import { usageError } from '../errors';

export interface ListenAddress {
  host: string;
  port: number;
}

/** "HOST:PORT", "[V6]:PORT" or ":PORT" (all addresses). */
export function parseListenAddress(s: string, flag = '--metrics-addr'): ListenAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(s.trim());
  const next = 'give HOST:PORT, e.g. 127.0.0.1:9101, [::1]:9101 or :9101';
  if (!m) throw usageError(`${flag} ${JSON.stringify(s)} is not HOST:PORT`, next);
  const host = m[1] ?? (m[2] || '0.0.0.0');
  const port = Number(m[3]);
  if (port > 65535) throw usageError(`${flag} ${s}: port ${port} is above 65535`, next);
  if (m[1] !== undefined && isIP(host) !== 6) throw usageError(`${flag} ${s}: ${host} is not an IPv6 address`, next);
  if (m[2] && isIP(host) === 0 && !/^[a-zA-Z0-9.-]+$/.test(host)) throw usageError(`${flag} ${s}: ${host} is not an address or host name`, next);
  return { host, port };
}

export type Route = (url: URL, req: IncomingMessage) => Promise<{ status: number; type: string; body: string }>;

export async function serve(addr: ListenAddress, routes: Record<string, Route>, flag = '--metrics-addr'): Promise<Server> {
  // the timeouts below are enforced on this interval (Node's default is 30 s)
  const server = createServer({ connectionsCheckingInterval: 1000 }, (req, res) => {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://agent');
    } catch {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('malformed request target\n');
      return;
    }
    const route = req.method === 'GET' ? routes[url.pathname] : undefined;
    if (!route) {
      res.writeHead(req.method === 'GET' ? 404 : 405, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    route(url, req).then(
      (r) => res.writeHead(r.status, { 'content-type': r.type }).end(r.body),
      (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`error: ${err.message}\n`),
    );
  });
  // a stranger may connect and send nothing, or drip a request: bound both
  server.headersTimeout = 10_000;
  server.requestTimeout = 15_000;
  server.maxConnections = 64;
  await listen(server, addr, flag);
  return server;
}

/** Listen, with listening problems as one clear usage error, before anything is attached. */
export async function listen(server: Server, addr: ListenAddress, flag: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const where = `${addr.host}:${addr.port}`;
      if (err.code === 'EADDRINUSE') reject(usageError(`${flag} ${where}: the port is in use`, 'pick a free port, or stop what listens there (ss -ltnp)'));
      else if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND') reject(usageError(`${flag} ${where}: no such address on this host`, 'listen on an address this host has, or :PORT for all'));
      else if (err.code === 'EACCES') reject(usageError(`${flag} ${where}: not allowed to listen there`, 'use a port above 1023, or run as root'));
      else reject(err);
    });
    server.listen(addr.port, addr.host, () => resolve());
  });
}
