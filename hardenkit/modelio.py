"""Loading and saving Keras models together with their class names.

A hardenkit model is a Keras 3 image classifier that takes RGB float32 images in [0, 1]
at its input size and outputs one score per class (softmax probabilities, or logits that
are softmaxed here). The class names, and which of them are *sensitive*, travel in a
sidecar JSON next to the model (``model.keras`` -> ``model.classes.json``), so no command
needs to be told them again.

Example:
    >>> from hardenkit.testkit import tiny_model
    >>> from hardenkit.modelio import save_model, load_model
    >>> save_model(tiny_model(), "/tmp/hk_doc.keras", ["normal", "sensitive"])  # doctest: +SKIP
    >>> load_model("/tmp/hk_doc.keras").sensitive_names  # doctest: +SKIP
    ('sensitive',)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .errors import ModelLoadError, UsageError
from .imageio import atomic_path, atomic_write_text, resize

if TYPE_CHECKING:  # pragma: no cover
    import keras

MODEL_EXTENSIONS = (".keras", ".h5", ".hdf5")


def sidecar_path(model_path: str | os.PathLike[str]) -> Path:
    """Where the class names of ``model_path`` live.

    Example:
        >>> str(sidecar_path("runs/round-1/model.keras"))
        'runs/round-1/model.classes.json'
    """
    p = Path(model_path)
    return p.with_name(p.stem + ".classes.json")


def resolve_sensitive(class_names: Sequence[str], sensitive: Sequence[str] | str | None) -> tuple[str, ...]:
    """Validate the sensitive class names against ``class_names``.

    Args:
        class_names: All class names, in output order.
        sensitive: Names (or a comma-separated string). None means the class named
            ``sensitive``.

    Raises:
        UsageError: A name is unknown, or none is given and no class is named ``sensitive``.

    Example:
        >>> resolve_sensitive(["ok", "nsfw", "gore"], "nsfw,gore")
        ('nsfw', 'gore')
    """
    if isinstance(sensitive, str):
        sensitive = [s.strip() for s in sensitive.split(",") if s.strip()]
    if not sensitive:
        if "sensitive" not in class_names:
            raise UsageError(
                f"no sensitive class given and no class named 'sensitive' among {list(class_names)}; "
                "pass --sensitive NAME[,NAME]"
            )
        return ("sensitive",)
    unknown = [s for s in sensitive if s not in class_names]
    if unknown:
        raise UsageError(f"unknown sensitive class(es) {unknown}; expected some of {list(class_names)}")
    if len(set(sensitive)) == len(class_names):
        raise UsageError("every class is marked sensitive; at least one class must be normal")
    return tuple(sensitive)


@dataclass
class ModelBundle:
    """A loaded classifier with its class names and sensitive classes.

    Attributes:
        model: The Keras model as saved.
        class_names: Output names, in order.
        sensitive_names: The classes whose summed probability is the sensitive score.
        path: Where it was loaded from (None for in-memory models).

    Example:
        >>> from hardenkit.testkit import tiny_model
        >>> b = ModelBundle(tiny_model(), ("normal", "sensitive"), ("sensitive",))
        >>> b.sensitive_indices, b.image_size
        ((1,), (8, 8))
    """

    model: "keras.Model"
    class_names: tuple[str, ...]
    sensitive_names: tuple[str, ...]
    path: Path | None = None
    _prob_model: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.class_names = tuple(self.class_names)
        self.sensitive_names = resolve_sensitive(self.class_names, list(self.sensitive_names) or None)
        n_out = int(self.model.output_shape[-1])
        if n_out != len(self.class_names):
            raise ModelLoadError(
                f"model has {n_out} outputs but {len(self.class_names)} class names {list(self.class_names)}"
            )
        if n_out < 2:
            raise ModelLoadError("expected a classifier with >= 2 outputs (softmax), got 1 output")

    @property
    def sensitive_indices(self) -> tuple[int, ...]:
        """Output indices of the sensitive classes."""
        return tuple(self.class_names.index(n) for n in self.sensitive_names)

    @property
    def image_size(self) -> tuple[int, int]:
        """The model's (height, width) input size."""
        shape = self.model.input_shape
        if isinstance(shape, list):
            shape = shape[0]
        h, w = shape[1], shape[2]
        if h is None or w is None:
            raise ModelLoadError("model input size is not fixed; hardenkit needs a fixed (H, W)")
        return int(h), int(w)

    def fingerprint(self) -> str:
        """The first 12 hex digits of the SHA-256 of the weights (shapes and bytes, in order).

        Two models with the same fingerprint compute the same function; the file's own hash
        does not tell that (a ``.keras`` archive records when it was saved).

        Example:
            >>> from hardenkit.testkit import tiny_model
            >>> len(ModelBundle(tiny_model(), ("normal", "sensitive"), ("sensitive",)).fingerprint())
            12
        """
        import hashlib

        h = hashlib.sha256()
        for w in self.model.get_weights():
            a = np.ascontiguousarray(w)
            h.update(repr((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
        return h.hexdigest()[:12]

    @property
    def prob_model(self) -> "keras.Model":
        """The model with a softmax on top if its last layer does not already apply one."""
        if self._prob_model is None:
            self._prob_model = probability_model(self.model)
        return self._prob_model

    def labels_binary(self, labels: np.ndarray) -> np.ndarray:
        """Map class indices to 1 (sensitive) / 0 (normal).

        Example:
            >>> from hardenkit.testkit import tiny_model
            >>> b = ModelBundle(tiny_model(), ("normal", "sensitive"), ("sensitive",))
            >>> b.labels_binary(np.array([0, 1, 1])).tolist()
            [0, 1, 1]
        """
        return np.isin(np.asarray(labels), self.sensitive_indices).astype(np.int32)

    def prepare(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Resize a batch of RGB [0, 1] images of any sizes to the model's input, as float32.

        Example:
            >>> from hardenkit.testkit import tiny_model
            >>> b = ModelBundle(tiny_model(), ("normal", "sensitive"), ("sensitive",))
            >>> b.prepare([np.zeros((20, 30, 3), np.float32)]).shape
            (1, 8, 8, 3)
        """
        size = self.image_size
        if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[1:3] == size:
            return images.astype(np.float32, copy=False)
        return np.stack([resize(np.asarray(im, np.float32), size) for im in images]).astype(np.float32)

    def predict(self, images: Sequence[np.ndarray] | np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class probabilities (N, n_classes) for images of any size.

        Example:
            >>> from hardenkit.testkit import tiny_model
            >>> b = ModelBundle(tiny_model(), ("normal", "sensitive"), ("sensitive",))
            >>> b.predict(np.zeros((2, 8, 8, 3), np.float32)).shape
            (2, 2)
        """
        n = len(images)
        if n == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        out = []
        for i in range(0, n, batch_size):
            x = self.prepare(images[i:i + batch_size])
            out.append(np.asarray(_forward(self.prob_model, x)))
        return np.concatenate(out).astype(np.float32)

    def sensitive_score(self, images: Sequence[np.ndarray] | np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Sensitive score per image: the summed probability of the sensitive classes.

        Example:
            >>> from hardenkit.testkit import tiny_model
            >>> b = ModelBundle(tiny_model(), ("normal", "sensitive"), ("sensitive",))
            >>> float(b.sensitive_score(np.zeros((1, 8, 8, 3), np.float32))[0]) <= 1.0
            True
        """
        return sensitive_score(self.predict(images, batch_size), self.sensitive_indices)


def sensitive_score(probs: np.ndarray, sensitive_indices: Sequence[int]) -> np.ndarray:
    """Sum the probabilities of the sensitive classes, per row.

    Example:
        >>> sensitive_score(np.array([[0.2, 0.5, 0.3]]), [1, 2]).round(2).tolist()
        [0.8]
    """
    return np.asarray(probs)[:, list(sensitive_indices)].sum(axis=1)


def _forward(model: Any, x: np.ndarray) -> Any:
    # model(x) rather than model.predict: no per-call Keras progress machinery, stable memory
    return model(x, training=False)


def _ends_in_softmax(model: Any) -> bool:
    import keras

    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    act = getattr(last, "activation", None)
    return act is not None and getattr(act, "__name__", "") == "softmax"


def logits_function(model: Any) -> tuple[Any, str]:
    """``(fn, kind)``: ``fn(x)`` gives the logits of ``model`` (a TensorFlow-traceable call).

    In order of preference: the model's own output if it does not end in softmax (``kind``
    ``"model"``); the pre-activation of a final softmax ``Dense`` layer or the input of a
    final ``Softmax`` layer (``"pre-softmax"``, computed with the model's own weights, nothing
    copied); else log(probabilities) (``"log-probabilities"``: the logits up to a per-image
    constant, exact until the softmax saturates). Gradients of logits do not vanish where a
    confident model's probabilities round to 0 and 1, which is why attacks and CAM use them.
    Nothing returned holds ``model`` strongly (callers cache per model in weak dictionaries).

    Example:
        >>> from hardenkit.testkit import tiny_model
        >>> fn, kind = logits_function(tiny_model())
        >>> kind, tuple(fn(np.zeros((1, 8, 8, 3), np.float32)).shape)
        ('pre-softmax', (1, 2))
    """
    import weakref

    import keras
    import tensorflow as tf

    ref: Any = weakref.ref(model)
    if not _ends_in_softmax(model):
        return (lambda x: ref()(x, training=False)), "model"
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        pre = keras.Model(model.inputs, last.input)
        return (lambda x: pre(x, training=False)), "pre-softmax"
    if isinstance(last, keras.layers.Dense):
        feats = keras.Model(model.inputs, last.input)

        def dense_logits(x: Any) -> Any:
            z = tf.matmul(feats(x, training=False), last.kernel)
            return z + last.bias if last.bias is not None else z

        return dense_logits, "pre-softmax"
    return (lambda x: tf.math.log(tf.maximum(ref()(x, training=False), 1e-30))), "log-probabilities"


def probability_model(model: "keras.Model") -> "keras.Model":
    """Return ``model`` if it ends in softmax, else the model with a softmax appended.

    Example:
        >>> from hardenkit.testkit import tiny_model
        >>> m = tiny_model(); probability_model(m) is m
        True
    """
    import keras

    if _ends_in_softmax(model):
        return model
    inp = keras.Input(shape=model.input_shape[1:])
    return keras.Model(inp, keras.layers.Softmax(name="hardenkit_softmax")(model(inp)))


def _has_lambda_h5(path: Path) -> bool:
    import h5py

    with h5py.File(path, "r") as f:
        cfg = f.attrs.get("model_config")
    if cfg is None:
        return False
    if isinstance(cfg, bytes):
        cfg = cfg.decode("utf-8", "replace")
    return '"class_name": "Lambda"' in str(cfg)


def load_model(
    path: str | os.PathLike[str],
    unsafe: bool = False,
    sensitive: Sequence[str] | str | None = None,
    class_names: Sequence[str] | None = None,
) -> ModelBundle:
    """Load a ``.keras`` or ``.h5`` classifier with its class names.

    Keras safe mode stays on unless ``unsafe`` is True, so a model carrying Python code
    (a ``Lambda`` layer) is refused.

    Args:
        path: The model file.
        unsafe: Allow models with Lambda layers (arbitrary code). Defaults to False.
        sensitive: Override the sensitive classes saved with the model.
        class_names: Class names for a model saved without a sidecar.

    Returns:
        The :class:`ModelBundle`.

    Raises:
        ModelLoadError: Missing file, wrong ending, corrupt file, Lambda layer in safe mode,
            or no class names.

    Example:
        >>> load_model("model.keras").class_names  # doctest: +SKIP
        ('normal', 'sensitive')
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: no such model file")
    if p.is_dir() or p.suffix.lower() not in MODEL_EXTENSIONS:
        raise ModelLoadError(f"{p}: expected a .keras or .h5 model file")
    meta: dict[str, Any] = {}
    side = sidecar_path(p)
    if side.exists():
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"{side}: unreadable class-name file ({e})") from None
    names = tuple(class_names or meta.get("class_names") or ())
    if not names:
        raise ModelLoadError(f"{p}: no class names; expected {side} (written by harden train) "
                             "or pass class names explicitly")
    refuse = (f"{p}: refused to load: the model contains a Lambda layer (arbitrary Python code). "
              "Pass --unsafe-model only if you trust its source")
    import keras

    try:
        if p.suffix.lower() in (".h5", ".hdf5"):
            if not unsafe and _has_lambda_h5(p):
                raise ModelLoadError(refuse)
            model = keras.saving.load_model(p, compile=False, safe_mode=not unsafe)
        else:
            model = keras.saving.load_model(p, compile=False, safe_mode=not unsafe)
    except ModelLoadError:
        raise
    except ValueError as e:
        if "safe_mode" in str(e) or "Lambda" in str(e):
            raise ModelLoadError(refuse) from None
        raise ModelLoadError(f"{p}: cannot load model ({str(e).splitlines()[0]})") from None
    except Exception as e:  # noqa: BLE001 - Keras/h5py raise many unrelated types for corrupt files
        raise ModelLoadError(f"{p}: cannot load model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return ModelBundle(model, names, tuple(resolve_sensitive(names, sensitive or meta.get("sensitive"))), p)


def save_model(
    model: "keras.Model",
    path: str | os.PathLike[str],
    class_names: Sequence[str],
    sensitive: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` and its class-name sidecar, each atomically.

    Args:
        model: The Keras model.
        path: ``.keras`` (recommended) or ``.h5`` destination.
        class_names: Output names in order.
        sensitive: Sensitive class names. Defaults to the class named ``sensitive``.
        extra: More JSON-able facts to keep in the sidecar (training figures...).

    Returns:
        The model path.

    Example:
        >>> from hardenkit.testkit import tiny_model
        >>> save_model(tiny_model(), "/tmp/hk_doc.keras", ["normal", "sensitive"])  # doctest: +SKIP
        PosixPath('/tmp/hk_doc.keras')
    """
    p = Path(path)
    if p.suffix.lower() not in MODEL_EXTENSIONS:
        raise UsageError(f"{p}: model files must end in .keras or .h5")
    sens = resolve_sensitive(class_names, list(sensitive) if sensitive else None)
    with atomic_path(p, suffix=p.suffix) as tmp:
        model.save(tmp)
    meta = {"class_names": list(class_names), "sensitive": list(sens)}
    if extra:
        meta.update(extra)
    atomic_write_text(sidecar_path(p), json.dumps(meta, indent=2) + "\n")
    return p


def bundle_from_model(model: "keras.Model", class_names: Sequence[str], sensitive: Sequence[str] | None = None) -> ModelBundle:
    """Wrap an in-memory Keras model (e.g. in a notebook) as a :class:`ModelBundle`.

    Example:
        >>> from hardenkit.testkit import tiny_model
        >>> bundle_from_model(tiny_model(), ["normal", "sensitive"]).sensitive_indices
        (1,)
    """
    return ModelBundle(model, tuple(class_names), tuple(resolve_sensitive(class_names, list(sensitive) if sensitive else None)))
