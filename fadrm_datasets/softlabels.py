"""The soft-label store (read side) and the exact replay of a recorded relabel epoch.

A relabel run (``builders/relabel.py``) records, for every epoch ``e``, a *plan* (the sample order,
the batches, per-sample RandomResizedCrop boxes and flip bits, per-batch CutMix partners, lam and
box) and the teacher's logits on the exact augmented, mixed images. This module reads that store
and rebuilds the same batches, so a student sees exactly what the teacher saw.

Layout of a store directory (``<build>/soft_labels/``)::

    index.json                              # format, sizes, settings, list of shards
    epochs-00000-00099.safetensors          # epochs 0..99, every tensor stacked over them
    epochs-00100-00199.safetensors

A store holds ``epochs`` distinct epochs; a student trains ``train_epochs`` (format 2; at least
``epochs``) and its epoch ``e`` replays stored epoch ``e % epochs``: fewer stored epochs, reused
in a fixed cycle, make the labels smaller without shortening the training.

Tensors in a shard (``E`` epochs in the shard, ``N`` samples, ``NB`` batches per epoch,
``K`` classes, ``k`` top-k); everything per sample is indexed by *position* in the epoch's order:

    order         int32   (E, N)      sample index at each position (a permutation of 0..N-1)
    crop_boxes    int16   (E, N, 4)   RandomResizedCrop box (top, left, height, width), source pixels
    flips         uint8   (E, N)      1: flipped horizontally after the crop
    partners      int32   (E, N)      CutMix partner, as a position *within the same batch*
    lams          float32 (E, NB)     CutMix lam, adjusted to the real box area (share of own image)
    cutmix_boxes  int16   (E, NB, 4)  CutMix box (top, left, height, width) in output pixels
    logits        float16 (E, N, K)   dense layout: the teacher's logits
    topk_values   float16 (E, N, k)   top-k layout: the k largest logits,
    topk_indices  int16/32 (E, N, k)  their classes,
    rest_mean     float16 (E, N)      and the mean of the K - k other logits
    logit_scale   float16 (E, N)      int8 logits only: logits, topk_values and rest_mean are int8 and
                                      a row's values are its int8 values times its scale

int8 rows are stored centred (the midpoint of a row's range is dropped before it is scaled to
-127..127): a softmax, the only thing the labels feed, is the same for a row shifted by a constant.

Sample index ``n`` refers to the set's canonical order: images sorted by (label, ipc_id).
Batch ``b`` of an epoch holds positions ``b * batch_size ... min(N, (b + 1) * batch_size) - 1``.

Only torch, safetensors, numpy and json are imported here: the library stays light.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from ._checks import one_of
from .augment import resized_crop, sample_crop_boxes
from .layout import SOFT_LABEL_INDEX, SOFT_LABELS, LayoutError, inside, is_shard_name, shard_name
from .schema import SOFT_LABEL_FORMAT_VERSION, SOFT_LABEL_INDEX_FILE, FileKind, parse, read

FORMAT = "fadrm-soft-labels"
FORMAT_VERSION = SOFT_LABEL_FORMAT_VERSION
INDEX = SOFT_LABEL_INDEX
TARGETS = ("soft", "hard")  # what a replayed batch carries: the teacher's logits, or mixed one-hot labels

PLAN_TENSORS = ("order", "crop_boxes", "flips", "partners", "lams", "cutmix_boxes")
DENSE_TENSORS = ("logits",)
TOPK_TENSORS = ("topk_values", "topk_indices", "rest_mean")
LOGIT_DTYPES = ("float16", "int8")
INT8_LIMIT = 127  # int8 rows use -127..127, symmetric about the row's centre


class SoftLabelStoreError(ValueError):
    """A store is missing, incomplete or malformed; the message says what is wrong."""


def store_files(index: dict) -> list[str]:
    """The files a store is made of, relative to its folder: its index and the shards it lists."""
    return [INDEX, *(shard["file"] for shard in index["shards"])]


def num_batches(num_samples: int, batch_size: int) -> int:
    return math.ceil(num_samples / batch_size)


def batch_positions(b: int, batch_size: int, num_samples: int) -> slice:
    """Where batch ``b`` lies in an epoch's order: every batch is full but the last."""
    return slice(b * batch_size, min(num_samples, (b + 1) * batch_size))


# --- the plan and its application (shared by the writer and the reader) ----------------------

