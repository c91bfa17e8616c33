// Generates src/probe/layout.generated.ts from the BPF objects' BTF: the layouts and enums
// of bpf/nettrace.h, the decoder of struct nt_hop_record, and each object's program and map
// names. What the kernel side defines is then written once, and a rename there fails the
// TypeScript build instead of a load at run time.
//   node dist/scripts/gen-layout.js src/probe/layout.generated.ts build/hop.bpf.o build/agent.bpf.o
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';

interface BtfType {
  id: number; kind: string; name?: string; size?: number; type_id?: number; nr_elems?: number; encoding?: string;
  linkage?: string;
  values?: { name: string; val: number }[];
  members?: { name: string; type_id: number; bits_offset: number; bitfield_size?: number }[];
  vars?: { type_id: number }[];
}

export interface Field {
  name: string;
  offset: number;
  /** 'u8' | 'u16' | 'u32' | 'u64', 'bytes' (a u8 array), 'uN[]' or 'struct NAME' (a struct inside) */
  kind: string;
  length: number;
}

const STRUCT = 'nt_hop_record';
/** a hop record, then packet bytes: a record of variable length (follow -w) */
const CAPTURE = 'nt_hop_capture';

const btfCache = new Map<string, Map<number, BtfType>>();

function btfTypes(objectPath: string): Map<number, BtfType> {
  let types = btfCache.get(objectPath);
  if (!types) {
    const json = execFileSync('bpftool', ['btf', 'dump', 'file', objectPath, '-j'], { encoding: 'utf8', maxBuffer: 256 << 20 });
    types = new Map<number, BtfType>();
    for (const t of (JSON.parse(json) as { types: BtfType[] }).types) types.set(t.id, t);
    btfCache.set(objectPath, types);
  }
  return types;
}

/** The struct's layout from the first object whose BTF has it. */
export function readLayout(objectPaths: string[], structName = STRUCT): { size: number; fields: Field[] } {
  let types: Map<number, BtfType> | undefined;
  let st: BtfType | undefined;
  for (const obj of objectPaths) {
    types = btfTypes(obj);
    st = [...types.values()].find((t) => t.kind === 'STRUCT' && t.name === structName);
    if (st) break;
  }
  if (!types || !st || !st.members) throw new Error(`struct ${structName} is not in the BTF of ${objectPaths.join(', ')}`);
  const typesOf = types;
  const resolve = (id: number): BtfType => {
    let t = typesOf.get(id);
    while (t && (t.kind === 'TYPEDEF' || t.kind === 'VOLATILE' || t.kind === 'CONST')) t = typesOf.get(t.type_id ?? -1);
    if (!t) throw new Error(`BTF type ${id} not found`);
    return t;
  };
  const fields = st.members.map((m): Field => {
    if (m.bitfield_size) throw new Error(`${structName}.${m.name}: bitfields are not supported in records`);
    if (m.bits_offset % 8) throw new Error(`${structName}.${m.name}: not byte aligned`);
    const t = resolve(m.type_id);
    const offset = m.bits_offset / 8;
    if (t.kind === 'INT' && t.size && [1, 2, 4, 8].includes(t.size)) {
      if (t.encoding === 'SIGNED') throw new Error(`${structName}.${m.name}: use unsigned fixed-width types`);
      return { name: m.name, offset, kind: `u${t.size * 8}`, length: t.size };
    }
    if (t.kind === 'ARRAY') {
      const elem = resolve(t.type_id ?? -1);
      if (elem.kind !== 'INT' || !elem.size) throw new Error(`${structName}.${m.name}: only arrays of integers are supported`);
      const count = t.nr_elems ?? 0;
      return { name: m.name, offset, kind: elem.size === 1 ? 'bytes' : `u${elem.size * 8}[]`, length: count * elem.size };
    }
    if (t.kind === 'STRUCT' && t.name) return { name: m.name, offset, kind: `struct ${t.name}`, length: t.size ?? 0 };
    throw new Error(`${structName}.${m.name}: unsupported BTF kind ${t.kind}`);
  });
  return { size: st.size ?? 0, fields };
}

