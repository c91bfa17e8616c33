// The C functions we call: libbpf.so.1 and a few from libc. Nothing nettrace-specific.
import koffi, { type LibraryHandle } from "koffi";
import { LibbpfError } from './error';

function open(name: string): LibraryHandle {
  try {
    return koffi.load(name);
  } catch (err) {
    throw new LibbpfError('load-library', `loading ${name}`, 0, undefined, (err as Error).message);
  }
}

const libbpf = open('libbpf.so.1');
const libc = open('libc.so.6');

/** Opaque libbpf handles: only libbpf looks inside. */
export const BpfObjectPtr = koffi.pointer('bpf_object', koffi.opaque());
export const BpfProgramPtr = koffi.pointer('bpf_program', koffi.opaque());
export const BpfMapPtr = koffi.pointer('bpf_map', koffi.opaque());
export const BpfLinkPtr = koffi.pointer('bpf_link', koffi.opaque());

// Layouts checked against C by test/unit/libbpf/structs.test.ts: a wrong size lets the kernel read past our buffer.
export const BpfTcHook = koffi.struct('bpf_tc_hook', {
  sz: 'size_t', ifindex: 'int', attach_point: 'int', parent: 'uint32_t',
});
export const BpfTcOpts = koffi.struct('bpf_tc_opts', {
  sz: 'size_t', prog_fd: 'int', flags: 'uint32_t', prog_id: 'uint32_t', handle: 'uint32_t', priority: 'uint32_t',
});
export const BpfTestRunOpts = koffi.struct('bpf_test_run_opts', {
  sz: 'size_t', data_in: 'uint64_t', data_out: 'uint64_t', data_size_in: 'uint32_t', data_size_out: 'uint32_t',
  ctx_in: 'uint64_t', ctx_out: 'uint64_t', ctx_size_in: 'uint32_t', ctx_size_out: 'uint32_t',
  retval: 'uint32_t', repeat: 'int', duration: 'uint32_t', flags: 'uint32_t', cpu: 'uint32_t', batch_size: 'uint32_t',
});

const PrintFn = koffi.proto('int libbpf_print_fn(int level, const char *fmt, void *args)');

export const c = {
  // objects
  bpf_object__open_file: libbpf.func('bpf_object *bpf_object__open_file(const char *path, void *opts)'),
  bpf_object__load: libbpf.func('int bpf_object__load(bpf_object *obj)'),
  bpf_object__close: libbpf.func('void bpf_object__close(bpf_object *obj)'),
  bpf_object__find_program_by_name: libbpf.func('bpf_program *bpf_object__find_program_by_name(bpf_object *obj, const char *name)'),
  bpf_object__find_map_by_name: libbpf.func('bpf_map *bpf_object__find_map_by_name(bpf_object *obj, const char *name)'),
  bpf_program__fd: libbpf.func('int bpf_program__fd(bpf_program *prog)'),
  bpf_program__set_autoload: libbpf.func('int bpf_program__set_autoload(bpf_program *prog, bool autoload)'),
  bpf_map__fd: libbpf.func('int bpf_map__fd(bpf_map *map)'),
  bpf_map__set_max_entries: libbpf.func('int bpf_map__set_max_entries(bpf_map *map, uint32_t max)'),
  bpf_map__max_entries: libbpf.func('uint32_t bpf_map__max_entries(bpf_map *map)'),
  bpf_map__key_size: libbpf.func('uint32_t bpf_map__key_size(bpf_map *map)'),
  bpf_map__value_size: libbpf.func('uint32_t bpf_map__value_size(bpf_map *map)'),
  bpf_map__initial_value: libbpf.func('void *bpf_map__initial_value(bpf_map *map, _Out_ size_t *psize)'),
  // map syscalls
  bpf_map_update_elem: libbpf.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
  bpf_map_lookup_elem: libbpf.func('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
  bpf_map_delete_elem: libbpf.func('int bpf_map_delete_elem(int fd, const void *key)'),
  bpf_map_lookup_batch: libbpf.func('int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, _Inout_ uint32_t *count, void *opts)'),
  // attach
  bpf_program__attach: libbpf.func('bpf_link *bpf_program__attach(bpf_program *prog)'),
  bpf_link__destroy: libbpf.func('int bpf_link__destroy(bpf_link *link)'),
  bpf_link_create: libbpf.func('int bpf_link_create(int prog_fd, int target_fd, int attach_type, void *opts)'),
  bpf_tc_hook_create: libbpf.func('int bpf_tc_hook_create(bpf_tc_hook *hook)'),
  bpf_tc_hook_destroy: libbpf.func('int bpf_tc_hook_destroy(bpf_tc_hook *hook)'),
  bpf_tc_attach: libbpf.func('int bpf_tc_attach(bpf_tc_hook *hook, _Inout_ bpf_tc_opts *opts)'),
  bpf_tc_detach: libbpf.func('int bpf_tc_detach(bpf_tc_hook *hook, bpf_tc_opts *opts)'),
  bpf_tc_query: libbpf.func('int bpf_tc_query(bpf_tc_hook *hook, _Inout_ bpf_tc_opts *opts)'),
  bpf_prog_test_run_opts: libbpf.func('int bpf_prog_test_run_opts(int prog_fd, _Inout_ bpf_test_run_opts *opts)'),
  libbpf_num_possible_cpus: libbpf.func('int libbpf_num_possible_cpus()'),
  libbpf_set_print: libbpf.func('void *libbpf_set_print(libbpf_print_fn *fn)'),
  // libc
  open: libc.func('int open(const char *path, int flags)'),
  close: libc.func('int close(int fd)'),
  setns: libc.func('int setns(int fd, int nstype)'),
  if_indextoname: libc.func('void *if_indextoname(unsigned int ifindex, _Out_ uint8_t *ifname)'),
  mmap: libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)'),
  munmap: libc.func('int munmap(void *addr, size_t length)'),
  vsnprintf: libc.func('int vsnprintf(_Out_ uint8_t *buf, size_t size, const char *fmt, void *args)'),
  getpagesize: libc.func('int getpagesize()'),
  malloc_trim: libc.func('int malloc_trim(size_t pad)'),
};

export const PrintFnProto = PrintFn;

/**
 * Gives the free pages inside glibc's heaps back to the kernel (malloc_trim(0): every arena, not
 * only the top of the main heap). A long-running process whose threads (V8's compiler and GC
 * workers) malloc and free in their own arenas otherwise keeps those pages resident for good.
 */
export function trimMalloc(): void {
  c.malloc_trim(0);
}

/** errno of the last call: pointer-returning libbpf calls return NULL and set errno, so read it right after. */
export function lastErrno(): number {
  return koffi.errno();
}

export function address(buf: Buffer | ArrayBuffer | Uint8Array): bigint {
  return koffi.address(buf) as bigint;
}

export { koffi };
