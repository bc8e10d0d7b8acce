"""Censor a folder tree (or one file) into a mirror tree, with a resumable CSV report.

The input tree is never written to: the output folder may not be the input folder or lie
inside it. Images below the threshold are copied byte for byte (or skipped with
``only_censored``); flagged ones are censored and re-encoded (metadata stripped unless
``keep_metadata``; a JPEG/WebP output is the very bytes its verification scored). Bad files
become ``failed`` rows and the batch goes on. Inputs are first decoded as cheap previews for
scoring (:data:`PREVIEW_SIDE`); only images near the threshold or above are decoded at full
size, 8-bit images are censored in 8 bits. Decoding and encoding run in a thread pool,
overlapping the model work, and ``lanes`` batches are in model work at once; the report is rewritten atomically after every batch, so a killed
run resumes where it stopped (``resume``).

Example:
    >>> report = blur_folder("photos", "photos-censored", MosaicConfig())  # doctest: +SKIP
    >>> report.counts  # doctest: +SKIP
    {'clean': 97, 'censored': 2, 'unresolved': 0, 'failed': 1}
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from contextlib import nullcontext
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from hardenkit.errors import HardenkitError, InvalidImageError, UsageError

from .censoring import CensorInfo, LazyExplainer, MapsFn, censor_batch, model_input_size
from .config import MosaicConfig

#: Statuses of a report row.
STATUSES = ("clean", "censored", "unresolved", "failed")

#: Columns of ``mosaic-report.csv``.
REPORT_COLUMNS = ("path", "status", "score_before", "score_after", "regions", "censored_fraction", "error")

REPORT_NAME = "mosaic-report.csv"
RUN_NAME = "mosaic-run.json"


@dataclass(frozen=True)
class MosaicRow:
    """One input's line in the report.

    Attributes:
        path: Path relative to the input folder (posix), or the file name in single-file mode.
        status: One of :data:`STATUSES`.
        score_before: Sensitive score of the input (None when failed).
        score_after: Score of the output as decoded (None when failed).
        regions: Regions censored.
        censored_fraction: Share of pixels censored.
        error: Why it failed ("" otherwise).
    """

    path: str
    status: str
    score_before: float | None = None
    score_after: float | None = None
    regions: int = 0
    censored_fraction: float = 0.0
    error: str = ""

    def to_csv(self) -> dict[str, str]:
        """The row as CSV strings."""
        def num(v: float | None) -> str:
            return "" if v is None else f"{v:.6f}"

        return {"path": self.path, "status": self.status, "score_before": num(self.score_before),
                "score_after": num(self.score_after), "regions": str(self.regions),
                "censored_fraction": num(self.censored_fraction), "error": self.error}

    @classmethod
    def from_csv(cls, d: dict[str, str]) -> "MosaicRow":
        """Parse a row written by :meth:`to_csv`.

        Example:
            >>> MosaicRow.from_csv(MosaicRow("a.jpg", "clean", 0.1, 0.1).to_csv()).score_before
            0.1
        """
        def num(v: str | None) -> float | None:
            return float(v) if v not in (None, "") else None

        return cls(d["path"], d["status"], num(d.get("score_before")), num(d.get("score_after")),
                   int(d.get("regions") or 0), num(d.get("censored_fraction")) or 0.0, d.get("error") or "")


@dataclass
class MosaicReport:
    """The outcome of a run: one row per input, plus where things were written.

    Attributes:
        input: The input folder (or file).
        output: The output folder (or file).
        report_path: The CSV written (None in single-file mode without ``report``).
        rows: One :class:`MosaicRow` per input handled (including rows kept from a resumed run).
        seconds: Wall time of this run.
        skipped: Inputs skipped because a previous run finished them (``resume``).
    """

    input: Path
    output: Path
    report_path: Path | None
    rows: list[MosaicRow] = field(default_factory=list)
    seconds: float = 0.0
    skipped: int = 0

    @property
    def counts(self) -> dict[str, int]:
        """Rows per status, every status present."""
        c = {s: 0 for s in STATUSES}
        for r in self.rows:
            c[r.status] = c.get(r.status, 0) + 1
        return c

    @property
    def failed(self) -> list[MosaicRow]:
        """The failed rows."""
        return [r for r in self.rows if r.status == "failed"]

    @property
    def exit_code(self) -> int:
        """1 if any input failed, else 0."""
        return 1 if self.failed else 0

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (what ``mosaic blur --json`` prints)."""
        return {"in": str(self.input), "out": str(self.output),
                "report": None if self.report_path is None else str(self.report_path),
                "inputs": len(self.rows), **self.counts, "skipped_done": self.skipped,
                "seconds": round(self.seconds, 3),
                "failures": [{"path": r.path, "error": r.error} for r in self.failed]}

    def summary_line(self) -> str:
        """``12 inputs: 8 clean, 3 censored, 0 unresolved, 1 failed (4.2 s)``."""
        c = self.counts
        parts = ", ".join(f"{c[s]} {s}" for s in STATUSES)
        extra = f", {self.skipped} already done" if self.skipped else ""
        return f"{len(self.rows)} inputs: {parts}{extra} ({self.seconds:.1f} s)"


