#!/usr/bin/env python3
"""The benchmark suite behind BENCHMARKS.md.

Runs each scenario several times (a fresh server and a fresh copy of the
seeded database every run), and prints the medians as a Markdown table and
as JSON. Everything targets loopback; every run is bounded in time.

    python3 scripts/bench.py                 # every scenario, 3 runs each
    python3 scripts/bench.py --runs 5 chat-10x10-saturating hot-swap
    python3 scripts/bench.py --list

Needs the release binaries and the guests, which it builds first.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = os.path.join(ROOT, "target/release/consumer-host")
LOADGEN = os.path.join(ROOT, "target/release/loadgen")
FLOOR = os.path.join(ROOT, "target/release/floor")
NODE_CHAT = os.environ.get("NODE_CHAT", os.path.join(os.path.dirname(ROOT), "shared", "peers", "node-chat"))
CHAT = os.path.join(ROOT, "guest-consumers/dist/chat.wasm")
CHAT_V2 = os.path.join(ROOT, "guest-consumers/dist/chat_v2.wasm")
SECRET = "benchmark-secret-not-for-production"
ADMIN_TOKEN = "benchmark-admin-token-0123456789"
PORT = 18300


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def sh(cmd, cwd=ROOT, **kwargs):
    log("$", " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=cwd, **kwargs)


def build():
    sh(["cargo", "build", "--release", "--locked", "-p", "consumer-host", "-p", "loadgen", "-p", "floor"])
    sh(["cargo", "run", "--quiet", "--release", "--locked", "-p", "guest-build"], stdout=subprocess.DEVNULL)


def config(workdir, extra="", port=PORT, name="bench", module=CHAT, sandbox=""):
    path = os.path.join(workdir, f"{name}.toml")
    with open(path, "w") as f:
        f.write(f"""
listen = "127.0.0.1:{port}"
[database]
path = "db.sqlite3"
[auth]
secret = "{SECRET}"
[admin]
token = "{ADMIN_TOKEN}"
[limits]
# The load generator sends faster than a person: no per-client rate limit.
messages_per_second = 0
[[route]]
path = "ws/<room_name>/"
consumer = "chat"
[consumer.chat]
module = "{module}"
read = ["chat_conversation_users"]
write = ["chat_conversationmessage"]
watch = false
[consumer.chat.sandbox]
{sandbox}
{extra}
""")
    return path


def seed(workdir, name, rooms, users):
    """Seeds rooms x users into base.sqlite3 and returns the plan's path."""
    plan = os.path.join(workdir, f"plan-{name}.json")
    with open(plan, "w") as out:
        subprocess.run(
            [HOST, "seed", "--config", config(workdir), "--db", os.path.join(workdir, "base.sqlite3"),
             "--rooms", str(rooms), "--users-per-room", str(users), "--token-lifetime", "86400"],
            check=True, stdout=out, stderr=subprocess.DEVNULL, env={**os.environ, "JWT_SECRET": SECRET})
    return plan


def start_server(workdir, cfg, name, poll=0.1):
    log_path = os.path.join(workdir, f"{name}.log")
    server = subprocess.Popen([HOST, "serve", "--config", cfg], cwd=workdir,
                              stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))
    # A module not in the compiled-code cache compiles first: a Python
    # component takes 12 s or more on one thread.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if "listening" in open(log_path).read():
            return server
        time.sleep(poll)
    server.kill()
    raise RuntimeError("the server did not start: see " + log_path)


def stop(process):
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def fresh_database(workdir):
    for suffix in ("", "-wal", "-shm"):
        path = os.path.join(workdir, "db.sqlite3" + suffix)
        if os.path.exists(path):
            os.remove(path)
    shutil.copy(os.path.join(workdir, "base.sqlite3"), os.path.join(workdir, "db.sqlite3"))


