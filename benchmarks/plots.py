"""The report's two plots (PNG, next to results.json): latency percentiles against users, for
the stack and the seed's "before", and throughput per path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402

PERCENTILES = (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"))


def latency_against_users(steps: dict[str, list[dict]], path: Path) -> Path:
    """steps: {"stack": [users run, ...], "before": [...]}, each run as run_users returns it."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for (system, runs), style in zip(steps.items(), ("-", "--"), strict=False):
        users = [run["users"] for run in runs]
        for key, label in PERCENTILES:
            axes.plot(users, [max(run[key], 0.1) for run in runs], style, marker="o", label=f"{system} {label}")
    axes.axhline(100, color="grey", linewidth=0.8, linestyle=":")
    axes.set_yscale("log")
    axes.set_xlabel("concurrent users (1 s think time)")
    axes.set_ylabel("response time, ms (log)")
    axes.set_title("Latency percentiles against users, through nginx")
    axes.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def throughput_per_path(rates: dict[str, float], path: Path) -> Path:
    names = list(rates)
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    axes.barh(names, [rates[name] for name in names], color="#4c72b0")
    axes.invert_yaxis()
    axes.set_xlabel("answered 2xx per second")
    axes.set_title("Throughput per path (same run)")
    for index, name in enumerate(names):
        axes.text(rates[name], index, f" {rates[name]:,.0f}", va="center", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
