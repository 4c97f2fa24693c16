"""Frozen EfficientNet-Lite0 feature extraction speed: images/s at 224 px on CPU.

Three rows, measured in the same run on the same random batch (the pretrained weights;
speed does not depend on the pixels):

1. ``plain``: the eval-mode network, NCHW input;
2. ``channels_last``: the same network and input in ``channels_last`` memory format;
3. ``fused``: ``fuse_for_inference()`` (BatchNorm folded into the convolutions) plus
   ``channels_last``, which is what :func:`aimass.backbones.efficientnet.extract_features`
   is meant to be given.

Each row runs under ``torch.inference_mode()`` with ``torch.set_num_threads(threads)``,
after one warm-up batch; the figure is the median over ``--runs`` timed batches. The bar is
50 images/s for the fused row. The whole script takes under a minute on 2 cores.

Usage::

    python bench/image_features.py                 # batch 32, 5 runs, 2 threads
    python bench/image_features.py --runs 3 --threads 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from aimass.backbones.efficientnet import INPUT_SIZE, load_pretrained

BAR = 50.0


def images_per_second(net, batch: torch.Tensor, runs: int) -> float:
    """Median images/s over ``runs`` forward passes after one warm-up pass."""
    times = []
    with torch.inference_mode():
        net.forward_features(batch)
        for _ in range(runs):
            started = time.perf_counter()
            net.forward_features(batch)
            times.append(time.perf_counter() - started)
    return len(batch) / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = load_pretrained()
    batch = torch.randn(args.batch, 3, INPUT_SIZE, INPUT_SIZE)
    last = torch.channels_last
    rows = {
        "plain": images_per_second(net, batch, args.runs),
        "channels_last": images_per_second(
            net.to(memory_format=last), batch.contiguous(memory_format=last), args.runs
        ),
        "fused": images_per_second(
            net.fuse_for_inference().to(memory_format=last), batch.contiguous(memory_format=last), args.runs
        ),
    }
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, {INPUT_SIZE} px")
    for name, rate in rows.items():
        print(f"{name:>14}: {rate:7.1f} images/s  ({rate / rows['plain']:.2f}x plain)")
    verdict = "PASS" if rows["fused"] >= BAR else "FAIL"
    print(f"bar: fused >= {BAR:.0f} images/s -> {verdict}")


if __name__ == "__main__":
    main()
