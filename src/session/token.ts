// The bearer token agents and clients share (a Kubernetes Secret mounted as a file).
import { readFileSync } from 'node:fs';
import { usageError } from '../errors';

const MIN_LENGTH = 16;

export function readTokenFile(path: string, flag = '--token-file'): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw usageError(`${flag} ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
      'give the file that holds the trace API token (the same on agents and clients)');
  }
  if (text.length < MIN_LENGTH || /\s/.test(text)) {
    throw usageError(`${flag} ${path}: the token must be one word of at least ${MIN_LENGTH} characters`,
      'make one with `head -c 32 /dev/urandom | base64 > FILE` and give the same file to agents and clients');
  }
  return text;
}
