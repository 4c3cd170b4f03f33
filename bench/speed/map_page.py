"""The Map page's time to interactive in Chromium with N points (issue 38).

    .venv/bin/python bench/speed/map_page.py --points 50000 --work /tmp/mapbench

Every step is timed and printed:

1. real embeddings: the photos of ``--photos`` (hymenoptera by default) embedded with EfficientNet-Lite0 (the backbone
   that comes with alwb) through ``alwb.learning.embed.embed_items``; kept under ``WORK/photos`` and reused by later
   runs;
2. N tiny PNG files (16×16 random pixels, each one different) written under ``WORK/images``;
3. a project ``WORK/project`` created and the files imported by the product's own import (``Project.add_images``);
4. one embedding per item written into the project's embedding cache of EfficientNet-Lite0
   (``alwb.insight.source.open_cache``, then ``EmbeddingCache.put``). The rows are drawn from the real photo
   embeddings as ``bench/research/insight.py`` draws them: a random real row plus Gaussian noise of 0.3 of each
   dimension's spread (real shape and scale, not the pictures' own embeddings: embedding N images would take hours
   on 2 CPUs);
5. ``--labeled`` items labeled (in one batch) with the class of the photo their row was drawn from, so that the
   colours vary;
6. the product's background insight job (``alwb.insight.jobs.start_background``, what the workbench starts: embeds
   what is missing, computes the findings, lays out the map with ``alwb.insight.compute_map``), waited for; the
   layout's own time is the one saved with the map;
7. the server-side work of one Map page run (``ui.views.datamap.map_frame`` + ``figure``) and the figure's JSON size;
8. ``alwb ui WORK/project`` on 127.0.0.1; Chromium (Playwright, ``/usr/bin/chromium``, headless, no GPU) opens
   ``/map`` ``--repeats`` times, each in a fresh browser context (a new Streamlit session), and measures from the
   navigation until (a) the plot is drawn: the Plotly element holds all N points, its WebGL canvas and modebar are
   there and the script run has finished; (b) the plot answers: the mouse is moved over a point and its hover label
   appears. Also the server's and the browser's memory (PSS from /proc, RSS where PSS is unreadable) after each load.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

BACKBONE = "efficientnet_lite0"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

#: The plot is drawn: the Plotly element holds every point, its canvas (WebGL) or SVG points and the modebar are
#: there, and no script run is going on.
DRAWN = """n => {
  const gd = document.querySelector('.js-plotly-plot');
  if (!gd || !gd._fullData || !gd._fullLayout) return false;
  let pts = 0;
  for (const t of gd._fullData) pts += (t._length ?? (t.x ? t.x.length : 0));
  const marks = gd.querySelector('.gl-container canvas') || gd.querySelector('.scatterlayer .points path');
  return pts >= n && !!marks && !!gd.querySelector('.modebar')
    && !document.querySelector('[data-stale=true]') && !document.querySelector('[data-testid=stStatusWidget]');
}"""

#: Page coordinates of a data point (x, y) of the plot.
POINT_AT = """([x, y]) => {
  const gd = document.querySelector('.js-plotly-plot');
  const r = gd.getBoundingClientRect(), xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  return [r.left + xa._offset + xa.l2p(x), r.top + ya._offset + ya.l2p(y)];
}"""

HOVER_SHOWN = "() => !!document.querySelector('.js-plotly-plot .hoverlayer .hovertext')"


def step(name: str, t0: float) -> float:
    dt = time.perf_counter() - t0
    print(f"[{dt:8.1f} s] {name}", flush=True)
    return dt


def _mem(d: Path, statm: list[str]) -> int:
    """The process's PSS in bytes (shared pages divided among their users), else its RSS."""
    try:
        for line in (d / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(statm[1]) * os.sysconf("SC_PAGE_SIZE")


def _proc_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (ppid, name, PSS bytes) of every process readable in /proc."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            statm = (d / "statm").read_text().split()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        out[int(d.name)] = (ppid, name, _mem(d, statm))
    return out


def tree_mem(root: int, name_part: str = "") -> int:
    """PSS (else RSS) in bytes of ``root`` and its descendants (only those whose name contains ``name_part``)."""
    table = _proc_table()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in table and name_part in table[pid][1]:
            total += table[pid][2]
        todo.extend(kids.get(pid, []))
    return total


def real_embeddings(photos: Path, work: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(embeddings, class index, class names)`` of the readable photos under ``photos`` (``<split>/<class>/``)."""
    from alwb.intake.images import is_image_path
    from alwb.learning import backbones
    from alwb.learning.embed import EmbeddingCache, embed_items

    paths = sorted(p for p in photos.rglob("*") if p.is_file() and is_image_path(p))
    classes = sorted({p.parent.name for p in paths})
    loaded = backbones.load(BACKBONE, device="cpu", download=False, quiet=True)
    items = [(i, str(p)) for i, p in enumerate(paths, start=1)]
    rep = embed_items(work / "photos", items, loaded, device="cpu", threads=2, workers=0, batch_size=32)
    print(f"  {rep.summary()}")
    cache = EmbeddingCache.for_backbone(work / "photos", loaded)
    ids = cache.embedded_ids()
    y = np.asarray([classes.index(paths[i - 1].parent.name) for i in ids])
    return cache.rows(ids), y, classes


def draw_rows(emb: np.ndarray, y: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows: a random real row plus Gaussian noise of 0.3 of each dimension's spread (as insight.py)."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(emb), n)
    noise = rng.standard_normal((n, emb.shape[1]), dtype=np.float32) * (0.3 * emb.std(axis=0))
    return (emb[pick] + noise).astype(np.float32), y[pick]


def write_pngs(folder: Path, n: int, seed: int = 0) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"img{i:06d}.png")


def store_embeddings(proj, rows: np.ndarray) -> tuple[str, np.ndarray]:  # noqa: ANN001
    """Write one row per item (ascending ids) into the project's embedding cache of its insight backbone."""
    from alwb.insight import insight_backbone
    from alwb.insight.source import open_cache

    name, _ = insight_backbone(proj)
    if name != BACKBONE:
        raise SystemExit(f"the project's insight backbone is {name}, not {BACKBONE}")
    cache = open_cache(proj, name)
    ids = np.asarray(sorted(proj.store.item_ids()), dtype=np.int64)
    if len(ids) != len(rows):
        raise SystemExit(f"{len(ids)} items imported, {len(rows)} rows drawn")
    cache.put(ids, rows)
    return cache.key, ids


def run_job(root: Path, timeout: float) -> None:
    """The product's background insight job, started as the workbench starts it, waited for."""
    from alwb.insight import jobs

    t0 = time.perf_counter()
    jobs.start_background(root)
    last = None
    while True:
        time.sleep(1.0)
        st = jobs.read_state(root)
        phase = (st.get("state"), st.get("phase"))
        if phase != last:
            print(f"  job at {time.perf_counter() - t0:6.1f} s: {st.get('state')} {st.get('phase') or ''}", flush=True)
            last = phase
        if st.get("state") in ("done", "failed") and not jobs.is_running(root):
            break
        if time.perf_counter() - t0 > timeout:
            pid = st.get("pid")
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGTERM)
            raise SystemExit(f"the insight job did not finish in {timeout:g} s (state {st})")
    if st["state"] == "failed":
        log = (root / jobs.LOG_FILE).read_text(errors="replace")[-3000:]
        raise SystemExit(f"the insight job failed: {st.get('error')}\n{log}")


def measure_browser(base: str, n: int, point: tuple[float, float], args: argparse.Namespace, server_pid: int) -> None:
    from playwright.sync_api import sync_playwright

    drawn: list[float] = []
    hover: list[float] = []
    with sync_playwright() as p:
        t0 = time.perf_counter()
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        step("Chromium started", t0)
        try:
            for r in range(args.repeats):
                ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = ctx.new_page()
                t0 = time.perf_counter()
                page.goto(f"{base}/map", wait_until="commit")
                try:
                    page.wait_for_function(DRAWN, arg=n, timeout=args.page_timeout * 1000)
                except Exception:
                    page.screenshot(path=str(args.work / f"map_fail_{r}.png"), full_page=True)
                    print(page.inner_text("body")[-3000:])
                    raise
                drawn.append(time.perf_counter() - t0)
                errors = page.evaluate(
                    "() => [...document.querySelectorAll('[data-testid=stException], [data-testid=stAlert]')]"
                    ".map(e => e.innerText)"
                )
                x, y = page.evaluate(POINT_AT, list(point))
                page.mouse.move(x + 3, y + 3)
                page.mouse.move(x, y)
                page.wait_for_function(HOVER_SHOWN, timeout=args.page_timeout * 1000)
                hover.append(time.perf_counter() - t0)
                info = page.evaluate(
                    "() => { const gd = document.querySelector('.js-plotly-plot');"
                    " return [gd._fullData.map(t => t.type + ':' + t._length).join(' '),"
                    " performance.memory ? performance.memory.usedJSHeapSize : 0]; }"
                )
                if r == 0:
                    page.screenshot(path=str(args.work / "map_page.png"))
                print(
                    f"  load {r + 1}: drawn {drawn[-1]:.2f} s, hover label {hover[-1]:.2f} s; traces {info[0]}; "
                    f"JS heap {info[1] / 2**20:.0f} MiB; server PSS {tree_mem(server_pid) / 2**20:.0f} MiB, "
                    f"Chromium PSS (all its processes) {tree_mem(os.getpid(), 'chrom') / 2**20:.0f} MiB"
                    + (f"; on the page: {errors}" if errors else ""),
                    flush=True,
                )
                ctx.close()
        finally:
            browser.close()
    for name, xs in (("drawn", drawn), ("answers a hover (time to interactive)", hover)):
        print(
            f"Map page, navigation -> {name}: median {statistics.median(xs):.2f} s, max {max(xs):.2f} s over "
            f"{len(xs)} fresh loads ({', '.join(f'{v:.2f}' for v in xs)}; the first is the server's first run)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=50_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/mapbench"), help="working folder (outside the repo)")
    ap.add_argument("--photos", type=Path, default=Path("../shared/datasets/hymenoptera"))
    ap.add_argument("--labeled", type=int, default=None, help="items labeled (default 5%% of the points)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--job-timeout", type=float, default=1200)
    ap.add_argument("--page-timeout", type=float, default=300)
    args = ap.parse_args()
    args.work = args.work.resolve()
    n = args.points
    from alwb import insight
    from alwb.project import Project

    print(
        f"load average at start: {os.getloadavg()[0]:.2f} / {os.getloadavg()[1]:.2f} (1 / 5 min), {os.cpu_count()} CPUs"
    )
    t_all = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    emb, y, classes = real_embeddings(args.photos, args.work)
    step(f"real embeddings: {len(emb)} photos of {args.photos} ({', '.join(classes)}), {emb.shape[1]}-d", t0)
    rows, row_y = draw_rows(emb, y, n)
    print(
        f"  {n:,} rows drawn from the {len(emb)} real {BACKBONE} embeddings (a random real row + Gaussian noise of 0.3 "
        "of each dimension's spread): real shape and scale, not the PNGs' own embeddings"
    )

    root, images = args.work / "project", args.work / "images"
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(images, ignore_errors=True)
    t0 = time.perf_counter()
    write_pngs(images, n)
    step(f"{n:,} PNG files (16x16) written", t0)
    server = None
    try:
        with Project.create(root, classes=classes) as proj:
            proj.set_train_config(backbone=BACKBONE)
            t0 = time.perf_counter()
            rep = proj.add_images(images)
            step(f"import (Project.add_images): {rep.summary()}", t0)
            t0 = time.perf_counter()
            key, ids = store_embeddings(proj, rows)
            step(f"{len(ids):,} rows written into the embedding cache {key}", t0)
            check = insight.load_embeddings(proj)
            assert check is not None and check.ids.size == n and np.allclose(check.emb[:5], rows[:5])
            n_lab = args.labeled if args.labeled is not None else n // 20
            pick = np.random.default_rng(1).choice(n, n_lab, replace=False)
            t0 = time.perf_counter()
            proj.label([(int(ids[i]), classes[int(row_y[i])]) for i in pick], annotator="bench")
            step(f"{n_lab:,} items labeled in one batch (by the class of the photo each row was drawn from)", t0)

        t0 = time.perf_counter()
        run_job(root, args.job_timeout)
        job_s = step("background insight job (embed what is missing, findings, map), process start included", t0)
        with Project.open(root) as proj:
            found = insight.load_findings(proj)
            m = insight.load_map(proj)
            assert found is not None and m is not None and insight.is_fresh(proj, found)
            secs = ", ".join(f"{k} {v:.1f} s" for k, v in found.seconds.items())
            print(
                f"  findings: {secs}; {found.flagged_total} label flags, {len(found.near_duplicates)} near-duplicate"
                f" groups, {len(found.outliers)} outliers"
            )
            print(
                f"  map: {m['method'].upper()} of {len(m['ids']):,} points in {m['seconds']:.1f} s"
                f" (of the job's {job_s:.0f} s)"
            )
            from ui.views import datamap

            t0 = time.perf_counter()
            df = datamap.map_frame(proj, m, found)
            fig = datamap.figure(df, "label")
            size = len(fig.to_json())
            step(f"server side of one Map run (map_frame + figure + to_json): {size / 1024:,.0f} KiB of JSON", t0)
            point = (float(m["xy"][0, 0]), float(m["xy"][0, 1]))

        from alwb.uilaunch import spawn_ui

        log = args.work / "server.log"
        log.unlink(missing_ok=True)
        t0 = time.perf_counter()
        server = spawn_ui(root, log)
        port = server.port
        server.wait_ready(120)
        step(f"alwb ui answering on 127.0.0.1:{port} (server PSS {tree_mem(server.proc.pid) / 2**20:.0f} MiB)", t0)
        measure_browser(f"http://127.0.0.1:{port}", n, point, args, server.proc.pid)
        from alwb.insight import jobs

        if jobs.is_running(root):
            print("  note: the page started the insight job again during the measurement")
    finally:
        if server is not None:
            server.stop()
    print(f"load average at the end: {os.getloadavg()[0]:.2f} / {os.getloadavg()[1]:.2f} (1 / 5 min)")
    step("all", t_all)


if __name__ == "__main__":
    main()
