"""ImageWoof: 10 ImageNet dog breeds, hard to tell apart, distilled at 224x224 from fastai's release (or the
same classes of an ImageNet ImageFolder tree), with FADRM's ImageWoof settings."""

from ..declaration import IMAGENET_MEAN, IMAGENET_STD, SetInfo
from ._shared import DD_RANKING_IMAGENET, IMAGENET_TERMS, PAPER_RECOVER, per_ipc

# The classes in label order (sorted WordNet ids, as fastai's folders sort them), each with its index
# among ImageNet-1K's 1000 sorted wnids.
CLASSES = (("n02086240", 155), ("n02087394", 159), ("n02088364", 162), ("n02089973", 167), ("n02093754", 182),
           ("n02096294", 193), ("n02099601", 207), ("n02105641", 229), ("n02111889", 258), ("n02115641", 273))


def _names() -> tuple[str, ...]:
    # torchvision's names of these ImageNet classes ("Shih-Tzu", "Rhodesian ridgeback", ...).
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return tuple(_IMAGENET_CATEGORIES[index] for _, index in CLASSES)


DECLARATION = SetInfo(
    # fastai's repository is Apache-2.0, but the images are ImageNet's: its terms, and gated, as Tiny-ImageNet.
    name="imagewoof", display_name="ImageWoof", class_name="FADRMImageWoof", repo_name="fadrm-imagewoof",
    num_classes=10, channels=3, image_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, class_names=_names(),
    source_datasets=("frgfm/imagewoof",), **IMAGENET_TERMS,
    # FADRM's scripts for ImageWoof (recover/relabel/validate scripts/imagewoof), which match ImageNette's.
    build=dict(
        source="imagenet-subset",
        # torchvision has no ImageWoof: the archive comes from fastai's published URL.
        source_options=dict(release="imagewoof2-320", wnids=tuple(wnid for wnid, _ in CLASSES),
                            url="https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-320.tgz"),
        teacher="resnet18",
        teachers_plus=("resnet18", "densenet121", "shufflenet_v2_x1_0", "mobilenet_v2"),
        # As ImageNette's (fadrm_datasets/catalog/imagenette.py): torchvision's reference ResNet recipe.
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
        # RDED's released imagenet-woof scripts stitch 2 x 2 crops (LINs-lab/RDED, scripts/imagenet-woof_*.sh).
        methods={"rded": {"factor": 2}},
        protocols={
            # validate/scripts/imagewoof: 300 epochs, batches of 10.
            "fadrm": dict(eval_epochs=300, eval_batch_size=10,
                          from_ipc=per_ipc(eval_lr=(5e-4, 5e-4, 1e-3), cosine_stretch=(2, 1, 2))),
            # DD-Ranking scores no ImageWoof set: ImageNet-1K's settings, not chosen on the validation split.
            "dd-ranking": DD_RANKING_IMAGENET,
        },
    ),
)
