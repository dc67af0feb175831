// The Python module posekernels._C: importing it loads this library, whose static initialisers
// register the posekernels:: ops (schema.cpp, ops_cpu.cpp) with torch. It also describes the build.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

#include "checks.h"
#include "cpu/gemm.h"
#include "cpu/kernels.h"

#include <string>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace {

std::vector<std::string> compiled_backends() {
  std::vector<std::string> out{"cpu"};
#ifdef POSEKERNELS_WITH_CUDA
  out.emplace_back("cuda");
#endif
  return out;
}

// "8.0;9.0+PTX" or "8.0 9.0" -> ["8.0", "9.0+PTX"].
[[maybe_unused]] std::vector<std::string> split_arch_list(const std::string& text) {
  std::vector<std::string> out;
  std::string current;
  for (char ch : text) {
    if (ch == ';' || ch == ' ' || ch == ',') {
      if (!current.empty()) out.push_back(current);
      current.clear();
    } else {
      current.push_back(ch);
    }
  }
  if (!current.empty()) out.push_back(current);
  return out;
}

std::vector<std::string> cuda_arch_list() {
#ifdef POSEKERNELS_CUDA_ARCH_LIST
  return split_arch_list(POSEKERNELS_CUDA_ARCH_LIST);
#else
  return {};
#endif
}

py::dict build_info() {
  py::dict info;
  info["compiled_backends"] = compiled_backends();
  info["cuda_arch_list"] = cuda_arch_list();
  // float32 products inside the CPU kernels: the AVX-512 kernel, or the BLAS torch was built with
  info["cpu_gemm"] = posekernels::cpu::avx512_gemm_supported() ? "avx512" : "blas";
  // bfloat16 weight products of the inference plans: AVX-512 BF16 instructions, or emulated
  // (operands rounded to bfloat16, float32 products)
  info["cpu_bf16"] = posekernels::cpu::avx512_bf16_supported() ? "avx512_bf16" : "emulated";
  // the training epilogues (dropout, BatchNorm + dropout + residual + ReLU): AVX-512F or the
  // baseline ISA's compilation of the same loops
  // bf16 products' B operands written packed by their producers (the Winograd input transform,
  // the joint mixing: "fused"), or as float32 rows that the product packs ("separate": no
  // AVX-512 BF16, or POSEKERNELS_CPU_BF16_PACK=separate)
  info["cpu_bf16_pack"] = posekernels::cpu::bf16_fused_pack_enabled() ? "fused" : "separate";
  info["cpu_epilogue"] = posekernels::cpu::epilogue_avx512_enabled() ? "avx512" : "baseline";
#ifdef _OPENMP
  info["openmp"] = true;
  info["openmp_version"] = static_cast<int>(_OPENMP);
#else
  info["openmp"] = false;
  info["openmp_version"] = py::none();
#endif
#ifdef _GLIBCXX_USE_CXX11_ABI
  info["cxx11_abi"] = static_cast<bool>(_GLIBCXX_USE_CXX11_ABI);
#else
  info["cxx11_abi"] = py::none();
#endif
#ifdef POSEKERNELS_VERSION
  info["extension_version"] = std::string(POSEKERNELS_VERSION);
#endif
#if defined(__clang__)
  info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info["compiler"] = std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  info["compiler"] = std::string("msvc ") + std::to_string(_MSC_VER);
#endif
  return info;
}

// A test hook's matrix argument: a 2-D CPU tensor of dtype want with unit column stride.
void check_matrix(const char* name, const at::Tensor& t, at::ScalarType want) {
  TORCH_CHECK_VALUE(t.device().is_cpu() && t.scalar_type() == want && t.dim() == 2 &&
                        t.stride(1) == 1 && t.stride(0) >= t.size(1),
                    name, " must be a 2-D ", posekernels::checks::dtype_str(want),
                    " CPU tensor with unit column stride, got ", t.sizes(), " ",
                    posekernels::checks::dtype_str(t.scalar_type()), " strides ", t.strides());
}

// Test hook for the AVX-512 float32 product of the CPU kernels (csrc/cpu/gemm_avx512.cpp):
// C <- act(alpha * op(A) @ op(B) + beta * C + row_bias[:, None]) in place, single-threaded, on
// 2-D float32 CPU tensors with unit column stride (the row stride is the leading dimension).
void avx512_gemm(const at::Tensor& A, const at::Tensor& B, at::Tensor& C, bool trans_a,
                 bool trans_b, double alpha, double beta,
                 const std::optional<at::Tensor>& row_bias, bool relu) {
  TORCH_CHECK(posekernels::cpu::avx512_gemm_supported(),
              "the AVX-512 product is not available on this CPU (or POSEKERNELS_CPU_GEMM=blas)");
  check_matrix("A", A, at::kFloat);
  check_matrix("B", B, at::kFloat);
  check_matrix("C", C, at::kFloat);
  const int64_t R = trans_a ? A.size(1) : A.size(0);
  const int64_t Q = trans_a ? A.size(0) : A.size(1);
  const int64_t QB = trans_b ? B.size(1) : B.size(0);
  const int64_t S = trans_b ? B.size(0) : B.size(1);
  TORCH_CHECK_VALUE(Q == QB && Q >= 1 && C.size(0) == R && C.size(1) == S,
                    "op(A) ", R, "x", Q, ", op(B) ", QB, "x", S, " and C ", C.sizes(),
                    " do not form a product");
  if (row_bias.has_value()) {
    TORCH_CHECK_VALUE(row_bias->device().is_cpu() && row_bias->scalar_type() == at::kFloat &&
                          row_bias->dim() == 1 && row_bias->size(0) == R && row_bias->is_contiguous(),
                      "row_bias must be a contiguous float32 CPU tensor of shape (", R, ",), got ",
                      row_bias->sizes());
  }
  posekernels::cpu::sgemm_avx512(trans_a, trans_b, R, S, Q, static_cast<float>(alpha),
                                 A.const_data_ptr<float>(), A.stride(0),
                                 B.const_data_ptr<float>(), B.stride(0),
                                 static_cast<float>(beta), C.mutable_data_ptr<float>(),
                                 C.stride(0),
                                 row_bias.has_value() ? row_bias->const_data_ptr<float>() : nullptr,
                                 relu);
}

