"""A local stand-in for dummyjson.com's /products, with switchable faults."""

from devtools.mirror.server import Faults, Mirror, load_products

__all__ = ["Faults", "Mirror", "load_products"]
