"""Frozen settings for training and querying, stored as JSON in the project."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

AUGMENTATIONS = ("none", "crop", "crop+flip")
DEVICES = ("auto", "cpu", "cuda", "mps")
BALANCE = ("none", "weights", "smote", "adasyn")
#: Query strategies (alwb.query.STRATEGIES implements them; listed here so the CLI starts without modAL).
STRATEGY_NAMES = ("entropy", "margin", "least-confidence", "diverse", "random")


@dataclass(frozen=True)
class TrainConfig:
    """How one round trains.

    ``image_size``/``channels`` of 0 mean "choose from the images"; ``model`` ``auto`` picks ``cnn6`` for
    images of 64 px or less and ResNet-18 otherwise. ``epochs`` 0 means "choose from the number of labels".
    """

    model: str = "auto"
    image_size: int = 0
    channels: int = 0
    epochs: int = 0
    warm_epochs_ratio: float = 0.5
    batch_size: int = 64
    #: peak learning rate of the one-cycle schedule; 0 chooses one for the model (:func:`alwb.train.auto_lr`)
    lr: float = 0.0
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    augment: str = "crop"
    warm_start: bool = True
    shrink: float = 0.6
    perturb: float = 0.01
    balance: str = "none"
    pseudo: bool = False
    pseudo_threshold: float = 0.95
    #: at most ``pseudo_cap`` × a class's human labels become pseudo-labels of that class each round
    pseudo_cap: float = 1.0
    #: a round with pseudo-labels trains up to this many times the steps of one without them
    pseudo_steps: float = 2.0
    #: the same pseudo-label cap for every labeled class (``pseudo_cap`` × their mean human labels) instead of
    #: ``pseudo_cap`` × each class's own (:func:`alwb.pseudo.choose_pseudo_labels`)
    pseudo_flat: bool = False
    #: weight of a consistency loss on unlabeled pool images (FixMatch: the model's confident prediction on a
    #: lightly augmented view, ``pseudo_threshold`` and above, is the target for a strongly augmented one); 0 off
    consistency: float = 0.0
    #: unlabeled images per labeled image in each consistency step
    consistency_ratio: int = 2
    pretrained: str = "auto"
    device: str = "auto"
    seed: int = 0
    num_threads: int = 0
    #: Unlabeled pool items scored per round, drawn at random anew each round (labeled and validation items are
    #: always scored); 0 scores every item. Strategies and pseudo-labels choose among the scored items.
    score_limit: int = 20_000

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, not {self.augment!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, not {self.device!r}")
        if self.balance not in BALANCE:
            raise ValueError(f"balance must be one of {BALANCE}, not {self.balance!r}")
        if self.pseudo_steps < 1.0 or not 0.0 < self.pseudo_threshold <= 1.0:
            raise ValueError("pseudo_steps must be ≥ 1 and pseudo_threshold in (0, 1]")
        if self.consistency < 0 or self.consistency_ratio < 1:
            raise ValueError("consistency must be ≥ 0 and consistency_ratio ≥ 1")
        if self.batch_size < 1 or self.epochs < 0 or self.lr < 0 or self.score_limit < 0:
            raise ValueError("batch_size must be ≥ 1, epochs ≥ 0, lr ≥ 0 and score_limit ≥ 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> TrainConfig:
        """Build from a dict, ignoring unknown keys (older or newer projects)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})

    def with_(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (``None`` values ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class ProjectConfig:
    """Project-wide settings: validation set and default query."""

    val_size: int = 0
    val_share: float = 0.25
    strategy: str = "margin"
    batch_size: int = 16
    retrain_every: int = 50
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ProjectConfig:
        """Build from a dict, ignoring unknown keys."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})
