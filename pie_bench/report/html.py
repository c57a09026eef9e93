"""The report's public names, as ``cli.py`` and the tests import them (the package's modules hold them:
``pages`` the entry points, ``plots`` the figures, ``thumbnails`` the gallery images)."""
from pie_bench.report.pages import resolve_leaderboard, write_compare_report, write_report
from pie_bench.report.plots import pareto_front, plot_metrics
from pie_bench.report.thumbnails import mask_overlay

__all__ = ["mask_overlay", "pareto_front", "plot_metrics", "resolve_leaderboard", "write_compare_report",
           "write_report"]
