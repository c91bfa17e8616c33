// The Kubernetes client (30 MB of JS heap, 60 MB of RSS) and gRPC are loaded only when a source of
// names is chosen: an agent or a follow without one must not carry them.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';

const DIST_SRC = path.resolve(__dirname, '../../../src');

/** The heavy packages that requiring this module (in a fresh node) loads. */
function heavyLoadedBy(module: string): string[] {
  const script = `require(${JSON.stringify(path.join(DIST_SRC, module))});
const loaded = Object.keys(require.cache);
console.log(JSON.stringify(['@kubernetes/client-node', '@grpc/grpc-js', 'yaml'].filter((p) => loaded.some((f) => f.includes('/node_modules/' + p + '/')))));`;
  return JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 })) as string[];
}

test('the agent and the CLI\'s name resolution load no Kubernetes client nor gRPC until a source is chosen', () => {
  assert.deepEqual(heavyLoadedBy('agent/agent.js'), []);
  assert.deepEqual(heavyLoadedBy('cli/names.js'), []);
  assert.deepEqual(heavyLoadedBy('k8s/open.js'), []);
  // every command loads the CLI and the testbed (for --netns defaults): not the CRI testbed's gRPC, nor testbed policy's YAML
  assert.deepEqual(heavyLoadedBy('testbed/testbed.js'), []);
});
