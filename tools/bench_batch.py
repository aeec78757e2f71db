"""Batch inference benchmark: nlpforge predict --input/--output on a large file, end to end.

Streaming against the in-memory path, its memory against a small file's, resuming after
``kill -9``, and (where it exists) the Ray engine against one process.

    python tools/bench_batch.py [--rows 1000000] [--rounds 3] [--threads 2] [--export DIR]
                                [--out tools/out/bench_batch] [--markdown docs/benchmarks/batch.md]

Inputs (written once under ``--out``/inputs, reused while ``--rows`` stays the same): the SST-2
train sentences (67,349, under NLPFORGE_DATASETS) repeated to ``--rows`` rows, each with a
unique integer ``id`` (0 … N-1), as JSON Lines and as one Parquet file (pyarrow's default
row groups unless ``--row-group-rows``); the first 10,000 of those rows as the same two
formats for the memory baseline.

Contenders, each a fresh process (peak RSS is its own ``ru_maxrss``, measured by a small
launcher process: see ``LAUNCHER``), run ``--rounds`` times in an order that rotates each
round; rows/s is the input's rows over the process's whole wall time (start, model load, read, predict, write, exit); tables give the
median of the rounds, ratios the median of the rounds' ratios (with their range):
  - ``stream-jsonl`` / ``stream-parquet``: ``nlpforge predict EXPORT --input big.jsonl
    --output out.jsonl --threads T -q`` (``.parquet`` in and out: a directory of parts);
  - ``stream-jsonl-10k`` / ``stream-parquet-10k``: the same on the 10,000-row files, the
    baseline of the memory ratio peak RSS(N) / peak RSS(10k) (target <= 1.5x);
  - ``in-memory``: ``Predictor.load(EXPORT, threads=T).predict(read_dataset(big.jsonl).rows)``
    then a JSON Lines file written as the sink writes it: the path a user had before batch
    inference (target: stream-jsonl / in-memory >= 0.95). Run on the N rows when the memory it
    would take (estimated, ``IN_MEMORY_BYTES_PER_ROW``) fits in half of MemAvailable, else on
    the largest multiple of 10,000 rows that does, and then stream-jsonl runs on that file too
    so the ratio compares the same rows; ``--in-memory-rows`` sets the size;
  - ``ray`` / ``ray-10k``: ``--engine ray --workers T --threads-per-worker 1`` on big.jsonl
    (and base.jsonl) against stream-jsonl (one process, ``--threads T``): throughput ratio
    (target >= 0.90), outputs compared by id (labels equal, every score within 1e-6), the
    rate per worker (the marginal rate between the two sizes, so without Ray's start-up,
    which is given apart) and a linear scaling model from it. Skipped, saying why, where
    ``nlpforge predict`` has no ``--engine`` or ray does not import; left out, saying why,
    where a Ray run fails (e.g. on a machine where another Ray cluster runs).
Then once: ``resume``: stream-jsonl to another output, ``kill -9`` half a chunk's time after
its record (``resume.jsonl.batch.json``) says half the rows are read (so mid-chunk), then
``--resume``, and the output checked: exactly N rows, N unique ids, each input id once; and its
predictions against an uninterrupted run's with the same chunk size (int8 outputs depend on
which rows share a batch). Below 8 x 8192 rows the resume run uses ``--chunk-size N/8`` so the
kill lands with chunks before and after it.

The export is ``tools/out/bench_inference/export`` (the MiniLM SST-2 classifier of
bench_inference.py) when present, else a tiny one built by make_tiny_export.py; ``--export``
names another, ``--variant`` picks one variant for every contender. Prints the CPU line, the
table and the targets; writes results.json under ``--out``, and with ``--markdown`` the page.
At the default 1,000,000 rows each contender run takes about N / (its rows/s) seconds: on
2 threads at some 600 rows/s, some 30 minutes, so 3 rounds take hours.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import DATASETS, ROOT, command_line, cpu_line, write_markdown  # noqa: E402

DATA = DATASETS / "sst2" / "train.jsonl"
OUT = ROOT / "tools" / "out" / "bench_batch"
DEFAULT_EXPORT = ROOT / "tools" / "out" / "bench_inference" / "export"
BASE_ROWS = 10_000
#: Peak RSS an in-memory run needs per row (rows, predictions, the lists holding them), with
#: a margin: decides whether the in-memory contender runs on all N rows.
IN_MEMORY_BYTES_PER_ROW = 3_000
#: Default rows per chunk of ``nlpforge predict`` (nlpforge.batch.job.CHUNK_SIZE).
CHUNK = 8192
TARGETS = {"rss": 1.5, "in_memory": 0.95, "ray": 0.90}


# -- inputs ------------------------------------------------------------------------------------

def make_inputs(out: Path, rows: int, row_group: int | None) -> dict[str, Path]:
    """big.jsonl / big.parquet (``rows`` rows) and base.jsonl / base.parquet (10,000), written
    unless the ones there were written for the same settings."""
    folder = out / "inputs"
    files = {"big.jsonl": folder / "big.jsonl", "big.parquet": folder / "big.parquet",
             "base.jsonl": folder / "base.jsonl", "base.parquet": folder / "base.parquet"}
    meta = folder / "inputs.json"
    want = {"rows": rows, "base_rows": BASE_ROWS, "source": str(DATA),
            "row_group_rows": row_group}
    if meta.is_file() and json.loads(meta.read_text()) == want and \
            all(p.is_file() for p in files.values()):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    meta.unlink(missing_ok=True)
    with open(DATA, encoding="utf-8") as file:
        texts = [json.loads(line)["text"] for line in file]
    print(f"writing inputs: {rows:,} rows from {len(texts):,} SST-2 train sentences "
          f"into {folder}", file=sys.stderr, flush=True)
    for name, count in (("big", rows), ("base", BASE_ROWS)):
        write_jsonl(files[f"{name}.jsonl"], texts, count)
        write_parquet(files[f"{name}.parquet"], texts, count, row_group)
    meta.write_text(json.dumps(want, indent=1))
    return files


def write_jsonl(path: Path, texts: list[str], rows: int) -> None:
    with open(path, "w", encoding="utf-8") as file:
        for start in range(0, rows, 65536):
            file.write("".join(json.dumps({"id": i, "text": texts[i % len(texts)]},
                                          ensure_ascii=False) + "\n"
                               for i in range(start, min(start + 65536, rows))))


def write_parquet(path: Path, texts: list[str], rows: int, row_group: int | None) -> None:
    """One Parquet file of ``rows`` rows (id int64, text string) written the way
    ``pq.write_table(table, path)`` writes it: pyarrow's default row groups, unless
    ``row_group``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": pa.array(range(rows), pa.int64()),
                      "text": pa.array([texts[i % len(texts)] for i in range(rows)],
                                       pa.string())})
    pq.write_table(table, path, **({"row_group_size": row_group} if row_group else {}))


