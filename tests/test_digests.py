"""Digests of tensors (factlens.digests): pieces give the whole-tensor hash; content digests see every change."""

from __future__ import annotations

import hashlib

import pytest
import torch

from factlens.digests import content_digests, update_with_tensor, weight_digests
from factlens.editing.covariance import weights_fingerprint
from factlens.testing import planted_fact_model

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _whole(t: torch.Tensor, header: bool = True) -> str:
    """The digest as factlens computed it before pieces: the whole tensor on the CPU, one update."""
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}".encode() if header else b"")
    h.update(flat.view(torch.uint8).numpy())
    return h.hexdigest()


def _cases() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    big = torch.randn(37, 53, generator=g)
    return {
        "contiguous": big,
        "transposed": big.t(),  # not contiguous: hashed row block by row block
        "column slice": big[:, 3:40],
        "offset view": big.reshape(-1)[5:1000],
        "bfloat16": torch.randn(64, 7, generator=g).to(torch.bfloat16),
        "bfloat16 transposed": torch.randn(7, 33, generator=g).to(torch.bfloat16).t(),  # odd rows: words span rows
        "int8": torch.randint(-128, 127, (300,), generator=g, dtype=torch.int8),
        "int8 transposed": torch.randint(-128, 127, (9, 13), generator=g, dtype=torch.int8).t(),
        "float64 transposed": torch.randn(5, 11, generator=g, dtype=torch.float64).t(),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "empty rows": torch.zeros(4, 0).t(),
    }


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 1 << 20])
def test_pieces_give_the_whole_tensor_digest(chunk_bytes):
    for name, t in _cases().items():
        h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}".encode())
        update_with_tensor(h, t, chunk_bytes=chunk_bytes)
        assert h.hexdigest() == _whole(t), name


