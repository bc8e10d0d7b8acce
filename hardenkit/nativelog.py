"""Keep TensorFlow's native (C++) start-up notices off the terminal, and nothing else.

TensorFlow 2.21 logs through absl before absl's logging is initialised, so
``TF_CPP_MIN_LOG_LEVEL`` no longer silences it: every command used to start with
``WARNING: All log messages before absl::InitializeLog() ...`` and two ``oneDNN custom
operations are on`` notices, and each retraining printed an ``E0000 ... NodeDef mentions
attribute use_unbounded_threadpool`` line (a harmless version note from tf.data that looks
like an error). :func:`filter_native_stderr` points file descriptor 2 at a pipe read by a
small forked process that drops exactly the lines matching :data:`NOISE` and copies
every other byte to the real stderr. Python's own ``sys.stderr`` (errors, warnings,
tracebacks, progress bars) is re-pointed at the real stderr directly, so it stays a
terminal when it was one, and a native crash message still gets through (the filter
process outlives the tool and exits when the pipe closes).

Off when ``HARDENKIT_NATIVE_LOG=1``, when TensorFlow is already imported, when stderr is
not file descriptor 2 (e.g. captured by a test runner), or where ``os.fork`` is missing.

Example:
    >>> is_noise(b"I0000 00:00:1.2  10 port.cc:153] oneDNN custom operations are on. You may see")
    True
    >>> is_noise(b"E0000 00:00:1.2  10 cuda_driver.cc:1] failed call to cuInit")
    False
"""

from __future__ import annotations

import io
import os
import signal
import sys

#: Substrings of the native stderr lines dropped (each a notice, none a failure).
NOISE: tuple[bytes, ...] = (
    b"All log messages before absl::InitializeLog() is called are written to STDERR",
    b"] oneDNN custom operations are on.",
    b"cpu_feature_guard.cc:",
    b"rebuild TensorFlow with the appropriate compiler flags.",
    b"To enable the following instructions:",
    b"NodeDef mentions attribute use_unbounded_threadpool which is not in the op definition",
)

_active = False


def is_noise(line: bytes) -> bool:
    """Whether one native stderr line is one of the :data:`NOISE` notices."""
    return any(p in line for p in NOISE)


def _pump(read_fd: int, out_fd: int) -> None:  # pragma: no cover - runs in the forked process
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the tool's to handle; keep copying
    buf = b""
    while True:
        try:
            chunk = os.read(read_fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        out = b"".join(line + b"\n" for line in lines if not is_noise(line))
        if out:
            os.write(out_fd, out)
    if buf and not is_noise(buf):
        os.write(out_fd, buf)


def filter_native_stderr() -> bool:
    """Route native writes to stderr through the :data:`NOISE` filter (once per process).

    Returns:
        True if the filter is (now) on.
    """
    global _active
    if _active:
        return True
    if os.environ.get("HARDENKIT_NATIVE_LOG") == "1" or "tensorflow" in sys.modules or not hasattr(os, "fork"):
        return False
    try:
        if sys.stderr is None or sys.stderr.fileno() != 2:
            return False
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False
    sys.stderr.flush()
    real = os.dup(2)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the filter process
        lo = 0
        for keep in sorted((r, real)):  # hold no other file of the tool's open (outputs, pipes)
            os.closerange(lo, keep)
            lo = keep + 1
        os.closerange(lo, 1 << 16)
        try:
            _pump(r, real)
        finally:
            os._exit(0)
    os.close(r)
    os.dup2(w, 2)
    os.close(w)
    sys.stderr = io.TextIOWrapper(io.FileIO(real, "w", closefd=True), encoding=sys.stderr.encoding,
                                  errors="backslashreplace", line_buffering=True, write_through=True)
    _active = True
    return True
