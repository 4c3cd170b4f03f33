"""Pixels for the model: a memory-mapped uint8 cache at the model's geometry, transforms and datasets.

Every accepted item is decoded once (eval geometry: shorter side resized, centre crop) into
``PROJECT/cache/pixels_<C>x<S>.npy``; training augments those pixels, scoring reads them as they are, so the pool
is always scored with eval transforms.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from ..errors import AlwbError, ImageRejected
from ..intake.images import CHANGED_PREFIX, check_present, load_array
from ..store import Store

log = logging.getLogger(__name__)


def choose_geometry(store: Store, image_size: int = 0, channels: int = 0, model: str = "auto") -> tuple[int, int]:
    """Image size and channels for the model: given values win, else chosen from the accepted images.

    Size: images up to :data:`alwb.learning.plan.SMALL_IMAGE_PX` (64 px) keep their (median) size, at least 16 and
    rounded
    up to a multiple of 4. Larger images go to 160 px for ResNet-18 (asked for); ``auto`` trains the small CNN at
    64 px (photos get here only without any pretrained backbone: :mod:`alwb.learning.plan`), which learns as much from
    a few
    hundred photos and is an order of magnitude cheaper on a CPU. Channels: 1 when every image is greyscale, else 3.
    """
    from .plan import SMALL_IMAGE_PX

    rows = store.image_geometry()
    if not rows:
        raise AlwbError("the project has no readable images")
    if not image_size:
        med = int(np.median([r[0] for r in rows]))
        if med <= SMALL_IMAGE_PX:
            image_size = max(16, -(-med // 4) * 4)
        else:
            image_size = 160 if model == "resnet18" else SMALL_IMAGE_PX
    if not channels:
        channels = 1 if all(r[1] for r in rows) else 3
    return int(image_size), int(channels)


def _load_chunk(args: tuple[list[str], list[str | None], int, int]) -> tuple[np.ndarray, list[str | None]]:
    paths, digests, size, channels = args
    out = np.zeros((len(paths), channels, size, size), dtype=np.uint8)
    errors: list[str | None] = []
    for i, (p, digest) in enumerate(zip(paths, digests, strict=True)):
        try:
            out[i] = load_array(p, size, channels, sha256=digest)  # only the content imported is trained on
            errors.append(None)
        except ImageRejected as exc:
            errors.append(exc.reason)
        except Exception as exc:  # a file that changed since import must not stop training
            errors.append(f"{type(exc).__name__}: {exc}")
    return out, errors


class PixelCache:
    """uint8 pixels of every accepted item, shape ``(N, C, S, S)``, rows aligned with ascending item ids."""

    def __init__(self, project_dir: str | Path, image_size: int, channels: int) -> None:
        self.dir = Path(project_dir) / "cache"
        self.size = image_size
        self.channels = channels
        self.pixels_path = self.dir / f"pixels_{channels}x{image_size}.npy"
        self.ids_path = self.dir / f"pixels_{channels}x{image_size}.ids.npy"
        self.ids: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.pixels: np.ndarray = np.zeros((0, channels, image_size, image_size), dtype=np.uint8)
        self._open()

    def _open(self) -> None:
        if self.pixels_path.is_file() and self.ids_path.is_file():
            try:
                ids = np.load(self.ids_path)
                pixels = np.load(self.pixels_path, mmap_mode="r")
                if len(ids) == len(pixels) and pixels.shape[1:] == (self.channels, self.size, self.size):
                    self.ids, self.pixels = ids, pixels
                    return
            except (OSError, ValueError):
                pass
            log.warning("pixel cache %s is inconsistent; rebuilding", self.pixels_path)

    def sync(self, store: Store, *, progress: bool = False, workers: int | None = None) -> int:
        """Decode items missing from the cache; items that became unreadable are marked rejected.

        Stored paths are read through the project's image root on this machine (:meth:`Store.image_root`); when a
        file is not there at all, :class:`alwb.intake.images.ImageMissing` says which and nothing is rejected.

        Returns the number of items decoded.
        """
        want = np.asarray(store.item_ids(), dtype=np.int64)
        missing = np.setdiff1d(want, self.ids)
        if missing.size == 0:
            return 0
        images = store.image_root()
        rows = [store.item(int(i)) for i in missing]
        stored = [str(r["path"]) for r in rows]
        digests = [r["sha256"] for r in rows]
        paths = [str(images.locate(p)) for p in stored]
        check_present(images, stored, paths)  # a file this machine cannot see is not rejected for everyone
        new, errors = self._decode(paths, progress=progress, workers=workers, digests=digests)
        bad = [(int(i), e) for i, e in zip(missing, errors, strict=True) if e is not None]
        if bad:
            store.reject_items(
                [
                    (
                        i,
                        reason
                        if reason.startswith(CHANGED_PREFIX)
                        else f"unreadable when decoding for training: {reason}",
                    )
                    for i, reason in bad
                ]
            )
            log.warning("%d item(s) became unreadable and were rejected", len(bad))
        ids = np.concatenate([self.ids, missing])
        order = np.argsort(ids, kind="stable")
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.pixels_path.with_suffix(".tmp.npy")
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(len(ids), self.channels, self.size, self.size)
        )
        old_n = len(self.ids)
        step = 4096
        for start in range(0, len(order), step):
            sel = order[start : start + step]
            block = np.empty((len(sel), self.channels, self.size, self.size), dtype=np.uint8)
            from_old = sel < old_n  # both sources are ascending, so each part stays ascending
            if from_old.any():
                block[from_old] = self.pixels[sel[from_old]]
            if (~from_old).any():
                block[~from_old] = new[sel[~from_old] - old_n]
            out[start : start + len(sel)] = block
        out.flush()
        del out
        os.replace(tmp, self.pixels_path)
        tmp_ids = self.ids_path.with_suffix(".tmp.npy")
        np.save(tmp_ids, ids[order])
        os.replace(tmp_ids, self.ids_path)
        self.ids = np.load(self.ids_path)
        self.pixels = np.load(self.pixels_path, mmap_mode="r")
        return int(missing.size)

    def _decode(
        self,
        paths: list[str],
        *,
        progress: bool,
        workers: int | None,
        digests: Sequence[str | None] | None = None,
    ) -> tuple[np.ndarray, list[str | None]]:
        from tqdm import tqdm

        n_workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
        chunk = 512
        sums = list(digests) if digests is not None else [None] * len(paths)
        jobs = [
            (paths[i : i + chunk], sums[i : i + chunk], self.size, self.channels) for i in range(0, len(paths), chunk)
        ]
        arrays, errors = [], []
        with tqdm(total=len(paths), unit="img", desc="decoding", disable=not progress, file=sys.stderr) as bar:
            if n_workers <= 1 or len(paths) < 1000:
                results = map(_load_chunk, jobs)
                for arr, err in results:
                    arrays.append(arr)
                    errors += err
                    bar.update(len(err))
            else:
                with ProcessPoolExecutor(max_workers=n_workers) as pool:
                    for arr, err in pool.map(_load_chunk, jobs):
                        arrays.append(arr)
                        errors += err
                        bar.update(len(err))
        empty = np.zeros((0, self.channels, self.size, self.size), dtype=np.uint8)
        return (np.concatenate(arrays) if arrays else empty), errors

    def positions(self, item_ids: Sequence[int] | npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Row index of each item id (raises when an id is not cached)."""
        ids = np.asarray(item_ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, ids)
        if ids.size and (np.any(pos >= len(self.ids)) or np.any(self.ids[np.minimum(pos, len(self.ids) - 1)] != ids)):
            raise KeyError("some items are not in the pixel cache (call sync first)")
        return pos

    def rows(self, item_ids: Sequence[int] | npt.NDArray[np.int64]) -> np.ndarray:
        """uint8 pixels of the given items, in that order, loaded into memory."""
        pos = self.positions(item_ids)
        return (
            np.asarray(self.pixels[np.sort(pos)])[np.argsort(np.argsort(pos))]
            if pos.size
            else np.zeros((0, self.channels, self.size, self.size), dtype=np.uint8)
        )

    def stats(self, max_rows: int = 5000, seed: int = 0) -> tuple[list[float], list[float]]:
        """Per-channel mean and std (of pixels scaled to [0, 1]) over a random sample of rows."""
        n = len(self.ids)
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(n, size=min(n, max_rows), replace=False)) if n else np.zeros(0, int)
        x = np.asarray(self.pixels[idx], dtype=np.float64) / 255.0
        mean = x.mean(axis=(0, 2, 3)) if x.size else np.full(self.channels, 0.5)
        std = x.std(axis=(0, 2, 3)) if x.size else np.full(self.channels, 0.25)
        return [float(m) for m in mean], [float(max(s, 1e-3)) for s in std]


