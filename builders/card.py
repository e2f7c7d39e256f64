"""The dataset card: the dataset's own text from ``cards/``, the measured tables, the image grid.

``cards/dataset_card.md`` is the template every card shares (YAML front matter + Markdown);
``cards/<dataset>.md`` says what the source data is (license, citation), what the set is for and
where it falls short, and is inserted as ``${about}``. Both are installed with the builder
(``builders/cards``), so an installed ``fadrm-build push`` renders the same card as a checkout. The
metadata about the source (license id, the terms' name and link, source datasets, gating) comes from the
registry's ``SetInfo``, beside the set's other facts.
"""

from __future__ import annotations

import io
import json
import logging
import math
import string
from dataclasses import dataclass
from pathlib import Path

from fadrm_datasets import layout
from fadrm_datasets.install import install_hint
from fadrm_datasets.registry import SETS, SetInfo
from fadrm_datasets.sets import SET_CLASSES

from .methods import METHODS
from .options import BuildError
from .protocols import DEFAULT_PROTOCOL
from .scores import label_robust_score

log = logging.getLogger(__name__)

CARD_TEMPLATE = "dataset_card.md"


def cards_dir() -> Path:
    """The card sources: installed as ``builders/cards``, or ``cards/`` at the top of a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "cards", here.parent / "cards"):
        if (candidate / CARD_TEMPLATE).is_file():
            return candidate
    raise BuildError(f"the dataset-card sources ({CARD_TEMPLATE}) are not installed next to {here}; "
                     f"reinstall with {install_hint('build')}")


def dataset_text(dataset: str) -> str:
    """``cards/<dataset>.md``: what the source is, its license and citation, uses and limits."""
    path = cards_dir() / f"{dataset}.md"
    if not path.is_file():
        log.warning("card: no %s; the card will not describe the source data", path)
        return f"No description of the source data yet (add `cards/{dataset}.md`)."
    return path.read_text().strip()


# --- the image grid ------------------------------------------------------------------------------

GRID_MAX_PER_CLASS = 10  # images of a class shown side by side
GRID_MAX_CLASSES = 100  # classes shown; more are sampled evenly across the label range
GRID_MAX_PIXELS = 6_000_000  # the whole picture, so an ImageNet card stays a few MB
GRID_MIN_TILE = 56  # small images are scaled up (by a whole factor) to at least this
GRID_MAX_TILE = 112  # large images are scaled down to this
GRID_MIN_BLOCK = 96  # a class block is at least this wide, so its name fits (IPC 1)
LABEL_HEIGHT = 14
GAP = 6


@dataclass(frozen=True)
class GridLayout:
    classes: tuple[int, ...]  # the labels shown, in order
    per_class: int
    tile: int
    columns: int  # class blocks side by side; the blocks wrap into rows

    @property
    def block(self) -> tuple[int, int]:
        return self.per_class * self.tile, LABEL_HEIGHT + self.tile

    @property
    def size(self) -> tuple[int, int]:
        rows = math.ceil(len(self.classes) / self.columns)
        width, height = self.block
        return self.columns * (width + GAP) - GAP, rows * (height + GAP) - GAP


def grid_layout(num_classes: int, ipc: int, image_size: int) -> GridLayout:
    """Which classes, how many images each, how big, and how the class blocks wrap."""
    per_class = min(ipc, GRID_MAX_PER_CLASS)
    smallest = max(GRID_MIN_TILE, math.ceil(GRID_MIN_BLOCK / per_class))
    tile = image_size * math.ceil(smallest / image_size) if image_size < smallest else min(image_size, GRID_MAX_TILE)
    block = (per_class * tile + GAP) * (LABEL_HEIGHT + tile + GAP)
    shown = max(1, min(num_classes, GRID_MAX_CLASSES, GRID_MAX_PIXELS // block))
    classes = tuple(sorted({round(i * (num_classes - 1) / max(1, shown - 1)) for i in range(shown)}))
    width, height = per_class * tile, LABEL_HEIGHT + tile
    columns = max(1, min(len(classes), round(math.sqrt(len(classes) * height / width))))
    return GridLayout(classes, per_class, tile, columns)


def _fit(text: str, width: int, font, draw) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def make_grid(entries: list[layout.ImageEntry], classes: list[str], channels: int, image_size: int) -> bytes:
    """A PNG of the set: one block per shown class, named, holding its first images left to right."""
    from PIL import Image, ImageDraw, ImageFont

    grid_spec = grid_layout(len(classes), max(e.ipc_id for e in entries) + 1, image_size)
    mode = layout.image_mode(channels)
    background = 255 if channels == 1 else (255, 255, 255)
    picture = Image.new(mode, grid_spec.size, background)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    width, height = grid_spec.block
    position = {label: i for i, label in enumerate(grid_spec.classes)}
    for label, i in position.items():
        left, top = (i % grid_spec.columns) * (width + GAP), (i // grid_spec.columns) * (height + GAP)
        draw.text((left, top), _fit(f"{label}: {classes[label]}", width, font, draw), fill=0, font=font)
    resample = Image.Resampling.NEAREST if grid_spec.tile > image_size else Image.Resampling.BILINEAR
    for entry in entries:
        i = position.get(entry.label)
        if i is None or entry.ipc_id >= grid_spec.per_class:
            continue
        with Image.open(entry.path) as img:
            img = img.convert(mode)
            if img.size != (grid_spec.tile, grid_spec.tile):
                img = img.resize((grid_spec.tile, grid_spec.tile), resample)
            left = (i % grid_spec.columns) * (width + GAP) + entry.ipc_id * grid_spec.tile
            top = (i // grid_spec.columns) * (height + GAP) + LABEL_HEIGHT
            picture.paste(img, (left, top))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def grid_caption(num_classes: int, ipc: int, image_size: int) -> str:
    spec = grid_layout(num_classes, ipc, image_size)
    shown = "every class" if len(spec.classes) == num_classes else \
        f"{len(spec.classes)} of the {num_classes} classes, evenly spaced"
    images = "every image" if spec.per_class == ipc else f"the first {spec.per_class} of {ipc} images"
    return f"{shown}, {images} of each, labelled `index: name`"


# --- the card --------------------------------------------------------------------------------------

def split_front_matter(text: str) -> tuple[dict, str]:
    """(YAML front matter as a dict, body) of a Markdown card; ({}, text) when it has none."""
    import yaml

    if not text.startswith("---"):
        return {}, text
    end = text.find("\n---", 3)
    if end < 0:
        return {}, text
    data = yaml.safe_load(text[3:end]) or {}
    rest = text[end + 4:]
    return (data if isinstance(data, dict) else {}), rest.split("\n", 1)[1] if "\n" in rest else ""


def _substitute(value, mapping: dict):
    if isinstance(value, str):
        return string.Template(value).safe_substitute(mapping)
    if isinstance(value, list):
        return [_substitute(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, mapping) for k, v in value.items()}
    return value


def ipc_config(ipc: int) -> dict:
    return {"config_name": layout.ipc_dir(ipc), "data_files": [{"split": "train", "path": layout.parquet_pattern(ipc)}]}


def merge_configs(existing: list | None, ipcs: list[int]) -> list[dict]:
    """The card's ``configs:``: the existing entries, with one (re)written per IPC, sorted by IPC."""
    configs = {c.get("config_name"): c for c in (existing or []) if isinstance(c, dict)}
    for ipc in ipcs:
        configs[layout.ipc_dir(ipc)] = ipc_config(ipc)

    def key(name):
        ipc = layout.parse_ipc_dir(str(name))
        return (0, ipc) if ipc is not None else (1, str(name))

    return [configs[name] for name in sorted(configs, key=key)]