@dataclass
class EpochPlan:
    """One epoch's augmentation plan (CPU tensors, positions in the epoch's order)."""

    order: torch.Tensor         # (N,) sample index per position
    crop_boxes: torch.Tensor    # (N, 4) top, left, height, width
    flips: torch.Tensor         # (N,) bool
    partners: torch.Tensor      # (N,) within-batch partner position
    lams: torch.Tensor          # (NB,) float32
    cutmix_boxes: torch.Tensor  # (NB, 4) top, left, height, width
    batch_size: int

    @property
    def num_samples(self) -> int:
        return int(self.order.numel())

    @property
    def num_batches(self) -> int:
        return num_batches(self.num_samples, self.batch_size)

    def batch_slice(self, b: int) -> slice:
        if not 0 <= b < self.num_batches:
            raise IndexError(f"batch {b} out of range (the epoch has {self.num_batches} batches)")
        return batch_positions(b, self.batch_size, self.num_samples)

    def batches(self) -> list[list[int]]:
        """The recorded batches as lists of sample indices, in order."""
        order = self.order.tolist()
        return [order[batch_positions(b, self.batch_size, len(order))] for b in range(self.num_batches)]

    def build_batch(self, images: torch.Tensor, b: int, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None, size: int | None = None) -> torch.Tensor:
        """Batch ``b`` of the epoch from the whole set's images (N, C, H, W), as recorded."""
        sl = self.batch_slice(b)
        index = self.order[sl].to(images.device)
        return apply_plan(images.index_select(0, index), self.crop_boxes[sl], self.flips[sl],
                          self.partners[sl], self.cutmix_boxes[b], size=size, mean=mean, std=std)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The compact stored form (dtypes of the store)."""
        return {
            "order": self.order.to(torch.int32),
            "crop_boxes": self.crop_boxes.to(torch.int16),
            "flips": self.flips.to(torch.uint8),
            "partners": self.partners.to(torch.int32),
            "lams": self.lams.to(torch.float32),
            "cutmix_boxes": self.cutmix_boxes.to(torch.int16),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], batch_size: int) -> "EpochPlan":
        return cls(order=tensors["order"].long(), crop_boxes=tensors["crop_boxes"].long(),
                   flips=tensors["flips"].bool(), partners=tensors["partners"].long(),
                   lams=tensors["lams"].float(), cutmix_boxes=tensors["cutmix_boxes"].long(),
                   batch_size=batch_size)


def cutmix_box(size: int, lam: float, generator: torch.Generator) -> tuple[tuple[int, int, int, int], float]:
    """Standard CutMix box for a ``size`` x ``size`` image: area share ``1 - lam``, centre uniform,
    clipped at the border. Returns the box (top, left, height, width) and lam adjusted to its area."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(size * cut), int(size * cut)
    cy, cx = (int(v) for v in torch.randint(0, size, (2,), generator=generator))
    y1, y2 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, size)
    x1, x2 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, size)
    box = (y1, x1, y2 - y1, x2 - x1)
    return box, 1.0 - (box[2] * box[3]) / (size * size)


def make_epoch_plan(num_samples: int, image_size: int, batch_size: int, crop_scale: tuple[float, float],
                    generator: torch.Generator) -> EpochPlan:
    """Draw one epoch's plan from ``generator`` (seed it from the run seed and the epoch).

    Draw order: the permutation, every crop box, every flip bit, then per batch the partner
    permutation, lam ~ Beta(1, 1) (uniform) and the CutMix box.
    """
    order = torch.randperm(num_samples, generator=generator)
    boxes = sample_crop_boxes(num_samples, image_size, image_size, tuple(crop_scale), generator)
    flips = torch.rand(num_samples, generator=generator) < 0.5
    partners, lams, cut_boxes = [], [], []
    for start in range(0, num_samples, batch_size):
        count = min(batch_size, num_samples - start)
        partners.append(torch.randperm(count, generator=generator))
        lam = float(torch.rand((), generator=generator, dtype=torch.float64))
        box, lam = cutmix_box(image_size, lam, generator)
        lams.append(lam)
        cut_boxes.append(box)
    return EpochPlan(order=order, crop_boxes=boxes, flips=flips, partners=torch.cat(partners),
                     lams=torch.tensor(lams, dtype=torch.float32),
                     cutmix_boxes=torch.tensor(cut_boxes, dtype=torch.long).view(-1, 4),
                     batch_size=batch_size)


