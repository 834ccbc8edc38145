"""Serving under a hot-card attack (issue 14): one card sending thousands of transactions per
second while 32 other clients score normal traffic, against the same run without the attack.

Setup as :mod:`bench.serving` (the handbook-size simulation, histories materialized at the
start of its last day, that day's transactions as one-transaction V1 requests), except that
the online store is a private ``redis-server`` on 127.0.0.1 that this benchmark starts and
stops, so that it can watch Redis itself. One ``vigil serve`` process with the default
settings. Two phases of ``WARMUP_S`` + ``DURATION_S`` seconds each:

* **quiet** — 32 closed-loop clients (the load generator of :mod:`bench.serving`, its own
  process);
* **under attack** — the same 32 clients, and an attacker (a process of its own, asyncio +
  uvloop, ``ATTACK_CONNECTIONS`` keep-alive connections) offering ``ATTACK_RATE``
  transactions per second of one card, ``ATTACK_BATCH`` per request, paced: a request is sent
  at its slot or, when behind, as soon as a connection is free (a shed request comes back at
  once and the next one goes out).

Measured: the normal clients' p50/p99 and errors (any status but 200) in both phases; the
attack's requests by status, the share shed (429) and the transactions per second scored;
the server's shed and degraded counters; Redis seen from a probe that PINGs it every 10 ms
(BUSY replies, the slowest PING) and from its SLOWLOG (the slowest command, the script calls
over 1 ms); the attacked card's history length in Redis at the end. Targets: p99 under attack
within 2x of the quiet run, 0 errors, Redis never BUSY.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, cast

from bench.common import DATA, percentiles, split_response

DURATION_S = 30.0
WARMUP_S = 2.0
NORMAL_CLIENTS = 32
ATTACK_CONNECTIONS = 16
ATTACK_BATCH = 10
ATTACK_RATE = 4_000.0  # transactions per second offered
HOT_CARD = "card-under-attack"
PROBE_EVERY_S = 0.01
SLOWLOG_US = 1_000
TARGET_P99_RATIO = 2.0
PATH = "/v1/models/fraud:predict"


# ------------------------------------------------------------------------------- the attacker


class _Attack(asyncio.Protocol):
    """One attacker connection: sends the next paced request once the previous one is
    answered."""

    def __init__(self, shared: dict[str, Any], done: asyncio.Future[None]):
        self.shared = shared
        self.done = done
        self.buffer = b""
        self.sent_at = 0.0
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)
        self._next()

    def _next(self) -> None:
        shared = self.shared
        now = time.perf_counter()
        if now >= shared["deadline"]:
            assert self.transport is not None
            self.transport.close()
            return
        k = shared["sent"]
        shared["sent"] += 1
        slot = shared["start"] + k * ATTACK_BATCH / ATTACK_RATE
        delay = slot - now
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._send, k)
        else:
            self._send(k)

    def _send(self, k: int) -> None:
        assert self.transport is not None
        instances = [
            {"TRANSACTION_ID": f"atk-{k}-{j}",
             "TX_DATETIME": self.shared["moment"](k * ATTACK_BATCH + j),
             "CUSTOMER_ID": HOT_CARD, "TERMINAL_ID": self.shared["terminal"], "TX_AMOUNT": 1.0}
            for j in range(ATTACK_BATCH)
        ]
        body = json.dumps({"instances": instances}).encode()
        self.sent_at = time.perf_counter()
        self.transport.write(
            f"POST {PATH} HTTP/1.1\r\nHost: {self.shared['host']}\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        )

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        response = split_response(self.buffer)
        if response is None:
            return
        status, self.buffer = response
        if self.sent_at >= self.shared["warm_until"]:
            statuses = self.shared["statuses"]
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                self.shared["latencies"].append(time.perf_counter() - self.sent_at)
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        if time.perf_counter() < self.shared["deadline"]:
            self.shared["statuses"][-1] = self.shared["statuses"].get(-1, 0) + 1
        if not self.done.done():
            self.done.set_result(None)


async def _attack(host: str, port: int, terminal: str, day: str) -> dict[str, Any]:
    from datetime import datetime, timedelta

    noon = datetime.fromisoformat(day) + timedelta(hours=12)
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    shared: dict[str, Any] = {
        "host": f"{host}:{port}", "terminal": terminal, "sent": 0, "statuses": {},
        "latencies": [], "start": start, "warm_until": start + WARMUP_S,
        "deadline": start + WARMUP_S + DURATION_S,
        "moment": lambda n: (noon + timedelta(milliseconds=n)).isoformat(),
    }
    dones = []
    for _ in range(ATTACK_CONNECTIONS):
        done: asyncio.Future[None] = loop.create_future()
        dones.append(done)

        def protocol(done: asyncio.Future[None] = done) -> _Attack:
            return _Attack(shared, done)

        await loop.create_connection(protocol, host, port)
    await asyncio.wait_for(asyncio.gather(*dones), timeout=DURATION_S + WARMUP_S + 120)
    return {"statuses": shared["statuses"], "latencies_s": shared["latencies"],
            "seconds": DURATION_S}


def attack(host: str, port: int, terminal: str, day: str) -> dict[str, Any]:
    import uvloop

    result = uvloop.run(_attack(host, port, terminal, day))
    statuses = result["statuses"]
    requests = sum(statuses.values())
    scored = statuses.get(200, 0)
    return {
        "offered_transactions_per_s": ATTACK_RATE,
        "requests": requests,
        "statuses": {str(k): v for k, v in statuses.items()},
        "shed_share": round(statuses.get(429, 0) / requests, 4) if requests else None,
        "scored_transactions_per_s": round(scored * ATTACK_BATCH / result["seconds"], 1),
        "sent_transactions_per_s": round(requests * ATTACK_BATCH / result["seconds"], 1),
        "scored_latency": percentiles(result["latencies_s"]),
    }


# ------------------------------------------------------------------------------- Redis


class RedisServer:
    """A private redis-server on 127.0.0.1 (no persistence), stopped by PID."""

    def __init__(self, workdir: Path):
        from inference.client import free_port

        self.port = free_port()
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir),
             "--slowlog-log-slower-than", str(SLOWLOG_US), "--slowlog-max-len", "100000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)
        client.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class Probe:
    """PINGs Redis every PROBE_EVERY_S on a connection of its own: BUSY replies and the slowest
    answer, per phase."""

    def __init__(self, port: int):
        import redis

        self.client = redis.Redis(port=port, socket_timeout=30)
        self.phase = "setup"
        self.stats: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import redis

        while not self._stop.wait(PROBE_EVERY_S):
            stats = self.stats.setdefault(self.phase, {"pings": 0, "busy": 0, "max_ms": 0.0})
            t0 = time.perf_counter()
            try:
                self.client.ping()
            except redis.ResponseError as e:
                if str(e).startswith("BUSY"):
                    stats["busy"] += 1
            stats["pings"] += 1
            stats["max_ms"] = max(stats["max_ms"], round((time.perf_counter() - t0) * 1e3, 3))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.client.close()


def _slowlog(port: int) -> dict[str, Any]:
    import redis

    client = redis.Redis(port=port, socket_timeout=10)
    entries = client.slowlog_get(100_000)
    client.slowlog_reset()
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    client.close()
    slowest = max(entries, key=lambda e: e["duration"], default=None)
    return {
        f"commands_over_{SLOWLOG_US}_us": len(entries),
        "slowest_ms": round(slowest["duration"] / 1e3, 3) if slowest else None,
        "slowest_command": slowest["command"][:40].decode("latin-1") if slowest else None,
        "evalsha_calls": stats.get("calls"),
        "evalsha_usec_per_call": stats.get("usec_per_call"),
    }


# ------------------------------------------------------------------------------- benchmark


def _server_counters(url: str) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        for prefix in ("vigil_serving_shed_requests_total",
                       "vigil_serving_degraded_transactions_total",
                       "vigil_serving_feature_update_failures_total"):
            if line.startswith(prefix):
                key, _, value = line.rpartition(" ")
                out[key] = out.get(key, 0.0) + float(value)
    return out


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def _loadgen(url: str, bodies_file: Path) -> subprocess.Popen[str]:
    host, port = url.removeprefix("http://").split(":")
    return subprocess.Popen(
        [sys.executable, "-m", "bench.serving", "loadgen", host, port, PATH, str(bodies_file),
         str(NORMAL_CLIENTS), str(DURATION_S), str(WARMUP_S)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(process: subprocess.Popen[str], what: str) -> dict[str, Any]:
    out, err = process.communicate(timeout=DURATION_S + WARMUP_S + 180)
    if process.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{err[-3000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _history_entries(redis_url: str, project: str) -> int:
    """Entries of the attacked card's history in Redis."""
    from feature_store.online import RedisHistories, redis_client
    from feature_store.online.codec import decode_customer

    client = redis_client(redis_url, 10.0)
    histories = RedisHistories(client, project)
    times, amounts, ids = client.hmget(histories.customer_key(HOT_CARD), histories._c_fields)
    client.close()
    if times is None or amounts is None or ids is None:
        return 0
    return len(decode_customer(times, amounts, ids).transaction_id)