def jsonl_prefix(source: Path, target: Path, rows: int) -> Path:
    """The first ``rows`` lines of ``source`` (the in-memory contender's smaller input)."""
    if target.is_file() and count_rows(target) == rows:
        return target
    with open(source, "rb") as src, open(target, "wb") as dst:
        for i, line in enumerate(src):
            if i == rows:
                break
            dst.write(line)
    return target


def parquet_info(path: Path) -> str:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    return f"{meta.num_rows:,} rows in {meta.num_row_groups} row group(s)"


# -- running a contender -----------------------------------------------------------------------

#: Runs argv[1:] and writes its peak RSS (ru_maxrss, KiB) to the file argv[0] names. A fresh
#: small process starts the contender: Linux counts in a process's ru_maxrss the pages of the
#: process it was forked from (kept through exec), so a contender forked from this script,
#: which holds the million-row inputs it wrote, would report at least this script's RSS.
LAUNCHER = ("import resource, subprocess, sys; "
            "code = subprocess.call(sys.argv[2:]); "
            "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN)"
            ".ru_maxrss)); sys.exit(code)")


def run_measured(command: list[str], log: Path) -> dict:
    """Run ``command`` to its end: wall seconds and its own peak RSS (``ru_maxrss`` of the
    command alone, measured by ``LAUNCHER``, whose own RSS is the floor: about 10 MiB). Its
    stdout goes to ``log`` with the suffix ``.out``, its stderr to ``log``. RunFailed with the
    end of its stderr when it fails."""
    peak = log.with_suffix(".rss")
    with open(log, "wb") as err, open(log.with_suffix(".out"), "wb") as stdout:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, str(peak), *command],
                              stdin=subprocess.DEVNULL, stdout=stdout, stderr=err)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RunFailed(f"{' '.join(command)} failed ({proc.returncode}):\n"
                        f"{log.read_text(errors='replace')[-3000:]}")
    return {"seconds": seconds, "rss_mib": int(peak.read_text()) / 1024}


