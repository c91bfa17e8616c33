// Talking to one node's agent: JSON requests, the NTP-style clock exchange, and the follow
// stream read line by line as it comes (no polling). Every answer is checked before use.
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { NettraceError, usageError } from '../errors';
import type { ClockSample } from '../flow/clockSync';
import { API_PORT, MAX_LINE_BYTES, parseStreamLine, type StreamMessage } from './protocol';

export interface ClientAuth {
  token: string;
  /** PEM of the CA that signed the agents' certificates (https) */
  ca?: Buffer;
}

/** --agents: URLs, and dns://NAME:PORT for every address the name has (a headless Service). */
export async function resolveAgents(list: string, auth: ClientAuth): Promise<URL[]> {
  const out: URL[] = [];
  for (const item of list.split(',').map((s) => s.trim()).filter(Boolean)) {
    const dns = /^dns:\/\/([a-zA-Z0-9.-]+)(?::(\d{1,5}))?\/?$/.exec(item);
    if (dns) {
      const port = Number(dns[2] ?? API_PORT);
      let addrs: { address: string }[];
      try {
        addrs = await lookup(dns[1]!, { all: true });
      } catch (err) {
        throw new NettraceError('NOT_FOUND', `--agents ${item}: ${dns[1]} does not resolve (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
          'check the name of the agents\' headless Service, e.g. dns://nettrace-agent.kube-system.svc:9966');
      }
      const scheme = auth.ca ? 'https' : 'http';
      for (const a of addrs) out.push(new URL(`${scheme}://${isIP(a.address) === 6 ? `[${a.address}]` : a.address}:${port}/`));
      continue;
    }
    let url: URL;
    try {
      url = new URL(item);
    } catch {
      throw usageError(`--agents: "${item}" is not a URL`, 'give http(s)://HOST:PORT or dns://NAME:PORT, comma-separated');
    }
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.pathname !== '/' || url.search) {
      throw usageError(`--agents: "${item}" is not http(s)://HOST:PORT`, 'give the agents\' trace API addresses, e.g. http://192.168.1.101:9966');
    }
    if (!url.port) url.port = String(API_PORT);
    out.push(url);
  }
  if (!out.length) throw usageError('--agents is empty', 'give the agents\' trace API addresses, e.g. http://192.168.1.101:9966');
  return out;
}

export class AgentError extends Error {
  constructor(readonly url: string, message: string) {
    super(message);
  }
}

export interface FollowStream {
  /** end it: the agent sees the connection go and detaches */
  close(): void;
  /** resolves with why it ended */
  ended: Promise<string>;
}

export class AgentClient {
  private readonly keepAlive: HttpAgent;

  constructor(readonly base: URL, private readonly auth: ClientAuth) {
    this.keepAlive = base.protocol === 'https:' ? new HttpsAgent({ keepAlive: true, maxSockets: 1, ca: auth.ca }) : new HttpAgent({ keepAlive: true, maxSockets: 1 });
  }

  get label(): string {
    return this.base.origin;
  }

  async json<T>(method: string, path: string, body?: unknown, timeoutMs = 5000): Promise<T> {
    const res = await this.send(method, path, body, timeoutMs, this.keepAlive);
    const text = await readAll(res, 1 << 20);
    if (res.statusCode !== 200) throw this.httpError(res.statusCode ?? 0, text);
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new AgentError(this.label, 'answered with something that is not JSON');
    }
  }

  /** One NTP-style exchange on the kept-alive connection: our clock, theirs, ours. */
  async clockSample(wallNs: () => bigint): Promise<ClockSample> {
    const t0 = wallNs();
    const r = await this.json<{ wall_ns?: unknown }>('GET', '/v1/time');
    const t2 = wallNs();
    if (typeof r.wall_ns !== 'string' || !/^\d{1,20}$/.test(r.wall_ns)) throw new AgentError(this.label, 'answered /v1/time with no clock reading');
    return { t0, agentNs: BigInt(r.wall_ns), t2 };
  }

  /** POST a follow request and hand out the stream's messages as they arrive. */
  async follow(body: unknown, onMessage: (m: StreamMessage) => void, connectTimeoutMs = 10_000): Promise<FollowStream> {
    const res = await this.send('POST', '/v1/follow', body, connectTimeoutMs, false);
    if (res.statusCode !== 200) throw this.httpError(res.statusCode ?? 0, await readAll(res, 1 << 16));
    // once answered, the stream lasts as long as the session: no socket timeout
    res.socket.setTimeout(0);
    let buffered = '';
    const ended = new Promise<string>((resolve) => {
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffered += chunk;
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          if (!line) continue;
          try {
            const m = parseStreamLine(line);
            if (m) onMessage(m);
          } catch (err) {
            // a malformed line (or a hop batch that does not decode) ends this agent's stream, not the client
            res.destroy();
            resolve(`it sent a malformed message (${(err as Error).message})`);
            return;
          }
        }
        if (buffered.length > MAX_LINE_BYTES) {
          res.destroy();
          resolve(`it sent a line longer than ${MAX_LINE_BYTES} bytes`);
        }
      });
      res.on('end', () => resolve('the stream ended'));
      res.on('error', (err) => resolve(`the connection failed (${err.message})`));
      res.on('close', () => resolve('the connection closed'));
    });
    return { close: () => res.destroy(), ended };
  }

  close(): void {
    this.keepAlive.destroy();
  }

  private httpError(status: number, text: string): AgentError {
    let why = text.trim().slice(0, 300);
    try {
      const e = (JSON.parse(text) as { error?: unknown }).error;
      if (typeof e === 'string') why = e.slice(0, 300);
    } catch {
      // not JSON: the text as it is
    }
    return new AgentError(this.label, status === 401 ? 'refused the token (HTTP 401): give the same --token-file as the agents' : `answered HTTP ${status}: ${why}`);
  }

  private send(method: string, path: string, body: unknown, timeoutMs: number, agent: HttpAgent | false): Promise<IncomingMessage> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const https = this.base.protocol === 'https:';
    const options = {
      method, host: this.base.hostname.replace(/^\[|\]$/g, ''), port: Number(this.base.port), path,
      headers: { authorization: `Bearer ${this.auth.token}`, ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}) },
      agent, timeout: timeoutMs, ...(https && agent === false ? { ca: this.auth.ca } : {}),
    };
    return new Promise((resolve, reject) => {
      const req = (https ? httpsRequest : httpRequest)(options, resolve);
      req.on('timeout', () => req.destroy(new Error(`no answer in ${timeoutMs} ms`)));
      req.on('error', (err: NodeJS.ErrnoException) => reject(new AgentError(this.label, err.code ? `${err.code}: ${err.message}` : err.message)));
      req.end(payload);
    });
  }
}

function readAll(res: IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (c: string) => {
      text += c;
      if (text.length > max) {
        res.destroy();
        reject(new Error(`answer longer than ${max} bytes`));
      }
    });
    res.on('end', () => resolve(text));
    res.on('error', reject);
  });
}
