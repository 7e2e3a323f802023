#!/usr/bin/env python3
"""The Python peers of fos's benchmark, run by bench/run.py in the same run.

  peers.py torch  --weights PTH [--batches 1,32] [--images 64]
  peers.py flat   --library BASE.fos --queries Q.fos [--batches 1,64]
  peers.py hnsw   --library BASE.fos --queries Q.fos [--m 32] [--ef-construction 40]
  peers.py stream [--mib 1024]

Each prints one JSON object. Thread count: --threads (default 2) for torch,
faiss (OpenMP) and numpy alike. The .fos files are read with numpy alone (a
24-byte prefix, a JSON header, an aligned f16 block), so faiss searches the
same numbers as fos (widened to f32, faiss's only flat type).
"""
import argparse, json, os, struct, sys, time

import numpy as np


def read_fos(path):
    with open(path, 'rb') as f:
        prefix = f.read(24)
        if prefix[:8] != b'FOSLIB\x00\x01':
            sys.exit(f'{path}: not a fos library')
        (hlen,) = struct.unpack('<Q', prefix[8:16])
        header = json.loads(f.read(hlen))
    n, d, blk = len(header['entries']), header['dim'], header['embeddings']
    dtype = np.float16 if header['dtype'] == 'f16' else np.float32
    return np.memmap(path, dtype=dtype, mode='r', offset=blk['offset'], shape=(n, d))


def timed(fn, seconds, min_runs=3):
    lat, t = [], time.perf_counter()
    while len(lat) < min_runs or time.perf_counter() - t < seconds:
        t0 = time.perf_counter()
        fn(len(lat))
        lat.append((time.perf_counter() - t0) * 1e3)
    return lat


