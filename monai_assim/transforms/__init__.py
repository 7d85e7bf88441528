"""MONAI transforms of domain assimilation."""

from .assimilate import Assimilate, AssimilateD, Assimilated, AssimilateDict, load_assimilation_modules
from .glcm_features import GLCMFeatures, GLCMFeaturesD, GLCMFeaturesd, GLCMFeaturesDict

__all__ = [
    "Assimilate",
    "Assimilated",
    "AssimilateD",
    "AssimilateDict",
    "load_assimilation_modules",
    "GLCMFeatures",
    "GLCMFeaturesd",
    "GLCMFeaturesD",
    "GLCMFeaturesDict",
]
