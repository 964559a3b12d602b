"""Sacred metrics (`metrics.json`: name -> {steps, values}) as asset metadata."""

from __future__ import annotations

import math

_BARS = "▁▂▃▄▅▆▇█"


def last_values(metrics: dict[str, dict]) -> dict[str, float]:
    """The last logged value of every metric."""
    return {name: s["values"][-1] for name, s in sorted(metrics.items()) if s.get("values")}


def _sparkline(values: list[float]) -> str:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    return "".join(_BARS[int((v - low) / span * (len(_BARS) - 1))] if v in finite else " "
                   for v in values)


def curve_markdown(metrics: dict[str, dict], *, match: str = "loss", rows: int = 20) -> str:
    """A markdown table of the metrics whose name contains `match`, at most `rows` steps
    (evenly spaced, last included), with a sparkline of the whole curve per metric."""
    names = [n for n in sorted(metrics) if match in n and metrics[n].get("values")]
    if not names:
        return ""
    steps = sorted({s for n in names for s in metrics[n]["steps"]})
    if len(steps) > rows:
        picks = {round(i * (len(steps) - 1) / (rows - 1)) for i in range(rows)}
        steps = [steps[i] for i in sorted(picks)]
    by_step = {n: dict(zip(metrics[n]["steps"], metrics[n]["values"], strict=False))
               for n in names}
    lines = ["| step | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for step in steps:
        cells = [f"{by_step[n][step]:.4g}" if step in by_step[n] else "" for n in names]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"`{n}`: {_sparkline(metrics[n]['values'])}" for n in names]
    return "\n".join(lines)
