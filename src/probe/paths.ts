// Where the compiled BPF objects are: build/ at the package root, or NETTRACE_BPF_DIR.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { NettraceError } from '../errors';

function packageRoot(): string {
  let dir = __dirname;
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
  return dir;
}

export function bpfObjectPath(name: string): string {
  const file = path.join(process.env.NETTRACE_BPF_DIR ?? path.join(packageRoot(), 'build'), `${name}.bpf.o`);
  if (!existsSync(file)) throw new NettraceError('BPF', `BPF object ${file} is missing`, 'run `make build`');
  return file;
}
