"""Summarises load-tests/batching.sh's results (JSON lines, each run's mode in its label: batching-off or
batching-on): per protocol, the medians over the rounds of the throughput and p99 of each mode at concurrency 64 and
1 (where one client alternated between the two servers), and the median of the per-round ratios on / off.

A second table splits the server's CPU time per request at concurrency 64 (user and kernel time from /proc, the
backend's share from the server's statistics) into what both modes pay and what each adds, and gives the shared cost
per request at which the ratio would reach 3×. Standard library only.

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
    costs = [r for r in runs if r["concurrency"] == 64 and "server_user_us" in r]
    if costs:
        print_costs(costs, protocols, rounds)


def print_costs(costs, protocols, rounds):
    """Where a request's server time goes at concurrency 64, and what the ratio's target asks of it. Both modes pay
    the same shared cost S per request (user time outside the backend, and the kernel's); an unbatched request adds
    X (its own backend run and the hand-offs between the async worker and the instance thread), a batched one adds
    b (its share of a batch). The ratio is (S + X) / (S + b), so 3× needs S <= (X - 3b) / 2."""
    print("\nServer CPU per request at c=64, µs (medians over the rounds). S: shared by both modes (batching on: user")
    print("time outside the backend, and kernel time); X: what an unbatched request adds (off minus S); b: a batched")
    print("request's share of its batch. Throughput on / off = (S + X) / (S + b), so 3× needs S <= (X - 3b) / 2.\n")
    print("| protocol | S (user + kernel) | X | b | 3× needs S <= |")
    print("| --- | --- | --- | --- | --- |")
    for protocol in protocols:
        mine = [r for r in costs if r["protocol"] == protocol]
        by_mode = {mode: {r["round"]: r for r in mine if r["mode"] == mode} for mode in ("off", "on")}
        terms = []
        for n in rounds:
            off, on = by_mode["off"].get(n), by_mode["on"].get(n)
            if off is None or on is None:
                continue
            user = on["server_user_us"] - on["backend_us"]
            shared = user + on["server_system_us"]
            extra = off["server_user_us"] + off["server_system_us"] - shared
            terms.append((shared, user, on["server_system_us"], extra, on["backend_us"]))
        if not terms:
            continue
        shared, user, kernel, extra, share = (statistics.median(t[i] for t in terms) for i in range(5))
        needed = statistics.median((t[3] - 3 * t[4]) / 2 for t in terms)
        print(f"| {protocol} | {shared:.1f} ({user:.1f} + {kernel:.1f}) | {extra:.1f} | {share:.1f} | {needed:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1])
