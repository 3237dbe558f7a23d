"""`nextstep view`: a local web app that reads a store (read-only) and the analysis, never the models."""

from ._serve import address, serve
from .app import create_app

__all__ = ["address", "create_app", "serve"]
