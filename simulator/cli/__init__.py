"""The `nextstep` command line: parses flags and calls the library."""
