"""Compare two leaderboards: per editor x metric deltas, flagging changes beyond 2x the combined stderr."""
from __future__ import annotations

import math
from typing import Union

from pie_bench.run.leaderboard import Leaderboard, as_leaderboard

Z = 2.0


def compare_leaderboards(a: Union[Leaderboard, dict], b: Union[Leaderboard, dict], z: float = Z) -> dict:
    """Rows for every (editor, metric) present in both. ``regression`` is a flagged change in the
    worse direction (by the metric's higher_is_better). Both boards are read through the typed schema,
    so a previous-version board compares with a current one."""
    a, b = as_leaderboard(a, "A"), as_leaderboard(b, "B")
    notes = []
    if a.dataset.get("annotations_sha256") != b.dataset.get("annotations_sha256"):
        notes.append(f"datasets differ: {a.dataset.get('name')} vs {b.dataset.get('name')}")
    if a.metrics_backbone != b.metrics_backbone:
        notes.append(f"metric backbones differ: {a.metrics_backbone} vs {b.metrics_backbone}")
    rows = []
    for editor in sorted(set(a.editors) | set(b.editors)):
        ea, eb = a.editors.get(editor), b.editors.get(editor)
        if ea is None or eb is None:
            notes.append(f"editor {editor} only in {'B' if ea is None else 'A'}")
            continue
        if ea.config_hash != eb.config_hash:
            notes.append(f"editor {editor}: configs differ")
        # set metrics compare like the others, their standard error read off the 95% bootstrap interval
        pairs = [(m, ea.metrics[m], eb.metrics[m], ea.metrics[m].value, eb.metrics[m].value, ea.metrics[m].error,
                  eb.metrics[m].error) for m in sorted(set(ea.metrics) & set(eb.metrics), key=list(ea.metrics).index)]
        pairs += [(m, ea.set_metrics[m], eb.set_metrics[m], ea.set_metrics[m].mean, eb.set_metrics[m].mean,
                   ea.set_metrics[m].error, eb.set_metrics[m].error)
                  for m in sorted(set(ea.set_metrics) & set(eb.set_metrics), key=list(ea.set_metrics).index)]
        for metric, ma, mb, va, vb, sa, sb in pairs:
            delta = vb - va if math.isfinite(va) and math.isfinite(vb) else float("nan")
            se = math.sqrt((sa if math.isfinite(sa) else 0) ** 2 + (sb if math.isfinite(sb) else 0) ** 2)
            if math.isfinite(delta):
                flagged = abs(delta) > z * se and abs(delta) > 1e-9 * max(1.0, abs(va))
            else:  # a metric that became undefined (or infinite) is a change worth a look
                flagged = not (math.isnan(va) and math.isnan(vb)) and not (va == vb)
            hib = ma.higher_is_better
            worse = (delta < 0) if hib else (delta > 0)
            if not math.isfinite(delta) and flagged:
                worse = (math.isnan(vb) or (vb < va if hib else vb > va))
            rows.append({"editor": editor, "metric": metric, "a": va, "b": vb, "delta": delta, "se": se,
                         "n_a": ma.n, "n_b": mb.n, "flagged": bool(flagged),
                         "regression": bool(flagged and worse), "higher_is_better": hib})
        if eb.n_failed > ea.n_failed:
            rows.append({"editor": editor, "metric": "n_failed", "a": ea.n_failed, "b": eb.n_failed,
                         "delta": eb.n_failed - ea.n_failed, "se": 0.0, "n_a": ea.n, "n_b": eb.n, "flagged": True,
                         "regression": True, "higher_is_better": False})
    return {"rows": rows, "notes": notes, "n_regressions": sum(r["regression"] for r in rows),
            "n_flagged": sum(r["flagged"] for r in rows)}
