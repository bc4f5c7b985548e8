"""Judge throughput: JudgeClient against a local server that answers after a fixed latency.

The ideal bound at concurrency c with latency L is c / L judgments per second
(every slot always busy, zero overhead).  We report measured judgments/s and
the fraction of that bound, and the CPU time (client + server processes) each
judgment cost, which bounds throughput at (cores / CPU per judgment).  The server runs in its own process (this script
with ``--serve``), so the client's event loop and the server's threads do not
share one interpreter lock.  No cache: every judgment is an HTTP call.

    python benchmarks/judge_throughput.py [--latency-ms 100] [--rounds 20] [--concurrency 1 8 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.serve.server import ChatResult, TokenLogprob, serve_forever
from judges.client import JudgeClient


def slow_verdict(latency_s: float):
    def respond(body: dict) -> ChatResult:
        time.sleep(latency_s)
        return ChatResult("Assistant A is better. [[A]]", [TokenLogprob("[[A]]", -0.1, {"[[A]]": -0.1})])

    return respond


def start_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(latency_ms)], stdout=subprocess.PIPE,
                            text=True)
    return proc, proc.stdout.readline().strip()


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process, or of process ``pid`` (Linux /proc)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (proc(5))


def measure(url: str, concurrency: int, requests: int) -> float:
    """Seconds of wall time to judge ``requests`` distinct prompts at ``concurrency``."""
    client = JudgeClient(url, "bench", concurrency=concurrency, max_retries=0, timeout_s=30.0)
    batch = [([{"role": "user", "content": f"compare pair {i} at c={concurrency}"}], {})
             for i in range(requests)]
    t0 = time.perf_counter()
    replies = client.complete_all(batch)
    wall = time.perf_counter() - t0
    if client.stats.failures or any(r is None for r in replies):
        raise RuntimeError(f"{client.stats.failures} failed calls at concurrency {concurrency}")
    return wall


def run(latency_ms: float, rounds: int, levels: list[int]) -> list[dict]:
    proc, url = start_server(latency_ms)
    try:
        measure(url, 4, 8)  # warm-up: imports, first connections
        rows = []
        for c in levels:
            n = rounds * c
            cpu0 = cpu_seconds() + cpu_seconds(proc.pid)
            wall = measure(url, c, n)
            cpu_ms = (cpu_seconds() + cpu_seconds(proc.pid) - cpu0) / n * 1000
            ideal = c / (latency_ms / 1000)
            rows.append({"concurrency": c, "judgments": n, "wall_s": round(wall, 3),
                         "judgments_per_s": round(n / wall, 2), "ideal_per_s": ideal,
                         "fraction_of_ideal": round(n / wall / ideal, 3),
                         "cpu_ms_per_judgment": round(cpu_ms, 2)})
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return rows


def table(rows: list[dict], latency_ms: float) -> str:
    lines = [f"latency {latency_ms:g} ms",
             "| concurrency | judgments | wall s | judgments/s | ideal c/L | fraction | CPU ms/judgment |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['concurrency']} | {r['judgments']} | {r['wall_s']:.2f} | {r['judgments_per_s']:.1f} | "
              f"{r['ideal_per_s']:.0f} | {r['fraction_of_ideal']:.2f} | {r['cpu_ms_per_judgment']:.1f} |"
              for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--rounds", type=int, default=20, help="judgments per concurrency slot")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        serve_forever(slow_verdict(args.serve / 1000), "127.0.0.1", 0, model_name="bench",
                      announce=lambda url: print(url, flush=True), quiet=True)
        return
    rows = run(args.latency_ms, args.rounds, args.concurrency)
    print(json.dumps(rows, indent=2) if args.json else table(rows, args.latency_ms))


if __name__ == "__main__":
    main()
