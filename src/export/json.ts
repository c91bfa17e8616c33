// follow -o json: one object a line, the shape of src/flow/path.ts.
import type { PacketPath } from '../flow/path';

export function pathToJsonLine(p: PacketPath): string {
  return JSON.stringify(p);
}
