"""fadrm-datasets: distilled image datasets made with FADRM, loaded like torchvision datasets."""

__version__ = "0.1.0"

from .sets import (FADRMCIFAR100, FADRMDataset, FADRMFashionMNIST, FADRMImageNet,  # noqa: E402
                   FADRMTinyImageNet, SetNotFoundError)

__all__ = ["FADRMCIFAR100", "FADRMDataset", "FADRMFashionMNIST", "FADRMImageNet", "FADRMTinyImageNet",
           "SetNotFoundError", "__version__"]
