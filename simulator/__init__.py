"""nextstep's simulator. Each folder is a layer; a module imports only from its own layer or the ones below.

core (errors, data files, records) < models (chat interface, backends, the embedded engine)
< conversation (catalog, prompts, the conversation graph) < storage < runs (batch, branch) < api < cli.
The evaluator (`evaluations.judge`) sits above conversation; the analysis (`evaluations.analysis`) above storage.
"""
