"""Summarises load-tests/compare-builds.sh's results (JSON lines: one per build and loadgen run, the build in `label`,
`base` or `new`; `run` is `alone` for a build measured on its own, `side-by-side` for both measured at once, each
caller alternating between them).

Per model, workload (protocol) and concurrency: the medians over the rounds of each build's throughput (from the
runs alone: side by side, both builds get the same req/s by construction) and p99 (from the runs side by side, where
a stall of the machine falls on both alike), with the lowest and highest in brackets, and the median of the
per-round ratios new / base. A workload is flagged when new is more than the tolerance (5%) slower: median
throughput ratio below 1 - tolerance, or median p99 ratio above 1 + tolerance. The summary reports, a human judges:
it exits 0 whatever the figures say. Standard library only.

    python3 load-tests/compare_builds.py target/perf/compare-builds.jsonl [--tolerance 0.05]
"""

import argparse
import json
import statistics
import sys

BUILDS = ("base", "new")


def spread(values, digits=0, unit=""):
    """The median of `values`, with the lowest and highest in brackets when there are several."""
    if not values:
        return "-"
    text = f"{statistics.median(values):,.{digits}f}{unit}"
    if len(values) > 1:
        text += f" ({min(values):,.{digits}f}-{max(values):,.{digits}f})"
    return text


def by_round(runs, run, build, key):
    return {r["round"]: r[key] for r in runs if r["run"] == run and r["label"] == build}


def ratios(runs, run, key):
    """new / base in each round that has both."""
    base, new = by_round(runs, run, "base", key), by_round(runs, run, "new", key)
    return [new[n] / base[n] for n in sorted(base) if n in new and base[n]]


def summarise(records, tolerance):
    groups = {}
    for record in records:
        groups.setdefault((record["model"], record["protocol"], record["concurrency"]), []).append(record)
    rounds = sorted({r["round"] for r in records})
    seconds = sorted({round(r["seconds"], 1) for r in records})
    print(
        f"{len(rounds)} round(s) of {'/'.join(f'{s:g}' for s in seconds)} s per run; medians over the rounds "
        "(lowest-highest). req/s: each build alone; p99: both side by side. Ratios: median of the per-round new / base."
    )
    print()
    print("| model | workload | c | base req/s | new req/s | req/s new / base | base p99 | new p99 | p99 new / base | |")
    print("| --- | --- | --: | --: | --: | --: | --: | --: | --: | --- |")
    flagged, incomplete, errors = [], [], 0
    for (model, protocol, concurrency), runs in groups.items():
        errors += sum(r["errors"] for r in runs)
        throughput = ratios(runs, "alone", "requests_per_second")
        p99 = ratios(runs, "side-by-side", "p99_us")
        reasons = []
        if throughput and statistics.median(throughput) < 1 - tolerance:
            reasons.append(f"req/s {statistics.median(throughput):.3f}x")
        if p99 and statistics.median(p99) > 1 + tolerance:
            reasons.append(f"p99 {statistics.median(p99):.3f}x")
        name = f"{model} {protocol} c={concurrency}"
        if reasons:
            flagged.append(f"{name} ({', '.join(reasons)})")
            verdict = "**slower**"
        elif throughput and p99:
            verdict = "ok"
        else:
            incomplete.append(name)
            verdict = "incomplete"
        cells = [
            spread(list(by_round(runs, "alone", build, "requests_per_second").values())) for build in BUILDS
        ] + [spread(throughput, 3)] + [
            spread(list(by_round(runs, "side-by-side", build, "p99_us").values()), unit=" µs") for build in BUILDS
        ] + [spread(p99, 3), verdict]
        print(f"| {model} | {protocol} | {concurrency} | " + " | ".join(cells) + " |")
    print()
    if errors:
        print(f"{errors} request(s) failed: the figures above are not comparable")
    if incomplete:
        print(f"incomplete (no round measured both builds, alone and side by side): {'; '.join(incomplete)}")
    measured = len(groups) - len(incomplete)
    if flagged:
        print(f"verdict: new is more than {tolerance:.0%} slower on {len(flagged)} workload(s): {'; '.join(flagged)}")
    else:
        print(
            f"verdict: new is not more than {tolerance:.0%} slower on any of the {measured} workload(s) measured "
            f"(req/s new / base >= {1 - tolerance:.2f} and p99 new / base <= {1 + tolerance:.2f})"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="the JSON lines of load-tests/compare-builds.sh")
    parser.add_argument("--tolerance", type=float, default=0.05, help="how much slower is flagged (default 0.05)")
    args = parser.parse_args()
    try:
        with open(args.results) as results:
            records = [json.loads(line) for line in results if line.strip()]
    except (OSError, ValueError) as error:
        print(f"compare_builds: cannot read {args.results}: {error}", file=sys.stderr)
        return 2
    if not records:
        print(f"compare_builds: no results in {args.results}")
        return 0
    summarise(records, args.tolerance)
    return 0


if __name__ == "__main__":
    sys.exit(main())
