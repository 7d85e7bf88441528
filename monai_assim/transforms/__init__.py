"""MONAI transforms of domain assimilation."""

from .assimilate import Assimilate, AssimilateD, AssimilateDict, Assimilated, load_assimilation_modules
from .glcm_features import GLCMFeatures, GLCMFeaturesd, GLCMFeaturesD, GLCMFeaturesDict

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
