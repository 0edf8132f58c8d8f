"""Networks: the paper's MLP and CNN registered with timm (``paper_nets``), ``PairNet`` and the
factory that builds any timm backbone twice (``pair``), and a trained network saved or loaded as a
timm model folder (``timm_folder``).

Importing this package registers ``jocor_mlp`` and ``jocor_cnn`` with timm. May import ``core``.
"""
from . import paper_nets, preact_resnet  # noqa: F401  (registers jocor_mlp / jocor_cnn / preact_resnet18 with timm)
from .pair import PairNet, check_forward, create_backbone, create_pair
from .paper_nets import JoCoRCNN, JoCoRMLP

__all__ = ["PairNet", "create_pair", "create_backbone", "check_forward", "JoCoRMLP", "JoCoRCNN"]
