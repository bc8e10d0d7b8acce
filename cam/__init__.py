"""cam: heatmaps of what drives an image classifier's sensitive score.

Grad-CAM, Grad-CAM++, Score-CAM, Faster Score-CAM, LayerCAM, saliency and SmoothGrad (all
tf-keras-vis), for Keras 3 models including nested ones (a base model used as a layer),
plus region extraction, overlays and faithfulness metrics (deletion/insertion AUC,
pointing game, item recall, MPRT sanity check).

Default method: ``faster-scorecam``. Measured with ``cam eval --method all`` (demo model v3,
``demo-model-d1-v3.keras``, and demo data, whole test split: 200 sensitive images, 16 steps;
rerun it to refresh): it is the second most faithful method by deletion AUC (0.144, after
Score-CAM's 0.135, at a seventh of its cost: 4.1 s vs 27.9 s) and finds more of the items than
the gradient CAMs; being gradient-free it also does not suffer from the gradient masking that
adversarial hardening can cause::

    method           deletion AUC  insertion AUC  pointing game  item recall  MPRT rho  seconds
    faster-scorecam     0.144         0.789          0.940          0.884       0.822     4.1
    scorecam            0.135 (best)  0.789          0.950          0.897       0.836    27.9
    gradcam++           0.184         0.794          0.955 (best)   0.875       0.526     0.36
    layercam            0.184         0.794          0.955          0.875       0.526     0.44
    gradcam             0.224         0.792          0.950          0.868       0.458     0.73
    saliency            0.170         0.782          0.535          0.915       0.299     1.2
    smoothgrad          0.146         0.722          0.520          0.953       0.611    23.8
    random              0.496         0.503          0.010          0.734       n/a

Mean gain over random (share of the gap to perfect, averaged over the 4 quality metrics):
scorecam 0.72, faster-scorecam 0.70, gradcam++ 0.67, gradcam 0.65, smoothgrad 0.62, saliency
0.61. The weak point of both Score-CAMs is the model-parameter randomisation check: MPRT rho
0.82 (Grad-CAM++ 0.53, Grad-CAM 0.46) says their maps change least when the top layers'
weights are randomised, so they lean on the image's own structure more than the gradient CAMs
do. Pass ``method="gradcam++"`` where speed matters more (about a tenth of the cost).
(Saliency/SmoothGrad item recall is high because their maps are diffuse.)

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
from .regions import hot_mask as hot_mask
from .regions import label_items as label_items
from .regions import overlay as overlay
from .regions import regions as regions

__all__ = ["DEFAULT_METHOD", "METHODS", "CamMethod", "Explainer", "Region", "explain", "evaluate",
           "hot_mask", "label_items", "overlay", "regions"]

_LAZY = {"Explainer": "explainer", "explain": "explainer", "evaluate": "metrics"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'cam' has no attribute {name!r}")
