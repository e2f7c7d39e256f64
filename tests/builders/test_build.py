"""The whole build on fake Fashion-MNIST files: CLI, manifest, resume after a kill."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from fadrm_datasets import layout
from builders.cli import main
from builders.methods import METHODS
from tests.fakedata import make_fashion_mnist
from tests.helpers import run_cli_ok

FAST = ["--iterations", "3,3,3,3", "--device", "cpu", "--epochs", "1", "--no-evaluate"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_fashion_mnist(tmp_path_factory.mktemp("data"), per_class=30, test_per_class=5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """A build root whose Fashion-MNIST teacher is already trained (shared by the tests)."""
    root = tmp_path_factory.mktemp("build")
    run_cli_ok(["teacher", "fashion-mnist", "--data-root", str(data_root), "--build-root", str(root)])
    return root


def cli_error(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code != 0
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


def pngs(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*.png"))}


def test_teacher_is_cached_with_its_accuracy(trained):
    from builders.teachers import read_teacher_metadata

    path = layout.teachers_dir(trained, "fashion-mnist") / layout.teacher_file("convnet-bn")
    meta = read_teacher_metadata(path)
    assert meta["arch"] == "convnet-bn" and meta["dataset"] == "fashion-mnist"
    assert 0.0 <= float(meta["test_top1"]) <= 100.0
    assert json.loads(meta["recipe"])["epochs"] == int(meta["epochs"])


def test_a_teacher_trained_twice_is_the_same_bytes(data_root, tmp_path):
    """No wall-clock time in the file, so soft labels and records naming a teacher by its hash repeat too
    (both trained here, at one thread count: the bits depend on it, RELIABILITY.md)."""
    for root in ("first", "second"):
        run_cli_ok(["teacher", "fashion-mnist", "--data-root", str(data_root), "--build-root", str(tmp_path / root)])
    first, second = (layout.teachers_dir(tmp_path / root, "fashion-mnist") / layout.teacher_file("convnet-bn")
                     for root in ("first", "second"))
    from builders.teachers import read_teacher_metadata

    assert first.read_bytes() == second.read_bytes()
    assert "seconds" not in read_teacher_metadata(first)  # a fast training could round two times alike


def test_teacher_cached_from_another_recipe_is_refused(trained, data_root, tmp_path, capsys):
    """A preset whose teacher recipe changed must not keep using the old cached teacher unannounced."""
    from safetensors.torch import load_file

    from builders.teachers import read_teacher_metadata, save_teacher

    cached = layout.teachers_dir(trained, "fashion-mnist") / layout.teacher_file("convnet-bn")
    state, meta = load_file(cached), read_teacher_metadata(cached)
    stale_root = tmp_path / "build"
    stale = layout.teachers_dir(stale_root, "fashion-mnist") / layout.teacher_file("convnet-bn")
    recipe = json.loads(meta["recipe"])
    save_teacher(stale, _Weights(state), {**meta, "recipe": json.dumps({**recipe, "epochs": recipe["epochs"] + 1})})
    args = ["fashion-mnist", "--ipc", "1", "--data-root", str(data_root), "--build-root", str(stale_root), *FAST]
    err = cli_error(args, capsys)
    assert "another recipe" in err and "fadrm-build teacher fashion-mnist --ipc 1 --retrain" in err
    assert not (layout.build_dir(stale_root, "fashion-mnist", 1) / layout.IMAGES).exists()
    # Teachers cached before recipes were recorded are judged by their epochs alone.
    legacy = {k: v for k, v in meta.items() if k != "recipe"}
    save_teacher(stale, _Weights(state), {**legacy, "epochs": recipe["epochs"] + 1})
    assert "another recipe" in cli_error(args, capsys)
    save_teacher(stale, _Weights(state), legacy)
    run_cli_ok(args)  # the same epochs: the cache is used, nothing is retrained
    assert read_teacher_metadata(stale) == legacy


def test_images_made_with_other_teacher_weights_are_not_resumed(trained, data_root, tmp_path, capsys):
    from safetensors.torch import load_file

    from builders.teachers import read_teacher_metadata, save_teacher

    cached = layout.teachers_dir(trained, "fashion-mnist") / layout.teacher_file("convnet-bn")
    state, meta = load_file(cached), read_teacher_metadata(cached)
    root = tmp_path / "build"
    teacher = layout.teachers_dir(root, "fashion-mnist") / layout.teacher_file("convnet-bn")
    save_teacher(teacher, _Weights(state), meta)
    args = ["fashion-mnist", "--ipc", "1", "--data-root", str(data_root), "--build-root", str(root), *FAST]
    run_cli_ok(args)
    images = pngs(layout.build_dir(root, "fashion-mnist", 1) / layout.IMAGES)
    save_teacher(teacher, _Weights({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}), meta)
    assert "patches.safetensors was selected with other teacher weights" in cli_error(args, capsys)
    recover = ["recover", "fashion-mnist", "--ipc", "1", "--data-root", str(data_root), "--build-root", str(root),
               "--iterations", "3,3,3,3", "--device", "cpu"]  # the stage alone checks the images too
    assert "images made with other teacher weights" in cli_error(recover, capsys)
    assert pngs(layout.build_dir(root, "fashion-mnist", 1) / layout.IMAGES) == images  # nothing built is lost


def test_larger_sets_get_their_own_longer_trained_teacher(data_root, tmp_path, monkeypatch):
    """``epochs_from_ipc``: a set of 3+ images per class trains and uses a 2-epoch teacher cached beside
    the 1-epoch one, which smaller sets keep using."""
    import dataclasses

    from builders import presets
    from builders.teachers import read_teacher_metadata

    base = presets.get_preset("fashion-mnist")
    recipe = dataclasses.replace(base.teacher_recipe, epochs=1, epochs_from_ipc=((3, 2),))
    monkeypatch.setitem(presets.PRESETS, "fashion-mnist", base.replace(teacher_recipe=recipe))
    root = tmp_path / "build"
    common = ["--data-root", str(data_root), "--build-root", str(root)]
    run_cli_ok(["teacher", "fashion-mnist", *common])
    teachers = layout.teachers_dir(root, "fashion-mnist")
    assert sorted(p.name for p in teachers.glob("[!.]*")) == ["convnet-bn.safetensors"]
    run_cli_ok(["fashion-mnist", "--ipc", "3", *common, *FAST])
    assert sorted(p.name for p in teachers.glob("[!.]*")) == ["convnet-bn-2ep.safetensors", "convnet-bn.safetensors"]
    assert read_teacher_metadata(teachers / "convnet-bn.safetensors")["epochs"] == "1"
    longer = read_teacher_metadata(teachers / "convnet-bn-2ep.safetensors")
    assert longer["epochs"] == "2" and json.loads(longer["recipe"])["epochs_from_ipc"] == []
    manifest = json.loads((layout.build_dir(root, "fashion-mnist", 3) / layout.MANIFEST).read_text())
    assert manifest["teachers"]["convnet-bn"]["file"] == "convnet-bn-2ep.safetensors"
    assert manifest["stages"]["relabel"]["complete"]
    run_cli_ok(["fashion-mnist", "--ipc", "2", *common, *FAST])
    manifest = json.loads((layout.build_dir(root, "fashion-mnist", 2) / layout.MANIFEST).read_text())
    assert manifest["teachers"]["convnet-bn"]["file"] == "convnet-bn.safetensors"


def test_teacher_recipe_epochs_by_ipc():
    from builders.presets import TeacherRecipe

    recipe = TeacherRecipe("adam", 1e-3, 0.0, epochs=4, batch_size=8, epochs_from_ipc=((20, 6), (50, 8)))
    assert [recipe.epochs_for(ipc) for ipc in (1, 19, 20, 49, 50, 100)] == [4, 4, 6, 6, 8, 8]
    assert recipe.for_ipc(50) == TeacherRecipe("adam", 1e-3, 0.0, epochs=8, batch_size=8)
    with pytest.raises(ValueError, match="ascend"):
        TeacherRecipe("adam", 1e-3, 0.0, epochs=4, batch_size=8, epochs_from_ipc=((50, 8), (20, 6)))


class _Weights:
    """Just enough of a module for ``save_teacher``: a fixed state dict."""

    def __init__(self, state):
        self._state = state

    def state_dict(self):
        return self._state


def test_build_writes_images_and_a_manifest(trained, data_root, caplog):
    with caplog.at_level(logging.INFO, logger="builders"):
        run_cli_ok(["fashion-mnist", "--ipc", "2", "--data-root", str(data_root), "--build-root", str(trained), *FAST])
    # Later stages check the teacher's weights again, but the cached teacher is announced once.
    assert sum("cached at" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO) == 1
    build = layout.build_dir(trained, "fashion-mnist", 2)
    images = pngs(build / layout.IMAGES)
    assert len(images) == 20
    assert set(images) == {layout.image_name(c, i) for c in range(10) for i in range(2)}
    manifest = json.loads((build / layout.MANIFEST).read_text())
    assert manifest["dataset"] == "fashion-mnist" and manifest["ipc"] == 2
    assert manifest["preset"]["stage_iterations"] == [3, 3, 3, 3]
    assert manifest["options"]["arc"] is True and manifest["options"]["seed"] == 0
    assert manifest["stages"]["recover"]["complete"] is True
    assert {"teacher", "patches", "recover"} <= set(manifest["timings"])
    assert manifest["code_version"]["package"]
    import hashlib

    for name, digest in manifest["files"].items():
        assert hashlib.sha256((build / name).read_bytes()).hexdigest() == digest
    assert layout.image_relpath(0, 0) in manifest["files"] and layout.PATCHES in manifest["files"]


def test_amp_asked_for_on_the_cpu_runs_with_a_warning(trained, data_root, tmp_path, caplog):
    """Off by default on the CPU; asked for, AMP runs there (to test its path), says it is slow, and each unit
    records its loss scale and the steps its scaler skipped."""
    with caplog.at_level(logging.INFO, logger="builders"):
        run_cli_ok(["fashion-mnist", "--ipc", "1", "--amp", "--data-root", str(data_root), "--build-root", str(trained),
                 "--build-dir", str(tmp_path / "amp"), *FAST])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("AMP on the CPU is many times slower" in w for w in warnings) == 1
    manifest = json.loads((tmp_path / "amp" / layout.MANIFEST).read_text())
    assert manifest["options"]["amp"] is True and manifest["stages"]["recover"]["settings"]["config"]["amp"] is True
    (unit,) = manifest["stages"]["recover"]["units"].values()
    assert (unit["loss_scale"], unit["skipped_steps"]) == (2.0 ** 16, 0)
    assert any("loss scale 65536, 0 step(s) skipped" in r.getMessage() for r in caplog.records)
    assert len(pngs(tmp_path / "amp" / layout.IMAGES)) == 10


def test_other_settings_in_the_same_directory_are_refused(trained, data_root, capsys):
    args = ["fashion-mnist", "--ipc", "1", "--data-root", str(data_root), "--build-root", str(trained)]
    run_cli_ok([*args, *FAST])
    err = cli_error([*args, "--iterations", "4,4,4,4", "--device", "cpu"], capsys)
    assert "other recover settings" in err


def test_sre2l_and_random_real_methods(trained, data_root):
    common = ["--ipc", "1", "--data-root", str(data_root), "--build-root", str(trained), *FAST]
    run_cli_ok(["fashion-mnist", "--method", "sre2l", *common])
    manifest = json.loads((layout.build_dir(trained, "fashion-mnist", 1, "sre2l") / layout.MANIFEST).read_text())
    assert manifest["options"]["init"] == "gaussian" and manifest["options"]["arc"] is False
    assert manifest["stages"]["recover"]["settings"]["config"]["stages"] == [[28, 12]]
    run_cli_ok(["fashion-mnist", "--method", "random-real", *common])
    assert len(pngs(layout.build_dir(trained, "fashion-mnist", 1, "random-real") / layout.IMAGES)) == 10


@pytest.mark.parametrize("args, message", [
    (["fashion-mnist", "--ipc", "1", "--factor", "2"], "--factor is a setting of the stitching methods (rded), not of fadrm"),
    (["mnist", "--ipc", "10"], "unknown dataset 'mnist'"),
    (["fashion-mnist", "--ipc", "0"], "must be a positive integer"),
    (["fashion-mnist", "--ipc", "-3"], "must be a positive integer"),
    (["cifar100", "--ipc", "1", "--data-root", "{missing}"], "pass --download"),
    (["tiny-imagenet", "--ipc", "1", "--data-root", "{missing}"], "tiny-imagenet-200.zip"),
    (["imagenette", "--ipc", "1", "--data-root", "{missing}"], "imagenette2-320.tgz and an ImageNet ImageFolder"),
    (["imagewoof", "--ipc", "1", "--data-root", "{missing}"], "imagewoof2-320.tgz and an ImageNet ImageFolder"),
    (["imagenet", "--ipc", "1", "--data-root", "{missing}", "--teacher-weights", "{weights}"], "ImageFolder"),
    (["fashion-mnist", "--ipc", "1", "--teacher", "resnet99"], "unknown model 'resnet99'"),
    (["fashion-mnist", "--ipc", "1", "--iterations", "5,5"], "4 stage resolutions but 2 iteration counts"),
    (["fashion-mnist", "--ipc", "1", "--teacher-weights",
      "{missing}/w.safetensors"], "does not exist"),  # not a set's name: a user's weights file
])
def test_bad_input_gets_one_clear_line(args, message, tmp_path, capsys):
    from safetensors.torch import save_file

    from builders.models import build_model

    weights = tmp_path / "resnet18.safetensors"
    if "{weights}" in args:
        save_file(build_model("resnet18", 1000).state_dict(), str(weights))
    args = [a.format(missing=tmp_path / "nowhere", weights=weights) for a in args]
    err = cli_error([*args, "--build-root", str(tmp_path / "build"), "--device", "cpu"], capsys)
    assert message in err
    assert len(err.splitlines()) == 1 or err.splitlines()[-1].startswith("fadrm-build: error")
    assert err.splitlines()[-1].startswith("fadrm-build: error:")


@pytest.mark.parametrize("command", [[], ["build"], ["teacher"], ["patches"], ["recover"]])
def test_help_reads_well(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: fadrm-build")
    if command and command != ["teacher"]:
        assert "--ipc" in out and "--arc / --no-arc" in out and "--mro / --no-mro" in out
    if not command:
        assert "fashion-mnist" in out and "recover" in out


def test_stage_overrides_change_the_number_of_residual_merges(trained, data_root):
    run_cli_ok(["fashion-mnist", "--ipc", "1", "--data-root", str(data_root), "--build-root", str(trained),
             "--build-dir", str(trained / "two-stages"), "--iterations", "2,2", "--resolutions", "24,28",
             "--patch-scale", "1,1", "--device", "cpu", "--epochs", "1", "--no-evaluate"])
    manifest = json.loads((trained / "two-stages" / layout.MANIFEST).read_text())
    assert manifest["stages"]["recover"]["settings"]["config"]["stages"] == [[24, 2], [28, 2]]
    assert manifest["preset"]["patch_crop_scale"] == [1.0, 1.0]


def test_real_builds_round_trip_through_the_hub(trained, data_root, hub, tmp_path):
    """fadrm-build twice (two seeds) -> push v1.0.0 and v1.1.0 -> the library gets each version's pixels."""
    import numpy as np

    from fadrm_datasets import FADRMDataset

    repo = hub.repo_id("fashion-e2e")
    builds = {}
    for seed, version in ((0, "v1.0.0"), (1, "v1.1.0")):
        build_dir = tmp_path / f"seed{seed}"
        run_cli_ok(["fashion-mnist", "--ipc", "2", "--seed", str(seed), "--data-root", str(data_root),
                 "--build-root", str(trained), "--build-dir", str(build_dir), *FAST])
        run_cli_ok(["push", str(build_dir), "--repo", repo, "--version", version])
        builds[version] = build_dir
    for version, wanted in (("v1.0.0", "v1.0.0"), (None, "v1.1.0")):
        data = FADRMDataset(tmp_path / "root", repo_id=repo, ipc=2, version=version, download=True)
        assert data.version == wanted and len(data) == 20
        local = FADRMDataset.from_build(builds[wanted])
        for index in (0, 7, 19):
            assert np.array_equal(np.asarray(data[index][0]), np.asarray(local[index][0]))
            assert data[index][1] == local[index][1] == index // 2
    first, second = (FADRMDataset.from_build(builds[v]) for v in ("v1.0.0", "v1.1.0"))
    assert any(not np.array_equal(np.asarray(first[i][0]), np.asarray(second[i][0])) for i in range(20))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_python_api_builds_what_the_cli_builds(method, trained, data_root, tmp_path, monkeypatch):
    """A method's meaning lives in BuildOptions: the same switches, settings and images either way."""
    from builders import presets
    from builders.build import run_build
    from builders.options import BuildOptions
    from builders.presets import get_preset

    small_rded = {"rded": {"factor": 2, "images_per_class": 6, "crops_per_image": 2}}  # a few crops, stitched
    monkeypatch.setitem(presets.PRESETS, "fashion-mnist", get_preset("fashion-mnist").replace(methods=small_rded))

    common = dict(dataset="fashion-mnist", ipc=1, method=method, build_root=str(trained), data_root=str(data_root),
                  device="cpu")
    run_cli_ok(["fashion-mnist", "--ipc", "1", "--method", method, "--data-root", str(data_root), "--build-root",
             str(trained), "--build-dir", str(tmp_path / "cli"), *FAST])
    preset = get_preset("fashion-mnist").replace(stage_iterations=(3, 3, 3, 3), relabel_epochs=1, eval_epochs=1)
    run_build(preset, BuildOptions(**common, build_dir=str(tmp_path / "py"), evaluate=False))
    cli, py = (json.loads((tmp_path / name / layout.MANIFEST).read_text()) for name in ("cli", "py"))
    spec = METHODS[method]
    for manifest in (cli, py):
        options = manifest["options"]
        assert {k: options[k] for k in ("arc", "mro", "init", "difficulty")} == spec.switches()
        assert options["amp"] is False and options["device"] == "cpu"
    assert {k: v for k, v in cli["options"].items() if k != "build_dir"} == \
        {k: v for k, v in py["options"].items() if k != "build_dir"}
    assert cli["stages"]["recover"].get("settings") == py["stages"]["recover"].get("settings")
    assert pngs(tmp_path / "cli" / layout.IMAGES) == pngs(tmp_path / "py" / layout.IMAGES)
    if method == "sre2l":  # what the method means, recorded: Gaussian start, no ARC, one resolution
        assert py["stages"]["recover"]["settings"]["config"]["stages"] == [[28, 12]]
        assert py["stages"]["recover"]["settings"]["config"]["init"] == "gaussian"


