"""``list-editors`` / ``list-metrics`` / ``list-datasets``: one table for any of the registries."""
from __future__ import annotations


def print_registry(reg, title: str, describe, console) -> None:
    """Available entries described, unavailable ones with their reason, and plugins rejected for shadowing
    a built-in."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("name", "available", "source", "details / reason"):
        table.add_column(col, overflow="fold")
    for name, entry in reg.entries().items():
        if entry.available:
            table.add_row(name, "[green]yes[/green]", entry.source, describe(entry.resolve()))
        else:
            table.add_row(name, "[red]no[/red]", entry.source, entry.error or "")
    for name, why in reg.rejected.items():
        table.add_row(name, "[red]rejected[/red]", "", why)
    console.print(table)
