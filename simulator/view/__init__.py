"""`nextstep view`: a local web app that reads a store (read-only) and the analysis, never the models."""

from ._serve import address, serve
from .labels import LabelSession, new_session
from .app import create_app

__all__ = ["LabelSession", "address", "create_app", "new_session", "serve"]
