"""Run configuration: a tree of dataclasses loaded from JSON with ``a.b=value`` overrides.

``load_config("demo_glyphs")`` reads the recipe shipped in ``fewshot_sparse/configs/``;
``load_config("my.json", ["train.epochs=3", "head.kwargs.lambda1=0.2"])`` reads a file.
A file (or override) only needs the keys it changes: the rest keep the defaults below.
Unknown keys and values of the wrong type raise ``ConfigError`` naming the key.
``encoder.kwargs`` and ``head.kwargs`` are free-form: the encoder/head checks them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fewshot_sparse.errors import ConfigError
from fewshot_sparse.files import atomic_write_text

RECIPES_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class DataConfig:
    root: str = "runs/data/glyphs"     # a prepared cache (fewshot_sparse.data.prepare)
    dataset: str = "glyphs"            # what prepare() builds at ``root`` when it is missing
    image_size: int = 32               # side of the square images the cache holds
    train_split: str = "train"
    val_split: str = "val"


@dataclass
class ModuleConfig:
    name: str = ""
    kwargs: dict = field(default_factory=dict)


@dataclass
class TrainConfig:
    epochs: int = 60
    episodes_per_epoch: int = 8000     # MetaOptNet: 1000 batches of 8 episodes per epoch
    tasks_per_batch: int = 8           # episodes per optimizer step
    # Gradient accumulation: each step's tasks_per_batch episodes run as this many
    # micro-batches (tasks_per_batch / accumulate episodes in memory at once), their
    # gradients summed before the step (engine/step.py).
    accumulate: int = 1
    n_way: int = 5
    n_shot: int = 15
    n_query: int = 6
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    # From epoch number lr_milestones[i] (1-based) on, lr = lr * lr_factors[i] (factors
    # are absolute, not cumulative: MetaOptNet's 1, 0.06, 0.012, 0.0024 schedule).
    lr_milestones: list[int] = field(default_factory=lambda: [20, 40, 50])
    lr_factors: list[float] = field(default_factory=lambda: [0.06, 0.012, 0.0024])
    label_smoothing: float = 0.1
    augment: bool = True               # random crop + flip + colour jitter on the device
    # EpisodeAugment options (padding, brightness, contrast, saturation, hflip); the
    # crop padding defaults to MetaOptNet's 8 pixels at 84x84, scaled to image_size.
    augment_kwargs: dict = field(default_factory=dict)
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"               # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    amp: bool = False                  # bfloat16 encoder on CUDA (the head stays float32)
    channels_last: bool = False
    log_every: int = 10                # TensorBoard scalars every this many steps


@dataclass
class ValConfig:
    n_way: int = 5
    n_shot: int = 5
    n_query: int = 15
    episodes: int = 2000
    tasks_per_batch: int = 8
    seed: int = 1234
    every: int = 1                     # validate every this many epochs (and at the end)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    # Encoder and head defaults: MetaOptNet's ResNet-12 (its own defaults are MetaOptNet's
    # drop_rate 0.1, DropBlock size 5, no pooling) and Crammer-Singer SVM head.
    encoder: ModuleConfig = field(default_factory=lambda: ModuleConfig("resnet12_metaoptnet"))
    head: ModuleConfig = field(default_factory=lambda: ModuleConfig("svm_cs"))
    train: TrainConfig = field(default_factory=TrainConfig)
    val: ValConfig = field(default_factory=ValConfig)
    out_dir: str = "runs/default"
    name: str = ""                     # the recipe's name (informational)
    description: str = ""              # free text: what the recipe reproduces

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")


# ----------------------------------------------------------------------------- checking

def coerce_value(value: Any, tp, key: str):
    """Check ``value`` against annotation ``tp``; int is accepted where float is expected."""
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected list[{item.__name__}], got {value!r}")
        return [coerce_value(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a JSON object, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected bool (true/false), got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected str, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")


def _build(cls, data: dict, prefix: str = ""):
    """Dataclass ``cls`` from its defaults overlaid with ``data``, checking keys and types.
    Nested objects merge key by key (a ``kwargs`` object merges over the default ``{}``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a JSON object, "
                          f"got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k in data:
        if k not in names:
            raise ConfigError(f"unknown config key {prefix + k!r}; "
                              f"valid keys here: {', '.join(names)}")
    obj = cls()
    for k, v in data.items():
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            v = _build(tp, {**dataclasses.asdict(getattr(obj, k)), **_as_object(v, prefix + k)},
                       prefix + k + ".")
        else:
            v = coerce_value(v, tp, prefix + k)
        setattr(obj, k, v)
    return obj


def _as_object(v, key: str) -> dict:
    if not isinstance(v, dict):
        raise ConfigError(f"{key}: expected a JSON object, got {v!r}")
    return v


def parse_value(text: str, tp=None):
    """A ``key=value`` value: the text itself for a str field (``tp``), else JSON if it
    parses (3, 0.1, true, [1,2], "x"), else the text."""
    if tp is str:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def split_assignment(item: str, what: str = "override", form: str = "a.b=value") -> tuple[str, str]:
    """The one ``key=value`` parser (config overrides, head options, ...): ``(key, value
    text)``; a ConfigError naming ``what`` when ``item`` is not of that form."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{what} {item!r} is not of the form {form}")
    return key, text


def _apply_override(data: dict, override: str) -> None:
    key, text = split_assignment(override)
    parts = key.split(".")
    node, cls = data, Config
    for i, part in enumerate(parts[:-1]):
        # Check the path now, so that a typo is reported under its own name.
        if cls is not None:
            names = {f.name: f for f in dataclasses.fields(cls)}
            if part not in names:
                raise ConfigError(f"unknown config key {'.'.join(parts[:i + 1])!r}")
            tp = typing.get_type_hints(cls)[part]
            cls = tp if dataclasses.is_dataclass(tp) else None
            if cls is None and tp is not dict:
                raise ConfigError(f"config key {'.'.join(parts[:i + 1])!r} is not an object")
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    leaf = None
    if cls is not None:
        leaf = typing.get_type_hints(cls).get(parts[-1])
    node[parts[-1]] = parse_value(text, leaf)


def resolve_config_path(path_or_name) -> Path:
    """A path to a JSON file, or the bare name of a shipped recipe ("demo_glyphs")."""
    p = Path(path_or_name)
    if p.is_file():
        return p
    recipe = RECIPES_DIR / (p.name if p.suffix == ".json" else p.name + ".json")
    if p.parent == Path(".") and recipe.is_file():
        return recipe
    raise ConfigError(f"no config file {str(path_or_name)!r} and no recipe of that name; "
                      f"recipes: {', '.join(list_recipes())}")


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def config_from_dict(data: dict, overrides: Optional[list[str]] = None) -> Config:
    """Config from a (partial) dict in the JSON layout, plus ``a.b=value`` overrides."""
    data = json.loads(json.dumps(data))  # a deep copy the overrides may edit
    for o in overrides or []:
        _apply_override(data, o)
    cfg = _build(Config, data)
    check_config(cfg)
    return cfg


def check_config(cfg: Config) -> None:
    """Value checks beyond types (ConfigError naming the key)."""
    t, v = cfg.train, cfg.val
    if len(t.lr_milestones) != len(t.lr_factors):
        raise ConfigError(f"train.lr_milestones ({len(t.lr_milestones)} entries) and "
                          f"train.lr_factors ({len(t.lr_factors)}) must have the same length")
    if t.lr_milestones != sorted(t.lr_milestones):
        raise ConfigError(f"train.lr_milestones must increase, got {t.lr_milestones}")
    positive = {"train.epochs": t.epochs, "train.episodes_per_epoch": t.episodes_per_epoch,
                "train.tasks_per_batch": t.tasks_per_batch, "train.n_shot": t.n_shot,
                "train.n_query": t.n_query, "val.n_shot": v.n_shot, "val.n_query": v.n_query,
                "val.episodes": v.episodes, "val.tasks_per_batch": v.tasks_per_batch,
                "val.every": v.every, "train.log_every": t.log_every,
                "train.accumulate": t.accumulate}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    for key, value in {"train.n_way": t.n_way, "val.n_way": v.n_way}.items():
        if value < 2:
            raise ConfigError(f"{key} must be >= 2, got {value}")
    if t.accumulate >= 1 and t.tasks_per_batch % t.accumulate:
        raise ConfigError(f"train.accumulate ({t.accumulate}) must divide "
                          f"train.tasks_per_batch ({t.tasks_per_batch})")
    if not 0.0 <= t.label_smoothing < 1.0:
        raise ConfigError(f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    if t.num_workers < 0:
        raise ConfigError(f"train.num_workers must be >= 0, got {t.num_workers}")
    if t.episodes_per_epoch < t.tasks_per_batch:
        raise ConfigError(f"train.episodes_per_epoch ({t.episodes_per_epoch}) must be >= "
                          f"train.tasks_per_batch ({t.tasks_per_batch}): an epoch would have "
                          f"no training step")
    _check_numbers(t)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", t.device):
        raise ConfigError(f"train.device: expected auto, cpu, cuda or cuda:K, got {t.device!r}")


def _check_numbers(t: TrainConfig) -> None:
    """Learning-rate schedule and optimizer numbers: finite, and in their range."""
    rules = {"train.lr": (t.lr, 0.0, False), "train.momentum": (t.momentum, 0.0, True),
             "train.weight_decay": (t.weight_decay, 0.0, True)}
    rules.update({f"train.lr_factors[{i}]": (f, 0.0, True) for i, f in enumerate(t.lr_factors)})
    for key, (value, low, inclusive) in rules.items():
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be finite, got {value}")
        if value < low or (value == low and not inclusive):
            raise ConfigError(f"{key}: must be {'>=' if inclusive else '>'} {low:g}, "
                              f"got {value}")


def load_config(path_or_name=None, overrides: Optional[list[str]] = None) -> Config:
    """Config from a JSON file or recipe name (None: the defaults) plus overrides."""
    data: dict = {}
    if path_or_name is not None:
        data = read_json_object(resolve_config_path(path_or_name))
    return config_from_dict(data, overrides)


def read_json_object(path: Path) -> dict:
    """A config file's top-level JSON object, or a ConfigError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the "
                          f"config as UTF-8") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    return data