@pytest.mark.parametrize("args, message", [
    (["--method", "fadrm+", "--teacher", "convnet-bn"], "--teacher convnet-bn names FADRM's one teacher, but fadrm+"),
    (["--method", "fadrm+", "--teacher-weights", "{weights}"], "--teacher-weights gives one weights file, but fadrm+"),
    (["--device", "tpu"], "device 'tpu' is not supported; use auto, cpu, cuda or cuda:N"),
])
def test_conflicting_choices_are_refused_before_any_work(args, message, tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    args = [a.format(weights=weights) for a in args]
    err = cli_error(["fashion-mnist", "--ipc", "1", "--build-root", str(tmp_path / "build"), *args], capsys)
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "build").exists()  # refused up front: nothing trained, nothing written


def test_options_refuse_the_same_conflicts_from_python():
    from builders.options import BuildError, BuildOptions

    with pytest.raises(BuildError, match="cycles the preset's several teachers"):
        BuildOptions(dataset="cifar100", ipc=10, method="fadrm+", teacher="resnet18-cifar")
    with pytest.raises(ValueError, match="method must be one of fadrm, fadrm\\+, sre2l, random-real, rded; got 'dc'"):
        BuildOptions(dataset="cifar100", ipc=10, method="dc")
    with pytest.raises(ValueError, match="init must be one of patches, gaussian"):
        BuildOptions(dataset="cifar100", ipc=10, init="uniform")
    options = BuildOptions(dataset="cifar100", ipc=10, method="sre2l", arc=True)  # an explicit switch wins
    assert (options.arc, options.mro, options.init, options.device) == (True, False, "gaussian", "cpu")


def test_a_build_decides_its_teachers_once(trained, data_root, tmp_path, monkeypatch):
    """One resolution and one load per teacher for the whole build, though four stages use them."""
    from builders import teachers

    resolved, loaded = [], []
    real_resolve, real_load = teachers.resolve_teachers, teachers.load_teacher

    def counting_resolve(*args, **kwargs):
        resolved.append(args[1].method)
        return real_resolve(*args, **kwargs)

    def counting_load(preset, name, *args, **kwargs):
        loaded.append(name)
        return real_load(preset, name, *args, **kwargs)

    monkeypatch.setattr("builders.context.resolve_teachers", counting_resolve)
    monkeypatch.setattr(teachers, "load_teacher", counting_load)
    run_cli_ok(["fashion-mnist", "--ipc", "1", "--method", "fadrm+", "--data-root", str(data_root), "--build-root",
             str(trained), "--build-dir", str(tmp_path / "plus"), "--iterations", "3,3,3,3", "--device", "cpu",
             "--epochs", "1", "--evaluate"])
    from builders.presets import get_preset

    FASHION_MNIST = get_preset("fashion-mnist")

    assert resolved == ["fadrm+"] and sorted(loaded) == sorted(FASHION_MNIST.teachers_plus)