// Test hook for the bfloat16 product of the CPU kernels (csrc/cpu/gemm_bf16.cpp):
// C <- act(bf16(A) @ bf16(B) + beta * C + row_bias[:, None]) in place; A bfloat16, B and C
// float32, 2-D CPU tensors with unit column stride.
void bf16_gemm(const at::Tensor& A, const at::Tensor& B, at::Tensor& C, double beta,
               const std::optional<at::Tensor>& row_bias, bool relu) {
  check_matrix("A", A, at::kBFloat16);
  check_matrix("B", B, at::kFloat);
  check_matrix("C", C, at::kFloat);
  const int64_t R = A.size(0), Q = A.size(1), S = B.size(1);
  TORCH_CHECK_VALUE(B.size(0) == Q && C.size(0) == R && C.size(1) == S, "A ", A.sizes(), ", B ",
                    B.sizes(), " and C ", C.sizes(), " do not form a product");
  if (row_bias.has_value()) {
    TORCH_CHECK_VALUE(row_bias->device().is_cpu() && row_bias->scalar_type() == at::kFloat &&
                          row_bias->dim() == 1 && row_bias->size(0) == R && row_bias->is_contiguous(),
                      "row_bias must be a contiguous float32 CPU tensor of shape (", R, ",), got ",
                      row_bias->sizes());
  }
  posekernels::cpu::gemm_bf16(R, S, Q, A.const_data_ptr<c10::BFloat16>(), A.stride(0),
                              B.const_data_ptr<float>(), B.stride(0), static_cast<float>(beta),
                              C.mutable_data_ptr<float>(), C.stride(0),
                              row_bias.has_value() ? row_bias->const_data_ptr<float>() : nullptr,
                              relu);
}

// Test hook for the bfloat16 product with both operands rounded as packed
// (cpu::gemm_bf16_rounded): C <- bf16(A) @ bf16(op(B)) + beta * C in place, op(B) = B or B^T;
// A, B and C float32 2-D CPU tensors with unit column stride.
void bf16_gemm_rounded(const at::Tensor& A, const at::Tensor& B, at::Tensor& C, bool trans_b,
                       double beta) {
  check_matrix("A", A, at::kFloat);
  check_matrix("B", B, at::kFloat);
  check_matrix("C", C, at::kFloat);
  const int64_t R = A.size(0), Q = A.size(1), S = trans_b ? B.size(0) : B.size(1);
  TORCH_CHECK_VALUE((trans_b ? B.size(1) : B.size(0)) == Q && C.size(0) == R && C.size(1) == S,
                    "A ", A.sizes(), ", B ", B.sizes(), (trans_b ? " (transposed)" : ""),
                    " and C ", C.sizes(), " do not form a product");
  posekernels::cpu::gemm_bf16_rounded(R, S, Q, A.const_data_ptr<float>(), A.stride(0), trans_b,
                                      B.const_data_ptr<float>(), B.stride(0),
                                      static_cast<float>(beta), C.mutable_data_ptr<float>(),
                                      C.stride(0));
}

// glibc's malloc returns large blocks to the kernel when they are freed (blocks above the mmap
// threshold are unmapped; the heap top is trimmed above the trim threshold), so a loop that
// allocates and frees the same large activations every step page-faults all of them back in on
// every step. Raising both thresholds keeps freed blocks in the heap for reuse. Returns whether
// both settings were applied (false on other C libraries).
bool tune_malloc(int64_t mmap_threshold, int64_t trim_threshold) {
#if defined(__GLIBC__)
  const int ok_mmap = mallopt(M_MMAP_THRESHOLD, static_cast<int>(mmap_threshold));
  const int ok_trim = mallopt(M_TRIM_THRESHOLD, static_cast<int>(trim_threshold));
  return ok_mmap == 1 && ok_trim == 1;
#else
  (void)mmap_threshold;
  (void)trim_threshold;
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "posekernels compiled extension: registers the posekernels:: ops with torch";
  m.def("compiled_backends", &compiled_backends,
        "Kernel backends compiled into this extension ('cpu', plus 'cuda' when built with CUDA).");
  m.def("build_info", &build_info, "Build configuration of this extension.");
  m.def("_tune_malloc", &tune_malloc, "glibc mallopt(M_MMAP_THRESHOLD, M_TRIM_THRESHOLD).");
  m.def("_avx512_gemm", &avx512_gemm, "Test hook: the CPU kernels' AVX-512 float32 product.",
        py::arg("A"), py::arg("B"), py::arg("C"), py::arg("trans_a"), py::arg("trans_b"),
        py::arg("alpha"), py::arg("beta"), py::arg("row_bias") = py::none(),
        py::arg("relu") = false);
  m.def("_bf16_gemm", &bf16_gemm, "Test hook: the CPU kernels' bfloat16 product.", py::arg("A"),
        py::arg("B"), py::arg("C"), py::arg("beta"), py::arg("row_bias") = py::none(),
        py::arg("relu") = false);
  m.def("_bf16_gemm_rounded", &bf16_gemm_rounded,
        "Test hook: the CPU kernels' bfloat16 product of two float32 operands.", py::arg("A"),
        py::arg("B"), py::arg("C"), py::arg("trans_b"), py::arg("beta"));
}
