"""ImageNette: 10 easily told apart ImageNet classes, distilled at 224x224 from fastai's release (or the same
classes of an ImageNet ImageFolder tree), with FADRM's ImageNette settings."""

from ..declaration import IMAGENET_MEAN, IMAGENET_STD, SetInfo
from ._shared import DD_RANKING_IMAGENET, IMAGENET_TERMS, PAPER_RECOVER, per_ipc

# The classes in label order (sorted WordNet ids, as fastai's folders and torchvision's Imagenette sort
# them), each with its index among ImageNet-1K's 1000 sorted wnids.
CLASSES = (("n01440764", 0), ("n02102040", 217), ("n02979186", 482), ("n03000684", 491), ("n03028079", 497),
           ("n03394916", 566), ("n03417042", 569), ("n03425413", 571), ("n03445777", 574), ("n03888257", 701))


def _names() -> tuple[str, ...]:
    # torchvision's names of these ImageNet classes ("tench", "English springer", ...).
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return tuple(_IMAGENET_CATEGORIES[index] for _, index in CLASSES)


DECLARATION = SetInfo(
    # fastai's repository is Apache-2.0, but the images are ImageNet's: its terms, and gated, as Tiny-ImageNet.
    name="imagenette", display_name="ImageNette", class_name="FADRMImageNette", repo_name="fadrm-imagenette",
    num_classes=10, channels=3, image_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, class_names=_names(),
    source_datasets=("frgfm/imagenette",), **IMAGENET_TERMS,
    # FADRM's scripts for ImageNette (recover/relabel/validate scripts/imagenet-nette): the paper's recover
    # at ImageNet's resolutions with all 10 classes in one unit, teachers trained on the subset, ResNet-18
    # student by AdamW at 5e-4 with batches of 10.
    build=dict(
        source="imagenet-subset",
        # The release whose shorter side is 320 pixels: enough for the 256-pixel resize before the crop.
        source_options=dict(release="imagenette2-320", wnids=tuple(wnid for wnid, _ in CLASSES)),
        teacher="resnet18",
        teachers_plus=("resnet18", "densenet121", "shufflenet_v2_x1_0", "mobilenet_v2"),
        # FADRM and RDED publish no recipe; RDED trains its teachers with torchvision's reference script,
        # whose ResNet defaults these are (SGD 0.1, weight decay 1e-4, 90 epochs, 8 x 32 images a step),
        # with this trainer's padded crop (an eighth of the side, as CIFAR's 4 of 32) for its random crop.
        teacher_recipe=dict(optimizer="sgd", lr=0.1, weight_decay=1e-4, epochs=90, batch_size=256, crop_padding=28),
        stage_resolutions=(200, 224, 200, 224),
        **{**PAPER_RECOVER, "class_block": 10},
        jitter=32,
        relabel_epochs=300,
        relabel_batch_size=10,
        student="resnet18",
        eval_epochs=300,
        eval_lr=5e-4,
        eval_batch_size=10,
        # RDED's released imagenet-nette scripts stitch 2 x 2 crops (LINs-lab/RDED, scripts/imagenet-nette_*.sh).
        methods={"rded": {"factor": 2}},
        protocols={
            # validate/scripts/imagenet-nette: 300 epochs, batches of 10.
            "fadrm": dict(eval_epochs=300, eval_batch_size=10,
                          from_ipc=per_ipc(eval_lr=(5e-4, 5e-4, 5e-4), cosine_stretch=(2, 1, 2))),
            # DD-Ranking scores no ImageNette set: ImageNet-1K's settings, not chosen on the validation split.
            "dd-ranking": DD_RANKING_IMAGENET,
        },
    ),
)
