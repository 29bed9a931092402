"""factlens.memory: freed heap memory goes back to the OS (glibc); mapped copies are resident only where read."""

from __future__ import annotations

import platform

import pytest
import torch

from factlens.memory import mapped_copies, release_memory


def _rss() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(platform.system() != "Linux" or "glibc" not in " ".join(platform.libc_ver()),
                    reason="malloc_trim is glibc's")
def test_freed_heap_memory_goes_back():
    blocks = [torch.ones(16 * 1024) for _ in range(6000)]  # 64 KB each: heap, not mmap; ~390 MB touched
    keep = blocks[::10]  # every tenth stays alive: the freed 90 % are holes, not the heap's top
    del blocks
    before = _rss()
    release_memory()
    after = _rss()
    assert before - after > 150e6, (before, after)
    assert all(float(t.sum()) == 16 * 1024 for t in keep)  # live memory untouched


def _grads(model, tokens, first_read=None):
    """Gradients of a loss through the model's blocks, optionally through the shared-prefix path."""
    from factlens.prefix import residual_after_prefix

    params = [p for n, p in model.named_parameters() if n.startswith("blocks.")]
    with torch.enable_grad():
        if first_read is None:
            out = model(tokens, stop_at_layer=model.cfg.n_layers)
        else:
            out, _ = residual_after_prefix(model, tokens, first_read=first_read)
        loss = (out ** 2).mean()
        return loss.detach(), torch.autograd.grad(loss, params)


@pytest.mark.parametrize("prefix", [False, True])
def test_checkpointed_blocks_give_the_same_gradients(prefix):
    """Recomputing each block in backward changes no gradient (bitwise on CPU), with and without
    the shared-prefix key/value cache (whose first pass must not be recomputed), and leaves no
    instance forward behind."""
    from factlens.memory import checkpointed_blocks
    from factlens.testing import tiny_model

    m = tiny_model()
    toks = torch.tensor([[1, 5, 6, 7, 8, 9, 10], [1, 5, 6, 7, 8, 11, 12]])
    first = 5 if prefix else None
    loss0, g0 = _grads(m, toks, first)
    with checkpointed_blocks(m):
        assert all("forward" in vars(b) for b in m.blocks)
        loss1, g1 = _grads(m, toks, first)
        with pytest.raises(RuntimeError, match="already"):
            with checkpointed_blocks(m):
                pass
        assert all("forward" in vars(b) for b in m.blocks)  # the failed nested call undid nothing of ours
    assert not any("forward" in vars(b) for b in m.blocks)
    assert torch.equal(loss0, loss1) and all(torch.equal(a, b) for a, b in zip(g0, g1))
    with checkpointed_blocks(m, enabled=False):
        assert not any("forward" in vars(b) for b in m.blocks)


def test_checkpointed_relearning_gives_the_same_attack(planted):
    """``RelearningConfig(checkpoint=True)``: the same loss history and scores as without."""
    from factlens.evaluation.config import EvalConfig
    from factlens.evaluation.relearning import RelearningConfig, run_relearning

    cfg = EvalConfig(relearning=RelearningConfig(steps=3, rank=8, lr=1e-2, both_halves=False),
                     text={"n_chunks": 4, "seq_len": 16})
    a = run_relearning(planted.model, planted.task, config=cfg)
    b = run_relearning(planted.model, planted.task, config=cfg.override({"relearning.checkpoint": True}))
    assert a.extra["history"] == b.extra["history"]
    assert [(m.name, m.value) for m in a.metrics] == [(m.name, m.value) for m in b.metrics]
    assert not any("forward" in vars(blk) for blk in planted.model.blocks)


