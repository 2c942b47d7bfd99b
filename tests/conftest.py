"Shared pytest fixtures and paths."
import getpass, os, shutil, tempfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
os.environ.setdefault('MPLBACKEND', 'Agg')
# One scratch folder for the whole session, removed when it passes: what notebooks and tests make with
# `tempfile.mkdtemp()` (training runs, checkpoints; several GB a run) and the `uspl` subprocesses' temp files (TMPDIR)
# go there instead of piling up in the machine's /tmp run after run. It is set once, before torch is imported: torch
# keeps paths under the temp folder (its compiler's scratch) for the life of the process. torch.compile's cache stays
# where it always was, so that it survives the session.
os.environ.setdefault('TORCHINDUCTOR_CACHE_DIR', os.path.join(tempfile.gettempdir(), f'torchinductor_{getpass.getuser()}'))
SCRATCH = Path(tempfile.mkdtemp(prefix='uspl-tests-'))
os.environ['TMPDIR'] = tempfile.tempdir = str(SCRATCH)

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
    if exitstatus == 0: shutil.rmtree(SCRATCH, ignore_errors=True)  # kept after a failure, to look at
