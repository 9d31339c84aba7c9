"""Errors a user can cause and fix: Hydra prints their message alone, without a traceback."""

from hydra.errors import CompactHydraException


class UserError(CompactHydraException):
    """A bad setting, an unreachable model or dataset, a missing package: the message names the fix."""
