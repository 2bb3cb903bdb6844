"""Every node type, registered by name. Each module of this package defines types with ``@register``.

The modules are discovered, so that adding a type is adding one class in one module here.
"""

import importlib
import pkgutil

from .base import NodeContext, NodeType, get_node_type, node_type_names, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["NodeContext", "NodeType", "get_node_type", "node_type_names", "register"]
