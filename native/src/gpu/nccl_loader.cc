#include "gpu/nccl_loader.h"

#include <dlfcn.h>
#include <glob.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <set>

namespace braid {

namespace {

constexpr const char* kSoname = "libnccl.so.2";

std::vector<std::string> globbed(const std::string& pattern) {
  std::vector<std::string> out;
  glob_t g{};
  if (glob(pattern.c_str(), 0, nullptr, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
  }
  globfree(&g);
  return out;
}

std::string describe(const std::string& candidate) {
  if (candidate == kSoname) return std::string(kSoname) + " (LD_LIBRARY_PATH and the system's library cache)";
  const char* forced = std::getenv("BRAID_NCCL_LIB");
  return forced != nullptr && candidate == forced ? "BRAID_NCCL_LIB=" + candidate : candidate;
}

// Resolves every entry point into `lib`; the first missing one's name, or empty.
std::string resolve(void* handle, NcclLibrary& lib) {
  struct Entry {
    const char* name;
    void** slot;
  };
  const Entry entries[] = {
      {"ncclGetVersion", reinterpret_cast<void**>(&lib.getVersion)},
      {"ncclGetErrorString", reinterpret_cast<void**>(&lib.getErrorString)},
      {"ncclGetUniqueId", reinterpret_cast<void**>(&lib.getUniqueId)},
      {"ncclCommInitRank", reinterpret_cast<void**>(&lib.commInitRank)},
      {"ncclCommInitRankConfig", reinterpret_cast<void**>(&lib.commInitRankConfig)},
      {"ncclCommAbort", reinterpret_cast<void**>(&lib.commAbort)},
      {"ncclCommDestroy", reinterpret_cast<void**>(&lib.commDestroy)},
      {"ncclCommGetAsyncError", reinterpret_cast<void**>(&lib.commGetAsyncError)},
      {"ncclAllReduce", reinterpret_cast<void**>(&lib.allReduce)},
      {"ncclBroadcast", reinterpret_cast<void**>(&lib.broadcast)},
      {"ncclAllGather", reinterpret_cast<void**>(&lib.allGather)},
      {"ncclReduceScatter", reinterpret_cast<void**>(&lib.reduceScatter)},
      {"ncclGroupStart", reinterpret_cast<void**>(&lib.groupStart)},
      {"ncclGroupEnd", reinterpret_cast<void**>(&lib.groupEnd)},
  };
  for (const Entry& e : entries) {
    *e.slot = dlsym(handle, e.name);
    if (*e.slot == nullptr) return e.name;
  }
  return {};
}

}  // namespace

std::string ncclVersionString(int code) {
  int major = 0, minor = 0, patch = 0;
  nccl::decodeVersion(code, major, minor, patch);
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

std::vector<std::string> ncclCandidates() {
  if (const char* forced = std::getenv("BRAID_NCCL_LIB"); forced != nullptr && *forced != '\0') return {forced};
  std::vector<std::string> out = {kSoname};
  for (const char* dir : {"/usr/local/cuda/lib64", "/usr/local/cuda/lib", "/usr/local/cuda/targets/x86_64-linux/lib",
                          "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/local/lib", "/opt/nccl/lib"}) {
    out.push_back(std::string(dir) + "/" + kSoname);
  }
  // pip's nvidia-nccl-cu12/-cu13 wheels, in the Python environments a user is likely to have.
  std::vector<std::string> prefixes;
  for (const char* var : {"VIRTUAL_ENV", "CONDA_PREFIX"}) {
    if (const char* v = std::getenv(var); v != nullptr && *v != '\0') prefixes.emplace_back(v);
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') prefixes.push_back(std::string(home) + "/.local");
  for (const char* p : {"/usr/local", "/usr", "/opt/*/.venv", "/opt/*", "/opt/conda"}) prefixes.emplace_back(p);
  std::set<std::string> seen(out.begin(), out.end());
  for (const std::string& prefix : prefixes) {
    for (const char* packages : {"site-packages", "dist-packages"}) {
      for (const std::string& path : globbed(prefix + "/lib/python3*/" + packages + "/nvidia/nccl/lib/" + kSoname)) {
        if (seen.insert(path).second) out.push_back(path);
      }
    }
  }
  // What `bash scripts/setup.sh --nccl` unpacked from the wheel, last: a library the user
  // installed comes first.
  const char* cache = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  const std::string cacheDir = cache != nullptr && *cache != '\0' ? cache : home != nullptr && *home != '\0' ? std::string(home) + "/.cache" : "";
  if (!cacheDir.empty()) {
    for (const std::string& path : globbed(cacheDir + "/braid/nccl/*/nvidia/nccl/lib/" + kSoname)) {
      if (seen.insert(path).second) out.push_back(path);
    }
  }
  return out;
}

NcclLoad loadNcclFrom(const std::vector<std::string>& candidates) {
  NcclLoad load;
  std::vector<std::string> refused;
  for (const std::string& candidate : candidates) {
    load.searched.push_back(describe(candidate));
    const bool bare = candidate.find('/') == std::string::npos;
    void* handle = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      // A file that exists but does not load is worth saying; a path that is not there is not.
      const char* why = dlerror();
      const std::string text = why != nullptr ? why : "dlopen failed";
      if (candidates.size() == 1 || (!bare && text.find("No such file") == std::string::npos)) {
        refused.push_back(text.rfind(candidate, 0) == 0 ? text : candidate + ": " + text);
      }
      continue;
    }
    auto lib = std::make_unique<NcclLibrary>();
    lib->path = candidate;
    Dl_info info{};
    if (auto* fn = dlsym(handle, "ncclGetVersion"); fn != nullptr && dladdr(fn, &info) != 0 && info.dli_fname != nullptr) lib->path = info.dli_fname;
    const std::string missing = resolve(handle, *lib);
    if (!missing.empty()) {
      refused.push_back(lib->path + " is not a usable NCCL: it has no " + missing);
      dlclose(handle);
      continue;
    }
    int version = 0;
    if (lib->getVersion(&version) != nccl::kSuccess) {
      refused.push_back(lib->path + ": ncclGetVersion failed");
      dlclose(handle);
      continue;
    }
    lib->version = version;
    if (version < nccl::kMinimumVersion) {
      refused.push_back(lib->path + " is NCCL " + ncclVersionString(version) + ", older than the " + ncclVersionString(nccl::kMinimumVersion) +
                        " Braid needs");
      dlclose(handle);
      continue;
    }
    // Kept for the process's life: communicators and streams may hold on to it.
    load.library = lib.release();
    return load;
  }
  std::string text = "NCCL is not available: ";
  if (refused.empty()) {
    text += "no " + std::string(kSoname) + " was found";
  } else {
    text += "no usable library (";
    for (size_t i = 0; i < refused.size(); ++i) text += (i > 0 ? "; " : "") + refused[i];
    text += ")";
  }
  text += ". Searched: ";
  for (size_t i = 0; i < load.searched.size(); ++i) text += (i > 0 ? ", " : "") + load.searched[i];
  text += ". Install NCCL 2.14 or later (the CUDA toolkit's, or pip install nvidia-nccl-cu13) or set BRAID_NCCL_LIB to its libnccl.so.2";
  load.error = text;
  return load;
}

const NcclLoad& loadNccl() {
  static std::once_flag once;
  static NcclLoad load;
  std::call_once(once, [] { load = loadNcclFrom(ncclCandidates()); });
  return load;
}

}  // namespace braid