def test_pieces_and_blocks_cover_every_element_in_order():
    """A non-contiguous weight is read a few rows at a time, in its logical order; blocks start
    at their flat index and on a whole 4-byte word."""
    from factlens.digests import _blocks, _pieces

    t = torch.arange(60.0).reshape(6, 10).T  # non-contiguous
    for n_bytes in (1, 12, 28, 400):
        pieces = list(_pieces(t, n_bytes))
        assert all(p.is_contiguous() and p.numel() <= max(1, n_bytes // 4) for p in pieces)
        assert torch.equal(torch.cat(pieces), t.reshape(-1))
    small = torch.arange(63, dtype=torch.int16).reshape(9, 7).T  # rows of 9 two-byte elements
    for n in (2, 4, 10, 100):
        blocks = list(_blocks(small, n, 2))
        assert torch.equal(torch.cat([b for _, b in blocks]), small.reshape(-1))
        assert [s for s, _ in blocks] == [sum(b.numel() for _, b in blocks[:i]) for i in range(len(blocks))]
        assert all(s % 2 == 0 for s, _ in blocks)


def test_content_digests_see_every_change_and_only_changes():
    """A flipped bit, two swapped values and a moved row each change the content digest; a copy
    with other strides (same values) does not."""
    cases = _cases()
    before = content_digests(cases, words=5)
    assert content_digests({n: t.clone() for n, t in cases.items()}, words=5) == before
    for words in (4, 5, 7, 64):  # the strides (factlens.layout changes them in place) never matter
        assert (content_digests({n: t.contiguous() for n, t in cases.items()}, words=words)
                == content_digests(cases, words=words))
    assert before["empty"] == b"" and before["scalar"] != b""
    t = cases["contiguous"].clone()
    flipped = t.clone()
    flipped.view(torch.int32)[3, 7] ^= 1 << 30
    swapped = t.clone()
    swapped[0, 0], swapped[0, 1] = t[0, 1], t[0, 0]
    rolled = t.roll(1, dims=0)
    digests = content_digests({"t": t, "flipped": flipped, "swapped": swapped, "rolled": rolled}, words=16)
    assert len(set(digests.values())) == 4
    odd = torch.arange(7, dtype=torch.uint8)  # 1-3 bytes after the last whole word
    changed = odd.clone()
    changed[6] = 99
    assert content_digests({"a": odd}) != content_digests({"a": changed})


def test_two_sign_flips_change_the_content_digest():
    """A change of bit 31 of a word counted only through the low 33 bits of its position weight:
    flipping the signs of the values at two positions whose weights agree there (123 such pairs
    in a piece of 2**20 words) left the digest as it was."""
    import numpy as np

    from factlens.digests import DEFAULT_WORDS, _position_weights

    low = _position_weights(DEFAULT_WORDS, "cpu").numpy().view(np.uint64) & np.uint64((1 << 33) - 1)
    order = np.argsort(low, kind="stable")
    same = np.nonzero(low[order][1:] == low[order][:-1])[0]
    assert len(same) > 0
    x = torch.rand(DEFAULT_WORDS, generator=torch.Generator().manual_seed(3)) + 0.1
    for k in same[:20]:
        i, j = int(order[k]), int(order[k + 1])
        y = x.clone()
        y[j] = -y[j]  # one sign bit set, the other clear: the flips change the words by +2**31 and -2**31
        z = y.clone()
        z[i], z[j] = -z[i], -z[j]
        assert content_digests({"x": z}) != content_digests({"x": y}), (i, j)


def test_one_element_left_of_a_strided_tensor():
    """A strided 1-D tensor whose last piece or row block is one element: that element counts as
    contiguous but keeps its stride, and its byte view raised."""
    t = torch.randn(34, generator=torch.Generator().manual_seed(5))[::2]  # 17 elements, 16 per 64-byte chunk
    h = hashlib.sha256()
    update_with_tensor(h, t, chunk_bytes=64)
    assert h.hexdigest() == _whole(t, header=False)
    u = torch.randn(10)[::2]  # 5 float32 elements, 4 per piece of 4 words
    assert content_digests({"u": u}, words=4) == content_digests({"u": u.contiguous()}, words=4)
    assert weight_digests({"u": u}) == weight_digests({"u": u.contiguous()})


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="words must be at least 4"):
        content_digests({"t": torch.ones(2)}, words=0)
    with pytest.raises(ValueError, match="chunk_bytes must be positive"):
        update_with_tensor(hashlib.sha256(), torch.ones(2), chunk_bytes=0)


def test_model_digests_and_fingerprints_are_unchanged():
    """The fingerprints saved before pieces (key-statistics cache names) still match."""
    model = planted_fact_model().model
    from factlens.evaluation.baseline_cache import model_config_text

    ref = hashlib.blake2b(f"key-statistics format 2|{model_config_text(model)}|".encode(), digest_size=16)
    for name, p in sorted(model.named_parameters()):
        if name.startswith("blocks.0.") and not name.startswith(("blocks.0.mlp.W_out", "blocks.0.mlp.b_out")) \
                or name.startswith(("embed.", "pos_embed.")):
            t = p.detach().contiguous()
            ref.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
            if t.numel():
                ref.update(memoryview(t.view(torch.uint8).numpy()))
    assert weights_fingerprint(model, 0) == ref.hexdigest()


def test_weight_digests_see_a_change_and_ignore_the_strides():
    cases = _cases()
    before = weight_digests(cases)
    assert weight_digests({n: t.contiguous() for n, t in cases.items()}) == before
    cases["contiguous"] = t = cases["contiguous"].clone()  # the other views keep the old values
    t.view(torch.int32)[3, 7] ^= 1
    after = weight_digests(cases)
    assert [n for n in cases if after[n] != before[n]] == ["contiguous"]
    assert weight_digests({"t": torch.zeros(3)}) != weight_digests({"t": torch.zeros(3, dtype=torch.int32)})


@CUDA
def test_a_gpu_tensor_gives_the_cpu_digests():
    t = torch.randn(513, 129)
    h_cpu, h_gpu = hashlib.sha256(), hashlib.sha256()
    update_with_tensor(h_cpu, t)
    update_with_tensor(h_gpu, t.cuda().t().contiguous().t(), chunk_bytes=4096)
    assert h_cpu.hexdigest() == h_gpu.hexdigest()
    assert content_digests({"t": t.cuda()}, words=1000) == content_digests({"t": t}, words=1000)
    w = t.cuda()
    gpu = {"t": w, "u": w.t()}
    before = weight_digests(gpu)
    gpu["u"][0, 1] += 1  # a view of t: both change
    assert all(weight_digests(gpu)[n] != before[n] for n in gpu)