def read_report(path: str | os.PathLike[str]) -> list[MosaicRow]:
    """Rows of an existing ``mosaic-report.csv`` ([] if it does not exist).

    Raises:
        UsageError: The file is not a mosaic report.

    Example:
        >>> read_report("/nonexistent/mosaic-report.csv")
        []
    """
    p = Path(path)
    if not p.exists():
        return []
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != REPORT_COLUMNS:
            raise UsageError(f"{p}: not a mosaic report; expected columns {','.join(REPORT_COLUMNS)}")
        try:
            return [MosaicRow.from_csv(d) for d in reader]
        except (KeyError, ValueError) as e:
            raise UsageError(f"{p}: unreadable mosaic report ({e})") from None


def write_report(path: str | os.PathLike[str], rows: Sequence[MosaicRow]) -> None:
    """Write the report CSV atomically, rows sorted by path.

    Example:
        >>> write_report("/tmp/hk_mosaic_doc.csv", [MosaicRow("a.jpg", "clean", 0.1, 0.1)])
    """
    from hardenkit.imageio import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in sorted(rows, key=lambda r: r.path):
        w.writerow(r.to_csv())
    atomic_write_text(path, buf.getvalue())


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_paths(src: Path, dst: Path, report: Path | None = None) -> None:
    """Refuse runs that could write into the input.

    Raises:
        UsageError: ``src`` is missing; ``dst`` (or ``report``) is ``src`` or inside it.

    Example:
        >>> check_paths(Path("/tmp"), Path("/tmp/out"))
        Traceback (most recent call last):
        ...
        hardenkit.errors.UsageError: output /tmp/out is inside the input folder /tmp; expected an output outside it (mosaic never writes into its input)
    """
    if not src.exists() and not src.is_symlink():
        raise UsageError(f"{src}: no such file or folder")
    s, d = src.resolve(), dst.resolve()
    if s == d:
        raise UsageError(f"output {dst} is the input itself; expected a different path "
                         "(mosaic never overwrites its input)")
    if src.is_dir() and _inside(d, s):
        raise UsageError(f"output {dst} is inside the input folder {src}; expected an output outside it "
                         "(mosaic never writes into its input)")
    if report is not None:
        r = report.resolve()
        if (src.is_dir() and _inside(r, s)) or r == s:
            raise UsageError(f"report {report} is inside the input {src}; expected a path outside it")
    if src.is_dir() and d.exists() and not d.is_dir():
        raise UsageError(f"output {dst} is a file; expected a folder for an input folder")


