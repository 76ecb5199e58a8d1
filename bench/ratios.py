"""tunegate against Portkey from one `bench/gateway_bench.sh` run, as the RESULTS.md table.

    .venv/bin/python bench/ratios.py bench/results/gateway-<time>.jsonl

One table per pass (`REPEAT=2` runs two, tagged `run1`, `run2`), one row per scenario and
concurrency: both gateways' req/s, added p50 (the gateway's p50 minus
the direct call's), CPU per request, and tunegate / Portkey for each; then the uploads. A cell
is bold where the target is met: CPU per request at most 0.8× Portkey's, req/s at least 1.25×;
an upload at least 2× Portkey's MB/s with tunegate's peak RSS growth at most 64 MB.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

CPU_RATIO_MAX = 0.8
RPS_RATIO_MIN = 1.25
UPLOAD_RATIO_MIN = 2.0
UPLOAD_RSS_GROWTH_MAX_MB = 64.0


def _loads(path: Path) -> dict[str, dict[tuple[str, int, str], dict[str, Any]]]:
    """The load records of each pass (by tag), keyed by (scenario, concurrency, target)."""
    passes: dict[str, dict[tuple[str, int, str], dict[str, Any]]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "load":
            rows = passes.setdefault(record.get("tag") or "", {})
            rows[(record["scenario"], record["conc"], record["target"])] = record
    return passes


def _bold(text: str, met: bool) -> str:
    return f"**{text}**" if met else text


def table(rows: dict[tuple[str, int, str], dict[str, Any]]) -> str:
    out = [
        "| scenario | c | Portkey req/s | tunegate req/s | Portkey +p50 ms | tunegate +p50 ms "
        "| Portkey CPU µs/req | tunegate CPU µs/req | CPU ratio | req/s ratio | +p50 ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    scenarios = list(dict.fromkeys(scenario for scenario, _, _ in rows))
    for scenario, conc in sorted({(s, c) for s, c, _ in rows}, key=lambda k: (scenarios.index(k[0]), k[1])):
        try:
            direct, portkey, ours = (rows[(scenario, conc, t)] for t in ("direct", "portkey", "tunegate"))
        except KeyError:
            continue
        added_p, added_t = portkey["p50_ms"] - direct["p50_ms"], ours["p50_ms"] - direct["p50_ms"]
        cpu_p, cpu_t = portkey["gw_cpu_us_per_req"], ours["gw_cpu_us_per_req"]
        cpu, rps = cpu_t / cpu_p, ours["rps"] / portkey["rps"]
        p50 = added_t / added_p if added_p > 0 else float("inf")
        cells = [
            scenario,
            str(conc),
            f"{portkey['rps']:.0f}",
            _bold(f"{ours['rps']:.0f}", rps >= RPS_RATIO_MIN),
            f"+{added_p:.3f}",
            f"+{added_t:.3f}",
            f"{cpu_p:.0f}",
            _bold(f"{cpu_t:.0f}", cpu <= CPU_RATIO_MAX),
            f"{cpu:.2f}",
            f"{rps:.2f}",
            f"{p50:.2f}",
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def upload_table(path: Path) -> str:
    """One row per upload of tunegate and Portkey: MB/s, the ratio, peak RSS growth."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    uploads = [r for r in records if r.get("kind") == "upload" and r["target"] in ("portkey", "tunegate")]
    portkey = {(r["tag"], r["file"], r["rep"]): r["MBps"] for r in uploads if r["target"] == "portkey"}
    out = [
        "| file | rep | Portkey MB/s | tunegate MB/s | ratio | tunegate RSS before → peak MB | growth MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in uploads:
        theirs = portkey.get((r["tag"], r["file"], r["rep"]))
        if r["target"] != "tunegate" or not theirs:
            continue
        growth = r["hwm_mb"] - r["rss_before_mb"]
        ratio = r["MBps"] / theirs
        speed = _bold(f"{r['MBps']:.0f}", ratio >= UPLOAD_RATIO_MIN and r["ok"])
        grown = _bold(f"{growth:.0f}", growth <= UPLOAD_RSS_GROWTH_MAX_MB)
        out.append(
            f"| {r['file']} | {r['rep']} | {theirs:.0f} | {speed} | {ratio:.2f} "
            f"| {r['rss_before_mb']:.0f} → {r['hwm_mb']:.0f} | {grown} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        for tag, rows in _loads(Path(name)).items():
            print(f"{name} {tag}".rstrip() + "\n\n" + table(rows) + "\n")
        print(upload_table(Path(name)) + "\n")
