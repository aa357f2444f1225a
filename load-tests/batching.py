"""Summarises load-tests/batching.sh's results (JSON lines, each run's mode in its label: batching-off or
batching-on): per protocol, the medians over the rounds of the throughput and p99 of each mode at concurrency 64 and
1 (where one client alternated between the two servers), and the median of the per-round ratios on / off.
Standard library only.

    python3 load-tests/batching.py target/perf/batching.jsonl
"""

import json
import statistics
import sys


def main(path):
    runs = [json.loads(line) for line in open(path) if line.strip()]
    for run in runs:
        run["mode"] = run["label"].removeprefix("batching-")
    protocols = list(dict.fromkeys(r["protocol"] for r in runs))
    rounds = sorted({r["round"] for r in runs})
    print(f"{len(rounds)} round(s); medians over the rounds (lowest-highest); c=1 with both modes side by side\n")
    print("| protocol | c=64 off req/s | c=64 on req/s | on / off | c=64 p99 off, on | c=1 p99 off, on | c=1 p99 on / off |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for protocol in protocols:
        def by_round(mode, concurrency, key):
            return {r["round"]: r[key] for r in runs
                    if r["protocol"] == protocol and r["mode"] == mode and r["concurrency"] == concurrency}

        def pick(mode, concurrency, key):
            return list(by_round(mode, concurrency, key).values())

        def ratios(concurrency, key):
            # Paired by round: a round where either mode has no run gives no ratio.
            off, on = by_round("off", concurrency, key), by_round("on", concurrency, key)
            return [on[n] / off[n] for n in rounds if n in off and n in on and off[n]]

        def med(values, scale=1.0, digits=0):
            if not values:
                return "-"
            text = f"{statistics.median(values) / scale:,.{digits}f}"
            return text + (f" ({min(values) / scale:,.{digits}f}-{max(values) / scale:,.{digits}f})" if len(values) > 1 else "")

        errors = sum(r["errors"] for r in runs if r["protocol"] == protocol)
        print(
            f"| {protocol} | {med(pick('off', 64, 'requests_per_second'))} "
            f"| {med(pick('on', 64, 'requests_per_second'))} "
            f"| **{med(ratios(64, 'requests_per_second'), digits=2)}×** "
            f"| {med(pick('off', 64, 'p99_us'), 1000, 1)} ms, {med(pick('on', 64, 'p99_us'), 1000, 1)} ms "
            f"| {med(pick('off', 1, 'p99_us'), 1000, 2)} ms, {med(pick('on', 1, 'p99_us'), 1000, 2)} ms "
            f"| **{med(ratios(1, 'p99_us'), digits=2)}** |" + (f" {errors} errors" if errors else "")
        )


if __name__ == "__main__":
    main(sys.argv[1])
