// Runs one posekernels CUDA launcher on the CPU emulator (see README.md): inputs and outputs are
// raw files in the directory given as the only argument, sizes in its spec.txt.
#include "cuda/kernels.cuh"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>
using namespace posekernels::cuda;

static std::string dir;
static std::map<std::string, long> spec;
static size_t esize;
static std::vector<void*> allocs;

static void* load(const std::string& name, long count) {
  std::ifstream f(dir + "/" + name + ".bin", std::ios::binary);
  if (!f) return nullptr;
  void* p = std::malloc(count * esize);
  f.read(static_cast<char*>(p), count * esize);
  if (f.gcount() != (std::streamsize)(count * esize)) { std::fprintf(stderr, "short file %s\n", name.c_str()); std::exit(3); }
  allocs.push_back(p);
  return p;
}
static void* out(long count) { void* p = std::malloc(count * esize); std::memset(p, 0xFF, count * esize); allocs.push_back(p); return p; }
static void save(const std::string& name, void* p, long count) {
  std::ofstream f(dir + "/out_" + name + ".bin", std::ios::binary);
  f.write(static_cast<char*>(p), count * esize);
}
static void check(cudaError_t e, const char* what) { if (e != cudaSuccess) { std::fprintf(stderr, "%s failed: %d\n", what, (int)e); std::exit(2); } }
static void* workspace(size_t bytes) { void* p = std::malloc(bytes ? bytes : 1); std::memset(p, 0xFF, bytes); allocs.push_back(p); return p; }