def _cell(value) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# The columns a reader of a card wants from each evaluation record (builders.evaluate): the last
# epoch's accuracy first; the best checkpoint beside it, labelled as chosen on the measured split.
EVALUATION_COLUMNS = [("protocol", "protocol"), ("student", "student"), ("labels", "labels"), ("split", "split"),
                      ("epochs", "epochs"), ("label_bytes", "soft-label bytes"),
                      ("top1_final", "top-1 % (last epoch)"), ("top5", "top-5 %"),
                      ("top1_best", "best checkpoint % (chosen on the split)"), ("temperature", "T"),
                      ("seed", "seed"), ("command", "command")]


def evaluations_table(evaluations: list[dict] | None) -> str | None:
    """The manifest's evaluation records as a table; None when there are none."""
    runs = [run for run in evaluations or [] if isinstance(run, dict)]
    if not runs:
        return None
    # Records older than hard-label evaluations were all soft, and those older than protocols ours.
    defaults = {"labels": "soft", "protocol": DEFAULT_PROTOCOL}
    runs = [{**run, "label_bytes": f"{run['soft_labels']['bytes']:,}"} if run.get("soft_labels") else run
            for run in runs]  # the labels a student trained on, where its record names them
    return markdown_table([title for _, title in EVALUATION_COLUMNS],
                          [[run.get(key, defaults.get(key, "")) for key, _ in EVALUATION_COLUMNS] for run in runs])


