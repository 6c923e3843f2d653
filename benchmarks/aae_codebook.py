"""Benchmark: AAE codebook lookup time per query against the paper's 92,232 codes (2562 views x 36 in-plane).

Times :meth:`posekit.methods.aae.Codebook.lookup` (one batched matrix product + top-k) for batches of
1 and 64 queries, and a naive baseline in the same run: a Python loop computing one cosine
similarity per code with numpy, on a subset of the codes, extrapolated to the full codebook.
The codes are random unit vectors: lookup time does not depend on their values.

    python benchmarks/aae_codebook.py [--codes 92232] [--dim 128] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from posekit.methods.aae.codebook import Codebook


def best_of(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls (seconds), after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codes", type=int, default=92232)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--naive-subset", type=int, default=5000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    codes = torch.nn.functional.normalize(torch.randn(args.codes, args.dim, generator=g), dim=1)
    book = Codebook(codes=codes.to(args.device), rotations=np.zeros((args.codes, 3, 3)), box_size=np.zeros(args.codes),
                    box_offset=np.zeros((args.codes, 2)), distance=0.0, K=np.eye(3), render_size=0, image_size=0,
                    crop_pad=1.2, mesh_hash="bench")
    q64 = torch.randn(64, args.dim, generator=g).to(args.device)
    q1 = q64[:1]
    t1 = best_of(lambda: book.lookup(q1, args.top_k), 20)
    t64 = best_of(lambda: book.lookup(q64, args.top_k), 10) / 64

    # Naive baseline: per-code cosine similarity in a Python loop (numpy), on a subset, extrapolated.
    sub = codes[: args.naive_subset].numpy()
    q = q1[0].cpu().numpy()

    def naive() -> int:
        best, best_i = -2.0, -1
        qn = q / np.linalg.norm(q)
        for i in range(sub.shape[0]):
            c = sub[i]
            s = float(np.dot(qn, c) / np.linalg.norm(c))
            if s > best:
                best, best_i = s, i
        return best_i

    t_naive = best_of(naive, 2) * args.codes / sub.shape[0]
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {args.threads}, device {args.device}")
    print(f"codebook: {args.codes} codes x {args.dim} float32, top-{args.top_k}")
    print(f"lookup, batch 1:   {t1 * 1e3:8.3f} ms / query")
    print(f"lookup, batch 64:  {t64 * 1e3:8.3f} ms / query")
    print(f"naive python loop: {t_naive * 1e3:8.1f} ms / query (measured on {sub.shape[0]} codes, scaled)")
    print(f"speed-up: {t_naive / t1:.0f}x (batch 1), {t_naive / t64:.0f}x (batch 64)")


if __name__ == "__main__":
    main()
