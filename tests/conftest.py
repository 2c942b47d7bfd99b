"Shared pytest fixtures and paths."
import os, tempfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
os.environ.setdefault('MPLBACKEND', 'Agg')

def notebooks():
    "Every notebook of the kit, in order (scratch and checkpoint folders excluded)."
    return sorted(p for p in NBS.rglob('*.ipynb')
                  if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts))

@pytest.fixture
def root(): return ROOT

@pytest.fixture(autouse=True)
def _scratch_in_tmp_path(tmp_path, monkeypatch):
    """Point `tempfile` (and the `uspl` subprocesses, via TMPDIR) at the test's own `tmp_path`: the scratch folders that
    notebooks and tests make with `tempfile.mkdtemp()` (training runs, checkpoints) are removed with it instead of
    filling the machine's /tmp run after run."""
    d = tmp_path / 'scratch'; d.mkdir()
    monkeypatch.setenv('TMPDIR', str(d))
    monkeypatch.setattr(tempfile, 'tempdir', str(d))

def pytest_sessionfinish(session, exitstatus):
    "Clear torch.compile's caches before the interpreter exits: their weakref callbacks otherwise print KeyErrors at shutdown."
    import sys
    if 'torch._dynamo' in sys.modules: sys.modules['torch._dynamo'].reset()
