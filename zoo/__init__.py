"""zoo: long-range sequence mixers behind one interface and one registry.

    import zoo
    layer = zoo.build("las", d_model=128, n_heads=4)     # any registered name
    y = layer(x, key_padding_mask=pad)                    # (B, L, D) -> (B, L, D)

See ``registry`` for registration and plugins, ``zoo.functional`` for the pure operators.
"""

from registry import build, describe, list as list_layers, register
from zoo.base import MixerConfig, SequenceMixer

__version__ = "0.1.0"

__all__ = ["MixerConfig", "SequenceMixer", "build", "describe", "list_layers", "register", "__version__"]