def start_peer(workdir, kind):
    """The floor (a bare tokio-tungstenite broadcast) or the Node.js chat
    (../shared/peers/node-chat: ws + better-sqlite3, synchronous FULL), on
    the same port and database as consumer-host would use."""
    log_path = os.path.join(workdir, f"{kind}.log")
    if kind == "floor":
        cmd, env, cwd = [FLOOR, "--listen", f"127.0.0.1:{PORT}"], os.environ, workdir
    else:
        if not os.path.isdir(os.path.join(NODE_CHAT, "node_modules")):
            sh(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_CHAT)
        cmd = ["node", "server.js", "--db", os.path.join(workdir, "db.sqlite3"), "--listen", f"127.0.0.1:{PORT}"]
        env, cwd = {**os.environ, "JWT_SECRET": SECRET}, NODE_CHAT
    server = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"{kind} did not start: see {log_path}")


def run_once(workdir, plan, loadgen_args, extra_config="", nodes=1, server="consumer-host", **chat):
    """Fresh servers on a fresh copy of the seeded database, one loadgen run.
    With nodes > 1, the servers share a Redis started for the run, and each
    room's members are spread over them. `server` may instead be "floor" or
    "node" (the peers measured in the same run)."""
    fresh_database(workdir)
    servers, redis = [], None
    if server != "consumer-host":
        servers.append(start_peer(workdir, server))
        try:
            db_args = [] if server == "floor" else ["--db", os.path.join(workdir, "db.sqlite3")]
            out = subprocess.run(
                [LOADGEN, "--url", f"ws://127.0.0.1:{PORT}", "--plan", plan, "--server-pid", str(servers[0].pid),
                 *db_args, *loadgen_args], check=True, capture_output=True, text=True, cwd=workdir)
            return json.loads(out.stdout)
        finally:
            stop(servers[0])
    if nodes > 1:
        redis_port = PORT + 100
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        extra_config += (f'\n[layer]\nkind = "redis"\nurl = "redis://127.0.0.1:{redis_port}/"\n'
                         'key = "benchmark-layer-key-0123456789abcdef"\n')
    try:
        for n in range(nodes):
            servers.append(start_server(workdir, config(workdir, extra_config, PORT + n, f"node{n}", **chat), f"node{n}"))
        urls = [arg for n in range(nodes) for arg in ("--url", f"ws://127.0.0.1:{PORT + n}")]
        out = subprocess.run(
            [LOADGEN, *urls, "--plan", plan, "--server-pid", str(servers[0].pid),
             "--db", os.path.join(workdir, "db.sqlite3"), *loadgen_args],
            check=True, capture_output=True, text=True, cwd=workdir)
        return json.loads(out.stdout)
    finally:
        for server in servers:
            stop(server)
        if redis:
            stop(redis)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(reports, fields):
    out = {}
    for name, extract in fields.items():
        out[name] = median([extract(r) for r in reports])
    out["runs"] = len(reports)
    return out


def lat(report, pct, window=None):
    source = report["latency_us"] if window is None else (report.get("windows") or {}).get(window)
    return None if not source else source.get(pct)


def scenario_saturating(workdir, runs):
    plan = seed(workdir, "10x10", 10, 10)
    reports = [run_once(workdir, plan, ["--duration", "10", "--rate", "0", "--window", "8"]) for _ in range(runs)]
    return summarize(reports, {
        "deliveries_per_sec": lambda r: r["deliveries_per_sec"],
        "messages_per_sec": lambda r: r["messages_per_sec"],
        "lost": lambda r: r["lost"],
        "duplicated": lambda r: r["duplicated"],
        "unsaved": lambda r: r["messages_sent_total"] - r["saved"],
        "p99_ms": lambda r: lat(r, "p99") / 1000,
        "server_cpu_secs": lambda r: r["server"]["cpu_secs"],
        "loadgen_cpu_secs": lambda r: r["loadgen_cpu_secs"],
    })


def scenario_rate(workdir, runs):
    # 100 clients x 20 messages/s x 10 members = 20,000 deliveries/s offered.
    plan = seed(workdir, "10x10", 10, 10)
    reports = [run_once(workdir, plan, ["--duration", "10", "--rate", "20"]) for _ in range(runs)]
    return summarize(reports, {
        "deliveries_per_sec": lambda r: r["deliveries_per_sec"],
        "lost": lambda r: r["lost"],
        "p50_ms": lambda r: lat(r, "p50") / 1000,
        "p99_ms": lambda r: lat(r, "p99") / 1000,
        "max_ms": lambda r: lat(r, "max") / 1000,
    })


