"""Tables from the raw results of run.py (Markdown, for the README).

    .venv/bin/python benchmarks/experience_library/summarize.py [results-dir]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results"
    seeds = [json.loads(p.read_text()) for p in sorted(results.glob("seed-*.json"))]
    print("| seed | empty library | grpo | direct | group1 | library sizes (grpo/direct/group1) |")
    print("|---|---|---|---|---|---|")
    for run in seeds:
        variants = run["variants"]
        cells = [f"{variants[v]['after']['mean']:.3f} ({variants[v]['delta']:+.3f})"
                 for v in ("grpo", "direct", "group1")]
        sizes = "/".join(str(len(variants[v]["library"])) for v in ("grpo", "direct", "group1"))
        print(f"| {run['seed']} | {run['before']['mean']:.3f} | " + " | ".join(cells)
              + f" | {sizes} |")
    if seeds:
        print(f"| mean | {statistics.mean(r['before']['mean'] for r in seeds):.3f} | " + " | ".join(
            f"{statistics.mean(r['variants'][v]['after']['mean'] for r in seeds):.3f} "
            f"({statistics.mean(r['variants'][v]['delta'] for r in seeds):+.3f})"
            for v in ("grpo", "direct", "group1")) + " | |")
        print()
        print("| variant | Pass@k after (mean over seeds) | groups used / total | "
              "ops proposed | applied | rejected (by reason) |")
        print("|---|---|---|---|---|---|")
        before_pass = statistics.mean(r["before"]["pass"] for r in seeds)
        print(f"| empty library | {before_pass:.3f} | | | | |")
        for name in ("grpo", "direct", "group1"):
            totals: dict[str, float] = {}
            for run in seeds:
                for key, value in run["variants"][name]["totals"].items():
                    totals[key] = totals.get(key, 0.0) + value
            reasons = ", ".join(f"{k.removeprefix('ops/rejected/')} {int(v)}"
                                for k, v in sorted(totals.items())
                                if k.startswith("ops/rejected/"))
            groups = (f"{int(totals.get('groups/used', 0))} / {int(totals.get('groups/total', 0))}"
                      if "groups/total" in totals else "-")
            passed = statistics.mean(r["variants"][name]["after"]["pass"] for r in seeds)
            print(f"| {name} | {passed:.3f} | {groups} | {int(totals.get('ops/proposed', 0))} | "
                  f"{int(totals.get('ops/applied', 0))} | {reasons or '-'} |")
    throughput = results / "throughput.json"
    if throughput.exists():
        data = json.loads(throughput.read_text())
        rates = data["rolloutsPerSecond"]
        print()
        print(f"Throughput ({data['requests']} rollouts per pass, concurrency "
              f"{data['concurrency']}): plain generator {rates['generator']} rollouts/s, engine "
              f"{rates['engine']} rollouts/s: **{data['engineShareOfSaturated']:.0%}** of the "
              "saturated rate.")


if __name__ == "__main__":
    main()
