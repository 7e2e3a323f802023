#!/usr/bin/env python3
"""Recompute fos's figures with the released FOSD evaluator's own functions.

Usage:
  fos eval --dataset DS --dump-scores scores.csv --out OUT
  python3 docs/tools/released_check.py --fosd-repo ~/Foreground-Object-Search-Dataset-FOSD \
      --protocol sfosd scores.csv OUT/metrics.json

--fosd-repo is a checkout of the FOSD repository (its utils/evaluation_metrics.py
is imported, not copied); numpy is needed. Per category and method, the scores
are laid out as the released evaluate/base.py does (queries x candidates),
passed through a sigmoid (the released heads output sigmoid scores > 0; the
ranking is unchanged), multiplied by validity (R-FOSD), ranked with the
released rank_labels_by_predicted_scores, scored with its metric functions,
and averaged over categories. Prints both figures for every method and the
largest difference over methods without tied scores (numpy's argsort orders
ties of more than 16 candidates arbitrarily).
"""
import argparse
import csv
import json
import math
import sys
from collections import OrderedDict, defaultdict

import numpy as np

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--fosd-repo", required=True)
ap.add_argument("--protocol", choices=["sfosd", "rfosd", "patterns"], default="sfosd")
ap.add_argument("scores")
ap.add_argument("metrics_json")
a = ap.parse_args()
sys.path.insert(0, a.fosd_repo)
from utils import evaluation_metrics as M  # noqa: E402

rows = defaultdict(OrderedDict)
for r in csv.DictReader(open(a.scores)):
    rows[(r.get("method", "scores"), r["category"])].setdefault(r["query"], []).append(
        (float(r["score"]), int(r["label"]), int(r.get("valid", "1"))))
fos = json.load(open(a.metrics_json))["methods"]


def sigmoid(s):
    return 0.0 if s == float("-inf") else 1.0 / (1.0 + math.exp(-s))


per = defaultdict(lambda: defaultdict(list))
ties = defaultdict(bool)
for (m, cat), qs in rows.items():
    q = list(qs.values())
    n = len(q[0])
    if any(len(x) != n for x in q):
        print(f"{m}/{cat}: queries have different candidate counts; skipped")
        continue
    scores = np.array([[sigmoid(c[0]) for c in x] for x in q])
    labels = np.array([[c[1] for c in x] for x in q])
    valid = np.array([[c[2] for c in x] for x in q])
    ties[m] |= any(len(set(r)) < len(r) for r in scores.tolist())
    if a.protocol == "sfosd":
        rl = M.rank_labels_by_predicted_scores(labels, scores)
        for k in (1, 5, 10, 20):
            per[m][f"recall@{k}"].append(M.recall_at_k(rl, k))
    else:
        rl = M.rank_labels_by_predicted_scores(labels, scores * valid)
        flags = valid.sum(1)
        per[m]["map"].append(M.mean_average_precision_onlyValid(rl, flags.copy(), -1))
        per[m]["map@20"].append(M.mean_average_precision_onlyValid(rl, flags.copy(), min(20, n)))
        for k in (1, 5, 10, 20):
            per[m][f"precision@{k}"].append(M.precision_at_k_onlyValid(rl, flags.copy(), k))
worst = 0.0
for m, figs in per.items():
    parts = []
    for name, vals in figs.items():
        released = float(np.mean(vals)) / 100
        ours = fos[m][name]
        if not ties[m]:
            worst = max(worst, abs(released - ours))
        parts.append(f"{name} {released:.6f} / {ours:.6f}")
    print(f"{m}{' (ties)' if ties[m] else ''}: released / fos: " + ", ".join(parts))
print(f"largest difference, methods without ties: {worst:.3g}")
