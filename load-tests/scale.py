"""Open-loop driver for load-tests/scale.sh: many models behind one server, with a memory budget.

Requests arrive at a constant rate (Poisson arrivals, or fixed spacing with --fixed), each for a model drawn from a
Zipf distribution over the repository's models (exponent --zipf; which model has which rank is a random permutation
with a fixed seed), for --seconds. Open loop: a request is sent at its time whatever the earlier ones are doing; only
--max-in-flight bounds the requests outstanding, and one that would pass it is not sent and counts as failed. A
request's latency runs from its scheduled time to the end of its answer, so a late send is counted in it.

Per request: the status, the latency, and whether the answer waited for its model to load (the header
x-infergate-cold-start-ms: the wait the server measured). Every second: the server's RSS (/proc/PID/status VmRSS) and
its metrics (loaded bytes and versions, load and eviction counters). The report (printed, and written to --out as
JSON): requests, failures (non-200, transport errors, not sent) with the first reasons, hit rate (warm answers / all
requests), cold and warm latency p50/p99, loads and evictions per second (counter deltas over the run), RSS before the
first request (baseline) and its min and max over the run, the time series, the budget, max(RSS) - budget - baseline.

    scale.py --repo DIR --url http://127.0.0.1:P --metrics-url http://127.0.0.1:R/metrics --server-pid PID
             [--rate 200] [--seconds 60] [--zipf 1.1] [--out REPORT.json] [--check --margin-mb 64]
    scale.py --calibrate 20 --repo DIR --url ... --metrics-url ...  # one request to each of the first 20 models:
                                                                     # the average measured cost per version
    scale.py --markdown REPORT.json                                  # a report as a Markdown table
DIR is a repository made by load-tests/scale_repo.py (its scale-models.json names each model's input).
"""

import argparse
import asyncio
import collections
import json
import math
import re
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np

COLD_HEADER = "x-infergate-cold-start-ms"
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


# The families the report reads; the others (per-model series, thousands of lines) are skipped before parsing, so a
# scrape costs the driver's event loop little and does not delay the requests it sends.
WANTED = ("infergate_loaded_", "infergate_on_demand_", "infergate_evictions_", "infergate_max_loaded_")


def parse_metrics(text):
    """Prometheus text → {name: [(labels text, value)]}, for the WANTED families."""
    out = {}
    for line in text.splitlines():
        if not line.startswith(WANTED):
            continue
        match = SAMPLE_RE.match(line)
        if match and not line.startswith("#"):
            out.setdefault(match[1], []).append((match[2] or "", float(match[3])))
    return out


def metric(metrics, name, label=None):
    """Sum of a metric's samples (those whose labels contain `label`); None when the server has no such metric."""
    samples = [v for labels, v in metrics.get(name, []) if label is None or label in labels]
    return sum(samples) if samples else None


