"""Settings and terms that several declarations share."""

# FADRM's released recover settings (arXiv 2506.24125 and its public scripts), shared by the paper's
# datasets: 4 stages of 500 steps (3 residual merges), Adam(0.5, 0.9) at lr 0.25 with a cosine
# schedule, r_bn 0.01 with the first BN layer weighted 10x, alpha 0.5, 100 classes per unit.
PAPER_RECOVER = dict(
    stage_iterations=(500, 500, 500, 500),
    lr=0.25,
    adam_betas=(0.5, 0.9),
    r_bn=0.01,
    first_bn_multiplier=10.0,
    alpha=0.5,
    crop_scale=(0.08, 1.0),
    class_block=100,
)

# Soft-label size (BENCHMARKS.md, "Soft-label size"): each preset stores a twentieth of its relabel epochs
# (of --epochs, when given), which a student reuses in turn (each stored epoch 20 times), in float16. Chosen on Fashion-MNIST's validation
# split (IPC 10, FADRM and random-real, 1 seed, rule: the smallest labels that stay within 0.5 points of full
# labels for both methods, as do all larger ones measured): a twentieth stayed within, a fiftieth and int8 at a
# twentieth did not. The other presets are not measured here: they keep the reuse count (20), not the count of
# stored epochs, as LPLD kept ImageNet-1K's accuracy reusing a fortieth of its labels.
LABEL_REUSE = 20


# ImageNet's terms of access (non-commercial research and education only) bind images derived from it.
IMAGENET_TERMS = dict(license="other", license_name="imagenet", license_link="https://image-net.org/download.php",
                      gated=True)

# FADRM+'s extra teachers for the 32/64-pixel sets: different families, cycled round-robin.
SMALL_IMAGE_TEACHERS_PLUS = ("resnet18-cifar", "densenet121", "shufflenet_v2_x0_5", "mobilenet_v2")


def imagenet_category_names(indices) -> tuple[str, ...]:
    """torchvision's names of ImageNet-1K's classes at these indices of its 1000 sorted WordNet ids."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return tuple(_IMAGENET_CATEGORIES[index] for index in indices)


# FADRM's settings for the 10-class ImageNet subsets, ImageNette and ImageWoof (its recover, relabel and
# validate scripts/imagenet-nette and scripts/imagewoof): the paper's recover (lr 0.25; one script,
# recover/scripts/imagenet-nette/recover_fadrm_ipc50.sh, uses 0.05 for single-teacher ImageNette at IPC 50,
# which a preset's one lr for every IPC does not follow) at ImageNet's
# resolutions with all 10 classes in one unit, ResNet-18 teachers trained on the subset, and a ResNet-18
# student by AdamW at 5e-4 with batches of 10. FADRM and RDED publish no teacher recipe; RDED trains its
# teachers with torchvision's reference script, whose ResNet defaults these are (SGD 0.1, weight decay
# 1e-4, 90 epochs, 8 x 32 images a step), with this trainer's padded crop (an eighth of the side, as
# CIFAR's 4 of 32) for its random crop. RDED's released scripts for both stitch 2 x 2 crops
# (LINs-lab/RDED, scripts/imagenet-nette_*.sh and imagenet-woof_*.sh).
IMAGENET_SUBSET_BUILD = dict(
    source="imagenet-subset",
    teacher="resnet18",
    teachers_plus=("resnet18", "densenet121", "shufflenet_v2_x1_0", "mobilenet_v2"),
    teacher_recipe=dict(optimizer="sgd", lr=0.1, weight_decay=1e-4, epochs=90, batch_size=256, crop_padding=28),
    stage_resolutions=(200, 224, 200, 224),
    **{**PAPER_RECOVER, "class_block": 10},
    jitter=32,
    relabel_epochs=300,
    soft_label_reuse=LABEL_REUSE,
    relabel_batch_size=10,
    student="resnet18",
    eval_epochs=300,
    eval_lr=5e-4,
    eval_batch_size=10,
    methods={"rded": {"factor": 2}},
)

# The protocols' per-dataset settings (builders/protocols.py). FADRM's validate/train_fkd.py sets the
# ResNet-18 student's AdamW lr and its cosine stretch (eta) per dataset and IPC 1, 10, 50.
RELEASED_IPCS = (1, 10, 50)


def per_ipc(**columns: tuple) -> tuple:
    """``from_ipc`` pairs from one column per setting over RELEASED_IPCS, e.g. ``eval_lr=(5e-4, 1e-3, 1e-3)``."""
    return tuple((ipc, {name: values[i] for name, values in columns.items()}) for i, ipc in enumerate(RELEASED_IPCS))


# DD-Ranking's eval branch scores ImageNet-1K sets (SRe2L, D4M, G-VBSM) for 300 epochs in batches of 1024.
DD_RANKING_IMAGENET = dict(eval_epochs=300, eval_batch_size=1024)
