#!/usr/bin/env python3
"""freshen's whole-process benchmarks, side by side with what users do instead.

B1  no-change check cycle: freshen --once vs docker-rebuilder (docker pull of every
    base) vs a cron job (docker build --pull of every build), M bases behind a
    proxy that adds 20 ms to every registry round trip.
B2  rebuild makespan of a 12-build, depth-3 DAG (RUN sleep 1) under BuildKit and classic, at parallelism 1, 2, 4,
    against the lower bounds (sum of build times / p, critical path).
B3  freshen plan over 1,000 / 10,000 / 50,000 synthetic builds: wall time, peak RSS.
B4  idle daemon with 50 builds: RSS and CPU seconds over 60 s.
B5  time from a pushed change to a started build, polling every 10 s.
B6  build-context streaming: freshen --once's peak RSS while it sends a context of
    100,000 small files, and one of 2 GB, to the engine.
B7  push → build start over 20 pushes: the registry's notifications to the daemon's
    /v1/hooks/registry, against polling every 10 s, in the same run.
B8  the engine pool: B2's DAG (RUN sleep 3) on 1 engine and on 3, against
    max(critical path, work / capacity); and a parent's trip through the registry (bench/pool.py).

Run with bench/run.sh (it builds the release binary and starts what is needed).
Writes BENCHMARKS.md. Every comparison runs in this one invocation.
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRESHEN = os.path.join(ROOT, "target", "release", "freshen")
LABEL = f"freshen.bench={os.getpid()}"


def sh(*args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class LatencyProxy:
    """TCP proxy that delays every chunk from client to registry by `latency` seconds,
    so each request/response round trip costs `latency` more."""

    def __init__(self, upstream_port, latency):
        self.port = free_port()
        self.upstream_port = upstream_port
        self.latency = latency
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self._run, daemon=True).start()
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port)).close()
                return
            except OSError:
                time.sleep(0.05)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self.loop.run_forever()
        server.close()

    async def _pipe(self, reader, writer, delay):
        try:
            while data := await reader.read(65536):
                if delay:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _handle(self, cr, cw):
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            cw.close()
            return
        await asyncio.gather(self._pipe(cr, uw, self.latency), self._pipe(ur, cw, 0))


class Registry:
    def __init__(self, workdir, extra=""):
        self.port = free_port()
        self.log = os.path.join(workdir, "registry.log")
        cfg = os.path.join(workdir, "registry.yml")
        with open(cfg, "w") as f:
            f.write(f"version: 0.1\nlog: {{level: warn, accesslog: {{disabled: false}}}}\n"
                    f"storage: {{filesystem: {{rootdirectory: {workdir}/data}}, delete: {{enabled: true}}}}\n"
                    f"http: {{addr: 127.0.0.1:{self.port}}}\n" + extra)
        self.proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port)).close()
                break
            except OSError:
                time.sleep(0.05)

    def clear(self):
        open(self.log, "w").close()

    def requests(self):
        """(method, path, status, bytes) of each access-log line since the last clear."""
        out = []
        for line in open(self.log, errors="replace"):
            m = re.search(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d+) (\d+)', line)
            if m:
                out.append((m.group(1), m.group(2), int(m.group(3)), int(m.group(4))))
        return out

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def summarise(reqs):
    methods = {}
    body = 0
    for method, _, _, size in reqs:
        methods[method] = methods.get(method, 0) + 1
        if method != "HEAD":  # a HEAD's logged size is the Content-Length of a body never sent
            body += size
    return methods, body


def timed(fn):
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def busybox_base(workdir, tag):
    ctx = os.path.join(workdir, "busybox-base")
    os.makedirs(ctx, exist_ok=True)
    sh("cp", "/bin/busybox", os.path.join(ctx, "busybox"))
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write('FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin"]\n')
    sh("docker", "build", "-q", "--label", LABEL, "-t", tag, ctx)


def variant(base, tag, value, layer=False):
    """A new image on `base` that differs only in a label: a new digest in a fraction of a second.
    With `layer`, it also gains a file: BuildKit reuses its cache for a base whose layers did not
    change (a label-only new base rebuilds 12 builds in 0.4 s), so B2 needs a new layer."""
    dockerfile = f"FROM {base}\n" + (f"RUN echo {value} > /variant\n" if layer else "")
    subprocess.run(["docker", "build", "-q", "--label", LABEL, "--label", f"v={value}", "-t", tag, "-"],
                   input=dockerfile, text=True, check=True, capture_output=True)


def write_config(workdir, builds, options=None):
    cfg = {"options": {"state_file": os.path.join(workdir, "state.json"), **(options or {})}, "builds": builds}
    path = os.path.join(workdir, "config.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def b1_setup(workdir, reg, proxy, m):
    """M bases pushed straight to the registry, one build on each reached through `proxy`,
    all built once. Returns (config path, builds, the bases as seen through the proxy)."""
    seed = f"127.0.0.1:{reg.port}/bench/seed:1"
    if not sh("docker", "images", "-q", seed).stdout.strip():
        busybox_base(workdir, seed)
    d = os.path.join(workdir, f"b1-{m}")
    os.makedirs(d, exist_ok=True)
    builds, vias = {}, []
    for i in range(m):
        direct = f"127.0.0.1:{reg.port}/bench/m{m}-base{i}:1"
        variant(seed, direct, f"{m}-{i}")
        sh("docker", "push", "-q", direct)
        via = f"127.0.0.1:{proxy.port}/bench/m{m}-base{i}:1"
        vias.append(via)
        ctx = os.path.join(d, f"app{i}")
        os.makedirs(ctx, exist_ok=True)
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write(f"FROM {via}\nRUN true\n")
        builds[f"app{i}"] = {"dockerfile": ctx, "tags": [f"bench/m{m}-app{i}:latest"], "labels": {"freshen.bench": str(os.getpid())}}
    cfg = write_config(d, builds, {"parallelism": 2})
    sh(FRESHEN, "-c", cfg, "--once")  # first run builds everything; not timed
    return cfg, builds, vias


def b1(workdir, reg, proxy, sizes, runs, results):
    for m in sizes:
        cfg, builds, vias = b1_setup(workdir, reg, proxy, m)
        row = {}
        for name, fn in [
            ("freshen --once", lambda: sh(FRESHEN, "-c", cfg, "--once")),
            ("docker pull every base (docker-rebuilder)", lambda: [
                (sh("docker", "pull", "-q", v), sh("docker", "image", "inspect", "-f", "{{.Id}}", v)) for v in vias]),
            ("docker build --pull every build (cron)", lambda: [
                sh("docker", "build", "-q", "--pull", "--label", LABEL, "-t", b["tags"][0], b["dockerfile"]) for b in builds.values()]),
        ]:
            times, methods, body = [], {}, 0
            n = runs if not (name.startswith("docker build") and m >= 200) else max(3, runs // 2)
            for _ in range(n):
                reg.clear()
                times.append(timed(fn))
                methods, body = summarise(reg.requests())
            row[name] = {"median_s": median(times), "runs": n, "requests": methods, "bytes": body}
            print(f"B1 M={m:<4} {name:<45} {median(times):8.3f} s  {methods}  {body} B", flush=True)
        results.setdefault("B1", {})[m] = row


def dag_builds(d, root, tag_of, sleep):
    """B2's DAG: 4, 4, 4 builds in three levels, each child on a parent of the level above
    (shifted, so edges cross): with this shape max(critical path, sum / p) is a reachable
    schedule, so any gap to it is the scheduler's own overhead. Each build `RUN sleep <sleep>`,
    tagged `tag_of(name)`. Returns (builds, each build's parent or None)."""
    parents = {f"{lvl}{i}": (None if up is None else f"{up}{(i + 1) % 4}") for lvl, up in (("a", None), ("b", "a"), ("c", "b")) for i in range(4)}
    builds = {}
    for name, parent in parents.items():
        ctx = os.path.join(d, name)
        os.makedirs(ctx, exist_ok=True)
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            # The echo makes every build's RUN distinct, so no build hits another's cache.
            f.write(f"FROM {root if parent is None else tag_of(parent)}\nRUN sleep {sleep} && echo {name} > /built\n")
        builds[name] = {"dockerfile": ctx, "tags": [tag_of(name)], "labels": {"freshen.bench": str(os.getpid())}}
    return builds, parents


def b2(workdir, reg, runs, results):
    d = os.path.join(workdir, "b2")
    os.makedirs(d, exist_ok=True)
    root = f"127.0.0.1:{reg.port}/bench/dag-root:1"
    busybox_base(workdir, root)
    sh("docker", "push", "-q", root)
    builds, parents = dag_builds(d, root, lambda n: f"bench/dag-{n}:latest", 1)
    row = {}
    k = 0
    # Both builders in the same run, alternating per parallelism, so the engine's state is alike for each.
    for p, builder in [(p, b) for p in (1, 2, 4) for b in ("buildkit", "classic")]:
        cfg = write_config(d, builds, {"parallelism": p, "builder": builder})
        sh(FRESHEN, "-c", cfg, "--once")
        spans, bounds, means = [], [], []
        for _ in range(runs):
            k += 1
            variant(root, root, f"dag-{k}", layer=True)
            sh("docker", "push", "-q", root)
            out = sh(FRESHEN, "-c", cfg, "--once", "--format", "json")
            rep = json.loads(out.stdout)
            secs = {n: o["seconds"] for n, o in rep["outcomes"].items()}
            assert len(secs) == 12, rep["outcomes"]

            def path(n):
                return secs[n] + (path(parents[n]) if parents[n] else 0)
            critical = max(path(n) for n in secs)
            bound = max(critical, sum(secs.values()) / p)
            spans.append(rep["seconds"])
            bounds.append(bound)
            means.append(sum(secs.values()) / len(secs))
        ratio = median([s / b for s, b in zip(spans, bounds)])
        row.setdefault(builder, {})[p] = {"makespan_s": median(spans), "bound_s": median(bounds), "ratio": ratio,
                                          "build_s": median(means)}
        print(f"B2 {builder} parallelism={p}  makespan {median(spans):6.2f} s  bound {median(bounds):6.2f} s  ratio {ratio:.3f}", flush=True)
    results["B2"] = row


def b3(workdir, sizes, runs, results):
    row = {}
    for n in sizes:
        d = os.path.join(workdir, f"b3-{n}")
        os.makedirs(os.path.join(d, "df"), exist_ok=True)
        rnd = random.Random(n)
        builds = {}
        for i in range(n):
            if i > 10 and rnd.random() < 0.7:
                base = f"r.example/b{rnd.randrange(i)}:1"
            else:
                base = f"debian:{rnd.choice(['bookworm', 'trixie'])}-slim"
            df = os.path.join(d, "df", f"{i}.Dockerfile")
            with open(df, "w") as f:
                f.write(f"ARG BASE={base}\nARG V=1\nFROM ${{BASE}} AS deps\nRUN echo deps $V\nFROM deps AS build\nRUN echo build\n"
                        f"FROM build\nCOPY --from=deps /x /x\n")
            builds[f"b{i}"] = {"dockerfile": df, "context": d, "tags": [f"r.example/b{i}:1"]}
        cfg = write_config(d, builds)
        walls, rss = [], []
        for _ in range(runs):
            out = subprocess.run(["/usr/bin/time", "-f", "%e %M", FRESHEN, "-c", cfg, "plan", "--format", "json"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            assert out.returncode == 0, out.stderr[-2000:]
            wall, kb = out.stderr.strip().splitlines()[-1].split()
            walls.append(float(wall))
            rss.append(int(kb) / 1024)
        row[n] = {"wall_s": median(walls), "peak_rss_mb": median(rss)}
        print(f"B3 builds={n:<6} plan {median(walls):6.3f} s  peak RSS {median(rss):6.1f} MB", flush=True)
    results["B3"] = row


def proc_stats(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
    return cpu, rss


def b4(workdir, reg, proxy, results, idle_s):
    cfg = os.path.join(workdir, "b1-50", "config.json")
    if not os.path.exists(cfg):
        cfg, _, _ = b1_setup(workdir, reg, proxy, 50)
    c = json.load(open(cfg))
    c["options"]["interval"] = "1h"
    json.dump(c, open(cfg, "w"))
    log = os.path.join(workdir, "b4.log")
    p = subprocess.Popen([FRESHEN, "-c", cfg], stderr=open(log, "w"), stdout=subprocess.DEVNULL)
    while "cycle done" not in open(log).read():
        time.sleep(0.2)
    time.sleep(1)
    cpu0, _ = proc_stats(p.pid)
    peak = 0.0
    for _ in range(idle_s):
        time.sleep(1)
        peak = max(peak, proc_stats(p.pid)[1])
    cpu1, rss = proc_stats(p.pid)
    p.send_signal(signal.SIGTERM)
    p.wait()
    results["B4"] = {"rss_mb": rss, "peak_rss_mb": peak, "cpu_s_per_idle_min": (cpu1 - cpu0) * 60 / idle_s, "idle_s": idle_s}
    print(f"B4 idle {idle_s} s with 50 builds: RSS {rss:.1f} MB (peak {peak:.1f}), CPU {(cpu1 - cpu0):.3f} s", flush=True)


def push_latencies(cfg, base, log, trials, pause, seed):
    """Runs the daemon on `cfg`; pushes a new `base` `trials` times, each after a random
    pause of up to `pause` s; returns the seconds from each push's end to the build's start."""
    # Waits on the JSON log's structured events, never on message text or module paths.
    started, finished = '"event":"build_started"', '"event":"build_finished"'
    p = subprocess.Popen([FRESHEN, "-c", cfg], stderr=open(log, "w"), stdout=subprocess.DEVNULL)
    while '"event":"cycle_finished"' not in open(log).read():
        time.sleep(0.05)
    rnd = random.Random(seed)
    lat = []
    try:
        for t in range(trials):
            time.sleep(rnd.uniform(0, pause))
            seen = open(log).read().count(started)
            variant(base, base, f"{os.path.basename(log)}-{t}")
            sh("docker", "push", "-q", base)
            pushed = time.monotonic()
            while open(log).read().count(started) == seen:
                time.sleep(0.01)
            lat.append(time.monotonic() - pushed)
            while open(log).read().count(finished) <= seen:
                time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait()
    return lat


def app_on(d, base, name, options):
    """A config in `d` with one build `app` on `base`; returns its path."""
    os.makedirs(os.path.join(d, "app"), exist_ok=True)
    with open(os.path.join(d, "app", "Dockerfile"), "w") as f:
        f.write(f"FROM {base}\nRUN true\n")
    build = {"dockerfile": os.path.join(d, "app"), "tags": [f"bench/{name}-app:latest"], "labels": {"freshen.bench": str(os.getpid())}}
    return write_config(d, {"app": build}, options)


def b5(workdir, reg, trials, results):
    d = os.path.join(workdir, "b5")
    base = f"127.0.0.1:{reg.port}/bench/b5-base:1"
    busybox_base(workdir, base)
    sh("docker", "push", "-q", base)
    cfg = app_on(d, base, "b5", {"interval": "10s", "log_format": "json"})
    sh(FRESHEN, "-c", cfg, "--once")
    lat = push_latencies(cfg, base, os.path.join(workdir, "b5.log"), trials, 10, 5)
    results["B5"] = {"median_s": median(lat), "samples": lat, "interval_s": 10}
    print(f"B5 change → build started: median {median(lat):.2f} s over {trials} pushes (interval 10 s)", flush=True)


def percentile(xs, q):
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def b7(workdir, trials, results):
    """Push → build start: the registry's notifications to freshen's /v1/hooks/registry,
    against polling every 10 s, in one run, on a registry of their own."""
    d = os.path.join(workdir, "b7")
    os.makedirs(d, exist_ok=True)
    port, token = free_port(), "bench-token-0123456789abcdef"
    with open(os.path.join(d, "token"), "w") as f:
        f.write(token)
    hook = (f"notifications:\n  endpoints:\n    - name: freshen\n      url: http://127.0.0.1:{port}/v1/hooks/registry\n"
            f"      headers:\n        Authorization: [\"Bearer {token}\"]\n      timeout: 2s\n      threshold: 3\n      backoff: 1s\n")
    reg = Registry(d, hook)
    try:
        base = f"127.0.0.1:{reg.port}/bench/b7-base:1"
        busybox_base(workdir, base)
        sh("docker", "push", "-q", base)
        out = {}
        for mode, options, pause in [
            ("webhook", {"interval": "1h", "listen": f"127.0.0.1:{port}", "token_file": os.path.join(d, "token"), "log_format": "json"}, 2),
            ("polling", {"interval": "10s", "log_format": "json"}, 10),
        ]:
            cfg = app_on(os.path.join(d, mode), base, f"b7{mode}", options)
            sh(FRESHEN, "-c", cfg, "--once")
            lat = push_latencies(cfg, base, os.path.join(d, f"{mode}.log"), trials, pause, 7)
            out[mode] = {"p50_s": percentile(lat, 0.5), "p95_s": percentile(lat, 0.95), "max_s": max(lat), "samples": lat}
            print(f"B7 {mode:<8} push → build started: p50 {out[mode]['p50_s']:.3f} s, p95 {out[mode]['p95_s']:.3f} s, "
                  f"max {max(lat):.3f} s over {trials} pushes", flush=True)
        results["B7"] = out
    finally:
        reg.stop()


def small_files(ctx):
    """100,000 files of 100 random bytes in 100 folders."""
    for i in range(100_000):
        folder = os.path.join(ctx, f"d{i // 1000}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"f{i}"), "wb") as f:
            f.write(os.urandom(100))


def big_files(ctx):
    """2 GiB of random bytes in 8 files of 256 MiB."""
    for i in range(8):
        sh("dd", "if=/dev/urandom", f"of={os.path.join(ctx, f'blob{i}')}", "bs=1M", "count=256", "status=none")


def b6(workdir, reg, results):
    """Peak RSS of freshen --once building on contexts too big to hold in memory."""
    base = f"127.0.0.1:{reg.port}/bench/b6-base:1"
    busybox_base(workdir, base)
    sh("docker", "push", "-q", base)
    row = {}
    for i, (name, fill) in enumerate([("100,000 files of 100 bytes", small_files), ("2 GB in 8 files", big_files)]):
        d = os.path.join(workdir, "b6")
        sh("rm", "-rf", d)
        ctx = os.path.join(d, "app")
        os.makedirs(ctx)
        fill(ctx)
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write(f"FROM {base}\nRUN true\n")
        size = int(sh("du", "-sb", ctx).stdout.split()[0])
        # A tag of its own per case: an existing image freshen did not build is adopted, not rebuilt.
        tag = f"bench/b6-app{i}:latest"
        cfg = write_config(d, {"app": {"dockerfile": ctx, "tags": [tag], "labels": {"freshen.bench": str(os.getpid())}}})
        out = sh("/usr/bin/time", "-f", "%M %e", FRESHEN, "-c", cfg, "--once")
        rss_kb, wall = out.stderr.strip().splitlines()[-1].split()
        if not sh("docker", "images", "-q", tag).stdout.strip():
            sys.exit(f"B6 {name}: freshen did not build {tag}:\n{out.stderr}")
        row[name] = {"bytes": size, "peak_rss_mb": int(rss_kb) / 1024, "wall_s": float(wall)}
        print(f"B6 {name:<28} context {size / 1e6:8.1f} MB  freshen peak RSS {int(rss_kb) / 1024:6.1f} MB  {float(wall):6.1f} s", flush=True)
        sh("rm", "-rf", d)
    results["B6"] = row


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")) / 1024 / 1024
    docker = sh("docker", "version", "-f", "{{.Server.Version}}", check=False).stdout.strip()
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Linux {platform.release()}, Docker engine {docker}"


def cleanup():
    """Removes every image the run made: by label, and by the repositories it used. Images
    with children go after their children, so this repeats until nothing is left or no
    progress is made."""
    left = None
    while True:
        ids = set(sh("docker", "images", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split())
        for line in sh("docker", "images", "--format", "{{.Repository}} {{.ID}}", check=False).stdout.splitlines():
            repo, _, image_id = line.partition(" ")
            if re.match(r"^(127\.0\.0\.1:\d+/)?bench/", repo):
                ids.add(image_id)
        if not ids or (left is not None and len(ids) >= left):
            return
        left = len(ids)
        subprocess.run(["docker", "rmi", "-f", *sorted(ids)], capture_output=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer sizes and runs, for a smoke test")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--only", help="comma-separated benchmarks to run (B1,...,B8); prints only, BENCHMARKS.md is not written")
    args = ap.parse_args()
    only = set(args.only.upper().split(",")) if args.only else None
    run = lambda b: only is None or b in only
    runs = 2 if args.quick else 5
    results = {"machine": machine(), "date": datetime.date.today().isoformat(), "runs": runs}
    with tempfile.TemporaryDirectory(prefix="freshen-bench-") as workdir:
        reg = Registry(workdir)
        proxy = LatencyProxy(reg.port, 0.020)
        try:
            if run("B1"):
                b1(workdir, reg, proxy, [10] if args.quick else [10, 50, 200], runs, results)
            if run("B2"):
                b2(workdir, reg, runs, results)
            if run("B3"):
                b3(workdir, [1000] if args.quick else [1000, 10000, 50000], runs, results)
            if run("B4") and not args.quick:
                b4(workdir, reg, proxy, results, 60)
            if run("B5"):
                b5(workdir, reg, 3 if args.quick else 5, results)
            if run("B6") and not args.quick:
                b6(workdir, reg, results)
            if run("B7"):
                b7(workdir, 5 if args.quick else 20, results)
            if run("B8"):
                from pool import b8
                b8(workdir, reg, runs, results, FRESHEN, busybox_base, variant, median, dag_builds)
        finally:
            reg.stop()
            cleanup()
    if args.json:
        json.dump(results, open(args.json, "w"), indent=2)
    if not args.quick and only is None:
        from report import write_markdown
        write_markdown(results, os.path.join(ROOT, "BENCHMARKS.md"))
        print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
