"""Compare two leaderboards: per editor x metric deltas, flagging changes beyond 2x the combined stderr."""
from __future__ import annotations

import math
from typing import Optional

from pie_bench.core.errors import ResultsError
from pie_bench.run.results import decode_float

Z = 2.0


def _num(x) -> float:
    return decode_float(x)


def compare_leaderboards(a: dict, b: dict, z: float = Z) -> dict:
    """Rows for every (editor, metric) present in both. ``regression`` is a flagged change in the
    worse direction (by the metric's higher_is_better)."""
    if a.get("schema_version") != b.get("schema_version"):
        raise ResultsError(f"cannot compare schema version {a.get('schema_version')} with "
                           f"{b.get('schema_version')}; regenerate the older leaderboard")
    notes = []
    if a["dataset"].get("annotations_sha256") != b["dataset"].get("annotations_sha256"):
        notes.append(f"datasets differ: {a['dataset'].get('name')} vs {b['dataset'].get('name')}")
    if a.get("metrics_backbone") != b.get("metrics_backbone"):
        notes.append(f"metric backbones differ: {a.get('metrics_backbone')} vs {b.get('metrics_backbone')}")
    rows = []
    for editor in sorted(set(a["editors"]) | set(b["editors"])):
        ea, eb = a["editors"].get(editor), b["editors"].get(editor)
        if ea is None or eb is None:
            notes.append(f"editor {editor} only in {'B' if ea is None else 'A'}")
            continue
        if ea.get("config_hash") != eb.get("config_hash"):
            notes.append(f"editor {editor}: configs differ")
        for metric in sorted(set(ea["metrics"]) & set(eb["metrics"]), key=list(ea["metrics"]).index):
            ma, mb = ea["metrics"][metric], eb["metrics"][metric]
            va, vb = _num(ma["mean"]), _num(mb["mean"])
            sa, sb = _num(ma.get("stderr")), _num(mb.get("stderr"))
            delta = vb - va if math.isfinite(va) and math.isfinite(vb) else float("nan")
            se = math.sqrt((sa if math.isfinite(sa) else 0) ** 2 + (sb if math.isfinite(sb) else 0) ** 2)
            if math.isfinite(delta):
                flagged = abs(delta) > z * se and abs(delta) > 1e-9 * max(1.0, abs(va))
            else:  # a metric that became undefined (or infinite) is a change worth a look
                flagged = not (math.isnan(va) and math.isnan(vb)) and not (va == vb)
            hib = ma.get("higher_is_better", True)
            worse = (delta < 0) if hib else (delta > 0)
            if not math.isfinite(delta) and flagged:
                worse = (math.isnan(vb) or (vb < va if hib else vb > va))
            rows.append({"editor": editor, "metric": metric, "a": va, "b": vb, "delta": delta, "se": se,
                         "n_a": ma.get("n"), "n_b": mb.get("n"), "flagged": bool(flagged),
                         "regression": bool(flagged and worse), "higher_is_better": hib})
        fa, fb = ea.get("n_failed", 0), eb.get("n_failed", 0)
        if fb > fa:
            rows.append({"editor": editor, "metric": "n_failed", "a": fa, "b": fb, "delta": fb - fa, "se": 0.0,
                         "n_a": ea.get("n"), "n_b": eb.get("n"), "flagged": True, "regression": True,
                         "higher_is_better": False})
    return {"rows": rows, "notes": notes, "n_regressions": sum(r["regression"] for r in rows),
            "n_flagged": sum(r["flagged"] for r in rows)}
