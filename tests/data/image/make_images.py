#!/usr/bin/python3
"""Writes the small test images for tests/test_image.c (run once; the outputs
are committed). PNGs are written by the tiny encoder below so that every colour
type, bit depth and Adam7 interlacing can be produced; their pixels follow the
formulas in tests/test_image.c (pix_*), which computes the expected values
itself. JPEGs are written by PIL; the test holds PIL's decoded checksums.

    /usr/bin/python3 tests/data/image/make_images.py
"""
import os
import struct
import zlib

from PIL import Image

OUT = os.path.dirname(os.path.abspath(__file__))
W, H = 23, 17


def grey(x, y): return (x * 29 + y * 13) & 255
def red(x, y): return (x * 37 + y * 11) & 255
def green(x, y): return (x * 5 + y * 53 + 7) & 255
def blue(x, y): return (x * y * 3 + 100) & 255
def alpha(x, y): return ((x + y) * 9) & 255
def low(x, y): return (x * y + 3) & 255  # low byte of 16-bit samples
def pal_index(x, y): return (x + 2 * y) % 16
def bit(x, y): return (x ^ y) & 1


PALETTE = [(i * 16, 255 - i * 16, i * 7) for i in range(16)]


def chunk(tag, data):
    c = tag + data
    return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c))


def samples(ct, depth, x, y):
    """The samples of pixel (x, y) for colour type ct."""
    if ct == 3:
        return [pal_index(x, y)]
    if ct == 0 and depth == 1:
        return [bit(x, y)]
    chans = {0: [grey], 2: [red, green, blue], 4: [grey, alpha], 6: [red, green, blue, alpha]}[ct]
    if depth == 16:
        return [f(x, y) * 256 + low(x, y) for f in chans]
    return [f(x, y) for f in chans]


def pack_row(ct, depth, xs, y):
    if depth < 8:
        bits = "".join(format(samples(ct, depth, x, y)[0], "0%db" % depth) for x in xs)
        bits += "0" * (-len(bits) % 8)
        return bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))
    out = bytearray()
    for x in xs:
        for s in samples(ct, depth, x, y):
            out += struct.pack(">H", s) if depth == 16 else bytes([s])
    return bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_png(name, ct, depth, interlace=False, trns=False, w=W, h=H):
    raw = bytearray()
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for x0, y0, dx, dy in passes:
        xs = list(range(x0, w, dx))
        if not xs:
            continue
        for y in range(y0, h, dy):
            raw += b"\0" + pack_row(ct, depth, xs, y)  # filter type 0
    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ct, 0, 0, int(interlace)))
    if ct == 3:
        png += chunk(b"PLTE", b"".join(bytes(p) for p in PALETTE))
        if trns:
            png += chunk(b"tRNS", bytes(range(0, 256, 16)))
    png += chunk(b"tEXt", b"Comment\0kmseg test image")
    png += chunk(b"IDAT", zlib.compress(bytes(raw), 9))
    png += chunk(b"IEND", b"")
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(png)


def write_header_only_png(name, w, h):
    """IHDR with the given size and one short IDAT: the size check must fire
    when the IDAT is reached, before any pixel buffer is allocated."""
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"\0" * 64))
    png += chunk(b"IEND", b"")
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(png)


write_png("grey8.png", 0, 8)
write_png("grey1.png", 0, 1)
write_png("grey16.png", 0, 16)
write_png("ga8.png", 4, 8)
write_png("ga16.png", 4, 16)
write_png("rgb8.png", 2, 8)
write_png("rgb16.png", 2, 16)
write_png("rgba8.png", 6, 8)
write_png("rgba16.png", 6, 16)
write_png("pal4_trns.png", 3, 4, trns=True)
write_png("pal8.png", 3, 8)
write_png("rgb8_adam7.png", 2, 8, interlace=True)
write_header_only_png("bad_wide.png", 40000, 1)
write_header_only_png("bad_pixels.png", 20000, 20000)
write_header_only_png("bad_zero.png", 0, 5)

# JPEGs from the RGB formula at 32x24 (so 4:2:0 subsampling has whole MCUs
# and partial ones are not the point here).
rgb = Image.new("RGB", (32, 24))
rgb.putdata([(red(x, y), green(x, y), blue(x, y)) for y in range(24) for x in range(32)])
rgb.save(os.path.join(OUT, "rgb.jpg"), quality=90)
rgb.save(os.path.join(OUT, "rgb_progressive.jpg"), quality=90, progressive=True)
rgb.convert("L").save(os.path.join(OUT, "grey.jpg"), quality=90)
rgb.convert("CMYK").save(os.path.join(OUT, "cmyk.jpg"), quality=90)

# A baseline JPEG whose SOF0 claims 30001 x 8 pixels.
data = bytearray(open(os.path.join(OUT, "rgb.jpg"), "rb").read())
sof = data.index(b"\xff\xc0")
struct.pack_into(">HH", data, sof + 5, 8, 30001)  # height, width
open(os.path.join(OUT, "bad_wide.jpg"), "wb").write(bytes(data))
