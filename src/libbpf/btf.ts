// Read one enum's names out of the kernel's BTF (/sys/kernel/btf/vmlinux), e.g. the
// drop reasons, so labels follow the running kernel rather than a copied table.
import { readFileSync } from 'node:fs';
import { LibbpfError } from './error';

const BTF_MAGIC = 0xeb9f;
const KIND_ENUM = 6;
const KIND_ENUM64 = 19;

/** Bytes that follow a type's 12-byte header, by kind (uapi linux/btf.h). */
function extraBytes(kind: number, vlen: number): number {
  switch (kind) {
    case 1: return 4; // INT
    case 3: return 12; // ARRAY
    case 4: case 5: return 12 * vlen; // STRUCT, UNION
    case KIND_ENUM: return 8 * vlen;
    case 13: return 8 * vlen; // FUNC_PROTO
    case 14: return 4; // VAR
    case 15: return 12 * vlen; // DATASEC
    case 17: return 4; // DECL_TAG
    case KIND_ENUM64: return 12 * vlen;
    default: return 0; // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
  }
}

/** value -> name of every constant of `enum name`; throws when the BTF has no such enum. */
export function readBtfEnum(name: string, path = '/sys/kernel/btf/vmlinux'): Map<number, string> {
  let b: Buffer;
  try {
    b = readFileSync(path);
  } catch (err) {
    throw new LibbpfError('read-btf', `reading ${path}`, (err as NodeJS.ErrnoException).errno ?? 0, undefined, (err as Error).message);
  }
  if (b.readUInt16LE(0) !== BTF_MAGIC) throw new LibbpfError('read-btf', `reading ${path}`, 0, undefined, 'not BTF');
  const hdrLen = b.readUInt32LE(4);
  const typeOff = hdrLen + b.readUInt32LE(8);
  const typeLen = b.readUInt32LE(12);
  const strOff = hdrLen + b.readUInt32LE(16);
  const str = (off: number) => b.toString('latin1', strOff + off, b.indexOf(0, strOff + off));
  for (let p = typeOff; p < typeOff + typeLen; ) {
    const nameOff = b.readUInt32LE(p);
    const info = b.readUInt32LE(p + 4);
    const kind = (info >>> 24) & 0x1f;
    const vlen = info & 0xffff;
    p += 12;
    if ((kind === KIND_ENUM || kind === KIND_ENUM64) && str(nameOff) === name) {
      const out = new Map<number, string>();
      const step = kind === KIND_ENUM ? 8 : 12;
      for (let i = 0; i < vlen; i++) out.set(b.readUInt32LE(p + i * step + 4), str(b.readUInt32LE(p + i * step)));
      return out;
    }
    p += extraBytes(kind, vlen);
  }
  throw new LibbpfError('read-btf', `enum ${name}`, 0, undefined, `not in ${path}`);
}
