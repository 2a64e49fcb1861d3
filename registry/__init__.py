"""The zoo's layer registry: name -> (mixer class, typed config), plus entry-point plugins.

    import registry
    registry.list("las*")                 # ['las', 'las_chunk']
    layer = registry.build("las", d_model=128, n_heads=4)
    print(registry.describe("s4d"))
"""

from registry._core import (
    DISABLE_ENV,
    ENTRY_POINT_GROUP,
    ConfigError,
    DuplicateNameError,
    Entry,
    PluginError,
    RegistryError,
    UnknownNameError,
    broken_plugins,
    build,
    describe,
    entries,
    get,
    list,
    list_layers,
    make_config,
    register,
    reload_plugins,
    schema,
    unregister,
)

__all__ = [
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "ConfigError",
    "DuplicateNameError",
    "Entry",
    "PluginError",
    "RegistryError",
    "UnknownNameError",
    "broken_plugins",
    "build",
    "describe",
    "entries",
    "get",
    "list",
    "list_layers",
    "make_config",
    "register",
    "reload_plugins",
    "schema",
    "unregister",
]
