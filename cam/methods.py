"""The explanation methods: one small class per method, all backed by tf-keras-vis.

``METHODS`` maps the CLI name to the class; ``cam --method`` offers exactly its keys.
Importing this module does not import TensorFlow (each class imports tf-keras-vis when it
is instantiated).

Example:
    >>> sorted(METHODS)[:3]
    ['faster-scorecam', 'gradcam', 'gradcam++']
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

import numpy as np

from hardenkit.testkit import max_steps

#: Chosen by ``cam eval --method all`` on the demo data (numbers in ``cam/__init__.py``).
DEFAULT_METHOD = "faster-scorecam"

Score = Callable[[Any], Any]


class CamMethod(ABC):
    """Base class: build the tf-keras-vis object once, then explain batch after batch.

    Subclasses set :attr:`uses_layer` and implement :meth:`_maps`.

    Args:
        model: The probability model (ends in softmax).
        layer: Target layer name; None picks the last 4-D layer (nested models included).
        batch_size: Forward batch size for methods that run many masked copies.
    """

    name: ClassVar[str]
    #: Whether the method reads a convolutional feature map (False: gradients w.r.t. pixels).
    uses_layer: ClassVar[bool] = True
    #: Whether the model handed to tf-keras-vis returns log-probabilities (see FastModel):
    #: gradient methods score log-odds from them, Score-CAM turns them back into probabilities.
    log_output: ClassVar[bool] = True
    #: Whether the method differentiates the score: it then gets the log-odds of the target
    #: classes, not their probability, whose gradient vanishes once the softmax saturates
    #: (see :class:`cam.explainer.SensitiveScore`). Score-CAM reads probabilities of masked
    #: copies instead and needs no gradient.
    differentiates_score: ClassVar[bool] = True
    #: Whether tf-keras-vis takes exp(score) (Grad-CAM++): the score's value is then made 0.
    exponentiates_score: ClassVar[bool] = False

    def __init__(self, model: Any, layer: str | None = None, batch_size: int = 32) -> None:
        from . import _tfkv

        _tfkv.install()
        self.batch_size = batch_size
        self.fast = _tfkv.fast_model(model, layer if self.uses_layer else False, self.log_output)
        self.layer_name: str | None = self.fast.layer_name
        self._vis = self._build(self.fast)

    def chunk_size(self) -> int | None:
        """Largest batch this method should get at once (None: no limit)."""
        return None

    @abstractmethod
    def _build(self, fast: Any) -> Any:
        """Create the tf-keras-vis object (once)."""

    @abstractmethod
    def _maps(self, score: Score, x: np.ndarray) -> Any:
        """Maps (N, h, w) at the model's resolution for the batch ``x``."""

    def __call__(self, score: Score, x: np.ndarray) -> np.ndarray:
        """Explain a prepared batch.

        Args:
            score: Callable on the model output returning one score per image.
            x: (N, H, W, 3) float32 at the model's input size.

        Returns:
            (N, H, W) float32 maps, each scaled to [0, 1].

        Raises:
            ValueError: ``x`` is not a 4-D batch.
        """
        if x.ndim != 4:
            raise ValueError(f"expected a (N, H, W, C) batch, got shape {x.shape}")
        if len(x) == 0:
            return np.zeros(x.shape[:3], np.float32)
        maps = np.asarray(self._maps(score, np.asarray(x, np.float32)), np.float32)
        maps = maps.reshape(x.shape[:3])
        return np.clip(np.nan_to_num(maps), 0.0, 1.0)


class _LayerCam(CamMethod):
    """The gradient-weighted CAM family: one call with the pre-tagged layer."""

    vis_class: ClassVar[str]

    def _build(self, fast: Any) -> Any:
        import importlib

        module, cls = self.vis_class.rsplit(".", 1)
        return getattr(importlib.import_module(module), cls)(fast, clone=False)

    def _maps(self, score: Score, x: np.ndarray) -> Any:
        from ._graph import TARGET_NAME

        return self._vis(score, x, penultimate_layer=TARGET_NAME, seek_penultimate_conv_layer=False)


