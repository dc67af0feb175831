// The Python module posekernels._C: importing it loads this library, whose static initialisers
// register the posekernels:: ops (python_api/ops.cpp) with torch. It also describes the build.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "posekernels compiled extension: registers the posekernels:: ops with torch";
  m.def("compiled_backends", &compiled_backends,
        "Kernel backends compiled into this extension ('cpu', plus 'cuda' when built with CUDA).");
  m.def("build_info", &build_info, "Build configuration of this extension.");
}