class RunFailed(Exception):
    """A contender's process failed (its command and the end of its stderr)."""


def last_error(message: str) -> str:
    """The line of a failed run's stderr that says why (``Error: …``), else its last one."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    named = [line for line in lines if line.startswith(("Error:", "error:"))]
    return (named or lines or ["no output"])[-1]


def remove(output: Path) -> None:
    """An earlier output and its batch record."""
    if output.is_dir():
        shutil.rmtree(output)
    else:
        output.unlink(missing_ok=True)
    Path(f"{output}.batch.json").unlink(missing_ok=True)


def predict_command(export: Path, src: Path, dst: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nlpforge", "predict", str(export), "--input", str(src),
            "--output", str(dst), *extra, "-q"]


def shown(command: list[str], out: Path, export: Path | None = None) -> str:
    """A command as one would type it: ``nlpforge predict EXPORT …`` with paths relative to
    --out."""
    words = ["nlpforge", *command[3:]] if command[1:3] == ["-m", "nlpforge"] else command
    return " ".join("EXPORT" if export is not None and w == str(export) else
                    w.replace(str(out) + "/", "").replace(str(ROOT) + "/", "") for w in words)


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else \
        f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def output_files(path: Path, suffix: str) -> list[Path]:
    """The ``suffix`` files of an output directory (Parquet parts, or the JSON Lines files
    ``--engine ray`` writes), leaving out ``_``/``.`` files; the file itself when it is one."""
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.rglob(f"*{suffix}") if p.is_file()
                  and not p.name.startswith(("_", ".")))


def count_rows(path: Path) -> int:
    """Rows of a JSON Lines file, or of a directory of Parquet or JSON Lines files."""
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in output_files(path, ".parquet")) \
        if path.is_dir() else 0
    for file in output_files(path, ".jsonl"):
        with open(file, "rb") as stream:
            rows += sum(1 for _ in stream)
    return rows


# -- the in-memory path (run as a worker process) ----------------------------------------------

def in_memory_worker(args: argparse.Namespace) -> None:
    """What a user did before batch inference: read the whole file, predict every row, write
    JSON Lines (as the JSON Lines sink writes a row). Prints its phases' seconds."""
    from nlpforge.data import read_dataset
    from nlpforge.runtime.predictor import Predictor

    start = time.perf_counter()
    predictor = Predictor.load(args.export, threads=args.threads, variant=args.variant)
    loaded = time.perf_counter()
    rows = read_dataset(args.input).rows
    read = time.perf_counter()
    predictions = predictor.predict(rows)
    predicted = time.perf_counter()
    with open(args.output, "w", encoding="utf-8") as file:
        for row, prediction in zip(rows, predictions):
            file.write(json.dumps({"id": row["id"], **prediction}, ensure_ascii=False) + "\n")
    done = time.perf_counter()
    print(json.dumps({"variant": predictor.variant, "why": predictor.variant_reason,
                      "load_s": loaded - start, "read_s": read - loaded,
                      "predict_s": predicted - read, "write_s": done - predicted}))


def in_memory_rows(rows: int, asked: int | None) -> tuple[int, str]:
    """The rows the in-memory contender reads and why."""
    if asked:
        return min(asked, rows), "--in-memory-rows"
    available = _mem_available()
    if available is None or rows * IN_MEMORY_BYTES_PER_ROW <= available / 2:
        return rows, "fits"
    fit = int(available / 2 / IN_MEMORY_BYTES_PER_ROW) // BASE_ROWS * BASE_ROWS
    return max(min(fit, rows), BASE_ROWS), (
        f"{rows:,} rows would take about {rows * IN_MEMORY_BYTES_PER_ROW / 2**30:.1f} GiB, over "
        f"half of MemAvailable ({available / 2**30:.1f} GiB)")


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# -- Ray ---------------------------------------------------------------------------------------

