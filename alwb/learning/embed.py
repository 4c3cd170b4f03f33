"""Embeddings of every image, computed once per backbone and weights file, in a memory-mapped cache.

Files, in ``PROJECT/cache/`` (``KEY`` = ``emb_<backbone>_<sha8>``, ``sha8`` the first 8 hex digits of the weights
file's SHA-256, so a custom file gets its own cache):

``KEY.npy``
    float32 ``(N, D)``, rows aligned with ``KEY.ids.npy`` (ascending item ids); opened with ``mmap_mode``.
``KEY.ids.npy``
    int64 ``(N,)`` item ids.
``KEY.state.npy``
    int8 ``(N,)``: 0 not embedded yet, 1 embedded, -1 unreadable (the reason is in ``KEY.errors.json``).
``KEY.lock``
    the writers' lock: one process at a time grows or writes the cache (:meth:`EmbeddingCache.writing`), e.g. a
    training round and the dataset-insight job embedding the same fresh pool. The second one waits, then re-reads
    the files and embeds only what is still pending. Readers take no lock.

Rows are written batch by batch and flushed before the state file is replaced (atomically), so an interrupted run
loses at most the batch in flight and the next call continues from there. New items grow the cache (a new
``KEY.npy`` replaces the old one); items already embedded are never embedded again. A reader that opens the files
while a writer replaces them (their lengths disagree for a moment) reads them again until they agree. Images are
opened through :func:`alwb.intake.images.load_image` (safe formats, orientation fixed); one that cannot be read is
skipped and reported, never fatal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..errors import ImageRejected
from ..intake.images import ImageRoot, check_present

if TYPE_CHECKING:  # pragma: no cover
    from filelock import BaseFileLock

    from .backbones import LoadedBackbone, Preprocess
    from .onnxembed import OnnxEmbedder

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]

PENDING, DONE, UNREADABLE = 0, 1, -1

#: how long a reader waits for a writer's files to agree again (a grow replaces three files, milliseconds apart)
SETTLE_S = 2.0


def _settle_pause() -> None:
    """The pause between two reads of files a writer is replacing (a function, so that a test can act there)."""
    time.sleep(0.02)


def cache_key(backbone: str, weights_sha256: str, framing: str = "crop") -> str:
    """``emb_<backbone>_<sha8>``: the stem of the cache files for one backbone and weights file; ``_whole`` after it
    for images framed whole (:data:`alwb.learning.plan.FRAMINGS`; any other framing is refused: it names files)."""
    from .plan import FRAMINGS

    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}, not {framing!r}")
    return f"emb_{backbone}_{weights_sha256[:8]}" + ("" if framing == "crop" else f"_{framing}")


@dataclass
class EmbedReport:
    """What :func:`embed_items` did.

    ``unreadable`` maps item id -> reason for every requested item that could not be read (now or in an earlier
    run); those items have no embedding.
    """

    backbone: str
    path: Path
    total: int
    embedded: int
    already: int
    unreadable: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    device: str = "cpu"
    #: what computed the embeddings of this call: ``pytorch`` or ``onnxruntime`` (:mod:`alwb.learning.onnxembed`)
    runtime: str = "pytorch"
    #: largest difference between ONNX Runtime's and PyTorch's embeddings on this call's check (None: not checked)
    parity: float | None = None

    @property
    def images_per_second(self) -> float:
        """Throughput of this call (0 when nothing was embedded)."""
        return self.embedded / self.seconds if self.embedded and self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for a person."""
        bad = f", {len(self.unreadable)} unreadable" if self.unreadable else ""
        on = f"{self.device}, {self.runtime}" if self.runtime != "pytorch" else self.device
        rate = f" ({self.images_per_second:.1f} img/s on {on})" if self.embedded else ""
        return f"{self.backbone}: {self.embedded} embedded{rate}, {self.already} already cached{bad}"


