"""Publish a build directory to the Hugging Face Hub as one versioned IPC config of a dataset repo.

Repo layout (one dataset repo per source dataset, every IPC a config, every release a tag)::

    README.md                          # rendered from builders/templates/dataset_card.md; `configs:` lists every IPC
    manifest.json                      # sha256 of every file in the repo (README.md included) + classes, IPCs
    ipc<N>/train-0000i-of-0000K.parquet  # image (Image), label (ClassLabel), ipc_id (int32); sorted (label, ipc_id)
    ipc<N>/grid.png                    # one row per class (at most 100), up to 10 images each
    ipc<N>/manifest.json               # the build manifest, verbatim (its "files" are the build directory's)
    ipc<N>/soft_labels/...             # index.json + epochs-*.safetensors, when the build has them
    teachers/<name>.safetensors        # teachers the build trained (pretrained torchvision ones are named only)

:func:`push` stages that layout in a folder, checks the card with the Hub's YAML validator, uploads
it in one commit (``upload_folder``; stale files of the same IPC are deleted), then tags the commit
with the version. A version that already exists is refused unless ``force=True`` (the tag is moved).
Pushing another IPC to the same repo keeps the other IPCs and merges the card's ``configs:``.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path


from fadrm_datasets import layout
from fadrm_datasets._io import atomic_write_bytes, atomic_write_json, sha256_file
from fadrm_datasets.hub import REPO_TYPE
from fadrm_datasets.layout import MANIFEST, README, BuildDirectory
from fadrm_datasets.registry import SETS, parse_version, unique_names
from fadrm_datasets.sets import SET_CLASSES
from fadrm_datasets.softlabels import INDEX

from .options import BuildError

log = logging.getLogger(__name__)
# Package data (pyproject), so an installed builder can render cards, not just a checkout.
CARD_TEMPLATE = Path(__file__).resolve().parent / "templates" / "dataset_card.md"
MAX_SHARD_BYTES = 500 * 1024 * 1024  # the Hub's parquet guidance: shards of a few hundred MB
ROW_GROUP_SIZE = 100  # image rows per parquet row group (what `datasets` writes for image data)
GRID_MAX_ROWS = 100
GRID_MAX_COLS = 10
GRID_MAX_TILE = 64  # grid tiles of larger images are downscaled to this many pixels


class PublishError(BuildError):
    """The set cannot be published as asked; the message says what to do."""


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    version: str
    ipc: int
    commit: str
    files: tuple[str, ...]  # paths written by this push
    moved_tag: bool = False


# --- reading the build ---------------------------------------------------------------------------

@dataclass
class BuildContents:
    root: Path
    manifest: dict
    preset: dict
    ipc: int
    classes: list[str]
    rows: list[tuple[int, int, Path]]  # (label, ipc_id, png), sorted by (label, ipc_id)

    @property
    def dataset(self) -> str:
        return self.manifest.get("dataset") or self.preset.get("name") or "dataset"


def read_build(build_dir: str | Path) -> BuildContents:
    """Read and check a finished build: manifest, every image present and matching its sha256."""
    build = BuildDirectory(Path(build_dir))
    manifest = build.read_manifest()
    if not manifest:
        raise PublishError(f"{build.root} is not a build directory (no {MANIFEST}); build it first "
                           "with `fadrm-build DATASET --ipc N`")
    preset = manifest.get("preset") or {}
    ipc = manifest.get("ipc")
    num_classes = preset.get("num_classes")
    if not ipc or not num_classes:
        raise PublishError(f"{build.manifest_path} lacks the ipc or the preset's num_classes")
    rows = [(e.label, e.ipc_id, e.path) for e in build.scan_images()]
    expected = {(label, i) for label in range(num_classes) for i in range(ipc)}
    found = {(label, i) for label, i, _ in rows}
    if found != expected:
        missing, extra = sorted(expected - found), sorted(found - expected)
        detail = (f"{len(missing)} missing (first: class {missing[0][0]} image {missing[0][1]})" if missing
                  else f"{len(extra)} unexpected (first: {extra[0]})")
        raise PublishError(f"{build.images} is not a complete set of {num_classes} x {ipc} images: {detail}; "
                           "finish the recover stage first")
    files = manifest.get("files", {})
    for label, ipc_id, path in rows:
        rel = path.relative_to(build.root).as_posix()
        if rel in files and sha256_file(path) != files[rel]:
            raise PublishError(f"{path} changed after the manifest was written (sha256 differs); "
                               "rerun the stage that wrote it, or delete it and resume the build")
    classes = manifest.get("classes")
    if classes is None and manifest.get("dataset") in SETS:
        classes = SETS[manifest["dataset"]].classes
    if classes is None:
        classes = [str(i) for i in range(num_classes)]
    if len(classes) != num_classes:
        raise PublishError(f"the manifest names {len(classes)} classes for a preset of {num_classes}")
    return BuildContents(build.root, manifest, preset, int(ipc), list(unique_names(classes)), rows)


# --- parquet ---------------------------------------------------------------------------------------

def features_json(classes: list[str]) -> dict:
    """The `datasets` features of the parquet files, as `datasets` stores them in the schema metadata."""
    return {
        "image": {"_type": "Image"},
        "label": {"names": list(classes), "_type": "ClassLabel"},
        "ipc_id": {"dtype": "int32", "_type": "Value"},
    }


def arrow_schema(classes: list[str]):
    import pyarrow as pa

    fields = [
        pa.field("image", pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])),
        pa.field("label", pa.int64()),
        pa.field("ipc_id", pa.int32()),
    ]
    metadata = {"huggingface": json.dumps({"info": {"features": features_json(classes)}})}
    return pa.schema(fields, metadata=metadata)


def shard_rows(rows: list[tuple[int, int, Path]], max_bytes: int) -> list[list[tuple[int, int, Path]]]:
    """Split rows, in order, into shards of at most ``max_bytes`` of PNG data (at least one row each)."""
    shards, current, size = [], [], 0
    for row in rows:
        nbytes = row[2].stat().st_size
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(row)
        size += nbytes
    if current:
        shards.append(current)
    return shards


def write_parquet(contents: BuildContents, staging: Path, max_shard_bytes: int = MAX_SHARD_BYTES) -> list[Path]:
    """``staging/ipc<N>/train-0000i-of-0000K.parquet`` holding the set in canonical order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(contents.classes)
    shards = shard_rows(contents.rows, max_shard_bytes)
    paths = []
    for i, shard in enumerate(shards):
        images = [{"bytes": path.read_bytes(), "path": layout.image_name(label, ipc_id)}
                  for label, ipc_id, path in shard]
        table = pa.table({"image": images, "label": [r[0] for r in shard], "ipc_id": [r[1] for r in shard]},
                         schema=schema)
        path = staging / layout.parquet_shard(contents.ipc, i, len(shards))
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, row_group_size=ROW_GROUP_SIZE)
        paths.append(path)
    return paths


