"""A crashing or hanging decoder fails one input and leaves the worker usable."""
from __future__ import annotations

import os
import signal
import time

import pytest

from pipeline.isolate import DecoderCrash, DecoderTimeout, IsolatedRunner


def square(x):
    return x * x


def segfault():
    os.kill(os.getpid(), signal.SIGSEGV)


def hang():
    time.sleep(60)


def raise_value_error():
    raise ValueError("bad frame")


def test_crash_timeout_and_errors_are_contained():
    runner = IsolatedRunner(timeout_s=3)
    try:
        assert runner.call(square, 7) == 49
        with pytest.raises(DecoderCrash, match=f"exit code -{int(signal.SIGSEGV)}"):
            runner.call(segfault)
        assert runner.call(square, 3) == 9
        with pytest.raises(DecoderTimeout, match="no result after 3 s"):
            runner.call(hang)
        with pytest.raises(ValueError, match="bad frame"):
            runner.call(raise_value_error)
        assert runner.call(square, 2) == 4
    finally:
        runner.close()
