"""Two processes embedding into one project's embedding cache at once (a training round and the dataset-insight job on
a fresh pool): one writer at a time, the second embeds only what the first left, and every row marked embedded holds
its image's embedding; a reader that opens the files while a writer replaces them waits until they agree.

The interleaving is forced, not timed: process A (the round, some items) stops after its first batch until process B
(the insight job, every item) has either finished (what happened before the cache had a writers' lock: B replaced
``KEY.npy`` under A, A's later rows went to the replaced file and A's state file overwrote B's) or reported that it
waits for A (the lock).
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_shapes
from weights_helpers import isolate_hub, register_test_spec, save_state_dict

from alwb.learning import backbones, embed
from alwb.learning.embed import DONE, EmbeddingCache, embed_items

SPEC = "t_r18_64_race"
DEADLINE_S = 120.0


def _load(hub: str, sha: str) -> backbones.LoadedBackbone:
    """In a spawned child: the test's ResNet-18 at 64 px from the parent's isolated hub folder."""
    torch.hub.set_dir(hub)
    torch.set_num_threads(1)
    register_test_spec(SPEC, sha, input_size=64, resize_size=72)
    return backbones.load(SPEC, download=False)


def _round(hub: str, sha: str, project: str, items: list[tuple[int, str]], events: dict[str, Any], out: Any) -> None:
    """Process A: embed ``items``; after the first batch, wait until B has finished or waits for A."""
    try:
        bb = _load(hub, sha)

        def progress(phase: str, done: int, total: int) -> None:
            if phase == "embedding" and not events["a_writing"].is_set():
                events["a_writing"].set()
                if not events["b_moved"].wait(DEADLINE_S):
                    raise TimeoutError("process B neither finished nor waited")

        rep = embed_items(project, items, bb, batch_size=3, device="cpu", workers=0, runtime="torch", progress=progress)
        ids = [i for i, _ in items]
        out.put(("A", rep.embedded, rep.already, EmbeddingCache.for_backbone(project, bb).rows(ids)))
    except BaseException as exc:
        out.put(("A", "error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}", None))


def _insight(hub: str, sha: str, project: str, items: list[tuple[int, str]], events: dict[str, Any], out: Any) -> None:
    """Process B: once A is writing, embed every item (saying so when it has to wait for A)."""
    try:
        bb = _load(hub, sha)
        phases: list[str] = []

        def progress(phase: str, done: int, total: int) -> None:
            phases.append(phase)
            if phase == "waiting":
                events["b_moved"].set()

        if not events["a_writing"].wait(DEADLINE_S):
            raise TimeoutError("process A never started writing")
        try:
            rep = embed_items(
                project, items, bb, batch_size=3, device="cpu", workers=0, runtime="torch", progress=progress
            )
        finally:
            events["b_moved"].set()
        ids = [i for i, _ in items]
        out.put(("B", rep.embedded, rep.already, EmbeddingCache.for_backbone(project, bb).rows(ids), phases))
    except BaseException as exc:
        events["b_moved"].set()
        out.put(("B", "error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}", None, []))


def test_two_processes_embedding_one_fresh_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_hub(monkeypatch, tmp_path)
    weights = save_state_dict(tmp_path / "r18.pth", "resnet18", seed=0)
    sha = backbones.sha256_file(weights)
    register_test_spec(SPEC, sha, input_size=64, resize_size=72)
    try:
        backbones.add(SPEC, weights)
        bb = backbones.load(SPEC, download=False)
        make_shapes(tmp_path / "img", 8, size=40)
        items = [(i + 1, str(p)) for i, p in enumerate(sorted((tmp_path / "img").rglob("*.png")))]  # 24
        ids = [i for i, _ in items]
        embed_items(tmp_path / "alone", items, bb, batch_size=8, device="cpu", workers=0, runtime="torch")
        ref = EmbeddingCache.for_backbone(tmp_path / "alone", bb).rows(ids)  # one process, no race

        project, hub = str(tmp_path / "proj"), str(tmp_path / "hub")
        ctx = mp.get_context("spawn")
        events = {"a_writing": ctx.Event(), "b_moved": ctx.Event()}
        out = ctx.Queue()
        a_items = items[:18]
        procs = [
            ctx.Process(target=_round, args=(hub, sha, project, a_items, events, out)),
            ctx.Process(target=_insight, args=(hub, sha, project, items, events, out)),
        ]
        for p in procs:
            p.start()
        try:
            got = {r[0]: r for r in (out.get(timeout=DEADLINE_S) for _ in procs)}
            for p in procs:
                p.join(30)
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join(5)
        errors = [r[2] for r in got.values() if r[1] == "error"]
        assert not errors, "\n".join(errors)

        _, a_embedded, a_already, a_rows = got["A"]
        _, b_embedded, b_already, b_rows, b_phases = got["B"]
        assert "waiting" in b_phases  # B waited for A's lock ...
        assert (a_embedded, a_already) == (18, 0)
        assert (b_embedded, b_already) == (6, 18)  # ... then embedded only what A left
        assert np.allclose(a_rows, ref[:18], atol=1e-4)  # each process reads back its rows right after embedding
        assert np.allclose(b_rows, ref, atol=1e-4)

        cache = EmbeddingCache.for_backbone(project, bb)
        assert cache.ids.tolist() == ids and bool(np.all(cache.state == DONE))
        rows = cache.rows(ids)
        assert not np.any(np.all(rows == 0, axis=1)), "rows of zeros marked embedded"
        assert np.allclose(rows, ref, atol=1e-4)
    finally:
        backbones.unregister(SPEC)


def test_a_reader_waits_for_a_writer_replacing_the_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A grow replaces ``KEY.npy``, then ``KEY.ids.npy``, then ``KEY.state.npy``: a reader that opens the cache in
    between (lengths disagree) while the writer holds the lock reads again once the writer is done, instead of
    taking the cache for broken and empty; with no writer (files a crash left) it does not wait."""
    from filelock import FileLock

    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    first = EmbeddingCache(tmp_path, "efficientnet_lite0", "ab" * 32, 4)
    first.put([10, 20, 30], rows)
    ids4 = np.array([10, 20, 30, 40], dtype=np.int64)
    state4 = np.array([DONE, DONE, DONE, 0], dtype=np.int8)

    def half_grown() -> None:  # the data file of the new layout is in place, its ids and state not yet
        grown = np.zeros((4, 4), dtype=np.float32)
        grown[:3] = rows
        np.save(first.path, grown)

    writer = FileLock(first.dir / f"{first.key}.lock")  # what EmbeddingCache.writing takes
    writer.acquire()
    half_grown()
    pauses: list[int] = []

    def writer_finishes() -> None:
        pauses.append(1)
        np.save(first.ids_path, ids4)
        np.save(first.state_path, state4)
        writer.release()

    monkeypatch.setattr(embed, "_settle_pause", writer_finishes, raising=False)
    reader = EmbeddingCache(tmp_path, "efficientnet_lite0", "ab" * 32, 4)
    assert pauses == [1] and not writer.is_locked
    assert reader.ids.tolist() == ids4.tolist() and reader.embedded_ids().tolist() == [10, 20, 30]
    assert np.array_equal(reader.rows([30, 10]), rows[[2, 0]])

    np.save(first.state_path, state4[:3])  # files a crash left, nobody writing: no wait, an empty cache
    assert EmbeddingCache(tmp_path, "efficientnet_lite0", "ab" * 32, 4).embedded_ids().tolist() == []
    assert pauses == [1]
