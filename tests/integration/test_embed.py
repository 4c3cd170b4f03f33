"""alwb.learning.embed: the per-backbone embedding cache is computed once, resumes after an interruption, grows with new
items, skips unreadable images with a reason; a head fits on the cached embeddings (plumbing: random weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_shapes
from weights_helpers import isolate_hub, register_test_spec, save_state_dict

from alwb.intake.images import load_image
from alwb.learning import backbones
from alwb.learning.embed import EmbeddingCache, cache_key, embed_items
from alwb.learning.head import fit_head

HYMENOPTERA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "hymenoptera"


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = save_state_dict(tmp_path_factory.mktemp("w") / "r18.pth", "resnet18", seed=0)
    return path, backbones.sha256_file(path)


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, weights_file: tuple[Path, str]):  # noqa: ANN201
    """The real ResNet-18 architecture with the test's random weights, at 64 px to keep the tests fast."""
    isolate_hub(monkeypatch, tmp_path)
    spec = register_test_spec("t_r18_64", weights_file[1], input_size=64, resize_size=72)
    backbones.add(spec.name, weights_file[0])
    yield backbones.load(spec.name, download=False)
    backbones.unregister(spec.name)


def _items(folder: Path) -> list[tuple[int, str]]:
    return [(i + 1, str(p)) for i, p in enumerate(sorted(folder.rglob("*.png")))]


def test_embeds_once_and_matches_a_direct_forward_pass(small: backbones.LoadedBackbone, tmp_path: Path) -> None:
    make_shapes(tmp_path / "img", 6, size=40)
    items = _items(tmp_path / "img")
    project = tmp_path / "proj"
    first = embed_items(project, items, small, batch_size=8, device="cpu", workers=0)
    assert (first.embedded, first.already, first.total, first.unreadable) == (18, 0, 18, {})
    assert first.path == project / "cache" / f"{cache_key(small.spec.name, small.origin.sha256)}.npy"
    second = embed_items(project, items, small, batch_size=8, device="cpu", workers=0)
    assert (second.embedded, second.already) == (0, 18)
    cache = EmbeddingCache.for_backbone(project, small)
    got = cache.rows([5, 2])
    x = torch.stack([small.preprocess(load_image(items[i - 1][1], 3)) for i in (5, 2)])
    with torch.no_grad():
        ref = small.model(x).numpy()
    assert got.shape == (2, 512) and np.allclose(got, ref, atol=1e-4)


def test_unreadable_image_is_skipped_and_reported(small: backbones.LoadedBackbone, tmp_path: Path) -> None:
    make_shapes(tmp_path / "img", 3, size=40)
    items = _items(tmp_path / "img")
    bad = tmp_path / "img" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    items.append((100, str(bad)))
    items.append((101, str(tmp_path / "img" / "gone.png")))
    rep = embed_items(tmp_path / "proj", items, small, batch_size=4, device="cpu", workers=0)
    assert rep.embedded == 9 and set(rep.unreadable) == {100, 101}
    assert "not a supported image" in rep.unreadable[100] or "corrupt" in rep.unreadable[100]
    assert "cannot read file" in rep.unreadable[101]
    again = embed_items(tmp_path / "proj", items, small, batch_size=4, device="cpu", workers=0)
    assert again.embedded == 0 and set(again.unreadable) == {100, 101}  # still reported, not retried
    cache = EmbeddingCache.for_backbone(tmp_path / "proj", small)
    assert 100 not in cache.embedded_ids()
    with pytest.raises(KeyError, match="no embedding"):
        cache.rows([100])


