"""The bottom layer: errors, reading data files, and the records every other layer passes around."""
