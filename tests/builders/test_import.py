"""``fadrm-build import``: each source form through the CLI, the class-order check, and an imported set
relabelled, evaluated, carded, pushed and loaded as our own builds are."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from fadrm_datasets import layout
from tests.fakedata import (fadrm_release_path, make_fashion_mnist, push_images_to_hub, real_images,
                            write_class_folders, zip_folder)
from tests.helpers import run_cli, run_cli_ok

IPC = 4
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    # Enough images for the 4-epoch teacher to tell the fake classes apart well (the order check needs it).
    return make_fashion_mnist(tmp_path_factory.mktemp("data"), per_class=100, test_per_class=10)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root) -> Path:
    root = tmp_path_factory.mktemp("build")
    run_cli_ok(["teacher", "fashion-mnist", "--data-root", str(data_root), "--build-root", str(root)])
    return root


@pytest.fixture(scope="module")
def images(data_root) -> dict[int, list[np.ndarray]]:
    return real_images(data_root, IPC)


def import_args(source, root: Path, data_root: Path, name: str, *extra: str) -> list[str]:
    return ["import", str(source), "--dataset", "fashion-mnist", "--ipc", str(IPC), "--name", name,
            "--build-root", str(root), "--data-root", str(data_root), "--device", "cpu", *extra]


def manifest_of(build: Path) -> dict:
    return json.loads((build / layout.MANIFEST).read_text())


def build_pixels(build: Path) -> dict[tuple[int, int], np.ndarray]:
    return {(e.label, e.ipc_id): layout.decode_png(e.path, 1)[0].numpy() for e in layout.scan_images(build / layout.IMAGES)}


def refused(args: list[str], capsys) -> str:
    code, err = run_cli(args, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()  # a Hub source's download may draw progress bars first
    assert "Traceback" not in err and lines[-1].startswith("fadrm-build: error:"), err
    assert len([line for line in lines if "error" in line]) == 1, err
    return lines[-1]


def test_a_folder_named_by_index_becomes_a_build_with_its_provenance(trained, data_root, images, tmp_path):
    source = write_class_folders(tmp_path / "ours", images, path=lambda label, i: f"{label}/img{i}.png")
    run_cli_ok(import_args(source, trained, data_root, "by-index", "--license", "cc-by-4.0"))
    build = layout.build_dir(trained, "fashion-mnist", IPC, "by-index")
    pixels = build_pixels(build)
    assert sorted(pixels) == [(label, i) for label in range(10) for i in range(IPC)]
    assert all(np.array_equal(pixels[(label, i)], images[label][i]) for label, i in pixels)
    manifest = manifest_of(build)
    assert manifest["method"] == "imported" and manifest["dataset"] == "fashion-mnist" and manifest["ipc"] == IPC
    provenance = manifest["provenance"]
    files = sorted(source.rglob("*.png"), key=lambda p: p.relative_to(source).as_posix().encode())
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(source).as_posix()}\n" for p in files]
    assert provenance["sha256"] == hashlib.sha256("".join(lines).encode()).hexdigest()
    assert (provenance["source"], provenance["kind"], provenance["revision"]) == ("ours", "folder", None)
    assert (provenance["license"], provenance["class_map"], provenance["resize"]) == ("cc-by-4.0", {}, None)
    assert provenance["order_check"]["top1_given"] == provenance["order_check"]["top1_best"] > 50
    assert set(manifest["files"]) == {layout.image_relpath(label, i) for label, i in pixels}
    assert manifest["teachers"]["convnet-bn"]["source"] == "trained"
    assert sorted(p.name for p in build.parent.iterdir()) == [layout.build_dir_name(IPC, "by-index"), layout.TEACHERS]


def test_fadrm_and_cv_dd_release_layout(trained, data_root, images, tmp_path):
    """new<cls>/class<cls>_id<ipc>.png; the ipc id is the file's number, not its place in a listing."""
    reversed_ids = lambda label, i: fadrm_release_path(label, IPC - 1 - i)  # noqa: E731 (written last id first)
    source = write_class_folders(tmp_path / "fadrm", images, path=reversed_ids)
    run_cli_ok(import_args(source, trained, data_root, "fadrm-release"))
    pixels = build_pixels(layout.build_dir(trained, "fashion-mnist", IPC, "fadrm-release"))
    assert all(np.array_equal(pixels[(label, IPC - 1 - i)], images[label][i]) for label in range(10) for i in range(IPC))