# --- grid ------------------------------------------------------------------------------------------

def grid_shape(num_classes: int, ipc: int, image_size: int) -> tuple[int, int, int]:
    """(rows, cols, tile) of the card's image grid."""
    return min(num_classes, GRID_MAX_ROWS), min(ipc, GRID_MAX_COLS), min(image_size, GRID_MAX_TILE)


def make_grid(contents: BuildContents) -> bytes:
    """A PNG: one row per class (the first 100), its first images (up to 10) left to right."""
    from PIL import Image

    channels = int(contents.preset.get("channels", 3))
    size = int(contents.preset.get("image_size") or Image.open(contents.rows[0][2]).size[0])
    num_classes = int(contents.preset["num_classes"])
    rows, cols, tile = grid_shape(num_classes, contents.ipc, size)
    mode = "L" if channels == 1 else "RGB"
    grid = Image.new(mode, (cols * tile, rows * tile))
    for label, ipc_id, path in contents.rows:
        if label < rows and ipc_id < cols:
            with Image.open(path) as img:
                img = img.convert(mode)
                if img.size != (tile, tile):
                    img = img.resize((tile, tile), Image.Resampling.BILINEAR)
                grid.paste(img, (ipc_id * tile, label * tile))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


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


# The columns a reader of a card wants from each evaluation record (builders.evaluate).
EVALUATION_COLUMNS = [("student", "student"), ("split", "split"), ("epochs", "epochs"),
                      ("top1_best", "top-1 % (best)"), ("top1_final", "top-1 % (final)"), ("top5", "top-5 %"),
                      ("temperature", "T"), ("seed", "seed")]