def main() -> dict[str, Any]:
    import pandas as pd

    from bench import serving
    from inference.client import start_server
    from vigil.settings import RedisSettings

    project = f"vigil_bench_{uuid.uuid4().hex[:10]}"
    DATA.mkdir(parents=True, exist_ok=True)
    phases: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="vigil-bench-abuse-", dir=DATA) as tmp:
        home = Path(tmp)
        redis_server = RedisServer(home)
        previous = os.environ.get("VIGIL_REDIS__URL")
        os.environ["VIGIL_REDIS__URL"] = redis_server.url
        probe = server = None
        try:
            t0 = time.perf_counter()
            config, bodies, described = serving._prepare(home, project)
            setup_s = time.perf_counter() - t0
            bodies_file = home / "bodies.json"
            bodies_file.write_text(json.dumps(bodies))
            first = json.loads(bodies[0])["instances"][0]
            day = str(pd.Timestamp(first["TX_DATETIME"]).date())
            server = start_server(config=config, log_path=home / "vigil.log",
                                  extra_args=["--log-root", str(home / "inference_log")])
            probe = Probe(redis_server.port)
            _slowlog(redis_server.port)  # reset
            for phase in ("quiet", "under attack"):
                probe.phase = phase
                before = _server_counters(server.url)
                normal = _loadgen(server.url, bodies_file)
                attacker = None
                if phase == "under attack":
                    host, port = server.url.removeprefix("http://").split(":")
                    attacker = subprocess.Popen(
                        [sys.executable, "-m", "bench.abuse", "attack", host, port,
                         first["TERMINAL_ID"], day],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                    )
                result: dict[str, Any] = {"normal": _finish(normal, "load generator")}
                if attacker is not None:
                    result["attack"] = _finish(attacker, "attacker")
                time.sleep(0.5)
                result["server"] = _delta(_server_counters(server.url), before)
                result["redis"] = {**_slowlog(redis_server.port), **probe.stats.get(phase, {})}
                phases[phase] = result
                n = result["normal"]
                print(f"   {phase:12}: normal {n['requests_per_s']:8.1f} req/s  p50 "
                      f"{n.get('p50_ms')} ms  p99 {n.get('p99_ms')} ms  errors {n['errors']}"
                      + (f"; attack shed {result['attack']['shed_share']}, scored "
                         f"{result['attack']['scored_transactions_per_s']} tx/s"
                         if "attack" in result else ""), flush=True)
            history = _history_entries(redis_server.url, project)
        finally:
            if probe is not None:
                probe.stop()
            if server is not None:
                server.stop(timeout_s=60)
            if previous is None:
                os.environ.pop("VIGIL_REDIS__URL", None)
            else:
                os.environ["VIGIL_REDIS__URL"] = previous
            redis_server.stop()
    return _result(phases, history, RedisSettings().history_max_entries, described, setup_s)


