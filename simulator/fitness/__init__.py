"""Is a model fit to run the study? A fixed protocol, run through `simulator.api`, read as a verdict per criterion."""

from ._run import PROTOCOL, fitness, plan, protocol

__all__ = ["PROTOCOL", "fitness", "plan", "protocol"]
