// Stand-in for the CUDA header of the same name, for the CPU emulator only (see ../README.md).
#pragma once
#include "emu_core.h"
struct __half { uint16_t bits; };
inline float __half2float(__half h) { _Float16 f; std::memcpy(&f, &h.bits, 2); return (float)f; }
inline __half __float2half_rn(float v) { _Float16 f = (_Float16)v; __half h; std::memcpy(&h.bits, &f, 2); return h; }
