// Where the package's files are: the BPF objects in build/ at the package root (or
// NETTRACE_BPF_DIR), and package.json for the version.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { NettraceError } from '../errors';

function readPackage(dir: string): { name?: unknown; version?: unknown } | null {
  try {
    return JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
  } catch {
    return null;
  }
}

/**
 * The nearest directory above this file whose package.json is nettrace's: the checkout, or where
 * npm installed the package. Compiled elsewhere (a private --outDir), the working directory.
 */
export function packageRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (readPackage(dir)?.name === 'nettrace') return dir;
    if (path.dirname(dir) === dir) return process.cwd();
  }
}

/** package.json's version; null when no package.json of nettrace's is found (--version then says so). */
export function packageVersion(): string | null {
  const version = readPackage(packageRoot())?.version;
  return typeof version === 'string' ? version : null;
}

export function bpfObjectPath(name: string): string {
  const file = path.join(process.env.NETTRACE_BPF_DIR ?? path.join(packageRoot(), 'build'), `${name}.bpf.o`);
  if (!existsSync(file)) throw new NettraceError('BPF', `BPF object ${file} is missing`, 'run `make build`');
  return file;
}
