"""Writes BENCHMARKS.md from bench.py's results: the numbers, the machine, the date, the command."""


def _methods(m):
    return ", ".join(f"{v} {k}" for k, v in sorted(m.items())) or "none"


def write_markdown(r, path, criterion=None):
    out = []
    w = out.append
    w("# Benchmarks\n")
    w(f"Measured {r['date']} on {r['machine']}, with `bench/run.sh` (medians of {r['runs']} runs unless a row says otherwise; "
      "every comparison ran in the same invocation). The criterion figures come from `cargo bench --bench core`.\n")
    w("Benchmarks are not tests: no timing is asserted anywhere in the test suite.\n")

    w("## B1: the no-change check cycle\n")
    w("M distinct base images in a local registry, 20 ms added to every round trip by the harness's TCP proxy, one build per base, "
      "nothing changed. Requests and bytes are counted from the registry's access log (bytes: response bodies; a HEAD has none).\n")
    w("| M | method | wall time | registry requests | bytes sent | vs freshen |")
    w("|---|---|---|---|---|---|")
    for m, row in r["B1"].items():
        base = row["freshen --once"]["median_s"]
        for name, v in row.items():
            runs = "" if v["runs"] == r["runs"] else f" ({v['runs']} runs)"
            ratio = "1×" if name.startswith("freshen") else f"{v['median_s'] / base:.1f}× slower"
            w(f"| {m} | {name} | {v['median_s']:.3f} s{runs} | {_methods(v['requests'])} | {v['bytes']:,} | {ratio} |")
    w("")
    if "50" in map(str, r["B1"].keys()):
        row = r["B1"].get(50) or r["B1"].get("50")
        f = row["freshen --once"]["median_s"]
        a = row["docker pull every base (docker-rebuilder)"]["median_s"]
        b = row["docker build --pull every build (cron)"]["median_s"]
        heads = row["freshen --once"]["requests"].get("HEAD", 0)
        w(f"Reading: at M = 50 freshen's cycle takes {f:.3f} s: {a / f:.1f}× faster than pulling every base (target 10×) and "
          f"{b / f:.1f}× faster than rebuilding with `--pull` (target 50×), with {heads} HEAD requests (target: exactly 50) and no GET, "
          "so no Docker Hub pull quota is used. Check the alternatives' GETs in the registry log: on Docker 20.10 they are "
          "`GET /v2/` pings, not manifest GETs. The HEADs run check_concurrency (64 per registry by default) at a time: all 50 in one round.\n")

    w("## B2: rebuild makespan\n")
    w("A DAG of 12 builds in 3 levels of 4, each on a build of the level above, each `RUN sleep 1` (distinct per build, so no cache hits), after a new root base is pushed. Makespan is the cycle's "
      "wall time (checks included); the bound is max(critical path, sum of build times / parallelism), from the build times freshen measured.\n")
    w("Both builders ran in the same invocation (`builder: buildkit`, then `classic`, at each parallelism); "
      "growth is the makespan at parallelism 1 over the makespan at p.\n")
    w("| builder | parallelism | makespan | speed-up vs p = 1 | lower bound | ratio (target ≤ 1.15) | mean build time |")
    w("|---|---|---|---|---|---|---|")
    for builder, by_p in r["B2"].items():
        one = by_p.get(1, by_p.get("1"))["makespan_s"]
        for p, v in by_p.items():
            w(f"| {builder} | {p} | {v['makespan_s']:.2f} s | {one / v['makespan_s']:.2f}× | {v['bound_s']:.2f} s | {v['ratio']:.3f} | {v['build_s']:.2f} s |")
    w("")

    w("## B3: planning scale\n")
    w("`freshen plan --format json` over synthetic configs: random DAGs, Dockerfiles with global ARGs, three stages and `COPY --from`. "
      "Wall time and peak RSS from GNU time.\n")
    w("| builds | wall time | peak RSS | time per build |")
    w("|---|---|---|---|")
    for n, v in r["B3"].items():
        w(f"| {int(n):,} | {v['wall_s']:.3f} s | {v['peak_rss_mb']:.1f} MB | {v['wall_s'] / int(n) * 1e6:.1f} µs |")
    w("")

    if "B4" in r:
        v = r["B4"]
        w("## B4: idle footprint\n")
        w(f"The daemon with 50 builds, idle for {v['idle_s']} s after its first cycle: RSS {v['rss_mb']:.1f} MB (peak {v['peak_rss_mb']:.1f} MB; "
          f"target < 20 MB), {v['cpu_s_per_idle_min']:.4f} CPU-seconds per idle minute (target < 0.05).\n")

    v = r["B5"]
    w("## B5: time from a change to a started build\n")
    w(f"Polling every {v['interval_s']} s, a new base pushed at random moments: median {v['median_s']:.2f} s from the push to the build's start "
      f"(samples: {', '.join(f'{x:.2f}' for x in v['samples'])} s). Polling gives interval/2 on average; this is the figure to compare "
      "once webhook triggers exist.\n")

    if "B6" in r:
        w("## B6: build-context streaming\n")
        w("freshen --once building one image whose build context is too big to hold in memory; peak RSS and wall time of the "
          "freshen process from GNU time (the engine's own memory is not counted). The context is archived to a temporary file "
          "and streamed from it to the engine.\n")
        w("| context | size on disk | freshen peak RSS | wall time (archive, send, engine unpacks, `RUN true`) |")
        w("|---|---|---|---|")
        for name, v in r["B6"].items():
            w(f"| {name} | {v['bytes'] / 1e6:,.0f} MB | {v['peak_rss_mb']:.1f} MB | {v['wall_s']:.1f} s |")
        w("")

    if "B7" in r:
        w("## B7: push → build start, webhooks and polling\n")
        w("The registry's `notifications.endpoints` posts each push to the daemon's `/v1/hooks/registry` (interval 1 h), against "
          "polling every 10 s, in the same run on the same registry; seconds from the end of each `docker push` to freshen's "
          "`build_started` (goal for webhooks: p50 under 0.5 s, p95 under 1 s).\n")
        w("| trigger | pushes | p50 | p95 | max |")
        w("|---|---|---|---|---|")
        for mode, v in r["B7"].items():
            w(f"| {mode} | {len(v['samples'])} | {v['p50_s']:.3f} s | {v['p95_s']:.3f} s | {v['max_s']:.3f} s |")
        w("")

    if "B8" in r:
        w(B8_TEXT)
        w(b8_table(r["B8"]))

    if criterion:
        w("## Core (criterion)\n")
        w(criterion)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


