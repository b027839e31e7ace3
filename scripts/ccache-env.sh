# Sourced by setup.sh and the test scripts: compiles the native code through ccache where it is
# installed (setup.sh installs it), so that the five builds a test run makes (the addon, ASan, TSan,
# the CUDA emulation, the packages' own npm rebuild) and the next run's builds of the same sources
# come from the cache. ccache hashes the compiler, its arguments and the preprocessed sources, so a
# hit gives the object file the compiler would make: on a fresh machine the cache is only empty.
# BRAID_CCACHE=0 turns it off.
if [ "${BRAID_CCACHE:-1}" != 0 ] && command -v ccache >/dev/null 2>&1; then
  # CMake (>= 3.17) takes a compiler launcher from these for every build it configures (cmake-js).
  export CMAKE_C_COMPILER_LAUNCHER=ccache CMAKE_CXX_COMPILER_LAUNCHER=ccache CMAKE_CUDA_COMPILER_LAUNCHER=ccache
  # Paths rewritten relative to the build folder: clones in other folders (CI clones afresh each
  # time, the packages test builds inside a scratch project) share the cache. The sanitizer builds
  # use -g, whose working folder would otherwise be hashed too (their debug info then names the
  # folder of the build that filled the cache; the line numbers are the same).
  export CCACHE_BASEDIR=/ CCACHE_NOHASHDIR=1
fi
