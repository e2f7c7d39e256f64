"""fadrm-datasets: distilled image datasets made with FADRM, loaded like torchvision datasets."""

__version__ = "0.1.0"
