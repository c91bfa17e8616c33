// deploy/ against the Kubernetes API's schemas, and what a user of the manifests relies on.
//
// The schemas: kubernetes-models (JSON schemas and TypeScript types generated from the upstream
// Kubernetes OpenAPI spec) and @kubernetes-models/prometheus-operator (from the operator's CRDs,
// for the PodMonitor). Their JSON schemas check types, enums, formats and required fields but, like
// the OpenAPI spec, allow unknown fields, which the API server refuses (kubectl's strict field
// validation): unknown fields are found by type-checking each document against the package's
// generated types with the TypeScript compiler. YAML is read as YAML 1.1, as kubectl reads it.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import ts from 'typescript';
import { parseAllDocuments } from 'yaml';

/** the repository: from dist/test/unit/deploy, or the working directory when compiled elsewhere */
const ROOT = [path.resolve(__dirname, '../../../..'), process.cwd()].find((d) => existsSync(path.join(d, 'deploy/kustomization.yaml')));
if (!ROOT) throw new Error('deploy/kustomization.yaml not found: run from the repository');
const DEPLOY = path.join(ROOT, 'deploy');

type Obj = Record<string, any>;
interface Doc { file: string; obj: Obj }
type ModelClass = new (data: unknown) => { validate(): void };

// The model packages are ES modules only; this project compiles to CommonJS, where TypeScript
// would turn import() into require(), which their exports do not allow.
const importEsm = new Function('specifier', 'return import(specifier)') as (specifier: string) => Promise<Record<string, unknown>>;

/** the package and path of a kind's model: kubernetes-models/apps/v1, .../v1 for the core group */
function modelModule(apiVersion: string): string {
  if (apiVersion.startsWith('monitoring.coreos.com/')) return `@kubernetes-models/prometheus-operator/${apiVersion}`;
  return `kubernetes-models/${apiVersion}`;
}