def test_sre2l_release_zip(trained, data_root, images, tmp_path):
    """SRe2L's zips: one top folder of new<cls>/class<cls>_id<ipc>.jpg, read without extracting."""
    folder = write_class_folders(tmp_path / "sre2l", images, path=lambda label, i: fadrm_release_path(label, i, ".jpg"),
                                 image_format="JPEG")
    archive = zip_folder(folder, tmp_path / "sre2l_fmnist_ipc4.zip", top="sre2l_fmnist_ipc4")
    run_cli_ok(import_args(archive, trained, data_root, "sre2l-release"))
    provenance = manifest_of(layout.build_dir(trained, "fashion-mnist", IPC, "sre2l-release"))["provenance"]
    assert (provenance["source"], provenance["kind"]) == ("sre2l_fmnist_ipc4.zip", "zip")
    assert provenance["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sre2l", "sre2l_fmnist_ipc4.zip"]  # nothing extracted


def test_class_folders_named_by_class_name(trained, data_root, images, tmp_path):
    source = write_class_folders(tmp_path / "named", images,
                                 path=lambda label, i: f"{CLASSES[label].replace('/', '_')}/{i}.png")
    run_cli_ok(import_args(source, trained, data_root, "by-name"))
    pixels = build_pixels(layout.build_dir(trained, "fashion-mnist", IPC, "by-name"))
    assert all(np.array_equal(pixels[(label, 0)], images[label][0]) for label in range(10))


def test_wordnet_ids_name_the_classes_of_a_set_that_declares_them():
    from builders.importer import ClassNames, ImportRefused
    from builders.presets import get_preset

    names = ClassNames(get_preset("imagenette"), data_root="unused")
    assert [names.label(w) for w in ("n01440764", "n02102040", "n03888257")] == [0, 1, 9]
    assert names.label("new007") == names.label("7") == names.label("00007") == 7
    with pytest.raises(ImportRefused, match="'n09999999' is no class of imagenette"):
        names.label("n09999999")


def test_a_hub_dataset_with_rethinkdcs_columns(trained, data_root, images, hub):
    from huggingface_hub import HfApi

    source = push_images_to_hub(hub.repo_id("rethinkdc-fmnist"), images)
    run_cli_ok(import_args(source, trained, data_root, "from-hub"))
    build = layout.build_dir(trained, "fashion-mnist", IPC, "from-hub")
    provenance = manifest_of(build)["provenance"]
    assert (provenance["source"], provenance["kind"]) == (source, "hub")
    assert provenance["revision"] == HfApi().dataset_info(source[3:]).sha
    pixels = build_pixels(build)
    assert all(np.array_equal(pixels[(label, i)], images[label][i]) for label in range(10) for i in range(IPC))


def test_a_hub_dataset_with_other_columns_is_named_with_options(trained, data_root, images, hub, capsys):
    source = push_images_to_hub(hub.repo_id("other-columns"), images, image_column="png", label_column="target")
    assert "has no image column image" in refused(import_args(source, trained, data_root, "other-cols"), capsys)
    run_cli_ok(import_args(source, trained, data_root, "other-cols", "--image-column", "png", "--label-column", "target"))


# --- the class order ----------------------------------------------------------------------------------

def test_two_swapped_classes_are_found_and_the_map_fixes_them(trained, data_root, images, tmp_path, capsys):
    swap = {2: 5, 5: 2}
    source = write_class_folders(tmp_path / "swapped", {swap.get(label, label): arrays for label, arrays in images.items()},
                                 path=lambda label, i: f"{label}/{i}.png")
    line = refused(import_args(source, trained, data_root, "swapped"), capsys)
    assert "the class order does not fit" in line and line.endswith("--class-map 2=5,5=2")
    assert not layout.build_dir(trained, "fashion-mnist", IPC, "swapped").exists()
    run_cli_ok(import_args(source, trained, data_root, "swapped", "--class-map", "2=5,5=2"))
    build = layout.build_dir(trained, "fashion-mnist", IPC, "swapped")
    assert manifest_of(build)["provenance"]["class_map"] == {"2": 5, "5": 2}
    assert np.array_equal(build_pixels(build)[(2, 0)], images[2][0])


