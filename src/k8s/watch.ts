// One watch request of the Kubernetes API (?watch=true: one JSON event a line), made here rather
// than with @kubernetes/client-node's Watch, which reads lines with readline (no bound on a line:
// a server that never sends a newline grows the heap without end) and hands out its abort
// controller only once the response has begun (a close() while the server has not answered cannot
// end the request, and a server that never answers holds it for ever).
import http from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';

/** The longest event line kept: etcd stores objects of at most 1.5 MiB; a longer line is hostile. */
export const MAX_WATCH_LINE = 8 << 20;
/** how long the server may take to begin its answer */
const HEADERS_MS = 30_000;
/** what is read of a refusal's body (a Status object) for its message, and for how long */
const MAX_ERROR_BODY = 64 << 10;
const ERROR_BODY_MS = 10_000;
/**
 * A watch asks the server to end it after 300 s (timeoutSeconds) and to send bookmarks meanwhile:
 * a connection silent for longer is dead (a peer gone without a reset), and is ended to start again.
 */
const SILENT_MS = 330_000;

export type WatchParams = Record<string, string | number | boolean>;

export interface WatchHandlers {
  event(type: string, object: unknown): void;
  /** the watch ended after it began: null when the server closed it, else why it failed (not after an abort) */
  done(err: Error | null): void;
}

/**
 * Starts a watch of `path`; resolves once the server answered 200 (events then go to `h`), rejects
 * with `{ statusCode, body }` for another status, or with the connection's error. `signal` ends it
 * at any time, also before the answer.
 */
export async function openWatch(kc: KubeConfig, path: string, params: WatchParams, signal: AbortSignal, h: WatchHandlers, maxLine = MAX_WATCH_LINE): Promise<void> {
  const url = new URL(kc.getCurrentCluster()!.server + path);
  url.searchParams.set('watch', 'true');
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, String(v));
  const opts: https.RequestOptions = {};
  await kc.applyToHTTPSOptions(opts);
  signal.throwIfAborted();
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = (url.protocol === 'https:' ? https : http).request(url, { ...opts, method: 'GET', signal }, resolve);
    const timer = setTimeout(() => req.destroy(new Error(`no answer in ${HEADERS_MS / 1000} s`)), HEADERS_MS);
    req.on('response', () => clearTimeout(timer));
    req.on('socket', (sock) => {
      sock.setKeepAlive(true, 30_000);
      sock.setTimeout(SILENT_MS, () => sock.destroy(new Error(`nothing from the server in ${SILENT_MS / 1000} s`)));
    });
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end();
  });
  if (res.statusCode !== 200) {
    const body = await new Promise<string>((resolve) => {
      let text = '';
      const timer = setTimeout(() => res.destroy(), ERROR_BODY_MS);
      res.on('close', () => clearTimeout(timer));
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        text += c;
        if (text.length > MAX_ERROR_BODY) res.destroy();
      });
      res.on('end', () => resolve(text));
      res.on('close', () => resolve(text.slice(0, MAX_ERROR_BODY)));
    });
    throw Object.assign(new Error(`${res.statusCode} ${res.statusMessage ?? ''}`.trim()), { statusCode: res.statusCode, body });
  }
  let ended = false;
  const end = (err: Error | null) => {
    if (ended) return;
    ended = true;
    res.destroy();
    if (!signal.aborted) h.done(err);
  };
  const line = (text: string) => {
    if (!text.trim()) return;
    let e: { type?: unknown; object?: unknown };
    try {
      e = JSON.parse(text) as typeof e;
    } catch {
      return; // not an event: skipped, as the API server never writes one
    }
    if (e && typeof e.type === 'string') h.event(e.type, e.object);
  };
  // the partial line so far, as pieces: a long line is joined once, not copied at every chunk
  let parts: string[] = [];
  let size = 0;
  res.setEncoding('utf8');
  res.on('data', (chunk: string) => {
    let from = 0;
    for (let nl = chunk.indexOf('\n'); nl >= 0 && !ended; nl = chunk.indexOf('\n', from)) {
      parts.push(chunk.slice(from, nl));
      const text = parts.join('');
      parts = [];
      size = 0;
      from = nl + 1;
      line(text);
    }
    if (ended || from >= chunk.length) return;
    parts.push(chunk.slice(from));
    size += chunk.length - from;
    if (size > maxLine) end(new Error(`a watch event longer than ${maxLine >> 20} MiB`));
  });
  res.on('end', () => end(null));
  res.on('error', (err) => end(err));
  res.on('close', () => end(null));
}
