"""Publish a build directory to the Hugging Face Hub as one versioned IPC config of a dataset repo.

The repo's layout is :mod:`fadrm_datasets.layout`'s (one repo per source dataset, every IPC a
config, every release a tag). :func:`push` stages that layout in a folder (parquet shards with the
`datasets` features, the soft labels, the trained teachers, the card from ``cards/`` with its image
grid, and a manifest with the sha256 of every file), checks the card with the Hub's YAML validator,
uploads it in one commit (stale files of the same IPC are deleted), then tags the commit with the
version. A version that already exists is refused unless ``force=True`` (the tag is moved).
Pushing another IPC to the same repo keeps the other IPCs and merges the card's ``configs:``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from fadrm_datasets import layout
from fadrm_datasets._io import atomic_write_bytes, atomic_write_json, sha256_file
from fadrm_datasets.hub import (REPO_TYPE, HubError, check_repo_id, check_version, file_sizes, is_transport_error,
                                read_manifest)
from fadrm_datasets.layout import MANIFEST, README, BuildDirectory, LayoutError, own_file
from fadrm_datasets.registry import SETS, parse_version, unique_names
from fadrm_datasets.schema import REPO_MANIFEST_FILE, NewerFormatError, check_written, release_manifest
from fadrm_datasets.softlabels import SoftLabelStore, SoftLabelStoreError

from .card import make_grid, render_card
from .options import BuildError, BuildFailed
from .teachers import TeacherError, recorded_teacher_file

log = logging.getLogger(__name__)
MAX_SHARD_BYTES = 500 * 1024 * 1024  # the Hub's parquet guidance: shards of a few hundred MB
ROW_GROUP_SIZE = 100  # image rows per parquet row group (what `datasets` writes for image data)


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
    detail = _incomplete(rows, num_classes, ipc)
    if detail:
        raise PublishError(f"{build.images} is not a complete set of {num_classes} x {ipc} images: {detail}; "
                           "finish the recover stage first")
    files = manifest.get("files", {})
    unrecorded = [path for _, _, path in rows if path.relative_to(build.root).as_posix() not in files]
    if unrecorded:
        raise PublishError(f"{unrecorded[0]} is not recorded in {build.manifest_path.name} (an interrupted recover); "
                           "run the build command again to finish and record it")
    damaged = build.damaged((layout.IMAGES + "/", layout.SOFT_LABELS + "/"))
    if damaged:
        raise PublishError(f"{build.root / damaged[0]} changed after the manifest was written (sha256 differs, or it "
                           "is no longer a regular file); run the build command again: it makes damaged images and "
                           "shards again")
    strays = unrecorded_entries(build.root, files)
    if strays:
        raise PublishError(f"{build.root} holds what its manifest does not record: {', '.join(strays[:3])}"
                           f"{' ...' if len(strays) > 3 else ''}; a push publishes exactly what the build recorded: "
                           "move these out of the build")
    classes = manifest.get("classes")
    if classes is None and manifest.get("dataset") in SETS:
        classes = SETS[manifest["dataset"]].classes
    if classes is None:
        classes = [str(i) for i in range(num_classes)]
    if len(classes) != num_classes:
        raise PublishError(f"the manifest names {len(classes)} classes for a preset of {num_classes}")
    return BuildContents(build.root, manifest, preset, int(ipc), list(unique_names(classes)), rows)


def _incomplete(rows: list[tuple[int, int, Path]], num_classes: int, ipc: int) -> str | None:
    """What keeps ``rows`` from being every (label, ipc_id) of ``num_classes`` x ``ipc``, found by walking the
    images on disk: the manifest's numbers, whatever they claim, never size an allocation."""
    found = sorted({(label, i) for label, i, _ in rows})
    wanted = [pair for pair in found if pair[0] < num_classes and pair[1] < ipc]
    if len(wanted) < num_classes * ipc:  # sorted, the n-th pair of a whole set is divmod(n, ipc)
        first = next((divmod(n, ipc) for n, pair in enumerate(wanted) if pair != divmod(n, ipc)), divmod(len(wanted), ipc))
        return f"{num_classes * ipc - len(wanted)} missing (first: class {first[0]} image {first[1]})"
    extra = [pair for pair in found if pair[0] >= num_classes or pair[1] >= ipc]
    return f"{len(extra)} unexpected (first: {extra[0]})" if extra else None


