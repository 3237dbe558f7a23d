"""nextstep's simulator: catalog, backends, the conversation graph and the episode runner."""

from .catalog import Catalog, Persona, Profile, Setting, Strategy, load_catalog
from .chat import ChatModel, Completion
from .errors import ModelError, OutputError, UserError
from .graph import Context, Scenario, build_graph
from .prompts import Prompts
from .runner import run_episode

__all__ = [
    "Catalog", "ChatModel", "Completion", "Context", "ModelError", "OutputError", "Persona", "Profile",
    "Prompts", "Scenario", "Setting", "Strategy", "UserError", "build_graph", "load_catalog", "run_episode",
]  # fmt: skip
