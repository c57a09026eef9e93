"""Training scripts for the ShapesEdit models (use editors and datasets)."""