def scenario_big_room(workdir, runs):
    # 1,000 clients x 0.25 messages/s x 1,000 members = 250,000 deliveries/s offered.
    plan = seed(workdir, "1x1000", 1, 1000)
    reports = [run_once(workdir, plan, ["--duration", "10", "--rate", "0.25", "--drain", "10"]) for _ in range(runs)]
    return summarize(reports, {
        "deliveries_per_sec": lambda r: r["deliveries_per_sec"],
        "lost": lambda r: r["lost"],
        "closed_early": lambda r: r["closed_early"],
        "p99_ms": lambda r: lat(r, "p99") / 1000,
        "server_cpu_secs": lambda r: r["server"]["cpu_secs"],
        "loadgen_cpu_secs": lambda r: r["loadgen_cpu_secs"],
    })


def scenario_idle(workdir, runs):
    # As many connections as this machine's open-file limit lets both
    # processes hold (the hard limit cannot be raised here).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    users = min(50_000, (hard - 1_000) // 100 * 100)
    plan = seed(workdir, "idle", users // 100, 100)
    reports = [run_once(workdir, plan, ["--idle", "--duration", "15"], sandbox="idle_evict_secs = 5")
               for _ in range(runs)]
    return summarize(reports, {
        "connections": lambda r: r["connections"],
        "connects_per_sec": lambda r: r["connects_per_sec"],
        "connect_failures": lambda r: r["connect_failures"],
        "rss_mib_end": lambda r: r["server"]["rss_kib_end"] / 1024,
        "kib_per_connection": lambda r: (r["server"]["rss_kib_end"] - r["server"]["rss_kib_start"]) / r["connections"],
        "rss_mib_peak": lambda r: r["server"]["rss_kib_peak"] / 1024,
    })


def scenario_hot_swap(workdir, runs):
    plan = seed(workdir, "10x10", 10, 10)
    reports = [run_once(workdir, plan, [
        "--duration", "10", "--rate", "20", "--deploy-file", CHAT_V2, "--deploy-at", "5",
        "--admin-url", f"http://127.0.0.1:{PORT}", "--admin-token", ADMIN_TOKEN]) for _ in range(runs)]
    return summarize(reports, {
        "activation_ms": lambda r: r["deploy"]["activation_ms"],
        "request_ms": lambda r: r["deploy"]["request_ms"],
        "p99_steady_ms": lambda r: lat(r, "p99", "steady") / 1000,
        "p99_during_ms": lambda r: lat(r, "p99", "during") / 1000,
        "p99_after_ms": lambda r: lat(r, "p99", "after") / 1000,
        "lost": lambda r: r["lost"],
        "duplicated": lambda r: r["duplicated"],
        "closed_early": lambda r: r["closed_early"],
    })


def scenario_cross_node_rate(workdir, runs):
    # As chat-10x10-20k, with each room's members split over two nodes.
    plan = seed(workdir, "10x10", 10, 10)
    reports = [run_once(workdir, plan, ["--duration", "10", "--rate", "20"], nodes=2) for _ in range(runs)]
    return summarize(reports, {
        "deliveries_per_sec": lambda r: r["deliveries_per_sec"],
        "lost": lambda r: r["lost"],
        "duplicated": lambda r: r["duplicated"],
        "p50_ms": lambda r: lat(r, "p50") / 1000,
        "p99_ms": lambda r: lat(r, "p99") / 1000,
    })


def scenario_cross_node_saturating(workdir, runs):
    plan = seed(workdir, "10x10", 10, 10)
    reports = [run_once(workdir, plan, ["--duration", "10", "--rate", "0", "--window", "8"], nodes=2)
               for _ in range(runs)]
    return summarize(reports, {
        "deliveries_per_sec": lambda r: r["deliveries_per_sec"],
        "lost": lambda r: r["lost"],
        "duplicated": lambda r: r["duplicated"],
        "unsaved": lambda r: r["messages_sent_total"] - r["saved"],
        "p99_ms": lambda r: lat(r, "p99") / 1000,
    })


def scenario_db_writes(workdir, runs):
    results = {}
    for _ in range(runs):
        out = subprocess.run(["cargo", "bench", "--quiet", "--locked", "-p", "consumer-host-tests", "--bench",
                              "db_writes", "--", "100", "1000"], check=True, capture_output=True, text=True, cwd=ROOT)
        for line in out.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                results.setdefault(row["writers"], []).append(row["rows_per_sec"])
    return {f"rows_per_sec_{writers}_writers": median(values) for writers, values in results.items()} | {"runs": runs}


def scenario_guest_call(workdir, runs):
    out = subprocess.run(["cargo", "bench", "--quiet", "--locked", "-p", "consumer-host-tests", "--bench", "guest_call"],
                         check=True, capture_output=True, text=True, cwd=ROOT)
    result, name = {}, None
    for line in out.stdout.splitlines():
        if line.startswith("guest_call/"):
            name = line.split("/", 1)[1].strip()
        elif "time:" in line and name:
            # time:   [low median high]
            parts = line.split("[")[1].split("]")[0].split()
            result[name + " (median, µs)"] = float(parts[2]) / (1000 if parts[3] == "ns" else 1)
            name = None
    result["runs"] = "criterion"
    return result


OVERLOAD_FIELDS = {
    "offered_deliveries_per_sec": lambda r: r["rate_per_client"] * r["connections"] * 10 if r["rate_per_client"] else None,
    "deliveries_per_sec": lambda r: r["deliveries_per_sec"],
    "lost": lambda r: r["lost"],
    "closed_early": lambda r: r["closed_early"],
    "sends_skipped": lambda r: r.get("sends_skipped"),
    "p50_ms": lambda r: lat(r, "p50") / 1000 if lat(r, "p50") else None,
    "p99_ms": lambda r: lat(r, "p99") / 1000 if lat(r, "p99") else None,
    "server_cpu_secs": lambda r: r["server"]["cpu_secs"],
    "loadgen_cpu_secs": lambda r: r["loadgen_cpu_secs"],
}


def rate_scenario(rate, lockstep, servers=("consumer-host",), duration="10", drain="10"):
    """10 rooms x 10 clients, each sending `rate` messages a second (open
    loop), in lockstep (every client at the same instants: bursts) or
    staggered; the same run against each of `servers`."""
    def scenario(workdir, runs):
        plan = seed(workdir, "10x10", 10, 10)
        args = ["--duration", duration, "--rate", str(rate), "--drain", drain] + (["--lockstep"] if lockstep else [])
        out = {}
        for server in servers:
            reports = [run_once(workdir, plan, args, server=server) for _ in range(runs)]
            out[server] = summarize(reports, OVERLOAD_FIELDS)
        if len(servers) > 1:
            base = out["consumer-host"]
            for server in servers[1:]:
                if base["p99_ms"] and out[server]["p99_ms"]:
                    out[f"p99_ratio_{server}_to_consumer-host"] = round(out[server]["p99_ms"] / base["p99_ms"], 2)
        return out
    return scenario


def scenario_big_room_500k(workdir, runs):
    # 1,000 clients x 0.5 messages/s x 1,000 members = 500,000 deliveries/s offered.
    plan = seed(workdir, "1x1000", 1, 1000)
    reports = [run_once(workdir, plan, ["--duration", "10", "--rate", "0.5", "--drain", "10"]) for _ in range(runs)]
    return summarize(reports, OVERLOAD_FIELDS | {"offered_deliveries_per_sec": lambda r: 500_000})


def scenario_start(workdir, runs):
    """Time from exec to listening, the compiled-code cache warm (a first
    start fills it)."""
    return {"start_to_listening_ms_warm": start_times(workdir, runs), "runs": runs}


def start_times(workdir, runs, module=CHAT, sandbox=""):
    """Median time from exec to listening with a warm compiled-code cache
    (a first start, not counted, fills it)."""
    times = []
    cache = os.path.join(workdir, "compiled")
    shutil.rmtree(cache, ignore_errors=True)
    cfg = config(workdir, f'[runtime]\ncompiled_cache = "{cache}"\n', module=module, sandbox=sandbox)
    for attempt in range(runs + 1):
        fresh_database_from_scratch(workdir)
        started = time.monotonic()
        server = start_server(workdir, cfg, "start", poll=0.002)
        elapsed = time.monotonic() - started
        stop(server)
        if attempt > 0:
            times.append(elapsed * 1000)
    return median(times)


# What a Python or JavaScript chat needs: CPython starts at about 14 MiB of
# linear memory, SpiderMonkey at 9.
LANGUAGE_SANDBOX = "memory_bytes = 67108864\nevent_deadline_ms = 1000"


def language_modules(workdir):
    """The chat of each language: Rust (guest-consumers/chat), the reference
    Channels consumer ported to Python as it is, the same with its one
    handler declared pure (one added line), and the JavaScript chat; built
    by `consumer-host build`."""
    modules = {"rust": CHAT}
    for name, lang in (("python", "python"), ("python-pure", "python"), ("js", "js")):
        project = os.path.join(ROOT, "sdk", lang, "examples", "chat")
        if name == "python-pure":
            copy = os.path.join(workdir, "project-python-pure")
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(project, copy, ignore=shutil.ignore_patterns("test", "tests", "__pycache__"))
            path = os.path.join(copy, "consumers.py")
            source = open(path).read()
            marker = "class ChatConsumer(AsyncWebsocketConsumer):\n"
            assert marker in source
            source = source.replace(marker, marker + '    pure_events = ["chat_message"]\n\n', 1)
            open(path, "w").write(source)
            project = copy
        module = os.path.join(workdir, f"chat-{name}.wasm")
        sh([HOST, "build", project, "-o", module])
        modules[name] = module
    return modules


def scenario_languages(workdir, runs):
    """The chat in Rust, Python and JavaScript in the same run: module size,
    compile time, instantiation, one event, memory per live instance (the
    `languages` bench), start with a warm cache, idle memory per connection
    (instances evicted), and the 10 x 10 saturating chat."""
    modules = language_modules(workdir)
    env = {**os.environ, "LANGUAGE_MODULES": ",".join(f"{k}={v}" for k, v in modules.items())}
    micro = {}
    for _ in range(runs):
        out = subprocess.run(["cargo", "bench", "--quiet", "--locked", "-p", "consumer-host-tests", "--bench", "languages"],
                             env=env, check=True, capture_output=True, text=True, cwd=ROOT)
        for line in out.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                micro.setdefault(row["consumer"], []).append(row)
    plan = seed(workdir, "10x10", 10, 10)
    idle_plan = seed(workdir, "10x100", 10, 100)
    results = {}
    for name, module in modules.items():
        rows = micro[name]
        result = {key: median([row[key] for row in rows])
                  for key in ("module_mib", "compile_ms", "instantiate_us", "event_us", "live_instance_kib")}
        result["start_warm_ms"] = start_times(workdir, runs, module, LANGUAGE_SANDBOX)
        idle = [run_once(workdir, idle_plan, ["--idle", "--duration", "8"], module=module,
                         sandbox=LANGUAGE_SANDBOX + "\nidle_evict_secs = 2") for _ in range(runs)]
        result["idle_kib_per_connection"] = median(
            [(r["server"]["rss_kib_end"] - r["server"]["rss_kib_start"]) / r["connections"] for r in idle])
        saturating = [run_once(workdir, plan, ["--duration", "10", "--rate", "0", "--window", "8"], module=module,
                               sandbox=LANGUAGE_SANDBOX) for _ in range(runs)]
        result |= summarize(saturating, {
            "deliveries_per_sec": lambda r: r["deliveries_per_sec"],
            "lost": lambda r: r["lost"],
            "unsaved": lambda r: r["messages_sent_total"] - r["saved"],
            "p99_ms": lambda r: lat(r, "p99") / 1000,
        })
        results[name] = result
    rust = results["rust"]["deliveries_per_sec"]
    for name, result in results.items():
        result["deliveries_vs_rust"] = round(result["deliveries_per_sec"] / rust, 2) if rust else None
    return results


def fresh_database_from_scratch(workdir):
    for suffix in ("", "-wal", "-shm"):
        path = os.path.join(workdir, "db.sqlite3" + suffix)
        if os.path.exists(path):
            os.remove(path)


def scenario_connect_burst(workdir, runs):
    """As many connections as the machine's open-file limit allows, opened
    at once; then every client goes away: how fast they connect, and
    whether the memory of the burst goes back to the operating system."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    users = min(20_000, (hard - 1_000) // 100 * 100)
    plan = seed(workdir, "burst", users // 100, 100)
    reports = []
    for _ in range(runs):
        fresh_database(workdir)
        server = start_server(workdir, config(workdir, sandbox="idle_evict_secs = 5"), "burst")
        try:
            out = subprocess.run(
                [LOADGEN, "--url", f"ws://127.0.0.1:{PORT}", "--plan", plan, "--server-pid", str(server.pid),
                 "--idle", "--duration", "3"], check=True, capture_output=True, text=True, cwd=workdir)
            report = json.loads(out.stdout)
            time.sleep(5)
            report["rss_kib_after"] = rss_kib(server.pid)
            reports.append(report)
        finally:
            stop(server)
    return summarize(reports, {
        "connections": lambda r: r["connections"],
        "connects_per_sec": lambda r: r["connects_per_sec"],
        "rss_mib_start": lambda r: r["server"]["rss_kib_start"] / 1024,
        "rss_mib_peak": lambda r: r["server"]["rss_kib_peak"] / 1024,
        "rss_mib_5s_after_all_left": lambda r: r["rss_kib_after"] / 1024,
    })


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


SCENARIOS = {
    "chat-10x10-saturating": scenario_saturating,
    "chat-10x10-20k": scenario_rate,
    "lockstep-20k": rate_scenario(20, True, servers=("consumer-host", "floor", "node")),
    "lockstep-50k": rate_scenario(50, True, servers=("consumer-host", "floor", "node")),
    "lockstep-400k": rate_scenario(400, True),
    "staggered-400k": rate_scenario(400, False),
    "lockstep-1m": rate_scenario(1000, True, servers=("consumer-host", "floor")),
    "big-room-500k": scenario_big_room_500k,
    "start-warm-cache": scenario_start,
    "connect-burst": scenario_connect_burst,
    "chat-1x1000": scenario_big_room,
    "idle-connections": scenario_idle,
    "hot-swap": scenario_hot_swap,
    "cross-node-20k": scenario_cross_node_rate,
    "cross-node-saturating": scenario_cross_node_saturating,
    "db-writes": scenario_db_writes,
    "guest-call": scenario_guest_call,
    "languages": scenario_languages,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", help="scenarios to run (default: all)")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario; medians are reported")
    parser.add_argument("--list", action="store_true", help="list the scenarios")
    parser.add_argument("--no-build", action="store_true", help="use the binaries as they are")
    args = parser.parse_args()
    if args.list:
        print("\n".join(SCENARIOS))
        return
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}; see --list")
    if not 1 <= args.runs <= 20:
        parser.error("--runs must be between 1 and 20")
    if not args.no_build:
        build()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    results = {"date": time.strftime("%Y-%m-%d"), "commit": commit, "scenarios": {}}
    for name in args.scenarios or SCENARIOS:
        workdir = os.path.join(ROOT, "target", "bench", name)
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)
        log(f"== {name} ({args.runs} runs)")
        results["scenarios"][name] = SCENARIOS[name](workdir, args.runs)
        log(json.dumps(results["scenarios"][name]))
    print(f"## Results ({results['date']}, commit {commit}; medians)\n")
    for name, values in results["scenarios"].items():
        cells = ", ".join(f"{k} {round(v, 2) if isinstance(v, float) else v}" for k, v in values.items())
        print(f"- **{name}**: {cells}")
    out = os.path.join(ROOT, "target", "bench", "results.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    log(f"results: {out}")


if __name__ == "__main__":
    main()
