"""Token compression for LLaVA's vision towers.

``import llava_patch; llava_patch.apply()`` before building or loading a LLaVA model; then set
``use_token_compression`` (and the other :class:`CompressionArguments` fields) in the model
arguments or config. Importing this package does not import LLaVA; ``apply()`` does.
"""

from llava_patch.config import CompressionArguments
from llava_patch.patch import COMPANION_SUFFIX, apply, companion_path, compressed_tower, is_applied

__all__ = [
    "COMPANION_SUFFIX",
    "CompressionArguments",
    "apply",
    "companion_path",
    "compressed_tower",
    "is_applied",
]