def _mean_std(record: dict) -> str:
    spread = f" ± {record['top1_final_std']:.2f}" if len(record.get("seeds") or []) > 1 else ""
    return f"{record['top1_final_mean']:.2f}{spread}"


def _teachers_of(record: dict) -> str:
    return ", ".join(f"{name} ({info.get('test_top1')} %)" for name, info in (record.get("teachers") or {}).items())


def newest_test_records(records: list[dict], dataset: str, ipc: int) -> dict[tuple, dict]:
    """Benchmark records of ``dataset`` at ``ipc`` on the test split (``benchmarks/accuracy.py``), keyed by
    (method, label, student, labels, protocol): a later record of the same configuration (say, at the lr a wider
    search chose) replaces an earlier one and takes its place in the order."""
    newest: dict[tuple, dict] = {}
    for r in records:
        if r.get("dataset") == dataset and r.get("ipc") == ipc and r.get("split") == "test" and "top1_final_mean" in r:
            key = (r["method"], r.get("label"), r.get("student"), r.get("labels", "soft"),
                   r.get("protocol", DEFAULT_PROTOCOL))
            newest.pop(key, None)
            newest[key] = r
    return newest


def measured_rows(records: list[dict], dataset: str, ipc: int) -> list[list]:
    """One row per configuration measured at ``ipc``, with the last epoch's top-1 over seeds and the command."""
    return [[r["method"] + (f" ({r['label']})" if r.get("label") else "")
             + (f" [{r['protocol']} protocol]" if r.get("protocol", DEFAULT_PROTOCOL) != DEFAULT_PROTOCOL else ""),
             r.get("student", ""),
             r.get("labels", "soft"), len(r.get("seeds") or []), _mean_std(r), f"{r['top1_best_mean']:.2f}",
             _teachers_of(r), f"`{r.get('command', '')}`"] for r in newest_test_records(records, dataset, ipc).values()]


MEASURED_HEADER = ["method", "student", "labels", "seeds", "top-1 % (last epoch, mean ± std)",
                   "best checkpoint % (chosen on the test split)", "teachers", "command"]


def score_rows(records: list[dict], dataset: str, ipc: int) -> list[list]:
    """DD-Ranking's IOR, HLR and LRS per method and student, where the records hold what they need: the
    set's soft- and hard-label accuracy, the random real subset's soft-label accuracy, and the full real
    data's hard-label accuracy (the teacher's own test top-1, when the student is the teacher's
    architecture: the same network trained on the whole training split with hard labels)."""
    # Scores compare under ours: another protocol's records would mix settings into one score.
    found = {(method, student, labels): r
             for (method, label, student, labels, protocol), r in newest_test_records(records, dataset, ipc).items()
             if not label and protocol == DEFAULT_PROTOCOL}
    rows = []
    for (method, student, labels), soft in sorted(found.items()):
        hard, random = found.get((method, student, "hard")), found.get(("random-real", student, "soft"))
        teacher = (soft.get("teachers") or {}).get(student)
        if labels != "soft" or method == "random-real" or not (hard and random and teacher):
            continue
        full = float(teacher["test_top1"])
        scores = label_robust_score(soft["top1_final_mean"], random["top1_final_mean"], hard["top1_final_mean"], full)
        rows.append([method, student, f"{soft['top1_final_mean']:.2f}", f"{random['top1_final_mean']:.2f}",
                     f"{hard['top1_final_mean']:.2f}", f"{full:.2f}", scores["ior"], scores["hlr"], scores["lrs"]])
    return rows


SCORE_HEADER = ["method", "student", "set, soft labels %", "random real, soft labels %", "set, hard labels %",
                "full real data, hard labels %", "IOR", "HLR", "LRS"]


