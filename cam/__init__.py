"""cam: heatmaps of what drives an image classifier's sensitive score.

Grad-CAM, Grad-CAM++, Score-CAM, Faster Score-CAM, LayerCAM, saliency and SmoothGrad (all
tf-keras-vis), for Keras 3 models including nested ones (a base model used as a layer),
plus region extraction, overlays and faithfulness metrics (deletion/insertion AUC,
pointing game, item recall, MPRT sanity check).

Default method: ``faster-scorecam``. Chosen with ``cam eval --method all`` (demo model and
demo data, whole test split: 200 sensitive images, 16 steps): it is the most faithful CAM
method (deletion AUC 0.153 vs 0.263 for Grad-CAM++) and localises as well as plain Score-CAM
at a quarter of its cost; being gradient-free it also does not suffer from the gradient
masking that adversarial hardening can cause::

    method           deletion AUC  insertion AUC  pointing game  item recall  MPRT rho
    faster-scorecam     0.153 (best)   0.849          0.965          0.925        0.542
    scorecam            0.153          0.849          0.970 (best)   0.922        0.590
    gradcam++           0.263          0.853          0.935          0.909        0.342
    layercam            0.263          0.853          0.935          0.909        0.342
    gradcam             0.393          0.858 (best)   0.925          0.906        0.332
    saliency            0.375          0.843          0.835          0.962        0.099
    smoothgrad          0.521          0.783          0.740          0.994        0.314
    random              0.547          0.571          0.010          0.734        n/a

Mean gain over random (share of the gap to perfect, averaged over the 4 quality metrics):
faster-scorecam 0.76, scorecam 0.76, gradcam++ 0.69, saliency 0.66, gradcam 0.63. Its MPRT
rho (0.54) is higher than Grad-CAM++'s (0.34) but still well below 1 (maps do depend on the
weights). It costs ~11 forward passes per image (10 masked channels), about 10x Grad-CAM++;
pass ``method="gradcam++"`` where speed matters more. (Saliency/SmoothGrad item recall is high
because their maps are diffuse.)

Importing ``cam`` does not import TensorFlow; the heavy modules load on first use.

Example:
    >>> import cam
    >>> from hardenkit.modelio import bundle_from_model
    >>> from hardenkit.testkit import tiny_model, dummy_image
    >>> b = bundle_from_model(tiny_model(), ["normal", "sensitive"])
    >>> m = cam.explain(b, [dummy_image()])[0]
    >>> m.shape, float(m.min()) >= 0.0, float(m.max()) <= 1.0
    ((8, 8), True, True)
"""

from __future__ import annotations

from typing import Any

from .methods import DEFAULT_METHOD as DEFAULT_METHOD
from .methods import METHODS as METHODS
from .methods import CamMethod as CamMethod
from .regions import Region as Region
from .regions import overlay as overlay
from .regions import regions as regions

__all__ = ["DEFAULT_METHOD", "METHODS", "CamMethod", "Explainer", "Region", "explain", "evaluate",
           "overlay", "regions"]

_LAZY = {"Explainer": "explainer", "explain": "explainer", "evaluate": "metrics"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'cam' has no attribute {name!r}")