class EmbeddingCache:
    """The embeddings of one backbone + weights file in a project (see the module docstring for the files).

    Parameters
    ----------
    project_dir : the project folder (the cache lives in ``project_dir/cache``).
    backbone : backbone name.
    weights_sha256 : hex SHA-256 of the weights file (its first 8 digits name the cache).
    dim : embedding size D.
    framing : how the images were framed for the backbone (``crop`` or ``whole``: separate caches).
    """

    def __init__(
        self, project_dir: str | os.PathLike[str], backbone: str, weights_sha256: str, dim: int, framing: str = "crop"
    ) -> None:
        self.dir = Path(project_dir) / "cache"
        self.backbone = backbone
        self.dim = int(dim)
        self.key = cache_key(backbone, weights_sha256, framing)
        self.path = self.dir / f"{self.key}.npy"
        self.ids_path = self.dir / f"{self.key}.ids.npy"
        self.state_path = self.dir / f"{self.key}.state.npy"
        self.errors_path = self.dir / f"{self.key}.errors.json"
        self.lock_path = self.dir / f"{self.key}.lock"
        self._lock: BaseFileLock | None = None
        self._clear()
        self._open(settle_s=SETTLE_S)

    @classmethod
    def for_backbone(cls, project_dir: str | os.PathLike[str], loaded: LoadedBackbone) -> EmbeddingCache:
        """The cache of a loaded backbone (its name, weights hash, embedding size and framing)."""
        return cls(
            project_dir, loaded.spec.name, loaded.origin.sha256, loaded.spec.embedding_dim, loaded.preprocess.framing
        )

    def _clear(self) -> None:
        self.ids: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.state: npt.NDArray[np.int8] = np.zeros(0, dtype=np.int8)
        self.errors: dict[int, str] = {}
        self.emb: np.ndarray = np.zeros((0, self.dim), dtype=np.float32)

    def _read(self) -> bool:
        """Load the files when they agree (True; also when there are none yet); False when they do not."""
        if not (self.path.is_file() and self.ids_path.is_file() and self.state_path.is_file()):
            return True
        try:
            ids = np.load(self.ids_path)
            state = np.load(self.state_path)
            emb = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError):
            return False
        if not (len(ids) == len(state) == len(emb) and emb.shape[1:] == (self.dim,)):
            return False
        self.ids, self.state, self.emb = ids.astype(np.int64), state.astype(np.int8), emb
        try:
            self.errors = {int(k): str(v) for k, v in json.loads(self.errors_path.read_text()).items()}
        except (OSError, ValueError):
            self.errors = {}
        return True

    def _open(self, *, settle_s: float = 0.0) -> None:
        """Read the files; while they disagree and another process holds the writers' lock (it is replacing them),
        read again for up to ``settle_s`` seconds. Files that still disagree are left out (the next writer rebuilds
        the cache)."""
        deadline = time.monotonic() + settle_s
        while not self._read():
            if time.monotonic() >= deadline or not self._writer_busy():
                log.warning("embedding cache %s is inconsistent; rebuilding it", self.path)
                return
            _settle_pause()

    def _writer_busy(self) -> bool:
        """Whether another process (or thread) holds the writers' lock now."""
        from filelock import FileLock, Timeout

        if not self.dir.is_dir():
            return False
        probe = FileLock(self.lock_path)
        try:
            probe.acquire(timeout=0)
        except Timeout:
            return True
        except OSError:  # a folder this process may not write in: nobody here can be writing either
            return False
        probe.release()
        return False

    # ------------------------------------------------------------------------------------------ reading

    def positions(self, item_ids: Sequence[int] | npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Row of each item id; KeyError when an id is not in the cache."""
        ids = np.asarray(item_ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, ids)
        if ids.size and (np.any(pos >= len(self.ids)) or np.any(self.ids[np.minimum(pos, len(self.ids) - 1)] != ids)):
            raise KeyError(f"some items are not in the embedding cache {self.path.name} (run embed_items first)")
        return pos

    def embedded_ids(self) -> npt.NDArray[np.int64]:
        """Ids of the items that have an embedding, ascending."""
        return self.ids[self.state == DONE]

    def rows(self, item_ids: Sequence[int] | npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """float32 ``(n, D)`` embeddings of the given items, in that order, loaded into memory.

        Raises
        ------
        KeyError
            An item is not in the cache or has no embedding (not embedded yet, or unreadable).
        """
        pos = self.positions(item_ids)
        if pos.size and np.any(self.state[pos] != DONE):
            raise KeyError(f"{int(np.sum(self.state[pos] != DONE))} item(s) have no embedding in {self.path.name}")
        if not pos.size:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort(pos, kind="stable")
        out = np.empty((pos.size, self.dim), dtype=np.float32)
        out[order] = self.emb[pos[order]]
        return out

    def all(self) -> tuple[npt.NDArray[np.int64], np.ndarray]:
        """``(ids, embeddings)`` of every embedded item; the embeddings are a read-only memmap when possible."""
        done = self.state == DONE
        if done.all():
            return self.ids, self.emb
        return self.ids[done], np.asarray(self.emb[done])

    # ------------------------------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def writing(self, waiting: Callable[[], None] | None = None) -> Iterator[EmbeddingCache]:
        """Hold the writers' lock (``KEY.lock``) for the block: one process at a time grows or writes the cache.

        On taking the lock the cache re-reads its files, so the block starts from what another process wrote
        meanwhile. ``waiting`` is called once, before waiting, when another process holds the lock. Re-entrant
        within a thread (:meth:`put` and :meth:`grow` take it themselves); the OS releases it if the process dies.
        """
        from filelock import FileLock, Timeout

        if self._lock is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(self.lock_path)
        outer = not self._lock.is_locked
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            if waiting is not None:
                waiting()
            log.info("another process is writing the embedding cache %s; waiting for it", self.path.name)
            self._lock.acquire()
        try:
            if outer:
                self._clear()
                self._open()
            yield self
        finally:
            self._lock.release()

    def _save_state(self) -> None:
        tmp = self.state_path.with_name(f"{self.state_path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, self.state)
        os.replace(tmp, self.state_path)
        if self.errors or self.errors_path.exists():
            tmp_e = self.errors_path.with_name(f"{self.errors_path.name}.{os.getpid()}.tmp")
            tmp_e.write_text(json.dumps({str(k): v for k, v in sorted(self.errors.items())}))
            os.replace(tmp_e, self.errors_path)

    def grow(self, item_ids: Iterable[int]) -> int:
        """Add rows (not embedded yet) for ids the cache does not have; returns how many were added (under the
        writers' lock: :meth:`writing`)."""
        want = np.unique(np.asarray(list(item_ids), dtype=np.int64))
        with self.writing():
            return self._grow(want)

    def _grow(self, want: npt.NDArray[np.int64]) -> int:
        new = np.setdiff1d(want, self.ids)
        if new.size == 0 and self.path.is_file():
            return 0
        self.dir.mkdir(parents=True, exist_ok=True)
        ids = np.concatenate([self.ids, new])
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        state = np.concatenate([self.state, np.zeros(new.size, dtype=np.int8)])[order]
        tmp = self.path.with_name(f"{self.path.stem}.{os.getpid()}.tmp.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(ids), self.dim))
        old_n = len(self.ids)
        step = 8192
        for start in range(0, len(order), step):
            sel = order[start : start + step]
            from_old = sel < old_n
            block = np.zeros((len(sel), self.dim), dtype=np.float32)
            if from_old.any():
                block[from_old] = self.emb[sel[from_old]]
            out[start : start + len(sel)] = block
        out.flush()
        del out
        # state first as "all pending" for the new layout, then the data, then ids and the real state: a crash in
        # between leaves files whose lengths disagree, which _open treats as a cache to rebuild
        os.replace(tmp, self.path)
        tmp_ids = self.ids_path.with_name(f"{self.ids_path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp_ids, ids)
        os.replace(tmp_ids, self.ids_path)
        self.ids, self.state = ids, state
        self._save_state()
        self.emb = np.load(self.path, mmap_mode="r")
        return int(new.size)

    def _writable(self) -> np.memmap:
        return np.load(self.path, mmap_mode="r+")

    def put(self, item_ids: Sequence[int] | npt.NDArray[np.int64], rows: np.ndarray) -> None:
        """Store ``rows`` (one per id, this cache's dimension) as the embeddings of ``item_ids`` and mark them
        embedded (embeddings computed elsewhere: another runtime, a benchmark's drawn rows)."""
        ids = np.asarray(item_ids, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.float32)
        if rows.shape != (len(ids), self.dim):
            raise ValueError(f"rows of shape {rows.shape} for {len(ids)} ids of dimension {self.dim}")
        with self.writing():
            self.grow(ids)
            pos = self.positions(ids)
            out = self._writable()
            out[pos] = rows
            out.flush()
            del out
            self.state[pos] = DONE
            self._save_state()


# ----------------------------------------------------------------------------------------------- embedding


class _ImageSet:
    """(position, uint8 pixels, error) per item, for a torch DataLoader (workers decode in parallel)."""

    def __init__(
        self,
        paths: Sequence[str],
        positions: Sequence[int],
        preprocess: Preprocess,
        digests: Sequence[str | None] | None = None,
    ) -> None:
        self.paths = list(paths)
        self.positions = list(positions)
        self.preprocess = preprocess
        self.digests = list(digests) if digests is not None else [None] * len(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        from ..intake.images import load_image

        try:
            img = load_image(self.paths[i], 3, sha256=self.digests[i])  # only the content imported
            return self.positions[i], self.preprocess.to_uint8(img), None
        except ImageRejected as exc:
            return self.positions[i], None, exc.reason
        except Exception as exc:  # a file that changed since import must not stop the run
            return self.positions[i], None, f"{type(exc).__name__}: {exc}"


def _collate(batch: list[tuple[int, np.ndarray | None, str | None]]) -> list[tuple[int, np.ndarray | None, str | None]]:
    return batch


def _auto_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def _auto_workers(n: int, device: str) -> int:
    cpus = os.cpu_count() or 1
    if n < 256 or cpus <= 2:
        return 0
    return min(8 if device.startswith("cuda") else 4, cpus - 1)


def embed_items(
    project_dir: str | os.PathLike[str],
    items: Sequence[tuple[int, str | os.PathLike[str]]],
    backbone: LoadedBackbone,
    *,
    batch_size: int = 32,
    device: str | None = None,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    retry_unreadable: bool = False,
    threads: int | None = None,
    images: ImageRoot | None = None,
    digests: Mapping[int, str] | None = None,
    runtime: str = "auto",
) -> EmbedReport:
    """Embed the items that are not in the cache yet; return what was done.

    Parameters
    ----------
    project_dir : project folder (cache in ``project_dir/cache``).
    items : ``(item_id, image_path)`` pairs, e.g. every accepted item of the store.
    backbone : from :func:`alwb.learning.backbones.load`.
    batch_size : images per forward pass.
    device : ``auto``/None (CUDA when available), ``cpu``, ``cuda`` ... (the model is moved there; on CUDA the
        forward pass runs under ``torch.autocast`` in float16).
    workers : DataLoader processes decoding images (None: 0 for small runs or 2 CPUs, else up to 4 / 8 on CUDA).
    progress : called as ``progress("embedding", done, total)`` after each batch is safely written, and once as
        ``progress("waiting", 0, n)`` when another process is writing this cache (this call waits for it to finish,
        then embeds only what that one left pending).
    retry_unreadable : try again the items that were unreadable in an earlier run.
    threads : torch CPU threads for this call (restored afterwards); None leaves torch's setting. On a CPU that
        other processes share, 1 thread was twice as fast as 2 for ResNet-18 (``bench/speed/backbones.py``).
    digests : item id → SHA-256 stored at import (:func:`digests_from_store`): an image whose file no longer has it
        is not embedded (unreadable, "the file changed since it was imported"). None: not checked.
    images : the project's image root on this machine (``store.image_root()``): the items' paths are then stored
        paths, read through it, and a file that is not there stops the run with
        :class:`alwb.intake.images.ImageMissing` before anything is embedded (it is not marked unreadable). None: the
        paths are used as they are.
    runtime : ``auto`` (ONNX Runtime on the CPU for runs of :data:`alwb.learning.onnxembed.MIN_IMAGES` images or more,
    or
        when the backbone's export is already cached; PyTorch otherwise), ``onnx`` (ONNX Runtime on the CPU whatever
        the size) or ``torch``. ONNX Runtime embeds only after it matched PyTorch within
        :data:`alwb.learning.onnxembed.EMBED_ATOL` on images of this run; otherwise PyTorch does
        (:mod:`alwb.learning.onnxembed`).

    Returns
    -------
    EmbedReport
        ``embedded`` is 0 when every item was already cached.
    """
    import torch

    if runtime not in ("auto", "onnx", "torch"):
        raise ValueError(f"runtime must be 'auto', 'onnx' or 'torch', not {runtime!r}")
    t0 = time.perf_counter()
    dev = _auto_device(device)
    cache = EmbeddingCache.for_backbone(project_dir, backbone)
    pairs = {int(i): str(p) for i, p in items}
    want = np.asarray(sorted(pairs), dtype=np.int64)
    waiting = None if progress is None else (lambda: progress("waiting", 0, int(want.size)))
    with cache.writing(waiting):  # one writer at a time; the cache re-reads what another one wrote
        cache.grow(want)
        pos = cache.positions(want)
        if retry_unreadable:
            again = pos[cache.state[pos] == UNREADABLE]
            cache.state[again] = PENDING
            for p in again:
                cache.errors.pop(int(cache.ids[p]), None)
        todo = pos[cache.state[pos] == PENDING]
        if images is not None:
            todo_stored = [pairs[int(cache.ids[p])] for p in todo]
            located = [str(images.locate(p)) for p in todo_stored]
            check_present(images, todo_stored, located)
            pairs.update((int(cache.ids[p]), loc) for p, loc in zip(todo, located, strict=True))
        already = int(np.sum(cache.state[pos] == DONE))
        report = EmbedReport(backbone.spec.name, cache.path, int(want.size), 0, already, device=dev)
        total = int(todo.size)
        if total:
            model = backbone.model
            if backbone.device != dev:
                model.to(dev)
                backbone.device = dev
            model.eval()
            n_workers = _auto_workers(total, dev) if workers is None else int(workers)
            todo_ids = [int(cache.ids[p]) for p in todo]
            dataset = _ImageSet(
                [pairs[i] for i in todo_ids],
                [int(p) for p in todo],
                backbone.preprocess,
                [digests.get(i) for i in todo_ids] if digests is not None else None,
            )
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=batch_size, shuffle=False, num_workers=n_workers, collate_fn=_collate
            )
            old_threads = torch.get_num_threads()
            if threads:
                torch.set_num_threads(int(threads))
            try:
                onnx = _onnx_embedder(cache, backbone, runtime, dev, total, threads or old_threads)
                _embed_batches(cache, loader, backbone, dev, onnx, report, progress, total)
            finally:
                torch.set_num_threads(old_threads)
        report.unreadable = {
            int(cache.ids[p]): cache.errors.get(int(cache.ids[p]), "unreadable")
            for p in pos
            if cache.state[p] == UNREADABLE
        }
    report.seconds = time.perf_counter() - t0
    if report.unreadable:
        log.warning("%d image(s) could not be read for %s embeddings", len(report.unreadable), backbone.spec.name)
    return report


def _embed_batches(
    cache: EmbeddingCache,
    loader: Iterable[list[tuple[int, np.ndarray | None, str | None]]],
    backbone: LoadedBackbone,
    dev: str,
    onnx: OnnxEmbedder | None,
    report: EmbedReport,
    progress: ProgressFn | None,
    total: int,
) -> None:
    """Embed the loader's batches into ``cache`` (each batch written and flushed before the state says so);
    unreadable images are marked with their reason. ONNX Runtime embeds once it matched PyTorch (:func:`_checked`)."""
    import torch

    out = cache._writable()
    done = 0
    use_amp = dev.startswith("cuda")
    try:
        for batch in loader:
            good = [(p, a) for p, a, e in batch if e is None]
            for p, _, e in batch:
                if e is not None:
                    cache.state[p] = UNREADABLE
                    cache.errors[int(cache.ids[p])] = e
            if good:
                pixels = np.stack([a for _, a in good])
                if onnx is not None and report.parity is None:
                    onnx = _checked(onnx, backbone, pixels, report)
                if onnx is not None:
                    rows_emb = onnx(pixels)
                else:
                    x = torch.from_numpy(pixels).to(dev, non_blocking=True)
                    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                        emb = backbone.model(backbone.preprocess.normalise(x))
                    rows_emb = emb.float().cpu().numpy().reshape(len(good), -1)
                rows = np.asarray([p for p, _ in good], dtype=np.int64)
                out[rows] = rows_emb
                out.flush()
                cache.state[rows] = DONE
            cache._save_state()
            done += len(batch)
            report.embedded += len(good)
            if progress is not None:
                progress("embedding", done, total)
    finally:
        del out
        cache.emb = np.load(cache.path, mmap_mode="r")


def _onnx_embedder(
    cache: EmbeddingCache, backbone: LoadedBackbone, runtime: str, device: str, total: int, threads: int
) -> OnnxEmbedder | None:
    """ONNX Runtime's embedder when ``runtime`` and the run call for it (see :func:`embed_items`), else None."""
    from . import onnxembed

    if runtime == "torch" or not device.startswith("cpu"):
        return None
    if runtime == "auto" and total < onnxembed.MIN_IMAGES and not onnxembed.onnx_file(cache.dir, cache.key).is_file():
        return None
    return onnxembed.load_or_export(cache.dir, cache.key, backbone, threads=threads)


def _checked(
    onnx: OnnxEmbedder, backbone: LoadedBackbone, pixels: np.ndarray, report: EmbedReport
) -> OnnxEmbedder | None:
    """``onnx`` when it matches PyTorch on the first images of the run (the difference goes to ``report``)."""
    from .onnxembed import EMBED_ATOL, PARITY_IMAGES, parity

    try:
        report.parity = parity(onnx, backbone, pixels[:PARITY_IMAGES])
    except Exception as exc:  # a session that cannot run is as bad as one that disagrees
        log.warning("ONNX Runtime could not embed (%s: %s); PyTorch embeds this run", type(exc).__name__, exc)
        report.parity = float("inf")
    if report.parity <= EMBED_ATOL:
        report.runtime = "onnxruntime"
        return onnx
    log.warning(
        "ONNX Runtime's embeddings differ from PyTorch's by %.2e (allowed %.0e); PyTorch embeds this run",
        report.parity,
        EMBED_ATOL,
    )
    return None


def digests_from_store(store: Any) -> dict[int, str]:
    """Item id → the SHA-256 of its file stored at import, for every accepted item (:func:`embed_items`)."""
    return {int(r["id"]): str(r["sha256"]) for r in store.items()}


def items_from_store(store: Any, *, located: bool = True) -> list[tuple[int, str]]:
    """``(id, path)`` of every accepted item of a :class:`alwb.store.Store` (ascending ids): the file's path on this
    machine (read through ``store.image_root()``), or with ``located=False`` the path as stored (then pass
    ``images=store.image_root()`` to :func:`embed_items`, which says clearly when a file is not here).

    Uses only ``store.item_ids()``, ``store.item(id)["path"]`` and ``store.image_root()``.
    """
    stored = [(int(i), str(store.item(int(i))["path"])) for i in store.item_ids()]
    if not located:
        return stored
    images = store.image_root()
    return [(i, str(images.locate(p))) for i, p in stored]