B8_TEXT = ("## B8: the engine pool\n\n"
           "B2's DAG (12 builds in 3 levels of 4), each `RUN sleep 3` so that the two cores are not the limit, classic builder, "
           "`push: true`, after a new root base is pushed; on the first engine alone, then on it and two more dockerd's started "
           "by the benchmark (`--bridge=none`, their own data-root and socket), each engine at capacity 1 and `parallelism` the "
           "engine count. The bound is max(critical path, total work / total capacity), from the build times freshen measured "
           "(each includes the build's push, and a child's pull of a parent built elsewhere); target: within 1.15x of it.\n")


def b8_table(b8):
    rows = ["| engines | makespan | bound | ratio (target <= 1.15) | engines used |", "|---|---|---|---|---|"]
    for count in ("1", "3", 1, 3):
        v = b8.get(count)
        if v:
            rows.append(f"| {count} | {v['makespan_s']:.2f} s | {v['bound_s']:.2f} s | {v['ratio']:.3f} | {v['engines_used']} |")
    trip = b8.get("trip")
    if trip:
        rows.append("")
        rows.append(f"Moving a parent through the registry (one new layer on a busybox base): push {trip['push_s']:.2f} s, "
                    f"pull on another engine {trip['pull_s']:.2f} s, against about 3.5 s for one of these builds.")
    rows.append("")
    return "\n".join(rows)