def evaluations_table(evaluations: list[dict] | None) -> str | None:
    """The manifest's evaluation records as a table; None when there are none."""
    runs = [run for run in evaluations or [] if isinstance(run, dict)]
    if not runs:
        return None
    return markdown_table([title for _, title in EVALUATION_COLUMNS],
                          [[run.get(key, "") for key, _ in EVALUATION_COLUMNS] for run in runs])


def ipc_section(ipc: int, info: dict) -> str:
    """The card's section about one IPC: metrics, hyperparameters, teachers, grid."""
    parts = [f"## IPC {ipc}", ""]
    parts.append(f"{info.get('num_images', '?')} images; method `{info.get('method', 'fadrm')}`, seed "
                 f"{info.get('seed', '?')}; released in {info.get('version', '?')}"
                 + (f"; soft labels: {info['soft_label_epochs']} epochs" if info.get("soft_label_epochs") else "")
                 + ".")
    table = evaluations_table(info.get("evaluations"))
    parts += ["", "### Accuracy", "", table if table else "Not evaluated yet."]
    teachers = info.get("teachers") or {}
    if teachers:
        rows = [[name, rec.get("test_top1", ""), rec.get("test_top5", ""),
                 Path(str(rec.get("source", ""))).name] for name, rec in teachers.items()]
        parts += ["", "### Teachers", "", markdown_table(["teacher", "test top-1 %", "test top-5 %", "weights"], rows)]
    preset = info.get("preset") or {}
    if preset:
        rows = [[k, v] for k, v in preset.items() if k not in ("name", "display_name", "source")]
        parts += ["", "### Hyperparameters", "", markdown_table(["setting", "value"], rows)]
    options = info.get("options") or {}
    if options:
        keep = {k: v for k, v in options.items() if k not in ("build_root", "data_root", "build_dir", "download",
                                                              "teacher_weights", "dataset", "ipc")}
        parts += ["", markdown_table(["build option", "value"], [[k, v] for k, v in keep.items()])]
    parts += ["", "### Images", "", f"One row per class (at most {GRID_MAX_ROWS}), up to {GRID_MAX_COLS} images each:",
              "", f"![IPC {ipc} images]({layout.ipc_prefix(ipc)}{layout.GRID})", ""]
    return "\n".join(parts)


def size_category(total: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if total < limit:
            return name
    return "1M<n<10M"


def render_card(repo_manifest: dict, repo_id: str, version: str, ipc: int, versions: list[str],
                existing_card: str | None = None, template: str | Path | None = None) -> str:
    """README.md for the repo: the template's front matter + ``configs:`` for every IPC, then the body."""
    import yaml

    text = Path(template or CARD_TEMPLATE).read_text()
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
        "ipc_sections": "\n".join(ipc_section(i, repo_manifest["ipcs"][str(i)]) for i in ipcs),
    }
    front = _substitute(front, mapping)
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


# --- staging ---------------------------------------------------------------------------------------

def _teacher_files(contents: BuildContents) -> dict[str, Path]:
    """name -> safetensors file of every teacher the build trained (torchvision ones are skipped)."""
    found = {}
    for name, record in (contents.manifest.get("teachers") or {}).items():
        source = str(record.get("source", ""))
        if not source.endswith(".safetensors"):
            continue
        candidates = [Path(source), contents.root / source]
        if contents.manifest.get("teachers_dir"):
            candidates.append(Path(contents.manifest["teachers_dir"]) / Path(source).name)
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise PublishError(f"teacher {name}: {source} not found; rerun `fadrm-build teacher "
                               f"{contents.dataset}` or publish from the machine that built the set")
        if record.get("sha256") and sha256_file(path) != record["sha256"]:
            raise PublishError(f"teacher {name}: {path} does not match the sha256 in the build manifest")
        found[name] = path
    return found