def rss_bytes(pid):
    try:
        return next(int(line.split()[1]) * 1024 for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def bodies(repo):
    """Each model's name and a ready request body (one row, fixed values) from scale-models.json."""
    manifest = json.loads((Path(repo) / "scale-models.json").read_text())["models"]
    rng = np.random.default_rng(7)
    out = []
    for model in manifest:
        inputs = []
        for spec in model["inputs"]:
            count = math.prod(spec["shape"])
            values = rng.uniform(0.5, 6.5, count).round(3).tolist()  # the models' inputs are all FP32
            inputs.append({"name": spec["name"], "shape": spec["shape"], "datatype": spec["datatype"], "data": values})
        out.append((model["name"], json.dumps({"inputs": inputs}).encode()))
    return out


async def scrape(session, url):
    try:
        async with session.get(url) as response:
            return parse_metrics(await response.text()) if response.status == 200 else {}
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return {}


def counters(metrics):
    return {
        "loaded_bytes": metric(metrics, "infergate_loaded_bytes"),
        "loaded_versions": metric(metrics, "infergate_loaded_versions"),
        "loads": metric(metrics, "infergate_on_demand_loads_total", 'outcome="loaded"'),
        "load_failures": metric(metrics, "infergate_on_demand_loads_total", 'outcome="failed"'),
        "evictions": metric(metrics, "infergate_evictions_total"),
        "server_hits": metric(metrics, "infergate_on_demand_requests_total", 'result="hit"'),
        "server_misses": metric(metrics, "infergate_on_demand_requests_total", 'result="miss"'),
        "max_loaded_bytes": metric(metrics, "infergate_max_loaded_bytes"),
    }


async def infer(session, url, name, body, scheduled, records):
    record = {"model": name, "status": 0, "cold": False, "cold_ms": None, "error": None, "latency_ms": None}
    try:
        async with session.post(f"{url}/v2/models/{name}/infer", data=body,
                                headers={"content-type": "application/json"}) as response:
            text = await response.read()
            record["status"] = response.status
            header = response.headers.get(COLD_HEADER)
            if header is not None:
                record["cold"] = True
                record["cold_ms"] = int(header) if header.strip().isdigit() else None
            if response.status != 200:
                record["error"] = f"HTTP {response.status}: {text[:200].decode(errors='replace')}"
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
        record["error"] = f"{type(error).__name__}: {error or 'no answer within --timeout'}"[:240]
    except asyncio.CancelledError:
        record["error"] = "unanswered when the run ended"
        records.append(record)
        raise
    record["latency_ms"] = (time.monotonic() - scheduled) * 1e3
    records.append(record)


async def sampler(session, args, start, series, stop):
    """One sample a second, on the second (a slow scrape delays one sample, not the ones after it)."""
    tick = 0
    while not stop.is_set():
        metrics = counters(await scrape(session, args.metrics_url))
        series.append({"second": round(time.monotonic() - start, 2), "rss": rss_bytes(args.server_pid),
                       **{k: metrics[k] for k in ("loaded_bytes", "loaded_versions", "loads", "evictions")}})
        tick = max(tick + 1, int(time.monotonic() - start) + 1)
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, start + tick - time.monotonic()))
        except asyncio.TimeoutError:
            pass


def pct(values, q):
    """The q-th percentile, in ms to two decimals; None when there are no values."""
    return round(float(np.percentile(values, q)), 2) if len(values) else None


async def drive(args):
    models = bodies(args.repo)[: args.models or None]
    n = len(models)
    rng = np.random.default_rng(args.seed)
    weights = 1.0 / np.arange(1, n + 1) ** args.zipf
    by_rank = rng.permutation(n)  # by_rank[r]: the model of rank r + 1
    if args.fixed:
        times = np.arange(0, args.seconds, 1 / args.rate)
    else:
        gaps = rng.exponential(1 / args.rate, int(args.rate * args.seconds * 1.2) + 100)
        times = np.cumsum(gaps)
        times = times[times < args.seconds]
    picks = by_rank[rng.choice(n, size=len(times), p=weights / weights.sum())]
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    connector = aiohttp.TCPConnector(limit=args.max_in_flight + 8)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        before = counters(await scrape(session, args.metrics_url))
        baseline = rss_bytes(args.server_pid)
        budget = args.budget if args.budget is not None else int(before["max_loaded_bytes"] or 0)
        records, series, tasks, stop = [], [], set(), asyncio.Event()
        unsent, lags = 0, []
        start = time.monotonic()
        sampling = asyncio.create_task(sampler(session, args, start, series, stop))
        for offset, pick in zip(times, picks):
            scheduled = start + offset
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(time.monotonic() - scheduled)
            if len(tasks) >= args.max_in_flight:
                unsent += 1
                records.append({"model": models[pick][0], "status": 0, "cold": False, "cold_ms": None,
                                "error": f"not sent: {args.max_in_flight} requests in flight", "latency_ms": None})
                continue
            task = asyncio.create_task(infer(session, args.url, *models[pick], scheduled, records))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent_for = time.monotonic() - start
        if tasks:
            _, unanswered = await asyncio.wait(set(tasks), timeout=args.timeout + 5)
            for task in unanswered:
                task.cancel()
            await asyncio.gather(*unanswered, return_exceptions=True)
        elapsed = time.monotonic() - start
        stop.set()
        await sampling
        after = counters(await scrape(session, args.metrics_url))
    return report(args, models, records, series, before, after, baseline, budget, unsent, lags, sent_for, elapsed)


