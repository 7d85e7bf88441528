"""monai_assim: domain assimilation for MONAI."""

__version__ = "0.1.0"
