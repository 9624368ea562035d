"""The one failure of secure aggregation that is not a single bad message."""

from __future__ import annotations

from fedloom.core.errors import FedloomError


class SecAggAborted(FedloomError):
    """A secure-aggregation round cannot finish correctly and is abandoned.

    Raised when too few clients remain to recover the masks (a neighbourhood lost more
    than ``neighbors - threshold`` members) or when recovered secrets are inconsistent.
    The round yields no sum at all, never a wrong one; the next round starts afresh.
    """
