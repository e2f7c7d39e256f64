"""CIFAR-100: 100 classes of 32x32 RGB images, read through torchvision."""

from ..declaration import SetInfo
from ._shared import LABEL_REUSE, PAPER_RECOVER, SMALL_IMAGE_TEACHERS_PLUS, per_ipc

CLASSES = tuple(
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
    "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup "
    "dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower "
    "leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid "
    "otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road "
    "rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower "
    "sweet_pepper table tank telephone television tiger tractor train trout tulip turtle wardrobe whale "
    "willow_tree wolf woman worm".split()
)

DECLARATION = SetInfo(
    name="cifar100", display_name="CIFAR-100", class_name="FADRMCIFAR100", repo_name="fadrm-cifar100",
    num_classes=100, channels=3, image_size=32, mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761),
    class_names=CLASSES,
    # Its authors state no license; the Hub's own CIFAR-100 card says "unknown".
    license="unknown", source_datasets=("uoft-cs/cifar100",),
    build=dict(
        source="cifar100",
        teacher="resnet18-cifar",
        teachers_plus=SMALL_IMAGE_TEACHERS_PLUS,
        teacher_recipe=dict(optimizer="adam", lr=1e-3, weight_decay=1e-4, epochs=200, batch_size=512),
        stage_resolutions=(32, 32, 32, 32),
        **PAPER_RECOVER,
        jitter=4,
        relabel_epochs=1000,
        soft_label_reuse=LABEL_REUSE,
        student="resnet18-cifar",
        eval_epochs=1000,
        # RDED's released CIFAR-100 scripts use whole crops (LINs-lab/RDED, scripts/cifar100_*.sh).
        methods={"rded": {"factor": 1}},
        protocols={
            # validate/scripts/cifar100: 1000 epochs, batches of 16.
            "fadrm": dict(eval_epochs=1000, eval_batch_size=16,
                          from_ipc=per_ipc(eval_lr=(5e-4, 1e-3, 1e-3), cosine_stretch=(2, 2, 1))),
            # Its eval branch's CIFAR-100 configs with CutMix (D4M/CIFAR100/IPC*.yaml): 500 epochs, batches
            # of 100, T 30 at IPC 1. (Its SRe2L configs use Mixup after padded crops, which a plan cannot hold.)
            "dd-ranking": dict(eval_epochs=500, eval_batch_size=100, from_ipc=per_ipc(temperature=(30.0, 20.0, 20.0))),
        },
    ),
)
