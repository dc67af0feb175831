#!/usr/bin/env bash
# One-shot check of posekernels on a CUDA machine (torch with CUDA, triton, nvcc, ninja,
# compute-sanitizer, ncu; no internet needed). Run from the repository root:
#
#     bash benchmarks/gpu_check.sh              # results under ./out
#     OUT=/some/dir bash benchmarks/gpu_check.sh
#
# Steps: environment report; nvcc compile of csrc/cuda/*.cu (sm_90 and sm_80); build of the
# extension with its CUDA kernels; the whole test suite (the gpu-marked tests run here: cuda and
# triton backends against the float64 reference, gradients, opcheck, torch.compile);
# compute-sanitizer memcheck (plus racecheck / synccheck / initcheck on small cases) over the CUDA
# op tests; device ceilings (bf16 matmul TFLOP/s, device-to-device copy GB/s) to ceilings.json;
# the benchmark suite to bench.json / bench.md; the streaming benchmark (with and without CUDA
# graphs) and a short streaming soak; an Nsight Compute profile of the fused kernels.
# Every step's output is tee'd to $OUT/<step>.log and listed in $OUT/summary.txt. A failing step
# is recorded and the script goes on; it exits non-zero when any step failed.
set -u -o pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-./out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python}"
export OUT PY
STEP_TIMEOUT="${STEP_TIMEOUT:-5400}"   # seconds per step
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
FAILED=()

# step NAME COMMAND...: run with a time limit, tee to $OUT/NAME.log, record the status.
step() {
  local name="$1"
  shift
  local log="$OUT/$name.log"
  local start
  start=$(date +%s)
  echo "=== [$name] $*" | tee "$log"
  if declare -F "$1" >/dev/null; then
    export -f "$1"  # a shell function: run it in a child bash so that timeout can limit it
    timeout "$STEP_TIMEOUT" bash -c "$1" 2>&1 | tee -a "$log"
  else
    timeout "$STEP_TIMEOUT" "$@" 2>&1 | tee -a "$log"
  fi
  local rc=${PIPESTATUS[0]}
  local secs=$(( $(date +%s) - start ))
  if [ "$rc" -ne 0 ]; then
    FAILED+=("$name")
    echo "FAIL  $name  (exit $rc, ${secs}s, log $log)" | tee -a "$SUMMARY"
  else
    echo "ok    $name  (${secs}s)" | tee -a "$SUMMARY"
  fi
  return 0
}

# ---------------------------------------------------------------------------------------------
# 1. environment

env_report() {
  nvidia-smi || return 1
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
  echo "--- nvcc"; nvcc --version
  echo "--- compute-sanitizer"; compute-sanitizer --version | head -3
  echo "--- ncu"; ncu --version | tail -1
  echo "--- git"; git rev-parse HEAD 2>/dev/null; git status --short 2>/dev/null | head -20
  "$PY" - <<'EOF'
import platform, sys
import torch
print("python", sys.version.split()[0], platform.platform())
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name} sm_{p.major}{p.minor} {p.multi_processor_count} SMs {p.total_memory / 2**30:.1f} GiB")
try:
    import triton
    print("triton", triton.__version__)
except Exception as exc:
    print("triton unavailable:", exc)
EOF
}
step env env_report

# ---------------------------------------------------------------------------------------------
# 2. the CI compile of the CUDA sources (headers of CUDA only), for sm_90 and sm_80

