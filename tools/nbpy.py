"""Convert between percent-format Python scripts and notebooks (a dev tool).

    python tools/nbpy.py to-nb nbs/_scratch/05_align.py nbs/05_align.ipynb
    python tools/nbpy.py to-py nbs/05_align.ipynb /tmp/05_align.py

Cells are separated by lines `# %%` (code) and `# %% [markdown]` (markdown;
each line of the cell starts with `# `). The notebook is the source of truth:
round-trip it, edit, convert back, then run `nbdev_clean`.
"""
import json, re, sys
from pathlib import Path

_HDR = re.compile(r"^# %%( \[markdown\])?\s*$")

def py2cells(text):
    cells, kind, buf = [], None, []
    def flush():
        if kind is None: return
        lines = list(buf)
        while lines and not lines[-1].strip(): lines.pop()
        while lines and not lines[0].strip(): lines.pop(0)
        if kind == 'markdown': lines = [l[2:] if l.startswith('# ') else l[1:] if l.startswith('#') else l for l in lines]
        src = '\n'.join(lines)
        cell = {'cell_type': kind, 'metadata': {}, 'source': src.splitlines(keepends=True)}
        if kind == 'code': cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    for line in text.splitlines():
        m = _HDR.match(line)
        if m:
            flush(); kind, buf = ('markdown' if m.group(1) else 'code'), []
        elif kind is not None: buf.append(line)
    flush()
    return cells

def to_nb(src, dst):
    nb = {'cells': py2cells(Path(src).read_text()),
          'metadata': {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}},
          'nbformat': 4, 'nbformat_minor': 5}
    for i, c in enumerate(nb['cells']): c['id'] = f'c{i:03d}'
    Path(dst).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')

def to_py(src, dst):
    nb = json.loads(Path(src).read_text())
    out = []
    for c in nb['cells']:
        s = ''.join(c['source'])
        if c['cell_type'] == 'markdown': out += ['# %% [markdown]'] + ['# ' + l if l else '#' for l in s.split('\n')]
        else: out += ['# %%', s]
        out.append('')
    Path(dst).write_text('\n'.join(out))

if __name__ == '__main__':
    cmd, a, b = sys.argv[1:4]
    {'to-nb': to_nb, 'to-py': to_py}[cmd](a, b)