async function schemaErrors(obj: Obj): Promise<string | null> {
  const Model = (await importEsm(modelModule(obj.apiVersion)))[obj.kind] as ModelClass | undefined;
  if (!Model) return `no schema for ${obj.apiVersion} ${obj.kind}`;
  try {
    new Model(obj).validate();
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

/** the model packages' declarations, parsed once */
const parsed = new Map<string, ts.SourceFile | undefined>();

/**
 * Type-checks each object against its kind's generated interface (I<Kind>), in one program:
 * TypeScript's excess-property check names a field the API does not have. Returns the
 * compiler's messages per object.
 */
function typeErrors(objs: Obj[]): string[][] {
  // beside the repository's node_modules, never written to disk
  const file = path.join(ROOT!, 'deploy', '__manifests_typecheck__.ts');
  const kinds = [...new Set(objs.map((o) => `${o.apiVersion} ${o.kind}`))];
  const lines = kinds.map((k, i) => {
    const [apiVersion, kind] = k.split(' ');
    return `import type { I${kind} as T${i} } from '${modelModule(apiVersion!)}/${kind}';`;
  });
  const first = lines.length;
  for (const [i, o] of objs.entries()) lines.push(`export const d${i}: T${kinds.indexOf(`${o.apiVersion} ${o.kind}`)} = ${JSON.stringify(o)};`);
  const source = lines.join('\n');
  const options: ts.CompilerOptions = {
    noEmit: true, strict: true, skipLibCheck: true, types: [],
    module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022,
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  host.getSourceFile = (name, lang, ...rest) => {
    if (name === file) return ts.createSourceFile(name, source, lang);
    if (!parsed.has(name)) parsed.set(name, getSourceFile(name, lang, ...rest));
    return parsed.get(name);
  };
  host.fileExists = (name) => name === file || fileExists(name);
  const program = ts.createProgram([file], options, host);
  const out: string[][] = objs.map(() => []);
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const text = ts.flattenDiagnosticMessageText(d.messageText, '\n');
    const line = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line : -1;
    // an error in the imports (a kind without a model) belongs to every object
    if (line < first) out.forEach((errs) => errs.push(text));
    else out[line - first]!.push(text);
  }
  return out;
}

function parse(file: string, text: string): Obj[] {
  return parseAllDocuments(text, { version: '1.1' }).map((doc) => {
    assert.deepEqual(doc.errors.map((e) => e.message), [], `${file}: YAML errors`);
    return doc.toJS() as Obj | null;
  }).filter((o): o is Obj => o !== null);
}

function load(name: string): Doc[] {
  return parse(name, readFileSync(path.join(DEPLOY, name), 'utf8')).map((obj) => ({ file: name, obj }));
}

const clone = <T>(x: T): T => structuredClone(x);

const kustomization = parse('kustomization.yaml', readFileSync(path.join(DEPLOY, 'kustomization.yaml'), 'utf8'))[0]!;
const manifestFiles = readdirSync(DEPLOY).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort();
const docs = manifestFiles.flatMap(load);

function one(kind: string): Obj {
  const found = docs.filter((d) => d.obj.kind === kind);
  assert.equal(found.length, 1, `one ${kind} in deploy/`);
  return found[0]!.obj;
}

const daemonSet = one('DaemonSet');
const podSpec = daemonSet.spec.template.spec as Obj;
const agent = (podSpec.containers as Obj[]).find((c) => c.name === 'agent')!;
const argv = [...agent.command, ...agent.args] as string[];

function flag(name: string): string | undefined {
  const i = argv.indexOf(name);
  return i < 0 ? undefined : argv[i + 1];
}

describe('deploy/ manifests validate against the Kubernetes API schemas', () => {
  let typeErrs: string[][];
  before(() => {
    typeErrs = typeErrors(docs.map((d) => d.obj));
  });

  test('every file has documents and is in the kustomization (the PodMonitor on its own)', () => {
    assert.ok(docs.length >= 6, `documents: ${docs.map((d) => d.obj.kind).join(', ')}`);
    const listed = [...(kustomization.resources as string[])].sort();
    assert.deepEqual(listed, manifestFiles.filter((f) => f !== 'podmonitor.yaml'));
  });

  for (const [i, d] of docs.entries()) {
    test(`${d.file}: ${d.obj.kind} ${d.obj.metadata?.name}`, async () => {
      assert.equal(await schemaErrors(d.obj), null);
      assert.deepEqual(typeErrs[i], [], 'fields the API does not have, or of the wrong type');
    });
  }

  describe('the validators reject what the API server would', () => {
    const netnsMount = (ds: Obj) => (ds.spec.template.spec.containers[0].volumeMounts as Obj[]).find((m) => m.mountPath === '/run/netns')!;

    test('a wrong type (hostNetwork: "true") fails the schema', async () => {
      const ds = clone(daemonSet);
      ds.spec.template.spec.hostNetwork = 'true';
      assert.match(await schemaErrors(ds) ?? '', /hostNetwork must be boolean/);
    });

    test('a value outside the enum (mountPropagation: HostToContainr) fails the schema', async () => {
      const ds = clone(daemonSet);
      netnsMount(ds).mountPropagation = 'HostToContainr';
      assert.match(await schemaErrors(ds) ?? '', /mountPropagation must be equal to one of the allowed values/);
    });

    test('the PodMonitor schema bites too (a port number where the CRD wants a port name)', async () => {
      const pm = clone(one('PodMonitor'));
      pm.spec.podMetricsEndpoints[0].port = 9101;
      assert.match(await schemaErrors(pm) ?? '', /port must be string/);
    });

    test('a typo\'d field (mountPropogation) fails the type check, in Kubernetes and CRD kinds', () => {
      const ds = clone(daemonSet);
      const m = netnsMount(ds);
      m.mountPropogation = m.mountPropagation;
      delete m.mountPropagation;
      const pm = clone(one('PodMonitor'));
      pm.spec.podMetricsEndpoints[0].pathh = '/metrics';
      const [dsErrs, pmErrs] = typeErrors([ds, pm]);
      assert.match(dsErrs!.join('\n'), /'"?mountPropogation"?' does not exist in type 'IVolumeMount'/);
      assert.match(pmErrs!.join('\n'), /'"?pathh"?' does not exist in type/);
    });
  });
});

describe('what a user relies on', () => {
  test('the DaemonSet runs `nettrace agent` in the host network with the token from the mounted Secret', () => {
    assert.deepEqual(argv.slice(0, 2), ['nettrace', 'agent']);
    assert.equal(podSpec.hostNetwork, true);
    const tokenFile = flag('--token-file');
    assert.ok(tokenFile, '--token-file is given');
    const mount = (agent.volumeMounts as Obj[]).find((m) => m.mountPath === path.posix.dirname(tokenFile));
    assert.ok(mount, `a volume is mounted at ${path.posix.dirname(tokenFile)}`);
    const volume = (podSpec.volumes as Obj[]).find((v) => v.name === mount.name)!;
    assert.ok(volume.secret, 'that volume is a Secret');
    // kustomize makes the Secret from deploy/token: its key is the file name --token-file reads
    const generator = (kustomization.secretGenerator as Obj[]).find((g) => g.name === volume.secret.secretName);
    assert.ok(generator, `kustomization.yaml generates Secret ${volume.secret.secretName}`);
    assert.deepEqual(generator.files, [path.posix.basename(tokenFile)]);
    assert.match(readFileSync(path.join(ROOT, '.gitignore'), 'utf8'), /^deploy\/token$/m, 'the token file is never committed');
  });

  test('the trace API and /metrics listen on the node IP from the downward API; probes use /healthz', () => {
    const env = Object.fromEntries((agent.env as Obj[]).map((e) => [e.name, e.valueFrom?.fieldRef?.fieldPath]));
    assert.equal(env.HOST_IP, 'status.hostIP');
    assert.equal(env.NODE_NAME, 'spec.nodeName');
    assert.equal(flag('--api-addr'), '$(HOST_IP):9966');
    assert.equal(flag('--metrics-addr'), '$(HOST_IP):9101');
    const ports = new Map<string, number>((agent.ports as Obj[]).map((p) => [p.name, p.containerPort]));
    assert.deepEqual(Object.fromEntries(ports), { api: 9966, metrics: 9101 });
    for (const probe of [agent.readinessProbe, agent.livenessProbe]) {
      assert.equal(probe.httpGet.path, '/healthz');
      assert.equal(ports.get(probe.httpGet.port) ?? probe.httpGet.port, 9101);
    }
  });

  test('capabilities, not privileged: BPF, PERFMON, NET_ADMIN, SYS_ADMIN', () => {
    const sc = agent.securityContext as Obj;
    assert.notEqual(sc.privileged, true);
    assert.deepEqual(sc.capabilities.drop, ['ALL']);
    for (const cap of ['BPF', 'PERFMON', 'NET_ADMIN', 'SYS_ADMIN']) assert.ok(sc.capabilities.add.includes(cap), cap);
  });

  test('the node\'s network namespaces: /run/netns with HostToContainer propagation, BTF read-only', () => {
    const byPath = (p: string) => {
      const m = (agent.volumeMounts as Obj[]).find((x) => x.mountPath === p)!;
      return { mount: m, volume: (podSpec.volumes as Obj[]).find((v) => v.name === m.name)! };
    };
    const netns = byPath('/run/netns');
    assert.equal(netns.mount.mountPropagation, 'HostToContainer');
    assert.equal(netns.volume.hostPath.path, '/run/netns');
    const btf = byPath('/sys/kernel/btf');
    assert.equal(btf.mount.readOnly, true);
    assert.equal(btf.volume.hostPath.path, '/sys/kernel/btf');
    assert.equal(byPath('/run/containerd/containerd.sock').mount.readOnly, true);
  });

  test('memory request and limit, a CPU request', () => {
    assert.equal(agent.resources.requests.memory, '100Mi');
    assert.equal(agent.resources.limits.memory, '256Mi');
    assert.equal(agent.resources.requests.cpu, '50m');
  });

  test('the headless Service nettrace-agent.kube-system:9966 selects the DaemonSet\'s pods', () => {
    const svc = one('Service');
    assert.equal(svc.metadata.name, 'nettrace-agent');
    assert.equal(svc.metadata.namespace, 'kube-system');
    assert.equal(svc.spec.clusterIP, 'None');
    const labels = daemonSet.spec.template.metadata.labels as Obj;
    assert.ok(Object.keys(svc.spec.selector).length > 0);
    for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(labels[k], v, `pod label ${k}`);
    assert.equal(svc.metadata.namespace, daemonSet.metadata.namespace);
    const [port] = svc.spec.ports as Obj[];
    assert.equal(port!.port, 9966);
    assert.ok((agent.ports as Obj[]).some((p) => p.name === port!.targetPort && p.containerPort === 9966));
  });

  test('RBAC: the DaemonSet\'s account may get, list and watch pods, nodes, services and endpointslices', () => {
    const role = one('ClusterRole');
    const binding = one('ClusterRoleBinding');
    const account = one('ServiceAccount');
    assert.equal(podSpec.serviceAccountName, account.metadata.name);
    assert.equal(binding.roleRef.kind, 'ClusterRole');
    assert.equal(binding.roleRef.name, role.metadata.name);
    assert.ok((binding.subjects as Obj[]).some((s) => s.kind === 'ServiceAccount' && s.name === account.metadata.name && s.namespace === account.metadata.namespace));
    const allows = (group: string, resource: string, verb: string) => (role.rules as Obj[]).some((r) =>
      r.apiGroups.includes(group) && r.resources.includes(resource) && r.verbs.includes(verb));
    for (const [group, resource] of [['', 'pods'], ['', 'nodes'], ['', 'services'], ['discovery.k8s.io', 'endpointslices']] as const) {
      for (const verb of ['get', 'list', 'watch']) assert.ok(allows(group, resource, verb), `${verb} ${resource}`);
    }
    const verbs = new Set((role.rules as Obj[]).flatMap((r) => r.verbs as string[]));
    assert.deepEqual([...verbs].sort(), ['get', 'list', 'watch'], 'read-only');
  });

  test('the PodMonitor scrapes the agents\' metrics port', () => {
    const pm = one('PodMonitor');
    const labels = daemonSet.spec.template.metadata.labels as Obj;
    for (const [k, v] of Object.entries(pm.spec.selector.matchLabels)) assert.equal(labels[k], v, `pod label ${k}`);
    const [ep] = pm.spec.podMetricsEndpoints as Obj[];
    assert.equal(ep!.path, '/metrics');
    assert.ok((agent.ports as Obj[]).some((p) => p.name === ep!.port && p.containerPort === 9101));
  });
});

// kubectl's own kustomize, where kubectl is installed: the rendered objects (with the generated
// Secret and the names kustomize rewrites) validate too. It renders locally, no cluster involved.
const kubectl = (() => {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore', timeout: 20_000 });
    return true;
  } catch {
    return false;
  }
})();

describe('kubectl kustomize deploy/', { skip: kubectl ? false : 'kubectl is not installed' }, () => {
  let dir: string;
  before(() => {
    // the manifests without a token file, whether or not this checkout has one
    dir = mkdtempSync(path.join(os.tmpdir(), 'nettrace-deploy-'));
    for (const f of ['kustomization.yaml', ...manifestFiles]) copyFileSync(path.join(DEPLOY, f), path.join(dir, f));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('stops when deploy/token is missing: no placeholder token reaches a cluster', () => {
    assert.throws(() => execFileSync('kubectl', ['kustomize', dir], { stdio: 'pipe', timeout: 60_000 }), /token/);
  });

  test('renders, and every rendered object validates; the DaemonSet mounts the generated Secret', async () => {
    writeFileSync(path.join(dir, 'token'), 'dGhlLXRva2VuLW9mLXRoaXMtdGVzdC0wMTIzNDU2Nzg5\n');
    const objs = parse('kubectl kustomize', execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 60_000 }));
      assert.deepEqual(objs.map((o) => o.kind).sort(), ['ClusterRole', 'ClusterRoleBinding', 'DaemonSet', 'Secret', 'Service', 'ServiceAccount']);
      for (const o of objs) assert.equal(await schemaErrors(o), null, `${o.kind} ${o.metadata.name}`);
      assert.deepEqual(typeErrors(objs).flat(), []);
      const secret = objs.find((o) => o.kind === 'Secret')!;
      assert.equal(secret.metadata.namespace, 'kube-system');
      assert.ok(secret.data.token, 'the Secret holds the key token');
      const volumes = objs.find((o) => o.kind === 'DaemonSet')!.spec.template.spec.volumes as Obj[];
    assert.ok(volumes.some((v) => v.secret?.secretName === secret.metadata.name), `a volume of Secret ${secret.metadata.name}`);
  });
});
