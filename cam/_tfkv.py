"""Adapter that lets tf-keras-vis run on compiled, cached functions.

tf-keras-vis builds a new ``Model(inputs, [outputs, layer.output])`` on *every* call and runs
it eagerly. Over thousands of batches that is slow and keeps allocating graph objects. Here
the split model (``lo``: image -> target activations, ``hi``: activations -> probabilities)
is wrapped in two ``tf.function``s traced once, and tf-keras-vis's layer-extraction step is
given that pre-built pair instead of a new model. The CAM arithmetic stays tf-keras-vis's.
The gradient still flows: ``hi`` is a separate function whose input is the activation
tensor the tape watches.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from ._graph import Split, split_model


class _Extracted:
    """What tf-keras-vis's layer extractor returns: call -> [probs, activations] or activations."""

    def __init__(self, fast: "FastModel", include_outputs: bool) -> None:
        self._fast = fast
        self._include = include_outputs
        self.layers = fast.layers
        self.inputs = fast.inputs

    def __call__(self, inputs: Any, training: bool = False) -> Any:
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        act = self._fast.lo(x)
        if not self._include:
            return act
        return [self._fast.hi(act), act]


class FastModel:
    """A split model behind compiled functions, shaped like the Keras model tf-keras-vis expects.

    ``lo`` passes no gradient back to the image (CAM methods differentiate with respect to
    the activations only); ``__call__`` is fully differentiable (saliency methods).

    Args:
        split: From :func:`cam._graph.split_model`.
        log_output: Make ``__call__``/``predict`` (and ``hi``) return log-probabilities,
            computed as log-softmax of the logits (:func:`hardenkit.modelio.logits_function`),
            so they stay exact, and differentiable, where a saturated softmax rounds to 0 and 1.
            Score-CAM applies a softmax to the predictions itself; softmax(log p) = p, so its
            scores stay true probabilities. Gradient methods score log-odds from them.
    """

    def __init__(self, split: Split, log_output: bool = False) -> None:
        import tensorflow as tf

        flat = split.flat
        self.layers = flat.layers
        self.inputs = flat.inputs
        self.outputs = flat.outputs
        self.layer_name = split.layer_name
        self.act_shape: tuple[int, ...] = tuple(split.lo.output_shape[1:]) if split.lo is not None else ()
        spec = tf.TensorSpec((None, *flat.input_shape[1:]), tf.float32)

        from hardenkit.modelio import logits_function

        def logits_of(model: Any, pre: Any) -> Any:
            if not log_output:
                return None
            return (lambda x: pre(x, training=False)) if pre is not None else logits_function(model)[0]

        flat_logits = logits_of(flat, split.flat_logits)

        def full(x: Any) -> Any:
            return tf.nn.log_softmax(flat_logits(x)) if flat_logits is not None else flat(x, training=False)

        # concrete functions: traced exactly once here, never again (and no retracing warnings
        # when several models are explained in one process)
        self._full = tf.function(full).get_concrete_function(spec)
        if split.lo is not None:
            act_spec = tf.TensorSpec((None, *split.lo.output_shape[1:]), tf.float32)
            lo = tf.function(lambda x: split.lo(x, training=False)).get_concrete_function(spec)
            hi_logits = logits_of(split.hi, split.hi_logits)
            hi = tf.function(lambda a: tf.nn.log_softmax(hi_logits(a)) if hi_logits is not None
                             else split.hi(a, training=False)).get_concrete_function(act_spec)
            self.hi = lambda a: hi(tf.cast(a, tf.float32))

            @tf.custom_gradient
            def lo_call(x: Any) -> Any:
                # tf-keras-vis watches the input image, so a plain call would make the tape run
                # lo's costly record-everything variant; CAM only needs d(score)/d(activations),
                # so lo is opaque to the tape (its input gradient is declared zero).
                def grad(dy: Any, variables: Any = None) -> Any:
                    return tf.zeros_like(x), [tf.zeros_like(v) for v in variables or ()]

                return lo(x), grad

            self.lo = lambda x: lo_call(tf.cast(x, tf.float32))

    def __call__(self, inputs: Any, training: bool = False) -> Any:
        import tensorflow as tf

        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        return self._full(tf.cast(x, tf.float32))

    def extract(self, include_outputs: bool) -> _Extracted:
        """The pre-built replacement for tf-keras-vis's per-call layer extraction."""
        return _Extracted(self, include_outputs)

    def predict(self, x: Any, batch_size: int = 32, **_: Any) -> np.ndarray:
        """Batched forward pass (used by Score-CAM for its masked copies)."""
        x = x[0] if isinstance(x, (list, tuple)) else x
        x = np.asarray(x, np.float32)
        out = [np.asarray(self(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.outputs[0].shape[-1]), np.float32)


_FAST: "weakref.WeakKeyDictionary[Any, dict[tuple[Any, bool], FastModel]]" = weakref.WeakKeyDictionary()


def fast_model(model: Any, layer: str | None | bool, log_output: bool = False) -> FastModel:
    """The :class:`FastModel` of ``model`` cut at ``layer`` (see :func:`split_model`), cached
    per model so repeated ``explain`` calls reuse one trace."""
    per_model = _FAST.setdefault(model, {})
    key = (layer, log_output)
    if key not in per_model:
        per_model[key] = FastModel(split_model(model, layer), log_output)
    return per_model[key]


_PATCHED = False


def install() -> None:
    """Make tf-keras-vis's layer extractor hand back :class:`FastModel`'s pre-built pair.

    Idempotent. Any other model goes through the original extractor unchanged.
    """
    global _PATCHED
    if _PATCHED:
        return
    from tf_keras_vis import gradcam, gradcam_plus_plus, scorecam
    from tf_keras_vis.utils.model_modifiers import ExtractIntermediateLayerForGradcam as Original

    class CachedExtract(Original):
        def __call__(self, model: Any) -> Any:
            if isinstance(model, FastModel):
                return model.extract(self.include_model_outputs)
            return super().__call__(model)

    for mod in (gradcam, gradcam_plus_plus, scorecam):
        mod.ModelModifier = CachedExtract
    _PATCHED = True
