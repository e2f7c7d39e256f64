"""``fadrm-build``: build distilled datasets with FADRM.

``fadrm-build DATASET --ipc N`` runs every stage; ``fadrm-build STAGE DATASET ...`` reruns one.
"""

from __future__ import annotations

import errno
import functools
import logging
import sys

import click

from fadrm_datasets.softlabels import TARGETS

from .continual import CONTINUAL_MODES
from .importer import RESIZE_FILTERS
from .methods import DIFFICULTIES, INITS, METHODS
from .presets import PRESETS, UnknownDatasetError, get_preset
from .protocols import DEFAULT_PROTOCOL, PROTOCOLS
from .relabel import TEACHER_MODES
from .sources import EVAL_SPLITS

STAGES_HELP = """Build distilled image datasets with FADRM.

\b
Run the whole pipeline for a dataset:
  fadrm-build fashion-mnist --ipc 10
  fadrm-build imagenet --ipc 50 --data-root /data/imagenet --device cuda
Or one stage at a time (each reads what the previous one wrote):
  fadrm-build teacher fashion-mnist
  fadrm-build patches fashion-mnist --ipc 10
  fadrm-build recover fashion-mnist --ipc 10
  fadrm-build relabel fashion-mnist --ipc 10
  fadrm-build evaluate build/fashion-mnist/ipc10
  fadrm-build push build/fashion-mnist/ipc10 --repo ORG/fadrm-fashion-mnist --version v1.0.0
Or import someone else's images as a build (then relabel, evaluate and push it):
  fadrm-build import sre2l_in1k_rn18_4k_ipc50.zip --dataset imagenet --ipc 50 --name sre2l-release

Datasets: """ + ", ".join(sorted(PRESETS))


