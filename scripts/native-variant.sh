# Sourced by the scripts that build another variant of the native code beside native/build (the
# sanitizer builds, the CUDA emulation): mpirun's settings for test jobs as root on a small
# machine, and `native_variant OUT CMAKE_ARGS...`, which compiles native/ into native/OUT with
# cmake-js.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=1
source scripts/ccache-env.sh
cmake_js="$(node -p "require('path').join(require('path').dirname(require.resolve('cmake-js/package.json', { paths: ['native'] })), 'bin', 'cmake-js')")"

native_variant() {
  local out=$1
  shift
  (cd native && CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" node "$cmake_js" compile --out "$out" "$@" >/dev/null)
}
