"""Exceptions that separate a user's mistake from a model's failure."""


class UserError(Exception):
    """Bad input from the user: the CLI prints it on one line and exits 2."""


class ModelError(Exception):
    """The model endpoint failed or its output could not be used."""


class OutputError(ModelError):
    """The model's output stayed invalid after every re-ask."""


class StorageError(UserError):
    """The database could not be written (a full disk, a lock held too long, a damaged file): one line, exit 2."""