class DatasetGroup(click.Group):
    """A group whose unknown first word is a dataset name: ``fadrm-build X`` = ``build X``."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["build", *args]
        return super().resolve_command(ctx, args)


def _dataset(ctx, param, value):
    try:
        return get_preset(value)
    except UnknownDatasetError as error:
        raise click.BadParameter(str(error)) from None


protocol_option = click.option(
    "--protocol", type=click.Choice(list(PROTOCOLS)), default=DEFAULT_PROTOCOL, show_default=True,
    help="How the student is trained: ours, FADRM's released validate scripts, or DD-Ranking's soft-label "
         "evaluation (builders/protocols.py). A protocol whose labels are not the build's relabels into its own "
         "hidden store in the build.")


def _positive(ctx, param, value):
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be a positive integer, got {value}")
    return value


def _per_stage(ctx, param, value):
    """``N,N,...``: one positive integer per recover stage."""
    if value is None:
        return None
    try:
        counts = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("give one number per stage, e.g. 100,100,100,100") from None
    if any(c <= 0 for c in counts):
        raise click.BadParameter("every stage's number must be positive")
    return counts


def _scale(ctx, param, value):
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("give two numbers, e.g. 0.5,1.0") from None
    if not 0 < low <= high <= 1:
        raise click.BadParameter("need 0 < MIN <= MAX <= 1")
    return low, high


# CLI option -> preset field, for the options that override the preset.
PRESET_OVERRIDES = {"iterations": "stage_iterations", "resolutions": "stage_resolutions", "lr": "lr",
                    "alpha": "alpha", "r_bn": "r_bn", "patch_scale": "patch_crop_scale",
                    "label_cycle": "soft_label_cycle", "label_dtype": "soft_label_dtype", "topk": "soft_label_topk"}


def apply_overrides(preset, kwargs: dict, **more):
    """The preset with the overriding options (popped from ``kwargs``) and ``more`` applied (None keeps)."""
    changes = {field: kwargs.pop(option) for option, field in PRESET_OVERRIDES.items() if option in kwargs}
    changes = {field: value for field, value in {**changes, **more}.items() if value is not None}
    factor = kwargs.pop("factor", None)
    method = kwargs.get("method", "fadrm")
    if factor is not None and not METHODS[method].stitching:
        stitching = ", ".join(name for name, m in METHODS.items() if m.stitching)
        raise click.UsageError(f"--factor is a setting of the stitching methods ({stitching}), not of {method}")
    if factor is not None:  # every stitching method's, in the preset's per-method settings
        changes["methods"] = {**preset.methods, **{name: {**preset.methods.get(name, {}), "factor": factor}
                                                   for name, method in METHODS.items() if method.stitching}}
    return preset.replace(**changes) if changes else preset


def dataset_argument(f):
    return click.argument("dataset", metavar="DATASET", callback=_dataset)(f)


def common_options(f):
    """Options every stage understands."""
    options = [
        click.option("--build-root", default="build", show_default=True, type=click.Path(file_okay=False),
                     help="Where build directories go: BUILD_ROOT/<dataset>/ipc<N>."),
        click.option("--build-dir", default=None, type=click.Path(file_okay=False),
                     help="Use exactly this build directory instead."),
        click.option("--data-root", default="data", show_default=True,
                     help="Where the original dataset lives (ImageNet: an ImageFolder tree or hf:<dataset id>)."),
        click.option("--download/--no-download", default=False, show_default=True,
                     help="Download the original dataset when it is missing."),
        click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, or auto."),
        click.option("--seed", default=0, show_default=True, type=int, help="Run seed; every unit derives its own."),
        click.option("--method", type=click.Choice(list(METHODS)), default="fadrm", show_default=True,
                     help="; ".join(f"{m.name}: {m.help}" for m in METHODS.values()) + "."),
        click.option("--teacher", default=None, help="Override the preset's FADRM teacher architecture."),
        click.option("--teacher-weights", default=None, type=click.Path(dir_okay=False),
                     help="Teacher weights file (.safetensors, or a .pth state dict) instead of the cache/download."),
        click.option("-v", "--verbose", is_flag=True, help="Debug logging."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def recover_options(f):
    options = [
        click.option("--ipc", required=True, type=int, callback=_positive, help="Images per class."),
        click.option("--arc/--no-arc", default=None, help="ARC: merge the real patches back in between stages."),
        click.option("--mro/--no-mro", default=None, help="MRO: follow the preset's per-stage resolutions."),
        click.option("--amp/--no-amp", default=None,
                     help="fp16 mixed precision for recover; on the CPU many times slower, for testing its path. "
                     "[default: on with CUDA, off on the CPU]"),
        click.option("--init", type=click.Choice(INITS), default=None,
                     help="Start from real patches (FADRM) or Gaussian noise (SRe2L). [default: the method's]"),
        click.option("--difficulty", type=click.Choice(DIFFICULTIES), default=None,
                     help="Which real patches seed the images: by teacher cross-entropy, or random. "
                     "[default: the method's, medium; random-real: random]"),
        click.option("--iterations", default=None, callback=_per_stage, metavar="N,N,...",
                     help="Iterations per stage (overrides the preset)."),
        click.option("--resolutions", default=None, callback=_per_stage, metavar="R,R,...",
                     help="Resolution per stage (overrides the preset; as many as --iterations)."),
        click.option("--lr", type=float, default=None, help="Recover learning rate (overrides the preset)."),
        click.option("--alpha", type=float, default=None, help="ARC weight of the optimised image (overrides the preset)."),
        click.option("--r-bn", type=float, default=None, help="BN-statistics loss weight (overrides the preset)."),
        click.option("--patch-scale", default=None, callback=_scale, metavar="MIN,MAX",
                     help="Area range of the real crops that become patches; 1,1 = whole images."),
        click.option("--factor", type=click.IntRange(1, 8), default=None,
                     help="Stitching methods (rded): crops per side of an image (overrides the dataset's)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def label_options(f):
    """How small the soft labels are (builders/relabel.py): each overrides the preset's choice."""
    from fadrm_datasets.softlabels import LOGIT_DTYPES

    options = [
        click.option("--label-cycle", type=int, default=None, callback=_positive, metavar="N",
                     help="Store only the first N relabel epochs; the student reuses them in turn over all its "
                          "epochs (N at least the epochs stores every one). [default: the preset's]"),
        click.option("--label-dtype", type=click.Choice(LOGIT_DTYPES), default=None,
                     help="The kept logits' type: float16, or int8 with a per-row scale. [default: the preset's]"),
        click.option("--topk", type=int, default=None, callback=_positive, metavar="K",
                     help="Keep each label's K largest logits and the mean of the rest. [default: the preset's]"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def say(text: str) -> None:
    """A result line, printed once (by rank 0 under torchrun)."""
    from .distributed import is_main

    if is_main():
        click.echo(text)


class Refused(click.ClickException):
    """Bad input (an argument, or a file the command reads): one line, exit status 2, as for usage errors."""

    exit_code = 2


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _os_error(error: OSError) -> str:
    where = f" ({error.filename})" if error.filename else ""
    if error.errno == errno.ENOSPC:
        return (f"no space left on the device{where}: free some space, then run the same command: finished "
                "units and shards are kept and checked, nothing half-written is used")
    return f"{error.strerror or _one_line(error)}{where}"


def handle_errors(f):
    """Expected failures print one line, never a traceback: exit status 2 for bad input (arguments,
    files read), 1 when the work itself failed or the system refused (a full disk, a held directory)."""

    @functools.wraps(f)
    def wrapper(*args, verbose=False, **kwargs):
        logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
        from fadrm_datasets.hub import HubError
        from fadrm_datasets.layout import BuildLockedError

        from .models import UnknownModelError
        from .options import BuildError, BuildFailed
        from .sources import DataNotFoundError
        from .teachers import TeacherError

        try:
            return f(*args, **kwargs)
        except (BuildFailed, BuildLockedError) as error:
            if verbose:
                raise
            raise click.ClickException(_one_line(error)) from None
        except (BuildError, DataNotFoundError, TeacherError, UnknownModelError, HubError, ValueError) as error:
            if verbose:
                raise
            raise Refused(_one_line(error)) from None
        except OSError as error:
            if verbose:
                raise
            raise click.ClickException(_os_error(error)) from None
        except KeyboardInterrupt:
            click.echo("interrupted: finished units are kept; run the same command to resume", err=True)
            sys.exit(130)

    return wrapper


def make_options(preset, ipc, method, arc=None, mro=None, amp=None, init=None, difficulty=None, **common):
    """BuildOptions from CLI values (the options object fills in what the method means)."""
    from .options import BuildOptions

    return BuildOptions(
        dataset=preset.name, ipc=ipc, method=method, arc=arc, mro=mro, amp=amp, init=init, difficulty=difficulty,
        seed=common["seed"], build_root=common["build_root"], build_dir=common["build_dir"],
        data_root=common["data_root"], download=common["download"], device=common["device"],
        teacher=common["teacher"], teacher_weights=common["teacher_weights"],
    )


@click.group(cls=DatasetGroup, help=STAGES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fadrm-datasets")
def cli():
    pass


@cli.command("build", help="Run every stage for DATASET: teacher (if missing) -> patches -> recover "
             "-> relabel -> evaluate (where the preset evaluates by default).")
@dataset_argument
@recover_options
@click.option("--evaluate/--no-evaluate", default=None,
              help="Train and test a student on the set after relabel. [default: the preset's choice]")
@click.option("--epochs", type=int, default=None, callback=_positive,
              help="Soft-label epochs and student epochs (overrides the preset's relabel/eval epochs).")
@label_options
@protocol_option
@common_options
@handle_errors
def build_command(dataset, evaluate=None, epochs=None, protocol=DEFAULT_PROTOCOL, **kwargs):
    from fadrm_datasets.layout import BuildDirectory

    from .build import run_build

    preset = apply_overrides(dataset, kwargs, relabel_epochs=epochs, eval_epochs=epochs)
    options = make_options(preset, **kwargs).replace(evaluate=evaluate)
    evaluated_before = len(BuildDirectory(options.directory).read_manifest().get("evaluations", []))
    build = run_build(preset, options, protocol)
    say(f"built {options.ipc * preset.num_classes} images in {build.root}")
    manifest = build.read_manifest()
    if len(manifest.get("evaluations", [])) > evaluated_before:  # an older evaluation is not this build's
        from .evaluate import teacher_accuracy

        last, teacher = manifest["evaluations"][-1], teacher_accuracy(manifest)
        say(f"{last['split']} top-1 of the set: {last['top1_final']:.2f} % at the last epoch ({last['student']}, "
            f"{last['epochs']} epochs; best checkpoint {last['top1_best']:.2f} %, chosen on that split)"
            + (f", teacher {teacher} %" if teacher else ""))


@cli.command("teacher", help="Train (or fetch) DATASET's teachers and cache them as safetensors.")
@dataset_argument
@click.option("--retrain", is_flag=True, help="Train again even when a cached teacher exists.")
@click.option("--ipc", type=click.IntRange(min=1), default=1, show_default=True,
              help="The teachers of sets with this many images per class (a preset may train those of "
                   "larger sets longer).")
@common_options
@handle_errors
def teacher_command(dataset, retrain, ipc, **kwargs):
    import torch

    from .teachers import resolve_teachers

    from .distributed import is_main

    if not is_main():  # under torchrun: one process trains and caches; the build's ranks share the cache
        return
    options = make_options(dataset, ipc=ipc, **kwargs)
    teachers = resolve_teachers(dataset, options, torch.device(options.device), retrain=retrain)
    for teacher in teachers.teachers:
        accuracy = teacher.record.get("test_top1")
        where = teacher.weights or teacher.record["source"]
        say(f"{teacher.name}: {where}" + (f" (test top-1 {accuracy} %)" if accuracy else ""))


@cli.command("patches", help="Select the real patches that seed each synthetic image.")
@dataset_argument
@recover_options
@common_options
@handle_errors
def patches_command(dataset, **kwargs):
    from . import distributed
    from .context import open_build
    from .patches import stage_patches

    preset = apply_overrides(dataset, kwargs)
    with open_build(preset, make_options(preset, **kwargs)) as ctx:
        distributed.main_only(ctx.directory.patches.unlink, missing_ok=True)  # an explicit rerun reselects
        patches = stage_patches(ctx)
    say(f"selected {patches.images.shape[0]} x {patches.ipc} patches -> {ctx.directory.root}")


@cli.command("recover", help="Synthesise the images (resumes: finished units are kept).")
@dataset_argument
@recover_options
@common_options
@handle_errors
def recover_command(dataset, **kwargs):
    from .context import open_build
    from .recover import stage_recover

    preset = apply_overrides(dataset, kwargs)
    with open_build(preset, make_options(preset, **kwargs)) as ctx:
        record = stage_recover(ctx)
    say(f"recover {'complete' if record['complete'] else 'partial'}: {ctx.directory.images}")


@cli.command("relabel", help="Record soft labels for DATASET's set: per-epoch crops, flips, CutMix and the "
             "teachers' outputs, as safetensors shards (resumes: finished shards are kept).")
@dataset_argument
@click.option("--ipc", required=True, type=int, callback=_positive, help="Images per class.")
@click.option("--epochs", type=int, default=None, callback=_positive,
              help="Soft-label epochs (overrides the preset's relabel_epochs).")
@click.option("--teacher-mode", type=click.Choice(TEACHER_MODES), default="train", show_default=True,
              help="train: BatchNorm uses batch statistics (FKD); eval: running statistics.")
@click.option("--epochs-per-shard", type=int, default=None, callback=_positive,
              help="Epochs per shard file. [default: up to 100, about 1 GiB a file at most]")
@label_options
@common_options
@handle_errors
def relabel_command(dataset, ipc, epochs, teacher_mode, epochs_per_shard, **kwargs):
    from .context import open_build
    from .relabel import stage_relabel

    preset = apply_overrides(dataset, kwargs)
    with open_build(preset, make_options(preset, ipc=ipc, **kwargs)) as ctx:
        record = stage_relabel(ctx, epochs=epochs, teacher_mode=teacher_mode, epochs_per_shard=epochs_per_shard)
    say(f"relabel {'complete' if record['complete'] else 'partial'}: {record['epochs']} epochs "
        f"({record['stored_epochs']} stored, {record['logit_dtype']}) in {record['shards']} shards "
        f"({record['bytes']:,} bytes) -> {ctx.directory.soft_labels}")


@cli.command("evaluate", help="Train a student on the built set in BUILD_DIR with its soft labels, and test it "
             "on the real test split; the result is appended to the manifest.")
@click.argument("build_dir", metavar="BUILD_DIR", type=click.Path(exists=True, file_okay=False))
@click.option("--student", default=None,
              help="Student architecture: convnet-bn[-w<width>][-d<depth>], resnet18-cifar, a torchvision "
                   "model name, or shufflenet_v2/mobilenet/mnasnet/efficientnet/regnet names with -cifar for "
                   "their small-image stem (shufflenet_v2_x0_5-cifar). "
                   "[default: the preset's]")
@click.option("--epochs", type=int, default=None, callback=_positive,
              help="Student epochs (at most the stored soft-label epochs). [default: the preset's]")
@click.option("--lr", type=float, default=None, help="Student learning rate (AdamW). [default: the preset's]")
@click.option("--data-root", default=None, help="Where the original dataset lives. [default: the build's]")
@click.option("--download/--no-download", default=False, show_default=True,
              help="Download the original test split when it is missing.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, or auto.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the student's initialisation.")
@click.option("--num-workers", default=0, show_default=True, type=int, help="DataLoader workers for the replay.")
@click.option("--labels", "targets", type=click.Choice(TARGETS), default="soft", show_default=True,
              help="soft: the stored teacher logits (KD); hard: the same batches with CutMix-mixed one-hot labels.")
@click.option("--split", type=click.Choice(EVAL_SPLITS), default="test", show_default=True,
              help="Real images to test on: the test split, or the validation images held out of the "
              "training split (for choosing settings).")
@protocol_option
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@handle_errors
def evaluate_command(build_dir, student, epochs, lr, data_root, download, device, seed, num_workers, targets, split,
                     protocol):
    from fadrm_datasets.layout import BuildDirectory

    from .build import protocol_labels
    from .context import hold
    from .distributed import local_device
    from .evaluate import evaluate_build, teacher_accuracy
    from .options import resolve_device

    device = local_device(resolve_device(device))
    with hold(BuildDirectory(build_dir), device):
        labels = protocol_labels(build_dir, protocol, epochs, device)
        record = evaluate_build(build_dir, student=student, epochs=epochs, data_root=data_root, download=download,
                                device=device, seed=seed, num_workers=num_workers, split=split, targets=targets,
                                lr=lr, protocol=protocol, labels=labels)
    teacher = teacher_accuracy(BuildDirectory(build_dir).read_manifest())
    say(f"{record['student']}, {record['epochs']} epochs, protocol {protocol}: {split} top-1 {record['top1_final']:.2f} % at the last "
        f"epoch, top-5 {record['top5']:.2f} % (best checkpoint {record['top1_best']:.2f} %, chosen on {split})"
        + (f"; teacher {teacher} %" if teacher else ""))


@cli.command("push", help="Publish the set in BUILD_DIR to the Hugging Face Hub as config ipc<N> of dataset repo "
             "REPO, and tag the commit with VERSION. Stages parquet shards, soft labels, teachers, manifests and "
             "the dataset card (from cards/), then uploads them in one commit.")
@click.argument("build_dir", metavar="BUILD_DIR", type=click.Path(exists=True, file_okay=False))
@click.option("--repo", "repo_id", required=True, metavar="ORG/NAME", help="The dataset repo on the Hub.")
@click.option("--version", "version", required=True, metavar="vX.Y.Z", help="The release tag to create.")
@click.option("--force", is_flag=True, help="Move the tag when VERSION already exists (otherwise refused).")
@click.option("--private", is_flag=True, help="Create the repo private (when it does not exist yet).")
@click.option("--staging-dir", default=None, type=click.Path(file_okay=False),
              help="Stage the repo layout here and keep it (default: a temporary folder).")
@click.option("--results", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Accuracy records (benchmarks/results/accuracy.json) to put on the card: the set and its "
              "baselines, the last epoch's top-1 over seeds, the commands.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@handle_errors
def push_command(build_dir, repo_id, version, force, private, staging_dir, results):
    from .distributed import is_main
    from .publish import push, read_records

    if not is_main():  # under torchrun: one push, from rank 0
        return
    records = read_records(results) if results else None
    result = push(build_dir, repo_id, version, force=force, private=private, staging_dir=staging_dir, records=records)
    say(f"pushed ipc{result.ipc} to {result.repo_id} as {result.version} (commit {result.commit[:10]}"
               + (", tag moved" if result.moved_tag else "") + ")")


IMPORT_HELP = """Make a build directory BUILD_ROOT/<dataset>/ipc<N>-<NAME> from someone else's distilled images, so
that relabel, evaluate, the scores, the card and push treat it as any build.

\b
SOURCE is a folder of class folders (named by index, new<index>, class name or WordNet id: FADRM's,
CV-DD's and SRe2L's release layouts among them), a .zip of one, or hf:<dataset id> (an image column
and a label column, label or class_id). Pickled files are refused: convert them to images first.

\b
Before anything is written the teacher of the dataset checks the class order: near chance, or a
relabelling of the classes that fits clearly better, stops the import with the --class-map to pass.
Then, e.g.:
  fadrm-build relabel DATASET --ipc N --build-dir BUILD_ROOT/DATASET/ipcN-NAME
  fadrm-build evaluate BUILD_ROOT/DATASET/ipcN-NAME"""


@cli.command("import", help=IMPORT_HELP)
@click.argument("source", metavar="SOURCE")
@click.option("--dataset", "preset", required=True, callback=_dataset, help="The dataset the images are of.")
@click.option("--ipc", required=True, type=int, callback=_positive, help="Images per class the source holds.")
@click.option("--name", required=True, help="Names the imported set: its build directory is ipc<N>-<NAME> "
              "(not a method's name).")
@click.option("--class-map", default=None, metavar="A=B,...",
              help="Images the source gives as class A (its index, or the index its folder's name resolves to) "
              "are of class B; classes not named keep theirs.")
@click.option("--license", "license_", default=None, help="The source's license, as you know it (the card says "
              "unknown without it).")
@click.option("--split", default="train", show_default=True, help="hf: sources: the split to read.")
@click.option("--image-column", default=None, help="hf: sources: the image column. [default: image]")
@click.option("--label-column", default=None, help="hf: sources: the label column. [default: label, or class_id]")
@click.option("--resize", default=None, type=click.Choice(RESIZE_FILTERS),
              help="Resize images of another size with this PIL filter (recorded). [default: refuse them]")
@click.option("--build-root", default="build", show_default=True, type=click.Path(file_okay=False),
              help="Where build directories go: BUILD_ROOT/<dataset>/ipc<N>-<NAME>.")
@click.option("--data-root", default="data", show_default=True,
              help="Where the original dataset lives (to train a missing teacher; evaluate tests on it).")
@click.option("--download/--no-download", default=False, show_default=True,
              help="Download the original dataset when a missing teacher needs it.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, or auto.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of a teacher trained for the check.")
@click.option("--teacher", default=None, help="Override the preset's teacher architecture.")
@click.option("--teacher-weights", default=None, type=click.Path(dir_okay=False),
              help="Teacher weights file (.safetensors, or a .pth state dict) instead of the cache/download.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@handle_errors
def import_command(source, preset, ipc, name, class_map, license_, split, image_column, label_column, resize,
                   build_root, data_root, download, device, seed, teacher, teacher_weights):
    from fadrm_datasets.layout import build_dir

    from .importer import ImportRequest, run_import
    from .options import BuildOptions

    request = ImportRequest(source=source, ipc=ipc, name=name, class_map=class_map, license=license_, split=split,
                            image_column=image_column, label_column=label_column, resize=resize)
    request.check()  # before the name is used for a directory
    options = BuildOptions(dataset=preset.name, ipc=ipc, seed=seed, build_root=build_root, data_root=data_root,
                           download=download, device=device, teacher=teacher, teacher_weights=teacher_weights,
                           build_dir=str(build_dir(build_root, preset.name, ipc, name)))
    build, check = run_import(preset, options, request)
    say(f"imported {ipc * preset.num_classes} images into {build.root} (class order checked: the teacher "
        f"{check.teacher} puts {check.top1_given:.1f} % in their class); next: fadrm-build relabel {preset.name} "
        f"--ipc {ipc} --build-dir {build.root}")


def _int_list(ctx, param, value):
    """``N,N,...``: integers (class-order seeds)."""
    try:
        numbers = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"give integers separated by commas, e.g. 0,1,2,3,4; got {value!r}") from None
    if len(set(numbers)) != len(numbers):
        raise click.BadParameter(f"{value!r} names an order twice")
    return numbers


def _names(choices):
    def parse(ctx, param, value):
        if value is None:
            return None
        names = tuple(v.strip() for v in value.split(",") if v.strip())
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise click.BadParameter(f"{', '.join(unknown) or 'nothing'} given; choose among {', '.join(choices)}")
        return tuple(dict.fromkeys(names))
    return parse


CONTINUAL_HELP = """Class-incremental learning on built sets: at each step a student learns the classes seen so far
from the set's images, labelled live by the set's teacher restricted to those classes, and is tested on
the real test images of those classes (the final epoch's top-1).

\b
Give build directories, or a dataset, IPC and methods to find them under --build-root:
  fadrm-build continual build/fashion-mnist/ipc10 build/fashion-mnist/ipc10-random-real
  fadrm-build continual --dataset fashion-mnist --ipc 10 --methods fadrm,sre2l,random-real --steps 5

\b
Modes: fresh (the peers' protocol: a new student per step, trained from scratch) and carried (one
student through the steps, its head grown per step, distilled from the previous step's model).
Writes the records (per-step accuracy per order, mean and std over orders) into --output, prints
a table, and plots accuracy against the number of classes seen (--plot)."""


@cli.command("continual", help=CONTINUAL_HELP)
@click.argument("build_dirs", nargs=-1, metavar="[BUILD_DIR]...", type=click.Path(file_okay=False))
@click.option("--dataset", default=None, help="With --ipc and --methods: find the builds under --build-root.")
@click.option("--ipc", type=int, default=None, callback=_positive, help="Images per class of the builds to find.")
@click.option("--methods", default=None, callback=_names(tuple(METHODS)), metavar="M,M,...",
              help=f"Methods of the builds to find ({', '.join(METHODS)}).")
@click.option("--build-root", default="build", show_default=True, type=click.Path(file_okay=False),
              help="Where the builds to find live: BUILD_ROOT/<dataset>/ipc<N>[-<method>].")
@click.option("--steps", default=5, show_default=True, type=int, callback=_positive,
              help="Steps; they split the classes equally.")
@click.option("--orders", default="0,1,2,3,4", show_default=True, callback=_int_list, metavar="S,S,...",
              help="Class orders, by seed: numpy.random.RandomState(S).permutation(classes), as the peers draw them.")
@click.option("--modes", default="fresh", show_default=True, callback=_names(CONTINUAL_MODES),
              metavar="fresh,carried", help="fresh: a new student per step (the peers'); carried: one student.")
@click.option("--epochs", default=150, show_default=True, type=int, callback=_positive,
              help="Training epochs per step, over the step's images.")
@click.option("--split", type=click.Choice(EVAL_SPLITS), default="test", show_default=True,
              help="Real images to test on: the test split, or the validation images held out of the training "
              "split (for choosing settings).")
@click.option("--teacher-mode", type=click.Choice(TEACHER_MODES), default="train", show_default=True,
              help="train: the teacher's BatchNorm uses each batch's statistics (as the set's relabel; chosen on "
              "the validation split); eval: its running statistics.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the students' initialisations and "
              "batches (the same for every method).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, or auto.")
@click.option("--data-root", default=None, help="Where the original dataset lives. [default: the builds']")
@click.option("--output", default="continual.json", show_default=True, type=click.Path(dir_okay=False),
              help="JSON list of records; records of the same dataset, IPC, steps, method, mode, split and "
              "teacher mode are replaced, others kept.")
@click.option("--plot", "plot_path", default=None, type=click.Path(dir_okay=False),
              help="The PNG plot. [default: --output with .png]")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@handle_errors
def continual_command(build_dirs, dataset, ipc, methods, build_root, steps, orders, modes, epochs, split,
                      teacher_mode, seed, device, data_root, output, plot_path):
    from pathlib import Path

    from .continual import ContinualSettings, format_table, plot, read_records, run_continual, save_records
    from .options import BuildOptions, resolve_device

    finding = {"--dataset": dataset, "--ipc": ipc, "--methods": methods}
    if build_dirs and any(v is not None for v in finding.values()):
        raise click.UsageError("give build directories, or --dataset, --ipc and --methods, not both")
    if not build_dirs:
        missing = [name for name, value in finding.items() if value is None]
        if missing:
            raise click.UsageError(f"give build directories, or {', '.join(missing)} to find them under --build-root")
        preset = get_preset(dataset)
        build_dirs = [BuildOptions(dataset=preset.name, ipc=ipc, method=m, build_root=build_root, device="cpu")
                      .directory for m in methods]
    read_records(output)  # a file that cannot take the records is refused before the run, not after
    settings = ContinualSettings(steps=steps, orders=orders, modes=modes, epochs=epochs, split=split,
                                 teacher_mode=teacher_mode, seed=seed)
    try:
        records = run_continual(list(build_dirs), settings, resolve_device(device), data_root=data_root)
    except KeyboardInterrupt:
        click.echo("interrupted: records are written when the whole run ends; nothing of this run was saved",
                   err=True)
        sys.exit(130)
    save_records(records, output)
    click.echo(format_table(records))
    picture = plot(records, plot_path or Path(output).with_suffix(".png"))
    click.echo(f"records -> {output}; plot -> {picture}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage errors print one line (``fadrm-build: error: ...``), not a usage dump."""
    try:
        result = cli.main(args=argv, prog_name="fadrm-build", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as error:
        hint = "" if not isinstance(error, click.UsageError) else " (see fadrm-build --help)"
        click.echo(f"fadrm-build: error: {error.format_message()}{hint}", err=True)
        sys.exit(error.exit_code)
    sys.exit(result if isinstance(result, int) else 0)  # --help and --version return 0


__all__ = ["cli", "main"]


if __name__ == "__main__":
    main()
