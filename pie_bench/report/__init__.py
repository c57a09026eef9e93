"""The top layer: terminal tables (``tables``), comparison (``compare``) and the static HTML report.

The report: ``pages`` (write_report, write_compare_report) renders ``templates/`` (jinja2, autoescape on,
``render``) with ``static/`` inlined; ``model`` is the report's view of a leaderboard (the only reader of
its keys); ``html_tables``, ``gallery`` (+ ``thumbnails``) and ``plots`` build what the pages show.
``html`` keeps the public names. Numbers are spelled by ``pie_bench.core.formatting`` everywhere."""
