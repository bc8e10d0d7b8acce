"""mosaic: censor what an image-moderation classifier flags, where its CAM heatmap points.

Images the model scores as sensitive get their CAM regions (:func:`cam.regions`) pixelated,
blurred, noised or filled, at full resolution and nothing outside them. Each censored image
is scored again as it would be decoded; while still flagged its regions grow (lower region
threshold, more dilation) for up to ``max_rounds`` rounds, then the whole image is censored
and marked ``unresolved``. :func:`blur_folder` mirrors a folder tree with a resumable CSV
report; :func:`censor` is the bare censoring primitive.

Importing ``mosaic`` does not import TensorFlow.

Example:
    >>> import numpy as np, mosaic
    >>> img = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    >>> m = np.zeros((32, 32), bool); m[8:24, 8:24] = True
    >>> out = mosaic.censor(img, m, style="gaussian", shape="ellipse")
    >>> bool((out[~m] == img[~m]).all())
    True
"""

from __future__ import annotations

from .batch import MosaicReport as MosaicReport
from .batch import MosaicRow as MosaicRow
from .batch import blur_file as blur_file
from .batch import blur_folder as blur_folder
from .batch import read_report as read_report
from .censoring import CensorInfo as CensorInfo
from .censoring import censor_batch as censor_batch
from .censoring import censor_image as censor_image
from .censoring import make_explainer as make_explainer
from .config import SHAPES as SHAPES
from .config import MosaicConfig as MosaicConfig
from .styles import STYLES as STYLES
from .styles import StyleParams as StyleParams
from .styles import censor as censor
from .styles import region_mask as region_mask
from .tune import TuneResult as TuneResult
from .tune import tune as tune

__all__ = ["STYLES", "SHAPES", "CensorInfo", "MosaicConfig", "MosaicReport", "MosaicRow", "StyleParams",
           "TuneResult", "blur_file", "blur_folder", "censor", "censor_batch", "censor_image", "make_explainer",
           "read_report", "region_mask", "tune"]