def test_a_full_derangement_is_found(trained, data_root, images, tmp_path, capsys):
    source = write_class_folders(tmp_path / "shifted", {(label + 1) % 10: arrays for label, arrays in images.items()},
                                 path=lambda label, i: f"{label}/{i}.png")
    line = refused(import_args(source, trained, data_root, "shifted"), capsys)
    wanted = ",".join(f"{(label + 1) % 10}={label}" for label in sorted(range(10), key=lambda c: (c + 1) % 10))
    assert line.endswith(f"--class-map {wanted}")


def test_a_wrong_map_given_is_corrected_in_the_map_offered(trained, data_root, images, tmp_path, capsys):
    source = write_class_folders(tmp_path / "plain", images, path=lambda label, i: f"{label}/{i}.png")
    line = refused(import_args(source, trained, data_root, "wrong-map", "--class-map", "0=1,1=0"), capsys)
    assert "under the relabelling 0=1,1=0" in line and line.endswith("run the import again without --class-map")


def test_noise_is_refused_as_near_chance_with_no_map_offered(trained, data_root, tmp_path, capsys):
    rng = np.random.default_rng(1)
    noise = {label: [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(IPC)] for label in range(10)}
    source = write_class_folders(tmp_path / "noise", noise, path=lambda label, i: f"{label}/{i}.png")
    line = refused(import_args(source, trained, data_root, "noise"), capsys)
    assert "near chance" in line and "nothing was imported" in line and "--class-map" not in line


def test_an_imported_set_is_relabelled_evaluated_carded_pushed_and_loaded(trained, data_root, images, tmp_path, hub):
    import datasets
    from huggingface_hub import hf_hub_download

    from fadrm_datasets import FADRMDataset

    source = write_class_folders(tmp_path / "release", images)
    run_cli_ok(import_args(source, trained, data_root, "pipeline", "--license", "cc-by-4.0"))
    build = layout.build_dir(trained, "fashion-mnist", IPC, "pipeline")
    run_cli_ok(["relabel", "fashion-mnist", "--ipc", str(IPC), "--epochs", "2", "--build-dir", str(build),
                "--build-root", str(trained), "--data-root", str(data_root), "--device", "cpu"])
    run_cli_ok(["evaluate", str(build), "--epochs", "1", "--device", "cpu"])
    manifest = manifest_of(build)
    assert manifest["stages"]["relabel"]["complete"] and manifest["evaluations"][0]["epochs"] == 1
    repo = hub.repo_id("imported")
    run_cli_ok(["push", str(build), "--repo", repo, "--version", "v1.0.0"])
    card = Path(hf_hub_download(repo, layout.README, repo_type="dataset", revision="v1.0.0")).read_text()
    assert "**Imported images** (`pipeline`)" in card and "read from `release`" in card
    assert "as the importer stated it: **cc-by-4.0**" in card
    loaded = FADRMDataset(tmp_path / "root", repo_id=repo, ipc=IPC, version="v1.0.0", download=True)
    assert np.array_equal(np.asarray(loaded[IPC * 3][0]), images[3][0]) and loaded[IPC * 3][1] == 3
    rows = datasets.load_dataset(repo, layout.ipc_dir(IPC), revision="v1.0.0", split="train")
    assert len(rows) == 10 * IPC and rows[IPC * 3]["label"] == 3


def test_a_card_says_an_unstated_license_is_unknown():
    from builders.card import imported_text

    text = imported_text({"name": "x", "source": "hf:someone/set", "revision": "abc", "sha256": "0" * 64,
                          "sha256_of": "the zip file", "license": None, "class_map": {"1": 2, "2": 1}})
    assert "its license is **unknown**" in text and "hf:someone/set` at revision `abc`" in text
    assert "(source class=label): 1=2, 2=1" in text