def test_resumes_after_an_interruption_and_grows(small: backbones.LoadedBackbone, tmp_path: Path) -> None:
    make_shapes(tmp_path / "img", 8, size=40)
    items = _items(tmp_path / "img")  # 24
    calls: list[int] = []

    def stop_after_two_batches(phase: str, done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt

    project = tmp_path / "proj"
    with pytest.raises(KeyboardInterrupt):
        embed_items(project, items[:20], small, batch_size=5, device="cpu", workers=0, progress=stop_after_two_batches)
    assert calls == [5, 10]
    resumed = embed_items(project, items[:20], small, batch_size=5, device="cpu", workers=0)
    assert (resumed.embedded, resumed.already) == (10, 10)
    grown = embed_items(project, items, small, batch_size=5, device="cpu", workers=0)
    assert (grown.embedded, grown.already) == (4, 20)
    fresh = embed_items(tmp_path / "other", items, small, batch_size=7, device="cpu", workers=1, threads=1)
    assert fresh.embedded == 24
    a = EmbeddingCache.for_backbone(project, small)
    b = EmbeddingCache.for_backbone(tmp_path / "other", small)
    ids = [i for i, _ in items]
    assert np.allclose(a.rows(ids), b.rows(ids), atol=1e-4)


def test_a_new_weights_file_gets_its_own_cache(small: backbones.LoadedBackbone, tmp_path: Path) -> None:
    make_shapes(tmp_path / "img", 2, size=40)
    items = _items(tmp_path / "img")
    embed_items(tmp_path / "proj", items, small, device="cpu", workers=0)
    other = backbones.add(small.spec.name, save_state_dict(tmp_path / "o.pth", "resnet18", seed=5))
    loaded = backbones.load(small.spec.name, download=False)
    assert loaded.origin == other and other.kind == "custom"
    rep = embed_items(tmp_path / "proj", items, loaded, device="cpu", workers=0)
    assert rep.embedded == 6 and rep.path.name.endswith(f"_{other.sha256[:8]}.npy")


@pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason="../shared/datasets/hymenoptera is not there")
def test_hymenoptera_photos_embed_once_and_fit_a_head(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, weights_file: tuple[Path, str]
) -> None:
    isolate_hub(monkeypatch, tmp_path)
    # ResNet-18 with random weights (plumbing only: no accuracy is claimed), at 112 px to fit the suite's time
    spec = register_test_spec("t_r18_hym", weights_file[1], input_size=112, resize_size=128)
    try:
        backbones.add(spec.name, weights_file[0])
        loaded = backbones.load(spec.name, download=False)
        files = sorted(p for p in (HYMENOPTERA / "train").rglob("*") if p.is_file())
        items = [(i + 1, str(p)) for i, p in enumerate(files)]
        seen: list[tuple[str, int, int]] = []
        rep = embed_items(
            tmp_path / "proj", items, loaded, batch_size=32, device="cpu", workers=0, progress=lambda *a: seen.append(a)
        )
        assert rep.total == len(files) == 245
        assert rep.embedded + len(rep.unreadable) == 245 and rep.embedded >= 244
        assert seen[-1] == ("embedding", 245, 245)
        assert embed_items(tmp_path / "proj", items, loaded, device="cpu", workers=0).embedded == 0
        cache = EmbeddingCache.for_backbone(tmp_path / "proj", loaded)
        ids, emb = cache.all()
        y = np.array([0 if "/ants/" in items[int(i) - 1][1] else 1 for i in ids])
        head = fit_head(cache.rows(ids[::3]), y[::3], 2, standardise_with=emb)
        proba = head.predict_proba(emb)
        assert proba.shape == (len(ids), 2) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    finally:
        backbones.unregister(spec.name)


def test_a_file_replaced_since_import_is_not_embedded(small: backbones.LoadedBackbone, tmp_path: Path) -> None:
    """With the digests stored at import, an image whose file changed is left out (unreadable, with the reason):
    its new content never gets the old item's embedding, so a head never trains it under the old label."""
    import hashlib

    make_shapes(tmp_path / "img", 2, size=40)
    items = _items(tmp_path / "img")
    digests = {i: hashlib.sha256(Path(p).read_bytes()).hexdigest() for i, p in items}
    victim_id, victim = items[0]
    from PIL import Image

    Image.new("RGB", (40, 40), (1, 2, 3)).save(victim)
    rep = embed_items(tmp_path / "proj", items, small, batch_size=4, device="cpu", workers=0, digests=digests)
    assert set(rep.unreadable) == {victim_id}
    assert "the file changed since it was imported" in rep.unreadable[victim_id]
    assert rep.embedded == len(items) - 1


def test_rows_put_into_the_cache_are_read_back_by_id_after_reopening(tmp_path: Path) -> None:
    """``EmbeddingCache.put``: embeddings computed elsewhere, in any id order, are read back by id (and marked
    embedded) by a cache opened afresh; a row of the wrong width is refused and writes nothing."""
    cache = EmbeddingCache(tmp_path, "efficientnet_lite0", "ab" * 32, 4)
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.put([30, 10, 20], rows)
    again = EmbeddingCache(tmp_path, "efficientnet_lite0", "ab" * 32, 4)
    assert again.embedded_ids().tolist() == [10, 20, 30]
    assert np.array_equal(again.rows([30, 10, 20]), rows)
    with pytest.raises(ValueError, match="dimension 4"):
        again.put([40], np.zeros((1, 5), np.float32))
    assert EmbeddingCache(tmp_path, "efficientnet_lite0", "ab" * 32, 4).embedded_ids().tolist() == [10, 20, 30]
