#!/usr/bin/env bash
# The native code under sanitizers (`npm run test:sanitize`; run scripts/setup.sh first):
#  1. the addon and the native test programs built with AddressSanitizer + UndefinedBehaviorSanitizer
#     (native/build-asan): the kernel, algorithm and engine tests, then a short mpirun suite through
#     the addon (the reliability scenarios: exits, failed starts, bad_alloc, detached buffers, and
#     the fuzzer) with libasan preloaded into node;
#  2. the engine test built with ThreadSanitizer (native/build-tsan): ops run inline on a second
#     thread against the engine thread, at 2 and 3 ranks; and the kernel test (the parallel copy's
#     helper threads).
# Any report fails the run (halt_on_error). Leak checking is off: V8 and Open MPI keep memory
# until exit by design.
set -euo pipefail
source "$(dirname "$0")/native-variant.sh"

echo "== building with -fsanitize=address,undefined (native/build-asan)"
native_variant build-asan --CDBRAID_SANITIZE=address,undefined --CDBRAID_CUDA=OFF
asan_dir="$PWD/native/build-asan/Release"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87"

echo "== native tests under ASan + UBSan"
BRAID_NATIVE_DIR="$asan_dir" node native/scripts/native-tests.mjs

echo "== mpirun suite through the ASan addon"
libasan="$(g++ -print-file-name=libasan.so)"
libubsan="$(g++ -print-file-name=libubsan.so)"
(cd packages/collectives && BRAID_NATIVE_DIR="$asan_dir" LD_PRELOAD="$libasan $libubsan" npx vitest run src/reliability.test.ts src/fuzz.test.ts)

echo "== engine test under TSan (native/build-tsan)"
native_variant build-tsan --CDBRAID_SANITIZE=thread --CDBRAID_CUDA=OFF
export TSAN_OPTIONS="halt_on_error=1:exitcode=88:suppressions=$PWD/native/test/tsan.supp"
for np in 2 3; do
  echo "\$ mpirun -np $np braid_engine_test (TSan)"
  mpirun -np "$np" --oversubscribe -x TSAN_OPTIONS native/build-tsan/Release/braid_engine_test
done
# The TCP transport and the hierarchical all-reduce's overlap thread (network steps beside shared-memory ones).
# Two dtypes (one of them converted through float32 on the way): every dtype's arithmetic is
# checked by the plain and ASan runs, and all eight cost TSan nearly two minutes here.
echo "\$ mpirun -np 4 braid_algorithms_test tcp (TSan, float32 and float16)"
mpirun -np 4 --oversubscribe -x TSAN_OPTIONS -x BRAID_TEST_DTYPES=float32,float16 native/build-tsan/Release/braid_algorithms_test tcp
# The parallel copy's helper threads (the staged NCCL all-reduce's copies): the kernel test's one
# case with threads; its single-threaded arithmetic (exhaustive float16, every dtype x op) cost TSan
# half a minute and is checked by the plain and ASan runs.
echo "\$ braid_kernels_test (TSan, the parallel copy)"
BRAID_TEST_CASES="parallel copy" native/build-tsan/Release/braid_kernels_test
echo "sanitizers: clean"
