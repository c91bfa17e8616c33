// Bulk reader of a BPF ring buffer through its mmap'd pages: positions read with Atomics,
// records handed out as (DataView, offset) so decoding allocates nothing. One FFI callback a
// record (ring_buffer__poll) would cap us near 0.5 M records/s and block the event loop.
import { LibbpfError } from './error';
import { c, koffi, lastErrno } from './native';

const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 1;
const BUSY = 0x80000000;
const DISCARD = 0x40000000;
const HDR = 8;
const MAP_FAILED = 0xffffffffffffffffn;

export type RecordHandler = (view: DataView, offset: number, length: number) => void;

function mapOrThrow(length: number, prot: number, fd: number, offset: number): unknown {
  const ptr = c.mmap(null, length, prot, MAP_SHARED, fd, offset);
  if (!ptr || koffi.address(ptr) === MAP_FAILED) {
    throw new LibbpfError('mmap-ring', 'mmap of a BPF ring buffer', lastErrno());
  }
  return ptr;
}

export class RingReader {
  private readonly page: number;
  private readonly consumerPtr: unknown;
  private readonly producerPtr: unknown;
  private readonly consumer: BigUint64Array;
  private readonly producer: BigUint64Array;
  private readonly headers: Uint32Array;
  private readonly data: DataView;
  private readonly mask: number;
  private closed = false;

  /** size: the ring map's max_entries, a power of two. */
  constructor(fd: number, readonly size: number) {
    this.page = c.getpagesize() as number;
    this.mask = size - 1;
    this.consumerPtr = mapOrThrow(this.page, PROT_READ | PROT_WRITE, fd, 0);
    // The data pages are mapped twice in a row, so a record that wraps reads contiguously.
    this.producerPtr = mapOrThrow(this.page + 2 * size, PROT_READ, fd, this.page);
    this.consumer = new BigUint64Array(koffi.view(this.consumerPtr, 8));
    const prod = koffi.view(this.producerPtr, this.page + 2 * size);
    this.producer = new BigUint64Array(prod, 0, 1);
    this.headers = new Uint32Array(prod, this.page, (2 * size) / 4);
    this.data = new DataView(prod, this.page, 2 * size);
  }

  /** Hand every committed record to fn; returns how many. Stops early after max records. */
  drain(fn: RecordHandler, max = Infinity): number {
    if (this.closed) return 0;
    let cons = Number(Atomics.load(this.consumer, 0));
    const prod = Number(Atomics.load(this.producer, 0));
    let n = 0;
    while (cons < prod && n < max) {
      const off = cons & this.mask;
      const len = Atomics.load(this.headers, off / 4);
      if (len & BUSY) break; // still being written
      const bodyLen = len & ~(BUSY | DISCARD) >>> 0;
      cons += (bodyLen + HDR + 7) & ~7;
      if (!(len & DISCARD)) {
        fn(this.data, off + HDR, bodyLen);
        n++;
      }
    }
    Atomics.store(this.consumer, 0, BigInt(cons));
    return n;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    c.munmap(this.consumerPtr, this.page);
    c.munmap(this.producerPtr, this.page + 2 * this.size);
  }
}
