"""The robustness table: accuracy per corruption and severity, summarised.

Functions of scores only; the corruptions themselves are clip transforms in
:mod:`videocls.data.corruptions`.
"""

from __future__ import annotations

from collections.abc import Mapping


def robustness_summary(results: Mapping[tuple[str, int], float]) -> dict:
    """JSON-ready nesting of ``{(corruption, severity): accuracy}``.

    Returns ``{"corruptions": {name: {"1": acc, ..., "mean": acc}}, "mean": acc}``; corruptions
    keep their order of first appearance, and the overall mean averages the per-corruption means
    so that every corruption weighs the same even where some severities are missing.
    """
    if not results:
        raise ValueError("no robustness results to summarise")
    table: dict[str, dict[str, float]] = {name: {} for name, _ in results}
    for (name, severity), accuracy in sorted(results.items(), key=lambda item: item[0][1]):
        table[name][str(severity)] = float(accuracy)
    for row in table.values():
        row["mean"] = sum(row.values()) / len(row)
    return {"corruptions": table, "mean": sum(row["mean"] for row in table.values()) / len(table)}


def robustness_table(results: Mapping[tuple[str, int], float]) -> str:
    """Markdown table: one row per corruption, one column per severity, then the means."""
    summary = robustness_summary(results)
    severities = sorted({severity for _, severity in results})
    header = ["corruption", *map(str, severities), "mean"]
    rows = [
        [name, *(f"{row[str(s)]:.4f}" if str(s) in row else "-" for s in severities), f"{row['mean']:.4f}"]
        for name, row in summary["corruptions"].items()
    ]
    rows.append(["mean", *("" for _ in severities), f"{summary['mean']:.4f}"])
    widths = [max(len(line[i]) for line in (header, *rows)) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"

    return "\n".join([fmt(header), fmt(["-" * width for width in widths]), *(fmt(row) for row in rows)])