@pytest.mark.parametrize("method", ["random-real", "rded"])
def test_our_build_exported_with_shuffled_class_names_imports_to_the_same_set(method, trained, data_root, tmp_path,
                                                                              capsys):
    """Item 6 of issue 23: the order check finds the permutation, the pixels are the same, and so are the
    soft labels and the evaluation at the same seed and thread count."""
    import re

    native = tmp_path / "native"
    run_cli_ok(["fashion-mnist", "--ipc", "10", "--method", method, "--epochs", "2", "--evaluate", "--build-dir",
                str(native), "--build-root", str(trained), "--data-root", str(data_root), "--device", "cpu"])
    shuffled = np.random.default_rng(3).permutation(10)
    export = tmp_path / "export"
    for entry in layout.scan_images(native / layout.IMAGES):  # class folders by (the wrong) name, files by ipc id
        target = export / CLASSES[shuffled[entry.label]].replace("/", "_") / f"{entry.ipc_id}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(entry.path.read_bytes())
    args = ["import", str(export), "--dataset", "fashion-mnist", "--ipc", "10", "--name", f"{method}-export",
            "--build-root", str(trained), "--data-root", str(data_root), "--device", "cpu"]
    class_map = re.search(r"--class-map (\S+)$", refused(args, capsys)).group(1)
    assert class_map == ",".join(f"{shuffled[label]}={label}" for label in np.argsort(shuffled) if shuffled[label] != label)
    run_cli_ok([*args, "--class-map", class_map])
    imported = layout.build_dir(trained, "fashion-mnist", 10, f"{method}-export")
    assert {k: v.tobytes() for k, v in build_pixels(imported).items()} == \
        {k: v.tobytes() for k, v in build_pixels(native).items()}
    run_cli_ok(["relabel", "fashion-mnist", "--ipc", "10", "--epochs", "2", "--build-dir", str(imported),
                "--build-root", str(trained), "--data-root", str(data_root), "--device", "cpu"])
    run_cli_ok(["evaluate", str(imported), "--epochs", "2", "--device", "cpu"])
    shards = {p.name: p.read_bytes() for p in (native / layout.SOFT_LABELS).iterdir()}
    assert shards == {p.name: p.read_bytes() for p in (imported / layout.SOFT_LABELS).iterdir()}
    same = ("top1_final", "top1_best", "top5", "checks", "epochs", "seed", "teachers")
    ours, theirs = manifest_of(native)["evaluations"][-1], manifest_of(imported)["evaluations"][-1]
    assert {k: ours[k] for k in same} == {k: theirs[k] for k in same}


def test_an_imported_set_gets_dd_rankings_scores_beside_our_random_real(trained, data_root, images, tmp_path):
    """benchmarks/accuracy.py --imported: one set whatever the student's seed, recorded under its name, and
    scored against the random-real records as our methods are."""
    from benchmarks import accuracy
    from builders.card import score_rows
    from builders.scores import label_robust_score

    run_cli_ok(import_args(write_class_folders(tmp_path / "release", images), trained, data_root, "scored"))
    output = tmp_path / "accuracy.json"
    common = ["--ipc", str(IPC), "--seeds", "0,1", "--epochs", "1", "--build-root", str(trained),
              "--data-root", str(data_root), "--device", "cpu", "--output", str(output)]
    accuracy.main([*common, "--methods", "random-real", "--imported", "scored"])
    accuracy.main([*common, "--imported", "scored", "--labels", "hard", "--evaluate-only"])

    soft, hard = [r for r in json.loads(output.read_text()) if r["method"] == "scored"]
    assert soft["imported"] and soft["seeds"] == [0, 1] and hard["labels"] == "hard"
    build = layout.build_dir(trained, "fashion-mnist", IPC, "scored")
    assert [e["seed"] for e in manifest_of(build)["evaluations"]] == [0, 1, 0, 1]
    assert not list(build.parent.glob(f"{build.name}-seed*"))  # no per-seed copies of an imported set
    records = json.loads(output.read_text())
    random = next(r for r in records if r["method"] == "random-real")
    expected = label_robust_score(soft["top1_final_mean"], random["top1_final_mean"], hard["top1_final_mean"],
                                  float(soft["teachers"]["convnet-bn"]["test_top1"]))
    (row,) = score_rows(records, "fashion-mnist", IPC)
    assert row[0] == "scored" and row[-3:] == [expected["ior"], expected["hlr"], expected["lrs"]]


def test_the_accuracy_benchmark_refuses_a_missing_imported_set_before_running_anything(tmp_path, capsys):
    from benchmarks import accuracy

    root = tmp_path / "build"

    with pytest.raises(SystemExit):
        accuracy.main(["--ipc", str(IPC), "--imported", "never-imported", "--methods", "random-real",
                       "--build-root", str(root), "--output", str(tmp_path / "accuracy.json")])
    err = capsys.readouterr().err
    assert "no imported set never-imported" in err and "fadrm-build import SOURCE" in err
    assert not (tmp_path / "accuracy.json").exists()
    assert not root.exists()  # nothing was built
