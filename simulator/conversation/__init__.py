"""The conversation: the catalog, the prompts, the LangGraph conversation graph and the episode runner."""