def unrecorded_entries(root: Path, recorded: dict[str, str]) -> list[str]:
    """What lies under a build's ``images/`` and ``soft_labels/`` that its manifest does not record, and
    every symbolic link there (listed, never followed). Hidden files (shard receipts, temporary files of
    a killed write) are the builder's own and never published."""
    found = []
    for top in (layout.IMAGES, layout.SOFT_LABELS):
        for folder, dirs, names in os.walk(root / top):  # does not descend into linked folders
            dirs[:] = [d for d in dirs if not d.startswith(".") or os.path.islink(os.path.join(folder, d))]
            for name in sorted(dirs + names):
                path = Path(folder, name)
                rel = path.relative_to(root).as_posix()
                if path.is_symlink() or (path.is_file() and not name.startswith(".") and rel not in recorded):
                    found.append(rel + (" (a symbolic link)" if path.is_symlink() else ""))
    return sorted(found)


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


# --- staging ---------------------------------------------------------------------------------------

def _teacher_files(contents: BuildContents) -> dict[str, Path]:
    """name -> safetensors file of every teacher the build trained (given and torchvision ones are named
    only), found in the build's teacher cache and checked against the recorded sha256."""
    found = {}
    for name, record in (contents.manifest.get("teachers") or {}).items():
        source = str(record.get("source", "")) if isinstance(record, dict) else ""
        if source != "trained" and not source.endswith(".safetensors"):  # given and torchvision: named only
            continue
        try:
            found[name] = recorded_teacher_file(name, record, contents.manifest)
        except TeacherError as error:
            raise PublishError(str(error)) from None
    return found


# Fields of a build manifest that only mean something on the machine that built it.
LOCAL_OPTIONS = ("build_root", "build_dir", "data_root")


def public_manifest(manifest: dict) -> dict:
    """The build manifest as it is published: no local paths. Options naming folders are dropped, a
    given teacher's file is named by its name, and any absolute local path quoted elsewhere (a recorded
    command) is replaced, whole, by a placeholder such as ``BUILD_DIR``; relative paths name nothing
    of the machine and stay."""
    options = manifest.get("options") or {}
    named = {"BUILD_DIR": options.get("build_dir"), "BUILD_ROOT": options.get("build_root"),
             "DATA_ROOT": options.get("data_root"), "TEACHERS_DIR": manifest.get("teachers_dir"),
             "TEACHER_WEIGHTS": options.get("teacher_weights"), "~": str(Path.home())}
    placeholders = {}
    for placeholder, path in named.items():
        if path and Path(str(path)).is_absolute() and Path(str(path)) != Path("/"):
            for form in {str(path).rstrip("/"), str(Path(str(path)).resolve())}:
                placeholders.setdefault(form, placeholder)
    # Longest first, and only where the path ends (``/tmp/x`` is not replaced inside ``/tmp/xy``).
    pattern = re.compile("|".join(f"{re.escape(p)}(?=$|[/\\s'\"])" for p in sorted(placeholders, key=len, reverse=True))
                         ) if placeholders else None

    def scrub(value):
        if isinstance(value, str):
            return pattern.sub(lambda m: placeholders[m.group(0)], value) if pattern else value
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        return value

    public = {k: v for k, v in manifest.items() if k != "teachers_dir"}
    public["options"] = {k: v for k, v in options.items() if k not in LOCAL_OPTIONS}
    if options.get("teacher_weights"):
        public["options"]["teacher_weights"] = Path(str(options["teacher_weights"])).name
    return scrub(public)