/** An enum's constants from the first object whose BTF has it. */
export function readEnum(objectPaths: string[], enumName: string): [string, number][] {
  for (const obj of objectPaths) {
    const e = [...btfTypes(obj).values()].find((t) => t.kind === 'ENUM' && t.name === enumName);
    if (!e?.values) continue;
    // the values' common prefix up to an underscore: NT_ORDER_POD_EGRESS -> POD_EGRESS
    let prefix = e.values[0]?.name ?? '';
    for (const v of e.values) while (!v.name.startsWith(prefix)) prefix = prefix.slice(0, -1);
    prefix = prefix.slice(0, prefix.lastIndexOf('_') + 1);
    return e.values.map((v) => [v.name.slice(prefix.length), v.val]);
  }
  throw new Error(`enum ${enumName} is not in the BTF of ${objectPaths.join(', ')}`);
}

export const ENUMS = ['nt_order', 'nt_record_kind', 'nt_hook', 'nt_map_fail'] as const;

/** What userspace finds in a loaded object by name. */
export interface ObjectNames {
  /** the programs: BTF FUNCs with global linkage (static functions and kfuncs are not) */
  programs: string[];
  /** the maps: the VARs of the ".maps" section */
  maps: string[];
}

export function readNames(objectPath: string): ObjectNames {
  const types = btfTypes(objectPath);
  const programs = [...types.values()].filter((t) => t.kind === 'FUNC' && t.linkage === 'global').map((t) => t.name ?? '');
  const maps = [...types.values()].find((t) => t.kind === 'DATASEC' && t.name === '.maps')?.vars?.map((v) => types.get(v.type_id)?.name ?? '') ?? [];
  for (const n of [...programs, ...maps]) if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(n)) throw new Error(`${objectPath}: unexpected BTF name '${n}'`);
  return { programs, maps };
}

/** agent.bpf.o -> AGENT */
export function objectConstName(objectPath: string): string {
  return path.basename(objectPath).replace(/\.bpf\.o$/, '').replace(/\W/g, '_').toUpperCase();
}

function renderEnum(name: string, values: [string, number][]): string[] {
  return [`export const ${constName(name)} = {`, ...values.map(([k, v]) => `  ${k}: ${v},`), '} as const;', ''];
}

export interface Layout {
  size: number;
  fields: Field[];
}

/** Structs of bpf/nettrace.h whose layout userspace needs; the first one and CAPTURE get a decoder. */
export const STRUCTS = [
  'nt_hop_record', 'nt_hop_capture', 'nt_flow_key', 'nt_flow_rule', 'nt_pair_filter', 'nt_config',
  'nt_drop_key', 'nt_retrans_key', 'nt_retrans_value', 'nt_seen', 'nt_latency', 'nt_step_count',
  'nt_dns_key', 'nt_dns_rcode_key', 'nt_dns_server_key',
] as const;

/** The objects whose BTF the structs are read from, in the order searched. */
export const OBJECTS = ['build/hop.bpf.o', 'build/agent.bpf.o'] as const;

function constName(struct: string): string {
  return struct.replace(/^nt_/, '').toUpperCase();
}

function renderLayout(struct: string, layout: Layout): string[] {
  const name = constName(struct);
  return [
    `export const ${name}_SIZE = ${layout.size};`,
    `export const ${name}_FIELDS = {`,
    ...layout.fields.map((f) => `  ${f.name}: { offset: ${f.offset}, kind: '${f.kind}', length: ${f.length} },`),
    '} as const;',
    '',
  ];
}

/**
 * An object's names as `{ programs: { nt_x: 'nt_x' }, maps: { ... } }`. When its programs
 * include PREFIX_0 .. PREFIX_<ORDER.COUNT - 1>, one per hook point, also `byOrder`: those
 * names indexed by enum nt_order.
 */
