// Read one enum's names out of the kernel's BTF (/sys/kernel/btf/vmlinux), e.g. the
// drop reasons, so labels follow the running kernel rather than a copied table; and whether
// it has a function (a kfunc the programs call).
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

const KIND_FUNC = 12;

/** The BTF's bytes, checked; the caller walks its types with eachType. */
function loadBtf(path: string): Buffer {
  let b: Buffer;
  try {
    b = readFileSync(path);
  } catch (err) {
    throw new LibbpfError('read-btf', `reading ${path}`, (err as NodeJS.ErrnoException).errno ?? 0, undefined, (err as Error).message);
  }
  if (b.readUInt16LE(0) !== BTF_MAGIC) throw new LibbpfError('read-btf', `reading ${path}`, 0, undefined, 'not BTF');
  return b;
}

/**
 * Calls fn with each type's kind, name offset, vlen and the offset of the bytes after its header,
 * until fn returns something other than undefined, which is returned. Names are read only on
 * demand (str): vmlinux has some 150k types.
 */
function eachType<T>(b: Buffer, fn: (kind: number, nameOff: number, vlen: number, p: number, str: (off: number) => string) => T | undefined): T | undefined {
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
    const r = fn(kind, nameOff, vlen, p, str);
    if (r !== undefined) return r;
    p += extraBytes(kind, vlen);
  }
  return undefined;
}

/** value -> name of every constant of `enum name`; throws when the BTF has no such enum. */
export function readBtfEnum(name: string, path = '/sys/kernel/btf/vmlinux'): Map<number, string> {
  const b = loadBtf(path);
  const found = eachType(b, (kind, nameOff, vlen, p, str) => {
    if ((kind !== KIND_ENUM && kind !== KIND_ENUM64) || str(nameOff) !== name) return undefined;
    const out = new Map<number, string>();
    const step = kind === KIND_ENUM ? 8 : 12;
    for (let i = 0; i < vlen; i++) out.set(b.readUInt32LE(p + i * step + 4), str(b.readUInt32LE(p + i * step)));
    return out;
  });
  if (!found) throw new LibbpfError('read-btf', `enum ${name}`, 0, undefined, `not in ${path}`);
  return found;
}

/** Whether the BTF has a function of this name: how a kernel shows it has a kfunc our programs call. */
export function btfHasFunc(name: string, path = '/sys/kernel/btf/vmlinux'): boolean {
  return eachType(loadBtf(path), (kind, nameOff, _vlen, _p, str) => (kind === KIND_FUNC && str(nameOff) === name ? true : undefined)) ?? false;
}
