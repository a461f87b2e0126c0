"""The commands a newcomer types first: the tutorial as a script path, and `python -m training --help`."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tutorial_imports_when_run_as_a_script_path_from_elsewhere(tmp_path):
    # run_name != "__main__": executes the imports and definitions, not the fine-tuning itself
    code = f"import runpy; runpy.run_path({str(ROOT / 'examples' / 'fine_tune_tutorial.py')!r}, run_name='check')"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_training_help_exits_zero_and_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "training", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "python -m training sft" in result.stdout and "evaluate" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "training", "nonsense"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "usage: python -m training" in bad.stderr
