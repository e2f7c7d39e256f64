"""Images per second of the soft-label replay loader against a plain loader over the same images.

The replay (``FADRMDataset.soft_label_loader``) rebuilds each recorded batch: crop + resize, flip,
CutMix, normalise, and reads the batch's soft labels from the store. The plain loader is what a user
writes without it: the same uint8 images in memory, a ``Dataset`` doing RandomResizedCrop (the same
bilinear, antialiased resize) + flip + normalise per sample, batches of the same size from the stock
DataLoader, and no soft labels. Both at 0 and 2 workers, in one run, over ``--epochs`` epochs.

    python benchmarks/loader_speed.py build/fashion-mnist/ipc10
    python benchmarks/loader_speed.py --synthetic 224 --images 200
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from benchmarks.accuracy import append_record  # noqa: E402
from fadrm_datasets.augment import resized_crop, sample_crop_box  # noqa: E402
from fadrm_datasets.softlabels import SoftLabelStore, replay_loader  # noqa: E402


class PlainCrops(Dataset):
    """The usual per-sample pipeline over decoded images: RandomResizedCrop, flip, normalise."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, scale, mean, std, seed: int = 0):
        self.images, self.labels, self.scale = images, labels, tuple(scale)
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index].float() / 255.0
        size = image.shape[-1]
        box = sample_crop_box(size, size, self.scale, self.generator)
        image = resized_crop(image, box, size)
        if torch.rand((), generator=self.generator) < 0.5:
            image = image.flip(-1)
        return (image - self.mean) / self.std, self.labels[index]


def images_per_second(batches) -> float:
    count, start = 0, time.perf_counter()
    for batch in batches:
        count += len(batch[-1])
    return count / (time.perf_counter() - start)


def synthetic_build(size: int, images: int, epochs: int, folder: Path):
    """Random images of ``size`` px and a dense store of ``epochs`` epochs from a tiny teacher."""
    from builders.presets import get_preset

    IMAGENET = get_preset("imagenet")
    from builders.relabel import RelabelConfig, write_soft_labels
    from torch import nn

    classes = 10
    preset = IMAGENET.replace(num_classes=classes, class_names=None, image_size=size,
                              stage_resolutions=(size,), stage_iterations=(1,))
    data = torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8)
    labels = torch.arange(images) % classes
    order = torch.argsort(labels, stable=True)
    data, labels = data[order], labels[order]
    teacher = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(4, classes))
    config = RelabelConfig(epochs=epochs, batch_size=16, crop_scale=(0.08, 1.0))
    write_soft_labels([teacher], ["tiny"], data, preset, folder, config, progress=False)
    return data, labels, SoftLabelStore.open(folder), preset.mean, preset.std


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("build", nargs="?", help="a build directory with soft labels")
    parser.add_argument("--synthetic", type=int, default=None, help="instead: random images of this many px")
    parser.add_argument("--images", type=int, default=200, help="images of the synthetic set")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "speed.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        if args.synthetic:
            images, labels, store, mean, std = synthetic_build(args.synthetic, args.images, args.epochs, Path(scratch))
            name = f"synthetic {args.synthetic} px"
        else:
            from fadrm_datasets.sets import FADRMDataset

            data = FADRMDataset.from_build(args.build, soft_labels=True)
            images, labels, store = data.images_uint8(), torch.tensor(data.targets), data.soft_label_store
            mean, std, name = data.mean, data.std, Path(args.build).name
        epochs = min(args.epochs, store.train_epochs)
        command = shlex.join(["python", "benchmarks/loader_speed.py", *(sys.argv[1:] if argv is None else argv)])
        for workers in (int(w) for w in args.workers.split(",")):
            kwargs = dict(num_workers=workers, persistent_workers=workers > 0)
            plain = DataLoader(PlainCrops(images, labels, store.index["crop_scale"], mean, std),
                               batch_size=store.batch_size, shuffle=True, **kwargs)
            rates = {
                "plain": images_per_second(batch for _ in range(epochs) for batch in plain),
                # A loader per epoch (the replay before it took several epochs): workers start each epoch.
                "replay, a loader per epoch": images_per_second(
                    batch for epoch in range(epochs)
                    for batch in replay_loader(images, labels, store, epoch, mean, std, num_workers=workers)),
                "replay": images_per_second(replay_loader(images, labels, store, range(epochs), mean, std, **kwargs)),
            }
            print(f"{name}, {workers} workers: " + ", ".join(f"{k} {v:.0f} img/s" for k, v in rates.items()), flush=True)
            for variant in ("replay, a loader per epoch", "replay"):
                append_record(Path(args.output), {
                    "device": f"cpu ({args.threads} thread{'s' * (args.threads > 1)})", "preset": name,
                    "model": "loader", "what": "images/s",  # not a set's name: a unit
                    "variant": f"{variant}, {workers} workers",
                    "epochs": epochs, "baseline": round(rates["plain"], 1), "ours": round(rates[variant], 1),
                    "ratio": round(rates[variant] / rates["plain"], 3), "command": command,
                    "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})


if __name__ == "__main__":
    main()
