#!/usr/bin/env bash
# Regenerates the committed seed corpora under fuzz/corpus/ (small valid and
# broken inputs per target). Needs python3 with Pillow, a release build of
# fos (cargo build --release) and ../shared/data/coco-sample.
set -euo pipefail
cd "$(dirname "$0")"
FOS=../target/release/fos
SHARED=${SHARED:-../../shared}
C=corpus
mkdir -p $C/coco $C/image $C/index $C/request
python3 - "$SHARED" <<'PY'
import io, json, os, struct, sys, zlib
from PIL import Image
shared = sys.argv[1]
C = "corpus"
def w(path, data):
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
# --- coco: a real excerpt (first photo of coco-sample and its masks) and broken files
ann = json.load(open(os.path.join(shared, "data/coco-sample/annotations/instances_val2017.json")))
img = ann["images"][0]
anns = [a for a in ann["annotations"] if a["image_id"] == img["id"]][:3]
cats = [c for c in ann["categories"] if c["id"] in {a["category_id"] for a in anns}]
w(f"{C}/coco/real-excerpt.json", json.dumps({"images": [img], "categories": cats, "annotations": anns}))
small = {"images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 6}],
         "categories": [{"id": 1, "name": "person"}],
         "annotations": [
             {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[1, 1, 6, 1, 6, 5, 1, 5]]},
             {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": {"size": [6, 8], "counts": [10, 5, 33]}},
             {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": {"size": [6, 8], "counts": "<5Q1"}}]}
w(f"{C}/coco/small.json", json.dumps(small))
w(f"{C}/coco/missing-fields.json", json.dumps({"images": [{"id": 1}], "categories": [{}], "annotations": [{"id": 1}]}))
w(f"{C}/coco/wrong-types.json", json.dumps({"images": [{"id": "x", "file_name": 3, "width": -1, "height": 1e40}],
                                             "categories": [{"id": 1.5, "name": None}],
                                             "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": "oops"}]}))
w(f"{C}/coco/huge-numbers.json", json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 4294967295, "height": 4294967295}],
                                              "categories": [{"id": 1, "name": "x"}],
                                              "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                                                               "segmentation": {"size": [4294967295, 4294967295], "counts": [18446744073709551615]}}]}))
w(f"{C}/coco/bad-rle.json", json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 6}],
                                         "categories": [{"id": 1, "name": "x"}],
                                         "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": {"size": [6, 8], "counts": "zz!"}}]}))
w(f"{C}/coco/rle-string.txt", anns[0]["segmentation"]["counts"] if isinstance(anns[0]["segmentation"], dict) else "<5Q1")
# --- image: tiny PNG, JPEG, WebP; truncated; a header claiming 100000 x 100000
im = Image.new("RGBA", (7, 5), (200, 30, 30, 128))
for fmt, ext in [("PNG", "png"), ("WEBP", "webp")]:
    b = io.BytesIO(); im.save(b, fmt); w(f"{C}/image/tiny.{ext}", b.getvalue())
b = io.BytesIO(); im.convert("RGB").save(b, "JPEG"); jpg = b.getvalue(); w(f"{C}/image/tiny.jpg", jpg)
w(f"{C}/image/truncated.jpg", jpg[: len(jpg) // 2])
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
w(f"{C}/image/bomb.png", bomb)
# --- request: multipart bodies (first byte 0 selects the boundary "fosfuzzboundary")
png = io.BytesIO(); Image.new("RGB", (64, 48), (90, 120, 150)).save(png, "PNG"); png = png.getvalue()
def body(query, image=png, bnd=b"fosfuzzboundary"):
    parts = [b"--" + bnd + b"\r\nContent-Disposition: form-data; name=\"background\"; filename=\"bg.png\"\r\nContent-Type: image/png\r\n\r\n" + image + b"\r\n",
             b"--" + bnd + b"\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\n" + query + b"\r\n"]
    return b"\0" + b"".join(parts) + b"--" + bnd + b"--\r\n"
w(f"{C}/request/good", body(b'{"box": [10, 8, 20, 30], "category": "person", "k": 5}'))
w(f"{C}/request/patterns", body(b'{"box": [0, 0, 64, 48], "category": "dog", "k": 3, "patterns": [2, 2], "rerank": true}'))
w(f"{C}/request/outside", body(b'{"box": [60, 40, 20, 30], "category": "person"}'))
w(f"{C}/request/non-numeric", body(b'{"box": ["a", 1, 2, 3], "category": "person"}'))
w(f"{C}/request/bomb", body(b'{"box": [1, 1, 2, 2], "category": "person"}', image=bomb))
PY
# --- index: small real libraries (default model; one with an approximate index)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for cat in person dog; do
  mkdir -p "$tmp/fg/$cat"
  for i in 1 2; do
    python3 -c "
from PIL import Image, ImageDraw
im = Image.new('RGBA', (40 + 9 * $i, 60), (0, 0, 0, 0))
ImageDraw.Draw(im).ellipse([2, 2, 38 + 9 * $i, 58], fill=(30 * $i, 90, 160, 255))
im.save('$tmp/fg/$cat/$cat-$i.png')"
  done
done
$FOS index build --foregrounds "$tmp/fg" --out "$C/index/small.fos" > /dev/null
$FOS index build --foregrounds "$tmp/fg" --out "$C/index/with-ann.fos" --ann-threshold 2 > /dev/null
rm -f $C/index/*.lock
ls -l $C/*
