"""A GGUF's quantised blocks are recovered exactly from their dequantised fp32 values, and only then."""

from __future__ import annotations

import numpy as np

from aimass.llm import exact_blocks


def _q4_1(rng, n=6, k=64):
    codes = rng.integers(0, 16, size=(n, k // 32, 32))
    codes[..., 0], codes[..., 1] = 0, 15  # llama.cpp maps a block's min to 0 and its max to 15
    d = rng.uniform(0.001, 0.05, size=(n, k // 32, 1)).astype(np.float16).astype(np.float64)
    m = -rng.uniform(0, 0.4, size=(n, k // 32, 1)).astype(np.float16).astype(np.float64)
    return codes, (codes * d + m).astype(np.float32).reshape(n, k)


def test_q4_1_blocks_come_back_exactly_and_pack_as_matmulnbits_expects():
    codes, weight = _q4_1(np.random.default_rng(0))
    found, d, m = exact_blocks.q4_1(weight)
    assert np.array_equal(found, codes)
    rebuilt = d[..., None] * (found.astype(np.float32) - 8) + (m + 8 * d)[..., None]
    assert np.allclose(rebuilt.reshape(weight.shape), weight, atol=1e-6)
    packed = exact_blocks._pack4(found)
    assert packed.shape == (6, 2, 16)
    assert (packed[0, 0, 0] & 0x0F) == found[0, 0, 0] and (packed[0, 0, 0] >> 4) == found[0, 0, 1]


def test_weights_that_are_not_exact_blocks_are_left_alone():
    _, weight = _q4_1(np.random.default_rng(1))
    nudged = weight.copy()
    nudged[2, 40] += 1e-4  # one value off the block's grid (a merged LoRA moves every value)
    assert exact_blocks.q4_1(nudged) is None
    assert exact_blocks.q4_1(np.ones((2, 48), np.float32)) is None  # not whole blocks
    assert exact_blocks.q8_0(np.random.default_rng(2).normal(size=(4, 64)).astype(np.float32)) is None


def test_q8_0_blocks_come_back_exactly():
    rng = np.random.default_rng(3)
    codes = rng.integers(-127, 128, size=(5, 2, 32))
    codes[..., 0] = 127
    d = rng.uniform(0.001, 0.01, size=(5, 2, 1)).astype(np.float16).astype(np.float64)
    weight = (codes * d).astype(np.float32).reshape(5, 64)
    found, scale = exact_blocks.q8_0(weight)
    assert np.array_equal(found, codes)
    assert np.allclose(scale, d[..., 0])
