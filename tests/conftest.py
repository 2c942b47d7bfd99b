"Shared pytest fixtures and paths."
import os
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

def pytest_sessionfinish(session, exitstatus):
    "Clear torch.compile's caches before the interpreter exits: their weakref callbacks otherwise print KeyErrors at shutdown."
    import sys
    if 'torch._dynamo' in sys.modules: sys.modules['torch._dynamo'].reset()