def report(args, models, records, series, before, after, baseline, budget, unsent, lags, sent_for, elapsed):
    ok = [r for r in records if r["status"] == 200]
    failed = [r for r in records if r["status"] != 200]
    reasons = collections.Counter(r["error"] for r in failed)
    cold = [r["latency_ms"] for r in ok if r["cold"]]
    warm = [r["latency_ms"] for r in ok if not r["cold"]]
    waits = [r["cold_ms"] for r in ok if r["cold"] and r["cold_ms"] is not None]

    def delta(key):
        # A labelled counter appears at its first increment: absent before the run, it was 0.
        return None if after[key] is None else after[key] - (before[key] or 0)

    hits, misses = delta("server_hits"), delta("server_misses")

    rss = [s["rss"] for s in series if s["rss"] is not None]
    peak = max(rss, default=None)
    return {
        "models": len(models), "rate": args.rate, "seconds": args.seconds, "zipf": args.zipf,
        "arrivals": "fixed" if args.fixed else "poisson", "max_in_flight": args.max_in_flight,
        "requests": len(records), "answered": len(ok), "failed": len(failed), "not_sent": unsent,
        "failure_reasons": dict(reasons.most_common(5)),
        "distinct_models": len({r["model"] for r in records}),
        "hit_rate": round(len(warm) / len(records), 4) if records else None,
        "cold": {"count": len(cold), "p50_ms": pct(cold, 50), "p99_ms": pct(cold, 99),
                 "wait_p50_ms": pct(waits, 50), "wait_p99_ms": pct(waits, 99)},
        "warm": {"count": len(warm), "p50_ms": pct(warm, 50), "p99_ms": pct(warm, 99)},
        "loads_per_s": None if delta("loads") is None else round(delta("loads") / elapsed, 2),
        "load_failures": delta("load_failures"),
        "evictions_per_s": None if delta("evictions") is None else round(delta("evictions") / elapsed, 2),
        "server_hit_rate": round(hits / (hits + misses), 4) if None not in (hits, misses) and hits + misses else None,
        "send_seconds": round(sent_for, 2), "elapsed_seconds": round(elapsed, 2),
        "send_lag_p99_ms": pct([lag * 1e3 for lag in lags], 99),
        "max_send_lag_ms": round(max(lags, default=0) * 1e3, 2),
        "baseline_rss": baseline, "rss_min": min(rss, default=None), "rss_max": peak, "budget": budget,
        **{f"{key}_max": max((s[key] for s in series if s[key] is not None), default=None)
           for key in ("loaded_bytes", "loaded_versions")},
        "rss_over_budget": peak - budget - baseline if peak is not None and baseline is not None else None,
        "series": series,
        "setup": dict(args.setup),
    }


async def calibrate(args):
    """One request to each of the first N models, one after another; then the average cost per loaded version."""
    models = bodies(args.repo)[: args.calibrate]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=args.timeout)) as session:
        for name, body in models:
            records = []
            await infer(session, args.url, name, body, time.monotonic(), records)
            if records[0]["status"] != 200:
                sys.exit(f"calibration: {name}: {records[0]['error']}")
        for _ in range(50):  # the gauges may trail the last answer a little
            now = counters(await scrape(session, args.metrics_url))
            if (now["loaded_versions"] or 0) >= len(models):
                break
            await asyncio.sleep(0.1)
    if not now["loaded_versions"] or not now["loaded_bytes"]:
        sys.exit(f"calibration: the server reports loaded_versions={now['loaded_versions']}, "
                 f"loaded_bytes={now['loaded_bytes']}")
    print(json.dumps({"loaded_bytes": now["loaded_bytes"], "loaded_versions": now["loaded_versions"],
                      "average": now["loaded_bytes"] / now["loaded_versions"], "rss": rss_bytes(args.server_pid)}))


