"""The notebooks are clean and the library is in sync with them.

Both checks run nbdev's own commands on a temporary copy of the project, so the working tree is never touched:
`nbdev_clean` must leave every notebook unchanged and `nbdev_export` must leave `uspl/` unchanged.
"""
import filecmp, shutil, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT, notebooks

BIN = Path(sys.executable).parent

@pytest.fixture(scope='module')
def copy(tmp_path_factory):
    dst = tmp_path_factory.mktemp('proj')
    for f in ('settings.ini', 'setup.py', '_quarto.yml', 'README.md'): shutil.copy(ROOT/f, dst/f)
    ign = shutil.ignore_patterns('_scratch', '.ipynb_checkpoints', '__pycache__', '_quarto.yml')
    shutil.copytree(ROOT/'nbs', dst/'nbs', ignore=ign)
    shutil.copytree(ROOT/'uspl', dst/'uspl', ignore=shutil.ignore_patterns('__pycache__'))
    return dst

def _tree(p): return sorted(q.relative_to(p) for q in p.rglob('*') if q.is_file() and '__pycache__' not in q.parts)

def test_notebooks_are_clean(copy):
    subprocess.run([BIN/'nbdev_clean'], cwd=copy, check=True, capture_output=True)
    dirty = [nb.name for nb in notebooks() if not filecmp.cmp(nb, copy/'nbs'/nb.relative_to(ROOT/'nbs'), shallow=False)]
    assert not dirty, f'nbdev_clean changes {dirty}: run nbdev_clean and commit'

def test_library_in_sync(copy):
    subprocess.run([BIN/'nbdev_export'], cwd=copy, check=True, capture_output=True)
    new, old = copy/'uspl', ROOT/'uspl'
    assert _tree(new) == _tree(old), 'nbdev_export adds or removes modules: run nbdev_export and commit'
    stale = [str(f) for f in _tree(old) if not filecmp.cmp(old/f, new/f, shallow=False)]
    assert not stale, f'uspl/ is out of sync with the notebooks in {stale}: run nbdev_export and commit'

def test_quarto_config_is_shared():
    "nbdev reads nbs/_quarto.yml; the top-level _quarto.yml must be the same file."
    assert (ROOT/'nbs'/'_quarto.yml').resolve() == (ROOT/'_quarto.yml').resolve()