# ---- PyTorch: EfficientNet-Lite0 from the package's .pth ------------------
def torch_bench(a):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.set_num_threads(a.threads)
    sd = torch.load(a.weights, map_location='cpu')

    class SameConv(nn.Conv2d):
        """TF 'same' padding (asymmetric at stride 2)."""
        def forward(self, x):
            h, w = x.shape[-2:]
            k, s = self.kernel_size[0], self.stride[0]
            ph = max((-(-h // s) - 1) * s + k - h, 0)
            pw = max((-(-w // s) - 1) * s + k - w, 0)
            pad = 0
            if ph % 2 == 0 and pw % 2 == 0:
                pad = (ph // 2, pw // 2)  # symmetric: let the convolution pad
            elif ph or pw:
                x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
            return F.conv2d(x, self.weight, None, self.stride, pad, 1, self.groups)

    def conv_bn(name, bn, stride=1, dw=False, act=True):
        w = sd[name + '.weight']
        o, i, k, _ = w.shape
        c = SameConv(i * (o if dw else 1), o, k, stride, groups=o if dw else 1, bias=False)
        b = nn.BatchNorm2d(o, eps=1e-3)
        c.weight.data.copy_(w)
        for p in ('weight', 'bias', 'running_mean', 'running_var'):
            getattr(b, p).data.copy_(sd[f'{bn}.{p}'])
        return nn.Sequential(c, b, nn.ReLU6()) if act else nn.Sequential(c, b)

    nblocks = len({k.split('.')[1] for k in sd if k.startswith('_blocks.')})
    outs = [sd[f'_blocks.{b}._project_conv.weight'].shape[0] for b in range(nblocks)]
    strides, st, prev = [], -1, None
    for o in outs:
        if o != prev:
            st += 1
            strides.append([1, 2, 2, 2, 1, 2, 1][st])
            prev = o
        else:
            strides.append(1)

    class Block(nn.Module):
        def __init__(self, b, s):
            super().__init__()
            p = f'_blocks.{b}.'
            layers = []
            if p + '_expand_conv.weight' in sd:
                layers.append(conv_bn(p + '_expand_conv', p + '_bn0'))
            layers.append(conv_bn(p + '_depthwise_conv', p + '_bn1', s, dw=True))
            layers.append(conv_bn(p + '_project_conv', p + '_bn2', act=False))
            self.body = nn.Sequential(*layers)
            w_in = sd[p + ('_expand_conv.weight' if p + '_expand_conv.weight' in sd else '_depthwise_conv.weight')]
            self.res = s == 1 and w_in.shape[1 if p + '_expand_conv.weight' in sd else 0] == outs[b]

        def forward(self, x):
            y = self.body(x)
            return x + y if self.res else y

    net = nn.Sequential(
        conv_bn('_conv_stem', '_bn0', 2),
        *[Block(b, s) for b, s in enumerate(strides)],
        conv_bn('_conv_head', '_bn1'),
        nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    size, rows = a.size, []
    j = np.arange(3 * size * size)
    for b in a.batches:
        # fos bench backbone's input: value j of image i is ((31 i + j) % 97) / 48 - 1.
        x = np.stack([((i * 31 + j) % 97) / 48.0 - 1.0 for i in range(b)]).astype(np.float32)
        x = torch.from_numpy(x.reshape(b, 3, size, size)).to(memory_format=fmt)
        with torch.inference_mode():
            pooled = net(x)
            net(x)  # second warm-up: oneDNN primitives are made per shape
            iters = max(-(-a.images // b), 2)
            t = time.perf_counter()
            for _ in range(iters):
                net(x)
            secs = time.perf_counter() - t
        rows.append({'batch': b, 'images': iters * b, 'seconds': secs,
                     'images_per_s': iters * b / secs, 'ms_per_batch': secs * 1e3 / iters,
                     'pooled0_head': pooled[0, :8].tolist()})
    layout = 'channels-last' if a.channels_last else 'NCHW'
    return {'bench': 'backbone', 'peer': f'pytorch {torch.__version__} eager, {layout}', 'size': size,
            'threads': torch.get_num_threads(), 'results': rows}


# ---- faiss ---------------------------------------------------------------
def faiss_setup(a):
    import faiss
    faiss.omp_set_num_threads(a.threads)
    base = np.ascontiguousarray(read_fos(a.library), dtype=np.float32)
    q = np.ascontiguousarray(read_fos(a.queries), dtype=np.float32)
    return faiss, base, q


def flat_bench(a):
    faiss, base, q = faiss_setup(a)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    rows, top0 = [], index.search(q[:1], a.k)[1][0].tolist()
    nq = len(q)
    for b in a.batches:
        lat = timed(lambda i: index.search(q[(i % (nq // b)) * b:][:b], a.k), a.seconds)
        total = sum(lat)
        rows.append({'batch': b, 'batches': len(lat), 'ms_per_batch_p50': float(np.median(lat)),
                     'ms_per_query': total / (len(lat) * b),
                     'queries_per_s': len(lat) * b / total * 1e3})
    return {'bench': 'exact', 'peer': f'faiss {faiss.__version__} IndexFlatIP (f32)',
            'n': len(base), 'dim': base.shape[1], 'k': a.k, 'threads': a.threads,
            'results': rows, 'query0_top': top0}


def hnsw_bench(a):
    faiss, base, q = faiss_setup(a)
    q = q[:a.n_queries]
    exact = faiss.IndexFlatIP(base.shape[1])
    exact.add(base)
    truth = exact.search(q, 10)[1]
    del exact
    index = faiss.IndexHNSWFlat(base.shape[1], a.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = a.ef_construction
    t = time.perf_counter()
    index.add(base)
    build_s = time.perf_counter() - t
    curve, chosen = [], None
    for ef in a.efs:
        index.hnsw.efSearch = ef
        lat, found = [], 0
        for i in range(len(q)):
            t0 = time.perf_counter()
            ids = index.search(q[i:i + 1], 10)[1][0]
            lat.append((time.perf_counter() - t0) * 1e3)
            found += len(set(ids.tolist()) & set(truth[i].tolist()))
        r = {'ef': ef, 'recall@10': found / (10 * len(q)), 'ms_p50': float(np.median(lat)),
             'ms_p99': float(np.percentile(lat, 99)), 'queries_per_s': len(q) / sum(lat) * 1e3}
        curve.append(r)
        if r['recall@10'] >= a.recall:
            chosen = r
            break
    if chosen:
        # Throughput under load at the chosen ef: all queries in one call,
        # which faiss spreads over its threads.
        t0 = time.perf_counter()
        index.search(q, 10)
        chosen['parallel_queries_per_s'] = len(q) / (time.perf_counter() - t0)
    return {'bench': 'ann', 'peer': f'faiss {faiss.__version__} IndexHNSWFlat (f32)',
            'n': len(base), 'dim': base.shape[1], 'm': a.m, 'ef_construction': a.ef_construction,
            'build_s': build_s, 'threads': a.threads, 'target_recall': a.recall,
            'chosen': chosen, 'curve': curve}


def stream_bench(a):
    x = np.ones(a.mib * (1 << 20) // 8, dtype=np.float64)
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        x.sum()
        best = max(best, x.nbytes / (time.perf_counter() - t) / 1e9)
    return {'bench': 'memory', 'peer': f'numpy {np.__version__} sum (1 thread)', 'mib': a.mib,
            'read_gb_per_s': best}


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='what', required=True)
    ints = lambda s: [int(v) for v in s.split(',')]
    t = sub.add_parser('torch')
    t.add_argument('--weights', required=True)
    t.add_argument('--batches', type=ints, default=[1, 32])
    t.add_argument('--images', type=int, default=64)
    t.add_argument('--size', type=int, default=224)
    t.add_argument('--channels-last', action='store_true')
    for name in ('flat', 'hnsw'):
        s = sub.add_parser(name)
        s.add_argument('--library', required=True)
        s.add_argument('--queries', required=True)
    f = sub.choices['flat']
    f.add_argument('--batches', type=ints, default=[1, 64])
    f.add_argument('--k', type=int, default=10)
    f.add_argument('--seconds', type=float, default=5.0)
    h = sub.choices['hnsw']
    h.add_argument('--m', type=int, default=32)
    h.add_argument('--ef-construction', type=int, default=40)
    h.add_argument('--efs', type=ints, default=[16, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 384, 448, 512])
    h.add_argument('--recall', type=float, default=0.95)
    h.add_argument('--n-queries', type=int, default=200)
    s = sub.add_parser('stream')
    s.add_argument('--mib', type=int, default=1024)
    for s in sub.choices.values():
        s.add_argument('--threads', type=int, default=2)
    a = p.parse_args()
    os.environ.setdefault('OMP_NUM_THREADS', str(a.threads))
    run = {'torch': torch_bench, 'flat': flat_bench, 'hnsw': hnsw_bench, 'stream': stream_bench}
    print(json.dumps(run[a.what](a)))


if __name__ == '__main__':
    main()
