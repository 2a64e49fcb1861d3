"""zoo: long-range sequence mixers behind one interface and one registry.

    import zoo
    layer = zoo.build("las", d_model=128, n_heads=4)     # any registered name
    y = layer(x, key_padding_mask=pad)                    # (B, L, D) -> (B, L, D)

See ``registry`` for registration and plugins, ``zoo.functional`` for the pure operators,
``zoo.data`` for the LRA tasks, ``zoo.train`` for the trainer and the comparison grid.
"""

from registry import build, describe, list_layers, register
from zoo import layers as _builtin_layers  # noqa: E402,F401  the built-ins (also this package's entry point)
from zoo.base import MixerConfig, SequenceMixer, config_field

__version__ = "0.2.0"

__all__ = ["MixerConfig", "SequenceMixer", "build", "config_field", "describe", "list_layers", "register",
           "__version__"]
