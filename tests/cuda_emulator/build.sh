#!/usr/bin/env bash
# Build the CPU emulator of the CUDA launchers (see README.md).
#   tests/cuda_emulator/build.sh [fast|asan|tsan]     -> $EMU_BUILD/emu_<variant> (default build/emulator)
# The kernel sources are copied with two mechanical rewrites: the single `<<<...>>>` launch site
# becomes a call to emu::launch, and the dynamic shared-memory declaration becomes a pointer to the
# emulated block's shared memory. The asan variant also separates the carved shared-memory regions
# with poisoned 128-byte red zones, so an overflow from one region into the next is reported.
set -euo pipefail
variant="${1:-fast}"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${EMU_BUILD:-$repo/build/emulator}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
src="$out/src-$variant"
rm -rf "$src" && mkdir -p "$src/cuda"
for f in "$repo"/csrc/cuda/*.cu "$repo"/csrc/cuda/*.cuh; do
  sed -e 's/\b\([A-Za-z_][A-Za-z0-9_]*\)<<<\([^>]*\)>>>(/::emu::launch(\1, \2, /' \
      -e 's/extern __shared__ __align__(128) unsigned char posekernels_smem\[\];/unsigned char* posekernels_smem = ::emu::smem();/' \
      "$f" > "$src/cuda/$(basename "$f")"
done
grep -q "emu::launch" "$src/cuda/common.cuh" || { echo "launch site not rewritten" >&2; exit 1; }
grep -q "emu::smem" "$src/cuda/common.cuh" || { echo "shared memory declaration not rewritten" >&2; exit 1; }
case "$variant" in
  asan)
    python3 - "$src/cuda/common.cuh" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
old = ("    offset = (offset + 127) & ~static_cast<size_t>(127);\n"
       "    U* p = reinterpret_cast<U*>(base + offset);")
assert old in s, "SmemCarver::take changed: update the red-zone rewrite"
new = ("    offset = ((offset + 127) & ~static_cast<size_t>(127)) + 128;\n"
       "    if (base != 0) __asan_poison_memory_region(reinterpret_cast<void*>(base + offset - 128), 128);\n"
       "    U* p = reinterpret_cast<U*>(base + offset);")
s = s.replace(old, new).replace("#include <cuda_runtime.h>", "#include <cuda_runtime.h>\n#include <sanitizer/asan_interface.h>", 1)
open(p, "w").write(s)
PY
    flags="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer";;
  tsan) flags="-O1 -g -fsanitize=thread";;
  fast) flags="-O2 -g";;
  *) echo "unknown variant $variant (fast|asan|tsan)" >&2; exit 2;;
esac
for f in agc joint_linear bn_act; do  # one file at a time
  g++ -std=c++17 $flags -Wall -Wno-unknown-pragmas -Wno-unused-variable -Wno-sign-compare -x c++ \
    -I"$here/fake" -I"$src" -c "$src/cuda/$f.cu" -o "$out/$f.$variant.o"
done
g++ -std=c++17 $flags -I"$here/fake" -I"$src" "$here/driver.cpp" "$out/agc.$variant.o" "$out/joint_linear.$variant.o" \
  "$out/bn_act.$variant.o" -o "$out/emu_$variant" -lpthread
echo "$out/emu_$variant"
