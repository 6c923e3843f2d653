"""Thin Typer commands, one module per verb; they parse, call the library and print."""