def _ipc_record(contents: BuildContents, version: str, shards: list[str], soft: dict | None) -> dict:
    manifest = contents.manifest
    teachers = {name: {k: v for k, v in rec.items() if k != "source"} | {"source": Path(str(rec.get("source", ""))).name}
                for name, rec in (manifest.get("teachers") or {}).items()}
    return {
        "version": version,
        "num_images": len(contents.rows),
        "shards": shards,
        "method": manifest.get("method"),
        "seed": manifest.get("seed"),
        "preset": contents.preset,
        "options": manifest.get("options") or {},
        "teachers": teachers,
        "evaluations": manifest.get("evaluations"),
        "soft_label_epochs": soft.get("epochs") if soft else None,
        "code_version": manifest.get("code_version"),
    }


def stage(build_dir: str | Path, repo_id: str, version: str, staging: str | Path,
          existing_manifest: dict | None = None, existing_card: str | None = None,
          remote_files: set[str] | None = None, versions: list[str] | None = None,
          template: str | Path | None = None, max_shard_bytes: int = MAX_SHARD_BYTES,
          contents: BuildContents | None = None) -> dict:
    """Write the repo layout for one build into ``staging``; returns the new top-level manifest.

    ``existing_manifest``/``existing_card``/``remote_files`` describe the repo as it is (for merging
    other IPCs); without them the staged folder describes a repo holding this IPC alone.
    """
    check_version(version)
    contents = contents or read_build(build_dir)
    staging = Path(staging)
    prefix = layout.ipc_prefix(contents.ipc)
    out = staging / layout.ipc_dir(contents.ipc)
    if out.exists():
        shutil.rmtree(out)
    shards = [p.relative_to(staging).as_posix() for p in write_parquet(contents, staging, max_shard_bytes)]
    atomic_write_bytes(out / layout.GRID, make_grid(contents))
    shutil.copy2(contents.root / MANIFEST, out / MANIFEST)
    soft = None
    soft_dir = contents.root / layout.SOFT_LABELS
    if (soft_dir / INDEX).is_file():
        soft = layout.read_json_object(soft_dir / INDEX)
        if not soft.get("complete", False):
            raise PublishError(f"the soft labels in {soft_dir} are incomplete; finish the relabel stage, "
                               "or move soft_labels/ away to publish without them")
        if soft.get("num_samples") not in (None, len(contents.rows)):
            raise PublishError(f"{soft_dir} holds soft labels for {soft['num_samples']} samples, the set has "
                               f"{len(contents.rows)}; run the relabel stage again")
        shutil.copytree(soft_dir, staging / layout.repo_soft_labels(contents.ipc), ignore=shutil.ignore_patterns(".*"))
    for name, path in _teacher_files(contents).items():
        (staging / layout.TEACHERS).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, staging / layout.repo_teacher(name))

    existing = existing_manifest or {}
    if existing.get("classes") and list(existing["classes"]) != contents.classes:
        raise PublishError(f"{repo_id} holds a set with other classes ({existing.get('dataset')}); "
                           "publish each source dataset to its own repo")
    ipcs = {k: v for k, v in (existing.get("ipcs") or {}).items() if k != str(contents.ipc)}
    ipcs[str(contents.ipc)] = _ipc_record(contents, version, shards, soft)
    manifest = {
        "format_version": 1,
        "repo": repo_id,
        "dataset": contents.dataset,
        "display_name": contents.preset.get("display_name") or contents.dataset,
        "version": version,
        "classes": contents.classes,
        "ipcs": dict(sorted(ipcs.items(), key=lambda kv: int(kv[0]))),
        "files": {},
    }
    all_versions = sorted(set(versions or []) | {version}, key=parse_version)
    card = render_card(manifest, repo_id, version, contents.ipc, all_versions, existing_card, template)
    atomic_write_bytes(staging / README, card.encode())

    staged = {p.relative_to(staging).as_posix(): p for p in sorted(staging.rglob("*")) if p.is_file()}
    staged.pop(MANIFEST, None)  # the top-level manifest cannot hold its own hash
    files = {}
    remote = remote_files if remote_files is not None else set((existing.get("files") or {}))
    for rel, sha in (existing.get("files") or {}).items():  # other IPCs and teachers already on the Hub
        if rel in remote and not rel.startswith(prefix) and rel not in staged:
            files[rel] = sha
    files.update({rel: sha256_file(path) for rel, path in staged.items()})
    manifest["files"] = dict(sorted(files.items()))
    atomic_write_json(staging / MANIFEST, manifest)
    return manifest


