// Where this process finds NCCL (the addon's loader), for scripts/gpu-check.sh and by hand:
// prints the version and path, or why no library is usable, and every place searched.
// Exits 0 when a usable NCCL was found.
#include <cstdio>

#include "gpu/nccl_loader.h"

int main() {
  const braid::NcclLoad& load = braid::loadNccl();
  for (const std::string& place : load.searched) std::printf("searched: %s\n", place.c_str());
  if (load.library == nullptr) {
    std::printf("NCCL: not usable: %s\n", load.error.c_str());
    return 1;
  }
  std::printf("NCCL: %s at %s\n", braid::ncclVersionString(load.library->version).c_str(), load.library->path.c_str());
  return 0;
}