def _ipc_record(public: dict, num_images: int, version: str, shards: list[str], soft: SoftLabelStore | None) -> dict:
    return {
        "version": version,
        "num_images": num_images,
        "shards": shards,
        "method": public.get("method"),
        "seed": public.get("seed"),
        "preset": public.get("preset") or {},
        "options": public.get("options") or {},
        "teachers": public.get("teachers") or {},
        "evaluations": public.get("evaluations"),
        "soft_label_epochs": soft.train_epochs if soft else None,
        **({"soft_labels": soft.size_record()} if soft else {}),
        "code_version": public.get("code_version"),
        "environment": public.get("environment"),
        # An imported set says where its images came from; our own builds' records stay as they were.
        **({"provenance": public["provenance"]} if public.get("provenance") else {}),
    }


def write_release_folder(build_dir: str | Path, repo_id: str, version: str, staging: str | Path,
                         existing_manifest: dict | None = None, existing_card: str | None = None,
                         remote_files: set[str] | None = None, versions: list[str] | None = None,
                         template: str | Path | None = None, max_shard_bytes: int = MAX_SHARD_BYTES,
                         contents: BuildContents | None = None, records: list[dict] | None = None) -> dict:
    """Write the repo layout for one build into ``staging``; returns the new top-level manifest.

    ``existing_manifest``/``existing_card``/``remote_files`` describe the repo as it is (for merging
    other IPCs); without them the staged folder describes a repo holding this IPC alone.
    """
    check_release_name(repo_id, version)
    contents = contents or read_build(build_dir)
    staging = Path(staging)
    prefix = layout.ipc_prefix(contents.ipc)
    out = staging / layout.ipc_dir(contents.ipc)
    if out.exists():
        shutil.rmtree(out)
    shards = [p.relative_to(staging).as_posix() for p in write_parquet(contents, staging, max_shard_bytes)]
    atomic_write_bytes(out / layout.GRID, make_grid([layout.ImageEntry(*row) for row in contents.rows],
                                                   contents.classes, int(contents.preset.get("channels", 3)),
                                                   int(contents.preset["image_size"])))
    public = public_manifest(contents.manifest)
    atomic_write_json(out / MANIFEST, public)
    soft = copy_soft_labels(contents, staging / layout.repo_soft_labels(contents.ipc))
    for name, path in _teacher_files(contents).items():
        (staging / layout.TEACHERS).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, staging / layout.repo_teacher(name))

    existing = existing_manifest or {}
    if existing.get("classes") and list(existing["classes"]) != contents.classes:
        raise PublishError(f"{repo_id} holds a set with other classes ({existing.get('dataset')}); "
                           "publish each source dataset to its own repo")
    ipcs = {k: v for k, v in (existing.get("ipcs") or {}).items() if k != str(contents.ipc)}
    ipcs[str(contents.ipc)] = _ipc_record(public, len(contents.rows), version, shards, soft)
    manifest = release_manifest(repo=repo_id, dataset=contents.dataset,
                                display_name=contents.preset.get("display_name") or contents.dataset, version=version,
                                classes=contents.classes, ipcs=dict(sorted(ipcs.items(), key=lambda kv: int(kv[0]))),
                                files={}, sizes={})  # the card is rendered before the files are known
    all_versions = sorted(set(versions or []) | {version}, key=parse_version)
    card = render_card(manifest, repo_id, version, contents.ipc, all_versions, existing_card, template, records)
    atomic_write_bytes(staging / README, card.encode())

    staged = {p.relative_to(staging).as_posix(): p for p in sorted(staging.rglob("*")) if p.is_file()}
    staged.pop(MANIFEST, None)  # the top-level manifest cannot hold its own hash
    files, sizes = {}, {}
    remote = remote_files if remote_files is not None else set((existing.get("files") or {}))
    for rel, sha in (existing.get("files") or {}).items():  # other IPCs and teachers already on the Hub
        if rel in remote and not rel.startswith(prefix) and rel not in staged:
            files[rel], sizes[rel] = sha, existing["sizes"][rel]
    files.update({rel: sha256_file(path) for rel, path in staged.items()})
    sizes.update({rel: path.stat().st_size for rel, path in staged.items()})
    manifest["files"], manifest["sizes"] = dict(sorted(files.items())), dict(sorted(sizes.items()))
    atomic_write_json(staging / MANIFEST, check_written(manifest, staging / MANIFEST, REPO_MANIFEST_FILE))
    return manifest


