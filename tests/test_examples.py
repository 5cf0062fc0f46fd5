"""The example scripts under ``examples/`` run and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_objects_in_memory_example():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "objects_in_memory.py")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("sst2-tiny as an object: positive")
    assert lines[1].startswith("a pipeline around it: positive")
    assert lines[0].split(":", 1)[1] == lines[1].split(":", 1)[1]  # the same explanation
    assert lines[2].startswith("coherence per layer: 0: ")
    assert "decoder mlm_head" in lines[3]
    assert lines[4] == "the tiny BERT is still in training mode: True"
    assert lines[5].startswith("pair model (entailment, neutral, contradiction): ")
    assert " | " in lines[5]  # words of both texts
    assert "decoder lm_head" in lines[6]
    assert lines[7].startswith("next-token coherence per layer: 0: ")
    assert lines[8].startswith("largest change decoding makes to a token score: ")
    assert lines[9] == "the user's tokenizer still pads on the left"
    assert "Traceback" not in result.stderr
