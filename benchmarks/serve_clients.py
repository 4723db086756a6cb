"""Clients of `kvasir serve`, one at a time against several at once: what batching requests that arrive together
buys. Starts the server twice on the same bundle (--max_batch 1: one request per model call; --max_batch 8), and
sends each the same requests (one image each) from gradio_client: first one client after another, then N clients
together. Prints the throughput and the latency (median, p95) of every case, and the ratios, measured side by side
in one run.

    python benchmarks/serve_clients.py --model BUNDLE --images DIR [--clients 8] [--rounds 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

# Gradio's own round trip, for scale: the same upload to an app whose function does nothing
NOOP = """
import sys, time, gradio as gr
with gr.Blocks(analytics_enabled=False) as app:
    files, text, button = gr.File(file_count="multiple"), gr.Textbox(), gr.Button()
    button.click(lambda f: str(len(f or [])), files, text, api_name="classify")
app.launch(server_port=int(sys.argv[1]), prevent_thread_lock=True, quiet=True)
while True:
    time.sleep(1)
"""


def start(model: str | None, max_batch: int) -> tuple[subprocess.Popen, str]:
    """`kvasir serve` on a free port (model None: the no-op app)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if model is None:
        command = [sys.executable, "-c", NOOP, str(port)]
    else:
        command = [sys.executable, "-m", "kvasir_mobileone", "serve", "--model", model, "--port", str(port)]
        command += ["--max_batch", str(max_batch)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return process, url
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"the server stopped: kvasir serve --model {model}") from None
            time.sleep(0.5)
    raise SystemExit("the server did not start in 5 minutes")


def request(client, image: Path) -> float:
    from gradio_client import handle_file

    start = time.perf_counter()
    client.predict([handle_file(str(image))], api_name="/classify")
    return time.perf_counter() - start


def measure(url: str, images: list[Path], clients: int, rounds: int) -> dict:
    """{case: {requests, seconds, images_per_s, median_s, p95_s}} for one server. The clients run in this process,
    on the same CPU as the server: on a small machine they take part of it."""
    from gradio_client import Client

    pool = [Client(url, verbose=False) for _ in range(clients)]
    for c in pool:  # warm-up: each client connects once
        request(c, images[0])
    results = {}
    latencies, start = [], time.perf_counter()
    for r in range(rounds):
        for i in range(clients):
            latencies.append(request(pool[0], images[(r * clients + i) % len(images)]))
    results["one at a time"] = summary(latencies, time.perf_counter() - start)
    latencies, start = [], time.perf_counter()
    for r in range(rounds):
        barrier = threading.Barrier(clients)

        def one(i: int, barrier=barrier, r=r) -> None:
            barrier.wait()
            latencies.append(request(pool[i], images[(r * clients + i) % len(images)]))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    results[f"{clients} clients together"] = summary(latencies, time.perf_counter() - start)
    return results


def summary(latencies: list[float], seconds: float) -> dict:
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "images_per_s": len(latencies) / seconds,
        "median_s": statistics.median(ordered),
        "p95_s": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an exported bundle")
    parser.add_argument("--images", required=True, help="a folder of images (one per request)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None, help="write serve_clients.md and .json here")
    args = parser.parse_args()
    images = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not images:
        raise SystemExit(f"no images in {args.images}")
    measured = {}
    for name, model, max_batch in (
        ("Gradio alone (a no-op app)", None, 1),
        ("--max_batch 1", args.model, 1),
        (f"--max_batch {args.clients}", args.model, args.clients),
    ):
        process, url = start(model, max_batch)
        try:
            measured[name] = measure(url, images, args.clients, args.rounds)
        finally:
            process.terminate()
            process.wait(timeout=60)
    rows = [
        "| server | clients | requests | images/s | median latency (s) | p95 latency (s) |",
        "|---|---|---|---|---|---|",
    ]
    for server, cases in measured.items():
        for case, m in cases.items():
            rows.append(
                f"| {server} | {case} | {m['requests']} | {m['images_per_s']:.2f} | {m['median_s']:.3f} | "
                f"{m['p95_s']:.3f} |"
            )
    batched, single = measured[f"--max_batch {args.clients}"], measured["--max_batch 1"]
    together = f"{args.clients} clients together"
    ratios = [
        f"- {together} against one at a time, --max_batch {args.clients}: throughput x"
        f"{batched[together]['images_per_s'] / batched['one at a time']['images_per_s']:.2f}",
        f"- {together}, --max_batch {args.clients} against --max_batch 1: throughput x"
        f"{batched[together]['images_per_s'] / single[together]['images_per_s']:.2f}, median latency x"
        f"{batched[together]['median_s'] / single[together]['median_s']:.2f}",
    ]
    text = "\n".join(rows + [""] + ratios) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "serve_clients.md").write_text(
            f"`python benchmarks/serve_clients.py --model BUNDLE --images DIR "
            f"--clients {args.clients} --rounds {args.rounds}`\n\n{text}"
        )
        (out / "serve_clients.json").write_text(json.dumps(measured, indent=2))


if __name__ == "__main__":
    main()
