"""Before/after figure of fos's inpainted backgrounds.

Usage: python3 docs/tools/inpaint_figure.py DATASET_DIR OUT.png ID [ID ...]
Each row: the source photo with the removed instance outlined in red | the
background fos wrote | the cut-out on white.
"""
import json
import sys

from PIL import Image, ImageDraw, ImageFilter

root, out, ids = sys.argv[1], sys.argv[2], sys.argv[3:]
recs = {}
with open(f"{root}/manifest.jsonl") as f:
    for line in f:
        r = json.loads(line)
        recs[r["id"]] = r
H = 200
rows = []
for i in ids:
    r = recs[i]
    photo = Image.open(r["source_image"]).convert("RGB")
    bg = Image.open(f"{root}/{r['background']}").convert("RGB")
    mask = Image.open(f"{root}/{r['mask']}").convert("L")
    x, y, w, h = r["bbox"]
    full = Image.new("L", photo.size, 0)
    full.paste(mask, (x, y))
    edge = full.filter(ImageFilter.FIND_EDGES).filter(ImageFilter.MaxFilter(3))
    outlined = photo.copy()
    outlined.paste(Image.new("RGB", photo.size, (255, 0, 0)), (0, 0), edge)
    fg = Image.open(f"{root}/{r['foreground']}").convert("RGBA")
    cut = Image.new("RGB", photo.size, (255, 255, 255))
    s = min(photo.size[0] / w, photo.size[1] / h) * 0.9
    fgs = fg.resize((max(1, int(w * s)), max(1, int(h * s))))
    cut.paste(fgs, ((photo.size[0] - fgs.size[0]) // 2, (photo.size[1] - fgs.size[1]) // 2), fgs)
    panels = [p.resize((int(p.size[0] * H / p.size[1]), H)) for p in (outlined, bg, cut)]
    row = Image.new("RGB", (sum(p.size[0] for p in panels) + 8 * 2, H), (255, 255, 255))
    xo = 0
    for p in panels:
        row.paste(p, (xo, 0))
        xo += p.size[0] + 8
    rows.append(row)
W = max(r.size[0] for r in rows)
fig = Image.new("RGB", (W, sum(r.size[1] + 8 for r in rows)), (255, 255, 255))
yo = 0
for r in rows:
    fig.paste(r, (0, yo))
    yo += r.size[1] + 8
fig.save(out, optimize=True)