def imported_text(provenance: dict) -> str:
    """What a card says of an imported set: made elsewhere, from where, under which license, and how it was
    taken in (``fadrm-build import``); our soft labels and evaluations are what the rest of the section shows."""
    revision = f" at revision `{provenance['revision']}`" if provenance.get("revision") else ""
    license_text = (f"its license, as the importer stated it: **{provenance['license']}**" if provenance.get("license")
                    else "its license is **unknown** (the importer stated none): check the source's terms before use")
    class_map = provenance.get("class_map") or {}
    mapped = (f" Classes relabelled on import (source class=label): {', '.join(f'{k}={v}' for k, v in class_map.items())}."
              if class_map else "")
    resize = provenance.get("resize")
    resized = (f" {resize['images']} images were resized to {resize['to']} pixels with PIL's {resize['filter']} filter."
               if resize else "")
    check = provenance.get("order_check") or {}
    checked = (f" Class order checked by the teacher {check['teacher']}: {check['top1_given']} % of the images in "
               "their class." if check else "")
    return (f"**Imported images** (`{provenance.get('name')}`): made by others, not by this builder, read from "
            f"`{provenance.get('source')}`{revision} (sha256 `{provenance.get('sha256')}` of {provenance.get('sha256_of')}); "
            f"{license_text}. The soft labels and evaluations below are this builder's.{mapped}{resized}{checked}")


def label_size_text(info: dict) -> str:
    """`` (50 stored and reused in turn, int8, 190,118 bytes)``: how small the labels are, or nothing."""
    labels = info.get("soft_labels")
    if not labels:
        return ""
    cycled = labels["stored_epochs"] < (info.get("soft_label_epochs") or 0)
    stored = f"{labels['stored_epochs']} stored and reused in turn" if cycled else "every epoch stored"
    kept = f"top-{labels['topk']} + the mean of the rest, " if labels.get("topk") else ""
    return f" ({stored}, {kept}{labels['logit_dtype']}, {labels['bytes']:,} bytes)"


def ipc_section(ipc: int, info: dict, records: list[dict] | None = None, dataset: str | None = None) -> str:
    """The card's section about one IPC: metrics, hyperparameters, teachers, grid."""
    parts = [f"## IPC {ipc}", ""]
    method = info.get("method", "fadrm")
    meaning = f" ({METHODS[method].help})" if method in METHODS else ""
    parts.append(f"{info.get('num_images', '?')} images; method `{method}`{meaning}, seed "
                 f"{info.get('seed', '?')}; released in {info.get('version', '?')}"
                 + (f"; soft labels: {info['soft_label_epochs']} epochs" if info.get("soft_label_epochs") else "")
                 + label_size_text(info) + ".")
    if info.get("provenance"):
        parts += ["", imported_text(info["provenance"])]
    measured = measured_rows(records or [], dataset, ipc)
    if measured:
        parts += ["", "### Accuracy", "", "Top-1 on the real test split after the last epoch (the headline), "
                  "mean ± sample std over seeds, for this method and the baselines under the same protocol; "
                  "the best of the checkpoints stands beside it, labelled, because the test split chose it.",
                  "", markdown_table(MEASURED_HEADER, measured)]
        scores = score_rows(records or [], dataset, ipc)
        if scores:
            parts += ["", "DD-Ranking's scores (IOR and HLR in points; LRS from accuracies as fractions):", "",
                      markdown_table(SCORE_HEADER, scores)]
    table = evaluations_table(info.get("evaluations"))
    parts += ["", "### This build's evaluations" if measured else "### Accuracy", "",
              table if table else "Not evaluated yet."]
    teachers = info.get("teachers") or {}
    if teachers:
        rows = [[name, rec.get("test_top1", ""), rec.get("test_top5", ""), rec.get("file") or rec.get("source", "")]
                for name, rec in teachers.items()]
        parts += ["", "### Teachers", "", markdown_table(["teacher", "test top-1 %", "test top-5 %", "weights"], rows)]
    preset = info.get("preset") or {}
    if preset:
        rows = [[k, v] for k, v in preset.items() if k not in ("name", "display_name", "source", "class_names")]
        parts += ["", "### Hyperparameters", "", markdown_table(["setting", "value"], rows)]
    options = info.get("options") or {}
    if options:
        keep = {k: v for k, v in options.items() if k not in ("build_root", "data_root", "build_dir", "download",
                                                              "teacher_weights", "dataset", "ipc")}
        parts += ["", markdown_table(["build option", "value"], [[k, v] for k, v in keep.items()])]
    num_classes, image_size = preset.get("num_classes"), preset.get("image_size")
    caption = grid_caption(int(num_classes), ipc, int(image_size)) if num_classes and image_size else "the images"
    parts += ["", "### Images", "", caption[0].upper() + caption[1:] + ":", "",
              f"![IPC {ipc} images]({layout.ipc_prefix(ipc)}{layout.GRID})", ""]
    return "\n".join(parts)


