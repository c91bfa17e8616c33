// A BPF object file: open, set read-only config, switch programs off, load, find programs and maps.
import { LibbpfError } from './error';
import { captureLibbpfLog, libbpfLogTail, resetLibbpfLog } from './log';
import { BpfMap } from './map';
import { c, koffi, lastErrno } from './native';

export interface BpfProgram {
  readonly name: string;
  readonly fd: number;
}

export class BpfObject {
  private loaded = false;
  private closed = false;
  /**
   * maps handed out, one per name: closing the object closes them, so none reads a freed or
   * reused fd. One per name, not one per call: the agent asks for its maps on every scrape.
   */
  private readonly maps = new Map<string, BpfMap>();

  private constructor(readonly path: string, private readonly handle: unknown) {}

  static open(path: string): BpfObject {
    captureLibbpfLog();
    resetLibbpfLog();
    const handle = c.bpf_object__open_file(path, null);
    if (!handle) {
      const errno = lastErrno();
      throw new LibbpfError('open-object', `opening BPF object ${path}`, errno, libbpfLogTail(5).join('\n'));
    }
    return new BpfObject(path, handle);
  }

  /** Bytes of a global data section (".rodata" holds `const volatile` config), writable until load. */
  sectionData(section: string): Buffer {
    this.assertNotLoaded(`write ${section}`);
    const map = this.mapHandle(section);
    const size = [0];
    const ptr = c.bpf_map__initial_value(map, size);
    if (!ptr) throw new LibbpfError('find', `section ${section} of ${this.path}`, 0, undefined, 'it has no data');
    return Buffer.from(koffi.view(ptr, size[0] ?? 0));
  }

  setAutoload(program: string, on: boolean): void {
    this.assertNotLoaded('switch programs');
    c.bpf_program__set_autoload(this.programHandle(program), on);
  }

  setMaxEntries(map: string, entries: number): void {
    this.assertNotLoaded('resize maps');
    const ret = c.bpf_map__set_max_entries(this.mapHandle(map), entries) as number;
    if (ret < 0) throw new LibbpfError('map', `resizing map ${map}`, ret);
  }

  load(): void {
    resetLibbpfLog();
    const ret = c.bpf_object__load(this.handle) as number;
    if (ret < 0) {
      // The verifier's reasoning is in libbpf's log; its last lines say why.
      const tail = libbpfLogTail(25).join('\n');
      throw new LibbpfError('load-object', `loading ${this.path}`, ret, tail);
    }
    this.loaded = true;
  }

  program(name: string): BpfProgram {
    const fd = c.bpf_program__fd(this.programHandle(name)) as number;
    if (fd < 0) throw new LibbpfError('find', `program ${name} of ${this.path}`, fd, undefined, 'not loaded (load the object with it switched on)');
    return { name, fd };
  }

  /**
   * Attach a program the way its section says (tp_btf/..., tracepoint/...). The
   * link goes when detach() is called or the process exits.
   */
  attach(name: string): { detach(): void } {
    const link = c.bpf_program__attach(this.programHandle(name));
    if (!link) {
      const errno = lastErrno();
      throw new LibbpfError('attach-tracepoint', `attaching ${name}`, errno, libbpfLogTail(5).join('\n'));
    }
    let open = true;
    return {
      detach() {
        if (open) c.bpf_link__destroy(link);
        open = false;
      },
    };
  }

  map(name: string): BpfMap {
    this.assertOpen(`map ${name}`);
    const known = this.maps.get(name);
    if (known) return known;
    const handle = this.mapHandle(name);
    const fd = c.bpf_map__fd(handle) as number;
    if (fd < 0) throw new LibbpfError('find', `map ${name} of ${this.path}`, fd, undefined, 'not created (load the object first)');
    const map = new BpfMap(name, fd, c.bpf_map__key_size(handle) as number, c.bpf_map__value_size(handle) as number, c.bpf_map__max_entries(handle) as number);
    this.maps.set(name, map);
    return map;
  }

  maxEntries(name: string): number {
    return c.bpf_map__max_entries(this.mapHandle(name)) as number;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const m of this.maps.values()) m.markClosed();
    this.maps.clear();
    c.bpf_object__close(this.handle);
  }

  private assertOpen(what: string): void {
    // the handle is freed memory once closed: refuse, never touch it
    if (this.closed) throw new LibbpfError('find', `${what} of ${this.path}`, 9 /* EBADF */, undefined, 'the object is closed');
  }

  private programHandle(name: string): unknown {
    this.assertOpen(`program ${name}`);
    const prog = c.bpf_object__find_program_by_name(this.handle, name);
    if (!prog) throw new LibbpfError('find', `program ${name} of ${this.path}`, 0, undefined, 'no such program');
    return prog;
  }

  private mapHandle(name: string): unknown {
    this.assertOpen(`map ${name}`);
    const map = c.bpf_object__find_map_by_name(this.handle, name);
    if (!map) throw new LibbpfError('find', `map ${name} of ${this.path}`, 0, undefined, 'no such map');
    return map;
  }

  private assertNotLoaded(what: string): void {
    if (this.loaded) throw new Error(`BpfObject: cannot ${what} after load`);
  }
}

export function possibleCpus(): number {
  return c.libbpf_num_possible_cpus() as number;
}