class GradCAM(_LayerCam):
    """Grad-CAM (Selvaraju et al. 2017): feature maps weighted by their mean gradient."""

    name = "gradcam"
    vis_class = "tf_keras_vis.gradcam.Gradcam"


class GradCAMPlusPlus(_LayerCam):
    """Grad-CAM++ (Chattopadhay et al. 2018): higher-order gradient weights, several objects."""

    name = "gradcam++"
    exponentiates_score = True
    vis_class = "tf_keras_vis.gradcam_plus_plus.GradcamPlusPlus"


class LayerCAM(_LayerCam):
    """LayerCAM (Jiang et al. 2021): element-wise positive gradients times activations."""

    name = "layercam"
    vis_class = "tf_keras_vis.layercam.Layercam"


class ScoreCAM(CamMethod):
    """Score-CAM (Wang et al. 2020): gradient-free, each channel scored by a masked forward pass."""

    name = "scorecam"
    differentiates_score = False
    #: Channels kept (highest spatial variance); None keeps all (plain Score-CAM).
    max_n: ClassVar[int | None] = None

    def _build(self, fast: Any) -> Any:
        from tf_keras_vis.scorecam import Scorecam

        return Scorecam(fast, clone=False)

    def _n_channels(self) -> int:
        n_ch = int(self.fast.act_shape[-1])
        return n_ch if self.max_n is None else min(self.max_n, n_ch)

    def chunk_size(self) -> int | None:
        # tf-keras-vis holds several arrays of (channels x images) masked copies: bound them.
        # Faster Score-CAM keeps the union of each image's top channels, up to all of them.
        return max(1, 1024 // int(self.fast.act_shape[-1]))

    def _maps(self, score: Score, x: np.ndarray) -> Any:
        from ._graph import TARGET_NAME

        max_n = None if self.max_n is None else self._n_channels()
        return self._vis(score, x, penultimate_layer=TARGET_NAME, seek_penultimate_conv_layer=False,
                         batch_size=self.batch_size, max_N=max_n)


class FasterScoreCAM(ScoreCAM):
    """Faster Score-CAM: Score-CAM on the 10 channels with the highest spatial variance.

    tf-keras-vis scores the union of the chosen channels of all images in a chunk, so a map
    can include a few more channels than its own 10 (closer to plain Score-CAM).
    """

    name = "faster-scorecam"
    max_n = 10


class Saliency(CamMethod):
    """Vanilla saliency (Simonyan et al. 2014): |d score / d pixel|, max over colour channels."""

    name = "saliency"
    uses_layer = False
    smooth_samples: ClassVar[int] = 0

    def _build(self, fast: Any) -> Any:
        from tf_keras_vis.saliency import Saliency as _Saliency

        return _Saliency(fast, clone=False)

    def _maps(self, score: Score, x: np.ndarray) -> Any:
        n = max_steps(self.smooth_samples) if self.smooth_samples else 0
        if not n:
            return self._vis(score, x, smooth_samples=0)
        # tf-keras-vis draws SmoothGrad's noise from NumPy's global generator: seed it for this
        # call (same input, same map) and give the caller's generator state back afterwards
        state = np.random.get_state()
        np.random.seed(0)
        try:
            return self._vis(score, x, smooth_samples=n, smooth_noise=0.2)
        finally:
            np.random.set_state(state)


class SmoothGrad(Saliency):
    """SmoothGrad (Smilkov et al. 2017): saliency averaged over 20 noisy copies."""

    name = "smoothgrad"
    smooth_samples = 20


METHODS: dict[str, type[CamMethod]] = {
    cls.name: cls
    for cls in (GradCAM, GradCAMPlusPlus, ScoreCAM, FasterScoreCAM, LayerCAM, Saliency, SmoothGrad)
}


def get_method(name: str) -> type[CamMethod]:
    """Look a method up by name.

    Raises:
        UsageError: Unknown name (the message lists the known ones).

    Example:
        >>> get_method("gradcam").__name__
        'GradCAM'
    """
    from hardenkit.errors import UsageError

    try:
        return METHODS[name]
    except KeyError:
        raise UsageError(f"unknown CAM method {name!r}; expected one of {sorted(METHODS)}") from None
