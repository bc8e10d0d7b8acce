"""Find the CAM target layer (also inside nested models) and split the model there.

tf-keras-vis reads the target layer's ``.output`` and builds ``Model(inputs, [outputs,
target.output])``. That fails when the layer lives in a nested model (a base model used as
one layer, the usual transfer-learning shape): the inner tensor is not connected to the
outer inputs. So the model is *replayed* once on a fresh input, layer by layer (same layer
objects, so the weights are shared, nothing is copied), with nested models inlined and an
``Identity`` layer named ``cam_target`` inserted right after the target layer. The flat
graph is then cut in two at ``cam_target``: ``lo`` (image -> activations) and ``hi``
(activations -> class probabilities).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from hardenkit.errors import UsageError

TARGET_NAME = "cam_target"


@dataclass(frozen=True)
class Split:
    """The model replayed flat and cut at the target layer.

    Attributes:
        flat: Input -> ... -> ``cam_target`` -> ... -> probabilities (weights shared).
        lo: Input -> target activations (None when no layer was requested).
        hi: Target activations -> probabilities (None when no layer was requested).
        layer_name: Name of the original target layer.
        flat_logits: Input -> logits (the input of the final softmax), or None when the model
            does not end in a softmax ``Dense`` or ``Softmax`` layer.
        hi_logits: Target activations -> logits, likewise (None also without ``hi``).
    """

    flat: Any
    lo: Any
    hi: Any
    layer_name: str | None
    flat_logits: Any = None
    hi_logits: Any = None


def _is_model(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def _output_rank(layer: Any) -> int | None:
    try:
        out = layer.output
    except (AttributeError, ValueError, RuntimeError):  # never called, or shared (several nodes)
        return None
    if isinstance(out, (list, tuple)):
        return None
    return len(out.shape)


def _walk(model: Any) -> list[Any]:
    """All layers in topological order, nested models expanded (the nested model itself
    comes right after its own layers, as its output is the last of them)."""
    out: list[Any] = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        if _is_model(layer):
            out.extend(_walk(layer))
        out.append(layer)
    return out


def find_target_layer(model: Any, name: str | None = None) -> Any:
    """The CAM target layer: the last layer with a 4-D output, searched inside nested models.

    Args:
        model: A Keras functional or sequential model.
        name: A layer name to use instead (looked up in nested models too).

    Raises:
        UsageError: No such layer, or the model has no 4-D (spatial) layer.

    Example:
        >>> from hardenkit.testkit import nested_model
        >>> find_target_layer(nested_model()).name
        'base_conv2'
    """
    layers = _walk(model)
    if name is not None:
        named = [layer for layer in layers if layer.name == name]
        if not named:
            raise UsageError(f"no layer named {name!r} in the model; expected one of "
                             f"{[layer.name for layer in layers]}")
        layer = named[-1]
        if _output_rank(layer) != 4:
            raise UsageError(f"layer {name!r} has no 4-D (batch, h, w, channels) output; "
                             "CAM needs a convolutional feature map")
        return layer
    for layer in reversed(layers):
        if not _is_model(layer) and _output_rank(layer) == 4:
            return layer
    raise UsageError("the model has no layer with a 4-D (batch, h, w, channels) output to explain; "
                     "use --method saliency or pass --layer NAME")


def _contains(model: Any, target: Any) -> bool:
    return any(layer is target for layer in _walk(model))


def _softmax_dense(layer: Any) -> bool:
    import keras

    act = getattr(layer, "activation", None)
    return isinstance(layer, keras.layers.Dense) and getattr(act, "__name__", "") == "softmax"


def _make_pre_softmax() -> Any:
    import keras

    class PreSoftmax(keras.layers.Layer):
        """A softmax ``Dense`` layer's pre-activation (its logits), with that layer's own weights."""

        def __init__(self, dense: Any, **kwargs: Any) -> None:
            super().__init__(name=f"{dense.name}_logits", **kwargs)
            self.dense = dense

        def call(self, x: Any) -> Any:
            z = keras.ops.matmul(x, self.dense.kernel)
            return z + self.dense.bias if self.dense.bias is not None else z

    return PreSoftmax


def _replay(model: Any, inputs: Any, target: Any, inserted: list[Any], head: Any = None,
            logits: list[Any] | None = None) -> Any:
    """Call ``model``'s layers on ``inputs``, inlining nested models and tagging ``target``.

    ``head`` (the outermost model's last layer), when it is a ``Dense`` layer with a softmax
    activation, is replayed as its pre-activation followed by a ``Softmax`` layer: same
    probabilities, and the logits stay reachable (:func:`hardenkit.modelio.logits_function`)
    for gradients that must not vanish when the softmax saturates. The logits tensor (also of a
    final ``Softmax`` layer) is appended to ``logits``.
    """
    import keras

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        if layer is head and layer is not target and logits is not None:
            if _softmax_dense(layer):
                z = _make_pre_softmax()(layer)(*args)
                logits.append(z)
                return keras.layers.Softmax(name=f"{layer.name}_softmax")(z)
            if isinstance(layer, keras.layers.Softmax) and len(args) == 1 and not kwargs:
                logits.append(args[0])
        if layer is target:
            out = keras.layers.Identity(name=TARGET_NAME)(layer(*args, **kwargs))
            inserted.append(out)
            return out
        if target is not None and _is_model(layer) and _contains(layer, target):
            return _replay(layer, args[0], target, inserted)
        return layer(*args, **kwargs)

    if isinstance(model, keras.Sequential):
        x = inputs
        for layer in model.layers:
            x = call(layer, x)
        return x
    if not hasattr(model, "_run_through_graph"):
        raise UsageError(f"cannot look inside the subclassed model {model.name!r}; CAM needs a functional "
                         "or sequential Keras model (use --method saliency for any model)")
    clone = keras.models.clone_model(model, input_tensors=inputs, clone_function=lambda layer: layer,
                                     call_function=call)
    return clone.output


_CACHE: "weakref.WeakKeyDictionary[Any, dict[str | None, Split]]" = weakref.WeakKeyDictionary()


def split_model(model: Any, layer: str | None | bool = None) -> Split:
    """Replay ``model`` flat and cut it at the target layer; cached per (model, layer).

    Args:
        model: The probability model (ends in softmax).
        layer: Target layer name, None for the automatic choice, or False for no target
            (gradient-to-input methods: only ``flat`` is built).

    Raises:
        UsageError: See :func:`find_target_layer`; also when the layer is shared (called
            more than once) or a connection bypasses it, so the model cannot be cut there.

    Example:
        >>> from hardenkit.testkit import nested_model
        >>> split_model(nested_model()).layer_name
        'base_conv2'
    """
    import keras

    key = layer if isinstance(layer, str) else ("" if layer is False else None)
    per_model = _CACHE.setdefault(model, {})
    if key in per_model:
        return per_model[key]
    inp = keras.Input(shape=tuple(model.input_shape[1:]), name="image")
    inserted: list[Any] = []
    if layer is False:
        # replayed rather than ``model`` itself: the cache value must not hold its weak key
        # (a subclassed model cannot be replayed; it is simply called)
        replayable = isinstance(model, keras.Sequential) or hasattr(model, "_run_through_graph")
        pre: list[Any] = []
        out = _replay(model, inp, None, inserted, model.layers[-1], pre) if replayable else model(inp)
        split = Split(keras.Model(inp, out), None, None, None, keras.Model(inp, pre[0]) if pre else None)
        per_model[key] = split
        return split
    target = find_target_layer(model, layer if isinstance(layer, str) else None)
    pre = []
    out = _replay(model, inp, target, inserted, model.layers[-1], pre)
    if len(inserted) != 1:
        raise UsageError(f"layer {target.name!r} is used {len(inserted)} times in the model; "
                         "pick another layer with --layer NAME")
    flat = keras.Model(inp, out, name=f"{model.name}_cam")
    try:
        lo = keras.Model(inp, inserted[0], name="cam_lo")
        hi = keras.Model(inserted[0], out, name="cam_hi")
    except ValueError as e:
        raise UsageError(f"cannot split the model at layer {target.name!r}: a connection bypasses it "
                         f"({str(e).splitlines()[0]}); pick another layer with --layer NAME") from None
    split = Split(flat, lo, hi, target.name, keras.Model(inp, pre[0]) if pre else None,
                  keras.Model(inserted[0], pre[0]) if pre else None)
    per_model[key] = split
    return split
