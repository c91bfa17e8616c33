// follow -o json: one object a line, the shape of design §5.
import type { PacketPath } from '../flow/path';

export function pathToJsonLine(p: PacketPath): string {
  return JSON.stringify(p);
}
