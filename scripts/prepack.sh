#!/usr/bin/env bash
# npm pack / npm publish (npm's prepack): build what the package ships from the sources, then take
# the DWARF debug info out of the BPF objects. `llvm-strip -g` removes the .debug_* sections
# only: .BTF and .BTF.ext stay, which libbpf needs to relocate the programs (CO-RE) on the
# nodes' kernels and to report verifier errors by source line.
set -euo pipefail
cd "$(dirname "$0")/.."
LLVM_STRIP=${LLVM_STRIP:-llvm-strip}
for tool in make clang bpftool "$LLVM_STRIP"; do
  command -v "$tool" >/dev/null || { echo "prepack: $tool is missing; run \`make deps\` (or install clang, llvm, bpftool)" >&2; exit 1; }
done
[ -x node_modules/.bin/tsc ] || { echo "prepack: node_modules has no TypeScript; run \`npm ci\` first" >&2; exit 1; }

make build >&2  # npm pack --json prints the result on stdout
for obj in build/*.bpf.o; do
  "$LLVM_STRIP" -g "$obj"
  # a strip that took BTF with it would only fail when the agent loads the object: fail here
  bpftool btf dump file "$obj" >/dev/null 2>&1 || { echo "prepack: $obj has no BTF after $LLVM_STRIP -g" >&2; exit 1; }
done
