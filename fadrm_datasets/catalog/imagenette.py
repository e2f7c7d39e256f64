"""ImageNette: 10 easily told apart ImageNet classes, distilled at 224x224 from fastai's release (or the same
classes of an ImageNet ImageFolder tree), with FADRM's ImageNette settings."""

from ..declaration import IMAGENET_MEAN, IMAGENET_STD, SetInfo
from ._shared import DD_RANKING_IMAGENET, IMAGENET_SUBSET_BUILD, IMAGENET_TERMS, imagenet_category_names, per_ipc

# The classes in label order (sorted WordNet ids, as fastai's folders and torchvision's Imagenette sort
# them), each with its index among ImageNet-1K's 1000 sorted wnids.
CLASSES = (("n01440764", 0), ("n02102040", 217), ("n02979186", 482), ("n03000684", 491), ("n03028079", 497),
           ("n03394916", 566), ("n03417042", 569), ("n03425413", 571), ("n03445777", 574), ("n03888257", 701))

DECLARATION = SetInfo(
    # fastai's repository is Apache-2.0, but the images are ImageNet's: its terms, and gated, as Tiny-ImageNet.
    name="imagenette", display_name="ImageNette", class_name="FADRMImageNette", repo_name="fadrm-imagenette",
    num_classes=10, channels=3, image_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    class_names=imagenet_category_names(index for _, index in CLASSES),  # "tench", "English springer", ...
    source_datasets=("frgfm/imagenette",), **IMAGENET_TERMS,
    build=dict(
        **IMAGENET_SUBSET_BUILD,
        # The release whose shorter side is 320 pixels: enough for the 256-pixel resize before the crop.
        source_options=dict(release="imagenette2-320", wnids=tuple(wnid for wnid, _ in CLASSES)),
        protocols={
            # validate/scripts/imagenet-nette: 300 epochs, batches of 10.
            "fadrm": dict(eval_epochs=300, eval_batch_size=10,
                          from_ipc=per_ipc(eval_lr=(5e-4, 5e-4, 5e-4), cosine_stretch=(2, 1, 2))),
            # DD-Ranking scores no ImageNette set: ImageNet-1K's settings, not chosen on the validation split.
            "dd-ranking": DD_RANKING_IMAGENET,
        },
    ),
)
