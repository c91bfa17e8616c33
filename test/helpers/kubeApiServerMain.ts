// The local list/watch server of recorded API objects as a process of its own, for a test that
// needs it inside a network namespace (agents in the test cluster's nodes reach it at a node's
// address). argv: HOST KUBECONFIG_OUT [OBJECTS_JSON]; prints "listening URL" once it is.
import { copyFileSync, readFileSync } from 'node:fs';
import { recorded, startFakeApiServer } from './kubeApiServer';

const [host, out, objectsFile] = process.argv.slice(2);
const closers: (() => unknown)[] = [];
// `node --test dist/test/` runs every file under test/, this one too, without arguments: nothing to serve then
if (host !== undefined && out !== undefined) void (async () => {
  const objects = objectsFile ? JSON.parse(readFileSync(objectsFile, 'utf8')) as ReturnType<typeof recorded> : recorded();
  const api = await startFakeApiServer({ after: (fn: () => unknown) => closers.push(fn) } as never, objects, host);
  copyFileSync(api.kubeconfig, out!);
  process.stdout.write(`listening ${api.url}\n`);
})();
if (host !== undefined) for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => void Promise.all(closers.map((f) => f())).then(() => process.exit(0)));
