"""Recipes shipped with onegen (`onegen run recipes/onegen.toml`); data files only."""
