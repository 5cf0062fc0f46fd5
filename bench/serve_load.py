"""Load on ``layersal serve`` over loopback (not a test: prints a table, asserts nothing).

    nice .venv/bin/python bench/serve_load.py --clients 1 4 8 --requests 120
    nice .venv/bin/python bench/serve_load.py --clients 8 50 --requests 400
    nice .venv/bin/python bench/serve_load.py --clients 8 --requests 1000   # RSS after 1,000

Starts ``layersal serve`` (the real CLI, on 127.0.0.1 and a free port) in a child process,
then for each client count sends ``--requests`` requests from that many threads, each
client with its own keep-alive connection. The mix: mostly one short SST-2 sentence with the
default method (what the page sends), some batches of 4, some requests with
``method=gradient``, and one in ten an invalid request (a broken or mistyped body, a text
over the limit, an unknown method: none reaches the model). Reported per client count:
requests/s answered 200, p50 and p99 latency of the valid requests (every status: a request
refused at once with 503 counts with its short wait) and of the invalid ones (they must not
wait behind the model), the same for a probe (a process of its own sending one invalid
request every 20 ms: in the load's process, 50 client threads share one interpreter lock
and add their own waits), how many valid requests got 503 (and whether each came with a
``Retry-After``; a client told to retry after N seconds waits that long before its next
request), the statuses seen, and the server's RSS before and after the row.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from math import nan
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sst2" / "test.tsv"
FALLBACK = [
    "a gripping, beautifully acted film",
    "dull and far too long",
    "the plot meanders but the cast shines",
    "not bad at all",
]


def sentences() -> list[str]:
    if not DATA.is_file():
        return FALLBACK
    from layersal.datasets import read_labelled

    return read_labelled(DATA).texts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, extra: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """The server, its output going to ``log`` (a pipe nobody reads would fill up and stall
    the server the first time it logs a traceback)."""
    command = [sys.executable, "-m", "layersal", "serve", "--port", str(port), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.3)
    server.kill()
    raise SystemExit("the server did not start")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def body(rng: random.Random, texts: list[str]) -> tuple[bool, dict | str]:
    roll = rng.random()
    if roll < 0.1:
        return False, rng.choice(
            [
                '{"text": ',
                '{"texts": 5}',
                '{"method": 3, "text": "x"}',
                json.dumps({"text": "x" * 6000}),
                json.dumps({"text": "ok", "method": "nope"}),
            ]
        )
    if roll < 0.25:
        return True, {"texts": rng.sample(texts, 4)}
    if roll < 0.35:
        return True, {"text": rng.choice(texts), "method": "gradient"}
    return True, {"text": rng.choice(texts)}


PROBE_BODIES = ['{"text": ', '{"texts": 5}', '{"text": "ok", "method": "nope"}']


def probe(url: str) -> None:
    """Invalid requests one at a time, 20 ms apart, until stdin closes: their latencies as
    JSON on stdout. A process of its own: in the load's process, 50 client threads share
    one interpreter lock and would add their own waits to what is measured."""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    latencies = []
    with httpx.Client(base_url=url, timeout=120) as http:
        for i in range(1_000_000):
            if stop.is_set():
                break
            headers = {"content-type": "application/json"}
            began = time.perf_counter()
            http.post("/api/explain", content=PROBE_BODIES[i % 3], headers=headers)
            latencies.append(time.perf_counter() - began)
            stop.wait(0.02)
    print(json.dumps(latencies))


def run(url: str, clients: int, requests: int, texts: list[str], pid: int) -> dict:
    latencies: dict[bool, list[float]] = {True: [], False: []}
    statuses: dict[int, int] = {}
    busy = {"503": 0, "retry_after": 0}
    rss_before = rss_mib(pid)
    lock = threading.Lock()
    counter = iter(range(requests))
    answered: list[float] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=120) as http:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                valid, payload = body(rng, texts)
                began = time.perf_counter()
                if isinstance(payload, str):
                    headers = {"content-type": "application/json"}
                    response = http.post("/api/explain", content=payload, headers=headers)
                else:
                    response = http.post("/api/explain", json=payload)
                took = time.perf_counter() - began
                with lock:
                    latencies[valid].append(took)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    if valid and response.status_code == 503:
                        busy["503"] += 1
                        busy["retry_after"] += "retry-after" in response.headers
                    if valid and response.status_code == 200:
                        answered.append(took)
                retry = response.headers.get("retry-after", "")
                if response.status_code == 503 and retry.isdigit():  # a polite client waits
                    time.sleep(int(retry))

    prober = subprocess.Popen(
        [sys.executable, __file__, "--probe", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    probed = sorted(json.loads(prober.communicate(timeout=120)[0]))
    valid = sorted(latencies[True])
    invalid = sorted(latencies[False])

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] if values else nan

    return {
        "clients": clients,
        "requests": requests,
        "ok_per_s": len(answered) / wall,
        "p50": statistics.median(valid) if valid else nan,
        "p99": pct(valid, 0.99),
        "invalid_p50": statistics.median(invalid) if invalid else nan,
        "invalid_p99": pct(invalid, 0.99),
        "probe": (len(probed), statistics.median(probed) if probed else nan, pct(probed, 0.99)),
        "busy": busy,
        "statuses": dict(sorted(statuses.items())),
        "rss": (rss_before, rss_mib(pid)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--label", default="", help="name of this run in the table")
    parser.add_argument("--serve-args", default="", help="extra `layersal serve` arguments")
    parser.add_argument("--probe", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.probe)
        return
    texts = sentences()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        server = start_server(port, args.serve_args.split(), log)
        try:
            run(url, 1, 5, texts, server.pid)  # warm-up
            rows = [run(url, n, args.requests, texts, server.pid) for n in args.clients]
        finally:
            server.terminate()
            server.wait(timeout=30)
        log.seek(0)
        logged = log.read().decode(errors="replace").splitlines()
    if logged:
        print(f"the server logged {len(logged)} lines; the last ones:", *logged[-5:], sep="\n  ")
    print(f"\n### Server load {args.label} ({os.cpu_count()} cores, loopback)\n")
    print(
        "| clients | requests | 200s/s | valid p50 s | valid p99 s | invalid p50 s "
        "| invalid p99 s | probe: invalid p50 / p99 s (n) | 503 (with Retry-After) | statuses "
        "| RSS MiB before -> after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        n, p50, p99 = r["probe"]
        print(
            f"| {r['clients']} | {r['requests']} | {r['ok_per_s']:.1f} | {r['p50']:.3f} | "
            f"{r['p99']:.3f} | {r['invalid_p50']:.3f} | {r['invalid_p99']:.3f} | "
            f"{p50:.3f} / {p99:.3f} ({n}) | {r['busy']['503']} ({r['busy']['retry_after']}) | "
            f"{r['statuses']} | {r['rss'][0]:.0f} -> {r['rss'][1]:.0f} |"
        )


if __name__ == "__main__":
    main()
