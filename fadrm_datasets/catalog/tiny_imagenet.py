"""Tiny-ImageNet: 200 ImageNet classes of 64x64 RGB images, from Stanford's zip."""

from ..declaration import IMAGENET_MEAN, IMAGENET_STD, SetInfo
from ._shared import IMAGENET_TERMS, LABEL_REUSE, PAPER_RECOVER, SMALL_IMAGE_TEACHERS_PLUS, per_ipc

DECLARATION = SetInfo(
    # The classes are WordNet ids in the order of the source's wnids.txt: taken from the manifest.
    # Stanford has no copy on the Hub; zh-plus/tiny-imagenet is the one users load. Its images are ImageNet's.
    name="tiny-imagenet", display_name="Tiny-ImageNet", class_name="FADRMTinyImageNet",
    repo_name="fadrm-tiny-imagenet", num_classes=200, channels=3, image_size=64, mean=IMAGENET_MEAN,
    std=IMAGENET_STD, source_datasets=("zh-plus/tiny-imagenet",), **IMAGENET_TERMS,
    build=dict(
        source="tiny-imagenet",
        teacher="resnet18-cifar",
        teachers_plus=SMALL_IMAGE_TEACHERS_PLUS,
        teacher_recipe=dict(optimizer="sgd", lr=0.01, weight_decay=1e-4, epochs=50, batch_size=128),
        stage_resolutions=(64, 64, 64, 64),
        **PAPER_RECOVER,
        jitter=4,
        relabel_epochs=300,
        soft_label_reuse=LABEL_REUSE,
        student="resnet18-cifar",
        eval_epochs=300,
        # RDED's released Tiny-ImageNet scripts use whole crops (LINs-lab/RDED, scripts/tinyimagenet_*.sh).
        methods={"rded": {"factor": 1}},
        protocols={
            # validate/scripts/tiny_imagenet: 300 epochs (1000 at IPC 1, its note says), batches of 16;
            # relabel/scripts/tiny_imagenet label with the teacher in eval mode (--eval-mode T).
            "fadrm": dict(eval_batch_size=16, teacher_mode="eval",
                          from_ipc=per_ipc(eval_epochs=(1000, 300, 300), eval_lr=(1e-3, 1e-3, 1e-3),
                                           cosine_stretch=(2, 2, 1))),
            # D4M/TinyImageNet/IPC*.yaml of its eval branch (its SRe2L configs train 400 epochs).
            "dd-ranking": dict(eval_epochs=300, eval_batch_size=1024),
        },
    ),
)
