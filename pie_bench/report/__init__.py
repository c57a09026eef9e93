"""The top layer: terminal tables, compare and the HTML report."""
