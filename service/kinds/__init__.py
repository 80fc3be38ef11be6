"""The registry of provider kinds. Adding a kind: one module with a KIND, one line here."""

from service.kinds import antbuddy, dtac, kazoo, promptcall, threecx
from service.kinds.base import ProviderKind

KINDS: dict[str, ProviderKind] = {
    k.name: k for k in (threecx.KIND, dtac.KIND, promptcall.KIND, kazoo.KIND, antbuddy.KIND)
}

__all__ = ["KINDS", "ProviderKind"]