def random_shift_flip(
    x: torch.Tensor, *, pad: int, flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Batched augmentation of uint8 ``(B, C, H, W)``: each image shifted by up to ``pad`` px (zero fill),
    and mirrored left-right with probability 1/2 when ``flip``. Equivalent to torchvision's padded
    ``RandomCrop`` + ``RandomHorizontalFlip`` per sample, done for the whole batch at once.
    """
    b, _, h, w = x.shape
    dev = x.device
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(dev)
    rows = dy[:, None] + torch.arange(h, device=dev)[None, :]
    cols = dx[:, None] + torch.arange(w, device=dev)[None, :]
    if flip:
        mirror = (torch.rand(b, generator=generator) < 0.5).to(dev)
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=dev)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def train_transform(augment: str, size: int):  # noqa: ANN201 - a torchvision transform
    """Per-sample augmentation on uint8 CHW tensors (large images): random resized crops, optional flips."""
    from torchvision.transforms import v2

    if augment == "none":
        return None
    pad = max(2, size // 8)
    ops: list[object] = [v2.RandomCrop(size, padding=pad, padding_mode="constant")]
    if size > 64:
        ops = [v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True)]
    if augment == "crop+flip":
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose(ops)


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> normalised float."""
    return (x.float().div_(255.0) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
