"""Benchmark: `talkctl serve` with 1, 2 and 4 concurrent WebSocket sessions at 128^2 and 256^2.

Each size starts a real server process (`talkctl serve --run RUN --size S`); each session streams
the same speech as a microphone would: 40 ms PCM16 chunks paced in real time, then {"op": "stop"}.
Per session:
  fps        speech frames received / seconds from the first to the last (25 = keeps up)
  latency    per chunk: its send time -> arrival of the first frame showing its first sample
             (audio arrival -> frame, including the model's look-ahead and the queue)
  lag        last frame's arrival - last chunk's send (how far behind the stream ended)
Medians and percentiles over all sessions' chunks; the server's own /stats are kept too.

    OMP_WAIT_POLICY=PASSIVE python bench/serve.py --run RUN [--sizes 128,256] [--sessions 1,2,4]
        [--seconds 10] [--out serve_cpu.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

from common import ROOT, describe, load_avg, machine, print_table, shared_file, write_json

CHUNK = 640  # 40 ms at 16 kHz


def speech(seconds: float) -> tuple[np.ndarray, str]:
    path = shared_file("data", "audio", "speaker0_19s.mp3")
    if path is not None:
        from talkctl.media.audio import load_waveform

        return load_waveform(path)[:int(seconds * 16000)], str(path.name)
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    import trained_run

    return trained_run.voice(seconds), "synthetic voice"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, size: int, max_sessions: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-m", "talkctl", "serve", "--run", run, "--size", str(size), "--port", str(port),
                          "--max-sessions", str(max_sessions), "--device", "cpu", "-q"], env=env, cwd=ROOT,
                         stderr=subprocess.PIPE, text=True)
    return p, f"http://127.0.0.1:{port}/"


async def wait_ready(url: str, p: subprocess.Popen, timeout: float = 300) -> None:
    import aiohttp

    t_end = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < t_end:
            if p.poll() is not None:
                raise SystemExit(f"server exited: {p.stderr.read()[-2000:]}")
            try:
                async with s.get(url + "health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("server did not start")


async def session(url: str, wav: np.ndarray) -> dict:
    import aiohttp

    from talkctl.live.protocol import SPEECH, float_to_pcm16, unpack_frame

    sent, got = [], []  # (first sample, send time); (frame first sample, arrival time)

    async def send(ws):
        t0 = time.perf_counter()
        for k, i in enumerate(range(0, len(wav), CHUNK)):
            await asyncio.sleep(max(0.0, t0 + k * CHUNK / 16000 - time.perf_counter()))
            sent.append((i, time.perf_counter()))
            await ws.send_bytes(float_to_pcm16(wav[i:i + CHUNK]))
        await ws.send_str(json.dumps({"op": "stop"}))

    async with aiohttp.ClientSession() as s, s.ws_connect(url + "ws", max_msg_size=0) as ws:
        sender = asyncio.create_task(send(ws))
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                h, _ = unpack_frame(msg.data)
                if h.kind == SPEECH:
                    got.append((round(h.audio_time * 16000), time.perf_counter()))
        await sender
    lat, j = [], 0
    for s0, t_frame in got:  # frames arrive in order: each chunk's first frame is the first covering it
        while j < len(sent) and sent[j][0] < s0 + CHUNK:
            lat.append((t_frame - sent[j][1]) * 1000)
            j += 1
    span = got[-1][1] - got[0][1] if len(got) > 1 else float("nan")
    return {"frames": len(got), "fps": (len(got) - 1) / span if span > 0 else None, "latency_ms": lat,
            "lag_ms": (got[-1][1] - sent[-1][1]) * 1000 if got else None}


async def measure(url: str, wav: np.ndarray, n: int) -> dict:
    res = await asyncio.gather(*(session(url, wav) for _ in range(n)))
    lat = np.concatenate([r["latency_ms"] for r in res])
    return {"sessions": n, "frames_per_session": [r["frames"] for r in res],
            "fps_per_session_median": round(float(np.median([r["fps"] for r in res])), 2),
            "fps_total": round(float(sum(r["fps"] for r in res)), 2),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 1),
            "latency_ms_p90": round(float(np.percentile(lat, 90)), 1),
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 1),
            "lag_ms_max": round(max(r["lag_ms"] for r in res), 1)}


async def bench_size(run: str, size: int, counts: list[int], wav: np.ndarray) -> list[dict]:
    import aiohttp

    p, url = start_server(run, size, max(counts))
    try:
        await wait_ready(url, p)
        await measure(url, wav[:16000], 1)  # warm-up
        rows = []
        for n in counts:
            row = {"size": size, **await measure(url, wav, n), "load_avg_1min": load_avg()[0]}
            print(f"  {size}px x{n}: {row['fps_per_session_median']} fps/session, latency p50 {row['latency_ms_p50']} ms",
                  flush=True)
            rows.append(row)
        async with aiohttp.ClientSession() as s, s.get(url + "stats") as r:
            rows[-1]["server_stats"] = await r.json()
        return rows
    finally:
        p.terminate()
        p.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a trained run (audio-driven head, mel-formant features)")
    ap.add_argument("--sizes", default="128,256")
    ap.add_argument("--sessions", default="1,2,4")
    ap.add_argument("--seconds", type=float, default=10.0, help="speech per session")
    ap.add_argument("--out", default="serve_cpu.json")
    a = ap.parse_args()
    info = machine()
    wav, source = speech(a.seconds)
    counts = [int(x) for x in a.sessions.split(",")]
    rows = []
    for size in (int(x) for x in a.sizes.split(",")):
        rows += asyncio.run(bench_size(a.run, size, counts, wav))
    info["load_avg_after"] = load_avg()
    print_table(rows, [("size", "size"), ("sessions", "sessions"), ("fps_per_session_median", "fps/session"),
                       ("fps_total", "fps total"), ("latency_ms_p50", "latency p50 ms"),
                       ("latency_ms_p90", "p90"), ("latency_ms_p99", "p99"), ("lag_ms_max", "end lag ms"),
                       ("load_avg_1min", "load")])
    print(describe(info))
    write_json(a.out, {"machine": info, "run": a.run, "audio": source, "seconds": round(len(wav) / 16000, 2),
                       "chunk_ms": CHUNK / 16, "rows": rows})


if __name__ == "__main__":
    main()