def list_inputs(src: Path, shard: tuple[int, int] | None = None) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every image under ``src``, sorted, then sharded.

    Folders named like images (``x.jpg/``) are listed too, so they are reported as failed
    rather than silently ignored; their contents are walked as usual.

    Example:
        >>> list_inputs(Path("/nonexistent-folder"))
        Traceback (most recent call last):
        ...
        hardenkit.errors.UsageError: /nonexistent-folder: no such file or folder
    """
    from hardenkit.imageio import is_image_path, iter_images

    found = {f.relative_to(src).as_posix(): f for f in iter_images([src])}
    for d in src.rglob("*"):
        if d.is_dir() and is_image_path(d) and not d.name.startswith("."):
            found[d.relative_to(src).as_posix()] = d
    items = sorted(found.items())
    if shard is not None:
        i, n = shard
        items = [it for k, it in enumerate(items) if k % n == i]
    return items


def _atomic_copy(src: Path, dst: Path) -> None:
    """Byte-exact copy through a temporary file in the destination folder."""
    from hardenkit.imageio import atomic_path

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


#: Inputs are first decoded for scoring only: a preview whose short side is at least this many
#: pixels (or the model's input side, if larger), see :func:`hardenkit.imageio.read_image_preview`.
#: Only images scoring near the threshold or above are then needed at full size.
PREVIEW_SIDE = 256

Decoded = tuple[np.ndarray, np.ndarray | None]


def _decode(path: Path, max_pixels: int, min_side: int,
            out_size: tuple[int, int] | None = None) -> Decoded | InvalidImageError:
    """(preview, full pixels) (see ``read_image_preview``), or the :class:`InvalidImageError`."""
    from hardenkit.imageio import read_image_preview

    try:
        return read_image_preview(path, min_side, max_pixels=max_pixels, out_size=out_size)
    except InvalidImageError as e:
        return e


def _decode_full(path: Path, max_pixels: int) -> np.ndarray | InvalidImageError:
    """The full-size pixels (uint8 RGB where the image is 8-bit RGB/grey), or the error."""
    from hardenkit.imageio import pixels_to_float, read_image_pixels

    try:
        pixels = read_image_pixels(path, max_pixels=max_pixels)
    except InvalidImageError as e:
        return e
    return pixels if pixels.dtype == np.uint8 and pixels.shape[-1] == 3 else pixels_to_float(pixels)


def _row(rel: str, info: CensorInfo) -> MosaicRow:
    return MosaicRow(rel, info.status, info.score_before, info.score_after, info.regions, info.censored_fraction)


def _failed(rel: str, reason: str) -> MosaicRow:
    return MosaicRow(rel, "failed", error=reason)


def _is_done(row: MosaicRow, out: Path, config: MosaicConfig) -> bool:
    if row.status == "failed":
        return False
    if row.status == "clean" and config.only_censored:
        return True
    return out.is_file()


def _shard_suffix(config: MosaicConfig) -> str:
    return "" if config.shard is None else f"-{config.shard[0]}of{config.shard[1]}"


class _Run:
    """The pipelined batch loop: ``config.lanes`` batches in model work at once, the next batches'
    decodes and the finished ones' writes overlapping them; rows are recorded in batch order."""

    def __init__(self, bundle: Any, config: MosaicConfig, explainer: MapsFn | None,
                 report_path: Path | None, rows: dict[str, MosaicRow],
                 progress: Callable[[int], None], reencode_clean: bool = False) -> None:
        self.bundle, self.config = bundle, config
        self.explainer = explainer if explainer is not None else LazyExplainer(bundle, config)
        self.reencode_clean = reencode_clean
        self.report_path, self.rows, self.progress = report_path, rows, progress
        self.pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="mosaic-io")
        self._pending: list[tuple[MosaicRow, Future[None] | None]] = []
        self._last_write_cost = 0.0
        self._last_write_at = 0.0
        self.preview_side = max(PREVIEW_SIDE, *getattr(bundle, "image_size", (0, 0)))
        # a model bundle scores the preview at its input size: resize to it straight away
        self.preview_size = model_input_size(bundle)

    def _write_one(self, src: Path, dst: Path, image: np.ndarray | None, encoded: bytes | None = None) -> None:
        from hardenkit.imageio import encode_image, read_image, write_bytes, write_image

        if image is None and self.reencode_clean:
            image = read_image(src, max_pixels=self.config.max_pixels)
        if image is None:
            _atomic_copy(src, dst)
        elif not self.config.keep_metadata:
            # JPEG/WebP: the very bytes verification scored; lossless: the verified pixels
            write_bytes(dst, encoded if encoded is not None
                        else encode_image(image, dst.suffix.lower(), self.config.quality))
        else:
            write_image(dst, image, quality=self.config.quality,
                        metadata_from=src if self.config.keep_metadata else None)

    def _flush(self, final: bool = False) -> None:
        for row, fut in self._pending:
            if fut is not None:
                try:
                    fut.result()
                except (OSError, HardenkitError) as e:
                    row = _failed(row.path, f"cannot write output ({e})")
            self.rows[row.path] = row
            self.progress(1)
        self._pending = []
        now = time.perf_counter()
        # A rewrite costs O(rows): keep it under ~10% of the run on huge folders.
        if self.report_path is not None and (final or now - self._last_write_at >= 10 * self._last_write_cost):
            write_report(self.report_path, list(self.rows.values()))
            self._last_write_at = time.perf_counter()
            self._last_write_cost = self._last_write_at - now

    def _process(self, batch: list[tuple[str, Path, Path]],
                 decoded: list[Decoded | InvalidImageError]) -> list[tuple[MosaicRow, Future[None] | None]]:
        from hardenkit.imageio import pixels_to_float

        good = [k for k, d in enumerate(decoded) if not isinstance(d, InvalidImageError)]
        images = [decoded[k][0] for k in good]  # type: ignore[index]

        def full(j: int) -> Any:
            pixels = decoded[good[j]][1]  # type: ignore[index]
            if pixels is images[j]:
                return images[j]  # the preview is the full image
            if pixels is None:  # decoded at reduced size
                return self.pool.submit(_decode_full, batch[good[j]][1], self.config.max_pixels)
            if pixels.dtype == np.uint8 and pixels.shape[-1] == 3:
                return pixels  # censored in 8 bits
            return self.pool.submit(pixels_to_float, pixels)

        results = censor_batch(self.bundle, images, self.config, self.explainer,
                               [batch[k][2].suffix for k in good], full=full) if good else []
        by_index = dict(zip(good, results))
        jobs: list[tuple[MosaicRow, Future[None] | None]] = []
        for k, (rel, src, dst) in enumerate(batch):
            d = decoded[k]
            if isinstance(d, InvalidImageError):
                jobs.append((_failed(rel, d.reason), None))
                continue
            out, info = by_index[k]
            if info.status == "failed":
                jobs.append((_failed(rel, info.error), None))
                continue
            row = _row(rel, info)
            if out is None and self.config.only_censored:
                jobs.append((row, None))
            else:
                jobs.append((row, self.pool.submit(self._write_one, src, dst, out, info.encoded)))
        return jobs

    def run(self, todo: list[tuple[str, Path, Path]]) -> None:
        bs = self.config.batch_size
        batches = [todo[i:i + bs] for i in range(0, len(todo), bs)]
        lanes = max(1, min(self.config.lanes, len(batches)))
        decodes: list[list[Future[Decoded | InvalidImageError]]] = []
        inflight: list[Future[list[tuple[MosaicRow, Future[None] | None]]]] = []
        model_pool = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="mosaic-model")
        import cv2

        # The lanes and the I/O pool already keep the cores busy: OpenCV's own worker threads on
        # top measured 5-15% more CPU for the same work. Restored when the run ends.
        cv_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)

        def submit_decodes(k: int) -> None:
            if k < len(batches):
                decodes.append([self.pool.submit(_decode, s, self.config.max_pixels, self.preview_side,
                                                 self.preview_size)
                                for _, s, _ in batches[k]])

        def process(k: int) -> list[tuple[MosaicRow, Future[None] | None]]:
            return self._process(batches[k], [f.result() for f in decodes[k]])

        try:
            for k in range(lanes):
                submit_decodes(k)
            for k in range(len(batches)):
                submit_decodes(k + lanes)  # decode ahead while the model works on earlier batches
                inflight.append(model_pool.submit(process, k))
                if len(inflight) >= lanes:
                    current = inflight.pop(0).result()
                    self._flush()  # the batch before's writes, which overlapped this batch's model work
                    self._pending = current
            while inflight:
                current = inflight.pop(0).result()
                self._flush()
                self._pending = current
        finally:
            for fs in decodes:
                for f in fs:
                    f.cancel()
            for lane in inflight:
                lane.cancel()
            model_pool.shutdown(wait=True)
            # Whatever finished is recorded, so a resumed run does not redo it: also batches a
            # lane finished after an earlier batch failed.
            for lane in inflight:
                if lane.done() and not lane.cancelled() and lane.exception() is None:
                    self._pending += lane.result()
            self._flush(final=True)
            self.pool.shutdown(wait=True)
            cv2.setNumThreads(cv_threads)