function renderNames(object: string, names: ObjectNames, orderCount: number | undefined): string[] {
  const entries = (list: string[]): string[] => list.map((n) => `    ${n}: '${n}',`);
  const perOrder = orderCount === undefined ? [] : names.programs
    .filter((p) => p.endsWith('_0'))
    .map((p) => Array.from({ length: orderCount }, (_, i) => `${p.slice(0, -2)}_${i}`))
    .filter((family) => family.every((p) => names.programs.includes(p)));
  if (perOrder.length > 1) throw new Error(`${object}: more than one family of per-order programs`);
  return [
    `/** Programs and maps of bpf/${object.replace(/\.o$/, '.c')}, as named in its object's BTF. */`,
    `export const ${objectConstName(object)} = {`,
    '  programs: {',
    ...entries(names.programs),
    '  },',
    '  maps: {',
    ...entries(names.maps),
    '  },',
    ...perOrder.map((family) => `  /** [order]: the program for each hook point (enum nt_order) */\n  byOrder: [${family.map((p) => `'${p}'`).join(', ')}],`),
    '} as const;',
    '',
  ];
}

export function renderModule(
  layouts: Map<string, Layout>,
  enums: Map<string, [string, number][]> = new Map(),
  objects: Map<string, ObjectNames> = new Map(),
): string {
  const hop = layouts.get(STRUCT);
  if (!hop) throw new Error(`no layout for ${STRUCT}`);
  const orderCount = enums.get('nt_order')?.find(([k]) => k === 'COUNT')?.[1];
  return [
    `// GENERATED by scripts/gen-layout.ts from the BTF of ${OBJECTS.join(' and ')}`,
    '// (structs and enums of bpf/nettrace.h, each object\'s programs and maps).',
    '// Do not edit: change bpf/ and run `make gen`. test/unit/probe/layout.test.ts checks it is current.',
    '',
    ...[...enums].flatMap(([name, values]) => renderEnum(name, values)),
    ...[...objects].flatMap(([obj, names]) => renderNames(obj, names, orderCount)),
    ...[...layouts].flatMap(([struct, layout]) => renderLayout(struct, layout)),
    renderDecoder(hop),
    ...(layouts.has(CAPTURE) ? [renderCaptureDecoder(layouts.get(CAPTURE)!)] : []),
  ].join('\n');
}

/** The whole generated module from these objects; the text does not depend on where they are. */
export function generate(objectPaths: readonly string[]): string {
  const objs = [...objectPaths];
  return renderModule(
    new Map(STRUCTS.map((st) => [st, readLayout(objs, st)])),
    new Map(ENUMS.map((e) => [e, readEnum(objs, e)])),
    new Map(objs.map((o) => [path.basename(o), readNames(o)])),
  );
}

const tsType = (f: Field): string => (f.kind === 'bytes' ? 'Uint8Array' : 'number');

/** The expression reading field f of the record at offset o of DataView v (b: its bytes). */
function read(f: Field): string {
  const at = `o + ${f.offset}`;
  switch (f.kind) {
    case 'u8': return `v.getUint8(${at})`;
    case 'u16': return `v.getUint16(${at}, true)`;
    case 'u32': return `v.getUint32(${at}, true)`;
    // ns since boot: exact below 2^53 (104 days of uptime), then to within a few ns
    case 'u64': return `v.getUint32(${at}, true) + v.getUint32(${at} + 4, true) * 4294967296`;
    // an address: an IPv4 one (the 12 bytes after it zero) is shared, not copied, per record
    case 'bytes': return f.length === 16 ? `addr16(v, b, ${at})` : `b.slice(${at}, ${at} + ${f.length})`;
    default: throw new Error(`no decoder for ${f.kind} (${f.name})`);
  }
}

