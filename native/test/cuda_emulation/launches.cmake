# Turns a .cu file into C++ for the CUDA emulation (cuda_runtime.h here): each launch
# `kernel<<<grid, block, shared, stream>>>(args)` becomes
# `braid_cuda_emulation::launch("kernel", kernel, grid, block, shared, stream)(args)`.
#   cmake -DIN=file.cu -DOUT=file.cc -P launches.cmake
file(READ "${IN}" text)
string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_]*(<[^<>;]*>)?)<<<([^;]*)>>>\\("
       "braid_cuda_emulation::launch(\"\\1\", \\1, \\3)(" text "${text}")
if(text MATCHES "<<<")
  message(FATAL_ERROR "launches.cmake: a kernel launch in ${IN} is not in the form it rewrites")
endif()
file(WRITE "${OUT}" "// Generated from ${IN} by launches.cmake for the CUDA emulation; edit the .cu file.\n#line 1 \"${IN}\"\n${text}")
