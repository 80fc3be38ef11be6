"""The registry of provider kinds. Adding a kind: one module with a KIND, one line here."""

from service.kinds import dtac, threecx
from service.kinds.base import ProviderKind

KINDS: dict[str, ProviderKind] = {k.name: k for k in (threecx.KIND, dtac.KIND)}

__all__ = ["KINDS", "ProviderKind"]
