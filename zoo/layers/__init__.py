"""Built-in layers. Each import line registers the names listed beside it (explicit, no scans)."""

from zoo.layers import (
    attention,  # noqa: F401  vanilla, local, smooth, las, las_chunk
    long_conv,  # noqa: F401  long_conv, hyena
    s4d,  # noqa: F401  s4d
)
