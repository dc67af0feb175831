// Stand-in for the CUDA header of the same name, for the CPU emulator only (see ../README.md).
#pragma once
#include "emu_core.h"
