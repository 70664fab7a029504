"""model.options: the model's choices, read by argument parsers and configs without torch."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from model.options import DTYPE_NAMES, torch_dtype
from tests.conftest import REPO


def test_importing_the_options_does_not_import_torch():
    subprocess.run([sys.executable, "-c",
                    "import model.options, sys; assert 'torch' not in sys.modules"],
                   cwd=REPO, check=True)


def test_dtype_names_map_to_torch_dtypes():
    assert [torch_dtype(name) for name in DTYPE_NAMES] == [torch.float32, torch.float16,
                                                           torch.bfloat16]
    with pytest.raises(ValueError, match=r"^dtype must be one of \('fp32', 'fp16', 'bf16'\), "
                                         r"got 'fp64'$"):
        torch_dtype("fp64")