int main(int argc, char** argv) {
  dir = argv[1];
  std::ifstream sf(dir + "/spec.txt");
  std::string op, key; long val; sf >> op;
  while (sf >> key >> val) spec[key] = val;
  const DType dt = static_cast<DType>(spec["dtype"]);
  esize = (dt == DType::kFloat64) ? 8 : (dt == DType::kFloat32 ? 4 : 2);
  if (op == "agc_fwd" || op == "agc_bwd") {
    AgcSizes s; s.N = spec["N"]; s.Cin = spec["Cin"]; s.Cout = spec["Cout"]; s.T = spec["T"]; s.V = spec["V"]; s.K = spec["K"]; s.Ce = spec["Ce"];
    const long N = s.N, Ci = s.Cin, Co = s.Cout, T = s.T, V = s.V, K = s.K, E = s.Ce;
    void* x = load("x", N * Ci * T * V); void* A = load("A", K * V * V); void* W = load("W", K * Co * Ci);
    void* bias = load("bias", K * Co); void* B = load("B", K * V * V);
    void* tw = E ? load("theta_w", K * E * Ci) : nullptr; void* tb = E ? load("theta_b", K * E) : nullptr;
    void* pw = E ? load("phi_w", K * E * Ci) : nullptr; void* pb = E ? load("phi_b", K * E) : nullptr;
    if (op == "agc_fwd") {
      AgcForwardArgs a; a.x = x; a.A = A; a.W = W; a.bias = bias; a.B = B; a.theta_w = tw; a.theta_b = tb; a.phi_w = pw; a.phi_b = pb;
      a.y = out(N * Co * T * V); a.attn = E ? out(N * K * V * V) : nullptr;
      size_t bytes = 0; check(agc_forward_workspace_bytes(s, dt, a, &bytes), "ws");
      check(agc_forward(s, dt, a, workspace(bytes), bytes, nullptr), "agc_forward");
      save("y", a.y, N * Co * T * V); if (E) save("attn", a.attn, N * K * V * V);
      std::printf("workspace %zu\n", bytes);
    } else {
      AgcBackwardArgs a; a.grad_y = load("grad_y", N * Co * T * V); a.x = x; a.A = A; a.W = W; a.has_bias = bias != nullptr; a.B = B;
      a.theta_w = tw; a.theta_b = tb; a.phi_w = pw; a.phi_b = pb; a.attn = E ? load("attn", N * K * V * V) : nullptr;
      a.gx = out(N * Ci * T * V); a.gW = out(K * Co * Ci); a.gbias = bias ? out(K * Co) : nullptr; a.gB = B ? out(K * V * V) : nullptr;
      a.gtheta_w = E ? out(K * E * Ci) : nullptr; a.gphi_w = E ? out(K * E * Ci) : nullptr;
      a.gtheta_b = tb ? out(K * E) : nullptr; a.gphi_b = pb ? out(K * E) : nullptr;
      size_t bytes = 0; check(agc_backward_workspace_bytes(s, dt, a, &bytes), "ws");
      check(agc_backward(s, dt, a, workspace(bytes), bytes, nullptr), "agc_backward");
      save("gx", a.gx, N * Ci * T * V); save("gW", a.gW, K * Co * Ci);
      if (bias) save("gbias", a.gbias, K * Co); if (B) save("gB", a.gB, K * V * V);
      if (E) { save("gtheta_w", a.gtheta_w, K * E * Ci); save("gphi_w", a.gphi_w, K * E * Ci); }
      if (tb) save("gtheta_b", a.gtheta_b, K * E); if (pb) save("gphi_b", a.gphi_b, K * E);
      std::printf("workspace %zu\n", bytes);
    }
  } else if (op == "dropout") {
    const long n = spec["n"];
    void* x = load("x", n); void* y = out(n);
    check(dropout_apply(dt, n, x, y, spec["p_ppm"] / 1e6, static_cast<uint64_t>(spec["seed"]), nullptr), "dropout_apply");
    save("y", y, n);
  } else if (op == "bn_fwd" || op == "bn_bwd") {
    BnActSizes s; s.N = spec["N"]; s.C = spec["C"]; s.L = spec["L"];
    const long n = s.N * s.C * s.L, C = s.C;
    const double p = spec["p_ppm"] / 1e6, eps = spec["eps_ppb"] / 1e9;
    const uint64_t seed = static_cast<uint64_t>(spec["seed"]);
    const bool relu = spec["relu"] != 0;
    void* z = load("z", n); void* w = load("weight", C);
    size_t bytes = 0; check(bn_act_workspace_bytes(s, dt, &bytes), "ws");
    if (op == "bn_fwd") {
      BnActForwardArgs a; a.z = z; a.weight = w; a.bias = load("bias", C); a.residual = load("residual", n);
      a.p = p; a.eps = eps; a.seed = seed; a.relu = relu; a.y = out(n); a.mean = out(C); a.var = out(C);
      check(bn_act_forward(s, dt, a, workspace(bytes), bytes, nullptr), "bn_act_forward");
      save("y", a.y, n); save("mean", a.mean, C); save("var", a.var, C);
    } else {
      BnActBackwardArgs a; a.grad_y = load("grad_y", n); a.z = z; a.y = load("y", n); a.weight = w;
      a.mean = load("mean", C); a.var = load("var", C); a.p = p; a.eps = eps; a.seed = seed; a.relu = relu;
      const bool res = spec["has_residual"] != 0;
      a.grad_z = out(n); a.grad_weight = out(C); a.grad_bias = out(C); a.grad_residual = res ? out(n) : nullptr;
      check(bn_act_backward(s, dt, a, workspace(bytes), bytes, nullptr), "bn_act_backward");
      save("gz", a.grad_z, n); save("gw", a.grad_weight, C); save("gb", a.grad_bias, C);
      if (res) save("gres", a.grad_residual, n);
    }
    std::printf("workspace %zu\n", bytes);
  } else {
    JlSizes s; s.M = spec["M"]; s.V = spec["V"]; s.C = spec["C"]; s.D = spec["D"];
    const long M = s.M, V = s.V, C = s.C, D = s.D;
    void* x = load("x", M * V * C); void* W = load("W", V * C * D);
    if (op == "jl_fwd") {
      void* b = load("b", V * D); void* y = out(M * V * D);
      check(jl_forward(s, dt, x, W, b, y, nullptr), "jl_forward"); save("y", y, M * V * D);
    } else {
      const bool hb = spec["has_bias"] != 0; void* gy = load("grad_y", M * V * D);
      void* gx = out(M * V * C); void* gW = out(V * C * D); void* gb = hb ? out(V * D) : nullptr;
      size_t bytes = 0; check(jl_backward_workspace_bytes(s, dt, hb, &bytes), "ws");
      check(jl_backward(s, dt, gy, x, W, hb, gx, gW, gb, workspace(bytes), bytes, nullptr), "jl_backward");
      save("gx", gx, M * V * C); save("gW", gW, V * C * D); if (hb) save("gb", gb, V * D);
    }
  }
  std::printf("launches %ld max_smem %zu\n", emu::launches, emu::max_smem_used);
  for (void* p : allocs) std::free(p);
  return 0;
}
