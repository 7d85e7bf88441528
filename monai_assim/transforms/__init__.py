"""MONAI transforms of this package: image loading steps MONAI lacks, and domain assimilation."""

from .assimilate import Assimilate, AssimilateD, Assimilated, AssimilateDict, load_assimilation_modules
from .glcm_features import GLCMFeatures, GLCMFeaturesD, GLCMFeaturesd, GLCMFeaturesDict
from .grey_unit import ToGreyUnit, ToGreyUnitD, ToGreyUnitd, ToGreyUnitDict
from .squeeze_2d import SqueezeTo2D, SqueezeTo2DD, SqueezeTo2Dd, SqueezeTo2DDict

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
    "SqueezeTo2D",
    "SqueezeTo2Dd",
    "SqueezeTo2DD",
    "SqueezeTo2DDict",
    "ToGreyUnit",
    "ToGreyUnitd",
    "ToGreyUnitD",
    "ToGreyUnitDict",
]
