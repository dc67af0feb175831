// Stand-in for the CUDA header of the same name, for the CPU emulator only (see ../README.md).
#pragma once
#include "emu_core.h"
struct __nv_bfloat16 { uint16_t bits; };
inline float __bfloat162float(__nv_bfloat16 b) { uint32_t u = uint32_t(b.bits) << 16; float f; std::memcpy(&f, &u, 4); return f; }
inline __nv_bfloat16 __float2bfloat16_rn(float v) {
  uint32_t u; std::memcpy(&u, &v, 4); __nv_bfloat16 b;
  if (std::isnan(v)) { b.bits = 0x7fc0; return b; }
  u += 0x7fffu + ((u >> 16) & 1u); b.bits = uint16_t(u >> 16); return b;
}
