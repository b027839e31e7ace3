"""PyTorch's figures beside Braid's GPU kernels (scripts/gpu-check.sh runs both in one check):
a device-to-device copy, the float16 / bfloat16 casts (bytes read and written per second) and
torch.topk of 1% of |x| at 16M-256M floats (elements per second), medians of 9 CUDA-event-timed
runs after a warm-up. One JSON line; without a GPU it says so.
    python3 benchmarks/gpu_peers.py [--max-floats 268435456]"""
import json
import sys

import torch


def median_ms(run):
    run()
    torch.cuda.synchronize()
    times = []
    for _ in range(9):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return sorted(times)[len(times) // 2]


def main():
    max_floats = 1 << 28
    if "--max-floats" in sys.argv:
        max_floats = int(sys.argv[sys.argv.index("--max-floats") + 1])
    if not torch.cuda.is_available():
        print(json.dumps({"gpu": False, "why": "torch sees no CUDA GPU"}))
        return
    n = min(1 << 26, max_floats)
    x = (torch.rand(n, device="cuda") - 0.5) * 8
    y = torch.empty_like(x)
    h = torch.empty(n, device="cuda", dtype=torch.float16)
    b = torch.empty(n, device="cuda", dtype=torch.bfloat16)
    copy_ms = median_ms(lambda: y.copy_(x))
    f16_ms = median_ms(lambda: h.copy_(x))
    bf16_ms = median_ms(lambda: b.copy_(x))
    out = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "castFloats": n,
        "copyGBps": 8 * n / (copy_ms * 1e6),
        "fp16GBps": 6 * n / (f16_ms * 1e6),
        "bf16GBps": 6 * n / (bf16_ms * 1e6),
        "topk": [],
    }
    del x, y, h, b
    m = 1 << 24
    while m <= max_floats:
        v = (torch.rand(m, device="cuda") - 0.5) * 8
        k = m // 100
        ms = median_ms(lambda: torch.topk(v.abs(), k, sorted=False))
        out["topk"].append({"floats": m, "k": k, "ms": ms, "elementsPerS": m / (ms * 1e-3)})
        del v
        torch.cuda.empty_cache()
        m <<= 2
    print(json.dumps(out))


main()
