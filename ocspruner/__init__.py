"""ocspruner: one-cycle structured pruning (OCSPruner) for PyTorch.

Core (no training code): ``dependency`` (channel groups over DepGraph), ``cost`` (analytic cost
model), ``importance`` (saliency, Eq. 2), ``partition`` (budget, Eq. 1), ``stability`` (Eq. 3-6),
``schedule`` (Eq. 7), ``regularizer`` (Eq. 8-9), ``surgery`` (physical pruning), ``engine``.
"""
from .api import PruneResult, prune
from .cost import CostModel
from .dependency import ChannelSpace, UnsupportedModelError
from .engine import PRUNED, SEARCH, SPARSITY, EpochReport, OCSConfig, OCSPruner
from .io import CheckpointError, load
from .partition import BudgetError, Partitioner

__version__ = "0.1.0"
__all__ = ["OCSPruner", "OCSConfig", "EpochReport", "ChannelSpace", "CostModel", "Partitioner",
           "BudgetError", "UnsupportedModelError", "CheckpointError", "load", "SEARCH", "SPARSITY", "PRUNED",
           "prune", "PruneResult"]