function renderDecoder(layout: Layout): string {
  const visible = layout.fields.filter((f) => !f.name.startsWith('_'));
  return [
    'export interface HopRecord {',
    ...visible.map((f) => `  ${f.name}: ${tsType(f)};`),
    '}',
    '',
    '// byte view of the last DataView decoded from: one view per ring, not one per record',
    'let lastView: DataView | null = null;',
    'let lastBytes: Uint8Array = new Uint8Array(0);',
    '',
    '// IPv4 addresses seen, by value: a record\'s address arrays are shared between records, never',
    '// written to; a flow has a handful, so a bound that is never reached on one flow',
    'const v4 = new Map<number, Uint8Array>();',
    'function addr16(v: DataView, b: Uint8Array, at: number): Uint8Array {',
    '  if (v.getUint32(at + 4, true) !== 0 || v.getUint32(at + 8, true) !== 0 || v.getUint32(at + 12, true) !== 0) return b.slice(at, at + 16);',
    '  const w = v.getUint32(at, true);',
    '  let a = v4.get(w);',
    '  if (!a) {',
    '    if (v4.size >= 4096) v4.clear();',
    '    a = b.slice(at, at + 16);',
    '    v4.set(w, a);',
    '  }',
    '  return a;',
    '}',
    '',
    'export function decodeHopRecord(v: DataView, o: number): HopRecord {',
    '  if (v !== lastView) {',
    '    lastView = v;',
    '    lastBytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);',
    '  }',
    '  const b = lastBytes;',
    '  return {',
    ...visible.map((f) => `    ${f.name}: ${read(f)},`),
    '  };',
    '}',
    '',
    '/** The same, into an object the caller reuses for every record (one that keeps a record copies it). */',
    'export function decodeHopRecordInto(v: DataView, o: number, r: HopRecord): HopRecord {',
    '  if (v !== lastView) {',
    '    lastView = v;',
    '    lastBytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);',
    '  }',
    '  const b = lastBytes;',
    ...visible.map((f) => `  r.${f.name} = ${read(f)};`),
    '  return r;',
    '}',
    '',
  ].join('\n');
}

/**
 * The decoder of struct nt_hop_capture: its hop record (decodeHopRecord), its integers, and its
 * last member, the packet bytes, cut to cap_len and to the record's length in the ring (the
 * kernel sends only the bytes it copied, so the array's tail is not there).
 */
function renderCaptureDecoder(layout: Layout): string {
  const hop = layout.fields.find((f) => f.kind === `struct ${STRUCT}`);
  const data = layout.fields[layout.fields.length - 1];
  const len = layout.fields.find((f) => f.name === 'cap_len');
  if (!hop || !data || data.kind !== 'bytes' || !len || len.kind !== 'u16') {
    throw new Error(`${CAPTURE}: expected a struct ${STRUCT}, a u16 cap_len and a byte array last`);
  }
  // the integers between the hop record and the bytes (cap_len among them)
  const ints = layout.fields.filter((f) => f !== hop && f !== data && !f.name.startsWith('_'));
  if (ints.some((f) => !/^u(8|16|32)$/.test(f.kind))) throw new Error(`${CAPTURE}: only u8, u16 and u32 fields besides the record and the bytes`);
  return [
    'export interface HopCapture {',
    `  ${hop.name}: HopRecord;`,
    ...ints.map((f) => `  ${f.name}: number;`),
    `  /** the packet's first bytes as the kernel copied them (at most ${data.length}) */`,
    `  ${data.name}: Uint8Array;`,
    '}',
    '',
    `/** A ring record of \`length\` bytes: a hop record (HOP_RECORD_SIZE: no bytes, the other fields 0) or a ${CAPTURE}. */`,
    'export function decodeHopCapture(v: DataView, o: number, length: number): HopCapture {',
    `  if (length < ${data.offset}) return { ${hop.name}: decodeHopRecord(v, o), ${ints.map((f) => `${f.name}: 0, `).join('')}${data.name}: new Uint8Array(0) };`,
    `  const n = Math.min(v.getUint16(o + ${len.offset}, true), ${data.length}, length - ${data.offset});`,
    `  const at = v.byteOffset + o + ${data.offset};`,
    '  return {',
    `    ${hop.name}: decodeHopRecord(v, o + ${hop.offset}),`,
    ...ints.map((f) => `    ${f.name}: ${read(f)},`),
    `    ${data.name}: new Uint8Array(v.buffer.slice(at, at + n)),`,
    '  };',
    '}',
    '',
  ].join('\n');
}

if (require.main === module) {
  const [out, ...objs] = process.argv.slice(2);
  if (!out || objs.length === 0) {
    process.stderr.write('usage: gen-layout OUT.ts OBJECT...\n');
    process.exit(2);
  }
  writeFileSync(out, generate(objs));
  process.stdout.write(`  GEN   ${out}\n`);
}