def _result(phases: dict[str, dict[str, Any]], history: int, bound: int,
            described: dict[str, Any], setup_s: float) -> dict[str, Any]:
    quiet, attacked = phases["quiet"], phases["under attack"]
    q, a = quiet["normal"], attacked["normal"]
    ratio = a["p99_ms"] / q["p99_ms"] if q.get("p99_ms") and a.get("p99_ms") else None
    busy = sum(p["redis"].get("busy", 0) for p in phases.values())
    attack = attacked["attack"]

    def row(what: str, key: str, **extra: Any) -> dict[str, Any]:
        return {"what": what, "stock": q.get(key), "vigil": a.get(key), **extra}

    summary = [
        row("normal clients: requests/s", "requests_per_s"),
        row("normal clients: p50 latency (ms)", "p50_ms"),
        {**row("normal clients: p99 latency (ms)", "p99_ms"),
         "ratio": round(ratio, 2) if ratio else None,
         "target": f"under attack <= {TARGET_P99_RATIO:g}x quiet",
         "met": ratio is not None and ratio <= TARGET_P99_RATIO},
        {**row("normal clients: errors", "errors"), "target": "0",
         "met": q["errors"] == 0 and a["errors"] == 0},
        {"what": "attack: transactions/s offered, sent, scored", "vigil": (
            f"{attack['offered_transactions_per_s']:,.0f}, {attack['sent_transactions_per_s']:,.0f}"
            f", {attack['scored_transactions_per_s']:,.0f}")},
        {"what": "attack: share of requests shed (429)", "vigil": attack["shed_share"]},
        {"what": "Redis BUSY replies to the probe", "stock": quiet["redis"].get("busy"),
         "vigil": attacked["redis"].get("busy"), "target": "0", "met": busy == 0},
        {"what": "Redis: slowest command (ms)", "stock": quiet["redis"].get("slowest_ms"),
         "vigil": attacked["redis"].get("slowest_ms")},
        {"what": "Redis: slowest PING of the probe (ms)", "stock": quiet["redis"].get("max_ms"),
         "vigil": attacked["redis"].get("max_ms")},
        {"what": "attacked card's history entries at the end", "vigil": history,
         "target": f"<= {bound:,}", "met": history <= bound},
    ]
    return {
        "setup": {**described, "seconds": round(setup_s, 1)},
        "columns": {"stock": "quiet", "vigil": "under attack"},
        "load": {"duration_s": DURATION_S, "warmup_s": WARMUP_S, "normal_clients": NORMAL_CLIENTS,
                 "attack": {"connections": ATTACK_CONNECTIONS, "transactions_per_request":
                            ATTACK_BATCH, "offered_transactions_per_s": ATTACK_RATE,
                            "card": HOT_CARD}},
        "phases": phases,
        "summary": summary,
        "targets_met": all(r.get("met", True) for r in summary),
    }


def _cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.abuse")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("attack")
    for name in ("host", "port", "terminal", "day"):
        run.add_argument(name)
    args = parser.parse_args(argv)
    print(json.dumps(attack(args.host, int(args.port), args.terminal, args.day)))


if __name__ == "__main__":
    _cli(sys.argv[1:])
