// Thrust over the CUDA emulation: see thrust_emulation.h.
#pragma once
#include "../thrust_emulation.h"
