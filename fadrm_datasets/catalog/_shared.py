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

# ImageNet's terms of access (non-commercial research and education only) bind images derived from it.
IMAGENET_TERMS = dict(license="other", license_name="imagenet", license_link="https://image-net.org/download.php",
                      gated=True)

# FADRM+'s extra teachers for the 32/64-pixel sets: different families, cycled round-robin.
SMALL_IMAGE_TEACHERS_PLUS = ("resnet18-cifar", "densenet121", "shufflenet_v2_x0_5", "mobilenet_v2")

# The protocols' per-dataset settings (builders/protocols.py). FADRM's validate/train_fkd.py sets the
# ResNet-18 student's AdamW lr and its cosine stretch (eta) per dataset and IPC 1, 10, 50.
RELEASED_IPCS = (1, 10, 50)


def per_ipc(**columns: tuple) -> tuple:
    """``from_ipc`` pairs from one column per setting over RELEASED_IPCS, e.g. ``eval_lr=(5e-4, 1e-3, 1e-3)``."""
    return tuple((ipc, {name: values[i] for name, values in columns.items()}) for i, ipc in enumerate(RELEASED_IPCS))


# DD-Ranking's eval branch scores ImageNet-1K sets (SRe2L, D4M, G-VBSM) for 300 epochs in batches of 1024.
DD_RANKING_IMAGENET = dict(eval_epochs=300, eval_batch_size=1024)