# The Hub's fixed size categories (datasets ships them: datasets/utils/resources/size_categories.json);
# category i holds fewer than 10 ** (i + 3) examples, and "n>1T" the rest.
SIZE_CATEGORIES = ("n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
                   "1B<n<10B", "10B<n<100B", "100B<n<1T")


def size_category(total: int) -> str:
    for power, name in enumerate(SIZE_CATEGORIES, start=3):
        if total < 10 ** power:
            return name
    return "n>1T"


def source_metadata(info: SetInfo | None) -> dict:
    """The card's metadata on the source data, from the registry: the terms' name and link (license
    "other"), the source datasets, and for a gated set the prompt each user accepts before access."""
    if info is None:
        return {}
    prompt = (f"These images were made from {info.display_name} and carry its terms of use ({info.license_link}): "
              "by asking for access you agree to use them only as those terms allow.") if info.gated else None
    facts = {"license_name": info.license_name, "license_link": info.license_link,
             "source_datasets": list(info.source_datasets), "extra_gated_prompt": prompt}
    return {key: value for key, value in facts.items() if value}


def render_card(repo_manifest: dict, repo_id: str, version: str, ipc: int, versions: list[str],
                existing_card: str | None = None, template: str | Path | None = None,
                records: list[dict] | None = None) -> str:
    """README.md for the repo: the template's front matter + ``configs:`` for every IPC, then the body."""
    import yaml

    text = Path(template or cards_dir() / CARD_TEMPLATE).read_text()
    front, body = split_front_matter(text)
    dataset = repo_manifest.get("dataset", "dataset")
    info = SETS.get(dataset)
    ipcs = sorted(int(k) for k in repo_manifest.get("ipcs", {}))
    preset = repo_manifest["ipcs"][str(ipc)].get("preset", {})
    flat = dataset in SET_CLASSES and info is not None and info.repo_id == repo_id
    mapping = {
        "dataset": dataset,
        "display_name": repo_manifest.get("display_name") or dataset,
        "license": info.license if info else "unknown",
        "num_classes": len(repo_manifest.get("classes", [])),
        "image_size": preset.get("image_size", "?"),
        "color": "grayscale" if preset.get("channels") == 1 else "RGB",
        "ipc_list": ", ".join(str(i) for i in ipcs),
        "ipc": ipc,
        "version": version,
        "versions": ", ".join(versions),
        "repo_id": repo_id,
        # The flat classes know their repo; anything else (another set, a mirror) names it.
        "class_name": SET_CLASSES[dataset].__name__ if flat else "FADRMDataset",
        "repo_arg": "" if flat else f'repo_id="{repo_id}", ',
        "size_category": size_category(sum(int(v.get("num_images", 0)) for v in repo_manifest["ipcs"].values())),
        "ipc_sections": "\n".join(ipc_section(i, repo_manifest["ipcs"][str(i)], records, dataset) for i in ipcs),
        "about": dataset_text(dataset),
        "install": install_hint(),
    }
    front = {**_substitute(front, mapping), **source_metadata(info)}
    if existing_card:
        old_front, _ = split_front_matter(existing_card)
        existing_configs = old_front.get("configs")
    else:
        existing_configs = None
    front["configs"] = merge_configs(existing_configs, ipcs)
    if dataset in (None, "dataset"):
        front["tags"] = [t for t in front.get("tags", []) if t != "dataset"]
    body = string.Template(body).safe_substitute(mapping)
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n" + body.lstrip("\n")


__all__ = ["GridLayout", "MEASURED_HEADER", "SCORE_HEADER", "SIZE_CATEGORIES", "cards_dir", "dataset_text", "grid_caption", "grid_layout", "imported_text", "make_grid", "markdown_table",
           "measured_rows", "merge_configs", "newest_test_records", "render_card", "score_rows", "size_category", "source_metadata", "split_front_matter"]
