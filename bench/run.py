#!/usr/bin/env python3
"""Runs fos and its Python peers side by side and writes BENCHMARKS.md.

Called by bench/run.sh (which installs the peers in bench/.venv and builds
fos); see bench/README.md. Every figure in BENCHMARKS.md comes from the
JSON files this run writes under bench/results/.
"""
import argparse, json, os, platform, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK, RESULTS = ROOT / 'bench' / 'work', ROOT / 'bench' / 'results'
FOS = ROOT / 'target' / 'release' / 'fos'
PEERS = [sys.executable, str(ROOT / 'bench' / 'peers.py')]
SHARED = ROOT.parent / 'shared' / 'data' / 'coco-sample'


def run(cmd, name=None, env=None):
    """Runs a command, echoes it, returns its last stdout line as JSON (if name)."""
    shown = ' '.join(str(c) for c in cmd).replace(str(ROOT) + '/', '')
    print(f'$ {shown}', flush=True)
    t = time.perf_counter()
    out = subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.PIPE,
                         env={**os.environ, **(env or {})}, text=True).stdout
    wall = time.perf_counter() - t
    if name is None:
        return wall
    v = json.loads(out.strip().splitlines()[-1])
    v['command'], v['wall_s'] = shown, wall
    v['commit'], v['date'] = STAMP['commit'], STAMP['date']
    (RESULTS / f'{name}.json').write_text(json.dumps(v, indent=1))
    return v


# Uncommitted changes that make a result `-dirty`: any tracked file except
# the results and the report, which the run itself rewrites.
CHANGED = ('status', '--porcelain', '--untracked-files=no', '--', '.',
           ':!bench/results', ':!BENCHMARKS.md')


def git(*args):
    """What `git -C ROOT ARGS` prints, stripped."""
    return subprocess.run(['git', '-C', str(ROOT), *args], stdout=subprocess.PIPE,
                          text=True).stdout.strip()


def stamp():
    """The fos commit (with `-dirty` for uncommitted changes) and the time."""
    dirty = '-dirty' if git(*CHANGED) else ''
    return {'commit': git('rev-parse', '--short', 'HEAD') + dirty,
            'date': time.strftime('%Y-%m-%d %H:%M')}


STAMP = stamp()


def machine():
    def sh(c):
        try:
            return subprocess.run(c, shell=True, stdout=subprocess.PIPE, text=True).stdout.strip()
        except OSError:
            return ''
    mem = sh("awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo")
    return {
        'cpu': sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(),
        'cores': os.cpu_count(), 'memory': mem,
        'simd': sh("grep -m1 flags /proc/cpuinfo | tr ' ' '\\n' | grep -E '^(avx2|fma|f16c|avx512f)$' | tr '\\n' ' '"),
        'os': platform.platform(), 'python': platform.python_version(),
        'rustc': sh('rustc --version'), 'commit': git('rev-parse', '--short', 'HEAD'), 'dirty': bool(git(*CHANGED)),
        'date': time.strftime('%Y-%m-%d %H:%M'),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', default='100000,1000000', help='exact-search library sizes')
    p.add_argument('--dims', default='1280,2048')
    p.add_argument('--ann-n', type=int, default=1000000, help='size of the ANN comparison')
    p.add_argument('--ef-construction', type=int, default=40,
                   help='HNSW build candidate list, both sides (faiss default 40)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--weights', required=True, help='the efficientnet-lite0 .pth (pip package)')
    p.add_argument('--only', default='', help='comma-separated parts to run (default: all)')
    a = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    parts = set(filter(None, a.only.split(','))) or {
        'machine', 'memory', 'backbone', 'exact', 'ann', 'e2e', 'indexing'}
    env = {'RAYON_NUM_THREADS': str(a.threads), 'FOS_THREADS': str(a.threads),
           'OMP_NUM_THREADS': str(a.threads)}
    th = ['--threads', a.threads]
    if 'machine' in parts:
        m = machine()
        m['threads'] = a.threads
        (RESULTS / 'machine.json').write_text(json.dumps(m, indent=1))
    if 'memory' in parts:
        run([FOS, 'bench', 'memory', '--json'], 'memory-fos', env)
        run(PEERS + ['stream', *th], 'memory-numpy', env)
    if 'backbone' in parts:
        run([FOS, 'bench', 'backbone', '--batches', '1,32', '--images', 192, '--json'],
            'backbone-fos', env)
        pt = ['torch', '--weights', a.weights, '--batches', '1,32', '--images', 192, *th]
        run(PEERS + pt, 'backbone-torch', env)
        run(PEERS + pt + ['--channels-last'], 'backbone-torch-cl', env)
    sizes = [int(s) for s in a.sizes.split(',')]
    dims = [int(d) for d in a.dims.split(',')]
    def data(n, d):
        base, q = WORK / f'base-{n}-{d}.fos', WORK / f'queries-{d}.fos'
        if not base.exists() or not q.exists():
            run([FOS, 'bench', 'vectors', '--n', n, '--dim', d, '--out', WORK], env=env)
        return base, q
    if 'exact' in parts:
        for d in dims:
            for n in sizes:
                base, q = data(n, d)
                lq = ['--library', base, '--queries', q]
                run([FOS, 'bench', 'exact', *lq, '--json'], f'exact-{n}-{d}-fos', env)
                run(PEERS + ['flat', *lq, *th], f'exact-{n}-{d}-faiss', env)
    if 'ann' in parts:
        base, q = data(a.ann_n, 1280)
        # One ef grid for both sides, so each is picked at the same resolution.
        lq = ['--library', base, '--queries', q, '--ef-construction', a.ef_construction,
              '--efs', '16,32,64,96,128,160,192,224,256,288,320,384,448,512']
        run([FOS, 'bench', 'ann', *lq, '--m', 32, '--json'], 'ann-fos', env)
        run(PEERS + ['hnsw', *lq, '--m', 32, *th], 'ann-faiss', env)
    if 'e2e' in parts:
        run([FOS, 'bench', 'search', '--sizes', '100000', '--queries', 100, '--json'], 'e2e-fos', env)
    if 'indexing' in parts:
        ds = WORK / 'coco-sample-val'
        if not (ds / 'dataset.json').exists():
            if not SHARED.exists():
                sys.exit(f'indexing: {SHARED} is missing')
            run([FOS, 'dataset', 'build', '--coco', SHARED / 'annotations/instances_val2017.json',
                 '--images', SHARED / 'images/val2017', '--out', ds], env=env)
        out = WORK / 'coco-sample-val.fos'
        wall = run([FOS, 'index', 'build', '--dataset', ds, '--out', out], env=env)
        stats = run([FOS, 'index', 'stats', out, '--json'], 'indexing-stats', env)
        n = stats.get('cutouts') or stats.get('entries') or stats.get('len')
        v = {'bench': 'indexing', 'cutouts': n, 'wall_s': wall, 'cutouts_per_s': n / wall,
             'command': f'fos index build --dataset {ds.relative_to(ROOT)} --out {out.relative_to(ROOT)}'}
        (RESULTS / 'indexing-fos.json').write_text(json.dumps(v, indent=1))
    subprocess.run([sys.executable, str(ROOT / 'bench' / 'report.py')], check=True)


if __name__ == '__main__':
    main()
