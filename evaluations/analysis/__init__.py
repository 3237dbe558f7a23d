"""Statistics, tables, plots and the HTML report over stored runs."""
