// Stand-in for CUDA's cuda_fp16.h when a port is compiled for the CPU emulator (cuda_emu.h).
#pragma once
#include "cuda_emu.h"
