"""ImageWoof: 10 ImageNet dog breeds, hard to tell apart, distilled at 224x224 from fastai's release (or the
same classes of an ImageNet ImageFolder tree), with FADRM's ImageWoof settings (ImageNette's)."""

from ..declaration import IMAGENET_MEAN, IMAGENET_STD, SetInfo
from ._shared import DD_RANKING_IMAGENET, IMAGENET_SUBSET_BUILD, IMAGENET_TERMS, imagenet_category_names, per_ipc

# The classes in label order (sorted WordNet ids, as fastai's folders sort them), each with its index
# among ImageNet-1K's 1000 sorted wnids.
CLASSES = (("n02086240", 155), ("n02087394", 159), ("n02088364", 162), ("n02089973", 167), ("n02093754", 182),
           ("n02096294", 193), ("n02099601", 207), ("n02105641", 229), ("n02111889", 258), ("n02115641", 273))

DECLARATION = SetInfo(
    # fastai's repository is Apache-2.0, but the images are ImageNet's: its terms, and gated, as Tiny-ImageNet.
    name="imagewoof", display_name="ImageWoof", class_name="FADRMImageWoof", repo_name="fadrm-imagewoof",
    num_classes=10, channels=3, image_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    class_names=imagenet_category_names(index for _, index in CLASSES),  # "Shih-Tzu", "Rhodesian ridgeback", ...
    source_datasets=("frgfm/imagewoof",), **IMAGENET_TERMS,
    build=dict(
        **IMAGENET_SUBSET_BUILD,
        # torchvision has no ImageWoof: the archive comes from fastai's published URL.
        source_options=dict(release="imagewoof2-320", wnids=tuple(wnid for wnid, _ in CLASSES),
                            url="https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-320.tgz"),
        protocols={
            # validate/scripts/imagewoof: 300 epochs, batches of 10.
            "fadrm": dict(eval_epochs=300, eval_batch_size=10,
                          from_ipc=per_ipc(eval_lr=(5e-4, 5e-4, 1e-3), cosine_stretch=(2, 1, 2))),
            # DD-Ranking scores no ImageWoof set: ImageNet-1K's settings, not chosen on the validation split.
            "dd-ranking": DD_RANKING_IMAGENET,
        },
    ),
)
