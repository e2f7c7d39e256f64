"""ImageNet-1K: 1000 classes, distilled at 224x224 from an ImageFolder tree or a Hub dataset."""

from ..declaration import IMAGENET_MEAN, IMAGENET_STD, SetInfo, unique_names
from ._shared import (DD_RANKING_IMAGENET, IMAGENET_TERMS, LABEL_REUSE, PAPER_RECOVER, imagenet_category_names,
                      per_ipc)

DECLARATION = SetInfo(
    name="imagenet", display_name="ImageNet-1K", class_name="FADRMImageNet", repo_name="fadrm-imagenet",
    num_classes=1000, channels=3, image_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    # torchvision's names in the standard (sorted wnid) order; two ("crane", "maillot") occur twice,
    # so they are made unique.
    class_names=unique_names(imagenet_category_names(range(1000))),
    source_datasets=("ILSVRC/imagenet-1k",), **IMAGENET_TERMS,
    build=dict(
        source="imagenet",
        teacher="resnet18",
        teachers_plus=("resnet18", "densenet121", "shufflenet_v2_x1_0", "mobilenet_v2"),
        teacher_recipe=None,  # torchvision's pretrained ImageNet weights
        stage_resolutions=(200, 224, 200, 224),
        **PAPER_RECOVER,
        jitter=32,
        relabel_epochs=300,
        soft_label_reuse=LABEL_REUSE,
        soft_label_topk=100,  # 1000 classes: top-k + mean of the rest keeps the store small
        student="resnet18",
        eval_epochs=300,
        # RDED's released ImageNet-1K scripts stitch 2 x 2 crops (LINs-lab/RDED, scripts/imagenet-1k_*.sh).
        methods={"rded": {"factor": 2}},
        protocols={
            # validate/scripts/imagenet1k: 300 epochs, batches of 16.
            "fadrm": dict(eval_epochs=300, eval_batch_size=16,
                          from_ipc=per_ipc(eval_lr=(1e-3, 1e-3, 1e-3), cosine_stretch=(2, 2, 1))),
            "dd-ranking": DD_RANKING_IMAGENET,
        },
    ),
)