def _resolve_bundle(bundle: Any) -> Any:
    if bundle is not None:
        return bundle
    from hardenkit.cli import load_bundle

    return load_bundle(None)


def blur_folder(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    config: MosaicConfig | None = None,
    bundle: Any = None,
    report: str | os.PathLike[str] | None = None,
    explainer: MapsFn | None = None,
    show_progress: bool = False,
) -> MosaicReport:
    """Censor every image under ``src`` into the same relative paths under ``dst``.

    Args:
        src: Input folder, walked recursively (never written to).
        dst: Output folder (created); may not be ``src`` or inside it.
        config: Defaults to :class:`MosaicConfig` ().
        bundle: The classifier; None loads the cached demo model (with a notice).
        report: CSV path. Defaults to ``dst/mosaic-report.csv`` (``mosaic-report-IofN.csv``
            for a shard, so shards sharing ``dst`` do not overwrite each other's report).
        explainer: CAM maps function; defaults to one :class:`cam.Explainer` for the run.
        show_progress: Show a progress bar on stderr (:func:`hardenkit.progress.progress_bar`).
            Defaults to False.

    Returns:
        The :class:`MosaicReport` (also written as CSV, plus ``mosaic-run.json`` next to it
        in ``dst``).

    Raises:
        UsageError: ``src`` missing or not a folder, ``dst`` inside ``src``, or an existing
            report that is not a mosaic report (with ``resume``).

    Example:
        >>> rep = blur_folder("in", "out", MosaicConfig(style="gaussian"))  # doctest: +SKIP
        >>> rep.exit_code  # doctest: +SKIP
        0
    """
    cfg = config or MosaicConfig()
    s, d = Path(src), Path(dst)
    if s.exists() and not s.is_dir():
        raise UsageError(f"{s}: expected a folder (use blur_file for one image)")
    rpath = Path(report) if report is not None else d / f"{REPORT_NAME[:-4]}{_shard_suffix(cfg)}.csv"
    check_paths(s, d, rpath)
    t0 = time.perf_counter()
    items = list_inputs(s, cfg.shard)
    rows: dict[str, MosaicRow] = {}
    skipped = 0
    todo: list[tuple[str, Path, Path]] = []
    old = {r.path: r for r in read_report(rpath)} if cfg.resume else {}
    for rel, path in items:
        out = d / rel
        prev = old.get(rel)
        if prev is not None and _is_done(prev, out, cfg):
            rows[rel] = prev
            skipped += 1
        else:
            todo.append((rel, path, out))
    redo = {t[0] for t in todo}
    for rel, r in old.items():  # keep rows of inputs outside this listing (another shard, deleted)
        if rel not in redo:
            rows.setdefault(rel, r)
    bundle = _resolve_bundle(bundle)
    d.mkdir(parents=True, exist_ok=True)
    run_info = {"in": str(s.resolve()), "out": str(d.resolve()), "report": str(rpath.resolve()),
                "model": None if getattr(bundle, "path", None) is None else str(Path(bundle.path).resolve()),
                "method": cfg.cam_method, "style": cfg.style, "threshold": cfg.threshold}
    from hardenkit.imageio import atomic_write_text

    run_json = d / f"{RUN_NAME[:-5]}{_shard_suffix(cfg)}.json"
    atomic_write_text(run_json, json.dumps(run_info, indent=1) + "\n")
    from hardenkit.progress import progress_bar

    with progress_bar(len(todo), "mosaic") if show_progress else nullcontext(lambda n=1: None) as advance:
        _Run(bundle, cfg, explainer, rpath, rows, advance).run(todo)
    rep = MosaicReport(s, d, rpath, list(rows.values()), time.perf_counter() - t0, skipped)
    atomic_write_text(run_json, json.dumps({**run_info, "counts": rep.counts, "seconds": round(rep.seconds, 3)},
                                           indent=1) + "\n")
    return rep


