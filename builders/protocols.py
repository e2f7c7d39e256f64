"""Named evaluation protocols: how a student is trained on a set's soft labels, so that a set can be
scored under this project's settings (``ours``, the default), FADRM's released ones or DD-Ranking's.

A :class:`Protocol` holds what its source fixes for every dataset: how the KD loss is scaled, how
gradient accumulation splits the batches, the shape of the learning-rate schedule and its settings
shared by all datasets. What differs by dataset (epochs, learning rate, batch, temperature, crop
scale, ...) lives in the dataset's declaration (``build["protocols"][NAME]``), optionally by IPC
(``from_ipc``: ``(min_ipc, settings)`` pairs, ascending; a set of at least ``min_ipc`` images per class
takes them). :func:`protocol_preset` applies both to a preset; its ``eval_*`` fields then drive the
student and its ``relabel_*`` fields say which soft labels the protocol needs. When those are not
the build's stored labels (other batches, crops, teacher mode, or fewer epochs),
:func:`builders.evaluate.protocol_store` relabels into a store of the protocol's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .presets import Preset

DEFAULT_PROTOCOL = "ours"
# The preset fields a protocol (or a dataset's entry for it) may set, and the protocol's own knobs.
PRESET_SETTINGS = ("eval_epochs", "eval_lr", "eval_weight_decay", "eval_batch_size", "eval_grad_accumulation",
                   "temperature", "relabel_epochs", "relabel_batch_size", "relabel_crop_scale")
KNOBS = ("cosine_stretch", "teacher_mode")


class UnknownProtocolError(ValueError):
    pass


@dataclass(frozen=True)
class Protocol:
    """One way to train and test a student on a set; see the module's docstring."""

    name: str
    source: str  # where its settings come from, for records and cards
    # KL(teacher/T || student/T) times T^2 (Hinton's scaling), or not.
    loss_times_t_squared: bool
    # True: each recorded batch is cut into ``eval_grad_accumulation`` micro-batches and the optimizer
    # steps once per recorded batch; False: it steps once per ``eval_grad_accumulation`` recorded batches.
    accumulate_within_batch: bool
    # True: the cosine falls once per epoch (as a per-epoch LambdaLR); False: once per optimizer step.
    schedule_per_epoch: bool
    optimizer: str = "adamw"  # every protocol here trains with AdamW
    # Settings every dataset shares under this protocol (PRESET_SETTINGS and KNOBS).
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.settings) - set(PRESET_SETTINGS) - set(KNOBS)
        if unknown:
            raise ValueError(f"protocol {self.name!r}: unknown settings {sorted(unknown)}")


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol(DEFAULT_PROTOCOL, "this project's (the dataset's eval_* and relabel_* settings)",
             loss_times_t_squared=True, accumulate_within_batch=False, schedule_per_epoch=False),
    # Jiacheng8/FADRM validate/train_fkd.py and validate/scripts/*/validate_fadrm.sh: AdamW (weight
    # decay 0.01), KL at T=20 without T^2, a batch cut in 2 micro-batches, cosine per epoch over
    # epochs x eta, RandomResizedCrop(0.08, 1); relabel/scripts/*: labels at the same batch and scale.
    Protocol("fadrm", "FADRM's released validate scripts (github.com/Jiacheng8/FADRM, validate/)",
             loss_times_t_squared=False, accumulate_within_batch=True, schedule_per_epoch=True,
             settings=dict(eval_weight_decay=0.01, eval_grad_accumulation=2, temperature=20.0,
                           relabel_crop_scale=(0.08, 1.0), teacher_mode="train")),
    # NUS-HPC-AI-Lab/DD-Ranking ddranking/metrics/soft_label.py (soft_label_mode M: the teacher labels
    # every augmented batch, in eval mode), ddranking/utils/train_and_eval.py ("cosine": per epoch over
    # 2 x epochs, no accumulation), ddranking/loss/kl.py (scale_loss false), and its eval branch's
    # configs: AdamW, weight decay 0.01, T=20, CutMix after RandomResizedCrop(0.08, 1).
    Protocol("dd-ranking", "DD-Ranking's soft-label evaluation (github.com/NUS-HPC-AI-Lab/DD-Ranking)",
             loss_times_t_squared=False, accumulate_within_batch=False, schedule_per_epoch=True,
             settings=dict(eval_weight_decay=0.01, eval_grad_accumulation=1, temperature=20.0, eval_lr=1e-3,
                           relabel_crop_scale=(0.08, 1.0), teacher_mode="eval", cosine_stretch=2.0)),
)}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise UnknownProtocolError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}") from None


def dataset_settings(protocol: Protocol, preset: Preset, ipc: int) -> dict[str, Any]:
    """The protocol's settings for ``preset``'s dataset at ``ipc``: its shared ones, then the
    declaration's, then the declaration's for the largest listed IPC not above ``ipc``."""
    declared = dict(preset.protocols.get(protocol.name, {}))
    steps = declared.pop("from_ipc", ())
    settings = {**protocol.settings, **declared}
    for min_ipc, values in steps:
        if ipc >= min_ipc:
            settings.update(values)
    unknown = set(settings) - set(PRESET_SETTINGS) - set(KNOBS)
    if unknown:
        raise ValueError(f"{preset.name}'s declaration sets {sorted(unknown)} for protocol {protocol.name!r}; "
                         f"a protocol's settings are {', '.join(PRESET_SETTINGS + KNOBS)}")
    return settings


@dataclass(frozen=True)
class ProtocolRun:
    """A protocol applied to one dataset and IPC: the preset the student follows and the protocol's knobs."""

    protocol: Protocol
    preset: Preset
    cosine_stretch: float = 1.0  # the cosine runs over stretch x the epochs (it ends at this point)
    teacher_mode: str | None = None  # the labels' teacher mode; None: the stored labels', whatever it is

    @property
    def name(self) -> str:
        return self.protocol.name

    @property
    def is_default(self) -> bool:
        return self.protocol.name == DEFAULT_PROTOCOL


def protocol_preset(name: str, preset: Preset, ipc: int) -> ProtocolRun:
    """``preset`` under protocol ``name`` at ``ipc``: the default leaves it as it is."""
    protocol = get_protocol(name)
    settings = dataset_settings(protocol, preset, ipc)
    knobs = {key: settings.pop(key) for key in KNOBS if key in settings}
    if "relabel_crop_scale" in settings:
        settings["relabel_crop_scale"] = tuple(settings["relabel_crop_scale"])
    # A protocol's labels are drawn in its own batches, for as many epochs as its student trains.
    for labels, student in (("relabel_epochs", "eval_epochs"), ("relabel_batch_size", "eval_batch_size")):
        if student in settings:
            settings.setdefault(labels, settings[student])
    return ProtocolRun(protocol, preset.replace(**settings) if settings else preset, **knobs)


__all__ = ["DEFAULT_PROTOCOL", "KNOBS", "PRESET_SETTINGS", "PROTOCOLS", "Protocol", "ProtocolRun",
           "UnknownProtocolError", "dataset_settings", "get_protocol", "protocol_preset"]