def ray_unavailable() -> str | None:
    """Why the Ray contender cannot run here (None: it can)."""
    help_text = subprocess.run([sys.executable, "-m", "nlpforge", "predict", "--help"],
                               capture_output=True, text=True).stdout
    if "--engine" not in help_text:
        return "nlpforge predict has no --engine option (nlpforge/integrations/ray.py not here)"
    probe = subprocess.run([sys.executable, "-c", "import ray"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ray does not import ({probe.stderr.strip().splitlines()[-1:]})"
    return None


def read_predictions(path: Path, rows: int):
    """Arrays indexed by id from a JSON Lines output (a file, or the directory of files
    ``--engine ray`` writes): each id's label, its numeric scores (``score``, then ``scores``
    by label), how often it appears; and the count of rows whose id is not an input's."""
    import numpy as np

    labels = np.full(rows, None, dtype=object)
    scores: np.ndarray | None = None
    seen = np.zeros(rows, dtype=np.int64)
    strays = 0
    for name in output_files(path, ".jsonl"):
        with open(name, encoding="utf-8") as file:
            for line in file:
                row = json.loads(line)
                ident = row.get("id")
                if not isinstance(ident, int) or not 0 <= ident < rows:
                    strays += 1
                    continue
                seen[ident] += 1
                labels[ident] = row.get("label")
                values = [row.get("score", 0.0)] + [row["scores"][k] for k in
                                                     sorted(row.get("scores") or {})]
                if scores is None:
                    scores = np.full((rows, len(values)), np.nan)
                scores[ident, :len(values)] = values
    return {"labels": labels, "scores": scores, "seen": seen, "strays": strays}


def compare_outputs(a: Path, b: Path, rows: int) -> dict:
    """Rows of ``b`` against ``a`` by id: label mismatches and the largest score difference."""
    import numpy as np

    x, y = read_predictions(a, rows), read_predictions(b, rows)
    both = (x["seen"] == 1) & (y["seen"] == 1)
    if x["scores"] is None or y["scores"] is None or x["scores"].shape != y["scores"].shape:
        largest = float("inf")
    else:
        diff = np.abs(x["scores"][both] - y["scores"][both])
        largest = float(np.nanmax(diff)) if diff.size else 0.0
    mismatches = int((x["labels"][both] != y["labels"][both]).sum())
    return {"compared": int(both.sum()), "rows": rows, "label_mismatches": mismatches,
            "max_score_diff": largest,
            "identical": bool(both.all() and mismatches == 0 and largest <= 1e-6)}


# -- resume after kill -9 ----------------------------------------------------------------------

def resume_check(export: Path, src: Path, rows: int, threads: list[str], runs: Path,
                 reference: Path | None) -> dict:
    """Stream ``src``, ``kill -9`` once the record says half the rows are read, ``--resume``,
    and check the output holds every input id once."""
    dst = runs / "resume.jsonl"
    record = Path(f"{dst}.batch.json")
    remove(dst)
    chunk = min(CHUNK, max(1, rows // 8))  # several chunks before and after the kill
    extra = threads + (["--chunk-size", str(chunk)] if chunk != CHUNK else [])
    command = predict_command(export, src, dst, *extra)
    with open(runs / "resume-1.log", "wb") as err:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        first: tuple[float, int] | None = None  # (time, rows) of the first chunk committed
        while proc.poll() is None:
            read = _record(record).get("read", 0)
            if read and first is None:
                first = (time.monotonic(), read)
            if read >= rows // 2:
                # Half a chunk's time more, so that the kill lands within a chunk (reading or
                # predicting), not just after one was committed.
                per_chunk = (time.monotonic() - first[0]) / max((read - first[1]) / chunk, 1)
                time.sleep(per_chunk / 2)
                if not _record(record).get("complete"):
                    os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    state = _record(record)
    result = {"command": shown(command, runs.parent, export), "chunk_size": chunk,
              "killed": killed, "killed_at_read": state.get("read"),
              "committed_bytes": (state.get("position") or {}).get("offset"),
              "bytes_at_kill": dst.stat().st_size if dst.exists() else 0}
    if not killed:
        result["ok"] = False
        result["why"] = "the first run ended before it could be killed halfway"
        return result
    command = predict_command(export, src, dst, *extra, "--resume")
    result["resume_command"] = shown(command, runs.parent, export)
    run_measured(command, runs / "resume-2.log")
    got = read_predictions(dst, rows)
    lines = count_rows(dst)
    unique = int((got["seen"] > 0).sum())
    result.update({"rows": lines, "unique_ids": unique, "expected": rows,
                   "missing_ids": int((got["seen"] == 0).sum()),
                   "repeated_ids": int((got["seen"] > 1).sum()), "stray_ids": got["strays"]})
    result["ok"] = bool(lines == rows and unique == rows and (got["seen"] == 1).all()
                        and got["strays"] == 0)
    if chunk != CHUNK:  # int8 outputs depend on the batches, so on the chunk size too
        reference = runs / "resume-reference.jsonl"
        remove(reference)
        run_measured(predict_command(export, src, reference, *extra), runs / "resume-3.log")
    if reference is not None and reference.is_file():
        result["vs_uninterrupted"] = compare_outputs(reference, dst, rows)
    return result


def _record(path: Path) -> dict:
    """A batch run's record (``{}`` while there is none; it is replaced in one rename)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# -- the benchmark -----------------------------------------------------------------------------

def ratio(each: list[float]) -> str:
    """The median of the rounds' ratios, with their range when there are several."""
    mid = statistics.median(each)
    spread = f" (rounds {min(each):.2f}-{max(each):.2f})" if len(each) > 1 else ""
    return f"{mid:.2f}x{spread}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--export", help=f"export dir (default: {DEFAULT_EXPORT} when present, "
                        f"else a tiny one built by make_tiny_export.py)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--in-memory-rows", type=int,
                        help="rows for the in-memory contender (default: --rows when it fits "
                             "in half of MemAvailable)")
    parser.add_argument("--row-group-rows", type=int,
                        help="Parquet input row group size (default: pyarrow's)")
    parser.add_argument("--variant", help="the export's variant for every contender (default: "
                        "its own choice, e.g. tuned int8, whose outputs depend on which rows "
                        "share a batch)")
    parser.add_argument("--no-ray", action="store_true", help="leave the Ray contender out")
    parser.add_argument("--markdown", help="also write the results page here "
                        "(docs/benchmarks/batch.md)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "in-memory":
        in_memory_worker(args)
        return
    if not DATA.is_file():
        print(f"skipped: {DATA} not found (set NLPFORGE_DATASETS)")
        return
    if args.rows <= BASE_ROWS:
        sys.exit(f"--rows must be over {BASE_ROWS:,} (the memory baseline's rows)")
    out = Path(args.out).resolve()
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    export = find_export(args, out)
    files = make_inputs(out, args.rows, args.row_group_rows)
    n = args.rows
    memory_rows, memory_why = in_memory_rows(n, args.in_memory_rows)
    memory_input = files["big.jsonl"] if memory_rows == n else \
        jsonl_prefix(files["big.jsonl"], out / "inputs" / f"first-{memory_rows}.jsonl",
                     memory_rows)
    why_no_ray = "--no-ray" if args.no_ray else ray_unavailable()
    threads = ["--threads", str(args.threads)] + (["--variant", args.variant] if args.variant
                                                   else [])

    def stream(src: Path, dst: str, *extra: str) -> tuple[list[str], Path]:
        return predict_command(export, src, runs / dst, *extra), runs / dst

    contenders: dict[str, tuple[list[str], Path, int]] = {}
    for name, src, dst, rows in (("stream-jsonl", "big.jsonl", "out.jsonl", n),
                                 ("stream-parquet", "big.parquet", "out.parquet", n),
                                 ("stream-jsonl-10k", "base.jsonl", "base-out.jsonl",
                                  BASE_ROWS),
                                 ("stream-parquet-10k", "base.parquet", "base-out.parquet",
                                  BASE_ROWS)):
        command, dst_path = stream(files[src], dst, *threads)
        contenders[name] = (command, dst_path, rows)
    if memory_rows != n:
        command, dst_path = stream(memory_input, "same-rows-out.jsonl", *threads)
        contenders["stream-jsonl-same-rows"] = (command, dst_path, memory_rows)
    contenders["in-memory"] = ([sys.executable, str(Path(__file__).resolve()), "--worker",
                                "in-memory", "--export", str(export), "--input",
                                str(memory_input), "--output", str(runs / "in-memory.jsonl"),
                                "--threads", str(args.threads),
                                *(["--variant", args.variant] if args.variant else [])],
                               runs / "in-memory.jsonl", memory_rows)
    if why_no_ray is None:
        command, dst_path = stream(files["big.jsonl"], "ray-out.jsonl", *threads[2:],
                                   "--engine", "ray",
                                   "--workers", str(args.threads), "--threads-per-worker", "1")
        contenders["ray"] = (command, dst_path, n)
        command, dst_path = stream(files["base.jsonl"], "ray-base-out.jsonl", *threads[2:],
                                   "--engine", "ray",
                                   "--workers", str(args.threads), "--threads-per-worker", "1")
        contenders["ray-10k"] = (command, dst_path, BASE_ROWS)

    print(f"export: {export}\ninputs: {n:,} rows ({files['big.jsonl'].stat().st_size / 2**20:.0f}"
          f" MiB JSON Lines; Parquet {parquet_info(files['big.parquet'])}); in-memory on "
          f"{memory_rows:,} rows ({memory_why}); ray: {why_no_ray or 'yes'}",
          file=sys.stderr, flush=True)
    names = list(contenders)
    results: dict[str, list[dict]] = {c: [] for c in names}
    failed: dict[str, str] = {}
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            command, dst, rows = contenders[name]
            if name.startswith("ray") and failed:  # one Ray run failed: no more of them
                continue
            remove(dst)
            try:
                measured = run_measured(command, runs / f"{name}.log")
            except RunFailed as exc:
                if not name.startswith("ray"):
                    sys.exit(str(exc))
                failed[name] = last_error(str(exc))  # the Ray engine is optional here
                print(f"round {round_ + 1} {name}: failed: {failed[name]} (the rest of its "
                      f"stderr: {runs / f'{name}.log'})", file=sys.stderr, flush=True)
                continue
            if name == "in-memory":
                measured.update(json.loads((runs / f"{name}.out").read_text()
                                           .strip().splitlines()[-1]))
            written = count_rows(dst)
            if written != rows:
                sys.exit(f"{name}: {dst} holds {written:,} rows, not {rows:,}")
            measured["rows_per_s"] = rows / measured["seconds"]
            results[name].append(measured)
            print(f"round {round_ + 1} {name}: {measured['rows_per_s']:,.0f} rows/s, peak RSS "
                  f"{measured['rss_mib']:,.0f} MiB ({measured['seconds']:.1f} s)",
                  file=sys.stderr, flush=True)

    print("resume check (kill -9 halfway, then --resume) ...", file=sys.stderr, flush=True)
    try:
        resume = resume_check(export, files["big.jsonl"], n, threads, runs,
                              contenders["stream-jsonl"][1])
    except RunFailed as exc:
        sys.exit(str(exc))
    ray = None
    if failed:  # the Ray engine is optional: left out where one of its runs failed
        why_no_ray = "failed: " + "; ".join(failed.values())
        for name in ("ray", "ray-10k"):
            contenders.pop(name, None)
            results.pop(name, None)
    if "ray" in contenders:
        ray = compare_outputs(contenders["stream-jsonl"][1], contenders["ray"][1], n)

    report = build_report(args, export, files, contenders, results, memory_rows, memory_why,
                          resume, ray, why_no_ray, out)
    print(f"CPU: {cpu_line()}\n{report['text']}")
    (out / "results.json").write_text(json.dumps(
        {"rows": n, "rounds": args.rounds, "threads": args.threads, "export": str(export),
         "results": results, "resume": resume, "ray_outputs": ray, "targets": report["targets"],
         "command": command_line()}, indent=1, default=str))
    if args.markdown:
        write_markdown(args.markdown, "Batch inference: nlpforge predict --input/--output",
                       report["text"])


def find_export(args: argparse.Namespace, out: Path) -> Path:
    if args.export:
        return Path(args.export).resolve()
    if (DEFAULT_EXPORT / "nlpforge.json").is_file():
        return DEFAULT_EXPORT
    tiny = out / "tiny-export"
    if not (tiny / "nlpforge.json").is_file():
        print(f"{DEFAULT_EXPORT} not found: building a tiny export in {tiny} (its figures are "
              f"not MiniLM's)", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, str(ROOT / "tools" / "make_tiny_export.py"), str(tiny)],
                       check=True, capture_output=True, text=True)
    return tiny


def build_report(args, export, files, contenders, results, memory_rows, memory_why, resume,
                 ray, why_no_ray, out) -> dict:
    n = args.rows

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    def per_round(a: str, b: str, key: str) -> list[float]:
        return [x[key] / y[key] for x, y in zip(results[a], results[b])]

    variant = results["in-memory"][0].get("variant")
    why = results["in-memory"][0].get("why")
    manifest = json.loads((export / "nlpforge.json").read_text())
    precision = (manifest.get("variants") or {}).get(variant, {}).get("precision")
    lines = [f"Export: `{shown([str(export)], out)}` (variant {variant}: {why}). "
             f"{args.threads} threads for every contender. Input: the SST-2 train sentences "
             f"repeated to {n:,} rows with unique ids (JSON Lines, "
             f"{files['big.jsonl'].stat().st_size / 2**20:,.0f} MiB; Parquet, "
             f"{parquet_info(files['big.parquet'])}). Each contender is a fresh process, "
             f"{args.rounds} round(s) in a rotating order; rows/s is the input's rows over the "
             f"process's wall time (start, model load, read, predict, write, exit), peak RSS "
             f"the process's own ru_maxrss; medians over the rounds.", "",
             "| contender | command | rows | rows/s | peak RSS (MiB) |",
             "| --- | --- | --- | --- | --- |"]
    for name, (command, _, rows) in contenders.items():
        text = shown(command, out, export)
        if name == "in-memory":
            text = (f"`Predictor.load(EXPORT, threads={args.threads}).predict("
                    f"read_dataset({Path(command[command.index('--input') + 1]).name}).rows)` "
                    f"+ JSON Lines")
        else:
            text = f"`{text}`"
        rss = "driver only: " if name.startswith("ray") else ""
        lines.append(f"| {name} | {text} | {rows:,} | {med(name, 'rows_per_s'):,.0f} | "
                     f"{rss}{med(name, 'rss_mib'):,.0f} |")
    phases = {k: statistics.median(r[k] for r in results["in-memory"])
              for k in ("load_s", "read_s", "predict_s", "write_s")}
    lines += ["", "in-memory phases (median s): " + ", ".join(
        f"{k[:-2]} {v:.1f}" for k, v in phases.items())]
    if memory_rows != n:
        lines.append(f"in-memory on {memory_rows:,} rows, not {n:,}: {memory_why}")

    targets: dict[str, dict] = {}
    lines += ["", "Targets:"]
    for fmt in ("jsonl", "parquet"):
        each = per_round(f"stream-{fmt}", f"stream-{fmt}-10k", "rss_mib")
        value = statistics.median(each)
        targets[f"rss_{fmt}"] = {"value": value, "target": TARGETS["rss"],
                                 "met": value <= TARGETS["rss"]}
        lines.append(f"- peak RSS {fmt}, {n:,} rows / 10,000 rows: "
                     f"{med(f'stream-{fmt}', 'rss_mib'):,.0f} / "
                     f"{med(f'stream-{fmt}-10k', 'rss_mib'):,.0f} MiB = {ratio(each)} "
                     f"(target <= {TARGETS['rss']}x): {met(value <= TARGETS['rss'])}")
    same = "stream-jsonl" if memory_rows == n else "stream-jsonl-same-rows"
    each = per_round(same, "in-memory", "rows_per_s")
    value = statistics.median(each)
    targets["in_memory"] = {"value": value, "target": TARGETS["in_memory"],
                            "met": value >= TARGETS["in_memory"], "rows": memory_rows}
    lines.append(f"- throughput {same} / in-memory on {memory_rows:,} rows: "
                 f"{med(same, 'rows_per_s'):,.0f} / {med('in-memory', 'rows_per_s'):,.0f} "
                 f"rows/s = {ratio(each)} (target >= {TARGETS['in_memory']}x): "
                 f"{met(value >= TARGETS['in_memory'])}; peak RSS "
                 f"{med(same, 'rss_mib'):,.0f} vs {med('in-memory', 'rss_mib'):,.0f} MiB")
    targets["resume"] = {"met": resume["ok"], **resume}
    if resume["killed"]:
        detail = (f"killed (SIGKILL) when the record said {resume['killed_at_read']:,} rows "
                  f"read ({resume['bytes_at_kill'] - (resume['committed_bytes'] or 0):,} "
                  f"uncommitted bytes in the output), then --resume: {resume['rows']:,} rows, "
                  f"{resume['unique_ids']:,} unique ids of {resume['expected']:,}, "
                  f"{resume['missing_ids']} missing, {resume['repeated_ids']} repeated, "
                  f"{resume['stray_ids']} not in the input")
        if resume["chunk_size"] != CHUNK:
            detail += f" (--chunk-size {resume['chunk_size']}: {n:,} rows are too few for " \
                      f"the default {CHUNK})"
        vs = resume.get("vs_uninterrupted")
        if vs:
            detail += (f"; against an uninterrupted run with the same chunk size: "
                       f"{vs['label_mismatches']} label differences, largest score difference "
                       f"{vs['max_score_diff']:.2e}")
    else:
        detail = resume["why"]
    lines.append(f"- resume after kill -9: {'yes' if resume['ok'] else 'no'}: {detail}")
    if ray is not None:
        each = per_round("ray", "stream-jsonl", "rows_per_s")
        value = statistics.median(each)
        rate = med("ray", "rows_per_s")
        steady, fixed, how = marginal(med("ray", "seconds"), med("ray-10k", "seconds"), n)
        local = marginal(med("stream-jsonl", "seconds"), med("stream-jsonl-10k", "seconds"),
                         n)[0]
        per_worker = steady / args.threads
        targets["ray"] = {"value": value, "target": TARGETS["ray"],
                          "met": value >= TARGETS["ray"] and ray["identical"],
                          "outputs": ray, "per_worker_rows_per_s": per_worker,
                          "fixed_seconds": fixed, "one_process_marginal_rows_per_s": local}
        hint = ""
        if not ray["identical"] and precision == "int8":
            hint = (f"; the {variant} variant is int8, whose outputs depend on which rows "
                    f"share a batch: --variant fp32 compares the engines alone")
        lines.append(f"- ray ({args.threads} workers x 1 thread) / one process "
                     f"(--threads {args.threads}): {rate:,.0f} / "
                     f"{med('stream-jsonl', 'rows_per_s'):,.0f} rows/s = {ratio(each)} "
                     f"(target >= {TARGETS['ray']}x): {met(value >= TARGETS['ray'])}; outputs "
                     f"identical by id (labels equal, scores within 1e-6): "
                     f"{'yes' if ray['identical'] else 'no'} ({ray['compared']:,} of "
                     f"{ray['rows']:,} ids compared, {ray['label_mismatches']} label "
                     f"differences, largest score difference {ray['max_score_diff']:.2e}{hint})")
        startup = f"plus {fixed:,.1f} s of start-up and shut-down per run" if fixed else \
            "start-up included"
        lines.append(f"- ray per worker: {per_worker:,.0f} rows/s (1 thread; {how}, "
                     f"{steady:,.0f} rows/s for {args.threads} workers), {startup}; one "
                     f"process, the same way: {local:,.0f} rows/s on {args.threads} threads")
        cores = os.cpu_count() or 1
        model = ", ".join(f"{m} x {cores} cores: {m * cores * per_worker:,.0f} rows/s, "
                          f"{duration(fixed + n / (m * cores * per_worker))} for {n:,} rows"
                          for m in (1, 4, 16))
        lines.append(f"- scaling model for M machines of C cores, one 1-thread worker per "
                     f"core (Ray's read and write tasks, the network and the driver not "
                     f"modelled): rows/s = M x C x {per_worker:,.0f}; time = "
                     f"{f'{fixed:,.1f} s + ' if fixed else ''}rows / that: {model}")
    else:
        lines.append(f"- ray: not measured: {why_no_ray}")
    return {"text": "\n".join(lines) + "\n", "targets": targets}


def marginal(seconds: float, base_seconds: float, rows: int) -> tuple[float, float, str]:
    """(rows/s, fixed seconds, how): the rate between a ``rows``-row run and a 10,000-row run
    of the same command, start-up apart; the whole run's rate (no fixed part) where the
    10,000-row run is over half the big run's time (too few rows, or noise, to tell them
    apart)."""
    extra = seconds - base_seconds
    if extra >= seconds / 2:
        rate = (rows - BASE_ROWS) / extra
        return rate, seconds - rows / rate, (f"the marginal rate between the {rows:,}- and "
                                             f"10,000-row runs")
    return rows / seconds, 0.0, (f"the whole run's rate: {rows:,} rows are too few to tell "
                                 f"start-up apart")


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


if __name__ == "__main__":
    main()
