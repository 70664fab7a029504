"""Command-line jobs (`python -m jobs.<name>`)."""
