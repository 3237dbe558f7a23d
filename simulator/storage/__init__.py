"""The SQLite store of runs, episodes, calls and verdicts. Imports the records only."""
