"""Frozen settings for training and querying, stored as JSON in the project."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import ConfigError

AUGMENTATIONS = ("none", "crop", "crop+flip")
DEVICES = ("auto", "cpu", "cuda", "mps")
BALANCE = ("none", "weights", "smote", "adasyn")
#: Query strategies (alwb.learning.query.STRATEGIES implements them; listed here so the CLI starts without modAL).
STRATEGY_NAMES = ("entropy", "margin", "least-confidence", "diverse", "typiclust", "auto", "random")
#: Models a project can train (alwb.learning.models builds them); ``auto`` chooses from the image size.
MODEL_NAMES = ("auto", "cnn6", "resnet18")
#: How a round trains: ``head`` (a classifier on a pretrained backbone's cached embeddings), ``finetune`` (the whole
#: pretrained backbone), ``scratch`` (the small CNN from random weights, or ResNet-18, which starts from its verified
#: ImageNet weights when they are on this machine: ``pretrained``); ``auto`` chooses
#: (:func:`alwb.learning.head.choose_mode`).
MODES = ("auto", "head", "finetune", "scratch")
#: The backbone photo projects use unless told otherwise: ``auto``, the best one on this machine by a published order
#: (:func:`alwb.learning.plan.choose_backbone`; :mod:`alwb.learning.backbones` lists them all).
DEFAULT_BACKBONE = "auto"
#: Models older projects were created with: they keep training and loading, but are not offered.
LEGACY_MODELS = ("smallcnn",)


@dataclass(frozen=True)
class TrainConfig:
    """How one round trains.

    ``image_size``/``channels`` of 0 mean "choose from the images"; ``model`` ``auto`` picks ``cnn6`` for
    from-scratch rounds (photos train from scratch only without any pretrained backbone: :mod:`alwb.learning.plan`).
    ``epochs`` 0 means "choose from the number of labels".
    """

    model: str = "auto"
    #: ``auto``, ``head``, ``finetune`` or ``scratch`` (:data:`MODES`)
    mode: str = "auto"
    #: the pretrained backbone of ``head`` and ``finetune`` rounds (a name in :mod:`alwb.learning.backbones`, or
    # ``auto``)
    backbone: str = DEFAULT_BACKBONE
    image_size: int = 0
    channels: int = 0
    epochs: int = 0
    warm_epochs_ratio: float = 0.5
    batch_size: int = 64
    #: peak learning rate of the one-cycle schedule; 0 chooses one for the model (:func:`alwb.learning.train.auto_lr`)
    lr: float = 0.0
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    #: shifts and mirror images, scored with flip test-time augmentation (measured against ``crop``:
    #: ``docs/results.md``); images whose mirror image is another class (digits, text) want ``crop``
    augment: str = "crop+flip"
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
    pretrained: str = "auto"
    device: str = "auto"
    seed: int = 0
    num_threads: int = 0
    #: Unlabeled pool items scored per round, drawn at random anew each round (labeled and validation items are
    #: always scored); 0 scores every item. Strategies and pseudo-labels choose among the scored items.
    score_limit: int = 20_000

    def __post_init__(self) -> None:
        _check_choice("model", self.model, MODEL_NAMES + LEGACY_MODELS)
        _check_choice("mode", self.mode, MODES)
        _check_choice("augment", self.augment, AUGMENTATIONS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("balance", self.balance, BALANCE)
        _check_range("pseudo_steps", self.pseudo_steps, low=1.0)
        _check_range("pseudo_threshold", self.pseudo_threshold, low=0.0, high=1.0, open_low=True)
        _check_range("batch_size", self.batch_size, low=1)
        for name in ("epochs", "lr", "score_limit", "image_size", "channels", "num_threads"):
            _check_range(name, getattr(self, name), low=0)
        _check_range("warm_epochs_ratio", self.warm_epochs_ratio, low=0.0, high=1.0, open_low=True)

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
    strategy: str = "auto"
    batch_size: int = 16
    retrain_every: int = 50
    seed: int = 0
    #: Ask once before a batch with untouched preselected guesses is submitted (they are stored as accepted guesses).
    ask_before_guesses: bool = True

    def __post_init__(self) -> None:
        _check_choice("strategy", self.strategy, STRATEGY_NAMES)
        _check_range("val_share", self.val_share, low=0.0, high=1.0)
        _check_range("batch_size", self.batch_size, low=1)
        for name in ("val_size", "retrain_every"):
            _check_range(name, getattr(self, name), low=0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ProjectConfig:
        """Build from a dict, ignoring unknown keys."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"setting {name} must be one of {', '.join(allowed)}, not {value!r}")


def _check_range(name: str, value: float, *, low: float, high: float | None = None, open_low: bool = False) -> None:
    below = value <= low if open_low else value < low
    if below or (high is not None and value > high):
        lo = f"> {low:g}" if open_low else f"≥ {low:g}"
        rule = lo if high is None else f"{lo} and ≤ {high:g}"
        raise ConfigError(f"setting {name} must be {rule}, not {value!r}")
