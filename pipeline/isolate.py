"""Run a function in a persistent child process so a crashing or hanging decoder cannot take
the calling worker down.

Video decoders are native code that can segfault or spin on malformed files. Each call goes
to a long-lived spawned child; if the child dies or exceeds the timeout it is killed and
replaced, and the call raises `DecoderCrash` or `DecoderTimeout` (which become `failed:` rows
for that one input).
"""
from __future__ import annotations

import multiprocessing as mp
import traceback


class DecoderCrash(RuntimeError):
    pass


class DecoderTimeout(RuntimeError):
    pass


def _child_main(conn) -> None:
    import cv2

    cv2.setNumThreads(1)  # one decode per child; parallelism comes from Ray workers
    while True:
        try:
            fn, args, kwargs = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", fn(*args, **kwargs)))
        except BaseException as e:  # noqa: BLE001 - every error goes back to the caller
            conn.send(("error", (e, traceback.format_exc())))


class IsolatedRunner:
    def __init__(self, timeout_s: float = 300.0):
        self.timeout_s = timeout_s
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child_main, args=(child,), daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join()
            self._conn.close()
        self._proc = self._conn = None

    def call(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) in the child; fn must be importable (module-level)."""
        if self._proc is None or not self._proc.is_alive():
            self._kill()
            self._start()
        self._conn.send((fn, args, kwargs))
        if not self._conn.poll(self.timeout_s):
            self._kill()
            raise DecoderTimeout(f"no result after {self.timeout_s:.0f} s")
        try:
            kind, value = self._conn.recv()
        except (EOFError, ConnectionError):
            self._proc.join(timeout=5)
            code = self._proc.exitcode
            self._kill()
            raise DecoderCrash(f"decoder process died (exit code {code})") from None
        if kind == "error":
            error, _ = value
            raise error
        return value

    def close(self) -> None:
        self._kill()
