"""Model backends: the chat interface the graph sees, the OpenAI-compatible client, the embedded engine."""
