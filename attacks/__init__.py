"""attacks: evasion attacks, boundary samples, pool mining and robustness metrics.

Importing this package is cheap: TensorFlow and foolbox are imported on first use.

Example:
    >>> import attacks
    >>> sorted(attacks.ATTACKS)
    ['cw-l2', 'deepfool', 'fgsm', 'hopskipjump', 'pgd', 'pgd-l2']
"""

from .base import ATTACKS as ATTACKS
from .base import Attack as Attack
from .base import AttackResult as AttackResult
from .base import generate as generate
from .base import project as project
from .boundary import bisect_boundary as bisect_boundary
from .boundary import jacobian_boundary as jacobian_boundary
from .metrics import binary_metrics as binary_metrics
from .metrics import robustness as robustness
from .metrics import threshold_at_recall as threshold_at_recall
from .mining import MinedItem as MinedItem
from .mining import MineResult as MineResult
from .mining import embed as embed
from .mining import mine_pool as mine_pool
from .pgd import linf_pgd_steps as linf_pgd_steps
from .pgd import pgd_tf as pgd_tf

__all__ = [
    "ATTACKS", "Attack", "AttackResult", "MineResult", "MinedItem", "bisect_boundary", "binary_metrics",
    "embed", "generate", "jacobian_boundary", "linf_pgd_steps", "mine_pool", "pgd_tf", "project", "robustness",
    "threshold_at_recall",
]