def markdown(r):
    def mib(value):
        return "-" if value is None else f"{value / 2**20:,.1f} MiB"

    def ms(a, b):
        return "-" if a is None else f"{a:g} / {b:g} ms"

    s = r.get("setup", {})
    budget = "none" if not r["budget"] else mib(r["budget"])
    if r["budget"] and "cost_bytes" in s and "budget_models" in s:
        budget += f" ({s['budget_models']:g} × {mib(s['cost_bytes'])}, the average measured cost)"
    reasons = "; ".join(f"{n} × {reason}" for reason, n in r["failure_reasons"].items())
    rows = [
        ("models (distinct ones requested)", f"{r['models']} ({r['distinct_models']})"),
        ("arrivals", f"{r['rate']:g} req/s {r['arrivals']}, Zipf {r['zipf']:g}, {r['seconds']:g} s"),
        ("budget", budget),
        ("start to ready", f"{s['ready_seconds']:.2f} s" if "ready_seconds" in s else "-"),
        ("requests, failed", f"{r['requests']}, {r['failed']}" + (f" ({reasons})" if reasons else "")),
        ("hit rate (warm / all)", f"{r['hit_rate']:.1%}" if r["hit_rate"] is not None else "-"),
        ("warm p50 / p99", ms(r["warm"]["p50_ms"], r["warm"]["p99_ms"])),
        ("cold p50 / p99", ms(r["cold"]["p50_ms"], r["cold"]["p99_ms"]) + f" ({r['cold']['count']} cold answers)"),
        ("cold wait p50 / p99 (header)", ms(r["cold"]["wait_p50_ms"], r["cold"]["wait_p99_ms"])),
        ("loads/s, evictions/s", f"{r['loads_per_s'] if r['loads_per_s'] is not None else '-'}, "
                                 f"{r['evictions_per_s'] if r['evictions_per_s'] is not None else '-'}"),
        ("RSS baseline", mib(r["baseline_rss"])),
        ("RSS min / max", f"{mib(r['rss_min'])} / {mib(r['rss_max'])}"),
        ("max loaded bytes (measured), versions",
         f"{mib(r['loaded_bytes_max'])}, {r.get('loaded_versions_max') or 0:g}"),
        ("max RSS - budget - baseline", mib(r["rss_over_budget"])),
        ("client: not sent, send lag p99 / max",
         f"{r['not_sent']}, {ms(r.get('send_lag_p99_ms'), r['max_send_lag_ms'])}"),
    ]
    return "| measure | value |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--repo", help="repository made by scale_repo.py")
    add("--url", default="http://127.0.0.1:8000")
    add("--metrics-url", default="http://127.0.0.1:8002/metrics")
    add("--server-pid", type=int)
    add("--rate", type=float, default=200.0, help="requests per second")
    add("--seconds", type=float, default=60.0)
    add("--zipf", type=float, default=1.1)
    add("--fixed", action="store_true", help="fixed spacing instead of Poisson arrivals")
    add("--models", type=int, default=0, help="use the first N models only (0: all)")
    add("--max-in-flight", type=int, default=512)
    add("--timeout", type=float, default=60.0, help="seconds one request may take")
    add("--seed", type=int, default=1)
    add("--budget", type=int, help="bytes [default: the server's infergate_max_loaded_bytes]")
    add("--setup", action="append", default=[], type=lambda kv: (kv.split("=")[0], float(kv.split("=")[1])),
        metavar="KEY=NUMBER", help="a number about the setup, kept in the report")
    add("--out", help="JSON report")
    add("--check", action="store_true", help="exit 1 on failures or RSS over budget + baseline + margin")
    add("--margin-mb", type=float, default=64.0)
    add("--calibrate", type=int, metavar="N")
    add("--markdown", metavar="REPORT")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    if not args.repo:
        parser.error("--repo is needed")
    if args.calibrate:
        asyncio.run(calibrate(args))
        return 0
    result = asyncio.run(drive(args))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "series"}, indent=1))
    problems = []
    if result["failed"]:
        problems.append(f"{result['failed']} of {result['requests']} requests failed")
    excess = result["rss_over_budget"]
    if result["budget"] and excess is not None and excess > args.margin_mb * 2**20:
        problems.append(f"RSS went {excess / 2**20:.1f} MiB over budget + baseline (margin {args.margin_mb:g} MiB)")
    for problem in problems:
        print(f"scale: {problem}", file=sys.stderr)
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