def copy_soft_labels(contents: BuildContents, out: Path) -> SoftLabelStore | None:
    """Copy the build's soft-label store to ``out``: exactly the files its manifest records (read from
    regular files of the build, checked again against their sha256 once copied), after the library has
    opened it as a user would. Returns the store; None for a build without soft labels."""
    recorded = {rel: sha for rel, sha in contents.manifest.get("files", {}).items()
                if rel.startswith(layout.SOFT_LABELS + "/")}
    if not recorded:
        return None
    soft_dir = contents.root / layout.SOFT_LABELS
    try:
        store = SoftLabelStore.open(soft_dir)
    except SoftLabelStoreError as error:
        raise PublishError(f"{error}; finish the relabel stage (`fadrm-build relabel ...`), then push") from None
    if store.num_samples != len(contents.rows):
        raise PublishError(f"{soft_dir} holds soft labels for {store.num_samples} samples, the set has "
                           f"{len(contents.rows)}; run the relabel stage again")
    for rel, sha in sorted(recorded.items()):
        source, target = own_file(contents.root, rel), out / rel.removeprefix(layout.SOFT_LABELS + "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if source is not None:
            shutil.copyfile(source, target, follow_symlinks=False)
        if source is None or sha256_file(target) != sha:
            raise PublishError(f"{contents.root / rel} changed while it was staged; run the build command again, "
                               "then push")
    return store


def read_records(path: str | Path) -> list[dict]:
    """Accuracy records (a JSON list of objects), refused in one line when they are anything else."""
    try:
        records = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise PublishError(f"cannot read the records {path}: {' '.join(str(error).split())}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise PublishError(f"{path} is not a JSON list of records (benchmarks/results/accuracy.json's format)")
    return records


def check_release_name(repo_id: str, version: str) -> None:
    """The repo id and the version, refused as the library refuses them, before anything else is done."""
    try:
        check_repo_id(repo_id)
        check_version(version)
    except (ValueError, HubError) as error:
        raise PublishError(str(error)) from None


# --- pushing ---------------------------------------------------------------------------------------

def _download_file(api, repo_id: str, filename: str, revision: str) -> Path:
    return Path(api.hf_hub_download(repo_id, filename, repo_type=REPO_TYPE, revision=revision))


@contextlib.contextmanager
def _hub_errors(repo_id: str) -> Iterator[None]:
    """The Hub's refusals and an unreachable Hub, as one line each."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status in (401, 403):
            raise PublishError(f"the Hub refused the token ({status}) for {repo_id}: log in with `hf auth login` "
                               "or set HF_TOKEN to a token that can write there") from None
        raise PublishError(f"the Hub refused the push to {repo_id}: {error}".splitlines()[0]) from None
    except Exception as error:
        if not is_transport_error(error):
            raise
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BuildFailed(f"cannot reach the Hub ({first}); check the connection or HF_ENDPOINT, then push "
                          "again") from None


@dataclass
class RemoteRepo:
    """The repo as a push finds it (empty when it does not exist yet)."""

    tags: dict[str, str] = field(default_factory=dict)
    head: str | None = None  # main's commit when read: the push lands on top of it, or not at all
    files: set[str] = field(default_factory=set)
    manifest: dict | None = None
    card: str | None = None


def _tags(api, repo_id: str) -> dict[str, str]:
    return {t.name: t.target_commit for t in api.list_repo_refs(repo_id, repo_type=REPO_TYPE).tags}


def _main_head(refs) -> str | None:
    return next((branch.target_commit for branch in refs.branches if branch.name == "main"), None)


def _remote_state(api, repo_id: str) -> RemoteRepo:
    """The repo's tags, and its files, manifest and card at main's head, read at one commit."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        refs = api.list_repo_refs(repo_id, repo_type=REPO_TYPE)
    except RepositoryNotFoundError:
        return RemoteRepo()
    head = _main_head(refs)
    files = set(api.list_repo_files(repo_id, repo_type=REPO_TYPE, revision=head))
    manifest = None
    if MANIFEST in files:
        try:
            manifest = read_manifest(_download_file(api, repo_id, MANIFEST, head).parent,
                                     lambda paths: file_sizes(repo_id, "main", head, paths, api.token))
        except NewerFormatError as error:
            raise PublishError(str(error)) from None
        except LayoutError as error:
            raise PublishError(f"{repo_id}'s {MANIFEST} on the Hub cannot be merged with ({error}); publish to a new "
                               f"repo, or delete that {MANIFEST} on the Hub and push each of its IPCs again") from None
    card = _download_file(api, repo_id, README, head).read_text() if README in files else None
    return RemoteRepo({t.name: t.target_commit for t in refs.tags}, head, files, manifest, card)


def validate_card(card: str) -> None:
    """Check the card's YAML with the Hub's validator (POST /api/validate-yaml)."""
    from huggingface_hub import DatasetCard

    try:
        DatasetCard(card).validate(repo_type=REPO_TYPE)
    except ValueError as error:
        raise PublishError(f"the Hub rejects the dataset card's YAML: {error}") from None




def push(build_dir: str | Path, repo_id: str, version: str, force: bool = False, private: bool = False,
         token: str | None = None, staging_dir: str | Path | None = None,
         template: str | Path | None = None, max_shard_bytes: int = MAX_SHARD_BYTES,
         records: list[dict] | None = None) -> PushResult:
    """Stage ``build_dir`` and push it to ``repo_id`` as ``version`` (one commit, then a tag). ``records``
    (``benchmarks/accuracy.py``'s) put the measured accuracy of the set and its baselines on the card.

    The commit lands on main only if main has not moved since the repo was read, so of two pushes at
    once the second is refused whole; a ``--force`` push deletes the old tag and creates the new one in
    the next request, and a rerun after a kill between the two creates the missing tag."""
    from huggingface_hub import HfApi

    check_release_name(repo_id, version)
    contents = read_build(build_dir)  # fail on an unfinished build before touching the Hub
    api = HfApi(token=token)
    with _hub_errors(repo_id):
        remote = _remote_state(api, repo_id)
    if version in remote.tags and not force:
        raise PublishError(f"{repo_id} already has version {version} (commit {remote.tags[version][:10]}); releases "
                           "are immutable: publish a new version, or pass --force to move the tag")
    own_staging = staging_dir is None
    staging = Path(tempfile.mkdtemp(prefix="fadrm-push-")) if own_staging else Path(staging_dir)
    try:
        if not own_staging and staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True, exist_ok=True)
        # Everything is staged and checked before the first write to the Hub (a local failure, such as a
        # full disk, is reported as itself, not as the Hub's).
        manifest = write_release_folder(build_dir, repo_id, version, staging, remote.manifest, remote.card,
                                        remote.files, [t for t in remote.tags if parse_version(t)], template,
                                        max_shard_bytes, contents, records)
        validate_card((staging / README).read_text())
        written = tuple(sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()))
        commit = _commit(api, repo_id, version, contents.ipc, staging, private, remote)
    finally:
        if own_staging:
            shutil.rmtree(staging, ignore_errors=True)
    moved = version in remote.tags
    _tag(api, repo_id, version, commit, moved, f"{manifest['dataset']} ipc{contents.ipc} {version}")
    log.info("pushed %s ipc%d as %s (commit %s)", repo_id, contents.ipc, version, commit[:10])
    return PushResult(repo_id, version, contents.ipc, commit, written, moved)


def _lost_race(repo_id: str, version: str, what: str) -> PublishError:
    return PublishError(f"another push to {repo_id} won: {what}; nothing of this push is published as {version}. "
                        f"If that push was this set, nothing is left to do; else push again (it merges with what "
                        "landed)")


def _commit(api, repo_id: str, version: str, ipc: int, staging: Path, private: bool, remote: RemoteRepo) -> str:
    """Upload the staged folder as one commit on top of main as the push found it; refused whole if
    another push landed meanwhile."""
    from huggingface_hub.errors import HfHubHTTPError

    with _hub_errors(repo_id):
        api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
        head = remote.head
        if head is None:  # there was no repo: it must still hold nothing but its first commit
            head = _main_head(api.list_repo_refs(repo_id, repo_type=REPO_TYPE))
            if set(api.list_repo_files(repo_id, repo_type=REPO_TYPE, revision=head)) - {".gitattributes"}:
                raise _lost_race(repo_id, version, "it created the repo and published to it while this one was staged")
        if _tags(api, repo_id).get(version) != remote.tags.get(version):
            raise _lost_race(repo_id, version, f"it published {version} while this one was staged")
        try:
            return api.upload_folder(repo_id=repo_id, repo_type=REPO_TYPE, folder_path=staging,
                                     commit_message=f"Publish ipc{ipc} as {version}", parent_commit=head,
                                     delete_patterns=[layout.ipc_prefix(ipc) + "*"]).oid
        except HfHubHTTPError as error:
            if getattr(error.response, "status_code", None) != 412:
                raise
            raise _lost_race(repo_id, version, "its commit landed on main while this one was staged") from None


def _tag(api, repo_id: str, version: str, commit: str, moved: bool, message: str) -> None:
    """Point ``version`` at ``commit``; a moved tag is deleted and created again in the next request.
    When another push created the tag first, main is restored to the tree that push tagged."""
    from huggingface_hub.errors import HfHubHTTPError

    with _hub_errors(repo_id):
        if moved:
            api.delete_tag(repo_id, tag=version, repo_type=REPO_TYPE)
        try:
            api.create_tag(repo_id, tag=version, revision=commit, repo_type=REPO_TYPE, tag_message=message)
            return
        except HfHubHTTPError as error:
            if getattr(error.response, "status_code", None) != 409:
                raise
        winner = _tags(api, repo_id)[version]
        _restore(api, repo_id, commit, winner, f"Undo a push of {version} that another push of it won")
    raise _lost_race(repo_id, version, f"it tagged {version} at commit {winner[:10]} first; main holds that "
                     "release's files again")


def _restore(api, repo_id: str, commit: str, source: str, message: str) -> None:
    """One commit on top of ``commit`` that makes main's files those of ``source`` again."""
    from huggingface_hub import CommitOperationCopy, CommitOperationDelete

    def tree(revision: str) -> dict[str, str]:
        return {f.path: f.blob_id for f in api.list_repo_tree(repo_id, revision=revision, recursive=True,
                                                              repo_type=REPO_TYPE) if hasattr(f, "blob_id")}

    ours, theirs = tree(commit), tree(source)
    operations = [CommitOperationDelete(path) for path in ours if path not in theirs]
    operations += [CommitOperationCopy(path, path, src_revision=source) for path, blob in theirs.items()
                   if ours.get(path) != blob]
    if operations:
        api.create_commit(repo_id, operations, commit_message=message, repo_type=REPO_TYPE, parent_commit=commit)


__all__ = ["LOCAL_OPTIONS", "PublishError", "PushResult", "arrow_schema", "features_json", "public_manifest", "push",
           "read_build", "read_records", "validate_card", "write_parquet", "write_release_folder"]