def apply_plan(images: torch.Tensor, crop_boxes: torch.Tensor, flips: torch.Tensor, partners: torch.Tensor,
               cutmix_box: torch.Tensor | Sequence[int], size: int | None = None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> torch.Tensor:
    """Build one recorded batch: crop + resize, flip, CutMix, then normalise.

    ``images`` (B, C, H, W) holds the batch's source images in position order (uint8, or float in
    [0, 1]); ``crop_boxes`` (B, 4), ``flips`` (B,), ``partners`` (B,) and ``cutmix_box`` (4,) come
    from the plan. Returns float32 (B, C, size, size) on the images' device. This one function is
    what both the relabel (teacher side) and the replay (student side) call.
    """
    b, c, h, w = images.shape
    size = size or h
    boxes = crop_boxes.tolist() if torch.is_tensor(crop_boxes) else list(crop_boxes)
    flipped = torch.as_tensor(flips).bool().tolist()
    out = torch.empty(b, c, size, size, device=images.device)
    for i, (top, left, bh, bw) in enumerate(boxes):
        # Only the crop is converted to float: the same values as converting the whole image first.
        crop = images[i:i + 1, :, top:top + bh, left:left + bw]
        crop = crop.float() / 255.0 if crop.dtype == torch.uint8 else crop.float()
        crop = resized_crop(crop, (0, 0, bh, bw), size)
        out[i:i + 1] = crop.flip(3) if flipped[i] else crop
    top, left, bh, bw = (int(v) for v in (cutmix_box.tolist() if torch.is_tensor(cutmix_box) else cutmix_box))
    if bh > 0 and bw > 0:
        partner = torch.as_tensor(partners, device=images.device).long()
        region = out[:, :, top:top + bh, left:left + bw]
        region.copy_(region[partner])  # advanced indexing copies first: every partner's box is the original
    if mean is not None:
        out.sub_(torch.tensor(mean, dtype=out.dtype, device=out.device).view(1, -1, 1, 1))
        out.div_(torch.tensor(std, dtype=out.dtype, device=out.device).view(1, -1, 1, 1))
    return out


# --- soft labels: dense or top-k, float16 or int8 ----------------------------------------------

def topk_index_dtype(num_classes: int) -> torch.dtype:
    """The type of the top-k class indices: the narrowest that holds every class."""
    return torch.int16 if num_classes <= torch.iinfo(torch.int16).max else torch.int32


def label_tensors(topk: int | None, logit_dtype: str = "float16") -> tuple[str, ...]:
    """The names of the soft-label tensors a store of this layout holds."""
    names = DENSE_TENSORS if topk is None else TOPK_TENSORS
    return names + (("logit_scale",) if logit_dtype == "int8" else ())


def quantize_rows(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float (..., m) -> int8 (..., m) and a float16 scale (...,): each row centred on the midpoint of its
    range and scaled so its extremes land on -127 and 127 (the scale rounded to float16 first, so the
    stored pair is exactly what a reader multiplies)."""
    high, low = values.amax(-1), values.amin(-1)
    finite_max = torch.finfo(torch.float16).max
    scale = ((high - low) / (2 * INT8_LIMIT)).clamp(max=finite_max).half()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant row: all zeros, any scale
    q = ((values - ((high + low) / 2).unsqueeze(-1)) / scale.float().unsqueeze(-1)).round()
    return q.clamp(-INT8_LIMIT, INT8_LIMIT).to(torch.int8), scale


def compress_logits(logits: torch.Tensor, topk: int | None, logit_dtype: str = "float16") -> dict[str, torch.Tensor]:
    """float logits (..., K) -> stored tensors: dense, or top-k values/indices + rest mean; float16, or
    int8 with a per-row scale (a row's kept values and rest mean quantized together)."""
    one_of("logit dtype", logit_dtype, LOGIT_DTYPES)
    logits = logits.float()
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("the teachers' logits hold NaN or inf; check the teachers' weights")
    num_classes = logits.shape[-1]
    if topk is None or topk >= num_classes:
        stored = {"logits": logits}
    else:
        values, indices = logits.topk(topk, dim=-1)
        rest = (logits.sum(-1) - values.sum(-1)) / (num_classes - topk)
        stored = {"topk_values": values, "topk_indices": indices.to(topk_index_dtype(num_classes)), "rest_mean": rest}
    if logit_dtype == "float16":
        return {name: t.half() if t.is_floating_point() else t for name, t in stored.items()}
    if "logits" in stored:
        q, scale = quantize_rows(stored["logits"])
        return {"logits": q, "logit_scale": scale}
    q, scale = quantize_rows(torch.cat([stored["topk_values"], stored["rest_mean"].unsqueeze(-1)], dim=-1))
    return {"topk_values": q[..., :-1].contiguous(), "topk_indices": stored["topk_indices"],
            "rest_mean": q[..., -1].contiguous(), "logit_scale": scale}


def expand_logits(stored: dict[str, torch.Tensor], num_classes: int) -> torch.Tensor:
    """Stored soft labels -> float32 logits (..., K): top-k classes get their values, all other
    classes the stored mean of the rest; int8 values times their row's scale."""
    scale = stored["logit_scale"].float() if "logit_scale" in stored else None

    def value(name: str) -> torch.Tensor:
        tensor = stored[name].float()
        if scale is None:
            return tensor
        return tensor * (scale if tensor.ndim == scale.ndim else scale.unsqueeze(-1))

    if "logits" in stored:
        return value("logits")
    values = value("topk_values")
    full = value("rest_mean").unsqueeze(-1).expand(*values.shape[:-1], num_classes).clone()
    return full.scatter_(-1, stored["topk_indices"].long(), values)


# --- the store ---------------------------------------------------------------------------------

@dataclass
class EpochRecord:
    """One stored epoch: its plan and its (compact) soft labels, positions in the epoch's order."""

    epoch: int
    plan: EpochPlan
    stored_logits: dict[str, torch.Tensor]
    num_classes: int

    # Plan fields, for convenience.
    @property
    def order(self) -> torch.Tensor:
        return self.plan.order

    @property
    def batch_size(self) -> int:
        return self.plan.batch_size

    @property
    def num_batches(self) -> int:
        return self.plan.num_batches

    def batches(self) -> list[list[int]]:
        return self.plan.batches()

    @property
    def logits(self) -> torch.Tensor:
        """float32 (N, K): the teacher's logits at each position (top-k expanded; an int8 store's rows
        shifted by a constant each, which a softmax ignores)."""
        return expand_logits(self.stored_logits, self.num_classes)

    def logits_at(self, positions: torch.Tensor | slice) -> torch.Tensor:
        """float32 (len, K) logits of some positions only (no full expansion)."""
        return expand_logits({k: v[positions] for k, v in self.stored_logits.items()}, self.num_classes)

    def positions(self) -> torch.Tensor:
        """Inverse of ``order``: the position of each sample index."""
        inverse = torch.empty_like(self.plan.order)
        inverse[self.plan.order] = torch.arange(self.plan.num_samples)
        return inverse


def _check_index(index: dict, path: Path) -> None:
    """Refuse an index whose shards do not cover its epochs once each, in order, or name files outside
    its folder (the fields' types and bounds are checked as it is read: schema.SOFT_LABEL_INDEX)."""
    shards = sorted(index["shards"], key=lambda s: s["first_epoch"])
    next_epoch = 0
    for shard in shards:  # O(shards): never a list of every epoch (a hostile index claims billions)
        if shard["first_epoch"] != next_epoch or shard["last_epoch"] < shard["first_epoch"]:
            next_epoch = -1  # a gap, an overlap or a backwards shard
            break
        next_epoch = shard["last_epoch"] + 1
    if next_epoch != index["epochs"]:
        raise SoftLabelStoreError(f"{path}: its shards do not cover epochs 0..{index['epochs'] - 1} once each")
    if index.get("train_epochs", index["epochs"]) < index["epochs"]:
        raise SoftLabelStoreError(f"{path}: it stores {index['epochs']} epochs for only {index['train_epochs']} "
                                  "training epochs")
    if index.get("topk") is not None and index["topk"] >= index["num_classes"]:
        raise SoftLabelStoreError(f"{path}: topk {index['topk']} is not below num_classes {index['num_classes']}")
    for shard in shards:
        if shard["file"] != shard_name(shard["first_epoch"], shard["last_epoch"]):
            name = shard_name(shard["first_epoch"], shard["last_epoch"])
            raise SoftLabelStoreError(f"{path}: {shard['file']!r} is not a shard name for its epochs ({name})")
        try:
            inside(path.parent, shard["file"])
        except LayoutError as error:
            raise SoftLabelStoreError(f"{path}: {error}") from None


# --- what a shard's header must declare ---------------------------------------------------------

_HEADER_LENGTH = struct.Struct("<Q")
MAX_SHARD_HEADER = 1 << 20  # a shard's header names about ten tensors: a few hundred bytes
_SHARD_HEADER = FileKind("soft-label shard header", MAX_SHARD_HEADER, "download the set again or relabel")
_DTYPES = {"I8": torch.int8, "I16": torch.int16, "I32": torch.int32, "U8": torch.uint8, "F16": torch.float16, "F32": torch.float32}


def expected_tensors(index: dict, epochs: int) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """name -> (allowed safetensors dtypes, shape) of every tensor of a shard of ``epochs`` epochs."""
    n, batches = index["num_samples"], num_batches(index["num_samples"], index["batch_size"])
    tensors = {"order": (("I32",), (epochs, n)), "crop_boxes": (("I16",), (epochs, n, 4)),
               "flips": (("U8",), (epochs, n)), "partners": (("I32",), (epochs, n)),
               "lams": (("F32",), (epochs, batches)), "cutmix_boxes": (("I16",), (epochs, batches, 4))}
    k = index.get("topk")
    value = ("I8",) if index.get("logit_dtype") == "int8" else ("F16",)
    if k is None:
        tensors["logits"] = (value, (epochs, n, index["num_classes"]))
    else:
        index_dtype = {v: k for k, v in _DTYPES.items()}[topk_index_dtype(index["num_classes"])]
        tensors.update(topk_values=(value, (epochs, n, k)), topk_indices=((index_dtype,), (epochs, n, k)),
                       rest_mean=(value, (epochs, n)))
    if value == ("I8",):
        tensors["logit_scale"] = (("F16",), (epochs, n))
    return tensors


def epoch_bytes(index: dict) -> int:
    """Bytes one epoch takes in a shard of a store with this index (plan and labels, no header): the
    sum over :func:`expected_tensors`, so the size a layout promises is the layout the reader checks."""
    return sum(math.prod(shape) * _DTYPES[dtypes[0]].itemsize for dtypes, shape in expected_tensors(index, 1).values())


def check_shard_header(path: Path, index: dict, shard: dict) -> None:
    """Refuse a shard whose header does not declare exactly the tensors, dtypes and shapes its index
    promises, or whose data would lie outside the file: read before any tensor is."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(_HEADER_LENGTH.size)
        length = _HEADER_LENGTH.unpack(prefix)[0] if len(prefix) == _HEADER_LENGTH.size else -1
        if not 0 < length <= min(MAX_SHARD_HEADER, size - _HEADER_LENGTH.size):
            raise SoftLabelStoreError(f"{path} is not a safetensors shard (header length {length}); "
                                      "download the set again or relabel")
        try:
            header = parse(f.read(length), path, _SHARD_HEADER)
        except LayoutError as error:
            raise SoftLabelStoreError(str(error)) from None
    data_bytes = size - _HEADER_LENGTH.size - length
    wanted = expected_tensors(index, shard["last_epoch"] - shard["first_epoch"] + 1)
    found = {name: entry for name, entry in header.items() if name != "__metadata__"} \
        if isinstance(header, dict) else {}
    if set(found) != set(wanted):
        raise SoftLabelStoreError(f"{path} holds the tensors {sorted(found)}, not the {sorted(wanted)} its index "
                                  "promises; download the set again or relabel")
    for name, (dtypes, shape) in wanted.items():
        entry = found[name]
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(entry, dict) or entry.get("dtype") not in dtypes or entry.get("shape") != list(shape)
                or not (isinstance(offsets, list) and len(offsets) == 2
                        and all(isinstance(o, int) and 0 <= o <= data_bytes for o in offsets)
                        and offsets[1] - offsets[0] == math.prod(shape) * _DTYPES[entry["dtype"]].itemsize)):
            raise SoftLabelStoreError(f"{path}: tensor {name} is not {'/'.join(dtypes)} of shape {list(shape)} "
                                      "within the file, as its index promises; download the set again or relabel")


def check_epoch_values(tensors: dict[str, torch.Tensor], index: dict, where: str) -> None:
    """Refuse one epoch whose plan or labels point outside the set: sample orders that are not a
    permutation, crop or CutMix boxes outside the image, partners outside their batch, class indices
    outside the classes, non-finite labels. Cheap next to building the epoch's batches."""
    n, size, batch = index["num_samples"], index["image_size"], index["batch_size"]

    def refuse(what: str):
        raise SoftLabelStoreError(f"{where}: {what}; the store is damaged or hostile: download the set again "
                                  "or relabel")

    if not torch.equal(tensors["order"].long().sort().values, torch.arange(n)):
        refuse("the sample order is not a permutation of the samples")
    if "crop_boxes" in tensors and not _boxes_inside(tensors["crop_boxes"], size, minimum=1):
        refuse("a crop box lies outside the image")
    if "flips" in tensors and int(tensors["flips"].max()) > 1:
        refuse("a flip flag is neither 0 nor 1")
    if "partners" in tensors:
        room = (n - torch.arange(n) // batch * batch).clamp(max=batch)  # at each position, its batch's size
        partners = tensors["partners"].long()
        if bool(((partners < 0) | (partners >= room)).any()):
            refuse("a CutMix partner lies outside its batch")
    if "lams" in tensors and not bool(((tensors["lams"] >= 0) & (tensors["lams"] <= 1)).all()):
        refuse("a CutMix lam lies outside [0, 1]")
    if "cutmix_boxes" in tensors and not _boxes_inside(tensors["cutmix_boxes"], size, minimum=0):
        refuse("a CutMix box lies outside the image")
    if "topk_indices" in tensors:
        indices = tensors["topk_indices"].long()
        if bool(((indices < 0) | (indices >= index["num_classes"])).any()):
            refuse("a soft label names a class outside the classes")
    for name in ("logits", "topk_values", "rest_mean", "logit_scale"):
        if name in tensors and not bool(torch.isfinite(tensors[name]).all()):
            refuse(f"{name} holds NaN or inf")
    if "logit_scale" in tensors and not bool((tensors["logit_scale"] > 0).all()):
        refuse("a logit scale is not positive")


def _boxes_inside(boxes: torch.Tensor, size: int, minimum: int) -> bool:
    top, left, height, width = boxes.long().unbind(-1)
    return bool(((top >= 0) & (left >= 0) & (height >= minimum) & (width >= minimum)
                 & (top + height <= size) & (left + width <= size)).all())


class SoftLabelStore:
    """A relabel run's soft labels; open with :meth:`SoftLabelStore.open`.

    ``epochs`` (stored), ``train_epochs`` (replayed: epoch ``e`` is stored epoch ``e % epochs``),
    ``num_classes``, ``num_samples``, ``batch_size``, ``topk`` (None: dense), ``logit_dtype``,
    ``image_size``, ``teachers`` and ``teacher_mode`` come from ``index.json``; :meth:`epoch`
    reads one epoch (plan + soft labels) from its shard.
    """

    def __init__(self, directory: Path, index: dict):
        self.directory = Path(directory)
        self.index = index
        self.epochs = int(index["epochs"])
        self.train_epochs = int(index.get("train_epochs", self.epochs))
        self.logit_dtype = index.get("logit_dtype", "float16")
        self.num_classes = int(index["num_classes"])
        self.num_samples = int(index["num_samples"])
        self.batch_size = int(index["batch_size"])
        self.topk = index.get("topk")
        self.image_size = int(index["image_size"])
        self.teachers = list(index.get("teachers", []))
        self.teacher_mode = index.get("teacher_mode")
        self.shards = [dict(s) for s in index["shards"]]
        self._cache: tuple[int, EpochRecord] | None = None

    @classmethod
    def open(cls, directory: str | Path) -> "SoftLabelStore":
        """Open a store: ``directory`` is the ``soft_labels`` folder or a build directory holding one."""
        directory = Path(directory)
        if not (directory / INDEX).is_file() and (directory / SOFT_LABELS / INDEX).is_file():
            directory = directory / SOFT_LABELS
        path = directory / INDEX
        if not path.is_file():
            raise SoftLabelStoreError(f"no soft-label store in {directory}: {INDEX} is missing "
                                      "(run `fadrm-build relabel DATASET --ipc N` first)")
        try:
            index = read(path, SOFT_LABEL_INDEX_FILE)
        except LayoutError as error:
            raise SoftLabelStoreError(str(error)) from None
        _check_index(index, path)
        if not index.get("complete", False):
            raise SoftLabelStoreError(f"the soft-label store in {directory} is incomplete (an interrupted "
                                      "relabel); run the same relabel command again to finish it")
        absent = [s["file"] for s in index["shards"] if not (directory / s["file"]).is_file()]
        if absent:
            raise SoftLabelStoreError(f"soft-label shards missing from {directory}: {', '.join(absent[:3])}"
                                      f"{' ...' if len(absent) > 3 else ''}")
        for shard in index["shards"]:
            check_shard_header(directory / shard["file"], index, shard)
        return cls(directory, index)

    def __repr__(self) -> str:
        layout = "dense" if self.topk is None else f"top-{self.topk}"
        return (f"SoftLabelStore({str(self.directory)!r}, epochs={self.epochs}, train_epochs={self.train_epochs}, "
                f"samples={self.num_samples}, classes={self.num_classes}, batch_size={self.batch_size}, {layout}, "
                f"{self.logit_dtype})")

    @property
    def bytes(self) -> int:
        """Every byte of the store, its index and its shards: what its labels cost to download."""
        return sum((self.directory / name).stat().st_size for name in store_files(self.index))

    def size_record(self) -> dict:
        """How the labels were made smaller and what they take, as cards and evaluation records say it."""
        return {"stored_epochs": self.epochs, "topk": self.topk, "logit_dtype": self.logit_dtype, "bytes": self.bytes}

    @property
    def num_batches(self) -> int:
        """Batches per epoch."""
        return num_batches(self.num_samples, self.batch_size)

    def check_epoch(self, epoch: int) -> int:
        """The stored epoch that training epoch ``epoch`` replays; refuses one the store was not made for."""
        epoch = int(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch >= self.train_epochs:
            raise ValueError(f"epoch {epoch} asked for, but the soft-label store in {self.directory} was made "
                             f"for {self.train_epochs} epochs (0..{self.train_epochs - 1}); train for at most "
                             f"{self.train_epochs} epochs or relabel with more (`fadrm-build relabel ... --epochs E`)")
        return epoch % self.epochs

    def _shard_of(self, epoch: int) -> dict:
        for shard in self.shards:
            if shard["first_epoch"] <= epoch <= shard["last_epoch"]:
                return shard
        raise SoftLabelStoreError(f"no shard holds epoch {epoch}")  # open() rules this out

    def epoch(self, epoch: int) -> EpochRecord:
        """Epoch ``epoch``'s plan and soft labels (the last one read is cached)."""
        epoch = self.check_epoch(epoch)
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        names = PLAN_TENSORS + label_tensors(self.topk, self.logit_dtype)
        tensors = self._read(epoch, names)
        plan = EpochPlan.from_tensors(tensors, self.batch_size)
        stored = {name: tensors[name] for name in names if name not in PLAN_TENSORS}
        record = EpochRecord(epoch, plan, stored, self.num_classes)
        self._cache = (epoch, record)
        return record

    def order(self, epoch: int) -> torch.Tensor:
        """Epoch ``epoch``'s sample order alone (what a batch sampler needs), without its soft labels."""
        epoch = self.check_epoch(epoch)
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1].plan.order
        return self._read(epoch, ("order",))["order"]

    def _read(self, epoch: int, names: Sequence[str]) -> dict[str, torch.Tensor]:
        from safetensors import safe_open

        shard = self._shard_of(epoch)
        row = epoch - shard["first_epoch"]
        path = self.directory / shard["file"]
        try:
            with safe_open(str(path), framework="pt") as f:
                tensors = {name: f.get_slice(name)[row:row + 1][0] for name in names}
        except Exception as error:  # safetensors raises several types for a broken file
            raise SoftLabelStoreError(f"cannot read epoch {epoch} from {path}: {error}") from None
        check_epoch_values(tensors, self.index, f"{path}, epoch {epoch}")
        return tensors

    def __getstate__(self):  # workers get the index, not the cached epoch
        state = self.__dict__.copy()
        state["_cache"] = None
        return state


# --- replay: sampler, dataset, loader ----------------------------------------------------------

@dataclass(frozen=True)
class RecordedBatch:
    """Batch ``batch`` of epoch ``epoch``, as :class:`ReplayBatchSampler` yields it: it iterates over
    the sample indices of the batch, and tells the dataset which recorded batch to build."""

    epoch: int
    batch: int
    indices: tuple[int, ...]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ReplayBatchSampler(Sampler[RecordedBatch]):
    """Yields the recorded batches of ``epochs`` (one epoch, or several in order): one DataLoader, and one
    set of workers, can serve a whole training run. ``keep(batch)`` (batch number within its epoch)
    selects some of each epoch's batches, e.g. a rank's share under torchrun."""

    def __init__(self, store: SoftLabelStore, epochs: int | Sequence[int], keep: Callable[[int], bool] | None = None):
        self.store = store
        self.epochs = [store.check_epoch(e) for e in ([epochs] if isinstance(epochs, int) else epochs)]
        self.batches = [b for b in range(store.num_batches) if keep is None or keep(b)]

    def __len__(self) -> int:
        return len(self.batches) * len(self.epochs)

    def __iter__(self) -> Iterator[RecordedBatch]:
        for epoch in self.epochs:
            order = self.store.order(epoch).tolist()  # the soft labels are read where the batch is built
            for b in self.batches:
                yield RecordedBatch(epoch, b, tuple(order[batch_positions(b, self.store.batch_size, len(order))]))


class ReplayDataset(Dataset):
    """The distilled set replayed through the epochs of a soft-label store.

    ``images`` uint8 (N, C, H, W) and ``labels`` (N,) in the set's canonical order (sorted by
    (label, ipc_id)). ``__getitems__(batch)`` takes one recorded batch, a :class:`RecordedBatch` as
    :class:`ReplayBatchSampler` yields it (or the sample indices of a batch of ``epoch``), and returns
    ``(images float32 (B, C, H, W), soft_logits float32 (B, K), labels int64 (B,))``, the images
    cropped, flipped, CutMix-ed and normalised with ``mean``/``std`` exactly as the teacher saw them.
    With ``targets="hard"`` the second tensor is instead CutMix's mixed one-hot target
    (``lam * onehot(y) + (1 - lam) * onehot(y_partner)``): the same batches with hard labels. The stock
    DataLoader fetcher calls ``__getitems__``; collate with :func:`passthrough_collate` (``replay_loader``
    does).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | Sequence[int], store: SoftLabelStore,
                 epoch: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 targets: str = "soft"):
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if images.shape[0] != store.num_samples:
            raise ValueError(f"{images.shape[0]} images given, but the soft-label store was made for "
                             f"{store.num_samples}")
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.images = images
        self.labels = labels
        self.store = store
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None
        self.epoch = store.check_epoch(epoch)
        self.targets = one_of("targets", targets, TARGETS)
        self._positions: tuple[int, torch.Tensor] | None = None

    def _targets(self, record: EpochRecord, b: int) -> torch.Tensor:
        """Batch ``b``'s soft logits, or its mixed one-hot hard targets, in recorded position order."""
        sl = record.plan.batch_slice(b)
        if self.targets == "soft":
            return record.logits_at(sl)
        labels = self.labels[record.order[sl]]
        own = F.one_hot(labels, self.store.num_classes).float()
        lam = float(record.plan.lams[b])
        return lam * own + (1.0 - lam) * own[record.plan.partners[sl]]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _record(self, epoch: int) -> tuple[EpochRecord, torch.Tensor]:
        record = self.store.epoch(epoch)
        if self._positions is None or self._positions[0] != epoch:
            self._positions = (epoch, record.positions())
        return record, self._positions[1]

    def __getitems__(self, indices: RecordedBatch | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if isinstance(indices, RecordedBatch):  # the sampler's batch: built as recorded, no lookup
            record = self.store.epoch(indices.epoch)
            sl = record.plan.batch_slice(indices.batch)
            x = record.plan.build_batch(self.images, indices.batch, self.mean, self.std, size=self.store.image_size)
            return x, self._targets(record, indices.batch), self.labels[record.order[sl]]
        record, positions = self._record(self.epoch)
        index = torch.as_tensor(list(indices), dtype=torch.long)
        if index.numel() == 0:
            raise ValueError("empty batch")
        pos = positions[index]
        b = int(pos[0]) // record.batch_size
        sl = record.plan.batch_slice(b)
        if sorted(pos.tolist()) != list(range(sl.start, sl.stop)):
            raise ValueError(f"indices {list(indices)[:8]}... are not one recorded batch of epoch {self.epoch}; "
                             "draw batches with ReplayBatchSampler(store, epoch)")
        x = record.plan.build_batch(self.images, b, self.mean, self.std, size=self.store.image_size)
        logits = self._targets(record, b)
        labels = self.labels[record.order[sl]]
        if not torch.equal(record.order[sl], index):  # asked in another order: follow it
            rows = pos - sl.start
            x, logits, labels = x[rows], logits[rows], labels[rows]
        return x, logits, labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One sample as it appears in its recorded batch of ``epoch`` (the whole batch is built for CutMix)."""
        record, positions = self._record(self.epoch)
        pos = int(positions[int(index)])
        sl = record.plan.batch_slice(pos // record.batch_size)
        x, logits, labels = self.__getitems__(record.order[sl].tolist())
        row = pos - sl.start
        return x[row], logits[row], int(labels[row])


def passthrough_collate(batch):
    """``__getitems__`` already returns a collated batch: hand it on unchanged."""
    return batch


def replay_loader(images: torch.Tensor, labels, store: SoftLabelStore, epochs: int | Sequence[int],
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  num_workers: int = 0, keep: Callable[[int], bool] | None = None, targets: str = "soft",
                  **loader_kwargs) -> DataLoader:
    """A DataLoader over the recorded batches of ``epochs`` (an epoch, or several in order, e.g.
    ``range(300)`` for a whole run: its workers then start once); yields (images, soft_logits, labels),
    ``store.num_batches`` batches per epoch, or those ``keep`` selects; ``targets="hard"`` yields
    CutMix's mixed one-hot targets in place of the soft logits."""
    for key in ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last", "collate_fn"):
        if key in loader_kwargs:
            raise TypeError(f"replay_loader fixes {key}: the batches are the recorded ones")
    sampler = ReplayBatchSampler(store, epochs, keep)
    dataset = ReplayDataset(images, labels, store, sampler.epochs[0], mean, std, targets)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=passthrough_collate, num_workers=num_workers,
                      **loader_kwargs)


__all__ = [
    "EpochPlan", "EpochRecord", "FORMAT", "FORMAT_VERSION", "LOGIT_DTYPES", "TARGETS", "RecordedBatch", "ReplayBatchSampler", "ReplayDataset",
    "SoftLabelStore", "SoftLabelStoreError", "apply_plan", "check_epoch_values", "check_shard_header", "compress_logits",
    "cutmix_box", "epoch_bytes", "expand_logits", "expected_tensors", "label_tensors", "quantize_rows", "is_shard_name", "make_epoch_plan", "passthrough_collate",
    "replay_loader", "sample_crop_boxes", "shard_name", "store_files",
]
