// A BPF map by fd: element and batch operations on raw key/value bytes.
import { LibbpfError } from './error';
import { c } from './native';

const ENOENT = 2;

export class BpfMap {
  private closed = false;
  /**
   * The batch buffers, kept from one read to the next: the agent reads its maps on every scrape,
   * and fresh megabytes each time (4096 per-CPU histograms are 4 MB) left glibc's heap holding
   * pages between scrapes and fragmented. Sized by max_entries, so a 10-entry array gets 10 slots.
   */
  private batch: { entryValueSize: number; chunk: number; keys: Buffer; values: Buffer; inBatch: Buffer; outBatch: Buffer } | null = null;
  private reading = false;

  /** maxEntries: the map's max_entries (bounds the batch buffers); unknown, the chunk size given to each read */
  constructor(readonly name: string, readonly fd: number, readonly keySize: number, readonly valueSize: number, readonly maxEntries = Infinity) {}

  /** Its object was closed: the fd is gone (and its number may already be another file's). */
  markClosed(): void {
    this.closed = true;
  }

  update(key: Buffer, value: Buffer, flags = 0): void {
    this.checkSizes(key, value);
    const ret = c.bpf_map_update_elem(this.fd, key, value, flags) as number;
    if (ret < 0) throw new LibbpfError('map', `updating map ${this.name}`, ret);
  }

  /** The value, or null when the key is absent. */
  lookup(key: Buffer, value: Buffer = Buffer.alloc(this.valueSize)): Buffer | null {
    this.checkSizes(key, value);
    const ret = c.bpf_map_lookup_elem(this.fd, key, value) as number;
    if (ret === -ENOENT) return null;
    if (ret < 0) throw new LibbpfError('map', `looking up map ${this.name}`, ret);
    return value;
  }

  delete(key: Buffer): boolean {
    this.checkSizes(key, null);
    const ret = c.bpf_map_delete_elem(this.fd, key) as number;
    if (ret === -ENOENT) return false;
    if (ret < 0) throw new LibbpfError('map', `deleting from map ${this.name}`, ret);
    return true;
  }

  /**
   * Every entry, read with BPF_MAP_LOOKUP_BATCH (0.3-0.7 µs an entry here, against
   * 2.6-5 µs for get_next_key + lookup). valueSize here is the per-entry size the kernel writes,
   * which for per-CPU maps is the value size rounded to 8 times the number of CPUs.
   */
  lookupAll(entryValueSize = this.valueSize, chunk = 4096): { keys: Buffer; values: Buffer; count: number } {
    const keyParts: Buffer[] = [];
    const valueParts: Buffer[] = [];
    let count = 0;
    this.lookupChunks((keys, values, got) => {
      keyParts.push(Buffer.from(keys.subarray(0, got * this.keySize)));
      valueParts.push(Buffer.from(values.subarray(0, got * entryValueSize)));
      count += got;
    }, entryValueSize, chunk);
    if (keyParts.length === 1) return { keys: keyParts[0]!, values: valueParts[0]!, count };
    return { keys: Buffer.concat(keyParts), values: Buffer.concat(valueParts), count };
  }

  /**
   * Every entry, a batch at a time, for a loop that yields as it goes: each batch's buffers are
   * reused by the next one, so nothing of a batch may be kept past it.
   */
  *batches(entryValueSize = this.valueSize, chunk = 4096): Generator<{ keys: Buffer; values: Buffer; got: number }> {
    const slots = Math.max(1, Math.min(chunk, this.maxEntries));
    this.assertOpen();
    // a read of the same map while this one is suspended gets buffers of its own
    const own = this.reading ? null : this.batchBuffers(entryValueSize, slots);
    const { keys, values, inBatch, outBatch } = own ?? this.allocBatch(entryValueSize, slots);
    if (own) this.reading = true;
    try {
      let first = true;
      for (;;) {
        this.assertOpen();
        const n = [slots];
        const ret = c.bpf_map_lookup_batch(this.fd, first ? null : inBatch, outBatch, keys, values, n, null) as number;
        const got = n[0] ?? 0;
        if (ret < 0 && ret !== -ENOENT) throw new LibbpfError('map', `batch lookup of map ${this.name}`, ret);
        if (got) yield { keys, values, got };
        if (ret === -ENOENT) break;
        outBatch.copy(inBatch);
        first = false;
      }
    } finally {
      if (own) this.reading = false;
    }
  }

  /** Every entry, a batch at a time: fn sees `got` entries in buffers it must not keep (they are reused). */
  lookupChunks(fn: (keys: Buffer, values: Buffer, got: number) => void, entryValueSize = this.valueSize, chunk = 4096): void {
    for (const b of this.batches(entryValueSize, chunk)) fn(b.keys, b.values, b.got);
  }

  private batchBuffers(entryValueSize: number, chunk: number): { keys: Buffer; values: Buffer; inBatch: Buffer; outBatch: Buffer } {
    const b = this.batch;
    if (b && b.entryValueSize === entryValueSize && b.chunk === chunk) return b;
    this.batch = { entryValueSize, chunk, ...this.allocBatch(entryValueSize, chunk) };
    return this.batch;
  }

  private allocBatch(entryValueSize: number, chunk: number): { keys: Buffer; values: Buffer; inBatch: Buffer; outBatch: Buffer } {
    return {
      keys: Buffer.alloc(this.keySize * chunk), values: Buffer.alloc(entryValueSize * chunk),
      inBatch: Buffer.alloc(Math.max(this.keySize, 8)), outBatch: Buffer.alloc(Math.max(this.keySize, 8)),
    };
  }

  private assertOpen(): void {
    if (this.closed) throw new LibbpfError('map', `using map ${this.name}`, 9 /* EBADF */, undefined, 'its object is closed');
  }

  private checkSizes(key: Buffer, value: Buffer | null): void {
    this.assertOpen();
    // A short buffer passed as void * would let the kernel read past it.
    if (key.length !== this.keySize) throw new RangeError(`map ${this.name}: key is ${key.length} bytes, map wants ${this.keySize}`);
    if (value && value.length < this.valueSize) throw new RangeError(`map ${this.name}: value is ${value.length} bytes, map wants ${this.valueSize}`);
  }
}