def check_version(version: str) -> None:
    if parse_version(version) is None:
        raise PublishError(f"version {version!r} is not of the form vX.Y.Z (e.g. v1.0.0)")


# --- pushing ---------------------------------------------------------------------------------------

def _download_text(api, repo_id: str, filename: str) -> str | None:
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = api.hf_hub_download(repo_id, filename, repo_type=REPO_TYPE, revision="main")
    except EntryNotFoundError:
        return None
    return Path(path).read_text()


def validate_card(card: str) -> None:
    """Check the card's YAML with the Hub's validator (POST /api/validate-yaml)."""
    from huggingface_hub import DatasetCard

    try:
        DatasetCard(card).validate(repo_type=REPO_TYPE)
    except ValueError as error:
        raise PublishError(f"the Hub rejects the dataset card's YAML: {error}") from None


def push(build_dir: str | Path, repo_id: str, version: str, force: bool = False, private: bool = False,
         token: str | None = None, staging_dir: str | Path | None = None,
         template: str | Path | None = None, max_shard_bytes: int = MAX_SHARD_BYTES) -> PushResult:
    """Stage ``build_dir`` and push it to ``repo_id`` as ``version`` (one commit, then a tag)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    check_version(version)
    if "/" not in repo_id:
        raise PublishError(f"--repo must be ORG/NAME (or USER/NAME), got {repo_id!r}")
    contents = read_build(build_dir)  # fail on an unfinished build before touching the Hub
    ipc = contents.ipc
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
        tags = {t.name: t.target_commit for t in api.list_repo_refs(repo_id, repo_type=REPO_TYPE).tags}
        if version in tags and not force:
            raise PublishError(f"{repo_id} already has version {version} (commit {tags[version][:10]}); releases "
                               "are immutable: publish a new version, or pass --force to move the tag")
        remote_files = set(api.list_repo_files(repo_id, repo_type=REPO_TYPE))
        existing_text = _download_text(api, repo_id, MANIFEST) if MANIFEST in remote_files else None
        existing_card = _download_text(api, repo_id, README) if README in remote_files else None
        existing_manifest = json.loads(existing_text) if existing_text else None

        own_staging = staging_dir is None
        staging = Path(tempfile.mkdtemp(prefix="fadrm-push-")) if own_staging else Path(staging_dir)
        try:
            if not own_staging and staging.exists():
                shutil.rmtree(staging)
            staging.mkdir(parents=True, exist_ok=True)
            versions = [t for t in tags if parse_version(t)]
            manifest = stage(build_dir, repo_id, version, staging, existing_manifest, existing_card, remote_files,
                             versions, template, max_shard_bytes, contents)
            validate_card((staging / README).read_text())
            written = tuple(sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()))
            info = api.upload_folder(repo_id=repo_id, repo_type=REPO_TYPE, folder_path=staging,
                                     commit_message=f"Publish ipc{ipc} as {version}",
                                     delete_patterns=[layout.ipc_prefix(ipc) + "*"])
        finally:
            if own_staging:
                shutil.rmtree(staging, ignore_errors=True)
        commit = info.oid
        moved = version in tags
        if moved:
            api.delete_tag(repo_id, tag=version, repo_type=REPO_TYPE)
        api.create_tag(repo_id, tag=version, revision=commit, repo_type=REPO_TYPE,
                       tag_message=f"{manifest['dataset']} ipc{ipc} {version}")
    except HfHubHTTPError as error:
        raise PublishError(f"the Hub refused the push to {repo_id}: {error}".splitlines()[0]) from None
    log.info("pushed %s ipc%d as %s (commit %s)", repo_id, ipc, version, commit[:10])
    return PushResult(repo_id, version, ipc, commit, written, moved)


__all__ = ["PublishError", "PushResult", "arrow_schema", "features_json", "make_grid", "merge_configs", "push",
           "read_build", "render_card", "stage", "validate_card", "write_parquet"]
