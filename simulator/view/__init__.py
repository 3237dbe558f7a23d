"""`nextstep view`: a local web app that reads a store (read-only) and the analysis, never the models."""

from ._serve import address, serve
from .labels import LabelSession, default_output, labeller_name, new_session
from .app import create_app

__all__ = ["LabelSession", "address", "create_app", "default_output", "labeller_name", "new_session", "serve"]
