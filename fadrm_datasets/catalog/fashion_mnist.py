"""Fashion-MNIST: 10 clothing classes of 28x28 grayscale images; the one real dataset the whole
pipeline is built on end to end on a CPU."""

from ..declaration import SetInfo
from ._shared import LABEL_REUSE, PAPER_RECOVER

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

DECLARATION = SetInfo(
    name="fashion-mnist", display_name="Fashion-MNIST", class_name="FADRMFashionMNIST",
    repo_name="fadrm-fashion-mnist", num_classes=10, channels=1, image_size=28, mean=(0.2860,), std=(0.3530,),
    class_names=CLASSES, license="mit", source_datasets=("zalando-datasets/fashion_mnist",),
    # CPU-sized settings, each chosen on the held-out validation split (BENCHMARKS.md, "Choosing the
    # Fashion-MNIST settings", "Choosing the student protocol", "Choosing the teacher per set size").
    build=dict(
        source="fashion-mnist",
        # A 3-block ConvNet-BN teacher trains in minutes on 2 cores; FADRM+ cycles cheap ones of other depths.
        teacher="convnet-bn",
        teachers_plus=("convnet-bn", "convnet-bn-d2", "convnet-bn-w32-d4"),
        # Flips only: padded crops cost accuracy at this short budget. Larger sets are distilled and
        # labelled best by a longer-trained teacher; at IPC 10 the short one is as good and keeps the
        # quick start short.
        teacher_recipe=dict(optimizer="adam", lr=2e-3, weight_decay=1e-4, epochs=4, batch_size=128,
                            crop_padding=0, epochs_from_ipc=((50, 8),)),
        # The paper's recover, shortened, at a step size and BN weight that move 28-pixel images
        # (the paper's r_bn 0.01 leaves them below their own starting points); the resolution
        # alternates 24 -> 28 so MRO really resamples; one unit holds all 10 classes, the smallest
        # batch that still gives BN statistics per class.
        **{**PAPER_RECOVER, "stage_iterations": (100, 100, 100, 100), "lr": 0.05, "r_bn": 1.0,
           "crop_scale": (0.5, 1.0), "class_block": 10},
        stage_resolutions=(24, 28, 24, 28),
        jitter=2,
        # Whole images as patches: 28-pixel objects lose too much to crops.
        patch_candidates=4,
        patch_crop_scale=(1.0, 1.0),
        validation_size=5000,
        # The student was still improving at 300 epochs: 1000 (the paper's CIFAR-100 count) at lr 3e-3.
        relabel_epochs=1000,
        soft_label_reuse=LABEL_REUSE,
        relabel_crop_scale=(0.5, 1.0),
        student="convnet-bn",
        eval_epochs=1000,
        eval_lr=3e-3,
        temperature=4.0,
        evaluate_by_default=True,
        # RDED's code has no Fashion-MNIST setting: whole crops (factor 1) over 2 x 2 stitching, chosen on
        # the validation split at IPC 10 (BENCHMARKS.md, "Choosing RDED's factor for Fashion-MNIST").
        methods={"rded": {"factor": 1}},
        # Neither FADRM nor DD-Ranking has Fashion-MNIST settings. FADRM's start from its CIFAR-100 IPC 10
        # ones (the other small-image set), DD-Ranking's from its eval branch's CIFAR-10 CutMix ones
        # (D4M/CIFAR10/IPC10.yaml: 500 epochs, batches of 100); then FADRM's lr and DD-Ranking's epochs were
        # chosen on the validation split, FADRM and random-real at IPC 10 alike (BENCHMARKS.md, "Choosing the
        # paper protocols' Fashion-MNIST settings").
        protocols={
            "fadrm": dict(eval_epochs=1000, eval_batch_size=16, eval_lr=4e-3, cosine_stretch=2),
            "dd-ranking": dict(eval_epochs=1000, eval_batch_size=100),
        },
    ),
)