nvcc_compile() {
  local tmp
  tmp=$(mktemp -d)
  local rc=0
  for arch in 90 80; do
    for f in csrc/cuda/*.cu; do
      echo "nvcc sm_$arch: $f"
      nvcc -c -std=c++17 -O3 -Icsrc -gencode "arch=compute_$arch,code=sm_$arch" -Xptxas -v "$f" \
        -o "$tmp/$(basename "$f").$arch.o" 2>&1 | grep -E "error|warning|spill|registers" | grep -v " 0 bytes spill" || true
      [ -f "$tmp/$(basename "$f").$arch.o" ] || rc=1
    done
  done
  rm -rf "$tmp"
  return $rc
}
step nvcc nvcc_compile

# ---------------------------------------------------------------------------------------------
# 3. build the extension with its CUDA kernels

build_ext() {
  POSEKERNELS_CUDA=1 "$PY" -m pip install --no-build-isolation --no-deps -v -e . || return 1
  "$PY" - <<'EOF'
import json
import posekernels
info = posekernels.build_info()
print(json.dumps(info, indent=1, default=str))
assert info["extension"], info["extension_error"]
assert "cuda" in info["compiled_backends"], "extension built without its CUDA kernels"
EOF
}
step build build_ext

# ---------------------------------------------------------------------------------------------
# 4. the whole test suite (gpu-marked tests included: a CUDA device is present)

step tests "$PY" -m pytest tests -q -ra --junitxml "$OUT/tests.xml"

# ---------------------------------------------------------------------------------------------
# 5. compute-sanitizer over the CUDA op tests. The caching allocator is off so that every tensor
#    is its own allocation and an out-of-bounds access cannot land in a neighbour.

SAN_TESTS="tests/test_ops.py tests/test_cuda_backend.py tests/test_epilogues.py"
MEMCHECK_K="(cuda-cuda and (agc_terms or raw_agc or raw_jl or noncontiguous or (gjl_more and v17) or (model_sized and t27))) or edge_shapes or simt_path or test_cuda_batch_norm_act or test_cuda_epilogues"
step memcheck env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 99 \
  --print-limit 50 "$PY" -m pytest $SAN_TESTS -q -x -p no:cacheprovider -k "$MEMCHECK_K"
SMALL_K="(cuda-cuda and ((agc_terms and 17 and (plain or all-17)) or (raw_jl and float32))) or (test_cuda_batch_norm_act and float32 and 0.1)"
step racecheck env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool racecheck --racecheck-report hazard \
  --error-exitcode 99 "$PY" -m pytest $SAN_TESTS -q -x -p no:cacheprovider -k "$SMALL_K"
step synccheck env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool synccheck --error-exitcode 99 \
  "$PY" -m pytest $SAN_TESTS -q -x -p no:cacheprovider -k "$SMALL_K"
step initcheck env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool initcheck --error-exitcode 99 \
  "$PY" -m pytest $SAN_TESTS -q -x -p no:cacheprovider -k "$SMALL_K"

# ---------------------------------------------------------------------------------------------
# 6. device ceilings: a large bf16 matmul and a large device-to-device copy

ceilings() {
  OUT="$OUT" "$PY" - <<'EOF'
import json, os
import torch

def time_ms(fn, iters):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters

dev = torch.cuda.get_device_properties(0)
res = {"device": dev.name, "sm": f"{dev.major}.{dev.minor}", "sms": dev.multi_processor_count,
       "torch": torch.__version__, "cuda": torch.version.cuda}
for name, dtype, n in (("bf16", torch.bfloat16, 8192), ("fp16", torch.float16, 8192)):
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    ms = time_ms(lambda: a @ b, 30)
    res[f"matmul_{name}_tflops"] = 2 * n ** 3 / (ms * 1e-3) / 1e12
    res[f"matmul_{name}_shape"] = [n, n, n]
torch.backends.cuda.matmul.allow_tf32 = False
a = torch.randn(4096, 4096, device="cuda")
b = torch.randn(4096, 4096, device="cuda")
ms = time_ms(lambda: a @ b, 20)
res["matmul_fp32_no_tf32_tflops"] = 2 * 4096 ** 3 / (ms * 1e-3) / 1e12
nbytes = 1 << 30
src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
dst = torch.empty_like(src)
ms = time_ms(lambda: dst.copy_(src), 30)
res["d2d_copy_gbps"] = 2 * nbytes / (ms * 1e-3) / 1e9  # bytes read + bytes written
res["d2d_copy_bytes"] = nbytes
print(json.dumps(res, indent=1))
with open(os.path.join(os.environ["OUT"], "ceilings.json"), "w") as f:
    json.dump(res, f, indent=1)
EOF
}
step ceilings ceilings

# ---------------------------------------------------------------------------------------------
# 7. the benchmark suite

step bench "$PY" -m pytest benchmarks --benchmark-enable --benchmark-only --benchmark-json "$OUT/bench.json" -q \
  -p no:cacheprovider
step bench_summary bash -c "'$PY' benchmarks/summarize.py '$OUT/bench.json' > '$OUT/bench.md' && cat '$OUT/bench.md'"

# The streaming targets: per-frame p50/p99 and stream-frames/s with and without the CUDA graph
# step (one T = 243 stream under 1 ms p99; S = 1024 at T = 243 in real time at 30 frames/s
# needs stream-fps >= 30,720), then a short soak of the graph step (CUDA memory must not grow).
step stream "$PY" benchmarks/stream_bench.py --device cuda --streams 1,16,256,1024 \
  --windows 27,81,243 --seconds 2 --json "$OUT/stream.json"
step stream_soak "$PY" benchmarks/stream_bench.py --device cuda --streams 1 --windows 27 \
  --seconds 1 --no-baseline --soak --soak-frames 200000 --soak-seconds 300 --json "$OUT/stream_soak.json"

# ---------------------------------------------------------------------------------------------
# 8. Nsight Compute: the fused kernels of one model-sized forward + backward (bf16 and fp32)

profile_agc() {
  cat > "$OUT/profile_agc.py" <<'EOF'
import math, sys
import torch
from posekernels import ops
dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[sys.argv[1]]
n, t, c, ce, v, k = 256, 27, 96, 24, 17, 3
g = lambda *s, sc=1.0: (torch.randn(*s, device="cuda") * sc).to(dtype).requires_grad_()
args = dict(x=g(n, c, t, v), A=torch.rand(k, v, v, device="cuda").to(dtype), W=g(k, c, c, sc=1 / math.sqrt(c * k)),
            bias=g(k, c, sc=0.1), B=g(k, v, v, sc=0.1), theta_w=g(k, ce, c, sc=c ** -0.5),
            theta_b=g(k, ce, sc=0.1), phi_w=g(k, ce, c, sc=c ** -0.5), phi_b=g(k, ce, sc=0.1))
for _ in range(2):
    y = ops.adaptive_graph_conv(**args, backend="cuda")
    y.float().square().mean().backward()
torch.cuda.synchronize()
EOF
  local rc=0
  for dt in bf16 fp32; do
    ncu --target-processes all --kernel-name "regex:(mix|pair|wgrad|attn_gx|attn_gw|softmax_forward)_kernel" \
      --launch-skip 8 --launch-count 8 --set detailed --export "$OUT/ncu_agc_$dt" --force-overwrite \
      "$PY" "$OUT/profile_agc.py" "$dt" || rc=1
    ncu --import "$OUT/ncu_agc_$dt.ncu-rep" --page details --print-units base > "$OUT/ncu_agc_$dt.txt" 2>&1 || rc=1
    grep -E "^  [a-z_:<>, 0-9A-Za-z]+\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per Thread|Dynamic Shared Memory Per Block" \
      "$OUT/ncu_agc_$dt.txt" | head -120 || true
  done
  return $rc
}
step ncu profile_agc

# ---------------------------------------------------------------------------------------------

echo
echo "=== summary ($OUT)"
cat "$SUMMARY"
if [ "${#FAILED[@]}" -ne 0 ]; then
  echo "failed steps: ${FAILED[*]}"
  exit 1
fi
echo "all steps passed"