def test_shared_copy_shares_buffers_and_weights():
    from factlens.evaluation.relearning import shared_copy
    from factlens.testing.shaped import gemma3_shaped

    m = gemma3_shaped()
    c = shared_copy(m)
    bufs = dict(m.named_buffers())
    assert bufs and all(b is bufs[n] for n, b in c.named_buffers())
    assert all(p.data_ptr() == q.data_ptr() for p, q in zip(m.parameters(), c.parameters()))
    c.blocks[0].attn.rotary_sin = c.blocks[0].attn.rotary_sin * 0  # TransformerLens rebinds buffers like this
    assert not torch.equal(m.blocks[0].attn.rotary_sin, c.blocks[0].attn.rotary_sin)


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/self/statm")
def test_mapped_copies_leave_memory_until_read(tmp_path):
    big = torch.randn(64 * 2**20, generator=torch.Generator().manual_seed(0))  # 256 MB
    expected = float(big[::4096].sum())
    copies = mapped_copies({"big": big, "mask": torch.tensor([True, False]), "empty": torch.zeros(0, 3)}, tmp_path)
    assert list(tmp_path.iterdir()) == []  # the file is unlinked at once; the mapping keeps the data
    del big
    release_memory()
    before = _rss()
    assert float(copies["big"][::4096].sum()) == expected  # reads one value per 16 KB: every page
    assert _rss() - before > 200e6  # the pages became resident only now
    assert copies["mask"].tolist() == [True, False] and copies["empty"].shape == (0, 3)
    copies["big"][0] = 1.0  # a private mapping: writable, the change stays in this process
    assert float(copies["big"][0]) == 1.0


def test_mapped_copies_are_bitwise_equal_in_every_dtype_and_layout(tmp_path):
    ts = {"f32_t": torch.randn(5, 7).T, "bf16": torch.randn(9, dtype=torch.bfloat16),
          "i64": torch.arange(3), "b": torch.tensor([[True], [False]]), "scalar": torch.tensor(2.5)}
    copies = mapped_copies(ts, tmp_path)
    for k, t in ts.items():
        assert copies[k].dtype == t.dtype and copies[k].shape == t.shape and torch.equal(copies[k], t), k
        assert copies[k].data_ptr() != t.data_ptr()


def test_mapped_copies_refuse_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an existing folder"):
        mapped_copies({"a": torch.zeros(2)}, tmp_path / "missing")


def test_kept_copies_in_memory_or_mapped_and_in_memory_when_the_disk_refuses(tmp_path, monkeypatch):
    import factlens.memory as M

    t = {"w": torch.arange(12.0).reshape(3, 4).T, "b": torch.arange(3)}  # a transposed tensor and an integer one
    clones = M.kept_copies(t)
    assert all(torch.equal(clones[k], t[k]) and clones[k].stride() == t[k].stride() for k in t)  # same layout
    mapped = M.kept_copies(t, tmp_path)
    assert all(torch.equal(mapped[k], t[k]) and mapped[k].is_contiguous() for k in t) and not list(tmp_path.iterdir())
    with pytest.raises(FileNotFoundError, match="not an existing folder"):
        M.kept_copies(t, tmp_path / "nosuch")
    other = torch.zeros(2, 3, device="meta")  # stands in for a CUDA tensor: copied on its device, never aliased
    kept_other = M.kept_copies({"g": other}, tmp_path)["g"]
    assert kept_other is not other and kept_other.device == other.device and kept_other.shape == other.shape

    def full_disk(tensors, folder):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(M, "mapped_copies", full_disk)
    with pytest.warns(RuntimeWarning, match="No space left"):
        kept = M.kept_copies(t, tmp_path)
    assert all(torch.equal(kept[k], t[k]) for k in t)


def _falling_rss(monkeypatch, start=2_000_000_000, step=3_000_000):
    """factlens.memory.rss replaced by a size that falls at every call (memory being freed)."""
    import itertools

    import factlens.memory as memory

    sizes = itertools.count(start, -step)
    monkeypatch.setattr(memory, "rss", lambda: next(sizes))


def test_stage_peaks_doctest_holds_when_the_resident_size_falls(monkeypatch):
    # A clean-clone CI run failed this doctest when the process's resident size fell while it
    # ran (e.g. the garbage collector freeing an earlier test's model): it compared two stages.
    import doctest

    import factlens.memory as memory

    _falling_rss(monkeypatch)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(memory.StagePeaks, "StagePeaks", globs=vars(memory).copy()):
        runner.run(test, out=lambda s: None)
    assert runner.failures == 0 and runner.tries > 0


def test_stage_peaks_attribute_samples_to_the_stage_that_ran(monkeypatch):
    import factlens.memory as memory

    size = {"now": 100}
    monkeypatch.setattr(memory, "rss", lambda: size["now"])
    with memory.StagePeaks(interval=0.01) as peaks:  # any sample sees one of the sizes set
        peaks.begin("load")
        size["now"] = 300
        peaks.begin("edit")  # the ending stage gets a last sample: load saw 300
        size["now"] = 200
    assert peaks.by_stage == {"load": 300, "edit": 300}
    assert peaks.peak == 300 and peaks.start == 100
