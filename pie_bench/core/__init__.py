"""The bottom layer: types, errors, masks, paths, provenance, formatting and the one registry. Imports nothing else of the project."""
