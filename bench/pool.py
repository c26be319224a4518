"""B8: the engine pool. B2's DAG (12 builds, 3 levels of 4), each `RUN sleep 3`
so that the two cores are not the limit, on 1 engine and on 3 (the first and two
extra dockerd's started here, each with its own data-root, exec-root, pidfile and
socket), every engine at capacity 1, push on. Each makespan is compared with the
bound max(critical path, total work / total capacity). Then the cost of moving a
parent through the registry: a push of a new parent image, and its pull on another
engine, against the build time."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time


class ExtraEngine:
    """A dockerd beside the first, stopped by PID; `docker0`, which it removes, is made again."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="fb", dir="/tmp")
        d = self.dir
        self.host = f"unix://{d}/sock"
        self.log = open(os.path.join(d, "log"), "w")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", f"{d}/data", "--exec-root", f"{d}/exec", "--pidfile", f"{d}/pid",
             "-H", self.host, "--bridge=none", "--iptables=false", "--ip-masq=false"],
            stdout=subprocess.DEVNULL, stderr=self.log)
        for _ in range(60):
            if self.docker("info", check=False).returncode == 0:
                break
            time.sleep(1)
        ensure_docker0()

    def docker(self, *args, check=True):
        return subprocess.run(["docker", *args], env={**os.environ, "DOCKER_HOST": self.host},
                              capture_output=True, text=True, check=check)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for line in open("/proc/self/mounts").read().splitlines():
            point = line.split(" ")[1]
            if point.startswith(self.dir):
                subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        ensure_docker0()


def ensure_docker0():
    if subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0:
        return
    for args in (["link", "add", "docker0", "type", "bridge"], ["addr", "add", "172.17.0.1/16", "dev", "docker0"],
                 ["link", "set", "docker0", "up"]):
        subprocess.run(["ip", *args], capture_output=True)


def b8(workdir, reg, runs, results, freshen, busybox_base, variant, median, dag_builds):
    d = os.path.join(workdir, "b8")
    os.makedirs(d, exist_ok=True)
    root = f"127.0.0.1:{reg.port}/bench/pool-root:1"
    busybox_base(workdir, root)
    subprocess.run(["docker", "push", "-q", root], check=True, capture_output=True)
    builds, parents = dag_builds(d, root, lambda n: f"127.0.0.1:{reg.port}/bench/pool-{n}:latest", 3)
    extras = [ExtraEngine(), ExtraEngine()]
    row = {}
    try:
        k = 0
        for count in (1, 3):
            engines = [{"name": "first", "host": "unix:///var/run/docker.sock"}]
            engines += [{"name": f"extra{i + 1}", "host": e.host} for i, e in enumerate(extras[: count - 1])]
            options = {"state_file": os.path.join(d, f"state-{count}.json"), "engines": engines, "parallelism": count,
                       "push": True, "builder": "classic"}
            cfg = os.path.join(d, f"config-{count}.json")
            with open(cfg, "w") as f:
                json.dump({"options": options, "builds": builds}, f)
            subprocess.run([freshen, "-c", cfg, "--once"], capture_output=True)  # first run builds everything; not timed
            spans, bounds, used = [], [], set()
            for _ in range(runs):
                k += 1
                variant(root, root, f"pool-{k}", layer=True)
                subprocess.run(["docker", "push", "-q", root], check=True, capture_output=True)
                out = subprocess.run([freshen, "-c", cfg, "--once", "--format", "json"], capture_output=True, text=True)
                rep = json.loads(out.stdout)
                secs = {n: o["seconds"] for n, o in rep["outcomes"].items()}
                assert len(secs) == 12 and all(o["outcome"] == "built" for o in rep["outcomes"].values()), out.stderr[-3000:]
                used |= {b.get("engine") for b in rep["builds"]}

                def path(n):
                    return secs[n] + (path(parents[n]) if parents[n] else 0)
                bound = max(max(path(n) for n in secs), sum(secs.values()) / count)
                spans.append(rep["seconds"])
                bounds.append(bound)
            ratio = median([s / b for s, b in zip(spans, bounds)])
            row[count] = {"makespan_s": median(spans), "bound_s": median(bounds), "ratio": ratio, "engines_used": len(used)}
            print(f"B8 engines={count}  makespan {median(spans):6.2f} s  bound {median(bounds):6.2f} s  ratio {ratio:.3f}  used {len(used)}",
                  flush=True)
        # The trip through the registry: a parent with one new layer pushed, then pulled by an engine that lacks it.
        trips = []
        for i in range(runs):
            tag = f"127.0.0.1:{reg.port}/bench/pool-trip:{i}"
            variant(root, tag, f"trip-{i}-{time.time()}", layer=True)
            t = time.monotonic()
            subprocess.run(["docker", "push", "-q", tag], check=True, capture_output=True)
            push = time.monotonic() - t
            t = time.monotonic()
            extras[0].docker("pull", "-q", tag)
            pull = time.monotonic() - t
            trips.append((push, pull))
        row["trip"] = {"push_s": median([p for p, _ in trips]), "pull_s": median([p for _, p in trips])}
        print(f"B8 parent through the registry: push {row['trip']['push_s']:.2f} s, pull {row['trip']['pull_s']:.2f} s", flush=True)
    finally:
        for e in extras:
            e.stop()
    results["B8"] = row
