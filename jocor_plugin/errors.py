"""Errors a user can fix from the recipe or the command line: reported as one clear line."""

__all__ = ["UserError", "DataError", "ModelError"]


class UserError(Exception):
    """Bad input (recipe, data, model); the message names the problem and the fix."""


class DataError(UserError, ValueError):
    """The dataset is missing, unreachable or malformed."""


class ModelError(UserError, ValueError):
    """The backbone or its weights can't be built or loaded."""
