"""fadrm-datasets: distilled image datasets made with FADRM, loaded like torchvision datasets.

Each declared dataset (:mod:`fadrm_datasets.catalog`) has a flat class here: ``FADRMImageNet``,
``FADRMCIFAR100``, ... (``SET_CLASSES`` maps a dataset's name to its class).
"""

__version__ = "0.1.0"

from .sets import SET_CLASSES, FADRMDataset, SetNotFoundError  # noqa: E402

globals().update({cls.__name__: cls for cls in SET_CLASSES.values()})

__all__ = ["FADRMDataset", "SET_CLASSES", "SetNotFoundError", "__version__", *(cls.__name__ for cls in SET_CLASSES.values())]