def blur_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    config: MosaicConfig | None = None,
    bundle: Any = None,
    report: str | os.PathLike[str] | None = None,
    explainer: MapsFn | None = None,
) -> MosaicReport:
    """Censor one image file into ``dst`` (a file path, or an existing folder).

    The output format follows ``dst``'s ending; a clean input is copied byte for byte when
    the endings match (re-encoded otherwise), or not written with ``only_censored``.

    Args:
        src: The input image.
        dst: Output file, or an existing folder to write ``dst/<src name>`` into.
        config: Defaults to :class:`MosaicConfig` ().
        bundle: The classifier; None loads the cached demo model.
        report: Also write a one-row CSV report here. Defaults to None (no report).
        explainer: CAM maps function.

    Returns:
        A :class:`MosaicReport` with one row.

    Raises:
        UsageError: ``src`` missing, ``dst`` is ``src``, or ``dst`` has no image ending.

    Example:
        >>> blur_file("one.jpg", "one-censored.jpg").rows[0].status  # doctest: +SKIP
        'censored'
    """
    from hardenkit.imageio import image_format_for

    cfg = config or MosaicConfig()
    s, d = Path(src), Path(dst)
    if d.is_dir():
        d = d / s.name
    check_paths(s, d, Path(report) if report is not None else None)
    image_format_for(d)
    t0 = time.perf_counter()
    bundle = _resolve_bundle(bundle)
    rows: dict[str, MosaicRow] = {}
    runner = _Run(bundle, replace(cfg, workers=1), explainer, Path(report) if report is not None else None,
                  rows, lambda n: None, reencode_clean=s.suffix.lower() != d.suffix.lower())
    runner.run([(s.name, s, d)])
    return MosaicReport(s, d, runner.report_path, list(rows.values()), time.perf_counter() - t0)


def iter_rows(report: MosaicReport) -> Iterator[dict[str, Any]]:
    """The report's rows as plain dicts (for JSON).

    Example:
        >>> list(iter_rows(MosaicReport(Path("a"), Path("b"), None, [MosaicRow("x.jpg", "clean", 0.1, 0.1)])))[0]["status"]
        'clean'
    """
    for r in report.rows:
        yield asdict(r)
