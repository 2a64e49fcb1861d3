"""The old home of the attention helpers, kept so existing imports work.

The helpers now live by job: :mod:`zoo.functional.call` (the call description and its checks),
:mod:`zoo.functional.capture` (CUDA-graph capture state and per-mask caches) and
:mod:`zoo.functional.packing` (padding-free layouts). Import from those in new code.
"""

from zoo.functional.call import (
                                 AttentionCall,
                                 allowed_mask,
                                 bucket_length,
                                 exception_line,
                                 row_ok,
                                 validate_options,
                                 validate_qkv,
)
from zoo.functional.capture import capturing, derived_from_mask, graph_safe, graph_safe_active
from zoo.functional.packing import Packing, packing

__all__ = ["AttentionCall", "Packing", "allowed_mask", "bucket_length", "capturing", "derived_from_mask",
           "exception_line", "graph_safe", "graph_safe_active", "packing", "row_ok", "validate_options", "validate_qkv"]
