"""Summarises load-tests/compare-builds.sh's results (JSON lines: one per build and loadgen run, the build in `label`,
`base` or `new`; `run` is `alone` for a build measured on its own, `side-by-side` for both measured at once, each
caller alternating between them).

Per model, workload (protocol) and concurrency: the medians over the rounds of each build's server CPU time per
request and p99 (from the runs side by side, where both servers share one core and every stall of the machine falls
on both alike) and throughput (from the runs alone: side by side both builds get the same req/s by construction),
with the lowest and highest in brackets, and the median of the per-round ratios new / base. With the server on one
core, its CPU time per request is the inverse of the throughput it can reach, measured without the run-to-run drift
of the runs alone. A workload is flagged when new is more than the tolerance (5%) slower side by side: median CPU
ratio or median p99 ratio above 1 + tolerance; the throughput of the runs alone is shown, and flagged in its column,
but does not decide (on a 2-core machine back-to-back runs of one build differ by more than 5%). The summary
reports, a human judges: it exits 0 whatever the figures say. Standard library only.

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
    return {r["round"]: r[key] for r in runs if r["run"] == run and r["label"] == build and key in r}


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
        "(lowest-highest). CPU µs per request and p99: both side by side; req/s: each build alone. Ratios: median of "
        "the per-round new / base."
    )
    print()
    print(
        "| model | workload | c | base CPU µs/req | new CPU µs/req | CPU new / base | base p99 | new p99 "
        "| p99 new / base | base req/s alone | new req/s alone | req/s new / base | |"
    )
    print("| --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --- |")
    flagged, incomplete, errors = [], [], 0
    for (model, protocol, concurrency), runs in groups.items():
        errors += sum(r["errors"] for r in runs)
        throughput = ratios(runs, "alone", "requests_per_second")
        cpu = ratios(runs, "side-by-side", "server_cpu_us_per_request")
        p99 = ratios(runs, "side-by-side", "p99_us")
        reasons = []
        if cpu and statistics.median(cpu) > 1 + tolerance:
            reasons.append(f"CPU per request {statistics.median(cpu):.3f}x")
        if p99 and statistics.median(p99) > 1 + tolerance:
            reasons.append(f"p99 {statistics.median(p99):.3f}x")
        name = f"{model} {protocol} c={concurrency}"
        if reasons:
            flagged.append(f"{name} ({', '.join(reasons)})")
            verdict = "**slower**"
        elif cpu and p99:
            verdict = "ok"
        else:
            incomplete.append(name)
            verdict = "incomplete"
        alone_note = " (below)" if throughput and statistics.median(throughput) < 1 - tolerance else ""
        cells = (
            [spread(list(by_round(runs, "side-by-side", b, "server_cpu_us_per_request").values()), 1) for b in BUILDS]
            + [spread(cpu, 3)]
            + [spread(list(by_round(runs, "side-by-side", b, "p99_us").values()), unit=" µs") for b in BUILDS]
            + [spread(p99, 3)]
            + [spread(list(by_round(runs, "alone", b, "requests_per_second").values())) for b in BUILDS]
            + [spread(throughput, 3) + alone_note, verdict]
        )
        print(f"| {model} | {protocol} | {concurrency} | " + " | ".join(cells) + " |")
    print()
    if errors:
        print(f"{errors} request(s) failed: the figures above are not comparable")
    if incomplete:
        print(f"incomplete (no round measured both builds side by side): {'; '.join(incomplete)}")
    measured = len(groups) - len(incomplete)
    if flagged:
        print(f"verdict: new is more than {tolerance:.0%} slower on {len(flagged)} workload(s): {'; '.join(flagged)}")
    else:
        print(
            f"verdict: new is not more than {tolerance:.0%} slower on any of the {measured} workload(s) measured "
            f"(side by side: CPU per request new / base <= {1 + tolerance:.2f} and p99 new / base <= {1 + tolerance:.2f})"
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
