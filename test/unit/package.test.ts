// What `npm pack` ships: the CLI, the compiled JavaScript, the BPF objects (without DWARF, with
// BTF), the dashboard and alert rules, README and LICENSE; no tests, fixtures or source maps.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { generate, OBJECTS } from '../../scripts/gen-layout';
import { packageRoot } from '../../src/probe/paths';

const ROOT = packageRoot();
const SHIPPED = ['package.json', 'LICENSE', 'README.md', 'bin/nettrace', 'dist/src/cli/main.js', 'build/hop.bpf.o', 'build/agent.bpf.o',
  // the CRI v1 messages nettrace speaks, as compiled code: no .proto file to find at run time
  'dist/src/k8s/criApi.js',
  'grafana/nettrace-dashboard.json', 'grafana/alerts.yaml'];

interface PackResult { filename: string; size: number; unpackedSize: number; files: { path: string; size: number }[] }

function npmPack(cwd: string, args: string[]): PackResult {
  const out = execFileSync('npm', ['pack', '--json', '--no-audit', '--no-fund', ...args], { cwd, encoding: 'utf8', timeout: 300_000, stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
  const r = JSON.parse(out) as PackResult[];
  assert.equal(r.length, 1);
  return r[0]!;
}

function checkFileList(files: string[]): void {
  for (const f of SHIPPED) assert.ok(files.includes(f), `${f} is shipped`);
  // empty.bpf.o is the benchmark's baseline program: nettrace never loads it
  const unwanted = files.filter((f) => /(^|\/)(test|tests|fixtures|bench)\/|\.test\.|\.map$|\.ts$|^src\/|^bpf\/|vmlinux\.h$|empty\.bpf\.o$/.test(f));
  assert.deepEqual(unwanted, [], 'no tests, fixtures, sources or maps');
  assert.ok(files.every((f) => /^(package\.json|LICENSE|README\.md|bin\/|dist\/src\/|build\/[^/]+\.bpf\.o$|grafana\/)/.test(f)), `only what "files" names: ${files.join(' ')}`);
}

const has = (tool: string) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;

test('npm pack --dry-run: the files the package ships', { skip: !existsSync(path.join(ROOT, 'build/hop.bpf.o')) && 'not built: run `make build`' }, () => {
  // --ignore-scripts: listing must not run prepack, which rebuilds this checkout
  const r = npmPack(ROOT, ['--dry-run', '--ignore-scripts']);
  checkFileList(r.files.map((f) => f.path));
});

const canBuild = ['git', 'make', 'clang', 'bpftool', 'llvm-strip', 'tar'].filter((t) => !has(t));
const isCheckout = existsSync(path.join(ROOT, '.git'));

test('npm pack from a clean copy: prepack builds, ships objects without DWARF and with their BTF, and the packed CLI runs',
  { timeout: 600_000, skip: (!isCheckout && 'not a git checkout') || (canBuild.length > 0 && `missing ${canBuild.join(', ')}`) || (!existsSync('/sys/kernel/btf/vmlinux') && 'no kernel BTF for vmlinux.h') },
  (t) => {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'nt-pack-'));
    try {
      // what a clone holds: tracked files and new ones not ignored (no build/, dist/, node_modules/)
      const repo = path.join(tmp, 'repo');
      mkdirSync(repo);
      const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8' }).split('\0').filter(Boolean);
      const present = files.filter((f) => existsSync(path.join(ROOT, f)));
      execFileSync('sh', ['-c', `tar -c --null -T - -f - | tar -x -f - -C '${repo}'`], { cwd: ROOT, input: present.join('\0') });
      assert.ok(!existsSync(path.join(repo, 'build')) && !existsSync(path.join(repo, 'dist')));
      // npm ci would fetch the same modules: the checkout's are used
      symlinkSync(path.join(ROOT, 'node_modules'), path.join(repo, 'node_modules'));

      const r = npmPack(repo, ['--pack-destination', tmp]);
      checkFileList(r.files.map((f) => f.path));
      const out = path.join(tmp, 'out');
      mkdirSync(out);
      execFileSync('tar', ['-xzf', path.join(tmp, r.filename), '-C', out]);
      const pkg = path.join(out, 'package');

      for (const name of ['hop', 'agent']) {
        const obj = readFileSync(path.join(pkg, 'build', `${name}.bpf.o`));
        const built = readFileSync(path.join(repo, 'build', `${name}.bpf.o`));
        assert.ok(obj.equals(built), `${name}: the shipped object is the one prepack stripped`);
        assert.equal(obj.indexOf('.debug_info'), -1, `${name}: no DWARF`);
        assert.notEqual(obj.indexOf('.BTF.ext'), -1, `${name}: .BTF.ext kept`);
        assert.equal(spawnSync('bpftool', ['btf', 'dump', 'file', path.join(pkg, 'build', `${name}.bpf.o`)]).status, 0, `${name}: bpftool reads its BTF`);
      }
      // the layouts, program and map names generated from the stripped objects' BTF are the checked-in ones
      assert.equal(generate(OBJECTS.map((o) => path.join(pkg, o))), readFileSync(path.join(ROOT, 'src/probe/layout.generated.ts'), 'utf8'));

      // the packed CLI, as `npm i -g` links it: bin/nettrace with the package's own layout
      symlinkSync(path.join(ROOT, 'node_modules'), path.join(pkg, 'node_modules'));
      const version = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
      assert.equal(execFileSync(path.join(pkg, 'bin/nettrace'), ['--version'], { cwd: tmp, encoding: 'utf8' }), `${version}\n`);
      // kubectl runs a kubectl-NAME on PATH as `kubectl NAME`: package.json links the same CLI under
      // that name too, as `npm i -g` does
      const pkgJson = JSON.parse(readFileSync(path.join(pkg, 'package.json'), 'utf8')) as { bin: Record<string, string> };
      assert.equal(pkgJson.bin['kubectl-nettrace'], 'bin/nettrace');
      symlinkSync(path.join(pkg, 'bin/nettrace'), path.join(tmp, 'kubectl-nettrace'));
      const plugin = execFileSync(path.join(tmp, 'kubectl-nettrace'), ['--help'], { cwd: tmp, encoding: 'utf8' });
      assert.match(plugin, /^Usage: kubectl nettrace \[options\] \[command\]/);
      const withoutBpfDir = { ...process.env };
      delete withoutBpfDir.NETTRACE_BPF_DIR;
      const objPath = execFileSync(process.execPath, ['-p', `require(${JSON.stringify(path.join(pkg, 'dist/src/probe/paths.js'))}).bpfObjectPath('agent')`],
        { cwd: tmp, encoding: 'utf8', env: withoutBpfDir }).trim();
      assert.equal(objPath, path.join(pkg, 'build/agent.bpf.o'));
      // the packed CRI source reads its messages from the package alone: a missing socket is the one-line error
      const cri = execFileSync(process.execPath, ['-e', `new (require(${JSON.stringify(path.join(pkg, 'dist/src/k8s/criClient.js'))}).CriClient)('/x').close();` +
        `require(${JSON.stringify(path.join(pkg, 'dist/src/k8s/cri.js'))}).createCriSource([${JSON.stringify(path.join(tmp, 'no.sock'))}]).ready().catch((e) => console.log(e.line()))`],
        { cwd: tmp, encoding: 'utf8' });
      assert.equal(cri, `nettrace: E_NOT_FOUND: no CRI socket at ${path.join(tmp, 'no.sock')}; give --cri-socket PATH of containerd/CRI-O, or --kubeconfig\n`);
      t.diagnostic(`tarball ${r.filename}: ${r.size} bytes, ${r.unpackedSize} unpacked, ${r.files.length} files`);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
