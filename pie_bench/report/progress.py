"""Live progress of a run in the terminal."""
from __future__ import annotations


class RichProgress:
    """The runner's progress sink (``pie_bench.run.runner.ProgressSink``) as rich bars on ``console``."""

    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                                 transient=False)
        self.overall = None
        self.current = None
        self.failed = 0

    def start(self, total):
        self.progress.start()
        self.overall = self.progress.add_task("[bold]all editors", total=total)

    def editor(self, name, total):
        if self.current is not None:
            self.progress.update(self.current, visible=False)
        self.current = self.progress.add_task(f"  {name}", total=total)

    def advance(self, status):
        self.failed += status == "failed"
        self.progress.advance(self.overall)
        self.progress.advance(self.current)

    def note(self, text):
        self.progress.console.print(text)

    def stop(self):
        self.progress.stop()
